/// A small backtracking regex engine for the patterns found in tokenizer.json (`Split`,
/// `Replace`), with Oniguruma's leftmost-first semantics over Unicode scalars.
///
/// Why not Swift `Regex` or NSRegularExpression: both are slow on this workload and neither can
/// bound its work, and a tokenizer.json is untrusted input. Here the work is bounded twice:
/// `compile` refuses constructs that backtrack exponentially (an unbounded quantifier over a body
/// that itself contains a quantifier, can match empty, or has alternatives that may start with
/// the same character), and every search carries a step budget linear in the input length.
///
/// Supported: literals and escapes (`\r \n \t \f \v \xHH \x{H…} \uHHHH`), `.`, classes with
/// ranges and negation, `\s \S \d \D \w \W \p{…} \P{…}` (general categories), groups `( )`,
/// `(?: )`, `(?i: )`, `(?i)`, lookahead `(?= )` `(?! )`, anchors `^ $ \A \z`, quantifiers
/// `* + ? {n} {n,} {n,m}` greedy or lazy. Anything else is refused with a reason.
final class BoundedRegex: @unchecked Sendable {
    let pattern: String
    fileprivate let program: [Inst]
    /// Steps allowed per scalar of input (plus a constant) before a search gives up.
    static let stepsPerScalar = 2_000

    struct Refusal: Error { let reason: String }
    struct BudgetExceeded: Error { let position: Int }

    /// Longest pattern accepted, in scalars (GPT-4o's Split pattern, among the longest real ones, is ~600).
    static let maxPatternLength = 16_384
    /// Quantifiers stacked on one atom (`a{2}{3}`); each wraps the atom once more.
    static let maxStackedQuantifiers = 3

    init(_ pattern: String) throws(Refusal) {
        self.pattern = pattern
        let n = pattern.unicodeScalars.count
        guard n <= Self.maxPatternLength else {
            throw Refusal(reason: "pattern of \(n) characters, over the \(Self.maxPatternLength)-character limit")
        }
        var p = RegexParser(Array(pattern.unicodeScalars).map(\.value))
        let ast = try p.parseAll()
        try Self.checkSafe(ast, insideLoop: false)
        var c = Compiler()
        try c.emit(ast)
        c.code.append(.match)
        program = c.code
    }

    /// All non-overlapping matches, leftmost-first, as scalar index ranges. An empty match
    /// advances one scalar and is not reported (as `tokenizers`' Pattern for onig).
    func matches(in s: [UInt32]) throws(BudgetExceeded) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var budget = Self.stepsPerScalar * (s.count + 1) + 100_000
        var start = 0
        while start <= s.count {
            var found = false
            var i = start
            while i <= s.count {
                if let end = try run(s, from: i, pc: 0, budget: &budget) {
                    if end > i { out.append(i..<end); start = end } else { start = i + 1 }
                    found = true
                    break
                }
                i += 1
            }
            if !found { break }
        }
        return out
    }

    /// Runs the program at `from`; returns the match end. Explicit backtrack stack.
    private func run(_ s: [UInt32], from: Int, pc startPC: Int, budget: inout Int) throws(BudgetExceeded) -> Int? {
        var stack: [(Int, Int)] = [(startPC, from)]
        while let (pc0, pos0) = stack.popLast() {
            var pc = pc0, pos = pos0
            while true {
                budget -= 1
                if budget < 0 { throw BudgetExceeded(position: pos) }
                switch program[pc] {
                case .match: return pos
                case let .set(set):
                    guard pos < s.count, set.contains(s[pos]) else { break }
                    pos += 1; pc += 1; continue
                case let .split(a, b):
                    stack.append((b, pos)); pc = a; continue
                case let .jump(t):
                    pc = t; continue
                case .start:
                    guard pos == 0 else { break }
                    pc += 1; continue
                case .end:
                    guard pos == s.count else { break }
                    pc += 1; continue
                case let .look(negated, body, next):
                    let ok = try run(s, from: pos, pc: body, budget: &budget) != nil
                    guard ok != negated else { break }
                    pc = next; continue
                }
                break  // failed: backtrack
            }
        }
        return nil
    }

    /// Refuses patterns whose backtracking can blow up exponentially.
    private static func checkSafe(_ n: RNode, insideLoop: Bool) throws(Refusal) {
        switch n {
        case .set, .start, .end: return
        case let .concat(xs): for x in xs { try checkSafe(x, insideLoop: insideLoop) }
        case let .alt(xs):
            if insideLoop {
                var firsts: [UInt32] = []
                for x in xs {
                    guard let f = x.firstLiteral else {
                        throw Refusal(reason: "alternation inside a repeated group whose branches may start alike "
                                          + "(catastrophic backtracking)")
                    }
                    if firsts.contains(f) {
                        throw Refusal(reason: "alternation inside a repeated group with overlapping branches (catastrophic backtracking)")
                    }
                    firsts.append(f)
                }
            }
            for x in xs { try checkSafe(x, insideLoop: insideLoop) }
        case let .look(_, x): try checkSafe(x, insideLoop: false)
        case let .repeatN(x, _, max, _):
            if max == nil || max! > 1 {
                if x.containsQuantifier { throw Refusal(reason: "nested quantifier (catastrophic backtracking)") }
                if x.canBeEmpty && max == nil { throw Refusal(reason: "repeated group that can match the empty string") }
                try checkSafe(x, insideLoop: max == nil)
            } else {
                try checkSafe(x, insideLoop: insideLoop)
            }
        }
    }
}

