import Foundation

/// A small thread-safe cache (word → ids), bounded like `tokenizers`' BPE cache.
final class WordCache: @unchecked Sendable {
    private var map: [TokenKey: [Int32]] = [:]
    private let lock = NSLock()
    let capacity: Int
    init(capacity: Int = 10_000) { self.capacity = capacity }
    func get(_ k: String) -> [Int32]? { lock.lock(); defer { lock.unlock() }; return map[TokenKey(k)] }
    func set(_ k: String, _ v: [Int32]) {
        lock.lock(); defer { lock.unlock() }
        if map.count >= capacity { map.removeAll(keepingCapacity: true) }
        map[TokenKey(k)] = v
    }
}

/// The vocabulary shared by the models: token ↔ id, strict about duplicates.
struct Vocab: Sendable {
    var toID: [TokenKey: Int]
    var toToken: [String?]

    static func load(_ n: Node) throws(TokenizerError) -> Vocab {
        var toID: [TokenKey: Int] = [:]
        var byID: [Int: String] = [:]
        for (tok, v) in try n.members() {
            let id = try v.int()
            guard id >= 0, id < 10_000_000 else { throw v.fail("id \(id) out of range") }
            if let other = byID[id] { throw TokenizerError.duplicateID(file: n.file, path: v.path, id: id, first: other, second: tok) }
            if toID[TokenKey(tok)] != nil { throw v.fail("duplicate token '\(tok)'") }
            toID[TokenKey(tok)] = id
            byID[id] = tok
        }
        var arr = [String?](repeating: nil, count: (byID.keys.max() ?? -1) + 1)
        for (id, t) in byID { arr[id] = t }
        return Vocab(toID: toID, toToken: arr)
    }
    func id(_ t: String) -> Int? { toID[TokenKey(t)] }
    func token(_ id: Int) -> String? { id >= 0 && id < toToken.count ? toToken[id] : nil }
}

/// Byte-pair encoding (models/bpe): rank map over id pairs, merged lowest rank first (leftmost on
/// ties) with a binary heap over a linked symbol list, and a per-word cache.
final class BPEModel: Sendable {
    let vocab: Vocab
    /// (left id << 32 | right id) → (rank << 32 | merged id)
    let merges: [UInt64: UInt64]
    let unkID: Int?
    let fuseUnk: Bool
    let byteFallback: Bool
    let ignoreMerges: Bool
    let prefix: String?
    let suffix: String?
    /// id of every single-scalar token, for the common no-prefix/suffix case.
    let scalarIDs: [UInt32: Int32]
    let byteIDs: [Int32]   // <0xXX> tokens, -1 when absent
    let cache = WordCache()

