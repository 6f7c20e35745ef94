import Foundation

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
        case unary(JUnaryOperator, JExpr)
        case binary(JBinaryOperator, JExpr, JExpr)
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
        while case .name("or")? = cur { let at = pos; p += 1; l = try mk(.binary(.or, l, try parseAnd()), at) }
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
        while case .name("and")? = cur { let at = pos; p += 1; l = try mk(.binary(.and, l, try parseNot()), at) }
        return l
    }
    mutating func parseNot() throws(TemplateFault) -> JExpr {
        if case .name("not")? = cur {
            let at = pos
            try enter(); defer { nesting -= 1 }
            p += 1
            return try mk(.unary(.not, try parseNot()), at)
        }
        return try parseCompare()
    }
    mutating func parseCompare() throws(TemplateFault) -> JExpr {
        var l = try parseAdditive()
        while true {
            let at = pos
            if case let .op(o)? = cur, let op = JBinaryOperator(rawValue: o), JBinaryOperator.comparisons.contains(op) {
                p += 1; l = try mk(.binary(op, l, try parseAdditive()), at); continue
            }
            if case .name("in")? = cur { p += 1; l = try mk(.binary(.contains, l, try parseAdditive()), at); continue }
            if case .name("not")? = cur, p + 1 < toks.count, toks[p + 1].0 == .name("in") {
                p += 2; l = try mk(.unary(.not, try mk(.binary(.contains, l, try parseAdditive()), at)), at); continue
            }
            return l
        }
    }
    mutating func parseAdditive() throws(TemplateFault) -> JExpr {
        var l = try parseConcat()
        while case let .op(o)? = cur, let op = JBinaryOperator(rawValue: o), JBinaryOperator.additive.contains(op) {
            let at = pos; p += 1; l = try mk(.binary(op, l, try parseConcat()), at)
        }
        return l
    }
    mutating func parseConcat() throws(TemplateFault) -> JExpr {
        var l = try parseMultiplicative()
        while case .op("~")? = cur { let at = pos; p += 1; l = try mk(.binary(.concat, l, try parseMultiplicative()), at) }
        return l
    }
    mutating func parseMultiplicative() throws(TemplateFault) -> JExpr {
        var l = try parseUnary()
        while case let .op(o)? = cur, let op = JBinaryOperator(rawValue: o), JBinaryOperator.multiplicative.contains(op) {
            let at = pos; p += 1; l = try mk(.binary(op, l, try parseUnary()), at)
        }
        return l
    }
    mutating func parseUnary() throws(TemplateFault) -> JExpr {
        let at = pos
        if case .op("-")? = cur {
            try enter(); defer { nesting -= 1 }
            p += 1
            return try postfixFilters(try mk(.unary(.negate, try parseUnary()), at))
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
                else if case .name(let x)? = cur, !["and", "or", "else", "if", "in", "not", "is"].contains(x) {
                    args = [try parsePrimary()]
                }
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
