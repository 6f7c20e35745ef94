/// A piece of text on its way to the model. `atOrigin` is true when the piece starts at byte 0
/// of the original input (Metaspace's `prepend_scheme: first` depends on it).
struct Piece {
    var text: String
    var atOrigin: Bool
}

/// `SplitDelimiterBehavior` (tokenizer/normalizer.rs).
enum SplitBehavior: String, Sendable {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious",
         mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// Turns (range, isMatch) spans covering the text into the pieces to keep, exactly as
    /// `NormalizedString::split` folds them.
    func apply(_ spans: [(Range<Int>, Bool)]) -> [Range<Int>] {
        var out: [(Range<Int>, Bool)] = []
        switch self {
        case .removed: return spans.filter { !$0.1 }.map(\.0)
        case .isolated: return spans.map(\.0)
        case .mergedWithPrevious:
            var prevMatch = false
            for (r, m) in spans {
                if m && !prevMatch, let last = out.last { out[out.count - 1] = (last.0.lowerBound..<r.upperBound, false) }
                else { out.append((r, m && !prevMatch)) }
                prevMatch = m
            }
        case .mergedWithNext:
            var prevMatch = false
            for (r, m) in spans.reversed() {
                if m && !prevMatch, let last = out.last { out[out.count - 1] = (r.lowerBound..<last.0.upperBound, false) }
                else { out.append((r, false)) }
                prevMatch = m
            }
            out.reverse()
        case .contiguous:
            var prevMatch = false
            for (r, m) in spans {
                if m && prevMatch, let last = out.last { out[out.count - 1] = (last.0.lowerBound..<r.upperBound, true) }
                else { out.append((r, m)) }
                prevMatch = m
            }
        }
        return out.map(\.0)
    }
}

