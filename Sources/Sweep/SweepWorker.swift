import Foundation
import AssayCommon
import History
import Models
import Pipeline
import Probes
import Provenance
import Reports
import Scan
import Tokenizers

// The messages between a sweep (or `assay scan --isolate`) and its worker: JSON, one object per
// line, over the socket pair on the worker's fd 3.
//
// A sweep starts one worker per group of entries that share a base, so the base is loaded once
// and its outputs reused by every later entry of the group (SharedScanResources; 0.83× the time
// of three SmolLM2 adapter entries, docs/benchmarks.md, "Shared base outputs in a sweep"). A worker per entry would lose
// that; one worker for the whole sweep would let one crash end every group's cache and makes a
// single address-space limit cover every base at once. Per entry, the worker:
//   begin(id) → audits and hashes the entry's files → fingerprint(files)
//   ← decision: scan (with the entry's baseline) or skip (the parent found an unchanged result)
//   → result(EntryResult), with the worker's base-output reuse so far.
// The parent computes keys, reads and writes the history, and writes `--out` reports; the worker
// never opens the history (it holds no credentials) and the parent never loads a model. When a
// worker dies, the entry it had begun (or, if it had begun none, the first it was given) is
// recorded as an error naming the signal or limit, and a fresh worker takes the rest.

/// Parent → worker, first line.
struct WorkerRequest: Codable {
    var limits: ResourceLimits
    /// The sweep's pid: the worker exits if it is gone.
    var parent: Int32
    var sweep: SweepGroupRequest?
    var scan: ScanRequest?
    /// `assay baseline approve`: fingerprint one entry's current model.
    var approve: ApproveRequest?
}

struct ApproveRequest: Codable {
    var entry: WireEntry
    var scan: WireScanOptions
}

struct SweepGroupRequest: Codable {
    var entries: [WireEntry]
    var scan: WireScanOptions
    var baseOutputBytes: Int
}

/// The parent's answer to a fingerprint.
struct Decision: Codable {
    var scan: Bool
    var baseline: Baseline?
}

/// An isolated `assay scan`.
struct ScanRequest: Codable {
    var base: String
    var tuned: String?
    var adapters: [String]
    var suites: [String]
    var triggers: String?
    var policy: String?
    var manifest: String?
    var options: WireScanOptions
    var searchTriggers: Bool
    var invertTargets: Bool
    var discovery: DiscoveryOptions
    var knownTriggers: Bool
    var allowTokenizerMismatch: Bool
    var startedAt: Double

    init(_ job: ScanJob, startedAt: Date) {
        base = job.base.path
        tuned = job.tuned?.path
        adapters = job.adapters.map(\.path)
        suites = job.suites.map(\.path)
        triggers = job.triggers?.path
        policy = job.policy?.path
        manifest = job.manifest?.path
        options = WireScanOptions(job.options)
        searchTriggers = job.searchTriggers
        invertTargets = job.invertTargets
        discovery = job.discovery
        knownTriggers = job.knownTriggers
        allowTokenizerMismatch = job.allowTokenizerMismatch
        self.startedAt = startedAt.timeIntervalSince1970
    }

    var job: ScanJob {
        var j = ScanJob(base: URL(fileURLWithPath: base), tuned: tuned.map { URL(fileURLWithPath: $0) },
                        adapters: adapters.map { URL(fileURLWithPath: $0) })
        j.suites = suites.map { URL(fileURLWithPath: $0) }
        j.triggers = triggers.map { URL(fileURLWithPath: $0) }
        j.policy = policy.map { URL(fileURLWithPath: $0) }
        j.manifest = manifest.map { URL(fileURLWithPath: $0) }
        j.options = options.options
        j.searchTriggers = searchTriggers
        j.invertTargets = invertTargets
        j.discovery = discovery
        j.knownTriggers = knownTriggers
        j.allowTokenizerMismatch = allowTokenizerMismatch
        return j
    }
}

