import Foundation

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
                                                     "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="]
        .map { ($0, Array($0.unicodeScalars)) }

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
                while i < s.count, s[i] == "_" || s[i].properties.isAlphabetic || s[i].properties.numericType == .decimal {
                    n.unicodeScalars.append(s[i]); i += 1
                }
                out.append((.name(n), tokStart))
            } else if c.value >= 48 && c.value <= 57 {
                var n = ""
                while i < s.count, (s[i].value >= 48 && s[i].value <= 57) || s[i] == "_" {
                    if s[i] != "_" { n.unicodeScalars.append(s[i]); }; i += 1
                }
                func digit(_ k: Int) -> Bool { k < s.count && s[k].value >= 48 && s[k].value <= 57 }
                var isFloat = false
                if i + 1 < s.count, s[i] == ".", digit(i + 1) {
                    isFloat = true
                    n += "."; i += 1
                    while digit(i) { n.unicodeScalars.append(s[i]); i += 1 }
                }
                // Exponent (`1e3`, `2.5E-4`), as Jinja's float literal.
                if i < s.count, s[i] == "e" || s[i] == "E" {
                    let sign = i + 1 < s.count && (s[i + 1] == "+" || s[i + 1] == "-") ? 1 : 0
                    if digit(i + 1 + sign) {
                        isFloat = true
                        n += "e"; if sign == 1 { n.unicodeScalars.append(s[i + 1]) }
                        i += 1 + sign
                        while digit(i) { n.unicodeScalars.append(s[i]); i += 1 }
                    }
                }
                if isFloat {
                    guard let d = Double(n), d.isFinite else {
                        throw fail("float literal \(n.prefix(40))\(n.count > 40 ? "…" : "") out of range", tokStart)
                    }
                    out.append((.double(d), tokStart))
                } else {
                    // Python integers are unbounded; ours are 64-bit, and a literal that does not fit
                    // is an error rather than a silently different number.
                    guard let v = Int(n) else {
                        throw fail("integer literal \(n.prefix(40))\(n.count > 40 ? "…" : "") does not fit in 64 bits", tokStart)
                    }
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
                            guard i + n <= s.count, let val = UInt32(String(scalars: s[i..<(i + n)]), radix: 16),
                                  let sc = Unicode.Scalar(val) else {
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
