import Foundation

/// A Jinja subset that runs chat templates as written: `{{ }}`, `{% for %}`, `{% if/elif/else %}`,
/// `{% set %}`, whitespace control (`{%-`, `-%}`), string/number/bool/none literals, `+` and `~`,
/// comparisons, `and`/`or`/`not`, `in`, `is defined`/`is none`/`is string`, subscripts and
/// attributes, `loop.first/last/index/index0/length`, the filters `trim`, `length`, `upper`,
/// `lower`, `string` and the methods `strip()`, `lstrip()`, `rstrip()`, `upper()`, `lower()`,
/// `title()`, `startswith()`, `endswith()`, and `raise_exception(msg)`. Anything else is an error
/// naming the construct — never a silently different prompt.
public struct ChatTemplate: Sendable {
    indirect enum Node: Sendable {
        case text(String)
        case output(Expr)
        case forLoop(var: String, iterable: Expr, body: [Node])
        case ifChain([(Expr?, [Node])])
        case set(String, Expr)
    }

    indirect enum Expr: Sendable {
        case literal(Value)
        case name(String)
        case attr(Expr, String)
        case index(Expr, Expr)
        case call(Expr, [Expr])
        case filter(Expr, String)
        case unary(String, Expr)
        case binary(String, Expr, Expr)
        case test(Expr, String, Bool)
        case list([Expr])
    }

    enum Value: Sendable, Equatable {
        case str(String), int(Int), bool(Bool), none, list([Value]), dict([String: Value]), undefined

        var truthy: Bool {
            switch self {
            case let .str(s): return !s.isEmpty
            case let .int(i): return i != 0
            case let .bool(b): return b
            case let .list(l): return !l.isEmpty
            case let .dict(d): return !d.isEmpty
            case .none, .undefined: return false
            }
        }

        var text: String {
            switch self {
            case let .str(s): return s
            case let .int(i): return String(i)
            case let .bool(b): return b ? "True" : "False"
            case .none: return "None"
            case .undefined: return ""
            case let .list(l): return "[" + l.map(\.text).joined(separator: ", ") + "]"
            case .dict: return "{…}"
            }
        }
    }

    let nodes: [Node]

    public init(_ source: String) throws {
        var p = TemplateParser(tokens: try TemplateLexer.lex(source))
        nodes = try p.parseBlock(until: [])
    }

