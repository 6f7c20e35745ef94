import Foundation
import AssayCommon

public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    case io(file: String, reason: String)
    case invalid(file: String, path: String, reason: String)
    case unsupported(file: String, path: String, value: String)
    case template(String)

    public var description: String {
        switch self {
        case let .io(f, r): return "\(f.terminalSafe): \(r)"
        case let .invalid(f, p, r): return "\(f.terminalSafe): \(p): \(r)"
        case let .unsupported(f, p, v): return "\(f.terminalSafe): \(p) = \(v.terminalSafe) is not supported"
        case let .template(m): return "chat template: \(m)"
        }
    }
}

/// A tokenizer.json with a byte-level BPE model (GPT-2, SmolLM2 and the like).
public final class Tokenizer: @unchecked Sendable {
    struct Added { let id: Int; let content: [UInt8]; let special: Bool }

    let vocab: [String: Int]
    let idToToken: [Int: String]
    /// (left id, right id) → (rank, merged id)
    let merges: [UInt64: (rank: Int, id: Int)]
    let added: [Added]
    let addPrefixSpace: Bool
    let byteToUnicode: [Character]
    let unicodeToByte: [Character: UInt8]
    let template: ChatTemplate?
    let specialIDs: Set<Int>
    public let bosTokenID: Int?
    public let eosTokenIDs: [Int]
    public let padTokenID: Int?
    private var cache: [String: [Int]] = [:]
    private let lock = NSLock()

    public var vocabularySize: Int { max((idToToken.keys.max() ?? -1) + 1, vocab.count) }
    public var specialTokenIDs: Set<Int> { specialIDs }
    public var hasChatTemplate: Bool { template != nil }

    public static func load(directory: URL) throws -> Tokenizer {
        let cfg = directory.appendingPathComponent("tokenizer_config.json")
        return try load(tokenizerJSON: directory.appendingPathComponent("tokenizer.json"),
                        config: FileManager.default.fileExists(atPath: cfg.path) ? cfg : nil)
    }

    public static func load(tokenizerJSON: URL, config: URL?) throws -> Tokenizer {
        try Tokenizer(tokenizerJSON: tokenizerJSON, config: config)
    }

