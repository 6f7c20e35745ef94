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
    /// The worker processes entries run in, and their limits.
    public var isolation = IsolationOptions()
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
        if results.isEmpty || results.allSatisfy({ $0.status == .error }) { return 3 }
        if results.contains(where: { $0.verdict == .fail }) { return 1 }
        if results.contains(where: { $0.status == .error }) { return 2 }
        return 0
    }
}

/// Runs an inventory's entries (or one shard of them): provenance and scan per entry, each in a
/// worker process under limits (SweepWorker.swift), each base's outputs computed once and reused
/// by every entry on it, unchanged entries skipped, every result committed as it completes, a
/// failing or crashing entry recorded as an error while the rest go on.
public final class SweepRunner {
    public let inventory: Inventory
    public let store: HistoryStore
    public let options: SweepOptions
    public var say: (String) -> Void = { _ in }
    /// One line per finished entry.
    public var line: (String) -> Void = { _ in }
    /// Base-side variant measurements reused / computed, summed over workers.
    var reuse = (hits: 0, misses: 0)

    public init(inventory: Inventory, store: HistoryStore, options: SweepOptions) {
        self.inventory = inventory
        self.store = store
        self.options = options
    }

    /// The time as ISO 8601 in UTC with milliseconds (`2026-12-01T13:38:29.123Z`, what
    /// ISO8601DateFormatter's internet date time with fractional seconds gives), formatted by hand:
    /// a formatter per call was a sixth of a 10,000-error sweep's time.
    public static func now() -> String { timestamp(Date()) }

