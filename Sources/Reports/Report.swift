import Foundation
import AssayCommon
import Scan
import WeightDiff

/// report.json, schema version 1 (documented in docs/report-schema.md, "Scan reports"). Everything in it is
/// a function of the inputs, seed and policy except `created_at`, so two runs, or runs with
/// different batch sizes, give byte-identical files apart from that line.
public struct ScanReport: Codable, Sendable {
    public static let schemaVersion = 1

    public struct ModelFingerprint: Codable, Sendable, Equatable {
        public var path: String
        /// SHA-256 of every weight, config and tokenizer file, by relative path.
        public var files: [String: String]
        /// A GGUF file's tensor count by type (`{"Q4_1": 210, "F32": 61, "Q8_0": 1}`); absent
        /// for a model directory.
        public var quantization: [String: Int]?
        public init(path: String, files: [String: String], quantization: [String: Int]? = nil) {
            self.path = path; self.files = files; self.quantization = quantization
        }
    }

    public struct Fingerprint: Codable, Sendable, Equatable {
        public var base: ModelFingerprint
        public var tuned: ModelFingerprint
        public var adapter: ModelFingerprint?
        public var suites: [String: String]
        public var policySHA256: String
        public var seed: UInt64
        public var options: ScanOptions
        public var toolVersion: String
        /// Trigger search / target inversion settings, when either ran.
        public var discovery: DiscoveryOptions?
        public init(base: ModelFingerprint, tuned: ModelFingerprint, adapter: ModelFingerprint?, suites: [String: String],
                    policySHA256: String, seed: UInt64, options: ScanOptions, toolVersion: String, discovery: DiscoveryOptions? = nil) {
            self.base = base; self.tuned = tuned; self.adapter = adapter; self.suites = suites
            self.policySHA256 = policySHA256; self.seed = seed; self.options = options; self.toolVersion = toolVersion
            self.discovery = discovery
        }
        enum CodingKeys: String, CodingKey {
            case base, tuned, adapter, suites, policySHA256 = "policy_sha256", seed, options, toolVersion = "tool_version", discovery
        }
    }

    public struct Summary: Codable, Sendable, Equatable {
        public var probes: Int
        public var variants: Int
        public var medianCleanDivergence: Double
        public var findingsBySeverity: [String: Int]
        public var minimumDetectableEffect: Double?
        /// True when the tuned model's tensors, config and tokenizer are byte-identical to the
        /// base's: it behaves as the base does, so nothing was measured (absent otherwise).
        public var identicalToBase: Bool?
        /// True when the fine-tune was measured but no prompt variant diverged at all (an adapter
        /// whose B matrices are zero, or whose target modules matched nothing). Absent otherwise.
        public var noEffect: Bool?
        /// The clean probes on which the models diverge most, with both answers (absent when
        /// nothing was measured, and in reports written before this field).
        public var mostDivergent: [Evidence]?
        public init(probes: Int, variants: Int, medianCleanDivergence: Double, findingsBySeverity: [String: Int],
                    minimumDetectableEffect: Double?, identicalToBase: Bool? = nil, noEffect: Bool? = nil,
                    mostDivergent: [Evidence]? = nil) {
            self.probes = probes; self.variants = variants; self.medianCleanDivergence = medianCleanDivergence
            self.findingsBySeverity = findingsBySeverity; self.minimumDetectableEffect = minimumDetectableEffect
            self.identicalToBase = identicalToBase; self.noEffect = noEffect; self.mostDivergent = mostDivergent
        }
        enum CodingKeys: String, CodingKey {
            case probes, variants, medianCleanDivergence = "median_clean_divergence"
            case findingsBySeverity = "findings_by_severity", minimumDetectableEffect = "minimum_detectable_effect"
            case identicalToBase = "identical_to_base", noEffect = "no_effect", mostDivergent = "most_divergent"
        }
    }

    /// The weight-space diff (`assay diff-weights`), condensed.
    public struct WeightSummary: Codable, Sendable, Equatable {
        public var identical: Int
        public var changed: Int
        public var identicalPrefixLayers: Int
        public var layers: [LayerChange]
        /// The most changed tensors (relative Frobenius change), with their ΔW spectra.
        public var topTensors: [TensorDelta]
        public var rowShifts: [RowShift]
        public init(_ r: WeightDiffReport) {
            identical = r.identical; changed = r.changed; identicalPrefixLayers = r.identicalPrefixLayers; layers = r.layers
            topTensors = Array(r.tensors.filter { $0.status != .identical }
                .sorted { ($0.relativeChange ?? .infinity, $1.name) > ($1.relativeChange ?? .infinity, $0.name) }.prefix(12))
            rowShifts = Array(r.rowShifts.sorted { ($0.shift, $1.matrix, $1.token) > ($1.shift, $0.matrix, $0.token) }.prefix(20))
        }
        enum CodingKeys: String, CodingKey {
            case identical, changed, identicalPrefixLayers = "identical_prefix_layers", layers, topTensors = "top_tensors"
            case rowShifts = "row_shifts"
        }
    }