    func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String, eosToken: String) throws -> String {
        var scope: [String: Value] = [
            "messages": .list(messages.map { .dict(["role": .str($0.role), "content": .str($0.content)]) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .str(bosToken), "eos_token": .str(eosToken),
        ]
        var out = ""
        try run(nodes, &scope, &out)
        return out
    }

    func run(_ nodes: [Node], _ scope: inout [String: Value], _ out: inout String) throws {
        for n in nodes {
            switch n {
            case let .text(t): out += t
            case let .output(e): out += try eval(e, scope).text
            case let .set(name, e): scope[name] = try eval(e, scope)
            case let .ifChain(branches):
                for (cond, body) in branches where try cond.map({ try eval($0, scope).truthy }) ?? true {
                    try run(body, &scope, &out)
                    break
                }
            case let .forLoop(v, iterable, body):
                guard case let .list(items) = try eval(iterable, scope) else { throw TokenizerError.template("for loop over a non-list") }
                let saved = (scope[v], scope["loop"])
                for (i, item) in items.enumerated() {
                    scope[v] = item
                    scope["loop"] = .dict(["index0": .int(i), "index": .int(i + 1), "first": .bool(i == 0),
                                           "last": .bool(i == items.count - 1), "length": .int(items.count)])
                    try run(body, &scope, &out)
                }
                scope[v] = saved.0
                scope["loop"] = saved.1
            }
        }
    }

    func eval(_ e: Expr, _ s: [String: Value]) throws -> Value {
        switch e {
        case let .literal(v): return v
        case let .name(n): return s[n] ?? .undefined
        case let .list(items): return .list(try items.map { try eval($0, s) })
        case let .attr(base, name):
            let b = try eval(base, s)
            if case let .dict(d) = b { return d[name] ?? .undefined }
            return .undefined
        case let .index(base, idx):
            let b = try eval(base, s), i = try eval(idx, s)
            switch (b, i) {
            case let (.dict(d), .str(k)): return d[k] ?? .undefined
            case let (.list(l), .int(k)):
                let j = k < 0 ? l.count + k : k
                return l.indices.contains(j) ? l[j] : .undefined
            default: return .undefined
            }
        case let .call(fn, args):
            let vals = try args.map { try eval($0, s) }
            if case let .name(n) = fn, n == "raise_exception" {
                throw TokenizerError.template("the template raised: \(vals.first?.text ?? "")")
            }
            guard case let .attr(base, method) = fn, case let .str(str) = try eval(base, s) else {
                throw TokenizerError.template("unsupported call")
            }
            switch method {
            case "strip": return .str(str.trimmingCharacters(in: .whitespacesAndNewlines))
            case "lstrip": return .str(String(str.drop(while: { $0.isWhitespace })))
            case "rstrip": return .str(String(str.reversed().drop(while: { $0.isWhitespace }).reversed()))
            case "upper": return .str(str.uppercased())
            case "lower": return .str(str.lowercased())
            case "title": return .str(str.capitalized)
            case "startswith": return .bool(str.hasPrefix(vals.first?.text ?? ""))
            case "endswith": return .bool(str.hasSuffix(vals.first?.text ?? ""))
            default: throw TokenizerError.template("unsupported method '\(method)'")
            }
        case let .filter(base, name):
            let v = try eval(base, s)
            switch name {
            case "trim": return .str(v.text.trimmingCharacters(in: .whitespacesAndNewlines))
            case "upper": return .str(v.text.uppercased())
            case "lower": return .str(v.text.lowercased())
            case "string": return .str(v.text)
            case "length":
                switch v { case let .list(l): return .int(l.count); case let .str(t): return .int(t.count); case let .dict(d): return .int(d.count); default: return .int(0) }
            default: throw TokenizerError.template("unsupported filter '\(name)'")
            }
        case let .unary(op, x):
            let v = try eval(x, s)
            if op == "not" { return .bool(!v.truthy) }
            if op == "-", case let .int(i) = v { return .int(-i) }
            throw TokenizerError.template("unsupported unary '\(op)'")
        case let .test(x, name, negated):
            let v = try eval(x, s)
            let r: Bool
            switch name {
            case "defined": r = v != .undefined
            case "undefined": r = v == .undefined
            case "none": r = v == .none
            case "string": if case .str = v { r = true } else { r = false }
            default: throw TokenizerError.template("unsupported test 'is \(name)'")
            }
            return .bool(negated ? !r : r)
        case let .binary(op, l, r):
            if op == "and" { let a = try eval(l, s); return a.truthy ? try eval(r, s) : a }
            if op == "or" { let a = try eval(l, s); return a.truthy ? a : try eval(r, s) }
            let a = try eval(l, s), b = try eval(r, s)
            switch op {
            case "~": return .str(a.text + b.text)
            case "+":
                if case let .int(x) = a, case let .int(y) = b { return .int(x + y) }
                if case let .list(x) = a, case let .list(y) = b { return .list(x + y) }
                return .str(a.text + b.text)
            case "-": if case let .int(x) = a, case let .int(y) = b { return .int(x - y) }
            case "%": if case let .int(x) = a, case let .int(y) = b, y != 0 { return .int(x % y) }
            case "==": return .bool(a == b)
            case "!=": return .bool(a != b)
            case "<", ">", "<=", ">=":
                if case let .int(x) = a, case let .int(y) = b {
                    return .bool(op == "<" ? x < y : op == ">" ? x > y : op == "<=" ? x <= y : x >= y)
                }
            case "in":
                switch b {
                case let .list(l): return .bool(l.contains(a))
                case let .str(t): return .bool(t.contains(a.text))
                case let .dict(d): return .bool(d[a.text] != nil)
                default: return .bool(false)
                }
            default: break
            }
            throw TokenizerError.template("unsupported operands for '\(op)'")
        }
    }
}

enum TemplateToken: Equatable {
    case text(String)
    case output([String])
    case statement([String])
}

enum TemplateLexer {
    /// Splits into text, `{{ … }}` and `{% … %}`, applying `-` whitespace control; expression
    /// bodies are split into lexical tokens.
    static func lex(_ src: String) throws -> [TemplateToken] {
        var out: [TemplateToken] = []
        let s = Array(src)
        var i = 0
        var text = ""
        var trimNextLeading = false
        func flush(trimTrailing: Bool) {
            var t = text
            if trimNextLeading { t = String(t.drop(while: { $0.isWhitespace })) }
            if trimTrailing { while t.last?.isWhitespace == true { t.removeLast() } }
            if !t.isEmpty { out.append(.text(t)) }
            text = ""
            trimNextLeading = false
        }
        while i < s.count {
            if i + 1 < s.count, s[i] == "{", s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#" {
                let kind = s[i + 1]
                let close: Character = kind == "{" ? "}" : kind == "%" ? "%" : "#"
                var j = i + 2
                let trimBefore = j < s.count && s[j] == "-"
                if trimBefore { j += 1 }
                var body = ""
                while j + 1 < s.count && !(s[j] == close && s[j + 1] == "}") { body.append(s[j]); j += 1 }
                guard j + 1 < s.count else { throw TokenizerError.template("unterminated tag at character \(i)") }
                var trimAfter = false
                if body.hasSuffix("-") { body.removeLast(); trimAfter = true }
                flush(trimTrailing: trimBefore)
                if kind != "#" {
                    let toks = try tokenize(body)
                    out.append(kind == "{" ? .output(toks) : .statement(toks))
                }
                trimNextLeading = trimAfter
                i = j + 2
            } else {
                text.append(s[i]); i += 1
            }
        }
        flush(trimTrailing: false)
        return out
    }

    static func tokenize(_ body: String) throws -> [String] {
        var toks: [String] = []
        let c = Array(body)
        var i = 0
        while i < c.count {
            let ch = c[i]
            if ch.isWhitespace { i += 1; continue }
            if ch == "'" || ch == "\"" {
                var j = i + 1, lit = ""
                while j < c.count && c[j] != ch {
                    if c[j] == "\\" && j + 1 < c.count {
                        let e = c[j + 1]
                        lit.append(e == "n" ? "\n" : e == "t" ? "\t" : e)
                        j += 2
                    } else { lit.append(c[j]); j += 1 }
                }
                guard j < c.count else { throw TokenizerError.template("unterminated string literal") }
                toks.append("\u{1}" + lit)  // marked as a string literal
                i = j + 1
                continue
            }
            if ch.isLetter || ch == "_" {
                var j = i
                while j < c.count && (c[j].isLetter || c[j].isNumber || c[j] == "_") { j += 1 }
                toks.append(String(c[i..<j])); i = j; continue
            }
            if ch.isNumber {
                var j = i
                while j < c.count && c[j].isNumber { j += 1 }
                toks.append(String(c[i..<j])); i = j; continue
            }
            if i + 1 < c.count, ["==", "!=", "<=", ">="].contains(String(c[i...(i + 1)])) {
                toks.append(String(c[i...(i + 1)])); i += 2; continue
            }
            toks.append(String(ch)); i += 1
        }
        return toks
    }
}