    init(_ n: Node) throws(TokenizerError) {
        let vocab = try Vocab.load(try n.require("vocab"))
        self.vocab = vocab
        if let unk = try n.optionalString("unk_token") {
            guard let id = vocab.id(unk) else { throw try n.require("unk_token").fail("unk_token '\(unk)' is not in the vocabulary") }
            unkID = id
        } else { unkID = nil }
        fuseUnk = try n.bool("fuse_unk", default: false)
        byteFallback = try n.bool("byte_fallback", default: false)
        ignoreMerges = try n.bool("ignore_merges", default: false)
        let p = try n.optionalString("continuing_subword_prefix") ?? ""
        let s = try n.optionalString("end_of_word_suffix") ?? ""
        prefix = p.isEmpty ? nil : p
        suffix = s.isEmpty ? nil : s
        if let d = n.child("dropout"), d.value.double.map({ $0 > 0 }) == true {
            throw d.fail("BPE dropout is not supported (non-deterministic)")
        }
        var merges: [UInt64: UInt64] = [:]
        let list = try n.child("merges")?.items() ?? []
        merges.reserveCapacity(list.count)
        for (rank, m) in list.enumerated() {
            let a: String, b: String
            if let s = m.value.string {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw m.fail("expected \"left right\"") }
                a = String(parts[0]); b = String(parts[1])
            } else {
                let pair = try m.items()
                guard pair.count == 2 else { throw m.fail("expected a pair of tokens") }
                a = try pair[0].string(); b = try pair[1].string()
            }
            guard let ia = vocab.id(a) else { throw TokenizerError.unknownMergeToken(file: n.file, path: m.path, token: a) }
            guard let ib = vocab.id(b) else { throw TokenizerError.unknownMergeToken(file: n.file, path: m.path, token: b) }
            let merged = a + (prefix.map { b.hasPrefix($0) ? String(b.dropFirst($0.count)) : b } ?? b)
            guard let inew = vocab.id(merged) else { throw TokenizerError.unknownMergeToken(file: n.file, path: m.path, token: merged) }
            let key = UInt64(ia) << 32 | UInt64(ib)
            merges[key] = UInt64(rank) << 32 | UInt64(inew)  // a repeated pair keeps its last rank, as upstream's HashMap insert
        }
        self.merges = merges
        var scalarIDs: [UInt32: Int32] = [:]
        for (k, id) in vocab.toID {
            var it = k.s.unicodeScalars.makeIterator()
            if let c = it.next(), it.next() == nil { scalarIDs[c.value] = Int32(id) }
        }
        self.scalarIDs = scalarIDs
        byteIDs = (0..<256).map { b in vocab.id(String(format: "<0x%02X>", b)).map(Int32.init) ?? -1 }
    }

    func tokenize(_ word: String, into out: inout [Int]) {
        if word.isEmpty { return }
        if let hit = cache.get(word) { for i in hit { out.append(Int(i)) }; return }
        let ids = merge(word)
        cache.set(word, ids)
        for i in ids { out.append(Int(i)) }
    }

    private struct Sym { var id: Int32; var prev: Int32; var next: Int32; var alive: Bool }

    func merge(_ word: String) -> [Int32] {
        if ignoreMerges, let id = vocab.id(word) { return [Int32(id)] }
        // Initial symbols (merge_word in models/bpe/model.rs).
        var ids: [Int32] = []
        var pendingUnk = false
        let scalars = Array(word.unicodeScalars)
        for (k, c) in scalars.enumerated() {
            var id: Int32? = nil
            if prefix == nil && suffix == nil {
                id = scalarIDs[c.value]
            } else {
                var s = String(c)
                if k > 0, let p = prefix { s = p + s }
                if k == scalars.count - 1, let x = suffix { s += x }
                id = vocab.id(s).map(Int32.init)
            }
            if let id {
                if pendingUnk { ids.append(Int32(unkID!)); pendingUnk = false }
                ids.append(id)
                continue
            }
            if byteFallback {
                var s = String(c)
                if k > 0, let p = prefix { s = p + s }
                if k == scalars.count - 1, let x = suffix { s += x }
                let bs = s.utf8.map { byteIDs[Int($0)] }
                if !bs.contains(-1) { ids.append(contentsOf: bs); continue }  // (pending unk stays pending, as upstream)
            }
            if let unk = unkID {
                if pendingUnk && !fuseUnk { ids.append(Int32(unk)) }
                pendingUnk = true
            }
        }
        if pendingUnk { ids.append(Int32(unkID!)) }
        if ids.count < 2 { return ids }
        var syms = [Sym]()
        syms.reserveCapacity(ids.count)
        for (i, id) in ids.enumerated() {
            syms.append(Sym(id: id, prev: Int32(i - 1), next: i + 1 < ids.count ? Int32(i + 1) : -1, alive: true))
        }
        // Heap of (rank << 32 | pos), merged id kept alongside.
        var heap = MinHeap()
        for i in 0..<(syms.count - 1) {
            if let m = merges[UInt64(UInt32(bitPattern: syms[i].id)) << 32 | UInt64(UInt32(bitPattern: syms[i + 1].id))] {
                heap.push(key: (m >> 32) << 32 | UInt64(i), merged: Int32(truncatingIfNeeded: m & 0xFFFF_FFFF))
            }
        }
        while let (key, merged) = heap.pop() {
            let pos = Int(key & 0xFFFF_FFFF)
            guard syms[pos].alive, syms[pos].next >= 0 else { continue }
            let nxt = Int(syms[pos].next)
            guard let m = merges[UInt64(UInt32(bitPattern: syms[pos].id)) << 32 | UInt64(UInt32(bitPattern: syms[nxt].id))],
                  Int32(truncatingIfNeeded: m & 0xFFFF_FFFF) == merged else { continue }
            syms[pos].id = merged
            syms[nxt].alive = false
            syms[pos].next = syms[nxt].next
            if syms[nxt].next >= 0 { syms[Int(syms[nxt].next)].prev = Int32(pos) }
            if syms[pos].prev >= 0 {
                let pv = Int(syms[pos].prev)
                if let m2 = merges[UInt64(UInt32(bitPattern: syms[pv].id)) << 32 | UInt64(UInt32(bitPattern: merged))] {
                    heap.push(key: (m2 >> 32) << 32 | UInt64(pv), merged: Int32(truncatingIfNeeded: m2 & 0xFFFF_FFFF))
                }
            }
            if syms[pos].next >= 0 {
                let nx = Int(syms[pos].next)
                if let m2 = merges[UInt64(UInt32(bitPattern: merged)) << 32 | UInt64(UInt32(bitPattern: syms[nx].id))] {
                    heap.push(key: (m2 >> 32) << 32 | UInt64(pos), merged: Int32(truncatingIfNeeded: m2 & 0xFFFF_FFFF))
                }
            }
        }
        var out: [Int32] = []
        var i = 0
        while i >= 0 && i < syms.count { out.append(syms[i].id); i = Int(syms[i].next) }
        return out
    }
}

