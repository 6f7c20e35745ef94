import Foundation

// MARK: filters

extension JEvaluator {
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

private extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
