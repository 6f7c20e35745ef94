import Foundation

/// A Jinja2-subset interpreter that runs Hugging Face chat templates as written, with the
/// environment transformers uses (`trim_blocks`, `lstrip_blocks`, loop controls, default
/// Undefined, `raise_exception`, `tojson`).
///
/// Supported: `{{ }}`, `{% if/elif/else/endif %}`, `{% for x in … [if …] %}…{% else %}…{% endfor %}`
/// (with `loop.*`, tuple targets), `{% set x = … %}`, `{% set ns.attr = … %}`, `namespace()`,
/// `{% break/continue %}`, `{% generation %}`, comments, `-` whitespace control; expressions with
/// literals, lists, dicts, `+ - * / // % ~`, comparisons, `and/or/not`, `in`, `is [not] test`,
/// conditional expressions, slicing, attribute/item access, the usual string methods and filters.
/// Anything else (macros, `include`, unknown filters…) is a `TokenizerError.templateError` naming it.
///
/// The template comes from the model directory, so it is hostile input: parsing and rendering are
/// bounded by `Limits` (nesting, work, sizes), integer arithmetic is checked, and every breach is
/// a `TokenizerError` naming the file, the line and column, and the construct.
public struct ChatTemplate: Sendable {
    /// Bounds on what a template can make Assay do. Real templates (the parity set in
    /// Tests/Fixtures/tokenizers/chat_templates.json, the largest tool-use templates on the Hub at
    /// ~20 KB) stay orders of magnitude below every one of them.
    public enum Limits {
        /// Template source size (UTF-8 bytes); the largest real templates are ~20 KB.
        public static let maxSourceBytes = 1 << 20
        /// Expression nesting (parentheses, operators, subscripts, filter chains, unary `-`/`not`):
        /// both the parser's recursion and the depth of the expression tree.
        public static let maxExpressionDepth = 64
        /// Nested `{% if %}` / `{% for %}` / `{% generation %}` blocks.
        public static let maxBlockDepth = 64
        /// List/dict nesting of any value built while rendering (messages are 2–4 deep).
        public static let maxValueDepth = 64
        /// Recursion of the evaluator (blocks + expressions); a backstop to the two above.
        public static let maxEvalDepth = 256
        /// Bytes one render may output.
        public static let maxOutputBytes = 16 << 20
        /// UTF-8 bytes of any one string an operation produces (`*`, `~`, `+`, join, replace, tojson…).
        public static let maxStringBytes = 16 << 20
        /// Items of any one list or dict an operation produces (`range`, `+`, `list`…).
        public static let maxItems = 1 << 20
        /// Work units per render: one per expression evaluated, loop iteration, call, filter and
        /// list or dict item an operation makes, plus one per `bytesPerWorkUnit` bytes it reads or
        /// writes. Since every allocation is charged, the budget also bounds memory (≈ 200 MB). A real
        /// template over a long conversation uses a few thousand; the budget is a few seconds of
        /// a debug build.
        public static let maxWorkUnits = 2_000_000
        public static let bytesPerWorkUnit = 64
        /// Largest `tojson(indent=…)`.
        public static let maxIndent = 16
        /// Longest `raise_exception` message kept (scalars); the rest is cut off.
        public static let maxRaisedMessage = 1_000
    }

    /// Which bound a template broke (see `Limits`).
    public enum Limit: String, Sendable, Equatable {
        case sourceSize = "source size", expressionDepth = "expression nesting", blockDepth = "block nesting"
        case valueDepth = "value nesting", evalDepth = "evaluation depth", outputSize = "output size"
        case valueSize = "value size", work = "work budget"
    }

    let body: [JNode]
    public let source: String
    /// The file the template came from (`…/chat_template.jinja` or `…/tokenizer_config.json`), for errors.
    public let file: String

    public init(_ source: String, file: String = "chat template") throws(TokenizerError) {
        self.source = source
        self.file = file
        guard source.utf8.count <= Limits.maxSourceBytes else {
            throw .templateLimit(file: file, line: 1, column: 1, limit: .sourceSize,
                                 message: "template is \(source.utf8.count) bytes, over the \(Limits.maxSourceBytes)-byte limit")
        }
        do {
            var lexer = JLexer(source)
            let toks = try lexer.run()
            var p = JParser(toks)
            body = try p.parseBody(until: [])
        } catch { throw Self.located(error, source: source, file: file) }
    }

    /// Renders as transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt:)`.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String?, eosToken: String?,
                       extra: [String: String] = [:]) throws(TokenizerError) -> String {
        var vars: [String: JValue] = [
            "messages": .list(messages.map { .dict([("role", .string($0.role)), ("content", .string($0.content))]) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "tools": .none, "documents": .none,
        ]
        if let bosToken { vars["bos_token"] = .string(bosToken) }
        if let eosToken { vars["eos_token"] = .string(eosToken) }
        for (k, v) in extra { vars[k] = .string(v) }
        let ctx = JEvaluator(scopes: [vars])
        do { try ctx.exec(body) } catch {
            switch error {
            case let .fault(f): throw Self.located(f, source: source, file: file)
            case let .raised(m): throw .templateRaised(file: file, message: m)
            case .brk, .cont: break  // `{% break %}` outside a loop ends the render, as Jinja's would not compile
            }
        }
        return ctx.out
    }

    static func located(_ f: TemplateFault, source: String, file: String) -> TokenizerError {
        let (line, column) = lineColumn(source, f.position)
        if let limit = f.limit { return .templateLimit(file: file, line: line, column: column, limit: limit, message: f.message) }
        return .templateError(file: file, line: line, column: column, message: f.message)
    }

    /// 1-based line and column (in scalars) of a scalar offset.
    static func lineColumn(_ source: String, _ offset: Int) -> (Int, Int) {
        var line = 1, col = 1, k = 0
        for c in source.unicodeScalars {
            if k >= offset { break }
            if c == "\n" { line += 1; col = 1 } else { col += 1 }
            k += 1
        }
        return (line, col)
    }
}

/// A template error before it is located: a scalar offset into the source and, for a limit
/// breach, which limit.
struct TemplateFault: Error {
    let position: Int
    let limit: ChatTemplate.Limit?
    let message: String
    init(_ position: Int, _ message: String, limit: ChatTemplate.Limit? = nil) {
        self.position = position; self.message = message; self.limit = limit
    }
}

/// What can unwind the evaluator: an error, `raise_exception`, or a loop control.
enum JThrow: Error { case fault(TemplateFault), raised(String), brk, cont }

typealias L = ChatTemplate.Limits

// MARK: values

final class JNamespace: @unchecked Sendable { var attrs: [String: JValue] = [:] }

/// Nesting facts kept on every container so the bounds are O(1) to check: `depth` (a scalar is
/// 0) bounds every recursive walk and the recursive free of the value; `hasNamespace` lets
/// `set ns.x = …` refuse to put a namespace inside a namespace, which would build chains the
/// depth cannot see (a namespace is mutable, so the depth stored on its holders goes stale).
struct JMeta: Sendable {
    var depth: Int
    var hasNamespace: Bool
    init<S: Sequence>(_ items: S) where S.Element == JValue {
        var d = 0, ns = false
        for v in items { d = max(d, v.depth); ns = ns || v.hasNamespace }
        depth = d + 1; hasNamespace = ns
    }
}

enum JValue: Sendable {
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JValue], JMeta)
    case dict([(String, JValue)], JMeta)
    case namespace(JNamespace)
    case loop([String: JValue], JMeta)

    static func list(_ items: [JValue]) -> JValue { .list(items, JMeta(items)) }
    static func dict(_ items: [(String, JValue)]) -> JValue { .dict(items, JMeta(items.lazy.map(\.1))) }
    static func loop(_ items: [String: JValue]) -> JValue { .loop(items, JMeta(items.values)) }

    var depth: Int {
        switch self {
        case let .list(_, m), let .dict(_, m), let .loop(_, m): return m.depth
        case .namespace: return 1
        default: return 0
        }
    }
    var hasNamespace: Bool {
        switch self {
        case let .list(_, m), let .dict(_, m), let .loop(_, m): return m.hasNamespace
        case .namespace: return true
        default: return false
        }
    }

    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(l, _): return !l.isEmpty
        case let .dict(d, _): return !d.isEmpty
        case .namespace, .loop: return true
        }
    }
    /// Python `str()` of a scalar (containers go through `JEvaluator.stringify`, which is bounded).
    var scalarStr: String? {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return d == d.rounded() && abs(d) < 1e16 ? String(format: "%.1f", d) : String(d)
        case let .string(s): return s
        case .namespace: return "<Namespace>"
        case .loop: return "<LoopContext>"
        case .list, .dict: return nil
        }
    }
    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "none"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "string"
        case .list: return "list"
        case .dict: return "dict"
        case .namespace: return "namespace"
        case .loop: return "loop"
        }
    }
}

// MARK: lexer

enum JTok: Equatable {
    case text(String)
    case exprStart, exprEnd, stmtStart, stmtEnd
    case name(String), string(String), int(Int), double(Double), op(String)
}