    static func readJSON(_ url: URL) throws -> JSONValue {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw TokenizerError.io(file: url.path, reason: "cannot read") }
        do { return try JSONParser.parse([UInt8](data)) } catch {
            throw TokenizerError.invalid(file: url.path, path: "(file)", reason: "not valid JSON: \(error.description)")
        }
    }

    init(tokenizerJSON url: URL, config: URL?) throws {
        let file = url.path
        let j = try Tokenizer.readJSON(url)
        guard let model = j["model"], model.members != nil else { throw TokenizerError.invalid(file: file, path: "model", reason: "missing") }
        let type = model["type"]?.string ?? "BPE"
        guard type == "BPE" else { throw TokenizerError.unsupported(file: file, path: "model.type", value: type) }
        if model["byte_fallback"]?.bool == true { throw TokenizerError.unsupported(file: file, path: "model.byte_fallback", value: "true") }
        if let n = j["normalizer"], n != .null { throw TokenizerError.unsupported(file: file, path: "normalizer", value: n["type"]?.string ?? "?") }
        guard let pre = j["pre_tokenizer"], pre["type"]?.string == "ByteLevel", pre["use_regex"]?.bool != false else {
            throw TokenizerError.unsupported(file: file, path: "pre_tokenizer", value: j["pre_tokenizer"]?["type"]?.string ?? "null")
        }
        addPrefixSpace = pre["add_prefix_space"]?.bool ?? false
        guard let vm = model["vocab"]?.members else { throw TokenizerError.invalid(file: file, path: "model.vocab", reason: "must be an object") }
        var vocab: [String: Int] = [:], ids: [Int: String] = [:]
        for m in vm {
            guard let id = m.value.exactInt, id >= 0 else { throw TokenizerError.invalid(file: file, path: "model.vocab.\(m.key)", reason: "id must be a non-negative integer") }
            if let other = ids[id] { throw TokenizerError.invalid(file: file, path: "model.vocab.\(m.key)", reason: "id \(id) is also used by '\(other)'") }
            vocab[m.key] = id; ids[id] = m.key
        }
        var merges: [UInt64: (Int, Int)] = [:]
        for (rank, m) in (model["merges"]?.array ?? []).enumerated() {
            let pair: [String]
            if let s = m.string { pair = s.split(separator: " ", maxSplits: 1).map(String.init) } else { pair = m.array?.compactMap(\.string) ?? [] }
            guard pair.count == 2, let a = vocab[pair[0]], let b = vocab[pair[1]], let c = vocab[pair[0] + pair[1]] else {
                throw TokenizerError.invalid(file: file, path: "model.merges[\(rank)]", reason: "refers to a token not in the vocabulary")
            }
            let key = UInt64(a) << 32 | UInt64(b)
            if merges[key] == nil { merges[key] = (rank, c) }
        }
        var added: [Added] = [], special = Set<Int>()
        for (i, a) in (j["added_tokens"]?.array ?? []).enumerated() {
            guard let id = a["id"]?.exactInt, let content = a["content"]?.string else {
                throw TokenizerError.invalid(file: file, path: "added_tokens[\(i)]", reason: "needs id and content")
            }
            for flag in ["lstrip", "rstrip", "single_word"] where a[flag]?.bool == true {
                throw TokenizerError.unsupported(file: file, path: "added_tokens[\(i)].\(flag)", value: "true")
            }
            added.append(Added(id: id, content: Array(content.utf8), special: a["special"]?.bool ?? false))
            if a["special"]?.bool == true { special.insert(id) }
            ids[id] = content
            vocab[content] = id
        }
        self.vocab = vocab
        idToToken = ids
        self.merges = merges.mapValues { (rank: $0.0, id: $0.1) }
        self.added = added.sorted { $0.content.count > $1.content.count }
        specialIDs = special
        // GPT-2's byte ↔ unicode table: printable bytes map to themselves, the rest to 256+.
        var table = [Character](repeating: " ", count: 256)
        var n = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            table[b] = Character(Unicode.Scalar(printable ? UInt32(b) : UInt32(256 + n))!)
            if !printable { n += 1 }
        }
        byteToUnicode = table
        unicodeToByte = Dictionary(uniqueKeysWithValues: table.enumerated().map { ($1, UInt8($0)) })

        var bos: Int?, eos: [Int] = [], pad: Int?, templateText: String?
        if let config {
            let c = try Tokenizer.readJSON(config)
            func tokenID(_ key: String) -> Int? {
                guard let v = c[key] else { return nil }
                let s = v.string ?? v["content"]?.string
                return s.flatMap { vocab[$0] }
            }
            bos = tokenID("bos_token"); pad = tokenID("pad_token")
            eos = tokenID("eos_token").map { [$0] } ?? []
            templateText = c["chat_template"]?.string
        }
        let jinja = url.deletingLastPathComponent().appendingPathComponent("chat_template.jinja")
        if templateText == nil, let t = try? String(contentsOf: jinja, encoding: .utf8) { templateText = t }
        bosTokenID = bos; eosTokenIDs = eos; padTokenID = pad
        template = try templateText.map { try ChatTemplate($0) }
    }

    // MARK: encode

    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var out: [Int] = []
        let bytes = Array(text.utf8)
        var start = 0, i = 0
        while i < bytes.count {
            if let a = added.first(where: { a in i + a.content.count <= bytes.count && bytes[i..<(i + a.content.count)].elementsEqual(a.content) }) {
                if i > start { encodeSegment(bytes[start..<i], into: &out) }
                out.append(a.id)
                i += a.content.count
                start = i
            } else {
                i += 1
            }
        }
        if start < bytes.count { encodeSegment(bytes[start...], into: &out) }
        return out
    }

    func encodeSegment(_ bytes: ArraySlice<UInt8>, into out: inout [Int]) {
        var text = String(decoding: bytes, as: UTF8.self)
        if addPrefixSpace && !text.hasPrefix(" ") { text = " " + text }
        for piece in GPT2Split.split(text) {
            lock.lock()
            let cached = cache[piece]
            lock.unlock()
            if let cached { out += cached; continue }
            let ids = bpe(piece)
            lock.lock(); cache[piece] = ids; lock.unlock()
            out += ids
        }
    }

    func bpe(_ piece: String) -> [Int] {
        var symbols: [Int] = piece.utf8.compactMap { vocab[String(byteToUnicode[Int($0)])] }
        while symbols.count > 1 {
            var best: (rank: Int, at: Int, id: Int)?
            for k in 0..<(symbols.count - 1) {
                if let m = merges[UInt64(symbols[k]) << 32 | UInt64(symbols[k + 1])], best == nil || m.rank < best!.rank {
                    best = (m.rank, k, m.id)
                }
            }
            guard let b = best else { break }
            // Merge every occurrence of this pair, left to right (as the reference does per rank).
            var next: [Int] = []
            var k = 0
            let (l, r) = (symbols[b.at], symbols[b.at + 1])
            while k < symbols.count {
                if k + 1 < symbols.count && symbols[k] == l && symbols[k + 1] == r { next.append(b.id); k += 2 } else { next.append(symbols[k]); k += 1 }
            }
            symbols = next
        }
        return symbols
    }

    // MARK: decode

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids {
            if skipSpecialTokens && specialIDs.contains(id) { continue }
            guard let t = idToToken[id] else { continue }
            if added.contains(where: { $0.id == id }) { bytes += Array(t.utf8); continue }
            for c in t { if let b = unicodeToByte[c] { bytes.append(b) } }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func tokenString(_ id: Int) -> String? { idToToken[id] }
    public func tokenID(_ token: String) -> Int? { vocab[token] }

    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        guard let template else { throw TokenizerError.template("the tokenizer has no chat template") }
        return try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                   bosToken: bosTokenID.flatMap { idToToken[$0] } ?? "", eosToken: eosTokenIDs.first.flatMap { idToToken[$0] } ?? "")
    }
}