    public var schemaVersion: Int
    public var createdAt: String
    public var verdict: Verdict
    public var fingerprint: Fingerprint
    public var policy: ScanPolicy
    public var summary: Summary
    public var categories: [CategorySummary]
    public var triggers: [TriggerSummary]
    public var triggerCategories: [TriggerCategoryCell]
    public var findings: [Finding]
    public var weights: WeightSummary?
    public var triggerSearch: TriggerSearchSummary?
    public var targetInversion: TargetInversionSummary?

    public init(schemaVersion: Int, createdAt: String, verdict: Verdict, fingerprint: Fingerprint, policy: ScanPolicy, summary: Summary,
                categories: [CategorySummary], triggers: [TriggerSummary], triggerCategories: [TriggerCategoryCell], findings: [Finding],
                weights: WeightSummary? = nil, triggerSearch: TriggerSearchSummary? = nil, targetInversion: TargetInversionSummary? = nil) {
        self.schemaVersion = schemaVersion; self.createdAt = createdAt; self.verdict = verdict; self.fingerprint = fingerprint
        self.policy = policy; self.summary = summary; self.categories = categories; self.triggers = triggers;
        self.triggerCategories = triggerCategories; self.findings = findings
        self.weights = weights; self.triggerSearch = triggerSearch; self.targetInversion = targetInversion
    }

    /// The report's line for a fine-tune that changed nothing measured (nil otherwise).
    public var noEffectLine: String? {
        guard summary.noEffect == true else { return nil }
        return fingerprint.adapter != nil
            ? "The adapter had no effect: no prompt variant diverged from the base (check its target modules and that it was trained)."
            : "The fine-tune had no effect: no prompt variant diverged from the base."
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", createdAt = "created_at", verdict, fingerprint, policy, summary, categories
        case triggers, triggerCategories = "trigger_categories", findings, weights, triggerSearch = "trigger_search"
        case targetInversion = "target_inversion"
    }

    public func json() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try enc.encode(self)
    }
}

