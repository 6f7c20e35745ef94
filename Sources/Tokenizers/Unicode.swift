/// Character classes shared by the pre-tokenizers, normalizers and the regex engine, with an
/// ASCII table in front of the Unicode property lookups (those are the hot path).
enum UClass {
    static let asciiLetter: [Bool] = (0..<128).map { (65...90).contains($0) || (97...122).contains($0) }

    /// `\p{L}`: Lu, Ll, Lt, Lm, Lo.
    @inline(__always) static func isLetter(_ v: UInt32) -> Bool {
        if v < 128 { return asciiLetter[Int(v)] }
        guard let s = Unicode.Scalar(v) else { return false }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
    /// `\p{N}`: Nd, Nl, No (Rust `char::is_numeric` is the same set).
    @inline(__always) static func isNumber(_ v: UInt32) -> Bool {
        if v < 128 { return v >= 48 && v <= 57 }
        guard let s = Unicode.Scalar(v) else { return false }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }
    /// `\s` in Oniguruma and Rust `regex`, and Rust `char::is_whitespace`: the White_Space property.
    @inline(__always) static func isSpace(_ v: UInt32) -> Bool {
        if v < 128 { return v == 32 || (v >= 9 && v <= 13) }
        if v == 0x85 || v == 0xA0 || v == 0x1680 || (v >= 0x2000 && v <= 0x200A) || v == 0x2028 || v == 0x2029
            || v == 0x202F || v == 0x205F || v == 0x3000 { return true }
        return false
    }
    /// `\w` (Unicode): Alphabetic, marks, decimal digits, connector punctuation, join controls.
    static func isWord(_ v: UInt32) -> Bool {
        if v < 128 { return asciiLetter[Int(v)] || (v >= 48 && v <= 57) || v == 95 }
        guard let s = Unicode.Scalar(v) else { return false }
        let p = s.properties
        if p.isAlphabetic || p.isJoinControl { return true }
        switch p.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }
    /// `\d` (Unicode Nd).
    static func isDigit(_ v: UInt32) -> Bool {
        if v < 128 { return v >= 48 && v <= 57 }
        return Unicode.Scalar(v)?.properties.generalCategory == .decimalNumber
    }
    static func isMark(_ v: UInt32) -> Bool {
        guard v >= 0x300, let s = Unicode.Scalar(v) else { return false }
        switch s.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark: return true
        default: return false
        }
    }
    /// BERT's punctuation: ASCII punctuation (including symbols like `$+<=>^`|~`) or Unicode P*.
    static func isBertPunctuation(_ v: UInt32) -> Bool {
        if v < 128 { return (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) }
        guard let s = Unicode.Scalar(v) else { return false }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .closePunctuation, .finalPunctuation, .initialPunctuation,
             .otherPunctuation, .openPunctuation: return true
        default: return false
        }
    }
    /// Unicode "Other" (Cc, Cf, Cn, Co, Cs), as the `unicode_categories` crate's `is_other`.
    /// (`unicode_categories`' tables do not list unassigned code points, so BERT keeps them.)
    static func isOther(_ v: UInt32, unassigned: Bool = true) -> Bool {
        guard let s = Unicode.Scalar(v) else { return true }
        switch s.properties.generalCategory {
        case .unassigned: return unassigned
        case .control, .format, .privateUse, .surrogate: return true
        default: return false
        }
    }
}

extension String {
    /// Builds a string from scalars without going through Character.
    init(scalars: some Sequence<Unicode.Scalar>) {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars)
        self = String(s)
    }
}