struct JLexer {
    let s: [Unicode.Scalar]
    var i = 0
    var out: [(JTok, Int)] = []
    init(_ src: String) { s = Array(src.unicodeScalars) }

    static let ops: [(String, [Unicode.Scalar])] = ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                                     "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="].map { ($0, Array($0.unicodeScalars)) }

    func fail(_ m: String, _ at: Int? = nil) -> TemplateFault { TemplateFault(at ?? i, m) }
    func at(_ k: Int, _ u: [Unicode.Scalar]) -> Bool {
        guard k + u.count <= s.count else { return false }
        for (j, c) in u.enumerated() where s[k + j] != c { return false }
        return true
    }
    func at(_ k: Int, _ str: String) -> Bool { at(k, Array(str.unicodeScalars)) }

    mutating func run() throws(TemplateFault) -> [(JTok, Int)] {
        var text = String.UnicodeScalarView()
        var trimNextNewline = false   // trim_blocks
        var stripNextWhitespace = false  // `-%}` etc.
        func flushText(_ out: inout [(JTok, Int)], rstrip: Bool, lstripBlock: Bool, at: Int) {
            var t = Array(text)
            if rstrip { while let l = t.last, l.properties.isWhitespace { t.removeLast() } }
            else if lstripBlock {
                // lstrip_blocks: remove spaces/tabs between the line start and the tag.
                var k = t.count
                while k > 0, t[k - 1] == " " || t[k - 1] == "\t" { k -= 1 }
                if k == 0 || t[k - 1] == "\n" { t.removeSubrange(k...) }
            }
            if !t.isEmpty { out.append((.text(String(scalars: t)), at)) }
            text = String.UnicodeScalarView()
        }
        let commentEnd = Array("#}".unicodeScalars), commentEndMinus = Array("-#}".unicodeScalars)
        while i < s.count {
            let c = s[i]
            if c == "{" && i + 1 < s.count && (s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#") {
                let kind = s[i + 1]
                let start = i
                // `{% raw %}` is not supported: refuse it rather than misrender.
                let minus = i + 2 < s.count && s[i + 2] == "-"
                let plus = i + 2 < s.count && s[i + 2] == "+"
                flushText(&out, rstrip: minus, lstripBlock: (kind == "%" || kind == "#") && !plus, at: start)
                i += (minus || plus) ? 3 : 2
                if kind == "#" {
                    while i < s.count && !(at(i, commentEnd) || at(i, commentEndMinus)) { i += 1 }
                    guard i < s.count else { throw fail("unterminated comment", start) }
                    stripNextWhitespace = at(i, commentEndMinus)
                    i += stripNextWhitespace ? 3 : 2
                    trimNextNewline = true
                    continue
                }
                out.append((kind == "{" ? .exprStart : .stmtStart, start))
                let close = Array((kind == "{" ? "}}" : "%}").unicodeScalars)
                try lexInside(close: close, start: start)
                let endMinus = at(i, ["-"] + close)
                i += endMinus ? 3 : 2
                out.append((kind == "{" ? .exprEnd : .stmtEnd, i))
                if case let .name(n)? = out.dropLast().last.map(\.0), n == "raw", kind == "%" {
                    throw fail("'{% raw %}' is not supported", start)
                }
                stripNextWhitespace = endMinus
                trimNextNewline = kind == "%"
                continue
            }
            if stripNextWhitespace {
                if c.properties.isWhitespace { i += 1; continue }
                stripNextWhitespace = false
            }
            if trimNextNewline {
                trimNextNewline = false
                if c == "\n" { i += 1; continue }
                if c == "\r" && i + 1 < s.count && s[i + 1] == "\n" { i += 2; continue }
            }
            text.append(c)
            i += 1
        }
        flushText(&out, rstrip: false, lstripBlock: false, at: i)
        return out
    }

    mutating func lexInside(close: [Unicode.Scalar], start: Int) throws(TemplateFault) {
        let closeMinus = ["-"] + close
        while true {
            while i < s.count, s[i].properties.isWhitespace { i += 1 }
            guard i < s.count else { throw fail("unterminated tag", start) }
            if at(i, close) || at(i, closeMinus) { return }
            let c = s[i]
            let tokStart = i
            if c == "_" || c.properties.isAlphabetic {
                var n = ""
                while i < s.count, s[i] == "_" || s[i].properties.isAlphabetic || s[i].properties.numericType == .decimal { n.unicodeScalars.append(s[i]); i += 1 }
                out.append((.name(n), tokStart))
            } else if c.value >= 48 && c.value <= 57 {
                var n = ""
                while i < s.count, (s[i].value >= 48 && s[i].value <= 57) || s[i] == "_" { if s[i] != "_" { n.unicodeScalars.append(s[i]); }; i += 1 }
                if i + 1 < s.count, s[i] == ".", s[i + 1].value >= 48 && s[i + 1].value <= 57 {
                    n += "."; i += 1
                    while i < s.count, s[i].value >= 48 && s[i].value <= 57 { n.unicodeScalars.append(s[i]); i += 1 }
                    guard let d = Double(n), d.isFinite else { throw fail("float literal out of range", tokStart) }
                    out.append((.double(d), tokStart))
                } else {
                    // Python integers are unbounded; ours are 64-bit, and a literal that does not fit
                    // is an error rather than a silently different number.
                    guard let v = Int(n) else { throw fail("integer literal \(n.prefix(40))\(n.count > 40 ? "…" : "") does not fit in 64 bits", tokStart) }
                    out.append((.int(v), tokStart))
                }
            } else if c == "'" || c == "\"" {
                i += 1
                var v = String.UnicodeScalarView()
                while true {
                    guard i < s.count else { throw fail("unterminated string", tokStart) }
                    let d = s[i]
                    if d == c { i += 1; break }
                    if d == "\\", i + 1 < s.count {
                        let e = s[i + 1]
                        i += 2
                        switch e {
                        case "n": v.append("\n")
                        case "t": v.append("\t")
                        case "r": v.append("\r")
                        case "\\": v.append("\\")
                        case "'": v.append("'")
                        case "\"": v.append("\"")
                        case "u", "x":
                            let n = e == "u" ? 4 : 2
                            guard i + n <= s.count, let val = UInt32(String(scalars: s[i..<(i + n)]), radix: 16), let sc = Unicode.Scalar(val) else {
                                throw fail("bad escape in string", i)
                            }
                            v.append(sc); i += n
                        default: v.append("\\"); v.append(e)
                        }
                        continue
                    }
                    v.append(d); i += 1
                }
                out.append((.string(String(v)), tokStart))
            } else {
                guard let op = Self.ops.first(where: { at(i, $0.1) }) else { throw fail("unexpected character '\(c)'") }
                out.append((.op(op.0), tokStart))
                i += op.1.count
            }
        }
    }
}

// MARK: AST and parser

/// An expression with the scalar offset of the token that starts it (for errors) and the depth
/// of its tree (bounded at construction, so evaluation and freeing the tree recurse boundedly).
struct JExpr: Sendable {
    indirect enum Kind: Sendable {
        case lit(JValue)
        case name(String)
        case list([JExpr]), dict([(JExpr, JExpr)])
        case attr(JExpr, String)
        case item(JExpr, JExpr)
        case slice(JExpr, JExpr?, JExpr?, JExpr?)
        case call(JExpr, [JExpr], [(String, JExpr)])
        case filter(JExpr, String, [JExpr], [(String, JExpr)])
        case test(JExpr, String, [JExpr], negated: Bool)
        case unary(String, JExpr)
        case binary(String, JExpr, JExpr)
        case cond(JExpr, JExpr, JExpr?)
        case tuple([JExpr])
    }
    let kind: Kind
    let at: Int
    let depth: Int

    init(_ kind: Kind, at: Int) {
        self.kind = kind
        self.at = at
        var d = 0
        func f(_ e: JExpr?) { if let e { d = max(d, e.depth) } }
        switch kind {
        case .lit, .name: break
        case let .list(xs), let .tuple(xs): for x in xs { f(x) }
        case let .dict(kv): for (a, b) in kv { f(a); f(b) }
        case let .attr(b, _), let .unary(_, b): f(b)
        case let .item(a, b), let .binary(_, a, b): f(a); f(b)
        case let .slice(a, b, c, e): f(a); f(b); f(c); f(e)
        case let .call(x, args, kw), let .filter(x, _, args, kw):
            f(x); for a in args { f(a) }; for (_, a) in kw { f(a) }
        case let .test(x, _, args, _): f(x); for a in args { f(a) }
        case let .cond(a, b, c): f(a); f(b); f(c)
        }
        depth = d + 1
    }
}

indirect enum JNode: Sendable {
    case text(String, Int)
    case output(JExpr)
    case ifs([(JExpr, [JNode])], [JNode])
    case forLoop(targets: [String], iter: JExpr, filter: JExpr?, body: [JNode], orElse: [JNode], at: Int)
    case set(target: String, attr: String?, JExpr, at: Int)
    case loopBreak, loopContinue
}