struct TemplateParser {
    var tokens: [TemplateToken]
    var pos = 0

    mutating func parseBlock(until ends: Set<String>) throws -> [ChatTemplate.Node] {
        var nodes: [ChatTemplate.Node] = []
        while pos < tokens.count {
            switch tokens[pos] {
            case let .text(t): nodes.append(.text(t)); pos += 1
            case let .output(toks):
                var e = ExprParser(toks: toks)
                nodes.append(.output(try e.parseAll())); pos += 1
            case let .statement(toks):
                guard let head = toks.first else { throw TokenizerError.template("empty statement") }
                if ends.contains(head) { return nodes }
                pos += 1
                switch head {
                case "for":
                    guard toks.count >= 4, toks[2] == "in" else { throw TokenizerError.template("malformed for") }
                    var e = ExprParser(toks: Array(toks[3...]))
                    let iterable = try e.parseAll()
                    let body = try parseBlock(until: ["endfor"])
                    try expect("endfor")
                    nodes.append(.forLoop(var: toks[1], iterable: iterable, body: body))
                case "if":
                    var branches: [(ChatTemplate.Expr?, [ChatTemplate.Node])] = []
                    var e = ExprParser(toks: Array(toks.dropFirst()))
                    var cond: ChatTemplate.Expr? = try e.parseAll()
                    while true {
                        let body = try parseBlock(until: ["elif", "else", "endif"])
                        branches.append((cond, body))
                        guard pos < tokens.count, case let .statement(t) = tokens[pos] else { throw TokenizerError.template("unterminated if") }
                        pos += 1
                        if t[0] == "endif" { break }
                        if t[0] == "else" { cond = nil; continue }
                        var e2 = ExprParser(toks: Array(t.dropFirst()))
                        cond = try e2.parseAll()
                    }
                    nodes.append(.ifChain(branches))
                case "set":
                    guard toks.count >= 3, toks[2] == "=" else { throw TokenizerError.template("unsupported set: \(toks.joined(separator: " "))") }
                    var e = ExprParser(toks: Array(toks[3...]))
                    nodes.append(.set(toks[1], try e.parseAll()))
                default:
                    throw TokenizerError.template("unsupported statement '\(head)'")
                }
            }
        }
        if !ends.isEmpty { throw TokenizerError.template("missing \(ends.sorted().joined(separator: "/"))") }
        return nodes
    }

