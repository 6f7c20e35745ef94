import Foundation
import AssayCommon
import Models
import Pipeline
import Probes
import Provenance
import Reports
import Scan
import Tokenizers

public struct SweepOptions: Sendable {
    /// Rescan entries whose inputs are unchanged since their last good result.
    public var force = false
    public var shard = 0
    public var shards = 1
    /// Shards of one sweep share this id (nil: resume this inventory's unfinished run or start one).
    public var runID: String?
    public var scan = ScanOptions()
    /// Write each scanned entry's reports to `out/<run>/<entry>/`.
    public var out: URL?
    /// Upper bound on the memory kept for reusing base outputs across entries.
    public var baseOutputBytes = 4 << 30
    public init() {}
}

/// What a sweep did.
public struct SweepOutcome: Sendable {
    public var runID: String
    public var resumed: Bool
    public var results: [EntryResult]
    /// Base-side variant measurements reused from an earlier entry / computed.
    public var baseReuse: (hits: Int, misses: Int)
    public var seconds: Double

    /// 0 every entry passes or warns, 1 any fails, 3 nothing could be scanned (every entry an
    /// error), 2 some entry is an error and none fails.
    public var exitCode: Int32 {
        if results.isEmpty || results.allSatisfy({ $0.status == "error" }) { return 3 }
        if results.contains(where: { $0.verdict == "fail" }) { return 1 }
        if results.contains(where: { $0.status == "error" }) { return 2 }
        return 0
    }
}

/// Runs an inventory's entries (or one shard of them): provenance and scan per entry, each base's
/// outputs computed once and reused by every entry on it, unchanged entries skipped, every result
/// committed as it completes, a failing entry recorded as an error while the rest go on.
public final class SweepRunner {
    public let inventory: Inventory
    public let store: HistoryStore
    public let options: SweepOptions
    public var say: (String) -> Void = { _ in }
    /// One line per finished entry.
    public var line: (String) -> Void = { _ in }
    let shared: SharedScanResources
    /// Audits (every file hashed) by directory, made once per sweep: entries on one base share it.
    var audits: [String: AuditReport] = [:]

    public init(inventory: Inventory, store: HistoryStore, options: SweepOptions) {
        self.inventory = inventory
        self.store = store
        self.options = options
        shared = SharedScanResources(byteBudget: options.baseOutputBytes)
    }