struct JParser {
    let toks: [(JTok, Int)]
    var p = 0
    /// Current recursion depth of expression parsing and of block parsing (see `Limits`).
    var nesting = 0
    var blocks = 0
    init(_ t: [(JTok, Int)]) { toks = t }

    var cur: JTok? { p < toks.count ? toks[p].0 : nil }
    var pos: Int { p < toks.count ? toks[p].1 : (toks.last?.1 ?? 0) }
    func fail(_ m: String) -> TemplateFault { TemplateFault(pos, m) }
    mutating func expect(_ t: JTok) throws(TemplateFault) {
        guard cur == t else { throw fail("expected \(t), found \(cur.map { "\($0)" } ?? "end of template")") }
        p += 1
    }
    mutating func accept(_ t: JTok) -> Bool { if cur == t { p += 1; return true }; return false }
    mutating func name() throws(TemplateFault) -> String {
        guard case let .name(n)? = cur else { throw fail("expected a name") }
        p += 1; return n
    }

    /// Builds a node, refusing a tree deeper than `maxExpressionDepth` (left-deep chains such as
    /// `a|f|f|f…` or `1+1+1…` are built by loops, not recursion, so the parser's own depth
    /// counter does not see them).
    func mk(_ k: JExpr.Kind, _ at: Int) throws(TemplateFault) -> JExpr {
        let e = JExpr(k, at: at)
        guard e.depth <= L.maxExpressionDepth else {
            throw TemplateFault(at, "expression nested deeper than \(L.maxExpressionDepth)", limit: .expressionDepth)
        }
        return e
    }
    mutating func enter() throws(TemplateFault) {
        nesting += 1
        guard nesting <= L.maxExpressionDepth else {
            throw TemplateFault(pos, "expression nested deeper than \(L.maxExpressionDepth)", limit: .expressionDepth)
        }
    }
    mutating func enterBlock(_ kw: String, at: Int) throws(TemplateFault) {
        blocks += 1
        guard blocks <= L.maxBlockDepth else {
            throw TemplateFault(at, "{% \(kw) %} blocks nested deeper than \(L.maxBlockDepth)", limit: .blockDepth)
        }
    }

    /// Parses nodes until a `{% name %}` in `until` (left unconsumed: p at stmtStart).
    mutating func parseBody(until: Set<String>) throws(TemplateFault) -> [JNode] {
        var nodes: [JNode] = []
        while let t = cur {
            switch t {
            case let .text(s): nodes.append(.text(s, pos)); p += 1
            case .exprStart:
                p += 1
                let e = try parseExpr()
                try expect(.exprEnd)
                nodes.append(.output(e))
            case .stmtStart:
                guard p + 1 < toks.count, case let .name(kw) = toks[p + 1].0 else { p += 1; throw fail("expected a statement name") }
                if until.contains(kw) { return nodes }
                let at = pos
                p += 2
                nodes.append(contentsOf: try parseStatement(kw, at: at))
            default: throw fail("unexpected \(t)")
            }
        }
        if !until.isEmpty { throw fail("missing {% \(until.sorted().joined(separator: " or ")) %}") }
        return nodes
    }

    mutating func endTag(_ kw: String) throws(TemplateFault) {
        try expect(.stmtStart)
        guard case let .name(n)? = cur, n == kw else { throw fail("expected {% \(kw) %}") }
        p += 1
        try expect(.stmtEnd)
    }

    mutating func parseStatement(_ kw: String, at: Int) throws(TemplateFault) -> [JNode] {
        switch kw {
        case "if":
            try enterBlock(kw, at: at); defer { blocks -= 1 }
            var branches: [(JExpr, [JNode])] = []
            var cond = try parseExpr()
            try expect(.stmtEnd)
            var orElse: [JNode] = []
            while true {
                let body = try parseBody(until: ["elif", "else", "endif"])
                branches.append((cond, body))
                try expect(.stmtStart)
                let k = try name()
                if k == "elif" { cond = try parseExpr(); try expect(.stmtEnd); continue }
                if k == "else" {
                    try expect(.stmtEnd)
                    orElse = try parseBody(until: ["endif"])
                    try endTag("endif")
                }
                else { try expect(.stmtEnd) }
                break
            }
            return [.ifs(branches, orElse)]
        case "for":
            try enterBlock(kw, at: at); defer { blocks -= 1 }
            var targets = [try name()]
            while accept(.op(",")) { targets.append(try name()) }
            guard case .name("in")? = cur else { throw fail("expected 'in'") }
            p += 1
            let iter = try parseOr(allowCond: false)
            var filter: JExpr? = nil
            if case .name("if")? = cur { p += 1; filter = try parseOr(allowCond: false) }
            if case .name("recursive")? = cur { throw fail("recursive loops are not supported") }
            try expect(.stmtEnd)
            let body = try parseBody(until: ["else", "endfor"])
            var orElse: [JNode] = []
            try expect(.stmtStart)
            if try name() == "else" {
                try expect(.stmtEnd)
                orElse = try parseBody(until: ["endfor"])
                try endTag("endfor")
            } else { try expect(.stmtEnd) }
            return [.forLoop(targets: targets, iter: iter, filter: filter, body: body, orElse: orElse, at: at)]
        case "set":
            let target = try name()
            var attr: String? = nil
            if accept(.op(".")) { attr = try name() }
            guard accept(.op("=")) else { throw fail("block '{% set %}' (without '=') is not supported") }
            let e = try parseExpr()
            try expect(.stmtEnd)
            return [.set(target: target, attr: attr, e, at: at)]
        case "break": try expect(.stmtEnd); return [.loopBreak]
        case "continue": try expect(.stmtEnd); return [.loopContinue]
        case "generation":
            // transformers' AssistantTracker extension: renders its body unchanged.
            try enterBlock(kw, at: at); defer { blocks -= 1 }
            try expect(.stmtEnd)
            let body = try parseBody(until: ["endgeneration"])
            try endTag("endgeneration")
            return body
        default:
            p -= 1
            throw fail("unsupported statement '{% \(kw) %}'")
        }
    }

