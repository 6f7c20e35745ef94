import ArgumentParser
import Foundation
import AssayCommon
import Models
import Probes
import Provenance
import Reports
import Scan
import Stats
import TensorCore
import Tokenizers
import WeightDiff
import Pipeline
import Sweep

struct ScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Compare a fine-tune (or LoRA adapter) with its base on probe and trigger suites; gate on the verdict.",
        discussion: "Exit 0 pass or warn, 1 fail, 2 invalid input or error, 3 nothing could be scanned, 4 usage."
    )
    @OptionGroup var scan: ScanArguments
    @OptionGroup var discovery: DiscoveryArguments

    func run() throws { try scan.execute(discovery: discovery, knownTriggers: true) }
}

struct TriggerSearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trigger-search",
        abstract: "Search for triggers in no list (and, with --invert-targets, invert attack targets); report like a scan.",
        discussion: """
        The known trigger list supplies search candidates and its controls the null; the suite's probes are split into \
        search and held-out probes. Exit 0 nothing found, 1 a finding at a failing severity, 2 invalid input, 3 too few probes.
        """
    )
    @OptionGroup var scan: ScanArguments
    @OptionGroup var discovery: DiscoveryArguments

    func run() throws {
        var d = discovery
        d.searchTriggers = true
        try scan.execute(discovery: d, knownTriggers: false)
    }
}

/// Trigger search and target inversion settings, shared by `scan` and `trigger-search`.
struct DiscoveryArguments: ParsableArguments {
    @Flag(help: "Search for triggers in no list (beam search over rare, unusual and moved vocabulary entries; finding discovered_trigger).")
    var searchTriggers = false
    @Flag(help: """
        Force every vocabulary entry as the first response token and report what the fine-tune completes far more surely than its base \
        (finding inverted_target).
        """)
    var invertTargets = false
    @Option(help: "Single-token candidates the trigger search screens (a smaller vocabulary is screened whole).")
    var screenCandidates = 1024
    @Option(help: "Best screened candidates scored in every insertion mode on all search probes.") var searchCandidates = 48
    @Option(help: "Probes the search scores candidates on (the next --held-out-probes judge them).") var searchProbes = 4
    @Option(help: "Held-out probes the found triggers are verified on.") var heldOutProbes = 16
    @Option(help: "Longest trigger the search builds, in tokens.") var maxTriggerTokens = 4
    @Option(help: """
        Benign prompts every vocabulary entry is forced after in target inversion's first round (default: 1–8, as many as fit 65,536 \
        forced steps).
        """)
    var inversionPrompts: Int?
    @Option(help: "Entries target inversion extends and judges on held-out prompts.") var inversionSurvivors = 128

    func validate() throws {
        guard (1...1_000_000).contains(screenCandidates) else { throw ValidationError("--screen-candidates must be between 1 and 1000000") }
        guard (1...100_000).contains(searchCandidates) else { throw ValidationError("--search-candidates must be between 1 and 100000") }
        guard (1...256).contains(searchProbes) else { throw ValidationError("--search-probes must be between 1 and 256") }
        guard (3...1024).contains(heldOutProbes) else { throw ValidationError("--held-out-probes must be between 3 and 1024") }
        guard (1...8).contains(maxTriggerTokens) else { throw ValidationError("--max-trigger-tokens must be between 1 and 8") }
        if let inversionPrompts, !(1...64).contains(inversionPrompts) {
            throw ValidationError("--inversion-prompts must be between 1 and 64")
        }
        guard (1...4096).contains(inversionSurvivors) else { throw ValidationError("--inversion-survivors must be between 1 and 4096") }
    }

    var options: DiscoveryOptions {
        var o = DiscoveryOptions()
        o.screenCandidates = screenCandidates
        o.candidates = searchCandidates
        o.searchProbes = searchProbes
        o.heldOutProbes = heldOutProbes
        o.maxTriggerTokens = maxTriggerTokens
        o.inversionPrompts = inversionPrompts
        o.inversionSurvivors = inversionSurvivors
        return o
    }
}

struct ScanArguments: ParsableArguments {
    @Option(help: "Base model directory or GGUF file.") var base: String
    @Option(help: "Fine-tuned model directory or GGUF file.") var tuned: String?
    @Option(help: "PEFT LoRA adapter directory, applied to the base (instead of --tuned).") var adapter: String?
    @Option(help: "Probe suite file (repeatable; default: probes/default.jsonl).") var suite: [String] = []
    @Option(help: "Trigger file (default: probes/triggers.jsonl).") var triggers: String?
    @Option(help: "Policy file (JSON; docs/usage.md lists the keys and defaults).") var policy: String?
    @Option(help: "Report directory (default: reports/<run>).") var out: String?
    @Option(help: "Seed for every random choice.") var seed: UInt64 = 0
    @Option(help: "Response positions compared per continuation.") var responseTokens = 8
    @Option(help: "Probes each trigger × insertion mode is inserted into.") var probesPerTrigger = 16
    @Option(help: "Prompt variants per batch (results do not depend on it).") var batchSize = 96
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Do not fork triggered prompts from their clean prompt's cache (results are identical; for benchmarking).")
    var noPromptSharing = false
    @Flag(help: "Compute the leading blocks base and tuned share bitwise separately for each (results are identical; for benchmarking).")
    var noLayerSharing = false
    @Flag(help: "Scan even when base and tuned tokenizer files differ.") var allowTokenizerMismatch = false
    @Flag(help: "Print report.json to stdout as well.") var json = false
    @Flag(help: """
        Run the model work in a child process under limits (docs/sweeps.md, "Isolation and limits"): a crash, trap or limit breach is an \
        error (exit 2) naming the signal or limit, and no report directory is left behind.
        """)
    var isolate = false
    @Option(help: """
        Address-space limit of the isolated scan: 16G, 512M, none (default: the smaller of 16 GiB and 75% of physical memory). Implies \
        --isolate.
        """)
    var memoryLimit: String?
    @Option(help: "CPU time limit of the isolated scan, summed over threads: 7200, 90s, 30m, 2h, none (default: 2h). Implies --isolate.")
    var cpuLimit: String?
    @Option(help: "Wall-clock limit of the isolated scan: 14400, 90s, 30m, 4h, none (default: 4h). Implies --isolate.")
    var timeLimit: String?

