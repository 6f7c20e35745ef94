import Foundation

// MARK: global functions and methods

extension JEvaluator {
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
    func takes(_ what: String, _ a: [JValue], _ kw: [(String, JValue)], positional: ClosedRange<Int>, keywords: Set<String> = [],
               _ at: Int) throws(JThrow) {
        guard positional.contains(a.count) else {
            let want = positional.lowerBound == positional.upperBound
                ? "\(positional.lowerBound)" : "\(positional.lowerBound) to \(positional.upperBound)"
            throw err("\(what) takes \(want) positional argument\(positional.upperBound == 1 ? "" : "s"), got \(a.count)", at)
        }
        for (k, _) in kw where !keywords.contains(k) { throw err("\(what) got an unexpected keyword argument '\(k)'", at) }
    }
    func stringArg(_ what: String, _ x: JValue, _ at: Int) throws(JThrow) -> String {
        guard case let .string(s) = x else { throw err("\(what) needs a string, got \(x.typeName)", at) }
        return s
    }

    /// `value.method(args…)`: the str and dict methods templates use.
    func callMethod(_ v: JValue, _ m: String, _ a: [JValue], _ kw: [(String, JValue)], _ at: Int) throws(JThrow) -> JValue {
        var r: JValue? = nil
        switch v {
        case let .string(s): r = try stringMethod(s, m, a, kw, at)
        case let .dict(d, _): r = try dictMethod(d, m, a, kw, at)
        default: break
        }
        guard let r else { throw err("unsupported method '\(m)()' on \(v.typeName)", at) }
        return r
    }

    /// A str method, or nil when `m` is not one.
    func stringMethod(_ s: String, _ m: String, _ a: [JValue], _ kw: [(String, JValue)], _ at: Int) throws(JThrow) -> JValue? {
        switch m {
        case "strip", "lstrip", "rstrip":
            try takes("\(m)()", a, kw, positional: 0...1, at)
            var set: Set<Character>? = nil
            if let x = a.first, !x.isNone { set = Set(try stringArg("\(m)()", x, at)) }
            try charge(0, bytes: s.utf8.count, at)
            let isStrip: (Character) -> Bool = { c in
                set.map { $0.contains(c) } ?? c.unicodeScalars.allSatisfy { UClass.isSpace($0.value) }
            }
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
            return try split(s, separator: a.first ?? .none, at)
        case "format": throw err("str.format() is not supported", at)
        default: return nil
        }
    }

    /// Python `str.split(sep)`; no separator splits on runs of whitespace.
    func split(_ s: String, separator: JValue, _ at: Int) throws(JThrow) -> JValue {
        try charge(0, bytes: s.utf8.count, at)
        if separator.isNone {
            let parts = s.split(whereSeparator: { $0.isWhitespace })
            try checkItems(parts.count, "split()", at)
            try charge(parts.count, at)
            return .list(parts.map { .string(String($0)) })
        }
        let sep = try stringArg("split()", separator, at)
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

    /// A dict method, or nil when `m` is not one.
    func dictMethod(_ d: [(String, JValue)], _ m: String, _ a: [JValue], _ kw: [(String, JValue)], _ at: Int) throws(JThrow) -> JValue? {
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
        default: return nil
        }
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