/// Pre-tokenizers as in `tokenizers/src/pre_tokenizers`.
indirect enum PreTokenizer: Sendable {
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(Pattern, SplitBehavior, invert: Bool)
    /// prependScheme: "always" | "first" | "never".
    case metaspace(replacement: Unicode.Scalar, prependScheme: String, split: Bool)
    case whitespace, whitespaceSplit, bert
    case digits(individual: Bool)
    case punctuation(SplitBehavior)
    case charDelimiter(Unicode.Scalar)
    case sequence([PreTokenizer])

    static func load(_ n: Node, depth: Int = 0) throws(TokenizerError) -> PreTokenizer {
        let type = try n.string("type")
        func behavior(_ d: String) throws(TokenizerError) -> SplitBehavior {
            let b = try n.string("behavior", default: d)
            guard let v = SplitBehavior(rawValue: b) else { throw try n.require("behavior").fail("unknown split behavior '\(b)'") }
            return v
        }
        switch type {
        case "ByteLevel":
            return .byteLevel(addPrefixSpace: try n.bool("add_prefix_space", default: true),
                              useRegex: try n.bool("use_regex", default: true))
        case "Split":
            return .split(try Pattern.load(try n.require("pattern")), try behavior("Isolated"),
                          invert: try n.bool("invert", default: false))
        case "Metaspace":
            let rep = try n.string("replacement", default: "▁")
            guard rep.unicodeScalars.count == 1 else { throw try n.require("replacement").fail("expected one character") }
            var scheme = try n.string("prepend_scheme", default: "")
            if scheme.isEmpty { scheme = try n.bool("add_prefix_space", default: true) ? "always" : "never" }
            guard ["always", "first", "never"].contains(scheme) else {
                throw try n.require("prepend_scheme").fail("unknown prepend_scheme '\(scheme)'")
            }
            return .metaspace(replacement: rep.unicodeScalars.first!, prependScheme: scheme, split: try n.bool("split", default: true))
        case "Whitespace": return .whitespace
        case "WhitespaceSplit": return .whitespaceSplit
        case "BertPreTokenizer": return .bert
        case "Digits": return .digits(individual: try n.bool("individual_digits", default: false))
        case "Punctuation": return .punctuation(try behavior("Isolated"))
        case "CharDelimiterSplit":
            let d = try n.string("delimiter")
            guard d.unicodeScalars.count == 1 else { throw try n.require("delimiter").fail("expected one character") }
            return .charDelimiter(d.unicodeScalars.first!)
        case "Sequence":
            try checkSequenceDepth(n, depth, "pre-tokenizer")
            return .sequence(try n.require("pretokenizers").items().map { (x) throws(TokenizerError) in
                try PreTokenizer.load(x, depth: depth + 1)
            })
        default:
            throw TokenizerError.unsupportedComponent(file: n.file, path: n.path + ".type", kind: "pre-tokenizer", type: type)
        }
    }

    func apply(_ pieces: [Piece]) throws(TokenizerError) -> [Piece] {
        var out: [Piece] = []
        out.reserveCapacity(pieces.count * 4)
        for p in pieces { try apply(p, into: &out) }
        return out
    }

    private static func splitBy(_ p: Piece, _ behavior: SplitBehavior, invert: Bool = false, into out: inout [Piece],
                                matches: ([UInt32]) throws(TokenizerError) -> [Range<Int>]) throws(TokenizerError) {
        let u = p.text.unicodeScalars.map(\.value)
        let ms = try matches(u)
        var spans: [(Range<Int>, Bool)] = []
        var last = 0
        for m in ms {
            if m.lowerBound > last { spans.append((last..<m.lowerBound, invert)) }
            spans.append((m, !invert))
            last = m.upperBound
        }
        if last < u.count { spans.append((last..<u.count, invert)) }
        for r in behavior.apply(spans) where !r.isEmpty {
            out.append(Piece(text: String(scalars: u[r].map { Unicode.Scalar($0)! }), atOrigin: p.atOrigin && r.lowerBound == 0))
        }
    }

    /// Each scalar satisfying `pred` is its own match (as `NormalizedString::split` with a char predicate).
    private static func charMatches(_ u: [UInt32], _ pred: (UInt32) -> Bool) -> [Range<Int>] {
        var r: [Range<Int>] = []
        for (i, v) in u.enumerated() where pred(v) { r.append(i..<(i + 1)) }
        return r
    }

    private func apply(_ p: Piece, into out: inout [Piece]) throws(TokenizerError) {
        switch self {
        case let .byteLevel(addPrefix, useRegex):
            var text = p.text
            if addPrefix && !text.hasPrefix(" ") { text = " " + text }
            if useRegex {
                GPT2Splitter.split(text) { bytes, first in
                    out.append(Piece(text: ByteLevelMap.map(bytes), atOrigin: p.atOrigin && first))
                }
            } else if !text.isEmpty {
                out.append(Piece(text: ByteLevelMap.map(Array(text.utf8)), atOrigin: p.atOrigin))
            }
        case let .split(pattern, behavior, invert):
            try Self.splitBy(p, behavior, invert: invert, into: &out) { (u) throws(TokenizerError) in try pattern.matches(u) }
        case let .metaspace(rep, scheme, split):
            var u = String.UnicodeScalarView()
            let first = p.text.unicodeScalars.first
            if scheme == "always" || (scheme == "first" && p.atOrigin), first != rep, first != " " { u.append(rep) }
            for c in p.text.unicodeScalars { u.append(c == " " ? rep : c) }
            let t = Piece(text: String(u), atOrigin: p.atOrigin)
            if split {
                try Self.splitBy(t, .mergedWithNext, into: &out) { u in Self.charMatches(u) { $0 == rep.value } }
            } else if !t.text.isEmpty { out.append(t) }
        case .whitespace:
            // `\w+|[^\w\s]+`, keeping the matches only.
            try Self.splitBy(p, .removed, invert: true, into: &out) { u in
                var r: [Range<Int>] = []
                var i = 0
                while i < u.count {
                    let w = UClass.isWord(u[i])
                    if !w && UClass.isSpace(u[i]) { i += 1; continue }
                    let s = i
                    while i < u.count, UClass.isWord(u[i]) == w, w || !UClass.isSpace(u[i]) { i += 1 }
                    r.append(s..<i)
                }
                return r
            }
        case .whitespaceSplit:
            try Self.splitBy(p, .removed, into: &out) { u in Self.charMatches(u, UClass.isSpace) }
        case .charDelimiter(let d):
            try Self.splitBy(p, .removed, into: &out) { u in Self.charMatches(u) { $0 == d.value } }
        case .bert:
            // Whitespace split (removed), then punctuation isolated, in one pass over scalars.
            var cur = String.UnicodeScalarView()
            var first = p.atOrigin
            func flush() {
                if !cur.isEmpty { out.append(Piece(text: String(cur), atOrigin: first)); cur = String.UnicodeScalarView() }
                first = false
            }
            for c in p.text.unicodeScalars {
                let v = c.value
                if UClass.isSpace(v) { flush(); continue }
                if UClass.isBertPunctuation(v) { flush(); out.append(Piece(text: String(c), atOrigin: false)); continue }
                cur.append(c)
            }
            flush()
        case let .digits(individual):
            try Self.splitBy(p, individual ? .isolated : .contiguous, into: &out) { u in Self.charMatches(u, UClass.isNumber) }
        case let .punctuation(b):
            try Self.splitBy(p, b, into: &out) { u in Self.charMatches(u, UClass.isBertPunctuation) }
        case let .sequence(ps):
            var cur = [p]
            for x in ps { cur = try x.apply(cur) }
            out.append(contentsOf: cur)
        }
    }
}