    mutating func expect(_ word: String) throws {
        guard pos < tokens.count, case let .statement(t) = tokens[pos], t.first == word else { throw TokenizerError.template("expected \(word)") }
        pos += 1
    }
}

struct ExprParser {
    let toks: [String]
    var i = 0
    init(toks: [String]) { self.toks = toks }

    var peek: String? { i < toks.count ? toks[i] : nil }
    mutating func next() -> String? { defer { i += 1 }; return peek }

    mutating func parseAll() throws -> ChatTemplate.Expr {
        let e = try parseOr()
        guard i == toks.count else { throw TokenizerError.template("unexpected '\(toks[i])' in expression") }
        return e
    }

    mutating func parseOr() throws -> ChatTemplate.Expr {
        var l = try parseAnd()
        while peek == "or" { i += 1; l = .binary("or", l, try parseAnd()) }
        return l
    }

    mutating func parseAnd() throws -> ChatTemplate.Expr {
        var l = try parseNot()
        while peek == "and" { i += 1; l = .binary("and", l, try parseNot()) }
        return l
    }

    mutating func parseNot() throws -> ChatTemplate.Expr {
        if peek == "not" { i += 1; return .unary("not", try parseNot()) }
        return try parseCompare()
    }

    mutating func parseCompare() throws -> ChatTemplate.Expr {
        var l = try parseAdd()
        while let p = peek {
            if ["==", "!=", "<", ">", "<=", ">="].contains(p) { i += 1; l = .binary(p, l, try parseAdd()) }
            else if p == "in" { i += 1; l = .binary("in", l, try parseAdd()) }
            else if p == "not", i + 1 < toks.count, toks[i + 1] == "in" { i += 2; l = .unary("not", .binary("in", l, try parseAdd())) }
            else if p == "is" {
                i += 1
                var neg = false
                if peek == "not" { neg = true; i += 1 }
                guard let name = next() else { throw TokenizerError.template("expected a test after 'is'") }
                l = .test(l, name, neg)
            } else { break }
        }
        return l
    }

    mutating func parseAdd() throws -> ChatTemplate.Expr {
        var l = try parseMul()
        while let p = peek, p == "+" || p == "-" || p == "~" { i += 1; l = .binary(p, l, try parseMul()) }
        return l
    }

    mutating func parseMul() throws -> ChatTemplate.Expr {
        var l = try parseUnary()
        while let p = peek, p == "%" { i += 1; l = .binary(p, l, try parseUnary()) }
        return l
    }

    mutating func parseUnary() throws -> ChatTemplate.Expr {
        if peek == "-" { i += 1; return .unary("-", try parseUnary()) }
        return try parsePostfix()
    }

    mutating func parsePostfix() throws -> ChatTemplate.Expr {
        var e = try parsePrimary()
        while let p = peek {
            if p == "." {
                i += 1
                guard let name = next() else { throw TokenizerError.template("expected a name after '.'") }
                e = .attr(e, name)
            } else if p == "[" {
                i += 1
                let idx = try parseOr()
                guard next() == "]" else { throw TokenizerError.template("expected ']'") }
                e = .index(e, idx)
            } else if p == "(" {
                i += 1
                var args: [ChatTemplate.Expr] = []
                while peek != ")" {
                    args.append(try parseOr())
                    if peek == "," { i += 1 }
                    guard peek != nil else { throw TokenizerError.template("expected ')'") }
                }
                i += 1
                e = .call(e, args)
            } else if p == "|" {
                i += 1
                guard let name = next() else { throw TokenizerError.template("expected a filter name") }
                e = .filter(e, name)
            } else { break }
        }
        return e
    }

    mutating func parsePrimary() throws -> ChatTemplate.Expr {
        guard let t = next() else { throw TokenizerError.template("unexpected end of expression") }
        if t.hasPrefix("\u{1}") { return .literal(.str(String(t.dropFirst()))) }
        if let n = Int(t) { return .literal(.int(n)) }
        switch t {
        case "true", "True": return .literal(.bool(true))
        case "false", "False": return .literal(.bool(false))
        case "none", "None": return .literal(.none)
        case "(":
            let e = try parseOr()
            guard next() == ")" else { throw TokenizerError.template("expected ')'") }
            return e
        case "[":
            var items: [ChatTemplate.Expr] = []
            while peek != "]" {
                items.append(try parseOr())
                if peek == "," { i += 1 }
                guard peek != nil else { throw TokenizerError.template("expected ']'") }
            }
            i += 1
            return .list(items)
        default:
            guard t.first?.isLetter == true || t.first == "_" else { throw TokenizerError.template("unexpected '\(t)'") }
            return .name(t)
        }
    }
}