    mutating func parseExpr() throws(TemplateFault) -> JExpr {
        let at = pos
        let e = try parseOr(allowCond: true)
        if case .op(",")? = cur {
            var items = [e]
            while accept(.op(",")) { if cur == .exprEnd || cur == .stmtEnd { break }; items.append(try parseOr(allowCond: true)) }
            return try mk(.tuple(items), at)
        }
        return e
    }
    mutating func parseOr(allowCond: Bool) throws(TemplateFault) -> JExpr {
        try enter(); defer { nesting -= 1 }
        let start = pos
        var l = try parseAnd()
        while case .name("or")? = cur { let at = pos; p += 1; l = try mk(.binary("or", l, try parseAnd()), at) }
        if allowCond, case .name("if")? = cur {
            p += 1
            let c = try parseOr(allowCond: false)
            var e: JExpr? = nil
            if case .name("else")? = cur { p += 1; e = try parseOr(allowCond: true) }
            return try mk(.cond(c, l, e), start)
        }
        return l
    }
    mutating func parseAnd() throws(TemplateFault) -> JExpr {
        var l = try parseNot()
        while case .name("and")? = cur { let at = pos; p += 1; l = try mk(.binary("and", l, try parseNot()), at) }
        return l
    }
    mutating func parseNot() throws(TemplateFault) -> JExpr {
        if case .name("not")? = cur {
            let at = pos
            try enter(); defer { nesting -= 1 }
            p += 1
            return try mk(.unary("not", try parseNot()), at)
        }
        return try parseCompare()
    }
    mutating func parseCompare() throws(TemplateFault) -> JExpr {
        var l = try parseMath1()
        while true {
            let at = pos
            if case let .op(o)? = cur, ["==", "!=", "<", ">", "<=", ">="].contains(o) { p += 1; l = try mk(.binary(o, l, try parseMath1()), at); continue }
            if case .name("in")? = cur { p += 1; l = try mk(.binary("in", l, try parseMath1()), at); continue }
            if case .name("not")? = cur, p + 1 < toks.count, toks[p + 1].0 == .name("in") {
                p += 2; l = try mk(.unary("not", try mk(.binary("in", l, try parseMath1()), at)), at); continue
            }
            return l
        }
    }
    mutating func parseMath1() throws(TemplateFault) -> JExpr {
        var l = try parseConcat()
        while case let .op(o)? = cur, o == "+" || o == "-" { let at = pos; p += 1; l = try mk(.binary(o, l, try parseConcat()), at) }
        return l
    }
    mutating func parseConcat() throws(TemplateFault) -> JExpr {
        var l = try parseMath2()
        while case .op("~")? = cur { let at = pos; p += 1; l = try mk(.binary("~", l, try parseMath2()), at) }
        return l
    }
    mutating func parseMath2() throws(TemplateFault) -> JExpr {
        var l = try parseUnary()
        while case let .op(o)? = cur, ["*", "/", "//", "%"].contains(o) { let at = pos; p += 1; l = try mk(.binary(o, l, try parseUnary()), at) }
        return l
    }
    mutating func parseUnary() throws(TemplateFault) -> JExpr {
        let at = pos
        if case .op("-")? = cur {
            try enter(); defer { nesting -= 1 }
            p += 1
            return try postfixFilters(try mk(.unary("-", try parseUnary()), at))
        }
        if case .op("+")? = cur {
            try enter(); defer { nesting -= 1 }
            p += 1
            return try parseUnary()
        }
        return try postfixFilters(try parsePostfix(try parsePrimary()))
    }
    mutating func postfixFilters(_ e0: JExpr) throws(TemplateFault) -> JExpr {
        var e = e0
        while true {
            if accept(.op("|")) {
                let at = pos
                let n = try name()
                var args: [JExpr] = [], kw: [(String, JExpr)] = []
                if cur == .op("(") { (args, kw) = try parseArgs() }
                e = try mk(.filter(e, n, args, kw), at)
            } else if case .name("is")? = cur {
                let at = pos
                p += 1
                var neg = false
                if case .name("not")? = cur { neg = true; p += 1 }
                let n = try name()
                var args: [JExpr] = []
                if cur == .op("(") { args = try parseArgs().0 }
                else if case .string? = cur { args = [try parsePrimary()] }
                else if case .int? = cur { args = [try parsePrimary()] }
                else if case .name(let x)? = cur, !["and", "or", "else", "if", "in", "not", "is"].contains(x) { args = [try parsePrimary()] }
                e = try mk(.test(e, n, args, negated: neg), at)
            } else { return e }
        }
    }
    mutating func parseArgs() throws(TemplateFault) -> ([JExpr], [(String, JExpr)]) {
        try expect(.op("("))
        var args: [JExpr] = [], kw: [(String, JExpr)] = []
        while !accept(.op(")")) {
            if case let .name(n)? = cur, p + 1 < toks.count, toks[p + 1].0 == .op("=") {
                guard !kw.contains(where: { $0.0 == n }) else { throw fail("keyword argument '\(n)' given twice") }
                p += 2; kw.append((n, try parseOr(allowCond: true)))
            } else {
                guard kw.isEmpty else { throw fail("positional argument after a keyword argument") }
                args.append(try parseOr(allowCond: true))
            }
            if !accept(.op(",")) { try expect(.op(")")); break }
        }
        return (args, kw)
    }
    mutating func parsePostfix(_ e0: JExpr) throws(TemplateFault) -> JExpr {
        var e = e0
        while true {
            let at = pos
            if accept(.op(".")) {
                if case let .int(i)? = cur { p += 1; e = try mk(.item(e, JExpr(.lit(.int(i)), at: at)), at); continue }
                e = try mk(.attr(e, try name()), at)
            } else if accept(.op("[")) {
                var parts: [JExpr?] = [nil]
                var isSlice = false
                while !accept(.op("]")) {
                    if accept(.op(":")) {
                        isSlice = true
                        guard parts.count < 3 else { throw fail("a slice takes at most three parts") }
                        parts.append(nil); continue
                    }
                    guard parts[parts.count - 1] == nil else { throw fail("expected ']'") }
                    parts[parts.count - 1] = try parseExpr()
                }
                if isSlice {
                    e = try mk(.slice(e, parts[0], parts.count > 1 ? parts[1] : nil, parts.count > 2 ? parts[2] : nil), at)
                } else {
                    guard let k = parts[0] else { throw fail("empty subscript") }
                    e = try mk(.item(e, k), at)
                }
            } else if cur == .op("(") {
                let (a, k) = try parseArgs()
                e = try mk(.call(e, a, k), e.at)  // errors point at the callee's name
            } else { return e }
        }
    }
    mutating func parsePrimary() throws(TemplateFault) -> JExpr {
        guard let t = cur else { throw fail("unexpected end of expression") }
        let at = pos
        p += 1
        switch t {
        case let .name(n):
            switch n {
            case "true", "True": return JExpr(.lit(.bool(true)), at: at)
            case "false", "False": return JExpr(.lit(.bool(false)), at: at)
            case "none", "None": return JExpr(.lit(.none), at: at)
            default: return JExpr(.name(n), at: at)
            }
        case let .string(s):
            var v = s
            while case let .string(more)? = cur { v += more; p += 1 }  // adjacent literals concatenate
            return JExpr(.lit(.string(v)), at: at)
        case let .int(i): return JExpr(.lit(.int(i)), at: at)
        case let .double(d): return JExpr(.lit(.double(d)), at: at)
        case .op("("):
            if accept(.op(")")) { return JExpr(.tuple([]), at: at) }
            let e = try parseExpr()
            try expect(.op(")"))
            return e
        case .op("["):
            var items: [JExpr] = []
            while !accept(.op("]")) {
                items.append(try parseOr(allowCond: true))
                if !accept(.op(",")) { try expect(.op("]")); break }
            }
            return try mk(.list(items), at)
        case .op("{"):
            var items: [(JExpr, JExpr)] = []
            while !accept(.op("}")) {
                let k = try parseOr(allowCond: true)
                try expect(.op(":"))
                items.append((k, try parseOr(allowCond: true)))
                if !accept(.op(",")) { try expect(.op("}")); break }
            }
            return try mk(.dict(items), at)
        default:
            p -= 1
            throw fail("unexpected \(t)")
        }
    }
}

// MARK: evaluation

/// One render: scopes, the output, and the counters that bound it (see `ChatTemplate.Limits`).
final class JEvaluator {
    var scopes: [[String: JValue]]
    var out = ""
    var depth = 0
    var work = 0

    init(scopes: [[String: JValue]]) { self.scopes = scopes }

    func lookup(_ n: String) -> JValue {
        for s in scopes.reversed() { if let v = s[n] { return v } }
        return .undefined(n)
    }

    func err(_ m: String, _ at: Int) -> JThrow { .fault(TemplateFault(at, m)) }
    func limit(_ l: ChatTemplate.Limit, _ m: String, _ at: Int) -> JThrow { .fault(TemplateFault(at, m, limit: l)) }

    /// Spends work units; `bytes` are converted at `bytesPerWorkUnit`.
    func charge(_ units: Int, bytes: Int = 0, _ at: Int) throws(JThrow) {
        let u = units + bytes / L.bytesPerWorkUnit
        guard u <= L.maxWorkUnits - work else {
            throw limit(.work, "render exceeded its work budget of \(L.maxWorkUnits) units (loop iterations, calls, filters, bytes processed)", at)
        }
        work += u
    }
    func checkString(_ bytes: Int, _ what: String, _ at: Int) throws(JThrow) {
        guard bytes <= L.maxStringBytes else {
            throw limit(.valueSize, "\(what) would make a string of \(bytes) bytes, over the \(L.maxStringBytes)-byte limit", at)
        }
    }
    func checkItems(_ n: Int, _ what: String, _ at: Int) throws(JThrow) {
        guard n <= L.maxItems else {
            throw limit(.valueSize, "\(what) would make \(n) items, over the \(L.maxItems)-item limit", at)
        }
    }
    func enter(_ at: Int) throws(JThrow) {
        depth += 1
        guard depth <= L.maxEvalDepth else { throw limit(.evalDepth, "evaluation nested deeper than \(L.maxEvalDepth)", at) }
    }

    func emit(_ s: String, _ at: Int) throws(JThrow) {
        let n = s.utf8.count
        guard n <= L.maxOutputBytes - out.utf8.count else {
            throw limit(.outputSize, "render output would exceed \(L.maxOutputBytes) bytes", at)
        }
        try charge(1, bytes: n, at)
        out += s
    }

    func exec(_ nodes: [JNode]) throws(JThrow) {
        try enter(0); defer { depth -= 1 }
        for n in nodes {
            switch n {
            case let .text(s, at): try emit(s, at)
            case let .output(e): try emit(try stringify(try eval(e), e.at), e.at)
            case let .ifs(branches, orElse):
                var done = false
                for (c, body) in branches where try eval(c).truthy { try exec(body); done = true; break }
                if !done { try exec(orElse) }
            case let .forLoop(targets, iterE, filterE, body, orElse, at):
                try execFor(targets, iterE, filterE, body, orElse, at)
            case let .set(target, attr, e, at):
                let v = try eval(e)
                if let attr {
                    guard case let .namespace(ns) = lookup(target) else {
                        throw err("cannot assign attribute '\(attr)' of non-namespace '\(target)'", at)
                    }
                    guard !v.hasNamespace else { throw err("a namespace attribute cannot hold a namespace ('\(target).\(attr)')", at) }
                    ns.attrs[attr] = v
                } else {
                    scopes[scopes.count - 1][target] = v
                }
            case .loopBreak: throw .brk
            case .loopContinue: throw .cont
            }
        }
    }

