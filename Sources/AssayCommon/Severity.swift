/// How serious a finding is, in increasing order. Audits, scans and reports share this scale;
/// a policy fails a run when a finding is at or above its failing severity.
public enum Severity: String, Codable, Comparable, CaseIterable, Sendable {
    case info, low, medium, high, critical

    private var rank: Int { Severity.allCases.firstIndex(of: self)! }

    public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
}