/// Every scan option (ScanOptions' own Codable form keeps only what a report records).
struct WireScanOptions: Codable {
    var seed: UInt64
    var responseTokens: Int
    var probesPerTrigger: Int
    var modes: [InsertionMode]
    var sharePromptPrefixes: Bool
    var shareIdenticalLayers: Bool
    var batchSize: Int

    init(_ o: ScanOptions) {
        seed = o.seed; responseTokens = o.responseTokens; probesPerTrigger = o.probesPerTrigger; modes = o.modes
        sharePromptPrefixes = o.sharePromptPrefixes; shareIdenticalLayers = o.shareIdenticalLayers; batchSize = o.batchSize
    }

    var options: ScanOptions {
        var o = ScanOptions()
        o.seed = seed; o.responseTokens = responseTokens; o.probesPerTrigger = probesPerTrigger; o.modes = modes
        o.sharePromptPrefixes = sharePromptPrefixes; o.shareIdenticalLayers = shareIdenticalLayers; o.batchSize = batchSize
        return o
    }
}

struct WireEntry: Codable {
    var id: String
    var base: String
    var tuned: String?
    var adapters: [String]
    var manifest: String?
    var policy: String?
    var suites: [String]
    var triggers: String?
    var owner: String?
    var tags: [String]
    var line: Int

    init(_ e: Inventory.Entry) {
        id = e.id; base = e.base.path; tuned = e.tuned?.path; adapters = e.adapters.map(\.path); manifest = e.manifest?.path
        policy = e.policy?.path; suites = e.suites.map(\.path); triggers = e.triggers?.path; owner = e.owner; tags = e.tags; line = e.line
    }

    var entry: Inventory.Entry {
        func u(_ p: String) -> URL { URL(fileURLWithPath: p) }
        return Inventory.Entry(id: id, base: u(base), tuned: tuned.map(u), adapters: adapters.map(u),
                               manifest: manifest.map(u), policy: policy.map(u),
                               suites: suites.map(u), triggers: triggers.map(u), owner: owner, tags: tags, line: line)
    }
}

/// An ordinary failure of an isolated scan: the message as `assay scan` prints it, and its exit code.
struct ScanFailure: Codable {
    var message: String
    var exitCode: Int32
}

/// Worker → parent: exactly one field set per line.
struct WorkerMessage: Codable {
    var say: String?
    /// Text for the parent's stderr as it is (ASSAY_PROFILE's table).
    var note: String?
    var progress: [Int]?
    var begin: String?
    var fingerprint: [StoredFile]?
    var result: EntryResult?
    /// Base-output reuse of this worker so far (hits, misses), sent with each result.
    var reuse: [Int]?
    /// The isolated scan's report.json.
    var report: String?
    /// The approval's files and behavioural fingerprint (who and when are the parent's).
    var baseline: Baseline?
    var failure: ScanFailure?
    /// From the crash reporter (hand-written JSON in the signal handler).
    var crash: CrashNote?

    init(say: String? = nil, note: String? = nil, progress: [Int]? = nil, begin: String? = nil, fingerprint: [StoredFile]? = nil,
         result: EntryResult? = nil, reuse: [Int]? = nil, report: String? = nil, failure: ScanFailure? = nil, baseline: Baseline? = nil) {
        self.say = say; self.note = note; self.progress = progress; self.begin = begin; self.fingerprint = fingerprint
        self.result = result; self.reuse = reuse; self.report = report; self.failure = failure; self.baseline = baseline
    }
}

/// The worker: `assay sweep-worker` (hidden) calls `serve()`. Everything that reads a model
/// directory happens here, under the request's limits.
public enum SweepWorker {
    public static func serve() throws(IsolationError) {
        let channel = try WorkerChannel()
        CrashReporter.install(fd: channel.fd)
        let request = try channel.receive(WorkerRequest.self)
        try channel.dieWithParent(request.parent)
        try request.limits.applyToWorker()
        if let group = request.sweep {
            try serve(group, limits: request.limits, channel: channel)
        } else if let scan = request.scan {
            try serve(scan, limits: request.limits, channel: channel)
        } else if let approve = request.approve {
            try serveApproval(approve, limits: request.limits, channel: channel)
        } else {
            throw .worker("empty request")
        }
    }