    func validate() throws {
        guard (tuned == nil) != (adapter == nil) else { throw ValidationError("give exactly one of --tuned and --adapter") }
        guard (1...64).contains(responseTokens) else { throw ValidationError("--response-tokens must be between 1 and 64") }
        guard (1...10_000).contains(probesPerTrigger) else { throw ValidationError("--probes-per-trigger must be between 1 and 10000") }
        guard (1...4096).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 4096") }
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be between 1 and 256") }
        _ = try limits()
    }

    var isolating: Bool { isolate || memoryLimit != nil || cpuLimit != nil || timeLimit != nil }

    func limits() throws -> ResourceLimits {
        try parseLimits(memory: memoryLimit, cpu: cpuLimit, wall: timeLimit, flags: ("--memory-limit", "--cpu-limit", "--time-limit"))
    }

    /// The scan these arguments describe.
    func job(discovery: DiscoveryArguments, knownTriggers: Bool) -> ScanJob {
        var job = ScanJob(base: URL(fileURLWithPath: base), tuned: tuned.map { URL(fileURLWithPath: $0) },
                          adapters: adapter.map { [URL(fileURLWithPath: $0)] } ?? [])
        job.suites = suite.map { URL(fileURLWithPath: $0) }
        job.triggers = triggers.map { URL(fileURLWithPath: $0) }
        job.policy = policy.map { URL(fileURLWithPath: $0) }
        job.options.seed = seed
        job.options.responseTokens = responseTokens
        job.options.probesPerTrigger = probesPerTrigger
        job.options.batchSize = batchSize
        job.options.sharePromptPrefixes = !noPromptSharing
        job.options.shareIdenticalLayers = !noLayerSharing
        job.searchTriggers = discovery.searchTriggers
        job.invertTargets = discovery.invertTargets
        job.discovery = discovery.options
        job.knownTriggers = knownTriggers
        job.allowTokenizerMismatch = allowTokenizerMismatch
        return job
    }

    func execute(discovery: DiscoveryArguments, knownTriggers: Bool) throws {
        let started = Date()
        let log = Log()
        let job = job(discovery: discovery, knownTriggers: knownTriggers)
        let roles: [(FileRole, URL)] = [(.base, job.base)] + (job.tuned.map { [(.tuned, $0)] } ?? [])
            + job.adapters.map { (.adapter(nil), $0) }
        for (role, u) in roles { if let missing = ScanPipeline.missingModel(role, u) { throw missing } }
        let outURL = URL(fileURLWithPath: out ?? "reports/\(Self.runName(started))")
        // Fail fast on an unwritable directory; a scan that fails later leaves no empty directory behind.
        let createdOut = try ReportWriter.prepare(outURL)
        var wroteReport = false
        defer { if createdOut && !wroteReport { ReportWriter.discardIfEmpty(outURL) } }

        let report: ScanReport
        if isolating {
            var isolation = IsolationOptions()
            isolation.limits = try limits()
            isolation.threads = threads
            report = try IsolatedScan.run(job, isolation: isolation, startedAt: started, say: { log.say($0) },
                                          progress: { done, total in log.progress(done, total, since: started) }, note: { printError($0) })
        } else {
            Parallel.configure(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
            let profiler = Profiler.fromEnvironment()
            let outcome = try ScanPipeline.run(job, profiler: profiler, say: { log.say($0) },
                                               progress: { done, total in log.progress(done, total, since: started) },
                                               startedAt: started)
            if profiler.enabled { printError("profile (ASSAY_PROFILE=1):\n" + profiler.report()) }
            report = outcome.report
        }
        try ReportWriter.write(report, to: outURL)
        wroteReport = true
        if json { emit(String(decoding: try report.json(), as: UTF8.self)) }
        let top = report.findings.first.map { " — \($0.severity.rawValue): \($0.title)" } ?? ""
        emit("\(report.verdict.rawValue.uppercased()): \(report.findings.count) finding(s)\(top)\nreports: \(outURL.path)")
        log.say(String(format: "done in %.1f s", Date().timeIntervalSince(started)))
        if report.verdict == .fail { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    static func runName(_ d: Date) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.timeZone = TimeZone(identifier: "UTC")
        return "scan-" + f.string(from: d)
    }
}

/// Progress on stderr: a rewritten line with an ETA on a terminal, plain lines otherwise.
final class Log: @unchecked Sendable {
    let tty = isatty(STDERR_FILENO) == 1
    var lastPrinted = -1

    func say(_ s: String) { printError((tty ? "\r\u{1B}[K" : "") + "assay: " + s) }

    func progress(_ done: Int, _ total: Int, since start: Date) {
        let pct = total == 0 ? 100 : done * 100 / total
        let elapsed = Date().timeIntervalSince(start)
        let eta = done == 0 ? 0 : elapsed / Double(done) * Double(total - done)
        if tty {
            FileHandle.standardError.write(Data(String(format: "\r\u{1B}[Kassay: %d/%d variants (%d%%), ETA %.0f s",
                                                       done, total, pct, eta).utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else if pct / 10 != lastPrinted / 10 || done == total {
            lastPrinted = pct
            printError("assay: progress \(done)/\(total) variants")
        }
    }
}