struct ScalarSet: Sendable {
    enum Item: Sendable { case range(UInt32, UInt32), space, digit, word, letter, number, category(Set<Unicode.GeneralCategory>), any }
    var items: [(Item, Bool)] = []   // (item, negated)
    var negated = false
    var ascii: (UInt64, UInt64) = (0, 0)

    func containsSlow(_ v: UInt32) -> Bool {
        var hit = false
        for (item, neg) in items {
            var m: Bool
            switch item {
            case let .range(lo, hi): m = v >= lo && v <= hi
            case .space: m = UClass.isSpace(v)
            case .digit: m = UClass.isDigit(v)
            case .word: m = UClass.isWord(v)
            case .letter: m = UClass.isLetter(v)
            case .number: m = UClass.isNumber(v)
            case let .category(cats): m = Unicode.Scalar(v).map { cats.contains($0.properties.generalCategory) } ?? false
            case .any: m = v != 10
            }
            if neg { m.toggle() }
            if m { hit = true; break }
        }
        return hit != negated
    }
    mutating func finish() {
        var lo: UInt64 = 0, hi: UInt64 = 0
        for v in 0..<128 where containsSlow(UInt32(v)) {
            if v < 64 { lo |= 1 << UInt64(v) } else { hi |= 1 << UInt64(v - 64) }
        }
        ascii = (lo, hi)
    }
    @inline(__always) func contains(_ v: UInt32) -> Bool {
        if v < 64 { return ascii.0 & (1 << UInt64(v)) != 0 }
        if v < 128 { return ascii.1 & (1 << UInt64(v - 64)) != 0 }
        return containsSlow(v)
    }
}

indirect enum RNode {
    case set(ScalarSet, literal: UInt32?)
    case concat([RNode])
    case alt([RNode])
    case repeatN(RNode, min: Int, max: Int?, greedy: Bool)
    case look(negated: Bool, RNode)
    case start, end

    var containsQuantifier: Bool {
        switch self {
        case .set, .start, .end: return false
        case let .concat(xs), let .alt(xs): return xs.contains { $0.containsQuantifier }
        case let .repeatN(x, _, max, _): return max != 1 || x.containsQuantifier
        case let .look(_, x): return x.containsQuantifier
        }
    }
    var canBeEmpty: Bool {
        switch self {
        case .set: return false
        case .start, .end, .look: return true
        case let .concat(xs): return xs.allSatisfy { $0.canBeEmpty }
        case let .alt(xs): return xs.contains { $0.canBeEmpty }
        case let .repeatN(x, min, _, _): return min == 0 || x.canBeEmpty
        }
    }
    var firstLiteral: UInt32? {
        switch self {
        case let .set(_, lit): return lit
        case let .concat(xs): return xs.first?.firstLiteral
        default: return nil
        }
    }
}

private struct RegexParser {
    let s: [UInt32]
    var i = 0
    var caseInsensitive = false
    /// Groups open around the current position; bounded so that parsing, the safety check, the
    /// compiler and lookahead matching (all recursive over the tree) stay shallow.
    var depth = 0
    init(_ s: [UInt32]) { self.s = s }

    func refuse(_ m: String) -> BoundedRegex.Refusal { .init(reason: "\(m) at character \(i)") }
    var peek: UInt32? { i < s.count ? s[i] : nil }

