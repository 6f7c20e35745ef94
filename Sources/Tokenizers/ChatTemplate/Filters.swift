import Foundation

// MARK: filters

extension JEvaluator {
    /// `value | name(args…)`. Each filter first refuses arguments it does not take (Jinja raises
    /// TypeError), then charges for what it reads and makes.
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
            return try length(v, at)
        case "string":
            try takes(what, a, kw, positional: 0...0, at)
            return .string(try stringify(v, at))
        case "int":
            try takes(what, a, kw, positional: 0...1, keywords: ["default"], at)
            return try toInt(v, fallback: a.first ?? kw.first?.1, what, at)
        case "list":
            try takes(what, a, kw, positional: 0...0, at)
            return try toList(v, at)
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
            case let .string(s):
                return (name == "first" ? s.unicodeScalars.first : s.unicodeScalars.last).map { .string(String($0)) } ?? .undefined(name)
            default: throw err("cannot take \(name) of \(v.typeName)", at)
            }
        case "join":
            try takes(what, a, kw, positional: 0...1, keywords: ["d"], at)
            return try join(v, separator: a.first ?? kw.first?.1 ?? .string(""), at)
        case "replace":
            try takes(what, a, kw, positional: 2...3, at)
            guard case .string = v else { throw err("\(what) needs a string, got \(v.typeName)", at) }
            return try callMethod(v, "replace", a, [], at)
        case "reverse":
            try takes(what, a, kw, positional: 0...0, at)
            return try reverse(v, at)
        case "tojson":
            // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False);
            // only indent is implemented, and a positional argument would be ensure_ascii.
            try takes(what, a, kw, positional: 0...0, keywords: ["indent"], at)
            return try tojson(v, indent: kw.first?.1 ?? .none, at)
        case "items":
            try takes(what, a, kw, positional: 0...0, at)
            guard case .dict = v else { throw err("\(what) needs a dict, got \(v.typeName)", at) }
            return try callMethod(v, "items", [], [], at)
        default:
            throw err("unsupported filter '|\(name)'", at)
        }
    }

    func length(_ v: JValue, _ at: Int) throws(JThrow) -> JValue {
        switch v {
        case let .string(s):
            try charge(0, bytes: s.utf8.count, at)
            return .int(s.unicodeScalars.count)  // Python's len(str) counts code points
        case let .list(l, _): return .int(l.count)
        case let .dict(d, _): return .int(d.count)
        case .undefined: return .int(0)
        default: throw err("object of type \(v.typeName) has no length", at)
        }
    }

    /// Jinja's `int`: non-numbers give the default, but a number that does not fit in 64 bits
    /// (where Python would make a big integer) or is not finite is an error, not a wrong number.
    func toInt(_ v: JValue, fallback f: JValue?, _ what: String, _ at: Int) throws(JThrow) -> JValue {
        var fallback = 0
        if let f {
            guard case let .int(i) = f else { throw err("\(what) default must be an integer", at) }
            fallback = i
        }
        switch v {
        case let .int(i): return .int(i)
        case let .double(d):
            guard d.isFinite else { throw err("cannot convert \(d.isNaN ? "nan" : d > 0 ? "inf" : "-inf") to an integer", at) }
            guard let i = Int(exactly: d.rounded(.towardZero)) else { throw err("\(d) does not fit in a 64-bit integer", at) }
            return .int(i)
        case let .string(s):
            try charge(0, bytes: s.utf8.count, at)
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
    }

    func toList(_ v: JValue, _ at: Int) throws(JThrow) -> JValue {
        switch v {
        case .list: return v
        case let .string(s):
            try checkItems(s.utf8.count, "list", at)
            try charge(s.utf8.count, at)
            return .list(s.unicodeScalars.map { .string(String($0)) })
        case let .dict(d, _):
            try charge(d.count, at)
            return .list(d.map { .string($0.0) })
        default: throw err("cannot convert \(v.typeName) to a list", at)
        }
    }

    /// Checked after every item, so a join can stop before it holds more than one string's worth.
    func join(_ v: JValue, separator: JValue, _ at: Int) throws(JThrow) -> JValue {
        guard case let .list(l, _) = v else { throw err("join needs a list, got \(v.typeName)", at) }
        let sep = try stringify(separator, at)
        var o = ""
        for (k, x) in l.enumerated() {
            if k > 0 { o += sep }
            o += try stringify(x, at)
            try checkString(o.utf8.count, "join", at)
            try charge(1, at)
        }
        try charge(0, bytes: o.utf8.count, at)
        return .string(o)
    }

    func reverse(_ v: JValue, _ at: Int) throws(JThrow) -> JValue {
        switch v {
        case let .list(l, _):
            try charge(l.count, at)
            return .list(l.reversed())
        case let .string(s):
            try charge(0, bytes: s.utf8.count, at)
            return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed())))
        default: throw err("cannot reverse \(v.typeName)", at)
        }
    }

    func tojson(_ v: JValue, indent x: JValue, _ at: Int) throws(JThrow) -> JValue {
        var indent: Int? = nil
        switch x {
        case .none: break
        case let .int(i):
            // A negative indent trapped in String(repeating:count:); a huge one multiplies the output.
            guard (0...L.maxIndent).contains(i) else { throw err("tojson indent must be between 0 and \(L.maxIndent), got \(i)", at) }
            indent = i
        default: throw err("tojson indent must be an integer, got \(x.typeName)", at)
        }
        var o = ""
        try toJSON(v, indent: indent, into: &o, at)
        try charge(0, bytes: o.utf8.count, at)
        return .string(o)
    }
}

private extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