    func execFor(_ targets: [String], _ iterE: JExpr, _ filterE: JExpr?, _ body: [JNode], _ orElse: [JNode], _ at: Int) throws(JThrow) {
        var items: [JValue]
        switch try eval(iterE) {
        case let .list(l, _): items = l
        case let .dict(d, _): items = d.map { .string($0.0) }
        case let .string(s):
            try charge(1, bytes: s.utf8.count, at)
            try checkItems(s.utf8.count, "iterating a string", at)
            try charge(s.utf8.count, at)
            items = s.unicodeScalars.map { .string(String($0)) }
        case .undefined, .none: items = []
        case let v: throw err("cannot iterate over \(v.typeName)", iterE.at)
        }
        if let f = filterE {
            var kept: [JValue] = []
            for it in items {
                try charge(1, at)
                scopes.append(bind(targets, it))
                let ok = try eval(f).truthy
                scopes.removeLast()
                if ok { kept.append(it) }
            }
            items = kept
        }
        if items.isEmpty { try exec(orElse); return }
        let count = items.count
        loop: for (idx, it) in items.enumerated() {
            try charge(1, at)
            var scope = bind(targets, it)
            let lv = JValue.loop([
                "index": .int(idx + 1), "index0": .int(idx), "first": .bool(idx == 0), "last": .bool(idx == count - 1),
                "length": .int(count), "revindex": .int(count - idx), "revindex0": .int(count - idx - 1),
                "previtem": idx > 0 ? items[idx - 1] : .undefined("previtem"),
                "nextitem": idx + 1 < count ? items[idx + 1] : .undefined("nextitem"),
            ])
            guard lv.depth <= L.maxValueDepth else { throw limit(.valueDepth, "loop item nested deeper than \(L.maxValueDepth)", at) }
            scope["loop"] = lv
            scopes.append(scope)
            defer { scopes.removeLast() }
            do { try exec(body) } catch {
                switch error {
                case .brk: break loop
                case .cont: continue loop
                default: throw error
                }
            }
        }
    }

    func bind(_ targets: [String], _ v: JValue) -> [String: JValue] {
        if targets.count == 1 { return [targets[0]: v] }
        var s: [String: JValue] = [:]
        if case let .list(l, _) = v { for (t, x) in zip(targets, l) { s[t] = x } }
        return s
    }

    // MARK: stringification (bounded by maxStringBytes; recursion bounded by value depth)

    /// Python `str()`.
    func stringify(_ v: JValue, _ at: Int) throws(JThrow) -> String {
        if let s = v.scalarStr { return s }
        var o = ""
        try write(v, repr: false, into: &o, at)
        try charge(0, bytes: o.utf8.count, at)
        return o
    }
    func write(_ v: JValue, repr: Bool, into o: inout String, _ at: Int) throws(JThrow) {
        try charge(1, at)
        switch v {
        case let .string(s) where repr:
            o += "'" + s.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'").replacingAll("\n", with: "\\n") + "'"
        case let .list(l, _):
            o += "["
            for (k, x) in l.enumerated() {
                if k > 0 { o += ", " }
                try write(x, repr: true, into: &o, at)
            }
            o += "]"
        case let .dict(d, _):
            o += "{"
            for (k, (key, x)) in d.enumerated() {
                if k > 0 { o += ", " }
                o += "'\(key)': "
                try write(x, repr: true, into: &o, at)
            }
            o += "}"
        default: o += v.scalarStr ?? ""
        }
        try checkString(o.utf8.count, "str()", at)
    }