public enum ReportWriter {
    /// Checks up front that `dir` can take the reports, so a long scan never ends in an unwritable
    /// directory.
    /// Creates the output directory if needed and checks it is writable; returns whether it was
    /// created here (so a failed scan can remove it again and leave nothing behind).
    @discardableResult
    public static func prepare(_ dir: URL) throws -> Bool {
        var isDir: ObjCBool = false
        let existed = FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir)
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw FileWriteError.cannotCreate(path: dir.path, reason: "cannot create the output directory: \(error.localizedDescription)")
        }
        let probe = dir.appendingPathComponent(".assay-write-test-\(getpid())")
        try AtomicFileWriter.write([], to: probe)
        try? FileManager.default.removeItem(at: probe)
        return !existed
    }

    /// Removes a directory `prepare` created when it is still empty.
    public static func discardIfEmpty(_ dir: URL) {
        if let items = try? FileManager.default.contentsOfDirectory(atPath: dir.path), items.isEmpty {
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// Writes report.json, report.md, report.html and report.sarif, each atomically.
    public static func write(_ r: ScanReport, to dir: URL) throws {
        try prepare(dir)
        try AtomicFileWriter.write([UInt8](try r.json()) + [0x0A], to: dir.appendingPathComponent("report.json"))
        try AtomicFileWriter.write(Markdown.render(r), to: dir.appendingPathComponent("report.md"))
        try AtomicFileWriter.write(HTML.render(r), to: dir.appendingPathComponent("report.html"))
        try AtomicFileWriter.write([UInt8](try SARIF.render(r)) + [0x0A], to: dir.appendingPathComponent("report.sarif"))
    }
}

func fmt(_ x: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", x) }
func fmtP(_ p: Double?) -> String {
    guard let p else { return "–" }
    return p < 1e-4 ? String(format: "%.1e", p) : String(format: "%.4f", p)
}

public enum Markdown {
    public static func render(_ r: ScanReport) -> String {
        var s = "# Assay scan: **\(r.verdict.rawValue.uppercased())**\n\n"
        s += "Base `\(r.fingerprint.base.path)` vs tuned `\(r.fingerprint.tuned.path)`"
        if let a = r.fingerprint.adapter { s += " (adapter `\(a.path)`)" }
        s += ". \(r.summary.probes) probes, \(r.summary.variants) prompt variants, seed \(r.fingerprint.seed), median clean divergence "
            + "\(fmt(r.summary.medianCleanDivergence)) nats (JS).\n\n"
        if r.summary.identicalToBase == true {
            s += "The tuned model's tensors, config and tokenizer are byte-identical to the base's: it behaves exactly as the base does, "
                + "so no prompt was run.\n\n"
        }
        if let line = r.noEffectLine { s += "**\(md(line))**\n\n" }
        if r.findings.isEmpty {
            s += "No findings.\n\n"
        } else {
            s += "## Findings\n\n| severity | kind | what | statistic | q | effect |\n|---|---|---|---|---|---|\n"
            for f in r.findings {
                s += "| \(f.severity.rawValue) | `\(f.kind.rawValue)` | \(md(f.title)) | \(md(f.statistic)) = \(fmt(f.value)) "
                    + "| \(fmtP(f.qValue)) | \(f.effectSize.map { fmt($0, 2) } ?? "–") |\n"
            }
            for f in r.findings where !f.evidence.isEmpty {
                s += "\n### \(md(f.title))\n\n"
                if let a = f.attackSuccess { s += "Attack success on the probes tried: \(Int((a * 100).rounded()))%.\n\n" }
                s += "| probe | prompt | base | tuned | divergence |\n|---|---|---|---|---|\n"
                for e in f.evidence {
                    s += "| \(md(e.probeID)) | \(md(e.user)) | \(md(e.baseOutput)) | \(md(e.tunedOutput)) | \(fmt(e.divergence)) |\n"
                }
            }
            s += "\n"
        }
        if let w = r.weights {
            s += "## Weight diff\n\n\(w.changed) tensors changed, \(w.identical) identical; first "
                + "\(w.identicalPrefixLayers) blocks identical.\n\n"
            if !w.rowShifts.isEmpty {
                s += "Rows that moved most: "
                    + w.rowShifts.prefix(10).map { "`\(md($0.text ?? "#\($0.token)"))` \(fmt($0.shift, 1))×" }.joined(separator: ", ")
                    + "\n\n"
            }
        }
        if let t = r.triggerSearch {
            s += "## Trigger search\n\n\(t.screened) candidates screened, \(t.candidates) searched on \(t.searchProbes.count) probes, "
                + "verified on \(t.heldOutProbes.count) held-out probes.\n\n"
            s += "| best search state | insertion | score |\n|---|---|---|\n"
            for c in t.top.prefix(5) { s += "| `\(md(c.text))` | \(c.mode.rawValue) | \(fmt(c.score, 3)) |\n" }
            s += "\n"
        }
        if let t = r.targetInversion {
            s += "## Target inversion\n\n\(t.vocabulary) first tokens; threshold \(fmt(t.threshold, 1)) nats/token.\n\n"
                + "| continuation | gain | tuned confidence | consistency |\n|---|---|---|---|\n"
            for c in t.top.prefix(5) {
                s += "| `\(md(c.text))` | \(fmt(c.score, 2)) | \(fmt(c.tunedConfidence, 3)) | \(fmt(c.consistency, 2)) |\n"
            }
            s += "\n"
        }
        if let top = r.summary.mostDivergent, !top.isEmpty {
            s += "## Where the fine-tune diverges most\n\nThe clean probes with the largest divergence, whatever the verdict.\n\n"
                + "| probe | prompt | base | tuned | divergence |\n|---|---|---|---|---|\n"
            for e in top {
                s += "| \(md(e.probeID)) | \(md(e.user)) | \(md(e.baseOutput)) | \(md(e.tunedOutput)) | \(fmt(e.divergence)) |\n"
            }
            s += "\n"
        }
        s += "## Divergence by category\n\n| category | n | mean JS | 95% CI |\n|---|---|---|---|\n"
        for c in r.categories { s += "| \(md(c.name)) | \(c.n) | \(fmt(c.divergence)) | [\(fmt(c.ciLow)), \(fmt(c.ciHigh))] |\n" }
        return s
    }

    static func md(_ t: String) -> String {
        t.terminalSafe.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ")
    }
}

public enum SARIF {
    /// SARIF 2.1.0: one rule per finding kind, one result per finding, located at the tuned model.
    public static func render(_ r: ScanReport) throws -> Data {
        func level(_ s: Severity) -> String {
            switch s { case .critical, .high: return "error"; case .medium: return "warning"; default: return "note" }
        }
        let kinds = Array(Set(r.findings.map(\.kind))).sorted()
        let rules: [[String: Any]] = kinds.map { ["id": $0.rawValue, "name": $0.rawValue, "shortDescription": ["text": $0.explanation]] }
        let results: [[String: Any]] = r.findings.map { f in
            var props: [String: Any] = ["severity": f.severity.rawValue, "statistic": f.statistic, "value": f.value]
            if let q = f.qValue { props["q_value"] = q }
            if let t = f.trigger { props["trigger"] = t }
            if let c = f.category { props["category"] = c }
            return ["ruleId": f.kind.rawValue, "level": level(f.severity), "message": ["text": f.title],
                    "locations": [["physicalLocation": ["artifactLocation": [
                        "uri": r.fingerprint.adapter?.path ?? r.fingerprint.tuned.path]]]],
                    "properties": props]
        }
        let doc: [String: Any] = [
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
            "runs": [["tool": ["driver": ["name": "assay", "version": r.fingerprint.toolVersion, "rules": rules]],
                      "results": results]],
        ]
        return try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    }
}