    static func timestamp(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var t = time_t(ms >= 0 ? ms / 1000 : (ms - 999) / 1000)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                      Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(((ms % 1000) + 1000) % 1000))
    }

    public func run() throws(SweepError) -> SweepOutcome {
        let started = Date()
        let entries = inventory.shard(options.shard, of: options.shards)
        let (runID, resumed) = try SweepError.fromHistory { () throws(HistoryError) in try beginRun(entries) }
        let done = Dictionary(try SweepError.fromHistory { () throws(HistoryError) in try store.results(run: runID) }
                                  .map { ($0.entryID, $0) }, uniquingKeysWith: { a, _ in a })
        if resumed {
            say("resuming run \(runID): \(entries.filter { done[$0.id] != nil }.count) of \(entries.count) entries already recorded")
        } else {
            say("run \(runID): \(entries.count) entries\(options.shards > 1 ? " (shard \(options.shard + 1) of \(options.shards))" : "")")
        }
        let recorder = Recorder(store: store, runID: runID)
        var results: [EntryResult] = []
        func finished(_ r: EntryResult, durable: Bool) throws(SweepError) {
            try recorder.record(r, durable: durable)
            results.append(r)
            line(Self.summaryLine(r, resumed: false))
        }
        // Whole groups of entries on one base go to one worker (entries arrive grouped by base).
        for group in Self.groupsByBase(entries) {
            var work: [Inventory.Entry] = []
            for entry in group {
                if let r = done[entry.id] {
                    results.append(r)
                    line(Self.summaryLine(r, resumed: true))
                } else if let missing = EntryScanner.missingDirectory(entry) {
                    // Found without reading anything: no worker, and committed with the next
                    // write (a killed sweep retries these, as it retries every error).
                    try finished(errorResult(entry, message: "\(missing)", files: []), durable: false)
                } else {
                    work.append(entry)
                }
            }
            if !work.isEmpty { try runGroup(work, runID: runID, finished: finished) }
        }
        try recorder.flush()
        try SweepError.fromHistory { () throws(HistoryError) in try store.finishRun(runID, shard: options.shard, at: Self.now()) }
        return SweepOutcome(runID: runID, resumed: resumed, results: results, baseReuse: reuse,
                            seconds: Date().timeIntervalSince(started))
    }

    /// The run this sweep records into, begun in the history: the given id, else this
    /// inventory's unfinished run of this shard (resumed), else a new one.
    func beginRun(_ entries: [Inventory.Entry]) throws(HistoryError) -> (id: String, resumed: Bool) {
        var resumed = false
        let runID: String
        if let id = options.runID {
            runID = id
            resumed = try store.runs().contains { $0.id == id && $0.shard == options.shard }
        } else if let open = try store.runs(inventory: inventory.file.path)
                      .last(where: { $0.shard == options.shard && $0.shards == options.shards }),
                  open.finishedAt == nil {
            runID = open.id
            resumed = true
        } else {
            runID = Self.newRunID()
        }
        try store.beginRun(RunInfo(id: runID, shard: options.shard, shards: options.shards, inventory: inventory.file.path,
                                   startedAt: Self.now(), finishedAt: nil, host: ProcessInfo.processInfo.hostName, entries: entries.count),
                           inventorySHA256: inventory.sha256, toolVersion: ScanPipeline.toolVersion)
        return (runID, resumed)
    }

    /// Consecutive entries on one base (the inventory's shard order keeps them together).
    static func groupsByBase(_ entries: [Inventory.Entry]) -> [ArraySlice<Inventory.Entry>] {
        var groups: [ArraySlice<Inventory.Entry>] = []
        var start = entries.startIndex
        while start < entries.endIndex {
            let base = entries[start].base.standardizedFileURL.path
            var end = start
            while end < entries.endIndex && entries[end].base.standardizedFileURL.path == base { end += 1 }
            groups.append(entries[start..<end])
            start = end
        }
        return groups
    }

    /// Commits results: an entry a worker reported at once (with any cheap errors waiting), in one
    /// transaction; cheap errors (missing directories) in batches, which makes 10,000 of them one
    /// write of a few hundred rows each rather than 10,000 fsyncs.
    final class Recorder {
        let store: HistoryStore
        let runID: String
        var waiting: [EntryResult] = []
        static let batch = 500

        init(store: HistoryStore, runID: String) {
            self.store = store
            self.runID = runID
        }

        func record(_ r: EntryResult, durable: Bool) throws(SweepError) {
            waiting.append(r)
            if durable || waiting.count >= Self.batch { try flush() }
        }

        func flush() throws(SweepError) {
            guard !waiting.isEmpty else { return }
            try SweepError.fromHistory { () throws(HistoryError) in try store.record(waiting, run: runID) }
            waiting.removeAll()
        }
    }

    func errorResult(_ e: Inventory.Entry, message: String, files: [StoredFile], key: String = "", seconds: Double = 0) -> EntryResult {
        EntryResult(entryID: e.id, status: .error, verdict: nil, key: key, message: message.terminalSafe, seconds: seconds,
                    finishedAt: Self.now(), reusedFrom: nil, owner: e.owner, tags: e.tags, report: nil, findings: [], files: files,
                    divergences: [])
    }

    /// Runs a group of entries on one base in worker processes: one worker for the group, and after
    /// a worker dies (its entry recorded as an error naming the signal or limit) a fresh one for
    /// the entries left.
    func runGroup(_ group: [Inventory.Entry], runID: String, finished: (EntryResult, Bool) throws(SweepError) -> Void) throws(SweepError) {
        var remaining = group
        while !remaining.isEmpty {
            let outcome = runWorker(remaining, runID: runID, finished: finished)
            remaining.removeFirst(outcome.reported)
            reuse.hits += outcome.reuse.hits
            reuse.misses += outcome.reuse.misses
            if let failure = outcome.failure {
                try finished(failure, true)
                remaining.removeFirst()
            }
            if let stop = outcome.stop { throw stop }
        }
    }

    struct WorkerOutcome {
        /// Entries reported (in order) before the worker ended.
        var reported = 0
        /// The error of the entry the worker died on (the next after `reported`).
        var failure: EntryResult?
        var reuse = (hits: 0, misses: 0)
        /// A history error: stops the sweep.
        var stop: SweepError?
    }

    /// The parent's side of one worker's conversation: the entries, what has been reported, the
    /// entry in progress (when it began, its files and key once fingerprinted) and what went wrong.
    struct WorkerSession {
        let entries: [Inventory.Entry]
        let runID: String
        let started = Date()
        var out = WorkerOutcome()
        var begun: Date?
        var files: [StoredFile] = []
        var entryKey = ""
        var crash: CrashNote?
        var protocolError: String?
        var current: Inventory.Entry? { out.reported < entries.count ? entries[out.reported] : nil }
    }

    /// One worker over `entries` until it finishes them or dies.
    func runWorker(_ entries: [Inventory.Entry], runID: String, finished: (EntryResult, Bool) throws(SweepError) -> Void) -> WorkerOutcome {
        var session = WorkerSession(entries: entries, runID: runID)
        func fail(_ message: String) -> WorkerOutcome {
            let since = session.begun ?? session.started
            session.out.failure = errorResult(entries[session.out.reported], message: message, files: session.files,
                                              key: session.entryKey, seconds: Date().timeIntervalSince(since))
            return session.out
        }
        let worker: WorkerProcess
        do {
            worker = try WorkerProcess.spawn(options.isolation)
            try worker.send(WorkerRequest(limits: options.isolation.limits, parent: getpid(),
                                          sweep: SweepGroupRequest(entries: entries.map(WireEntry.init),
                                                                   scan: WireScanOptions(options.scan),
                                                                   baseOutputBytes: options.baseOutputBytes)))
        } catch {
            return fail("\(error)")
        }
        let watchdog = WallClockWatchdog(seconds: options.isolation.limits.wallSeconds, worker: worker)
        while true {
            let m: WorkerMessage
            do {
                guard let next = try worker.receive(WorkerMessage.self) else { break }
                m = next
            } catch {
                session.protocolError = "\(error)"
                break
            }
            guard handle(m, &session, worker: worker, watchdog: watchdog, finished: finished) else { break }
        }
        // A worker that broke the protocol is ended here; otherwise closing the channel (in wait)
        // lets a live one see end of file and exit.
        if session.protocolError != nil || session.out.stop != nil { worker.terminate() }
        let end = worker.wait()
        watchdog.disarm()
        guard session.out.stop == nil, session.out.reported < entries.count else { return session.out }
        let why = session.protocolError.map { "worker protocol error: \($0)" } ?? watchdog.breach()
            ?? end.describe(crash: session.crash, limits: options.isolation.limits, stderr: worker.stderr)
        return fail(why)
    }

    /// One message from the worker; false when the conversation must end.
    func handle(_ m: WorkerMessage, _ session: inout WorkerSession, worker: WorkerProcess, watchdog: WallClockWatchdog,
                finished: (EntryResult, Bool) throws(SweepError) -> Void) -> Bool {
        if let text = m.say { say(text) }
        if let c = m.crash { session.crash = c }
        if let id = m.begin {
            guard id == session.current?.id else {
                session.protocolError = "the worker began `\(id.terminalSafe)` out of turn"; return false
            }
            session.begun = Date()
            watchdog.arm()
            session.files = []
            session.entryKey = ""
        }
        if let f = m.fingerprint, let e = session.current {
            session.files = f
            let decision: Decision
            do { decision = try decide(e, fingerprint: f, &session, watchdog: watchdog, finished: finished) } catch {
                session.out.stop = error
                return false
            }
            // A send fails when the worker has just died: its end is what the entry records.
            do { try worker.send(decision) } catch { return false }
        }
        if var r = m.result, let e = session.current {
            guard r.entryID == e.id else {
                session.protocolError = "the worker reported `\(r.entryID.terminalSafe)` out of turn"; return false
            }
            r.key = session.entryKey
            r.owner = e.owner
            r.tags = e.tags
            if r.status == .scanned, let dir = options.out {
                r = writeReports(r, entry: e, to: dir.appendingPathComponent(session.runID).appendingPathComponent(Self.safeName(e.id)))
            }
            do { try finished(r, true) } catch {
                session.out.stop = error
                return false
            }
            session.out.reported += 1
            session.begun = nil
            watchdog.disarm()
            if let u = m.reuse, u.count == 2 { session.out.reuse = (u[0], u[1]) }
        }
        return true
    }

    /// Whether the fingerprinted entry needs scanning: an entry whose files and baseline match an
    /// earlier good run is recorded as skipped (reusing that run's result) and not scanned.
    func decide(_ e: Inventory.Entry, fingerprint f: [StoredFile], _ session: inout WorkerSession, watchdog: WallClockWatchdog,
                finished: (EntryResult, Bool) throws(SweepError) -> Void) throws(SweepError) -> Decision {
        let baseline = try SweepError.fromHistory { () throws(HistoryError) in try store.baseline(entry: e.id) }
        session.entryKey = key(files: f, baseline: baseline)
        let last = options.force ? nil
            : try SweepError.fromHistory { () throws(HistoryError) in try store.lastGood(entry: e.id, key: session.entryKey) }
        guard let (run, prev) = last else {
            return Decision(scan: true, baseline: baseline)
        }
        var r = prev
        r.status = .skipped
        r.reusedFrom = run
        r.seconds = Date().timeIntervalSince(session.begun ?? session.started)
        r.finishedAt = Self.now()
        r.owner = e.owner
        r.tags = e.tags
        try finished(r, true)
        session.out.reported += 1
        session.begun = nil
        watchdog.disarm()
        return Decision(scan: false, baseline: nil)
    }

    /// Writes a scanned entry's reports (`--out`) from its report.json; a failure to write makes
    /// the entry an error, as it did when the reports were written in process.
    func writeReports(_ r: EntryResult, entry: Inventory.Entry, to dir: URL) -> EntryResult {
        do {
            let report = try WireJSON.decoder.decode(ScanReport.self, from: Data((r.report ?? "").utf8))
            try ReportWriter.write(report, to: dir)
            return r
        } catch {
            return errorResult(entry, message: "\(error)", files: r.files, key: r.key, seconds: r.seconds)
        }
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
        case .error: return "ERROR \(r.entryID): \(r.message ?? "")"
        case .skipped: what = "unchanged since \(r.reusedFrom ?? "?")"
        case .scanned: what = String(format: "scanned in %.1f s", r.seconds)
        }
        let top = r.findings.first.map { " — \($0.severity): \($0.title)" } ?? ""
        let verdict = (r.verdict?.rawValue ?? "?").uppercased().padding(toLength: 5, withPad: " ", startingAt: 0)
        return "\(verdict) \(r.entryID) (\(what)\(resumed ? ", recorded earlier in this run" : ""); \(r.findings.count) finding(s))\(top)"
    }

    func key(files: [StoredFile], baseline: Baseline?) -> String {
        let o = options.scan
        var text = "assay \(ScanPipeline.toolVersion)\nseed \(o.seed) k \(o.responseTokens) "
            + "ppt \(o.probesPerTrigger) modes \(o.modes.map(\.rawValue).sorted())\n"
        for f in files.sorted(by: { ($0.role, $0.path) < ($1.role, $1.path) }) { text += "\(f.role)\u{0}\(f.path)\u{0}\(f.sha256)\n" }
        if let b = baseline { text += "baseline \(b.approvedAt)\n" }
        return Array(text.utf8).withUnsafeBytes { Inspector.sha256Hex($0) }
    }

    /// A file-system-safe directory name for an entry id.
    static func safeName(_ id: String) -> String {
        String(id.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) ? Character($0) : "_" })
    }

    /// Approves the entry's current model: its behavioural fingerprint and weight hashes, taken
    /// in a worker process under the sweep's limits (this process never loads the model).
    public func approve(_ id: String, by who: String) throws -> Baseline {
        guard let e = inventory.entries.first(where: { $0.id == id }) else { throw SweepError.unknownEntry(id) }
        var b = try IsolatedApproval.run(e, options: options)
        b.approvedAt = Self.now()
        b.approvedBy = who
        try store.approve(b)
        return b
    }
}