    static func serve(_ request: ScanRequest, limits: ResourceLimits, channel: WorkerChannel) throws(IsolationError) {
        try limits.startCPUBudget()
        let say: (String) -> Void = { try? channel.send(WorkerMessage(say: $0)) }
        let progress: (Int, Int) -> Void = { try? channel.send(WorkerMessage(progress: [$0, $1])) }
        let message: WorkerMessage
        let profiler = Profiler.fromEnvironment()
        do {
            let outcome = try ScanPipeline.run(request.job, profiler: profiler, say: say, progress: progress,
                                               startedAt: Date(timeIntervalSince1970: request.startedAt))
            if profiler.enabled {
                try channel.send(WorkerMessage(note: "profile (ASSAY_PROFILE=1):\n" + profiler.report()))
            }
            message = WorkerMessage(report: String(decoding: try outcome.report.json(), as: UTF8.self))
        } catch let e as IsolationError {
            throw e
        } catch {
            let code: Int32 = if case ScanError.nothingToScan = error { 3 } else { 2 }
            message = WorkerMessage(failure: ScanFailure(message: limits.attribute("\(error)", prefix: "scan process: "), exitCode: code))
        }
        try channel.send(message)
    }

    static func serveApproval(_ request: ApproveRequest, limits: ResourceLimits, channel: WorkerChannel) throws(IsolationError) {
        try limits.startCPUBudget()
        let message: WorkerMessage
        do {
            message = WorkerMessage(baseline: try EntryScanner.capture(request.entry.entry, scan: request.scan.options))
        } catch let e as IsolationError {
            throw e
        } catch {
            message = WorkerMessage(failure: ScanFailure(message: limits.attribute("\(error)", prefix: "approval process: "), exitCode: 2))
        }
        try channel.send(message)
    }

    static func serve(_ request: SweepGroupRequest, limits: ResourceLimits, channel: WorkerChannel) throws(IsolationError) {
        let profiler = Profiler.fromEnvironment()
        let scanner = EntryScanner(options: request.scan.options, shared: SharedScanResources(byteBudget: request.baseOutputBytes),
                                   profiler: profiler)
        scanner.say = { try? channel.send(WorkerMessage(say: $0)) }
        for wire in request.entries {
            let e = wire.entry
            try limits.startCPUBudget()
            try channel.send(WorkerMessage(begin: e.id))
            let before = profiler.snapshot().seconds
            let t0 = Date()
            var result = EntryResult(entryID: e.id, status: .error, verdict: nil, key: "", message: nil, seconds: 0, finishedAt: "",
                                     reusedFrom: nil, owner: e.owner, tags: e.tags, report: nil, findings: [], files: [], divergences: [])
            do {
                let files = try profiler.measure("sweep.audit") { try scanner.fingerprintFiles(e) }
                result.files = files
                try channel.send(WorkerMessage(fingerprint: files))
                let decision = try channel.receive(Decision.self)
                guard decision.scan else { continue }
                scanner.say("\(e.id): scanning")
                try scanner.scan(e, files: files, baseline: decision.baseline, into: &result)
            } catch let error as IsolationError {
                throw error
            } catch {
                result.status = .error
                result.verdict = nil
                result.message = limits.attribute("\(error)").terminalSafe
            }
            result.seconds = Date().timeIntervalSince(t0)
            result.finishedAt = SweepRunner.now()
            if profiler.enabled { scanner.say(profileLine(e.id, profiler, since: before, total: result.seconds)) }
            let reuse = scanner.shared.reuse
            try channel.send(WorkerMessage(result: result, reuse: [reuse.hits, reuse.misses]))
        }
    }

