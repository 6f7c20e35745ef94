import ArgumentParser
import Foundation
import AssayCommon
import History
import Pipeline
import Reports
import Scan
import Sweep
import TensorCore

/// Where the history lives: `--db PATH|URL`, `$ASSAY_DB`, or `.assay/history.sqlite` beside the inventory.
struct HistoryArguments: ParsableArguments {
    @Option(help: """
        History: an SQLite file, or postgres://user@host:port/database?schema=NAME&sslmode=MODE (password in the URL \
        or $PGPASSWORD). Default: $ASSAY_DB, else .assay/history.sqlite beside the inventory.
        """)
    var db: String?

    func open(inventory: URL?, create: Bool = true) throws -> HistoryStore {
        let location: String
        if let given = db ?? Self.environmentDB {
            location = Self.resolve(given)
        } else if let inventory {
            location = inventory.deletingLastPathComponent().appendingPathComponent(".assay/history.sqlite").path
        } else {
            throw ValidationError("give --db (or set $ASSAY_DB) or an inventory file")
        }
        return try HistoryStore.open(location, create: create)
    }

    /// `$ASSAY_DB` when set and not empty.
    static var environmentDB: String? { ProcessInfo.processInfo.environment["ASSAY_DB"].flatMap { $0.isEmpty ? nil : $0 } }

    /// A postgres:// URL as given; a file path made absolute.
    static func resolve(_ location: String) -> String {
        PostgresLocation.isPostgres(location) ? location : URL(fileURLWithPath: location).path
    }
}

struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Scan every entry of an inventory, record the results in a history, and report what changed.",
        subcommands: [SweepRun.self, SweepDiffCommand.self, SweepReportCommand.self, SweepMerge.self],
        defaultSubcommand: SweepRun.self
    )
}

