import Foundation

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
            throw limit(.work, "render exceeded its work budget of \(L.maxWorkUnits) units "
                            + "(loop iterations, calls, filters, bytes processed)", at)
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
            if op == .not { return .bool(!v.truthy) }
            switch v {
            case let .int(i):
                guard i != .min else { throw err("integer overflow in unary -", at) }
                return .int(-i)
            case let .double(d): return .double(-d)
            default: throw err("bad operand for unary -: \(v.typeName)", at)
            }
        case let .binary(op, l, r):
            if op == .and { let a = try eval(l); return a.truthy ? try eval(r) : a }
            if op == .or { let a = try eval(l); return a.truthy ? a : try eval(r) }
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
        case "in": return try binary(.contains, v, a[0], at).truthy
        default: throw err("unsupported test 'is \(name)'", at)
        }
    }
}