    /// ASSAY_PROFILE=1: where this entry's time went (what base sharing can and cannot save).
    static func profileLine(_ id: String, _ profiler: Profiler, since before: [String: Double], total: Double) -> String {
        let after = profiler.snapshot().seconds
        // Stages only (the model's own phases, gemm.* and the like, run inside them).
        let stages = ["load", "weights", "statistics", "reports", "scan.", "sweep.", "discovery.", "inversion."]
        let phases = after.filter { k in stages.contains { k.key.hasPrefix($0) } }.map { ($0.key, $0.value - (before[$0.key] ?? 0)) }
            .filter { $0.1 >= 0.05 }.sorted { $0.1 > $1.1 }
        let other = total - phases.reduce(0) { $0 + $1.1 }
        return "\(id): profile " + (phases + [("other", other)]).map { String(format: "%@ %.1f s", $0.0, $0.1) }.joined(separator: ", ")
    }
}

/// One entry's model work: fingerprint (audit and hashes), scan, baseline drift. Runs in the
/// worker (and for `assay baseline approve`, which is not isolated).
final class EntryScanner {
    let options: ScanOptions
    let shared: SharedScanResources
    let profiler: Profiler
    var say: (String) -> Void = { _ in }
    /// Audits (every file hashed) by directory, made once per worker: entries on one base share it.
    var audits: [String: AuditReport] = [:]

    init(options: ScanOptions, shared: SharedScanResources, profiler: Profiler = Profiler(enabled: false)) {
        self.options = options
        self.shared = shared
        self.profiler = profiler
    }

    /// The suites, trigger file and policy an entry uses (built-ins when the inventory names none).
    static func inputs(_ e: Inventory.Entry) throws -> (suites: [URL], triggers: URL, policy: URL?) {
        let suites = SuiteLoader.suitesOrBuiltin(e.suites)
        guard !suites.isEmpty, let triggers = SuiteLoader.triggersOrBuiltin(e.triggers) else {
            throw ScanError.invalidInput("no suites given and the built-in probes/ directory was not found")
        }
        return (suites, triggers, e.policy)
    }

    /// Bound on a suite, trigger, policy or manifest file the sweep hashes itself.
    static let maxInputBytes = SafeFile.defaultMaxBytes

    static func sha256(file url: URL, role: FileRole) throws -> StoredFile {
        let bytes: [UInt8]
        do { bytes = try SafeFile.read(url, maxBytes: maxInputBytes) } catch {
            throw ScanError.invalidInput("\(role) \(error)")
        }
        return StoredFile(role: role, path: url.path, sha256: bytes.withUnsafeBytes { Inspector.sha256Hex($0) })
    }

    /// The entry's model directories by role (base, tuned, adapter or adapter 1, 2, …).
    static func directories(_ e: Inventory.Entry) -> [(role: FileRole, url: URL)] {
        var dirs: [(FileRole, URL)] = [(.base, e.base)]
        if let t = e.tuned { dirs.append((.tuned, t)) }
        dirs += zip(FileRole.adapters(e.adapters.count), e.adapters).map { ($0, $1) }
        return dirs
    }

    /// The error of an entry whose directory is missing (nil: every directory exists). Cheap and
    /// reads nothing: the sweep checks it before starting a worker.
    static func missingDirectory(_ e: Inventory.Entry) -> ScanError? {
        directories(e).lazy.compactMap { ScanPipeline.missingModel($0.role, $0.url) }.first
    }

    /// Everything an entry's result depends on, as files (role, path, sha256).
    func fingerprintFiles(_ e: Inventory.Entry) throws -> [StoredFile] {
        if let missing = Self.missingDirectory(e) { throw missing }
        var files: [StoredFile] = []
        for (role, dir) in Self.directories(e) {
            let audit = try audits[dir.path] ?? Auditor.audit(dir)
            audits[dir.path] = audit
            for f in audit.files { if let h = f.sha256 { files.append(StoredFile(role: role, path: f.path, sha256: h)) } }
        }
        let (suites, triggers, policy) = try Self.inputs(e)
        for s in suites { files.append(try Self.sha256(file: s, role: .suite)) }
        files.append(try Self.sha256(file: triggers, role: .triggers))
        if let policy { files.append(try Self.sha256(file: policy, role: .policy)) }
        if let m = e.manifest { files.append(try Self.sha256(file: m, role: .manifest)) }
        return files
    }