struct SweepRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Sweep an inventory (the default: `assay sweep inventory.yaml`).",
        discussion: """
        Exit 0 every entry passes or warns, 1 any fails, 2 invalid input or an entry error (and none fails), \
        3 nothing could be scanned, 4 usage. With no --shard, the shard comes from a Kubernetes Indexed Job \
        (JOB_COMPLETION_INDEX, JOB_COMPLETIONS) or a Slurm job array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT).
        """
    )
    @Argument(help: "inventory.yaml") var inventory: String
    @OptionGroup var history: HistoryArguments
    @Flag(help: "Rescan entries whose files, suites and policy are unchanged since their last good result.") var force = false
    @Option(help: "Run shard i of n (0 ≤ i < n): whole base groups, deterministic.") var shard: String?
    @Option(help: """
        Run id shared by the shards of one sweep (default: $ASSAY_RUN_ID, slurm-$SLURM_ARRAY_JOB_ID, or resume this inventory's unfinished \
        run, or a new one).
        """)
    var runID: String?
    @Option(help: "Write a JUnit XML file with one test case per entry.") var junit: String?
    @Option(help: "Write each scanned entry's reports to DIR/<run>/<entry>/.") var out: String?
    @Option(help: "Seed for every random choice.") var seed: UInt64 = 0
    @Option(help: "Response positions compared per continuation.") var responseTokens = 8
    @Option(help: "Probes each trigger × insertion mode is inserted into.") var probesPerTrigger = 16
    @Option(help: "Prompt variants per batch (results do not depend on it).") var batchSize = 96
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "MiB of base-model outputs kept for reuse by later entries on the same base (0: no reuse).") var baseCacheMib = 4096
    @Option(help: """
        Address-space limit of each worker process (one per group of entries on a base): 16G, 512M, none \
        (default: the smaller of 16 GiB and 75% of physical memory).
        """)
    var entryMemoryLimit: String?
    @Option(help: "CPU time limit per entry, summed over threads: 7200, 90s, 30m, 2h, none (default: 2h).") var entryCpuLimit: String?
    @Option(help: "Wall-clock limit per entry: 14400, 90s, 30m, 4h, none (default: 4h).") var entryTimeLimit: String?

    func validate() throws {
        guard (1...64).contains(responseTokens) else { throw ValidationError("--response-tokens must be between 1 and 64") }
        guard (1...10_000).contains(probesPerTrigger) else { throw ValidationError("--probes-per-trigger must be between 1 and 10000") }
        guard (1...4096).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 4096") }
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be between 1 and 256") }
        guard (0...1_048_576).contains(baseCacheMib) else { throw ValidationError("--base-cache-mib must be between 0 and 1048576") }
        if let shard { _ = try Self.parseShard(shard) }
        _ = try limits()
    }

    func limits() throws -> ResourceLimits {
        try parseLimits(memory: entryMemoryLimit, cpu: entryCpuLimit, wall: entryTimeLimit,
                        flags: ("--entry-memory-limit", "--entry-cpu-limit", "--entry-time-limit"))
    }

    static func parseShard(_ s: String) throws -> (Int, Int) {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, n <= 100_000, i >= 0, i < n else {
            throw ValidationError("--shard must be i/n with 0 ≤ i < n (e.g. 0/4)")
        }
        return (i, n)
    }

    /// The shard from the flag, else from a Kubernetes Indexed Job or a Slurm job array.
    static func shardFromEnvironment(_ env: [String: String]) throws -> (Int, Int)? {
        if let i = env["JOB_COMPLETION_INDEX"] {
            guard let idx = Int(i), let n = env["JOB_COMPLETIONS"].flatMap(Int.init), n >= 1, (0..<n).contains(idx) else {
                throw SweepError.invalid("JOB_COMPLETION_INDEX=\(i.terminalSafe) needs JOB_COMPLETIONS=n with 0 ≤ index < n "
                                         + "(set it from the Job's spec.completions)")
            }
            return (idx, n)
        }
        if let t = env["SLURM_ARRAY_TASK_ID"] {
            guard let id = Int(t), let n = env["SLURM_ARRAY_TASK_COUNT"].flatMap(Int.init), n >= 1 else {
                throw SweepError.invalid("SLURM_ARRAY_TASK_ID=\(t.terminalSafe) needs SLURM_ARRAY_TASK_COUNT")
            }
            // Arrays may start at 1 (--array=1-4): count from the array's first task.
            let idx = id - (env["SLURM_ARRAY_TASK_MIN"].flatMap(Int.init) ?? 0)
            guard (0..<n).contains(idx) else { throw SweepError.invalid("SLURM_ARRAY_TASK_ID=\(id) is outside an array of \(n) tasks") }
            return (idx, n)
        }
        return nil
    }

    func run() throws {
        let log = Log()
        let invURL = URL(fileURLWithPath: inventory)
        let inv = try Inventory.load(invURL)
        let env = ProcessInfo.processInfo.environment
        let (i, n) = try shard.map(Self.parseShard) ?? Self.shardFromEnvironment(env) ?? (0, 1)
        let store = try history.open(inventory: invURL)
        var o = SweepOptions()
        o.force = force
        o.shard = i
        o.shards = n
        o.runID = runID ?? env["ASSAY_RUN_ID"] ?? env["SLURM_ARRAY_JOB_ID"].map { "slurm-\($0)" }
        o.scan.seed = seed
        o.scan.responseTokens = responseTokens
        o.scan.probesPerTrigger = probesPerTrigger
        o.scan.batchSize = batchSize
        o.out = out.map { URL(fileURLWithPath: $0) }
        o.baseOutputBytes = baseCacheMib << 20
        o.isolation.limits = try limits()
        o.isolation.threads = threads
        let runner = SweepRunner(inventory: inv, store: store, options: o)
        runner.say = { log.say($0) }
        runner.line = { emit($0) }
        let outcome = try runner.run()
        let outcomes = Verdict.allCases.map(\.rawValue) + [EntryStatus.error.rawValue]
        let counts = Dictionary(grouping: outcome.results) {
            $0.status == .error ? EntryStatus.error.rawValue : ($0.verdict?.rawValue ?? "?")
        }
            .mapValues(\.count)
        let skipped = outcome.results.filter { $0.status == .skipped }.count
        let reuse = outcome.baseReuse
        let tally = outcomes.map { "\(counts[$0] ?? 0) \($0)" }.joined(separator: ", ")
        emit("sweep \(outcome.runID): \(outcome.results.count) entries — \(tally)"
             + "; \(skipped) unchanged and skipped"
             + (reuse.hits > 0 ? "; base outputs reused for \(reuse.hits) of \(reuse.hits + reuse.misses) prompt variants" : "")
             + String(format: "; %.1f s", outcome.seconds))
        // What changed since the previous run of this inventory.
        let ids = try store.runIDs(inventory: inv.file.path)
        if let at = ids.firstIndex(of: outcome.runID), at > 0 {
            emit(SweepDiff.render(try SweepDiff.changes(store, from: ids[at - 1], to: outcome.runID), from: ids[at - 1], to: outcome.runID))
        }
        if let junit {
            try AtomicFileWriter.write(Array(JUnit.render(results: outcome.results, runID: outcome.runID,
                                                          name: inv.file.lastPathComponent).utf8),
                                       to: URL(fileURLWithPath: junit))
        }
        let code = outcome.exitCode
        if code != 0 { throw ExitCode(code) }
    }
}

