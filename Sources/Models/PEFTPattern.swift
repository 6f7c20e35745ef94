/// The part of Python's `re` syntax that PEFT's module patterns use (`target_modules` and
/// `exclude_modules` given as a string, `rank_pattern` / `alpha_pattern` keys), matched as PEFT
/// matches them — `re.fullmatch(pattern, name)` and `re.match(rf"(.*\.)?({key})$", name)` — but
/// with a Thompson NFA, so a hostile pattern costs O(pattern × name) and cannot backtrack for
/// ever.
///
/// Supported, with Python's meaning: literals, `.`, `^`, `$`, classes `[...]` / `[^...]` with
/// ranges, `\d \D \w \W \s \S`, escaped punctuation, groups `(...)`, `(?:...)`, `(?P<name>...)`,
/// `|`, and the quantifiers `* + ? {m} {m,} {,n} {m,n}` with or without a lazy `?` (laziness does
/// not change whether a match exists). Anything else — lookaround, backreferences, flags,
/// possessive quantifiers, `\b`, a bare `{` — is refused rather than approximated: a pattern
/// Assay read differently from Python would adapt other modules than PEFT does.
///
/// Module names are ASCII in every architecture Assay runs (and a name that is not fails strict
/// weight binding later), so `\d`, `\w` and `\s` are their ASCII forms; on ASCII names Python's
/// Unicode classes give the same answers.
struct PEFTPattern: Sendable {
    struct Refusal: Error, Equatable {
        let reason: String
        let offset: Int
    }

    /// Longest pattern accepted, and the most NFA states one may compile to (`{m,n}` copies its
    /// operand): far above any real `target_modules`, small enough to bound matching work.
    static let maxPatternLength = 4_096
    static let maxStates = 50_000
    static let maxNesting = 64
    static let maxRepeat = 256

    let source: String
    private let program: [Instruction]

    init(_ pattern: String) throws(Refusal) {
        source = pattern
        let scalars = Array(pattern.unicodeScalars)
        guard scalars.count <= Self.maxPatternLength else {
            throw Refusal(reason: "longer than \(Self.maxPatternLength) characters", offset: 0)
        }
        var parser = Parser(chars: scalars)
        let node = try parser.parseAlternation(depth: 0)
        if parser.pos < scalars.count {
            throw Refusal(reason: "unbalanced parenthesis", offset: parser.pos)
        }
        var compiler = Compiler()
        try compiler.emit(node)
        compiler.program.append(.match)
        program = compiler.program
    }

    /// `re.fullmatch(pattern, name) is not None`.
    func fullMatch(_ name: String) -> Bool { run(Array(name.unicodeScalars), anywhere: false) }

    /// `re.match(pattern, name) is not None`: anchored at the start, may end anywhere.
    func prefixMatch(_ name: String) -> Bool { run(Array(name.unicodeScalars), anywhere: true) }

    /// PEFT's `get_pattern_key` test for one `rank_pattern` / `alpha_pattern` key:
    /// `re.match(rf"(.*\.)?({key})$", name)`. The key must be a pattern on its own first, so that
    /// splicing it into the wrapper cannot change the wrapper's structure (`q_proj)|(.*`).
    static func patternKey(_ key: String) throws(Refusal) -> PEFTPattern {
        _ = try PEFTPattern(key)
        return try PEFTPattern("(.*\\.)?(" + key + ")$")
    }

    /// ASCII `\w`: letters, digits and underscore.
    static func isWord(_ c: Unicode.Scalar) -> Bool { CharSet.inClass("w", c) }

    // MARK: - Matching

    private func run(_ s: [Unicode.Scalar], anywhere: Bool) -> Bool {
        var current = [Int](), next = [Int]()
        var mark = [Int](repeating: -1, count: program.count)
        var stack = [Int]()
        func add(_ pc: Int, at pos: Int, into list: inout [Int]) -> Bool {
            stack.append(pc)
            var matched = false
            while let p = stack.popLast() {
                guard mark[p] != pos else { continue }
                mark[p] = pos
                switch program[p] {
                case .match: matched = true; list.append(p)
                case let .split(a, b): stack.append(b); stack.append(a)
                case let .jump(a): stack.append(a)
                case .start: if pos == 0 { stack.append(p + 1) }
                case .end:
                    // Python's `$` without MULTILINE: the end, or just before a final newline.
                    if pos == s.count || (pos == s.count - 1 && s[pos] == "\n") { stack.append(p + 1) }
                case .char: list.append(p)
                }
            }
            return matched
        }
        if add(0, at: 0, into: &current), anywhere { return true }
        for pos in 0..<s.count {
            next.removeAll(keepingCapacity: true)
            var matched = false
            for pc in current {
                if case let .char(set) = program[pc], set.contains(s[pos]) {
                    matched = add(pc + 1, at: pos + 1, into: &next) || matched
                }
            }
            if matched && anywhere { return true }
            swap(&current, &next)
            if current.isEmpty { return false }
        }
        return current.contains { if case .match = program[$0] { return true } else { return false } }
    }