    /// Scans the entry and checks it against its baseline; fills `result` (status scanned).
    func scan(_ e: Inventory.Entry, files: [StoredFile], baseline: Baseline?, into result: inout EntryResult) throws {
        let (suites, triggers, policyURL) = try Self.inputs(e)
        var job = ScanJob(base: e.base, tuned: e.tuned, adapters: e.adapters)
        job.suites = suites
        job.triggers = triggers
        job.policy = policyURL
        job.manifest = e.manifest
        job.options = options
        job.preaudited = audits
        if let baseline { job.checks = [Self.driftCheck(baseline, files: files, seed: options.seed)] }
        let report = try ScanPipeline.run(job, shared: shared, profiler: profiler, say: { [say] in say("\(e.id): \($0)") }).report
        result.status = .scanned
        result.verdict = report.verdict
        result.report = String(decoding: try report.json(), as: UTF8.self)
        result.findings = report.findings.map {
            StoredFinding(kind: $0.kind, severity: $0.severity, title: $0.title, trigger: $0.trigger, category: $0.category,
                          value: $0.value, pValue: $0.pValue)
        }
        result.divergences = report.categories.map {
            StoredDivergence(category: $0.name, n: $0.n, mean: $0.divergence, ciLow: $0.ciLow, ciHigh: $0.ciHigh)
        }
    }

    /// The scan's baseline-drift stage: the tuned model as the scan loaded it, against the
    /// fingerprint approved for the entry, and which model files changed since.
    static func driftCheck(_ baseline: Baseline, files: [StoredFile], seed: UInt64) -> ScanCheck {
        ScanCheck(name: "sweep.baseline") { c in
            let d = try BaselineCheck.measure(baseline.fingerprint, model: c.tuned, encoder: c.encoder, probes: c.probes)
            let now = Set(files.filter(\.role.isModel))
            let then = Set(baseline.files)
            let changed = Set(now.symmetricDifference(then).map { "\($0.role): \($0.path)" }).sorted()
            return try BaselineCheck.findings(d, changedFiles: changed, approvedAt: baseline.approvedAt, policy: c.policy, seed: seed)
        }
    }
}

extension EntryScanner {
    /// What `assay baseline approve` records (who and when left to the caller): the entry's weight
    /// files and its current model's behavioural fingerprint. Runs in the worker: it loads the
    /// model, and refuses a directory that fails its provenance audit.
    static func capture(_ e: Inventory.Entry, scan: ScanOptions) throws -> Baseline {
        let scanner = EntryScanner(options: scan, shared: SharedScanResources(byteBudget: 0))
        let files = try scanner.fingerprintFiles(e)
        for (dir, a) in scanner.audits where a.verdict == .fail {
            throw ScanError.invalidInput("\(dir.terminalSafe) fails the provenance audit; not approving it")
        }
        let (suites, _, _) = try inputs(e)
        let loaded = try suites.map { try SuiteLoader.loadProbes($0) }
        let model = try ModelLoader.load(e.tuned ?? e.base, adapters: e.adapters)
        let tokenizer = try Tokenizer.load(model: e.base)
        let tunedModel = e.tuned ?? e.base
        let config = ModelLoader.isGGUF(tunedModel) ? tunedModel.path : tunedModel.appendingPathComponent("config.json").path
        try tokenizer.checkIDs(embeddingRows: model.vocabularySize, configFile: config)
        let fp = try BaselineCheck.capture(model: model, encoder: TemplateEncoder(tokenizer: tokenizer), probes: loaded.flatMap(\.probes),
                                           suites: Dictionary(loaded.map { ($0.name, $0.sha256) }, uniquingKeysWith: { a, _ in a }),
                                           responseTokens: scan.responseTokens)
        return Baseline(id: 0, entryID: e.id, approvedAt: "", approvedBy: "", files: files.filter(\.role.isModel), fingerprint: fp)
    }
}