/// Binary min-heap keyed by (rank, position) packed into one UInt64.
struct MinHeap {
    private var keys: [UInt64] = []
    private var vals: [Int32] = []
    mutating func push(key: UInt64, merged: Int32) {
        keys.append(key); vals.append(merged)
        var i = keys.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if keys[p] <= keys[i] { break }
            keys.swapAt(p, i); vals.swapAt(p, i); i = p
        }
    }
    mutating func pop() -> (UInt64, Int32)? {
        guard let top = keys.first else { return nil }
        let v = vals[0]
        let lk = keys.removeLast(), lv = vals.removeLast()
        if !keys.isEmpty {
            keys[0] = lk; vals[0] = lv
            var i = 0
            let n = keys.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && keys[l] < keys[m] { m = l }
                if r < n && keys[r] < keys[m] { m = r }
                if m == i { break }
                keys.swapAt(m, i); vals.swapAt(m, i); i = m
            }
        }
        return (top, v)
    }
}

/// WordPiece (models/wordpiece): greedy longest-match-first, the whole word becomes
/// `unk_token` when any part cannot be matched or it is longer than `max_input_chars_per_word`.
final class WordPieceModel: Sendable {
    let vocab: Vocab
    let unkID: Int
    let prefix: String
    let maxChars: Int

    init(_ n: Node) throws(TokenizerError) {
        vocab = try Vocab.load(try n.require("vocab"))
        let unk = try n.string("unk_token", default: "[UNK]")
        guard let u = vocab.id(unk) else { throw try n.require("unk_token").fail("unk_token '\(unk)' is not in the vocabulary") }
        unkID = u
        prefix = try n.string("continuing_subword_prefix", default: "##")
        maxChars = try n.int("max_input_chars_per_word", default: 100)
    }

    func tokenize(_ word: String, into out: inout [Int]) {
        let u = Array(word.unicodeScalars)
        if u.count > maxChars { out.append(unkID); return }
        var start = 0
        var pieces: [Int] = []
        while start < u.count {
            var end = u.count
            var found: Int? = nil
            while start < end {
                var s = String(scalars: u[start..<end])
                if start > 0 { s = prefix + s }
                if let id = vocab.id(s) { found = id; break }
                end -= 1
            }
            guard let id = found else { out.append(unkID); return }
            pieces.append(id)
            start = end
        }
        out.append(contentsOf: pieces)
    }
}

/// The model stage.
enum Model: Sendable {
    case bpe(BPEModel)
    case wordPiece(WordPieceModel)

    static func load(_ n: Node) throws(TokenizerError) -> Model {
        // Old files omit "type" for BPE; infer it as `tokenizers` does from the fields.
        let type = n.type ?? (n.child("merges") != nil ? "BPE" : n.child("continuing_subword_prefix") != nil ? "WordPiece" : "")
        switch type {
        case "BPE": return .bpe(try BPEModel(n))
        case "WordPiece": return .wordPiece(try WordPieceModel(n))
        default: throw TokenizerError.unsupportedComponent(file: n.file, path: n.path + ".type", kind: "model", type: type)
        }
    }
    var vocab: Vocab {
        switch self { case let .bpe(m): return m.vocab; case let .wordPiece(m): return m.vocab }
    }
    func tokenize(_ word: String, into out: inout [Int]) {
        switch self {
        case let .bpe(m): m.tokenize(word, into: &out)
        case let .wordPiece(m): m.tokenize(word, into: &out)
        }
    }
}