/// Resource limits from `--…-memory-limit` and `--…-cpu-limit` (defaults: ResourceLimits()).
func parseLimits(memory: String?, cpu: String?, wall: String?,
                 flags: (memory: String, cpu: String, wall: String)) throws -> ResourceLimits {
    var limits = ResourceLimits()
    if let memory {
        guard let b = ResourceLimits.parseBytes(memory) else {
            throw ValidationError("\(flags.memory) must be a size such as 16G, 512M or 64MiB, or `none`")
        }
        limits.addressSpaceBytes = b
    }
    if let cpu {
        guard let s = ResourceLimits.parseSeconds(cpu) else {
            throw ValidationError("\(flags.cpu) must be seconds, 90s, 30m or 2h, or `none`")
        }
        limits.cpuSeconds = s
    }
    if let wall {
        guard let s = ResourceLimits.parseSeconds(wall) else {
            throw ValidationError("\(flags.wall) must be seconds, 90s, 30m or 4h, or `none`")
        }
        limits.wallSeconds = s
    }
    return limits
}

/// The isolated worker (hidden): started by `assay sweep` and `assay scan --isolate` with a
/// socket on fd 3; it reads its request there, applies its limits and does the model work.
struct SweepWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: WorkerProcess.subcommand,
        abstract: "Internal: the isolated worker `assay sweep` and `assay scan --isolate` start.",
        shouldDisplay: false)
    @Option(help: "Threads (default: all cores).") var threads: Int?

    func run() throws {
        Parallel.configure(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        try SweepWorker.serve()
    }
}

struct SweepDiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "What changed between two runs: files and adapters, verdicts, findings, divergence beyond its interval.")
    @Argument(help: "inventory.yaml (locates the default history and limits runs to this inventory).") var inventory: String?
    @OptionGroup var history: HistoryArguments
    @Option(help: "Earlier run id (default: the run before --to).") var from: String?
    @Option(help: "Later run id (default: the latest).") var to: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let invURL = inventory.map { URL(fileURLWithPath: $0) }
        let store = try history.open(inventory: invURL, create: false)
        let scope = try invURL.map { try Inventory.load($0).file.path }
        let ids = try store.runIDs(inventory: scope)
        guard let later = to ?? ids.last else { throw SweepError.invalid("no runs recorded in \(store.path.terminalSafe)") }
        guard try ids.contains(later) || store.runIDs().contains(later) else {
            throw SweepError.invalid("no run \(later.terminalSafe) in \(store.path.terminalSafe)")
        }
        guard let earlier = from ?? ids.firstIndex(of: later).flatMap({ $0 > 0 ? ids[$0 - 1] : nil }) else {
            emit("only one run recorded (\(later)); nothing to compare")
            return
        }
        let changes = try SweepDiff.changes(store, from: earlier, to: later)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try enc.encode(changes), as: UTF8.self))
        } else {
            emit(SweepDiff.render(changes, from: earlier, to: later))
        }
    }
}

struct SweepReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a self-contained HTML dashboard of the history: verdicts per entry over runs and divergence trends (SVG).")
    @Argument(help: "inventory.yaml (locates the default history).") var inventory: String?
    @OptionGroup var history: HistoryArguments
    @Option(help: "Output directory (index.html is written there).") var out: String

    func run() throws {
        let store = try history.open(inventory: inventory.map { URL(fileURLWithPath: $0) }, create: false)
        let html = try Dashboard.render(store)
        let dir = URL(fileURLWithPath: out)
        do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
            throw FileWriteError.cannotCreate(path: dir.path, reason: error.localizedDescription)
        }
        try AtomicFileWriter.write(Array(html.utf8), to: dir.appendingPathComponent("index.html"))
        emit("dashboard: \(dir.appendingPathComponent("index.html").path)")
    }
}