/// One request served by one worker: what came back and how the worker ended.
struct WorkerRun {
    var messages: [WorkerMessage] = []
    var end: WorkerExit = .exited(0)
    var crash: CrashNote?
    var protocolError: IsolationError?
    /// Why the worker ended when it did not report, named by signal or limit.
    var cause = ""

    /// Sends `request` to a fresh worker under `isolation` (the wall clock included) and reads
    /// its messages until it closes the channel; `each` sees every message as it arrives.
    static func serve(_ request: WorkerRequest, isolation: IsolationOptions, each: (WorkerMessage) -> Void = { _ in }) throws -> WorkerRun {
        let worker = try WorkerProcess.spawn(isolation)
        let watchdog = WallClockWatchdog(seconds: isolation.limits.wallSeconds, worker: worker)
        watchdog.arm()
        var run = WorkerRun()
        do {
            try worker.send(request)
            while let m = try worker.receive(WorkerMessage.self) {
                if let c = m.crash { run.crash = c }
                each(m)
                run.messages.append(m)
            }
        } catch {
            // Undecodable output is a protocol error (the worker is ended); a request that cannot
            // be sent means the worker died at once, and its end says why.
            if case .worker(let m) = error, m.hasPrefix("unreadable") || m.contains("exceeds") {
                run.protocolError = error
                worker.terminate()
            }
        }
        run.end = worker.wait()
        watchdog.disarm()
        run.cause = watchdog.breach() ?? run.end.describe(crash: run.crash, limits: isolation.limits, stderr: worker.stderr)
        return run
    }

    var failure: ScanFailure? { messages.lazy.compactMap(\.failure).last }
}

/// `assay baseline approve` in a worker process under the sweep's limits: a model that crashes
/// or hangs is an error (exit 2) naming the signal or limit, and nothing is recorded.
enum IsolatedApproval {
    static func run(_ e: Inventory.Entry, options: SweepOptions) throws -> Baseline {
        let request = WorkerRequest(limits: options.isolation.limits, parent: getpid(),
                                    approve: ApproveRequest(entry: WireEntry(e), scan: WireScanOptions(options.scan)))
        let run = try WorkerRun.serve(request, isolation: options.isolation)
        if let failure = run.failure { throw IsolationError.failed(failure.message) }
        if let baseline = run.messages.lazy.compactMap(\.baseline).last, run.end == .exited(0) { return baseline }
        if let protocolError = run.protocolError { throw protocolError }
        throw IsolationError.crashed("approval process: " + run.cause)
    }
}

/// `assay scan --isolate`: the scan's model work in a worker process under limits. The report
/// comes back as report.json and is returned to the caller, which writes `--out` only then, so
/// a crashed scan leaves no half-written report directory.
public enum IsolatedScan {
    /// Throws ScanError.nothingToScan (exit 3) or IsolationError.failed with the scan's own
    /// message (exit 2) when the scan fails, and IsolationError.crashed naming the signal or limit
    /// when the worker dies.
    public static func run(_ job: ScanJob, isolation: IsolationOptions, startedAt: Date, say: @escaping (String) -> Void,
                           progress: @escaping (Int, Int) -> Void, note: @escaping (String) -> Void) throws -> ScanReport {
        let request = WorkerRequest(limits: isolation.limits, parent: getpid(), scan: ScanRequest(job, startedAt: startedAt))
        let run = try WorkerRun.serve(request, isolation: isolation) { m in
            if let s = m.say { say(s) }
            if let p = m.progress, p.count == 2 { progress(p[0], p[1]) }
            if let n = m.note { note(n) }
        }
        if let failure = run.failure {
            if failure.exitCode == 3 { throw ScanError.nothingToScan(failure.message) }
            throw IsolationError.failed(failure.message)
        }
        if let reportText = run.messages.lazy.compactMap(\.report).last, run.end == .exited(0) {
            do { return try WireJSON.decoder.decode(ScanReport.self, from: Data(reportText.utf8)) } catch {
                throw IsolationError.worker("unreadable report from the worker: \(error)")
            }
        }
        if let protocolError = run.protocolError { throw protocolError }
        throw IsolationError.crashed("scan process: " + run.cause)
    }
}
