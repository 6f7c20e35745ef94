/// Added tokens (tokenizer/added_vocabulary.rs): matched in the text before the model runs,
/// leftmost-longest, honouring `single_word`, `lstrip`, `rstrip` and `normalized`.
struct AddedToken: Sendable {
    var id: Int
    var content: String
    var singleWord: Bool
    var lstrip: Bool
    var rstrip: Bool
    var normalized: Bool
    var special: Bool

    static func load(_ n: Node) throws(TokenizerError) -> AddedToken {
        AddedToken(id: try n.require("id").int(), content: try n.string("content"),
                   singleWord: try n.bool("single_word", default: false), lstrip: try n.bool("lstrip", default: false),
                   rstrip: try n.bool("rstrip", default: false), normalized: try n.bool("normalized", default: true),
                   special: try n.bool("special", default: false))
    }
}

/// A byte trie over token contents for leftmost-longest matching.
struct TokenTrie: Sendable {
    private var children: [[UInt8: Int32]] = [[:]]
    private var terminal: [Int32] = [-1]   // index into `tokens`
    private var firstByte = [Bool](repeating: false, count: 256)
    let tokens: [AddedToken]
    var isEmpty: Bool { tokens.isEmpty }

    init(_ tokens: [AddedToken], key: (AddedToken) -> String) {
        self.tokens = tokens
        for (k, t) in tokens.enumerated() {
            let bytes = Array(key(t).utf8)
            guard !bytes.isEmpty else { continue }
            firstByte[Int(bytes[0])] = true
            var node = 0
            for b in bytes {
                if let nx = children[node][b] { node = Int(nx) } else {
                    children.append([:]); terminal.append(-1)
                    children[node][b] = Int32(children.count - 1)
                    node = children.count - 1
                }
            }
            if terminal[node] < 0 { terminal[node] = Int32(k) }
        }
    }

    /// Splits `text` (UTF-8 bytes) into alternating text spans and matched tokens, as
    /// `AddedVocabulary::find_matches`.
    func split(_ text: [UInt8]) -> [(Range<Int>, Int?)] {
        if tokens.isEmpty || text.isEmpty { return [(0..<text.count, nil)] }
        var out: [(Range<Int>, Int?)] = []
        var startOffset = 0
        var i = 0
        while i < text.count {
            guard firstByte[Int(text[i])] else { i += 1; continue }
            var node = 0, j = i, best = -1, bestEnd = 0
            while j < text.count, let nx = children[node][text[j]] {
                node = Int(nx); j += 1
                if terminal[node] >= 0 { best = Int(terminal[node]); bestEnd = j }
            }
            guard best >= 0 else { i += 1; continue }
            let tok = tokens[best]
            var start = i, stop = bestEnd
            i = bestEnd
            if tok.singleWord {
                let startSpace = start == 0 || !Self.endsWithWord(text[..<start])
                let stopSpace = stop == text.count || !Self.startsWithWord(text[stop...])
                if !startSpace || !stopSpace { continue }
            }
            if tok.lstrip {
                var s = start
                while s > 0, let (v, w) = Self.lastScalar(text[..<s]), UClass.isSpace(v) { s -= w }
                start = max(s, startOffset)
            }
            if tok.rstrip {
                var e = stop
                while e < text.count, let (v, w) = Self.firstScalar(text[e...]), UClass.isSpace(v) { e += w }
                stop = e
            }
            if startOffset < start { out.append((startOffset..<start, nil)) }
            out.append((start..<stop, tok.id))
            startOffset = stop
            if i < stop { i = stop }
        }
        if startOffset != text.count { out.append((startOffset..<text.count, nil)) }
        return out
    }

    static func firstScalar(_ b: ArraySlice<UInt8>) -> (UInt32, Int)? {
        var it = b.makeIterator()
        var dec = UTF8()
        switch dec.decode(&it) {
        case let .scalarValue(s): return (s.value, UTF8.width(s))
        default: return nil
        }
    }
    static func lastScalar(_ b: ArraySlice<UInt8>) -> (UInt32, Int)? {
        guard !b.isEmpty else { return nil }
        var s = b.endIndex - 1
        while s > b.startIndex && b[s] & 0xC0 == 0x80 { s -= 1 }
        return firstScalar(b[s...])
    }
    static func endsWithWord(_ b: ArraySlice<UInt8>) -> Bool { lastScalar(b).map { UClass.isWord($0.0) } ?? false }
    static func startsWithWord(_ b: ArraySlice<UInt8>) -> Bool { firstScalar(b).map { UClass.isWord($0.0) } ?? false }
}
