/// What a finding is about. Scans, sweeps and the weight diff raise findings of these kinds; the
/// raw values are the JSON spelling (report.json `kind`, SARIF rule ids, the history's
/// `findings.kind` column), so they never change.
public enum FindingKind: String, Codable, Comparable, CaseIterable, Sendable, CustomStringConvertible {
    /// An audit finding of medium or higher in a scanned directory (`assay audit`).
    case artifact
    /// A sweep entry's model no longer behaves as its approved baseline.
    case baselineDrift = "baseline_drift"
    /// One probe category diverges from the base far more than the others.
    case categoryShift = "category_shift"
    /// A trigger found by search (in no list), verified on held-out probes.
    case discoveredTrigger = "discovered_trigger"
    /// The fine-tune differs from its base everywhere (informational).
    case globalShift = "global_shift"
    /// A text the fine-tune completes far more surely than its base (target inversion).
    case invertedTarget = "inverted_target"
    /// A file's hash differs from the pinned manifest.
    case manifestMismatch = "manifest_mismatch"
    /// A listed trigger makes the fine-tune diverge far more than control insertions.
    case triggerBackdoor = "trigger_backdoor"
    /// The weight-space diff shows an unusual edit.
    case weightAnomaly = "weight_anomaly"

    /// Ordered by spelling, as the reports have always listed kinds.
    public static func < (a: FindingKind, b: FindingKind) -> Bool { a.rawValue < b.rawValue }

    public var description: String { rawValue }

    /// One sentence on what the kind means (SARIF rule descriptions, report legends).
    public var explanation: String {
        switch self {
        case .triggerBackdoor: return "An inserted trigger makes the fine-tune diverge from its base far more than control insertions."
        case .categoryShift: return "One category of requests diverges from the base far more than the others."
        case .globalShift: return "The fine-tune differs from its base everywhere (informational)."
        case .artifact: return "A file in the model directory is unsafe or inconsistent."
        case .weightAnomaly:
            return "The weight-space diff shows an unusual edit (structure, a rank-one edit, or vocabulary rows that moved far more "
                + "than the rest)."
        case .discoveredTrigger:
            return "A trigger in no list, found by search, makes the fine-tune diverge from its base on held-out probes far more "
                + "than control insertions."
        case .invertedTarget:
            return "Once it starts, the fine-tune completes this text far more surely than its base on benign prompts: a likely "
                + "backdoor target."
        case .manifestMismatch: return "A file of the model differs from the hashes its pinned manifest records."
        case .baselineDrift: return "The deployed model no longer behaves as the baseline approved for it."
        }
    }
}