    // MARK: - Syntax

    fileprivate struct CharSet: Sendable {
        var negated = false
        var ranges: [ClosedRange<UInt32>] = []
        var classes: [(kind: Character, negated: Bool)] = []

        static let any: CharSet = { var s = CharSet(); s.negated = true; s.ranges = [10...10]; return s }()

        func contains(_ c: Unicode.Scalar) -> Bool {
            let v = c.value
            var hit = ranges.contains { $0.contains(v) }
            if !hit {
                for (k, neg) in classes where Self.inClass(k, c) != neg { hit = true; break }
            }
            return hit != negated
        }

        static func inClass(_ k: Character, _ c: Unicode.Scalar) -> Bool {
            let v = c.value
            switch k {
            case "d": return (48...57).contains(v)
            case "w": return (48...57).contains(v) || (65...90).contains(v) || (97...122).contains(v) || v == 95
            default: return v == 32 || (9...13).contains(v)  // "s"
            }
        }
    }

    fileprivate indirect enum Node {
        case set(CharSet)
        case start, end
        case concat([Node])
        case alternation([Node])
        case repetition(Node, min: Int, max: Int?)
    }

    fileprivate enum Instruction: Sendable {
        case char(CharSet)
        case split(Int, Int)
        case jump(Int)
        case start, end, match
    }

    private struct Parser {
        let chars: [Unicode.Scalar]
        var pos = 0

        func peek(_ k: Int = 0) -> Unicode.Scalar? { pos + k < chars.count ? chars[pos + k] : nil }

        func refuse(_ reason: String, _ at: Int? = nil) -> Refusal { Refusal(reason: reason, offset: at ?? pos) }

        mutating func parseAlternation(depth: Int) throws(Refusal) -> Node {
            guard depth <= PEFTPattern.maxNesting else { throw refuse("nested deeper than \(PEFTPattern.maxNesting) groups") }
            var branches = [try parseConcat(depth: depth)]
            while peek() == "|" {
                pos += 1
                branches.append(try parseConcat(depth: depth))
            }
            return branches.count == 1 ? branches[0] : .alternation(branches)
        }

        mutating func parseConcat(depth: Int) throws(Refusal) -> Node {
            var items: [Node] = []
            while let c = peek(), c != "|", c != ")" {
                var atom = try parseAtom(depth: depth)
                atom = try parseQuantifiers(atom)
                items.append(atom)
            }
            return .concat(items)
        }

        mutating func parseQuantifiers(_ atom: Node) throws(Refusal) -> Node {
            guard let (lo, hi) = try parseQuantifier() else { return atom }
            if case .start = atom { throw refuse("nothing to repeat") }
            if case .end = atom { throw refuse("nothing to repeat") }
            if peek() == "?" { pos += 1 }  // lazy: the same set of strings matches
            if peek() == "+" { throw refuse("possessive quantifiers are not supported") }
            if let c = peek(), c == "*" || c == "+" || c == "?" || c == "{" { throw refuse("multiple repeat") }
            return .repetition(atom, min: lo, max: hi)
        }

        mutating func parseQuantifier() throws(Refusal) -> (Int, Int?)? {
            switch peek() {
            case "*": pos += 1; return (0, nil)
            case "+": pos += 1; return (1, nil)
            case "?": pos += 1; return (0, 1)
            case "{":
                let start = pos
                pos += 1
                let lo = number()
                var hi: Int? = lo
                if peek() == "," { pos += 1; hi = number() }
                guard peek() == "}", lo != nil || hi != nil || chars[pos - 1] == "," else {
                    throw refuse("'{' that is not a {m,n} quantifier", start)
                }
                pos += 1
                let l = lo ?? 0
                if let h = hi, h < l { throw refuse("min repeat greater than max repeat", start) }
                guard l <= PEFTPattern.maxRepeat, (hi ?? 0) <= PEFTPattern.maxRepeat else {
                    throw refuse("repeat count above \(PEFTPattern.maxRepeat)", start)
                }
                return (l, hi)
            default: return nil
            }
        }

        mutating func number() -> Int? {
            var v: Int? = nil
            while let c = peek(), (48...57).contains(c.value) {
                v = min((v ?? 0) * 10 + Int(c.value - 48), 1_000_000)
                pos += 1
            }
            return v
        }

