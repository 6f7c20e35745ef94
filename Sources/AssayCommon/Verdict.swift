/// The outcome of a scan or a sweep entry's scan (the rule is `Verdict(findings:policy:)` in
/// Scan). Raw values are the JSON and history spelling.
public enum Verdict: String, Codable, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    case pass, warn, fail

    public var description: String { rawValue }

    private var rank: Int { Verdict.allCases.firstIndex(of: self)! }
    public static func < (a: Verdict, b: Verdict) -> Bool { a.rank < b.rank }
}
