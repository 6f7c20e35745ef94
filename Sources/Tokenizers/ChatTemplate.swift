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
public struct ChatTemplate: Sendable {
    let body: [JNode]
    public let source: String

    public init(_ source: String) throws(TokenizerError) {
        self.source = source
        var lexer = JLexer(source)
        let toks = try lexer.run()
        var p = JParser(toks)
        body = try p.parseBody(until: [])
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
        var ctx = JContext(scopes: [vars])
        var out = ""
        do { try ctx.exec(body, &out) } catch let e as TokenizerError { throw e } catch { throw .templateError(position: 0, message: "\(error)") }
        return out
    }
}

// MARK: values

final class JNamespace: @unchecked Sendable { var attrs: [String: JValue] = [:] }

enum JValue: Sendable {
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JValue])
    case dict([(String, JValue)])
    case namespace(JNamespace)
    case loop([String: JValue])

    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(l): return !l.isEmpty
        case let .dict(d): return !d.isEmpty
        case .namespace, .loop: return true
        }
    }
    /// Python `str()`.
    var str: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return d == d.rounded() && abs(d) < 1e16 ? String(format: "%.1f", d) : String(d)
        case let .string(s): return s
        case let .list(l): return "[" + l.map(\.repr).joined(separator: ", ") + "]"
        case let .dict(d): return "{" + d.map { "'\($0.0)': \($0.1.repr)" }.joined(separator: ", ") + "}"
        case .namespace: return "<Namespace>"
        case .loop: return "<LoopContext>"
        }
    }
    var repr: String {
        if case let .string(s) = self { return "'" + s.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'").replacingAll("\n", with: "\\n") + "'" }
        return str
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
    func equals(_ o: JValue) -> Bool {
        switch (self, o) {
        case (.none, .none): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.int(a), .int(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.int(a), .double(b)), let (.double(b), .int(a)): return Double(a) == b
        case let (.bool(a), .int(b)), let (.int(b), .bool(a)): return (a ? 1 : 0) == b
        case let (.string(a), .string(b)): return a == b
        case let (.list(a), .list(b)): return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case let (.dict(a), .dict(b)):
            return a.count == b.count && a.allSatisfy { kv in b.contains { $0.0 == kv.0 && $0.1.equals(kv.1) } }
        default: return false
        }
    }
    func toJSON(indent: Int?, level: Int = 0) -> String {
        let nl = indent.map { "\n" + String(repeating: " ", count: $0 * (level + 1)) } ?? ""
        let end = indent.map { "\n" + String(repeating: " ", count: $0 * level) } ?? ""
        let sep = indent == nil ? ", " : ","
        switch self {
        case .undefined, .none: return "null"
        case let .bool(b): return b ? "true" : "false"
        case .int, .double: return str
        case let .string(s):
            var o = "\""
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
            return o + "\""
        case let .list(l):
            if l.isEmpty { return "[]" }
            return "[" + nl + l.map { $0.toJSON(indent: indent, level: level + 1) }.joined(separator: sep + nl) + end + "]"
        case let .dict(d):
            if d.isEmpty { return "{}" }
            return "{" + nl + d.map { JValue.string($0.0).toJSON(indent: nil) + ": " + $0.1.toJSON(indent: indent, level: level + 1) }
                .joined(separator: sep + nl) + end + "}"
        case .namespace, .loop: return "null"
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

    func fail(_ m: String, _ at: Int? = nil) -> TokenizerError { .templateError(position: at ?? i, message: m) }
    func at(_ k: Int, _ str: String) -> Bool {
        let u = Array(str.unicodeScalars)
        guard k + u.count <= s.count else { return false }
        for (j, c) in u.enumerated() where s[k + j] != c { return false }
        return true
    }

    mutating func run() throws(TokenizerError) -> [(JTok, Int)] {
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
                    while i < s.count && !(at(i, "#}") || at(i, "-#}")) { i += 1 }
                    guard i < s.count else { throw fail("unterminated comment", start) }
                    stripNextWhitespace = at(i, "-#}")
                    i += stripNextWhitespace ? 3 : 2
                    trimNextNewline = true
                    continue
                }
                out.append((kind == "{" ? .exprStart : .stmtStart, start))
                let close = kind == "{" ? "}}" : "%}"
                try lexInside(close: close, start: start)
                let endMinus = at(i, "-" + close)
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

    mutating func lexInside(close: String, start: Int) throws(TokenizerError) {
        while true {
            while i < s.count, s[i].properties.isWhitespace { i += 1 }
            guard i < s.count else { throw fail("unterminated tag", start) }
            if at(i, close) || at(i, "-" + close) { return }
            let c = s[i]
            let tokStart = i
            if c == "_" || c.properties.isAlphabetic {
                var n = ""
                while i < s.count, s[i] == "_" || s[i].properties.isAlphabetic || s[i].properties.numericType == .decimal { n.unicodeScalars.append(s[i]); i += 1 }
                out.append((.name(n), tokStart))
            } else if c.value >= 48 && c.value <= 57 {
                var n = ""
                while i < s.count, (s[i].value >= 48 && s[i].value <= 57) || s[i] == "_" { if s[i] != "_" { n.unicodeScalars.append(s[i]) }; i += 1 }
                if i + 1 < s.count, s[i] == ".", s[i + 1].value >= 48 && s[i + 1].value <= 57 {
                    n += "."; i += 1
                    while i < s.count, s[i].value >= 48 && s[i].value <= 57 { n.unicodeScalars.append(s[i]); i += 1 }
                    out.append((.double(Double(n)!), tokStart))
                } else { out.append((.int(Int(n) ?? 0), tokStart)) }
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
                let ops = ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="]
                guard let op = ops.first(where: { at(i, $0) }) else { throw fail("unexpected character '\(c)'") }
                out.append((.op(op), tokStart))
                i += op.unicodeScalars.count
            }
        }
    }
}

// MARK: AST and parser

indirect enum JExpr: Sendable {
    case lit(JValue)
    case name(String)
    case list([JExpr]), dict([(JExpr, JExpr)])
    case attr(JExpr, String)
    case item(JExpr, JExpr)
    case slice(JExpr, JExpr?, JExpr?, JExpr?)
    case call(JExpr, [JExpr], [(String, JExpr)])
    case filter(JExpr, String, [JExpr], [(String, JExpr)], Int)
    case test(JExpr, String, [JExpr], negated: Bool, Int)
    case unary(String, JExpr)
    case binary(String, JExpr, JExpr, Int)
    case cond(JExpr, JExpr, JExpr?)
    case tuple([JExpr])
}

indirect enum JNode: Sendable {
    case text(String)
    case output(JExpr)
    case ifs([(JExpr, [JNode])], [JNode])
    case forLoop(targets: [String], iter: JExpr, filter: JExpr?, body: [JNode], orElse: [JNode])
    case set(target: String, attr: String?, JExpr)
    case loopBreak, loopContinue
}

struct JParser {
    let toks: [(JTok, Int)]
    var p = 0
    init(_ t: [(JTok, Int)]) { toks = t }

    var cur: JTok? { p < toks.count ? toks[p].0 : nil }
    var pos: Int { p < toks.count ? toks[p].1 : (toks.last?.1 ?? 0) }
    func fail(_ m: String) -> TokenizerError { .templateError(position: pos, message: m) }
    mutating func expect(_ t: JTok) throws(TokenizerError) {
        guard cur == t else { throw fail("expected \(t), found \(cur.map { "\($0)" } ?? "end of template")") }
        p += 1
    }
    mutating func accept(_ t: JTok) -> Bool { if cur == t { p += 1; return true }; return false }
    mutating func name() throws(TokenizerError) -> String {
        guard case let .name(n)? = cur else { throw fail("expected a name") }
        p += 1; return n
    }

    /// Parses nodes until a `{% name %}` in `until` (left unconsumed: p at stmtStart).
    mutating func parseBody(until: Set<String>) throws(TokenizerError) -> [JNode] {
        var nodes: [JNode] = []
        while let t = cur {
            switch t {
            case let .text(s): nodes.append(.text(s)); p += 1
            case .exprStart:
                p += 1
                let e = try parseExpr()
                try expect(.exprEnd)
                nodes.append(.output(e))
            case .stmtStart:
                guard p + 1 < toks.count, case let .name(kw) = toks[p + 1].0 else { p += 1; throw fail("expected a statement name") }
                if until.contains(kw) { return nodes }
                p += 2
                nodes.append(contentsOf: try parseStatement(kw))
            default: throw fail("unexpected \(t)")
            }
        }
        if !until.isEmpty { throw fail("missing {% \(until.sorted().joined(separator: " or ")) %}") }
        return nodes
    }

    mutating func endTag(_ kw: String) throws(TokenizerError) {
        try expect(.stmtStart)
        guard case let .name(n)? = cur, n == kw else { throw fail("expected {% \(kw) %}") }
        p += 1
        try expect(.stmtEnd)
    }

    mutating func parseStatement(_ kw: String) throws(TokenizerError) -> [JNode] {
        switch kw {
        case "if":
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
            return [.forLoop(targets: targets, iter: iter, filter: filter, body: body, orElse: orElse)]
        case "set":
            let target = try name()
            var attr: String? = nil
            if accept(.op(".")) { attr = try name() }
            guard accept(.op("=")) else { throw fail("block '{% set %}' (without '=') is not supported") }
            let e = try parseExpr()
            try expect(.stmtEnd)
            return [.set(target: target, attr: attr, e)]
        case "break": try expect(.stmtEnd); return [.loopBreak]
        case "continue": try expect(.stmtEnd); return [.loopContinue]
        case "generation":
            // transformers' AssistantTracker extension: renders its body unchanged.
            try expect(.stmtEnd)
            let body = try parseBody(until: ["endgeneration"])
            try endTag("endgeneration")
            return body
        default:
            p -= 1
            throw fail("unsupported statement '{% \(kw) %}'")
        }
    }

    mutating func parseExpr() throws(TokenizerError) -> JExpr {
        let e = try parseOr(allowCond: true)
        if case .op(",")? = cur {
            var items = [e]
            while accept(.op(",")) { if cur == .exprEnd || cur == .stmtEnd { break }; items.append(try parseOr(allowCond: true)) }
            return .tuple(items)
        }
        return e
    }
    mutating func parseOr(allowCond: Bool) throws(TokenizerError) -> JExpr {
        var l = try parseAnd()
        while case .name("or")? = cur { let at = pos; p += 1; l = .binary("or", l, try parseAnd(), at) }
        if allowCond, case .name("if")? = cur {
            p += 1
            let c = try parseOr(allowCond: false)
            var e: JExpr? = nil
            if case .name("else")? = cur { p += 1; e = try parseOr(allowCond: true) }
            return .cond(c, l, e)
        }
        return l
    }
    mutating func parseAnd() throws(TokenizerError) -> JExpr {
        var l = try parseNot()
        while case .name("and")? = cur { let at = pos; p += 1; l = .binary("and", l, try parseNot(), at) }
        return l
    }
    mutating func parseNot() throws(TokenizerError) -> JExpr {
        if case .name("not")? = cur { p += 1; return .unary("not", try parseNot()) }
        return try parseCompare()
    }
    mutating func parseCompare() throws(TokenizerError) -> JExpr {
        var l = try parseMath1()
        while true {
            let at = pos
            if case let .op(o)? = cur, ["==", "!=", "<", ">", "<=", ">="].contains(o) { p += 1; l = .binary(o, l, try parseMath1(), at); continue }
            if case .name("in")? = cur { p += 1; l = .binary("in", l, try parseMath1(), at); continue }
            if case .name("not")? = cur, p + 1 < toks.count, toks[p + 1].0 == .name("in") {
                p += 2; l = .unary("not", .binary("in", l, try parseMath1(), at)); continue
            }
            return l
        }
    }
    mutating func parseMath1() throws(TokenizerError) -> JExpr {
        var l = try parseConcat()
        while case let .op(o)? = cur, o == "+" || o == "-" { let at = pos; p += 1; l = .binary(o, l, try parseConcat(), at) }
        return l
    }
    mutating func parseConcat() throws(TokenizerError) -> JExpr {
        var l = try parseMath2()
        while case .op("~")? = cur { let at = pos; p += 1; l = .binary("~", l, try parseMath2(), at) }
        return l
    }
    mutating func parseMath2() throws(TokenizerError) -> JExpr {
        var l = try parseUnary()
        while case let .op(o)? = cur, ["*", "/", "//", "%"].contains(o) { let at = pos; p += 1; l = .binary(o, l, try parseUnary(), at) }
        return l
    }
    mutating func parseUnary() throws(TokenizerError) -> JExpr {
        if case .op("-")? = cur { p += 1; return try postfixFilters(.unary("-", try parseUnary())) }
        if case .op("+")? = cur { p += 1; return try parseUnary() }
        return try postfixFilters(try parsePostfix(try parsePrimary()))
    }
    mutating func postfixFilters(_ e0: JExpr) throws(TokenizerError) -> JExpr {
        var e = e0
        while true {
            if accept(.op("|")) {
                let at = pos
                let n = try name()
                var args: [JExpr] = [], kw: [(String, JExpr)] = []
                if cur == .op("(") { (args, kw) = try parseArgs() }
                e = .filter(e, n, args, kw, at)
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
                e = .test(e, n, args, negated: neg, at)
            } else { return e }
        }
    }
    mutating func parseArgs() throws(TokenizerError) -> ([JExpr], [(String, JExpr)]) {
        try expect(.op("("))
        var args: [JExpr] = [], kw: [(String, JExpr)] = []
        while !accept(.op(")")) {
            if case let .name(n)? = cur, p + 1 < toks.count, toks[p + 1].0 == .op("=") {
                p += 2; kw.append((n, try parseOr(allowCond: true)))
            } else { args.append(try parseOr(allowCond: true)) }
            if !accept(.op(",")) { try expect(.op(")")); break }
        }
        return (args, kw)
    }
    mutating func parsePostfix(_ e0: JExpr) throws(TokenizerError) -> JExpr {
        var e = e0
        while true {
            if accept(.op(".")) {
                if case let .int(i)? = cur { p += 1; e = .item(e, .lit(.int(i))); continue }
                e = .attr(e, try name())
            } else if accept(.op("[")) {
                var parts: [JExpr?] = [nil]
                var isSlice = false
                while !accept(.op("]")) {
                    if accept(.op(":")) { isSlice = true; parts.append(nil); continue }
                    parts[parts.count - 1] = try parseExpr()
                }
                if isSlice {
                    e = .slice(e, parts[0], parts.count > 1 ? parts[1] : nil, parts.count > 2 ? parts[2] : nil)
                } else {
                    guard let k = parts[0] else { throw fail("empty subscript") }
                    e = .item(e, k)
                }
            } else if cur == .op("(") {
                let (a, k) = try parseArgs()
                e = .call(e, a, k)
            } else { return e }
        }
    }
    mutating func parsePrimary() throws(TokenizerError) -> JExpr {
        guard let t = cur else { throw fail("unexpected end of expression") }
        p += 1
        switch t {
        case let .name(n):
            switch n {
            case "true", "True": return .lit(.bool(true))
            case "false", "False": return .lit(.bool(false))
            case "none", "None": return .lit(.none)
            default: return .name(n)
            }
        case let .string(s):
            var v = s
            while case let .string(more)? = cur { v += more; p += 1 }  // adjacent literals concatenate
            return .lit(.string(v))
        case let .int(i): return .lit(.int(i))
        case let .double(d): return .lit(.double(d))
        case .op("("):
            if accept(.op(")")) { return .tuple([]) }
            let e = try parseExpr()
            try expect(.op(")"))
            return e
        case .op("["):
            var items: [JExpr] = []
            while !accept(.op("]")) {
                items.append(try parseOr(allowCond: true))
                if !accept(.op(",")) { try expect(.op("]")); break }
            }
            return .list(items)
        case .op("{"):
            var items: [(JExpr, JExpr)] = []
            while !accept(.op("}")) {
                let k = try parseOr(allowCond: true)
                try expect(.op(":"))
                items.append((k, try parseOr(allowCond: true)))
                if !accept(.op(",")) { try expect(.op("}")); break }
            }
            return .dict(items)
        default:
            p -= 1
            throw fail("unexpected \(t)")
        }
    }
}

// MARK: evaluation

private enum LoopSignal: Error { case brk, cont }

struct JContext {
    var scopes: [[String: JValue]]

    func lookup(_ n: String) -> JValue {
        for s in scopes.reversed() { if let v = s[n] { return v } }
        return .undefined(n)
    }

    mutating func exec(_ nodes: [JNode], _ out: inout String) throws {
        for n in nodes {
            switch n {
            case let .text(s): out += s
            case let .output(e):
                let v = try eval(e)
                out += v.str
            case let .ifs(branches, orElse):
                var done = false
                for (c, body) in branches where try eval(c).truthy { try exec(body, &out); done = true; break }
                if !done { try exec(orElse, &out) }
            case let .forLoop(targets, iterE, filterE, body, orElse):
                var items: [JValue]
                switch try eval(iterE) {
                case let .list(l): items = l
                case let .dict(d): items = d.map { .string($0.0) }
                case let .string(s): items = s.map { .string(String($0)) }
                case .undefined, .none: items = []
                case let v: throw TokenizerError.templateError(position: 0, message: "cannot iterate over \(v.typeName)")
                }
                if let f = filterE {
                    var kept: [JValue] = []
                    for it in items {
                        scopes.append(bind(targets, it))
                        let ok = try eval(f).truthy
                        scopes.removeLast()
                        if ok { kept.append(it) }
                    }
                    items = kept
                }
                if items.isEmpty { try exec(orElse, &out); break }
                let count = items.count
                loop: for (idx, it) in items.enumerated() {
                    var scope = bind(targets, it)
                    scope["loop"] = .loop([
                        "index": .int(idx + 1), "index0": .int(idx), "first": .bool(idx == 0), "last": .bool(idx == count - 1),
                        "length": .int(count), "revindex": .int(count - idx), "revindex0": .int(count - idx - 1),
                        "previtem": idx > 0 ? items[idx - 1] : .undefined("previtem"),
                        "nextitem": idx + 1 < count ? items[idx + 1] : .undefined("nextitem"),
                    ])
                    scopes.append(scope)
                    defer { scopes.removeLast() }
                    do { try exec(body, &out) } catch LoopSignal.brk { break loop } catch LoopSignal.cont { continue loop }
                }
            case let .set(target, attr, e):
                let v = try eval(e)
                if let attr {
                    guard case let .namespace(ns) = lookup(target) else {
                        throw TokenizerError.templateError(position: 0, message: "cannot assign attribute '\(attr)' of non-namespace '\(target)'")
                    }
                    ns.attrs[attr] = v
                } else {
                    scopes[scopes.count - 1][target] = v
                }
            case .loopBreak: throw LoopSignal.brk
            case .loopContinue: throw LoopSignal.cont
            }
        }
    }

    func bind(_ targets: [String], _ v: JValue) -> [String: JValue] {
        if targets.count == 1 { return [targets[0]: v] }
        var s: [String: JValue] = [:]
        if case let .list(l) = v { for (t, x) in zip(targets, l) { s[t] = x } }
        return s
    }

    func err(_ m: String, _ at: Int = 0) -> TokenizerError { .templateError(position: at, message: m) }

    func eval(_ e: JExpr) throws -> JValue {
        switch e {
        case let .lit(v): return v
        case let .name(n): return lookup(n)
        case let .list(xs): return .list(try xs.map { try eval($0) })
        case let .tuple(xs): return .list(try xs.map { try eval($0) })
        case let .dict(kvs): return .dict(try kvs.map { (try eval($0.0).str, try eval($0.1)) })
        case let .attr(b, name): return try getAttr(try eval(b), name)
        case let .item(b, k):
            let base = try eval(b), key = try eval(k)
            switch (base, key) {
            case let (.list(l), .int(i)):
                let j = i < 0 ? l.count + i : i
                return j >= 0 && j < l.count ? l[j] : .undefined("[\(i)]")
            case let (.string(s), .int(i)):
                let u = Array(s)
                let j = i < 0 ? u.count + i : i
                return j >= 0 && j < u.count ? .string(String(u[j])) : .undefined("[\(i)]")
            case let (_, .string(k)): return try getAttr(base, k)
            case (.undefined(let n), _): throw err("'\(n)' is undefined")
            default: return .undefined("item")
            }
        case let .slice(b, lo, hi, st):
            let base = try eval(b)
            let step = try st.map { try eval($0) }
            guard step == nil || { if case .int(1) = step! { return true }; if case .int(-1) = step! { return true }; return false }() else {
                throw err("slice steps other than 1 and -1 are not supported")
            }
            let reversed = { if case .int(-1)? = step { return true }; return false }()
            func bounds(_ n: Int) throws -> Range<Int> {
                func clamp(_ x: JExpr?, _ d: Int) throws -> Int {
                    guard let x else { return d }
                    guard case let .int(i) = try eval(x) else { return d }
                    let j = i < 0 ? n + i : i
                    return min(max(j, 0), n)
                }
                let a = try clamp(lo, 0), z = try clamp(hi, n)
                return a < z ? a..<z : a..<a
            }
            switch base {
            case let .list(l):
                if reversed { return .list(l.reversed()) }
                return .list(Array(l[try bounds(l.count)]))
            case let .string(s):
                let u = Array(s)
                if reversed { return .string(String(u.reversed())) }
                return .string(String(u[try bounds(u.count)]))
            default: throw err("cannot slice \(base.typeName)")
            }
        case let .unary(op, x):
            let v = try eval(x)
            if op == "not" { return .bool(!v.truthy) }
            switch v {
            case let .int(i): return .int(-i)
            case let .double(d): return .double(-d)
            default: throw err("bad operand for unary -: \(v.typeName)")
            }
        case let .binary(op, l, r, at):
            if op == "and" { let a = try eval(l); return a.truthy ? try eval(r) : a }
            if op == "or" { let a = try eval(l); return a.truthy ? a : try eval(r) }
            return try binary(op, try eval(l), try eval(r), at)
        case let .cond(c, a, b):
            if try eval(c).truthy { return try eval(a) }
            return try b.map { try eval($0) } ?? .undefined("else")
        case let .test(x, name, args, neg, at):
            let v = try eval(x)
            let a = try args.map { try eval($0) }
            let r: Bool
            switch name {
            case "defined": if case .undefined = v { r = false } else { r = true }
            case "undefined": if case .undefined = v { r = true } else { r = false }
            case "none": if case .none = v { r = true } else { r = false }
            case "string": if case .string = v { r = true } else { r = false }
            case "number": switch v { case .int, .double: r = true; default: r = false }
            case "integer": if case .int = v { r = true } else { r = false }
            case "boolean": if case .bool = v { r = true } else { r = false }
            case "true": if case .bool(true) = v { r = true } else { r = false }
            case "false": if case .bool(false) = v { r = true } else { r = false }
            case "mapping": if case .dict = v { r = true } else { r = false }
            case "sequence", "iterable": switch v { case .list, .string, .dict: r = true; default: r = false }
            case "even", "odd":
                guard case let .int(i) = v else { throw err("'\(name)' test needs an integer", at) }
                r = (i % 2 == 0) == (name == "even")
            case "eq", "equalto", "==": r = a.first.map { v.equals($0) } ?? false
            case "ne", "!=": r = !(a.first.map { v.equals($0) } ?? false)
            case "in": r = try binary("in", v, a.first ?? .none, at).truthy
            default: throw err("unsupported test 'is \(name)'", at)
            }
            return .bool(r != neg)
        case let .filter(x, name, args, kw, at):
            return try filter(try eval(x), name, try args.map { try eval($0) }, try kw.map { ($0.0, try eval($0.1)) }, at)
        case let .call(fn, args, kw):
            let a = try args.map { try eval($0) }
            let k = try kw.map { ($0.0, try eval($0.1)) }
            if case let .attr(b, method) = fn { return try callMethod(try eval(b), method, a, k) }
            guard case let .name(n) = fn else { throw err("unsupported call") }
            switch n {
            case "raise_exception": throw TokenizerError.templateRaised(message: a.first?.str ?? "")
            case "range":
                let ints = a.compactMap { if case let .int(i) = $0 { return i }; return nil }
                guard ints.count == a.count, (1...3).contains(ints.count) else { throw err("range() needs 1 to 3 integers") }
                let (lo, hi, st) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count == 3 ? ints[2] : 1)
                guard st != 0 else { throw err("range() step must not be zero") }
                return .list(Swift.stride(from: lo, to: hi, by: st).map { .int($0) })
            case "namespace":
                let ns = JNamespace()
                for (kk, v) in k { ns.attrs[kk] = v }
                if case let .dict(d)? = a.first { for (kk, v) in d { ns.attrs[kk] = v } }
                return .namespace(ns)
            case "dict":
                return .dict(k)
            default: throw err("unsupported function '\(n)()'")
            }
        }
    }

    func getAttr(_ v: JValue, _ name: String) throws -> JValue {
        switch v {
        case let .dict(d): return d.last(where: { $0.0 == name })?.1 ?? .undefined(name)
        case let .namespace(ns): return ns.attrs[name] ?? .undefined(name)
        case let .loop(l): return l[name] ?? .undefined(name)
        case let .undefined(n): throw err("'\(n)' is undefined (accessing '\(name)')")
        default: return .undefined(name)
        }
    }

    func callMethod(_ v: JValue, _ m: String, _ a: [JValue], _ kw: [(String, JValue)]) throws -> JValue {
        switch v {
        case let .string(s):
            func chars(_ x: JValue?) -> Set<Character>? { if case let .string(c)? = x { return Set(c) }; return nil }
            switch m {
            case "strip", "lstrip", "rstrip":
                let set = chars(a.first)
                let isStrip: (Character) -> Bool = { c in set.map { $0.contains(c) } ?? c.unicodeScalars.allSatisfy { UClass.isSpace($0.value) } }
                var t = Substring(s)
                if m != "rstrip" { t = t.drop(while: isStrip) }
                if m != "lstrip" { while let l = t.last, isStrip(l) { t = t.dropLast() } }
                return .string(String(t))
            case "upper": return .string(s.uppercased())
            case "lower": return .string(s.lowercased())
            case "title": return .string(s.capitalized)
            case "capitalize": return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
            case "startswith", "endswith":
                guard case let .string(x)? = a.first else { throw err("\(m)() needs a string") }
                return .bool(m == "startswith" ? s.hasPrefix(x) : s.hasSuffix(x))
            case "replace":
                guard a.count >= 2, case let .string(x) = a[0], case let .string(y) = a[1] else { throw err("replace() needs two strings") }
                return .string(s.replacingAll(x, with: y))
            case "split":
                if case let .string(sep)? = a.first {
                    return .list(s.components(separatedBy: sep).map { .string($0) })
                }
                return .list(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
            case "format": throw err("str.format() is not supported")
            default: break
            }
        case let .dict(d):
            switch m {
            case "items": return .list(d.map { .list([.string($0.0), $0.1]) })
            case "keys": return .list(d.map { .string($0.0) })
            case "values": return .list(d.map { $0.1 })
            case "get":
                guard case let .string(k)? = a.first else { throw err("get() needs a key") }
                return d.last(where: { $0.0 == k })?.1 ?? (a.count > 1 ? a[1] : .none)
            default: break
            }
        default: break
        }
        throw err("unsupported method '\(m)()' on \(v.typeName)")
    }

    func binary(_ op: String, _ a: JValue, _ b: JValue, _ at: Int) throws -> JValue {
        switch op {
        case "==": return .bool(a.equals(b))
        case "!=": return .bool(!a.equals(b))
        case "~": return .string(a.str + b.str)
        case "in":
            switch b {
            case let .string(s):
                guard case let .string(x) = a else { throw err("'in <string>' requires a string", at) }
                return .bool(x.isEmpty || s.contains(x))
            case let .list(l): return .bool(l.contains { $0.equals(a) })
            case let .dict(d): return .bool(d.contains { JValue.string($0.0).equals(a) })
            case .undefined(let n): throw err("'\(n)' is undefined", at)
            default: throw err("argument of type \(b.typeName) is not iterable", at)
            }
        default: break
        }
        if case let .undefined(n) = a { throw err("'\(n)' is undefined", at) }
        if case let .undefined(n) = b { throw err("'\(n)' is undefined", at) }
        switch (op, a, b) {
        case let ("+", .string(x), .string(y)): return .string(x + y)
        case let ("+", .list(x), .list(y)): return .list(x + y)
        case let ("*", .string(x), .int(n)): return .string(String(repeating: x, count: max(n, 0)))
        case let ("%", .string(_), x): throw err("string formatting with % is not supported (\(x.typeName))", at)
        default: break
        }
        func num(_ v: JValue) -> Double? {
            switch v { case let .int(i): return Double(i); case let .double(d): return d; case let .bool(b): return b ? 1 : 0; default: return nil }
        }
        func int(_ v: JValue) -> Int? {
            switch v { case let .int(i): return i; case let .bool(b): return b ? 1 : 0; default: return nil }
        }
        if let x = int(a), let y = int(b) {
            switch op {
            case "+": return .int(x + y)
            case "-": return .int(x - y)
            case "*": return .int(x * y)
            case "/": guard y != 0 else { throw err("division by zero", at) }; return .double(Double(x) / Double(y))
            case "//": guard y != 0 else { throw err("division by zero", at) }; return .int(Int((Double(x) / Double(y)).rounded(.down)))
            case "%": guard y != 0 else { throw err("modulo by zero", at) }; return .int(((x % y) + y) % y)
            case "<": return .bool(x < y)
            case ">": return .bool(x > y)
            case "<=": return .bool(x <= y)
            case ">=": return .bool(x >= y)
            default: break
            }
        }
        if let x = num(a), let y = num(b) {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/": return .double(x / y)
            case "<": return .bool(x < y)
            case ">": return .bool(x > y)
            case "<=": return .bool(x <= y)
            case ">=": return .bool(x >= y)
            default: break
            }
        }
        if case let .string(x) = a, case let .string(y) = b {
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

    func filter(_ v: JValue, _ name: String, _ a: [JValue], _ kw: [(String, JValue)], _ at: Int) throws -> JValue {
        switch name {
        case "trim":
            guard case let .string(s) = v else { return v }
            return try callMethod(.string(s), "strip", a, [])
        case "upper", "lower", "title", "capitalize":
            guard case .string = v else { return v }
            return try callMethod(v, name, [], [])
        case "length", "count":
            switch v {
            case let .string(s): return .int(s.count)
            case let .list(l): return .int(l.count)
            case let .dict(d): return .int(d.count)
            case .undefined: return .int(0)
            default: throw err("object of type \(v.typeName) has no length", at)
            }
        case "string": return .string(v.str)
        case "int":
            switch v {
            case let .int(i): return .int(i)
            case let .double(d): return .int(Int(d))
            case let .string(s): return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? 0)
            case let .bool(b): return .int(b ? 1 : 0)
            default: return .int(0)
            }
        case "list":
            switch v {
            case .list: return v
            case let .string(s): return .list(s.map { .string(String($0)) })
            case let .dict(d): return .list(d.map { .string($0.0) })
            default: throw err("cannot convert \(v.typeName) to a list", at)
            }
        case "default", "d":
            let useFalsy = a.count > 1 && a[1].truthy
            if case .undefined = v { return a.first ?? .string("") }
            if useFalsy && !v.truthy { return a.first ?? .string("") }
            return v
        case "first", "last":
            switch v {
            case let .list(l): return (name == "first" ? l.first : l.last) ?? .undefined(name)
            case let .string(s): return (name == "first" ? s.first : s.last).map { .string(String($0)) } ?? .undefined(name)
            default: throw err("cannot take \(name) of \(v.typeName)", at)
            }
        case "join":
            guard case let .list(l) = v else { throw err("join needs a list", at) }
            let sep = a.first?.str ?? ""
            return .string(l.map(\.str).joined(separator: sep))
        case "replace":
            return try callMethod(v, "replace", a, [])
        case "reverse":
            switch v {
            case let .list(l): return .list(l.reversed())
            case let .string(s): return .string(String(s.reversed()))
            default: throw err("cannot reverse \(v.typeName)", at)
            }
        case "tojson":
            var indent: Int? = nil
            if case let .int(i)? = a.first { indent = i }
            for (k, x) in kw where k == "indent" { if case let .int(i) = x { indent = i } }
            return .string(v.toJSON(indent: indent))
        case "items":
            return try callMethod(v, "items", [], [])
        default:
            throw err("unsupported filter '|\(name)'", at)
        }
    }
}