        mutating func parseAtom(depth: Int) throws(Refusal) -> Node {
            let c = chars[pos]
            switch c {
            case "(":
                let open = pos
                pos += 1
                if peek() == "?" {
                    if peek(1) == ":" {
                        pos += 2
                    } else if peek(1) == "P", peek(2) == "<" {
                        pos += 3
                        let nameStart = pos
                        while let n = peek(), n == "_" || CharSet.inClass("w", n) { pos += 1 }
                        guard peek() == ">", pos > nameStart, !(48...57).contains(chars[nameStart].value) else {
                            throw refuse("bad group name", nameStart)
                        }
                        pos += 1
                    } else {
                        throw refuse("'(?' constructs other than (?:...) and (?P<name>...) are not supported", open)
                    }
                }
                let inner = try parseAlternation(depth: depth + 1)
                guard peek() == ")" else { throw refuse("missing ), unterminated subpattern", open) }
                pos += 1
                return inner
            case ")": throw refuse("unbalanced parenthesis")
            case "[": return .set(try parseClass())
            case ".": pos += 1; return .set(.any)
            case "^": pos += 1; return .start
            case "$": pos += 1; return .end
            case "*", "+", "?": throw refuse("nothing to repeat")
            case "{": throw refuse("'{' that is not a {m,n} quantifier")
            case "\\":
                let s = try parseEscape(inClass: false)
                return .set(s)
            default:
                pos += 1
                return .set(CharSet(ranges: [c.value...c.value]))
            }
        }

        /// One escape; in a class it may only be a single character or a class shorthand.
        mutating func parseEscape(inClass: Bool) throws(Refusal) -> CharSet {
            let at = pos
            pos += 1
            guard let e = peek() else { throw refuse("bad escape (end of pattern)", at) }
            pos += 1
            switch e {
            case "d", "w", "s": return CharSet(classes: [(Character(e), false)])
            case "D", "W", "S": return CharSet(classes: [(Character(String(e).lowercased()), true)])
            case "n": return CharSet(ranges: [10...10])
            case "t": return CharSet(ranges: [9...9])
            default:
                // Python: an escaped ASCII letter or digit is a special sequence or an error; any
                // other escaped character stands for itself.
                if e.value < 128 && CharSet.inClass("w", e) {
                    throw refuse("escape \\\(e) is not supported", at)
                }
                return CharSet(ranges: [e.value...e.value])
            }
        }

        mutating func parseClass() throws(Refusal) -> CharSet {
            let open = pos
            pos += 1
            var set = CharSet()
            if peek() == "^" { set.negated = true; pos += 1 }
            var first = true
            while true {
                guard let c = peek() else { throw refuse("unterminated character set", open) }
                if c == "]" && !first { pos += 1; break }
                first = false
                if c == "[" { throw refuse("'[' inside a character set is not supported") }
                if let n = peek(1), n == c, "&~|-".unicodeScalars.contains(c) {
                    throw refuse("set operations ('\(c)\(c)') are not supported")
                }
                var lo: UInt32
                if c == "\\" {
                    let e = try parseEscape(inClass: true)
                    if !e.classes.isEmpty {
                        // Python: `[\d-z]` is "bad character range", not three members.
                        if peek() == "-", let n = peek(1), n != "]" { throw refuse("bad character range") }
                        set.classes += e.classes
                        continue
                    }
                    lo = e.ranges[0].lowerBound
                } else {
                    pos += 1
                    lo = c.value
                }
                if peek() == "-", let n = peek(1), n != "]" {
                    pos += 1
                    var hi: UInt32
                    if n == "\\" {
                        let rangeAt = pos
                        let e = try parseEscape(inClass: true)
                        guard e.classes.isEmpty else { throw refuse("bad character range", rangeAt) }
                        hi = e.ranges[0].lowerBound
                    } else {
                        pos += 1
                        hi = n.value
                    }
                    guard lo <= hi else { throw refuse("bad character range") }
                    set.ranges.append(lo...hi)
                } else {
                    set.ranges.append(lo...lo)
                }
            }
            return set
        }
    }

    private struct Compiler {
        var program: [Instruction] = []

        mutating func emit(_ node: Node) throws(Refusal) {
            guard program.count <= PEFTPattern.maxStates else {
                throw Refusal(reason: "compiles to more than \(PEFTPattern.maxStates) states", offset: 0)
            }
            switch node {
            case let .set(s): program.append(.char(s))
            case .start: program.append(.start)
            case .end: program.append(.end)
            case let .concat(items): for i in items { try emit(i) }
            case let .alternation(branches):
                // split L1, next; L1: branch; jump end; next: split ...
                var jumps: [Int] = []
                for (i, b) in branches.enumerated() {
                    if i < branches.count - 1 {
                        let split = program.count
                        program.append(.split(split + 1, -1))
                        try emit(b)
                        jumps.append(program.count)
                        program.append(.jump(-1))
                        program[split] = .split(split + 1, program.count)
                    } else {
                        try emit(b)
                    }
                }
                for j in jumps { program[j] = .jump(program.count) }
            case let .repetition(inner, lo, hi):
                for _ in 0..<lo { try emit(inner) }
                if let hi {
                    // (inner)? repeated hi - lo times.
                    var splits: [Int] = []
                    for _ in lo..<hi {
                        splits.append(program.count)
                        program.append(.split(program.count + 1, -1))
                        try emit(inner)
                    }
                    for s in splits { program[s] = .split(s + 1, program.count) }
                } else {
                    // L: split body, out; body; jump L
                    let loop = program.count
                    program.append(.split(loop + 1, -1))
                    try emit(inner)
                    program.append(.jump(loop))
                    program[loop] = .split(loop + 1, program.count)
                }
            }
        }
    }
}