    mutating func parseAll() throws(BoundedRegex.Refusal) -> RNode {
        let n = try parseAlt()
        if i < s.count { throw refuse("unbalanced ')'") }
        return n
    }
    mutating func parseAlt() throws(BoundedRegex.Refusal) -> RNode {
        var branches = [try parseConcat()]
        while peek == 0x7C { i += 1; branches.append(try parseConcat()) }
        return branches.count == 1 ? branches[0] : .alt(branches)
    }
    mutating func parseConcat() throws(BoundedRegex.Refusal) -> RNode {
        var items: [RNode] = []
        while let c = peek, c != 0x7C, c != 0x29 {
            var atom = try parseAtom()
            guard let a = atom else { continue }
            atom = try parseQuantifier(a)
            items.append(atom!)
        }
        return items.count == 1 ? items[0] : .concat(items)
    }
    mutating func parseQuantifier(_ a: RNode) throws(BoundedRegex.Refusal) -> RNode {
        var node = a
        var stacked = 0
        while let c = peek {
            var lo = 0, hi: Int? = nil
            switch c {
            case 0x2A: lo = 0; hi = nil; i += 1
            case 0x2B: lo = 1; hi = nil; i += 1
            case 0x3F: lo = 0; hi = 1; i += 1
            case 0x7B:
                guard let (l, h) = try parseBraces() else { return node }
                lo = l; hi = h
            default: return node
            }
            var greedy = true
            if peek == 0x3F { greedy = false; i += 1 } else if peek == 0x2B { throw refuse("possessive quantifier") }
            if case .start = node { throw refuse("quantified anchor") }
            stacked += 1
            if stacked > BoundedRegex.maxStackedQuantifiers {
                throw refuse("more than \(BoundedRegex.maxStackedQuantifiers) quantifiers stacked on one item")
            }
            node = .repeatN(node, min: lo, max: hi, greedy: greedy)
        }
        return node
    }
    mutating func parseBraces() throws(BoundedRegex.Refusal) -> (Int, Int?)? {
        // `{` not followed by a valid count is a literal, as in Oniguruma.
        var j = i + 1
        func num(_ j: inout Int) -> Int? {
            var v: Int? = nil
            while j < s.count, s[j] >= 48, s[j] <= 57 { v = (v ?? 0) * 10 + Int(s[j] - 48); j += 1; if v! > 1000 { return nil } }
            return v
        }
        guard let lo = num(&j) else { return nil }
        var hi: Int? = lo
        if j < s.count, s[j] == 0x2C { j += 1; hi = num(&j) }
        guard j < s.count, s[j] == 0x7D else { return nil }
        if let h = hi, h < lo { throw refuse("bad repetition bounds") }
        if lo > 100 || (hi ?? 0) > 100 { throw refuse("repetition count above 100") }
        i = j + 1
        return (lo, hi)
    }
    func literal(_ v: UInt32) -> RNode {
        var set = ScalarSet()
        set.items.append((.range(v, v), false))
        if caseInsensitive, let sc = Unicode.Scalar(v) {
            for m in [sc.properties.lowercaseMapping, sc.properties.uppercaseMapping] {
                let u = Array(m.unicodeScalars)
                if u.count == 1, u[0].value != v { set.items.append((.range(u[0].value, u[0].value), false)) }
            }
        }
        set.finish()
        return .set(set, literal: caseInsensitive ? nil : v)
    }
    mutating func parseAtom() throws(BoundedRegex.Refusal) -> RNode? {
        let c = s[i]
        switch c {
        case 0x28: // (
            let open = i
            i += 1
            if peek == 0x3F { // (?
                i += 1
                guard let k = peek else { throw refuse("truncated group") }
                switch k {
                case 0x3A: i += 1; return try group(open)
                case 0x3D, 0x21: i += 1; let body = try group(open); return .look(negated: k == 0x21, body)
                case 0x69: // (?i: or (?i)
                    i += 1
                    if peek == 0x29 { i += 1; caseInsensitive = true; return nil }
                    guard peek == 0x3A else { throw refuse("unsupported group flags") }
                    i += 1
                    let saved = caseInsensitive
                    caseInsensitive = true
                    let g = try group(open)
                    caseInsensitive = saved
                    return g
                case 0x3C: throw refuse("lookbehind or named group is not supported")
                default: throw refuse("unsupported group syntax (?\(Character(Unicode.Scalar(k)!))")
                }
            }
            return try group(open)
        case 0x29: throw refuse("unbalanced ')'")
        case 0x5B: return try parseClass()
        case 0x2E:
            i += 1
            var set = ScalarSet(); set.items = [(.any, false)]; set.finish()
            return .set(set, literal: nil)
        case 0x5E: i += 1; return .start
        case 0x24: i += 1; return .end
        case 0x5C:
            i += 1
            guard let e = peek else { throw refuse("trailing backslash") }
            if e == 0x41 { i += 1; return .start }
            if e == 0x7A || e == 0x5A { i += 1; return .end }
            if e == 0x62 || e == 0x42 { throw refuse("word boundary \\b is not supported") }
            if let item = try parseEscapeItem() {
                var set = ScalarSet(); set.items = [item]; set.finish()
                return .set(set, literal: nil)
            }
            return literal(try parseEscapedLiteral())
        case 0x2A, 0x2B, 0x3F: throw refuse("quantifier with nothing to repeat")
        default:
            i += 1
            return literal(c)
        }
    }
    /// The group whose `(` is at `open`.
    mutating func group(_ open: Int) throws(BoundedRegex.Refusal) -> RNode {
        depth += 1
        defer { depth -= 1 }
        guard depth <= TokenizerLimits.maxRegexNesting else {
            throw .init(reason: "groups nested deeper than \(TokenizerLimits.maxRegexNesting) at character \(open)")
        }
        let saved = caseInsensitive
        let n = try parseAlt()
        caseInsensitive = saved
        guard peek == 0x29 else { throw refuse("missing ')'") }
        i += 1
        return n
    }
    /// `\s \S \d \D \w \W \p{..} \P{..}` as a class item, or nil for a literal escape.
    mutating func parseEscapeItem() throws(BoundedRegex.Refusal) -> (ScalarSet.Item, Bool)? {
        let e = s[i]
        switch e {
        case 0x73: i += 1; return (.space, false)
        case 0x53: i += 1; return (.space, true)
        case 0x64: i += 1; return (.digit, false)
        case 0x44: i += 1; return (.digit, true)
        case 0x77: i += 1; return (.word, false)
        case 0x57: i += 1; return (.word, true)
        case 0x70, 0x50:
            i += 1
            var name = ""
            if peek == 0x7B {
                i += 1
                while let c = peek, c != 0x7D { name.unicodeScalars.append(Unicode.Scalar(c)!); i += 1 }
                guard peek == 0x7D else { throw refuse("unterminated \\p{") }
                i += 1
            } else if let c = peek { name = String(Unicode.Scalar(c)!); i += 1 }
            var neg = e == 0x50
            if name.hasPrefix("^") { neg.toggle(); name.removeFirst() }
            return (try property(name), neg)
        default: return nil
        }
    }
    func property(_ name: String) throws(BoundedRegex.Refusal) -> ScalarSet.Item {
        typealias G = Unicode.GeneralCategory
        let table: [String: [G]] = [
            "Lu": [.uppercaseLetter], "Ll": [.lowercaseLetter], "Lt": [.titlecaseLetter], "Lm": [.modifierLetter], "Lo": [.otherLetter],
            "Nd": [.decimalNumber], "Nl": [.letterNumber], "No": [.otherNumber],
            "M": [.nonspacingMark, .spacingMark, .enclosingMark], "Mn": [.nonspacingMark], "Mc": [.spacingMark], "Me": [.enclosingMark],
            "P": [.connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation, .finalPunctuation,
                  .otherPunctuation],
            "Pc": [.connectorPunctuation], "Pd": [.dashPunctuation], "Ps": [.openPunctuation], "Pe": [.closePunctuation],
            "Pi": [.initialPunctuation], "Pf": [.finalPunctuation], "Po": [.otherPunctuation],
            "S": [.mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol], "Sm": [.mathSymbol], "Sc": [.currencySymbol],
            "Sk": [.modifierSymbol], "So": [.otherSymbol],
            "Z": [.spaceSeparator, .lineSeparator, .paragraphSeparator], "Zs": [.spaceSeparator], "Zl": [.lineSeparator],
            "Zp": [.paragraphSeparator],
            "C": [.control, .format, .surrogate, .privateUse, .unassigned], "Cc": [.control], "Cf": [.format], "Co": [.privateUse],
            "Cn": [.unassigned],
        ]
        switch name {
        case "L", "Letter": return .letter
        case "N", "Number": return .number
        default:
            let alias = ["Punctuation": "P", "Symbol": "S", "Mark": "M", "Separator": "Z", "Other": "C"][name] ?? name
            guard let cats = table[alias] else { throw refuse("unsupported Unicode property \\p{\(name)}") }
            return .category(Set(cats))
        }
    }
    mutating func parseEscapedLiteral() throws(BoundedRegex.Refusal) -> UInt32 {
        // `[a-\` ends the pattern on the backslash of a range's upper end (found by fuzzing).
        guard i < s.count else { throw refuse("trailing backslash") }
        let e = s[i]; i += 1
        switch e {
        case 0x6E: return 10
        case 0x72: return 13
        case 0x74: return 9
        case 0x66: return 12
        case 0x76: return 11
        case 0x30: return 0
        case 0x78, 0x75: // \xHH, \x{H..}, \uHHHH
            var digits = ""
            if e == 0x78, peek == 0x7B {
                i += 1
                while let c = peek, c != 0x7D { digits.unicodeScalars.append(Unicode.Scalar(c)!); i += 1 }
                guard peek == 0x7D else { throw refuse("unterminated \\x{…} escape") }
                i += 1
            } else {
                let n = e == 0x78 ? 2 : 4
                for _ in 0..<n { if let c = peek { digits.unicodeScalars.append(Unicode.Scalar(c)!); i += 1 } }
            }
            guard let v = UInt32(digits, radix: 16), Unicode.Scalar(v) != nil else { throw refuse("bad hex escape") }
            return v
        default:
            if (e >= 0x30 && e <= 0x39) || UClass.asciiLetter[Int(min(e, 127))] && e < 128 {
                throw refuse("unsupported escape \\\(Character(Unicode.Scalar(e)!))")
            }
            return e
        }
    }
    mutating func parseClass() throws(BoundedRegex.Refusal) -> RNode {
        i += 1
        var set = ScalarSet()
        if peek == 0x5E { set.negated = true; i += 1 }
        var first = true
        while true {
            guard let c = peek else { throw refuse("unterminated character class") }
            if c == 0x5D && !first { i += 1; break }
            first = false
            if c == 0x5B { throw refuse("nested character classes are not supported") }
            var lo: UInt32
            if c == 0x5C {
                i += 1
                guard peek != nil else { throw refuse("trailing backslash") }
                if let item = try parseEscapeItem() { set.items.append(item); continue }
                lo = try parseEscapedLiteral()
            } else { lo = c; i += 1 }
            if peek == 0x2D, i + 1 < s.count, s[i + 1] != 0x5D {
                i += 1
                var hi: UInt32
                if peek == 0x5C { i += 1; hi = try parseEscapedLiteral() } else { hi = s[i]; i += 1 }
                guard hi >= lo else { throw refuse("reversed class range") }
                set.items.append((.range(lo, hi), false))
            } else {
                set.items.append((.range(lo, lo), false))
                if caseInsensitive, let sc = Unicode.Scalar(lo) {
                    for m in [sc.properties.lowercaseMapping, sc.properties.uppercaseMapping] {
                        let u = Array(m.unicodeScalars)
                        if u.count == 1 { set.items.append((.range(u[0].value, u[0].value), false)) }
                    }
                }
            }
        }
        set.finish()
        return .set(set, literal: nil)
    }
}