struct SweepMerge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Fold shard histories into one; rows already present are kept.",
        discussion: "Either side may be an SQLite file or a postgres:// URL "
            + "(e.g. shard files into the shared server, or the server into a local file).")
    @Option(help: "The history to merge into: a file (created when absent) or a postgres:// URL.") var into: String
    @Argument(help: "Shard histories: SQLite files or postgres:// URLs.") var shards: [String]

    func validate() throws { guard !shards.isEmpty else { throw ValidationError("give at least one shard history") } }

    func run() throws {
        // Open every source first: a bad file stops the merge before anything is written.
        let sources = try shards.map { try HistoryStore.open(HistoryArguments.resolve($0), create: false) }
        let target = try HistoryStore.open(HistoryArguments.resolve(into))
        var added = 0
        for s in sources { added += try target.merge(from: s) }
        emit("merged \(sources.count) histories into \(target.path): \(added) entry results added")
    }
}

struct BaselineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baseline",
        abstract: "Approved baselines: a deployed model's behaviour is compared with what was approved in every sweep.",
        subcommands: [BaselineApprove.self, BaselineShow.self])
}

struct BaselineApprove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Approve an entry's current model: record its behavioural fingerprint and weight hashes (who, when).",
        discussion: "The model is loaded and run in a worker process under limits, as a sweep entry is.")
    @Argument(help: "Entry id.") var entry: String
    @Option(help: "inventory.yaml") var inventory: String
    @OptionGroup var history: HistoryArguments
    @Option(help: "Who approves (default: $USER).") var by: String?
    @Option(help: "Response positions fingerprinted per probe.") var responseTokens = 8
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "Address-space limit of the worker: 16G, 512M, none (default: the smaller of 16 GiB and 75% of memory).")
    var memoryLimit: String?
    @Option(help: "CPU time limit, summed over threads: 7200, 90s, 30m, 2h, none (default: 2h).") var cpuLimit: String?
    @Option(help: "Wall-clock limit: 14400, 90s, 30m, 4h, none (default: 4h).") var timeLimit: String?

    func limits() throws -> ResourceLimits {
        try parseLimits(memory: memoryLimit, cpu: cpuLimit, wall: timeLimit, flags: ("--memory-limit", "--cpu-limit", "--time-limit"))
    }

    func validate() throws {
        guard (1...64).contains(responseTokens) else { throw ValidationError("--response-tokens must be between 1 and 64") }
        _ = try limits()
    }

    func run() throws {
        let invURL = URL(fileURLWithPath: inventory)
        let inv = try Inventory.load(invURL)
        let store = try history.open(inventory: invURL)
        var o = SweepOptions()
        o.scan.responseTokens = responseTokens
        o.isolation.threads = threads
        o.isolation.limits = try limits()
        let who = by ?? ProcessInfo.processInfo.environment["USER"] ?? "unknown"
        let b = try SweepRunner(inventory: inv, store: store, options: o).approve(entry, by: who)
        emit("approved \(entry) at \(b.approvedAt) by \(who.terminalSafe): "
             + "\(b.fingerprint.probes.count) probes fingerprinted, \(b.files.count) weight files pinned")
    }
}

struct BaselineShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show an entry's approved baseline.")
    @Argument(help: "Entry id.") var entry: String
    @Option(help: "inventory.yaml") var inventory: String
    @OptionGroup var history: HistoryArguments

    func run() throws {
        let store = try history.open(inventory: URL(fileURLWithPath: inventory), create: false)
        guard let b = try store.baseline(entry: entry) else { throw SweepError.invalid("no baseline approved for `\(entry.terminalSafe)`") }
        var s = "\(entry): approved \(b.approvedAt) by \(b.approvedBy.terminalSafe); "
            + "\(b.fingerprint.probes.count) probes, K = \(b.fingerprint.responseTokens), top-\(b.fingerprint.topK)\n"
        for f in b.files { s += "  \(f.role) \(f.path.terminalSafe) \(f.sha256)\n" }
        emit(s)
    }
}