/// GPT-2's pre-tokenizer pattern, hand-coded over Unicode scalars:
/// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
enum GPT2Split {
    enum Kind { case letter, number, space, other }

    static func kind(_ s: Unicode.Scalar) -> Kind {
        if s.properties.isWhitespace { return .space }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    static func split(_ text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        let kinds = s.map(kind)
        var out: [String] = []
        var i = 0
        func emit(_ a: Int, _ b: Int) { var str = ""; str.unicodeScalars.append(contentsOf: s[a..<b]); out.append(str) }
        while i < s.count {
            if s[i] == "'" && i + 1 < s.count {
                let rest = s[(i + 1)...].prefix(2).map { Character($0) }
                if rest.count >= 2, ["re", "ve", "ll"].contains(String(rest[0...1])) { emit(i, i + 3); i += 3; continue }
                if ["s", "t", "m", "d"].contains(String(rest[0])) { emit(i, i + 2); i += 2; continue }
            }
            var j = i
            let lead = s[i] == " " && i + 1 < s.count && kinds[i + 1] != .space ? 1 : 0
            let k = kinds[i + lead]
            if k != .space {
                j = i + lead
                while j < s.count && kinds[j] == k { j += 1 }
                emit(i, j); i = j; continue
            }
            // Whitespace run: leave its last character to prefix the next token when one follows.
            j = i
            while j < s.count && kinds[j] == .space { j += 1 }
            if j < s.count && j - i > 1 { j -= 1 }
            emit(i, j); i = j
        }
        return out
    }
}