    public static func now() -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: Date())
    }

    public func run() throws(SweepError) -> SweepOutcome {
        let started = Date()
        let entries = inventory.shard(options.shard, of: options.shards)
        // Resume this inventory's unfinished run of this shard, unless an id is given.
        var resumed = false
        let runID: String
        if let id = options.runID {
            runID = id
            resumed = try store.runs().contains { $0.id == id && $0.shard == options.shard }
        } else if let open = try store.runs(inventory: inventory.file.path).last(where: { $0.shard == options.shard && $0.shards == options.shards }),
                  open.finishedAt == nil {
            runID = open.id
            resumed = true
        } else {
            runID = Self.newRunID()
        }
        let host = ProcessInfo.processInfo.hostName
        try store.beginRun(RunInfo(id: runID, shard: options.shard, shards: options.shards, inventory: inventory.file.path,
                                   startedAt: Self.now(), finishedAt: nil, host: host, entries: entries.count),
                           inventorySHA256: inventory.sha256, toolVersion: ScanPipeline.toolVersion)
        let done = Dictionary(try store.results(run: runID).map { ($0.entryID, $0) }, uniquingKeysWith: { a, _ in a })
        if resumed { say("resuming run \(runID): \(entries.filter { done[$0.id] != nil }.count) of \(entries.count) entries already recorded") }
        else { say("run \(runID): \(entries.count) entries\(options.shards > 1 ? " (shard \(options.shard + 1) of \(options.shards))" : "")") }

        var results: [EntryResult] = []
        for entry in entries {
            if let r = done[entry.id] {
                results.append(r)
                line(Self.summaryLine(r, resumed: true))
                continue
            }
            let before = PhaseProfile.shared.snapshot().seconds
            let r = process(entry, runID: runID)
            if PhaseProfile.shared.enabled {
                // ASSAY_PROFILE=1: where this entry's time went (what base sharing can and cannot save).
                let after = PhaseProfile.shared.snapshot().seconds
                // Stages only (the model's own phases, gemm.* and the like, run inside them).
                let stages = ["load", "weights", "statistics", "reports", "scan.", "sweep.", "discovery.", "inversion."]
                let phases = after.filter { k in stages.contains { k.key.hasPrefix($0) } }.map { ($0.key, $0.value - (before[$0.key] ?? 0)) }
                    .filter { $0.1 >= 0.05 }.sorted { $0.1 > $1.1 }
                let other = r.seconds - phases.reduce(0) { $0 + $1.1 }
                say("\(entry.id): profile " + (phases + [("other", other)]).map { String(format: "%@ %.1f s", $0.0, $0.1) }.joined(separator: ", "))
            }
            try store.record(r, run: runID)
            results.append(r)
            line(Self.summaryLine(r, resumed: false))
        }
        try store.finishRun(runID, shard: options.shard, at: Self.now())
        return SweepOutcome(runID: runID, resumed: resumed, results: results, baseReuse: shared.reuse,
                            seconds: Date().timeIntervalSince(started))
    }

    static func newRunID() -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.timeZone = TimeZone(identifier: "UTC")
        return "sweep-\(f.string(from: Date()))-\(String(UInt32.random(in: 0...0xFFFF), radix: 16))"
    }

    public static func summaryLine(_ r: EntryResult, resumed: Bool) -> String {
        let what: String
        switch r.status {
        case "error": return "ERROR \(r.entryID): \(r.message ?? "")"
        case "skipped": what = "unchanged since \(r.reusedFrom ?? "?")"
        default: what = String(format: "scanned in %.1f s", r.seconds)
        }
        let top = r.findings.first.map { " — \($0.severity): \($0.title)" } ?? ""
        return "\((r.verdict ?? "?").uppercased().padding(toLength: 5, withPad: " ", startingAt: 0)) \(r.entryID) (\(what)\(resumed ? ", recorded earlier in this run" : ""); \(r.findings.count) finding(s))\(top)"
    }

    /// The suites, trigger file and policy an entry uses (built-ins when the inventory names none).
    func inputs(_ e: Inventory.Entry) throws -> (suites: [URL], triggers: URL, policy: URL?) {
        let builtin = SuiteLoader.builtinDirectory()
        let suites = e.suites.isEmpty ? [builtin?.appendingPathComponent("default.jsonl")].compactMap { $0 } : e.suites
        guard !suites.isEmpty, let triggers = e.triggers ?? builtin?.appendingPathComponent("triggers.jsonl") else {
            throw ScanError.invalidInput("no suites given and the built-in probes/ directory was not found")
        }
        return (suites, triggers, e.policy)
    }

    static func sha256(file url: URL, role: String) throws -> StoredFile {
        guard let d = FileManager.default.contents(atPath: url.path) else {
            throw ScanError.invalidInput("\(role) \(url.path.terminalSafe): cannot read the file")
        }
        return StoredFile(role: role, path: url.path, sha256: d.withUnsafeBytes { Inspector.sha256Hex($0) })
    }

    /// Everything an entry's result depends on, as files (role, path, sha256).
    func fingerprintFiles(_ e: Inventory.Entry, audits: inout [String: AuditReport]) throws -> [StoredFile] {
        var dirs: [(String, URL)] = [("base", e.base)]
        if let t = e.tuned { dirs.append(("tuned", t)) }
        for (i, a) in e.adapters.enumerated() { dirs.append((e.adapters.count == 1 ? "adapter" : "adapter \(i + 1)", a)) }
        var files: [StoredFile] = []
        for (role, dir) in dirs {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
                throw ScanError.invalidInput("\(role) \(dir.path.terminalSafe): no such directory")
            }
            let audit = try audits[dir.path] ?? Auditor.audit(dir)
            audits[dir.path] = audit
            for f in audit.files { if let h = f.sha256 { files.append(StoredFile(role: role, path: f.path, sha256: h)) } }
        }
        let (suites, triggers, policy) = try inputs(e)
        for s in suites { files.append(try Self.sha256(file: s, role: "suite")) }
        files.append(try Self.sha256(file: triggers, role: "triggers"))
        if let policy { files.append(try Self.sha256(file: policy, role: "policy")) }
        if let m = e.manifest { files.append(try Self.sha256(file: m, role: "manifest")) }
        return files
    }

    func key(files: [StoredFile], baseline: Baseline?) -> String {
        let o = options.scan
        var text = "assay \(ScanPipeline.toolVersion)\nseed \(o.seed) k \(o.responseTokens) ppt \(o.probesPerTrigger) modes \(o.modes.map(\.rawValue).sorted())\n"
        for f in files.sorted(by: { ($0.role, $0.path) < ($1.role, $1.path) }) { text += "\(f.role)\u{0}\(f.path)\u{0}\(f.sha256)\n" }
        if let b = baseline { text += "baseline \(b.approvedAt)\n" }
        return Array(text.utf8).withUnsafeBytes { Inspector.sha256Hex($0) }
    }

    func process(_ e: Inventory.Entry, runID: String) -> EntryResult {
        let t0 = Date()
        var result = EntryResult(entryID: e.id, status: "error", verdict: nil, key: "", message: nil, seconds: 0, finishedAt: "",
                                 reusedFrom: nil, owner: e.owner, tags: e.tags, report: nil, findings: [], files: [], divergences: [])
        do {
            let files = try PhaseProfile.shared.measure("sweep.audit") { try fingerprintFiles(e, audits: &audits) }
            result.files = files
            let baseline = try store.baseline(entry: e.id)
            result.key = key(files: files, baseline: baseline)
            if !options.force, let (run, prev) = try store.lastGood(entry: e.id, key: result.key) {
                var r = prev
                r.status = "skipped"
                r.reusedFrom = run
                r.seconds = Date().timeIntervalSince(t0)
                r.finishedAt = Self.now()
                r.owner = e.owner
                r.tags = e.tags
                return r
            }
            say("\(e.id): scanning")
            let (suites, triggers, policyURL) = try inputs(e)
            var job = ScanJob(base: e.base, tuned: e.tuned, adapters: e.adapters)
            job.suites = suites
            job.triggers = triggers
            job.policy = policyURL
            job.manifest = e.manifest
            job.options = options.scan
            job.preaudited = audits
            let outcome = try ScanPipeline.run(job, shared: shared, say: { [say] in say("\(e.id): \($0)") })
            var report = outcome.report
            if let baseline {
                let drift = try PhaseProfile.shared.measure("sweep.baseline") {
                    try checkDrift(e, baseline: baseline, files: files, policy: report.policy, suites: suites)
                }
                if !drift.isEmpty {
                    report.findings += drift
                    report.findings.sort { ($0.severity, $0.kind, $0.value) > ($1.severity, $1.kind, $1.value) }
                    report.verdict = ScanPipeline.verdictOf(report.findings, policy: report.policy)
                    var bySeverity: [String: Int] = [:]
                    for f in report.findings { bySeverity[f.severity.rawValue, default: 0] += 1 }
                    report.summary.findingsBySeverity = bySeverity
                }
            }
            if let out = options.out {
                try ReportWriter.write(report, to: out.appendingPathComponent(runID).appendingPathComponent(Self.safeName(e.id)))
            }
            result.status = "scanned"
            result.verdict = report.verdict
            result.report = String(decoding: try report.json(), as: UTF8.self)
            result.findings = report.findings.map {
                StoredFinding(kind: $0.kind, severity: $0.severity.rawValue, title: $0.title, trigger: $0.trigger, category: $0.category,
                              value: $0.value, pValue: $0.pValue)
            }
            result.divergences = report.categories.map { StoredDivergence(category: $0.name, n: $0.n, mean: $0.divergence, ciLow: $0.ciLow, ciHigh: $0.ciHigh) }
        } catch {
            result.status = "error"
            result.verdict = nil
            result.message = "\(error)".terminalSafe
        }
        result.seconds = Date().timeIntervalSince(t0)
        result.finishedAt = Self.now()
        return result
    }

    /// A file-system-safe directory name for an entry id.
    static func safeName(_ id: String) -> String {
        String(id.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) ? Character($0) : "_" })
    }

    /// The entry's current model against its approved fingerprint.
    func checkDrift(_ e: Inventory.Entry, baseline: Baseline, files: [StoredFile], policy: ScanPolicy, suites: [URL]) throws -> [Scan.Finding] {
        let model = try ModelLoader.load(e.tuned ?? e.base, adapters: e.adapters)
        let tokenizer = try Tokenizer.load(directory: e.base)
        let probes = try suites.flatMap { try SuiteLoader.loadProbes($0).probes }
        let d = try BaselineCheck.measure(baseline.fingerprint, model: model, encoder: TemplateEncoder(tokenizer: tokenizer), probes: probes)
        let weightRoles = Set(["base", "tuned"] + files.map(\.role).filter { $0.hasPrefix("adapter") })
        let now = Set(files.filter { weightRoles.contains($0.role) })
        let then = Set(baseline.files)
        let changed = Set(now.symmetricDifference(then).map { "\($0.role): \($0.path)" }).sorted()
        return try BaselineCheck.findings(d, changedFiles: changed, approvedAt: baseline.approvedAt, policy: policy, seed: options.scan.seed)
    }

    /// Approves the entry's current model: its behavioural fingerprint and weight hashes.
    public func approve(_ id: String, by who: String) throws -> Baseline {
        guard let e = inventory.entries.first(where: { $0.id == id }) else { throw SweepError.unknownEntry(id) }
        var audits: [String: AuditReport] = [:]
        let files = try fingerprintFiles(e, audits: &audits)
        for (dir, a) in audits where a.verdict == .fail {
            throw ScanError.invalidInput("\(dir.terminalSafe) fails the provenance audit; not approving it")
        }
        let (suites, _, _) = try inputs(e)
        let loaded = try suites.map { try SuiteLoader.loadProbes($0) }
        let model = try ModelLoader.load(e.tuned ?? e.base, adapters: e.adapters)
        let tokenizer = try Tokenizer.load(directory: e.base)
        let fp = try BaselineCheck.capture(model: model, encoder: TemplateEncoder(tokenizer: tokenizer), probes: loaded.flatMap(\.probes),
                                           suites: Dictionary(loaded.map { ($0.name, $0.sha256) }, uniquingKeysWith: { a, _ in a }),
                                           responseTokens: options.scan.responseTokens)
        let weightRoles: Set<String> = ["base", "tuned"]
        let b = Baseline(id: 0, entryID: id, approvedAt: Self.now(), approvedBy: who,
                         files: files.filter { weightRoles.contains($0.role) || $0.role.hasPrefix("adapter") }, fingerprint: fp)
        try store.approve(b)
        return b
    }
}