/// Hand-coded matcher for GPT-2's pre-tokenization regex (also SmolLM2's, via ByteLevel
/// `use_regex: true`):
///
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///
/// Same leftmost-first semantics as Oniguruma (checked by the golden tests), on UTF-8 bytes
/// with one class lookup per scalar.
enum GPT2Splitter {
    enum K: UInt8 { case letter, number, space, otherSpace, other }

    @inline(__always) static func kind(_ v: UInt32) -> K {
        if v < 128 {
            return asciiKinds[Int(v)]
        }
        if UClass.isLetter(v) { return .letter }
        if UClass.isNumber(v) { return .number }
        if UClass.isSpace(v) { return .otherSpace }
        return .other
    }
    static let asciiKinds: [K] = (0..<128).map { v in
        if UClass.asciiLetter[v] { return .letter }
        if v >= 48 && v <= 57 { return .number }
        if v == 32 { return .space }
        if v >= 9 && v <= 13 { return .otherSpace }
        return .other
    }

    /// Calls `emit(bytes, isFirst)` for every match, in order.
    static func split(_ text: String, _ emit: (ArraySlice<UInt8>, Bool) -> Void) {
        let bytes = Array(text.utf8)
        // Decode once: scalar start offsets and kinds.
        var starts: [Int] = []
        var kinds: [K] = []
        var vals: [UInt32] = []
        starts.reserveCapacity(bytes.count + 1)
        var i = 0
        for s in text.unicodeScalars {
            starts.append(i)
            kinds.append(kind(s.value))
            vals.append(s.value)
            i += UTF8.width(s)
        }
        let n = kinds.count
        starts.append(bytes.count)
        var p = 0
        var first = true
        @inline(__always) func isSpaceK(_ k: K) -> Bool { k == .space || k == .otherSpace }
        while p < n {
            var e = p
            let k = kinds[p]
            // 's|'t|'re|'ve|'m|'ll|'d
            if vals[p] == 39, p + 1 < n {
                let a = vals[p + 1]
                if a == 115 || a == 116 || a == 109 || a == 100 { e = p + 2 }
                else if p + 2 < n {
                    let b = vals[p + 2]
                    if (a == 114 && b == 101) || (a == 118 && b == 101) || (a == 108 && b == 108) { e = p + 3 }
                }
            }
            if e == p {
                var q = p
                var qk = k
                if k == .space, p + 1 < n, !isSpaceK(kinds[p + 1]) { q = p + 1; qk = kinds[q] }
                if !isSpaceK(qk) {
                    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
                    e = q + 1
                    while e < n, kinds[e] == qk { e += 1 }
                } else {
                    // `\s+(?!\S)` then `\s+`
                    var r = p
                    while r < n, isSpaceK(kinds[r]) { r += 1 }
                    if r == n { e = r } else if r - p >= 2 { e = r - 1 } else { e = r }
                }
            }
            emit(bytes[starts[p]..<starts[e]], first)
            first = false
            p = e
        }
    }
}