fileprivate enum Inst {
    case set(ScalarSet)
    case split(Int, Int)
    case jump(Int)
    case look(negated: Bool, body: Int, next: Int)
    case start, end, match
}

private struct Compiler {
    var code: [Inst] = []
    mutating func emit(_ n: RNode) throws(BoundedRegex.Refusal) {
        switch n {
        case let .set(s, _):
            if code.count > 50_000 { throw .init(reason: "pattern too large after expanding repetitions") }
            code.append(.set(s))
        case .start: code.append(.start)
        case .end: code.append(.end)
        case let .concat(xs): for x in xs { try emit(x) }
        case let .alt(xs):
            var jumps: [Int] = []
            for (k, x) in xs.enumerated() {
                if k < xs.count - 1 {
                    let split = code.count
                    code.append(.jump(0))
                    try emit(x)
                    jumps.append(code.count)
                    code.append(.jump(0))
                    code[split] = .split(split + 1, code.count)
                } else {
                    try emit(x)
                }
            }
            for j in jumps { code[j] = .jump(code.count) }
        case let .look(neg, x):
            let at = code.count
            code.append(.jump(0))
            try emit(x)
            code.append(.match)
            code[at] = .look(negated: neg, body: at + 1, next: code.count)
        case let .repeatN(x, lo, hi, greedy):
            if code.count > 50_000 { throw .init(reason: "pattern too large after expanding repetitions") }
            for _ in 0..<lo { try emit(x) }
            if let hi {
                // Optional copies: x? x? … (each a split), hi - lo times.
                var exits: [Int] = []
                for _ in lo..<hi {
                    exits.append(code.count)
                    code.append(.jump(0))
                    try emit(x)
                }
                for e in exits { code[e] = greedy ? .split(e + 1, code.count) : .split(code.count, e + 1) }
            } else {
                let loop = code.count
                code.append(.jump(0))
                try emit(x)
                code.append(.jump(loop))
                code[loop] = greedy ? .split(loop + 1, code.count) : .split(code.count, loop + 1)
            }
        }
    }
}