    func toJSON(_ v: JValue, indent: Int?, level: Int = 0, into o: inout String, _ at: Int) throws(JThrow) {
        try charge(1, at)
        let nl = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let end = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        let sep = indent == nil ? ", " : ","
        switch v {
        case .undefined, .none, .namespace, .loop: o += "null"
        case let .bool(b): o += b ? "true" : "false"
        case .int, .double: o += v.scalarStr ?? ""
        case let .string(s):
            o += "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": o += "\\\""
                case "\\": o += "\\\\"
                case "\n": o += "\\n"
                case "\r": o += "\\r"
                case "\t": o += "\\t"
                default:
                    if c.value < 0x20 { o += String(format: "\\u%04x", c.value) } else { o.unicodeScalars.append(c) }
                }
            }
            o += "\""
        case let .list(l, _):
            if l.isEmpty { o += "[]"; break }
            o += "[" + nl
            for (k, x) in l.enumerated() {
                if k > 0 { o += sep + nl }
                try toJSON(x, indent: indent, level: level + 1, into: &o, at)
            }
            o += end + "]"
        case let .dict(d, _):
            if d.isEmpty { o += "{}"; break }
            o += "{" + nl
            for (k, (key, x)) in d.enumerated() {
                if k > 0 { o += sep + nl }
                try toJSON(.string(key), indent: nil, into: &o, at)
                o += ": "
                try toJSON(x, indent: indent, level: level + 1, into: &o, at)
            }
            o += end + "}"
        }
        try checkString(o.utf8.count, "tojson", at)
    }

    /// Python `==`, charging one unit per element compared.
    func equals(_ a: JValue, _ b: JValue, _ at: Int) throws(JThrow) -> Bool {
        try charge(1, at)
        switch (a, b) {
        case (.none, .none): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.int(x), .double(y)), let (.double(y), .int(x)): return Double(x) == y
        case let (.bool(x), .int(y)), let (.int(y), .bool(x)): return (x ? 1 : 0) == y
        case let (.string(x), .string(y)):
            try charge(0, bytes: min(x.utf8.count, y.utf8.count), at)
            return x == y
        case let (.list(x, _), .list(y, _)):
            guard x.count == y.count else { return false }
            for (p, q) in zip(x, y) where try !equals(p, q, at) { return false }
            return true
        case let (.dict(x, _), .dict(y, _)):
            guard x.count == y.count else { return false }
            for kv in x {
                var found = false
                for other in y where other.0 == kv.0 { if try equals(other.1, kv.1, at) { found = true; break } }
                if !found { return false }
            }
            return true
        default: return false
        }
    }

    // MARK: expressions

    func evalAll(_ xs: [JExpr]) throws(JThrow) -> [JValue] {
        var out: [JValue] = []
        out.reserveCapacity(xs.count)
        for x in xs { out.append(try eval(x)) }
        return out
    }
    func evalKw(_ kw: [(String, JExpr)]) throws(JThrow) -> [(String, JValue)] {
        var out: [(String, JValue)] = []
        for (k, x) in kw { out.append((k, try eval(x))) }
        return out
    }

    func eval(_ e: JExpr) throws(JThrow) -> JValue {
        try enter(e.at); defer { depth -= 1 }
        try charge(1, e.at)
        let v = try evalKind(e)
        guard v.depth <= L.maxValueDepth else { throw limit(.valueDepth, "value nested deeper than \(L.maxValueDepth)", e.at) }
        return v
    }

    func evalKind(_ e: JExpr) throws(JThrow) -> JValue {
        let at = e.at
        switch e.kind {
        case let .lit(v): return v
        case let .name(n): return lookup(n)
        case let .list(xs), let .tuple(xs): return .list(try evalAll(xs))
        case let .dict(kvs):
            var d: [(String, JValue)] = []
            for (k, v) in kvs { d.append((try stringify(try eval(k), k.at), try eval(v))) }
            return .dict(d)
        case let .attr(b, name): return try getAttr(try eval(b), name, at)
        case let .item(b, k): return try item(try eval(b), try eval(k), at)
        case let .slice(b, lo, hi, st): return try slice(b, lo, hi, st, at)
        case let .unary(op, x):
            let v = try eval(x)
            if op == "not" { return .bool(!v.truthy) }
            switch v {
            case let .int(i):
                guard i != .min else { throw err("integer overflow in unary -", at) }
                return .int(-i)
            case let .double(d): return .double(-d)
            default: throw err("bad operand for unary -: \(v.typeName)", at)
            }
        case let .binary(op, l, r):
            if op == "and" { let a = try eval(l); return a.truthy ? try eval(r) : a }
            if op == "or" { let a = try eval(l); return a.truthy ? a : try eval(r) }
            return try binary(op, try eval(l), try eval(r), at)
        case let .cond(c, a, b):
            if try eval(c).truthy { return try eval(a) }
            if let b { return try eval(b) }
            return .undefined("else")
        case let .test(x, name, args, neg):
            return .bool(try test(try eval(x), name, try evalAll(args), at) != neg)
        case let .filter(x, name, args, kw):
            let v = try eval(x)
            try charge(1, at)
            return try filter(v, name, try evalAll(args), try evalKw(kw), at)
        case let .call(fn, args, kw):
            let a = try evalAll(args)
            let k = try evalKw(kw)
            try charge(1, at)
            if case let .attr(b, method) = fn.kind { return try callMethod(try eval(b), method, a, k, at) }
            guard case let .name(n) = fn.kind else { throw err("unsupported call", at) }
            return try callFunction(n, a, k, at)
        }
    }

    func item(_ base: JValue, _ key: JValue, _ at: Int) throws(JThrow) -> JValue {
        switch (base, key) {
        case let (.list(l, _), .int(i)):
            let j = i < 0 ? l.count + i : i
            return j >= 0 && j < l.count ? l[j] : .undefined("[\(i)]")
        case let (.string(s), .int(i)):
            // Python indexes a str by code point.
            try charge(0, bytes: s.utf8.count, at)
            let u = Array(s.unicodeScalars)
            let j = i < 0 ? u.count + i : i
            return j >= 0 && j < u.count ? .string(String(u[j])) : .undefined("[\(i)]")
        case let (_, .string(k)): return try getAttr(base, k, at)
        case (.undefined(let n), _): throw err("'\(n)' is undefined", at)
        default: return .undefined("item")
        }
    }

    func slice(_ b: JExpr, _ lo: JExpr?, _ hi: JExpr?, _ st: JExpr?, _ at: Int) throws(JThrow) -> JValue {
        let base = try eval(b)
        var reversed = false
        if let st {
            switch try eval(st) {
            case .int(1), .none: break
            case .int(-1): reversed = true
            default: throw err("slice steps other than 1 and -1 are not supported", st.at)
            }
        }
        func clamp(_ x: JExpr?, _ d: Int, _ n: Int) throws(JThrow) -> Int {
            guard let x else { return d }
            guard case let .int(i) = try eval(x) else { return d }
            let j = i < 0 ? n + i : i  // n ≥ 0 and i < 0: cannot overflow
            return min(max(j, 0), n)
        }
        func bounds(_ n: Int) throws(JThrow) -> Range<Int> {
            let a = try clamp(lo, 0, n), z = try clamp(hi, n, n)
            return a < z ? a..<z : a..<a
        }
        switch base {
        case let .list(l, _):
            try charge(l.count, at)
            if reversed { return .list(l.reversed()) }
            return .list(Array(l[try bounds(l.count)]))
        case let .string(s):
            try charge(0, bytes: s.utf8.count, at)
            let u = Array(s.unicodeScalars)
            if reversed { return .string(String(String.UnicodeScalarView(u.reversed()))) }
            return .string(String(String.UnicodeScalarView(u[try bounds(u.count)])))
        default: throw err("cannot slice \(base.typeName)", at)
        }
    }

    func test(_ v: JValue, _ name: String, _ a: [JValue], _ at: Int) throws(JThrow) -> Bool {
        let arity = ["eq": 1, "equalto": 1, "==": 1, "ne": 1, "!=": 1, "in": 1][name] ?? 0
        guard a.count == arity else { throw err("test 'is \(name)' takes \(arity) argument\(arity == 1 ? "" : "s"), got \(a.count)", at) }
        switch name {
        case "defined": if case .undefined = v { return false } else { return true }
        case "undefined": if case .undefined = v { return true } else { return false }
        case "none": if case .none = v { return true } else { return false }
        case "string": if case .string = v { return true } else { return false }
        case "number": switch v { case .int, .double: return true; default: return false }
        case "integer": if case .int = v { return true } else { return false }
        case "boolean": if case .bool = v { return true } else { return false }
        case "true": if case .bool(true) = v { return true } else { return false }
        case "false": if case .bool(false) = v { return true } else { return false }
        case "mapping": if case .dict = v { return true } else { return false }
        case "sequence", "iterable": switch v { case .list, .string, .dict: return true; default: return false }
        case "even", "odd":
            guard case let .int(i) = v else { throw err("'\(name)' test needs an integer", at) }
            return (i % 2 == 0) == (name == "even")
        case "eq", "equalto", "==": return try equals(v, a[0], at)
        case "ne", "!=": return try !equals(v, a[0], at)
        case "in": return try binary("in", v, a[0], at).truthy
        default: throw err("unsupported test 'is \(name)'", at)
        }
    }

    func callFunction(_ n: String, _ a: [JValue], _ k: [(String, JValue)], _ at: Int) throws(JThrow) -> JValue {
        switch n {
        case "raise_exception":
            let m = try a.first.map { (x) throws(JThrow) in try stringify(x, at) } ?? ""
            let u = m.unicodeScalars
            throw .raised(u.count > L.maxRaisedMessage ? String(String.UnicodeScalarView(u.prefix(L.maxRaisedMessage))) + "…" : m)
        case "range":
            guard k.isEmpty else { throw err("range() takes no keyword arguments", at) }
            var ints: [Int] = []
            for x in a { guard case let .int(i) = x else { throw err("range() needs integers, got \(x.typeName)", at) }; ints.append(i) }
            guard (1...3).contains(ints.count) else { throw err("range() takes 1 to 3 integers, got \(ints.count)", at) }
            let (lo, hi, st) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
            guard st != 0 else { throw err("range() step must not be zero", at) }
            let n = try rangeCount(lo, hi, st, at)
            try checkItems(n, "range()", at)
            try charge(n, at)
            // lo + k·st for k < n stays between lo and hi, so it cannot overflow.
            return .list((0..<n).map { .int(lo + $0 * st) })
        case "namespace":
            guard a.count <= 1 else { throw err("namespace() takes at most one positional argument", at) }
            let ns = JNamespace()
            if let first = a.first {
                guard case let .dict(d, _) = first else { throw err("namespace() positional argument must be a dict", at) }
                for (kk, v) in d { ns.attrs[kk] = v }
            }
            for (kk, v) in k { ns.attrs[kk] = v }
            guard !ns.attrs.values.contains(where: \.hasNamespace) else { throw err("a namespace cannot hold a namespace", at) }
            return .namespace(ns)
        case "dict":
            guard a.isEmpty else { throw err("dict() takes keyword arguments only", at) }
            return .dict(k)
        default: throw err("unsupported function '\(n)()'", at)
        }
    }

    /// len(range(lo, hi, st)) without overflow: a distance that does not fit in Int is far over
    /// any limit anyway.
    func rangeCount(_ lo: Int, _ hi: Int, _ st: Int, _ at: Int) throws(JThrow) -> Int {
        let tooMany = limit(.valueSize, "range() would make more than \(L.maxItems) items", at)
        if st > 0 {
            guard hi > lo else { return 0 }
            let (d, o) = hi.subtractingReportingOverflow(lo)
            if o { throw tooMany }
            return (d - 1) / st + 1
        } else {
            guard lo > hi else { return 0 }
            let (d, o) = lo.subtractingReportingOverflow(hi)
            if o { throw tooMany }
            return (d - 1) / (st == .min ? Int.max : -st) + 1
        }
    }

    func getAttr(_ v: JValue, _ name: String, _ at: Int) throws(JThrow) -> JValue {
        switch v {
        case let .dict(d, _):
            try charge(0, bytes: d.count, at)
            return d.last(where: { $0.0 == name })?.1 ?? .undefined(name)
        case let .namespace(ns): return ns.attrs[name] ?? .undefined(name)
        case let .loop(l, _): return l[name] ?? .undefined(name)
        case let .undefined(n): throw err("'\(n)' is undefined (accessing '\(name)')", at)
        default: return .undefined(name)
        }
    }

    /// Refuses arguments a filter or method does not take (Jinja raises TypeError).
    func takes(_ what: String, _ a: [JValue], _ kw: [(String, JValue)], positional: ClosedRange<Int>, keywords: Set<String> = [], _ at: Int) throws(JThrow) {
        guard positional.contains(a.count) else {
            let want = positional.lowerBound == positional.upperBound ? "\(positional.lowerBound)" : "\(positional.lowerBound) to \(positional.upperBound)"
            throw err("\(what) takes \(want) positional argument\(positional.upperBound == 1 ? "" : "s"), got \(a.count)", at)
        }
        for (k, _) in kw where !keywords.contains(k) { throw err("\(what) got an unexpected keyword argument '\(k)'", at) }
    }
    func stringArg(_ what: String, _ x: JValue, _ at: Int) throws(JThrow) -> String {
        guard case let .string(s) = x else { throw err("\(what) needs a string, got \(x.typeName)", at) }
        return s
    }

    func callMethod(_ v: JValue, _ m: String, _ a: [JValue], _ kw: [(String, JValue)], _ at: Int) throws(JThrow) -> JValue {
        switch v {
        case let .string(s):
            switch m {
            case "strip", "lstrip", "rstrip":
                try takes("\(m)()", a, kw, positional: 0...1, at)
                var set: Set<Character>? = nil
                if let x = a.first, case .none = x {} else if let x = a.first { set = Set(try stringArg("\(m)()", x, at)) }
                try charge(0, bytes: s.utf8.count, at)
                let isStrip: (Character) -> Bool = { c in set.map { $0.contains(c) } ?? c.unicodeScalars.allSatisfy { UClass.isSpace($0.value) } }
                var t = Substring(s)
                if m != "rstrip" { t = t.drop(while: isStrip) }
                if m != "lstrip" { while let l = t.last, isStrip(l) { t = t.dropLast() } }
                return .string(String(t))
            case "upper", "lower", "title", "capitalize":
                try takes("\(m)()", a, kw, positional: 0...0, at)
                try charge(0, bytes: s.utf8.count, at)
                // Case mapping grows a string at most threefold (ß → SS, ΐ → Ϊ́).
                try checkString(s.utf8.count * 3, "\(m)()", at)
                switch m {
                case "upper": return .string(s.uppercased())
                case "lower": return .string(s.lowercased())
                case "title": return .string(s.capitalized)
                default: return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
                }
            case "startswith", "endswith":
                try takes("\(m)()", a, kw, positional: 1...1, at)
                let x = try stringArg("\(m)()", a[0], at)
                try charge(0, bytes: x.utf8.count, at)
                return .bool(m == "startswith" ? s.hasPrefix(x) : s.hasSuffix(x))
            case "replace":
                try takes("replace()", a, kw, positional: 2...3, at)
                let x = try stringArg("replace()", a[0], at), y = try stringArg("replace()", a[1], at)
                var count = -1
                if a.count == 3 { guard case let .int(c) = a[2] else { throw err("replace() count must be an integer", at) }; count = c }
                return .string(try replace(s, x, y, count: count, at))
            case "split":
                try takes("split()", a, kw, positional: 0...1, at)
                try charge(0, bytes: s.utf8.count, at)
                if let x = a.first, case .string = x {
                    let sep = try stringArg("split()", x, at)
                    guard !sep.isEmpty else { throw err("split(): empty separator", at) }
                    try chargeSearch(s, sep, at)
                    let h = Array(s.utf8), nd = Array(sep.utf8)
                    let hits = Self.occurrences(of: nd, in: h)
                    try checkItems(hits.count + 1, "split()", at)
                    try charge(hits.count + 1, at)
                    var parts: [JValue] = []
                    var last = 0
                    for k in hits + [h.count] { parts.append(.string(String(decoding: h[last..<k], as: UTF8.self))); last = k + nd.count }
                    return .list(parts)
                }
                if let x = a.first, !(x.isNone) { throw err("split() separator must be a string, got \(x.typeName)", at) }
                let parts = s.split(whereSeparator: { $0.isWhitespace })
                try checkItems(parts.count, "split()", at)
                try charge(parts.count, at)
                return .list(parts.map { .string(String($0)) })
            case "format": throw err("str.format() is not supported", at)
            default: break
            }
        case let .dict(d, _):
            switch m {
            case "items":
                try takes("items()", a, kw, positional: 0...0, at)
                try charge(3 * d.count, at)
                return .list(d.map { .list([.string($0.0), $0.1]) })
            case "keys":
                try takes("keys()", a, kw, positional: 0...0, at)
                try charge(d.count, at)
                return .list(d.map { .string($0.0) })
            case "values":
                try takes("values()", a, kw, positional: 0...0, at)
                try charge(d.count, at)
                return .list(d.map { $0.1 })
            case "get":
                try takes("get()", a, kw, positional: 1...2, at)
                let k = try stringArg("get()", a[0], at)
                try charge(0, bytes: d.count, at)
                return d.last(where: { $0.0 == k })?.1 ?? (a.count > 1 ? a[1] : .none)
            default: break
            }
        default: break
        }
        throw err("unsupported method '\(m)()' on \(v.typeName)", at)
    }

    /// Searches are glibc `memmem` (two-way: linear in haystack + needle), charged as such.
    func chargeSearch(_ haystack: String, _ needle: String, _ at: Int) throws(JThrow) {
        try charge(0, bytes: haystack.utf8.count + needle.utf8.count, at)
    }

    /// Byte offsets of the non-overlapping occurrences of `n` in `h`, left to right, at most `limit`.
    static func occurrences(of n: [UInt8], in h: [UInt8], limit: Int = .max) -> [Int] {
        guard !n.isEmpty, n.count <= h.count else { return [] }
        var hits: [Int] = []
        h.withUnsafeBytes { hb in
            n.withUnsafeBytes { nb in
                var from = 0
                while hits.count < limit, from + n.count <= h.count,
                      let p = memmemLinear(hb.baseAddress! + from, h.count - from, nb.baseAddress!, n.count) {
                    let k = hb.baseAddress!.distance(to: UnsafeRawPointer(p))
                    hits.append(k)
                    from = k + n.count
                }
            }
        }
        return hits
    }

    /// Python `str.replace(old, new, count)`, sized before it allocates.
    func replace(_ s: String, _ x: String, _ y: String, count: Int, _ at: Int) throws(JThrow) -> String {
        try chargeSearch(s, x, at)
        if x.isEmpty {
            // Python inserts `new` before every character and at the end.
            let n = s.unicodeScalars.count + 1
            let k = count < 0 ? n : min(count, n)
            let (grow, o) = k.multipliedReportingOverflow(by: y.utf8.count)
            try checkString(o ? Int.max : s.utf8.count + grow, "replace()", at)
            try charge(0, bytes: s.utf8.count + grow, at)
            var out = "", done = 0
            for c in s.unicodeScalars { if done < k { out += y; done += 1 }; out.unicodeScalars.append(c) }
            if done < k { out += y }
            return .init(out)
        }
        let h = Array(s.utf8), nd = Array(x.utf8)
        let hits = Self.occurrences(of: nd, in: h, limit: count < 0 ? .max : count)
        if hits.isEmpty { return s }
        let (grow, o) = hits.count.multipliedReportingOverflow(by: y.utf8.count)
        try checkString(o ? Int.max : h.count - hits.count * nd.count + grow, "replace()", at)
        try charge(0, bytes: h.count + grow, at)
        var out: [UInt8] = []
        out.reserveCapacity(h.count - hits.count * nd.count + grow)
        var last = 0
        for hit in hits { out += h[last..<hit]; out += y.utf8; last = hit + nd.count }
        out += h[last...]
        return String(decoding: out, as: UTF8.self)
    }

    func binary(_ op: String, _ a: JValue, _ b: JValue, _ at: Int) throws(JThrow) -> JValue {
        switch op {
        case "==": return .bool(try equals(a, b, at))
        case "!=": return .bool(try !equals(a, b, at))
        case "~":
            let x = try stringify(a, at), y = try stringify(b, at)
            try checkString(x.utf8.count + y.utf8.count, "'~'", at)
            try charge(0, bytes: x.utf8.count + y.utf8.count, at)
            return .string(x + y)
        case "in":
            switch b {
            case let .string(s):
                guard case let .string(x) = a else { throw err("'in <string>' requires a string", at) }
                try chargeSearch(s, x, at)
                return .bool(x.isEmpty || !Self.occurrences(of: Array(x.utf8), in: Array(s.utf8), limit: 1).isEmpty)
            case let .list(l, _):
                for x in l where try equals(x, a, at) { return .bool(true) }
                return .bool(false)
            case let .dict(d, _):
                for (k, _) in d where try equals(.string(k), a, at) { return .bool(true) }
                return .bool(false)
            case .undefined(let n): throw err("'\(n)' is undefined", at)
            default: throw err("argument of type \(b.typeName) is not iterable", at)
            }
        default: break
        }
        if case let .undefined(n) = a { throw err("'\(n)' is undefined", at) }
        if case let .undefined(n) = b { throw err("'\(n)' is undefined", at) }
        switch (op, a, b) {
        case let ("+", .string(x), .string(y)):
            try checkString(x.utf8.count + y.utf8.count, "'+'", at)
            try charge(0, bytes: x.utf8.count + y.utf8.count, at)
            return .string(x + y)
        case let ("+", .list(x, _), .list(y, _)):
            try checkItems(x.count + y.count, "'+'", at)
            try charge(x.count + y.count, at)
            return .list(x + y)
        case let ("*", .string(x), .int(n)), let ("*", .int(n), .string(x)):
            return .string(try repeatString(x, n, at))
        case let ("%", .string(_), x): throw err("string formatting with % is not supported (\(x.typeName))", at)
        default: break
        }
        if let x = intValue(a), let y = intValue(b) { return try intArithmetic(op, x, y, at) }
        if let x = numValue(a), let y = numValue(b) {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw err("float division by zero", at) }
                return .double(x / y)
            case "<": return .bool(x < y)
            case ">": return .bool(x > y)
            case "<=": return .bool(x <= y)
            case ">=": return .bool(x >= y)
            default: break
            }
        }
        if case let .string(x) = a, case let .string(y) = b {
            try charge(0, bytes: min(x.utf8.count, y.utf8.count), at)
            switch op {
            case "<": return .bool(x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars))
            case ">": return .bool(y.unicodeScalars.lexicographicallyPrecedes(x.unicodeScalars))
            case "<=": return .bool(!y.unicodeScalars.lexicographicallyPrecedes(x.unicodeScalars))
            case ">=": return .bool(!x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars))
            default: break
            }
        }
        throw err("unsupported operand types for \(op): \(a.typeName) and \(b.typeName)", at)
    }

    func intValue(_ v: JValue) -> Int? {
        switch v { case let .int(i): return i; case let .bool(b): return b ? 1 : 0; default: return nil }
    }
    func numValue(_ v: JValue) -> Double? {
        switch v { case let .int(i): return Double(i); case let .double(d): return d; case let .bool(b): return b ? 1 : 0; default: return nil }
    }

    /// Python integer arithmetic on 64 bits: a result Python would make a big integer is an error.
    func intArithmetic(_ op: String, _ x: Int, _ y: Int, _ at: Int) throws(JThrow) -> JValue {
        func checked(_ r: (partialValue: Int, overflow: Bool)) throws(JThrow) -> JValue {
            guard !r.overflow else { throw err("integer overflow in \(x) \(op) \(y)", at) }
            return .int(r.partialValue)
        }
        switch op {
        case "+": return try checked(x.addingReportingOverflow(y))
        case "-": return try checked(x.subtractingReportingOverflow(y))
        case "*": return try checked(x.multipliedReportingOverflow(by: y))
        case "/": guard y != 0 else { throw err("division by zero", at) }; return .double(Double(x) / Double(y))
        case "//":
            guard y != 0 else { throw err("integer division by zero", at) }
            let (q, o) = x.dividedReportingOverflow(by: y)
            guard !o else { throw err("integer overflow in \(x) // \(y)", at) }
            // Python floors; Swift truncates toward zero.
            return .int(x % y != 0 && (x < 0) != (y < 0) ? q - 1 : q)
        case "%":
            guard y != 0 else { throw err("integer modulo by zero", at) }
            let (r, o) = x.remainderReportingOverflow(dividingBy: y)
            guard !o else { return .int(0) }  // Int.min % -1 == 0
            // Python's result takes the divisor's sign; r and y differ in sign, so r + y cannot overflow.
            return .int(r != 0 && (r < 0) != (y < 0) ? r + y : r)
        case "<": return .bool(x < y)
        case ">": return .bool(x > y)
        case "<=": return .bool(x <= y)
        case ">=": return .bool(x >= y)
        default: throw err("unsupported operand types for \(op): int and int", at)
        }
    }

    /// `'ab' * n`, sized before it allocates.
    func repeatString(_ x: String, _ n: Int, _ at: Int) throws(JThrow) -> String {
        guard n > 0, !x.isEmpty else { return "" }
        let (bytes, o) = x.utf8.count.multipliedReportingOverflow(by: n)
        try checkString(o ? Int.max : bytes, "string repeat '*'", at)
        try charge(0, bytes: bytes, at)
        return String(repeating: x, count: n)
    }

    func filter(_ v: JValue, _ name: String, _ a: [JValue], _ kw: [(String, JValue)], _ at: Int) throws(JThrow) -> JValue {
        let what = "filter '|\(name)'"
        switch name {
        case "trim":
            try takes(what, a, kw, positional: 0...1, at)
            guard case let .string(s) = v else { return v }
            return try callMethod(.string(s), "strip", a, [], at)
        case "upper", "lower", "title", "capitalize":
            try takes(what, a, kw, positional: 0...0, at)
            guard case .string = v else { return v }
            return try callMethod(v, name, [], [], at)
        case "length", "count":
            try takes(what, a, kw, positional: 0...0, at)
            switch v {
            case let .string(s):
                try charge(0, bytes: s.utf8.count, at)
                return .int(s.unicodeScalars.count)  // Python's len(str) counts code points
            case let .list(l, _): return .int(l.count)
            case let .dict(d, _): return .int(d.count)
            case .undefined: return .int(0)
            default: throw err("object of type \(v.typeName) has no length", at)
            }
        case "string":
            try takes(what, a, kw, positional: 0...0, at)
            return .string(try stringify(v, at))
        case "int":
            try takes(what, a, kw, positional: 0...1, keywords: ["default"], at)
            var fallback = 0
            if let d = a.first ?? kw.first?.1 {
                guard case let .int(i) = d else { throw err("\(what) default must be an integer", at) }
                fallback = i
            }
            switch v {
            case let .int(i): return .int(i)
            case let .double(d):
                guard d.isFinite else { throw err("cannot convert \(d.isNaN ? "nan" : d > 0 ? "inf" : "-inf") to an integer", at) }
                guard let i = Int(exactly: d.rounded(.towardZero)) else { throw err("\(d) does not fit in a 64-bit integer", at) }
                return .int(i)
            case let .string(s):
                let t = s.trimmingCharacters(in: .whitespaces)
                if let i = Int(t) { return .int(i) }
                let digits = t.drop(while: { $0 == "-" || $0 == "+" })
                if !digits.isEmpty, digits.allSatisfy(\.isASCIIDigit), t.count - digits.count <= 1 {
                    throw err("'\(t.prefix(40))' does not fit in a 64-bit integer", at)
                }
                return .int(fallback)
            case let .bool(b): return .int(b ? 1 : 0)
            default: return .int(fallback)
            }
        case "list":
            try takes(what, a, kw, positional: 0...0, at)
            switch v {
            case .list: return v
            case let .string(s):
                try charge(0, bytes: s.utf8.count, at)
                try checkItems(s.utf8.count, "list", at)
                try charge(s.utf8.count, at)
                return .list(s.unicodeScalars.map { .string(String($0)) })
            case let .dict(d, _):
                try charge(d.count, at)
                return .list(d.map { .string($0.0) })
            default: throw err("cannot convert \(v.typeName) to a list", at)
            }
        case "default", "d":
            try takes(what, a, kw, positional: 0...2, keywords: ["default_value", "boolean"], at)
            let fallback = a.first ?? kw.first(where: { $0.0 == "default_value" })?.1 ?? .string("")
            let useFalsy = (a.count > 1 ? a[1] : kw.first(where: { $0.0 == "boolean" })?.1)?.truthy ?? false
            if case .undefined = v { return fallback }
            if useFalsy && !v.truthy { return fallback }
            return v
        case "first", "last":
            try takes(what, a, kw, positional: 0...0, at)
            switch v {
            case let .list(l, _): return (name == "first" ? l.first : l.last) ?? .undefined(name)
            case let .string(s): return (name == "first" ? s.unicodeScalars.first : s.unicodeScalars.last).map { .string(String($0)) } ?? .undefined(name)
            default: throw err("cannot take \(name) of \(v.typeName)", at)
            }
        case "join":
            try takes(what, a, kw, positional: 0...1, keywords: ["d"], at)
            guard case let .list(l, _) = v else { throw err("join needs a list, got \(v.typeName)", at) }
            let sep = try stringify(a.first ?? kw.first?.1 ?? .string(""), at)
            var o = ""
            for (k, x) in l.enumerated() {
                if k > 0 { o += sep }
                o += try stringify(x, at)
                try checkString(o.utf8.count, "join", at)
                try charge(1, at)
            }
            try charge(0, bytes: o.utf8.count, at)
            return .string(o)
        case "replace":
            try takes(what, a, kw, positional: 2...3, at)
            guard case .string = v else { throw err("\(what) needs a string, got \(v.typeName)", at) }
            return try callMethod(v, "replace", a, [], at)
        case "reverse":
            try takes(what, a, kw, positional: 0...0, at)
            switch v {
            case let .list(l, _):
                try charge(l.count, at)
                return .list(l.reversed())
            case let .string(s):
                try charge(0, bytes: s.utf8.count, at)
                return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed())))
            default: throw err("cannot reverse \(v.typeName)", at)
            }
        case "tojson":
            // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False);
            // only indent is implemented, and a positional argument would be ensure_ascii.
            try takes(what, a, kw, positional: 0...0, keywords: ["indent"], at)
            var indent: Int? = nil
            if let x = kw.first?.1 {
                switch x {
                case .none: break
                case let .int(i):
                    guard (0...L.maxIndent).contains(i) else { throw err("tojson indent must be between 0 and \(L.maxIndent), got \(i)", at) }
                    indent = i
                default: throw err("tojson indent must be an integer, got \(x.typeName)", at)
                }
            }
            var o = ""
            try toJSON(v, indent: indent, into: &o, at)
            try charge(0, bytes: o.utf8.count, at)
            return .string(o)
        case "items":
            try takes(what, a, kw, positional: 0...0, at)
            guard case .dict = v else { throw err("\(what) needs a dict, got \(v.typeName)", at) }
            return try callMethod(v, "items", [], [], at)
        default:
            throw err("unsupported filter '|\(name)'", at)
        }
    }
}

/// glibc's `memmem` (two-way string matching, linear time); Glibc does not export it to Swift
/// (it is a GNU extension), so it is looked up once. The fallback is a plain scan.
private typealias MemmemFunction = @convention(c) (UnsafeRawPointer?, Int, UnsafeRawPointer?, Int) -> UnsafeMutableRawPointer?
private let systemMemmem: MemmemFunction? =
    dlsym(UnsafeMutableRawPointer(bitPattern: 0), "memmem").map { unsafeBitCast($0, to: MemmemFunction.self) }

private func memmemLinear(_ h: UnsafeRawPointer, _ hl: Int, _ n: UnsafeRawPointer, _ nl: Int) -> UnsafeMutableRawPointer? {
    if let systemMemmem { return systemMemmem(h, hl, n, nl) }
    guard nl > 0, nl <= hl else { return nil }
    for k in 0...(hl - nl) where memcmp(h + k, n, nl) == 0 { return UnsafeMutableRawPointer(mutating: h + k) }
    return nil
}

extension JValue {
    var isNone: Bool { if case .none = self { return true }; return false }
}

private extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
