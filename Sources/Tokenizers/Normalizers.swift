import Foundation

/// Normalizers as in `tokenizers/src/normalizers`: each maps a piece of text to its normalized
/// form. Offsets are not tracked (Assay needs ids), so every normalizer is a String → String map.
indirect enum Normalizer: Sendable {
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case stripAccents
    case strip(left: Bool, right: Bool)
    case replace(Pattern, String)
    case prepend(String)
    /// BertNormalizer (normalizers/bert.rs). `stripAccents: nil` follows `lowercase`.
    case bert(cleanText: Bool, chineseChars: Bool, stripAccents: Bool, lowercase: Bool)
    case byteLevel
    case sequence([Normalizer])

    static func load(_ n: Node, depth: Int = 0) throws(TokenizerError) -> Normalizer {
        let type = try n.string("type")
        switch type {
        case "NFC": return .nfc
        case "NFD": return .nfd
        case "NFKC": return .nfkc
        case "NFKD": return .nfkd
        case "Lowercase": return .lowercase
        case "StripAccents": return .stripAccents
        case "Strip": return .strip(left: try n.bool("strip_left", default: true), right: try n.bool("strip_right", default: true))
        case "Replace": return .replace(try Pattern.load(try n.require("pattern")), try n.string("content"))
        case "Prepend": return .prepend(try n.string("prepend"))
        case "ByteLevel": return .byteLevel
        case "BertNormalizer":
            let lower = try n.bool("lowercase", default: true)
            return .bert(cleanText: try n.bool("clean_text", default: true),
                         chineseChars: try n.bool("handle_chinese_chars", default: true),
                         stripAccents: try n.child("strip_accents")?.bool() ?? lower, lowercase: lower)
        case "Sequence":
            try checkSequenceDepth(n, depth, "normalizer")
            return .sequence(try n.require("normalizers").items().map { (x) throws(TokenizerError) in
                try Normalizer.load(x, depth: depth + 1)
            })
        default:
            throw TokenizerError.unsupportedComponent(file: n.file, path: n.path + ".type", kind: "normalizer", type: type)
        }
    }

    func normalize(_ s: String) -> String {
        if s.isEmpty { return s }
        switch self {
        case .nfc: return Self.isLatin1(s) ? s : s.precomposedStringWithCanonicalMapping
        case .nfd: return Self.isASCII(s) ? s : Self.decompose(s, compatibility: false)
        case .nfkc: return Self.isASCII(s) ? s : s.precomposedStringWithCompatibilityMapping
        case .nfkd: return Self.isASCII(s) ? s : Self.decompose(s, compatibility: true)
        case .lowercase: return Self.lowercase(s)
        case .stripAccents: return String(scalars: s.unicodeScalars.filter { !UClass.isMark($0.value) })
        case let .strip(left, right):
            var u = Array(s.unicodeScalars)
            if right { while let l = u.last, UClass.isSpace(l.value) { u.removeLast() } }
            var start = 0
            if left { while start < u.count, UClass.isSpace(u[start].value) { start += 1 } }
            return String(scalars: u[start...])
        case let .replace(p, content): return p.replaceAll(in: s, with: content)
        case let .prepend(p): return p + s
        case .byteLevel: return ByteLevelMap.map(Array(s.utf8))
        case let .sequence(ns):
            var t = s
            for n in ns { t = n.normalize(t) }
            return t
        case let .bert(clean, chinese, strip, lower):
            var out = String.UnicodeScalarView()
            for c in s.unicodeScalars {
                let v = c.value
                if clean {
                    if v == 0 || v == 0xFFFD || (v != 9 && v != 10 && v != 13 && UClass.isOther(v, unassigned: false)) { continue }
                    if v == 9 || v == 10 || v == 13 || UClass.isSpace(v) { out.append(" "); continue }
                }
                if chinese && Self.isChinese(v) { out.append(" "); out.append(c); out.append(" "); continue }
                out.append(c)
            }
            var t = String(out)
            if strip {
                t = Self.isASCII(t) ? t : Self.decompose(t, compatibility: false)
                // bert.rs strips nonspacing marks (Mn) only; enclosing marks such as U+20E3 stay.
                t = String(scalars: t.unicodeScalars.filter { $0.properties.generalCategory != .nonspacingMark })
            }
            if lower { t = Self.lowercase(t) }
            return t
        }
    }

    /// NFD/NFKD applied to the non-ASCII runs only. Exact: ASCII characters are starters that
    /// neither decompose nor take part in canonical reordering, so decomposition never crosses them.
    static func decompose(_ s: String, compatibility: Bool) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + 16)
        var run: [UInt8] = []
        func flush() {
            guard !run.isEmpty else { return }
            let r = String(decoding: run, as: UTF8.self)
            out.append(contentsOf: (compatibility ? r.decomposedStringWithCompatibilityMapping
                                                  : r.decomposedStringWithCanonicalMapping).utf8)
            run.removeAll(keepingCapacity: true)
        }
        for b in s.utf8 {
            if b < 0x80 { flush(); out.append(b) } else { run.append(b) }
        }
        flush()
        return String(decoding: out, as: UTF8.self)
    }

    /// Rust `char::to_lowercase` per scalar (no context-dependent final sigma).
    static func lowercase(_ s: String) -> String {
        if isASCII(s) { return s.lowercased() }
        // Build UTF-8 bytes: appending to a UnicodeScalarView copies on every call here.
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + 8)
        for c in s.unicodeScalars {
            let v = c.value
            if v < 128 {
                out.append(UInt8(v >= 65 && v <= 90 ? v + 32 : v))
            } else if c.properties.changesWhenLowercased {
                out.append(contentsOf: c.properties.lowercaseMapping.utf8)
            } else {
                out.append(contentsOf: UTF8.encode(c)!)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
    static func isASCII(_ s: String) -> Bool { s.utf8.allSatisfy { $0 < 0x80 } }
    /// Scalars below U+0300 are unchanged by NFC.
    static func isLatin1(_ s: String) -> Bool { s.utf8.allSatisfy { $0 < 0xCC } }
    static func isChinese(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B920...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }
}

/// `{"String": "…"}` or `{"Regex": "…"}` as used by Split, Replace and the Replace decoder.
enum Pattern: Sendable {
    case literal([UInt32])
    case regex(BoundedRegex)

    static func load(_ n: Node) throws(TokenizerError) -> Pattern {
        if let s = try n.optionalString("String") {
            guard !s.isEmpty else { throw n.fail("empty String pattern") }
            return .literal(s.unicodeScalars.map(\.value))
        }
        if let r = try n.optionalString("Regex") {
            do { return .regex(try BoundedRegex(r)) } catch {
                throw TokenizerError.unsupportedRegex(file: n.file, path: n.path + ".Regex", pattern: r, reason: error.reason)
            }
        }
        throw n.fail("expected {\"String\": …} or {\"Regex\": …}")
    }

    var source: String {
        switch self {
        case let .literal(u): return String(scalars: u.compactMap(Unicode.Scalar.init))
        case let .regex(r): return r.pattern
        }
    }

    /// Non-overlapping matches as scalar index ranges. A regex that exceeds its work bound
    /// reports no further matches (see `Tokenizer.encodeChecked` for the throwing variant).
    func matches(_ u: [UInt32]) throws(TokenizerError) -> [Range<Int>] {
        switch self {
        case let .literal(p):
            var out: [Range<Int>] = []
            var i = 0
            guard p.count <= u.count else { return [] }
            while i + p.count <= u.count {
                if u[i] == p[0] && u[i..<(i + p.count)].elementsEqual(p) { out.append(i..<(i + p.count)); i += p.count } else { i += 1 }
            }
            return out
        case let .regex(r):
            do { return try r.matches(in: u) } catch {
                throw TokenizerError.regexBudgetExceeded(pattern: r.pattern, position: error.position)
            }
        }
    }

    func replaceAll(in s: String, with content: String) -> String {
        if case let .literal(p) = self, p.count == 1, p[0] < 128 {
            let b = UInt8(p[0])
            if !s.utf8.contains(b) { return s }
        }
        let u = s.unicodeScalars.map(\.value)
        let ms = (try? matches(u)) ?? []
        if ms.isEmpty { return s }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + content.utf8.count * ms.count)
        func put(_ r: ArraySlice<UInt32>) { for v in r { out.append(contentsOf: UTF8.encode(Unicode.Scalar(v)!)!) } }
        var last = 0
        for m in ms {
            put(u[last..<m.lowerBound])
            out.append(contentsOf: content.utf8)
            last = m.upperBound
        }
        put(u[last...])
        return String(decoding: out, as: UTF8.self)
    }
}

/// GPT-2's reversible byte ↔ printable-character table (`bytes_to_unicode`).
enum ByteLevelMap {
    /// byte → the scalar standing for it.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + n
                n += 1
            }
        }
        return table
    }()
    /// UTF-8 of each byte's stand-in character (1 or 2 bytes).
    static let byteToUTF8: [[UInt8]] = byteToScalar.map { Array(String(Unicode.Scalar($0)!).utf8) }
    static let scalarToByte: [UInt32: UInt8] = {
        var d: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { d[s] = UInt8(b) }
        return d
    }()

    static func map(_ bytes: some Collection<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(contentsOf: byteToUTF8[Int(b)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
