import ArgumentParser
import Foundation
import AssayCommon
import History
import Models
import Pipeline
import Probes
import Reports
import Scan
import Sweep
import TensorCore

/// Scan throughput as a user-facing benchmark: the scan pipeline on a pair (default: the demo
/// pair), repeated; medians of tokens/s, probes/s and time per phase; recorded in the history
/// store and, with --compare, set beside the last run recorded on this machine.
struct BenchScan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Scan throughput on a pair: tokens/s, probes/s, time per phase, peak RSS; "
            + "recorded in the history, --compare to gate on regressions.",
        discussion: "Exit 0, or 1 with --compare when a figure regressed beyond --threshold against the last recorded run on this machine."
    )
    @Option(help: "Base model directory (default: .models/SmolLM2-135M-Instruct).") var base = ".models/SmolLM2-135M-Instruct"
    @Option(help: "Fine-tuned model directory.") var tuned: String?
    @Option(help: "LoRA adapter directory (default with neither: demo/backdoor-lora).") var adapter: String?
    @Option(help: "Probe suite (default: probes/default.jsonl).") var suite: [String] = []
    @Option(help: "Trigger file (default: probes/triggers.jsonl).") var triggers: String?
    @Option(help: "Use the first N probes of the suites (0: all).") var maxProbes = 32
    @Option(help: "Probes each trigger × insertion mode is inserted into.") var probesPerTrigger = 2
    @Option(help: "Repeats (medians reported).") var repeats = 3
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "History for the figures: an SQLite file or a postgres:// URL (default: $ASSAY_DB, else .assay/history.sqlite).")
    var db: String?
    @Flag(help: "Compare with the last recorded run of this pair on this machine; exit 1 on a regression.") var compare = false
    @Option(help: "Regression threshold in percent for --compare.") var threshold = 10.0
    @Flag(help: "Do not record the figures.") var noRecord = false
    @Option(help: "Python with torch and transformers for a reference run of the base model's prefill/decode ('none' to skip).")
    var reference: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (0...100_000).contains(maxProbes), (1...10_000).contains(probesPerTrigger), (1...100).contains(repeats) else {
            throw ValidationError("--max-probes, --probes-per-trigger or --repeats out of range")
        }
        guard threshold > 0 && threshold < 1000 else { throw ValidationError("--threshold must be a percentage above 0") }
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be between 1 and 256") }
        guard tuned == nil || adapter == nil else { throw ValidationError("give at most one of --tuned and --adapter") }
    }

    struct Output: Codable {
        var pair: String
        var machine: Machine
        var repeats: Int
        var variants: Int
        var probes: Int
        var figures: [String: Double]
        var previous: [String: Double]?
        var regressions: [String]
        var referenceNote: String?
    }

    struct Machine: Codable {
        var cpu: String
        var cores: Int
        var threads: Int
        var blas: String
        var key: String { "\(cpu) × \(cores) cores, \(threads) threads" }
    }

    static func cpuModel() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        }
        return "unknown CPU"
    }

    /// Figures where a larger value is better; every other figure is a time or a size.
    static func higherIsBetter(_ name: String) -> Bool { name.hasSuffix("_per_s") }

    func run() throws {
        let nThreads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        Parallel.configure(threads: nThreads)
        let adapterPath = adapter ?? (tuned == nil ? "demo/backdoor-lora" : nil)
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("assay-bench-scan-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let job = try makeJob(adapterPath: adapterPath, tmp: tmp)
        let (samples, variants, probes) = try measure(job, tmp: tmp)
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        var figures = samples.mapValues { xs in
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        figures["peak_rss_mb"] = Double(usage.ru_maxrss) / 1024
        let machine = Machine(cpu: Self.cpuModel(), cores: ProcessInfo.processInfo.activeProcessorCount, threads: nThreads,
                              blas: BLAS.configuration)
        let tunedName = (tuned ?? adapterPath).map { URL(fileURLWithPath: $0).lastPathComponent } ?? "?"
        let pair = "\(URL(fileURLWithPath: base).lastPathComponent) + \(tunedName); \(probes) probes, \(variants) variants"
        let store = try HistoryStore.open(HistoryArguments.resolve(
            db ?? HistoryArguments.environmentDB ?? ".assay/history.sqlite"))
        let previous = compare ? try store.lastBench(machine: machine.key, pair: pair)?.figures : nil
        let regressions = previous.map { regressionsSince($0, figures) } ?? []
        if !noRecord {
            try store.recordBench(BenchRecord(recordedAt: SweepRunner.now(), machine: machine.key, pair: pair, figures: figures))
        }
        let out = Output(pair: pair, machine: machine, repeats: repeats, variants: variants, probes: probes, figures: figures,
                         previous: previous, regressions: regressions, referenceNote: referenceComparison(figures))
        emit(try render(out, historyPath: store.path))
        if !regressions.isEmpty { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    /// The scan to time; a probe subset (`--max-probes`) keeps it to minutes, written once to a
    /// temporary suite in `tmp`.
    func makeJob(adapterPath: String?, tmp: URL) throws -> ScanJob {
        var job = ScanJob(base: URL(fileURLWithPath: base), tuned: tuned.map { URL(fileURLWithPath: $0) },
                          adapters: adapterPath.map { [URL(fileURLWithPath: $0)] } ?? [])
        let suites = suite.isEmpty
            ? [SuiteLoader.builtinDirectory()?.appendingPathComponent("default.jsonl")].compactMap { $0 }
            : suite.map { URL(fileURLWithPath: $0) }
        guard !suites.isEmpty else { throw ScanError.invalidInput("no suite given and the built-in probes/ directory was not found") }
        if maxProbes > 0 {
            let probes = Array(try suites.flatMap { try SuiteLoader.loadProbes($0).probes }.prefix(maxProbes))
            var lines = [#"{"assay_suite": 1, "kind": "probes", "name": "bench-subset"}"#]
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            for p in probes { lines.append(String(decoding: try enc.encode(p), as: UTF8.self)) }
            let url = tmp.appendingPathComponent("bench.jsonl")
            try AtomicFileWriter.write(Array((lines.joined(separator: "\n") + "\n").utf8), to: url)
            job.suites = [url]
        } else {
            job.suites = suites
        }
        job.triggers = triggers.map { URL(fileURLWithPath: $0) }
        job.options.probesPerTrigger = probesPerTrigger
        return job
    }

    /// `--repeats` runs of the scan (reports written too): every figure's samples.
    func measure(_ job: ScanJob, tmp: URL) throws -> (samples: [String: [Double]], variants: Int, probes: Int) {
        let prof = PhaseProfile.shared
        prof.enabled = true
        var samples: [String: [Double]] = [:]
        var variants = 0, probes = 0
        for i in 0..<repeats {
            prof.reset()
            let t0 = Date()
            let outcome = try ScanPipeline.run(job)
            let reportStart = DispatchTime.now().uptimeNanoseconds
            try ReportWriter.write(outcome.report, to: tmp.appendingPathComponent("reports-\(i)"))
            prof.add("reports", since: reportStart)
            let wall = Date().timeIntervalSince(t0)
            variants = outcome.report.summary.variants
            probes = outcome.report.summary.probes
            for (k, v) in Self.figures(prof.snapshot(), wall: wall, variants: variants, probes: probes) {
                samples[k, default: []].append(v)
            }
            if !json { printError(String(format: "assay: repeat %d/%d: %.1f s", i + 1, repeats, wall)) }
        }
        return (samples, variants, probes)
    }

    /// One run's figures from its profile: phase times and token rates.
    static func figures(_ profile: (seconds: [String: Double], counts: [String: Int]), wall: Double, variants: Int,
                        probes: Int) -> [String: Double] {
        let (sec, counts) = profile
        func t(_ k: String) -> Double { sec[k] ?? 0 }
        var f: [String: Double] = [:]
        f["wall_s"] = wall
        f["load_s"] = t("load")
        f["weights_s"] = t("weights")
        f["tokenize_s"] = t("scan.tokenize")
        f["paired_prefill_s"] = t("scan.prefill")
        f["base_forward_s"] = t("scan.run.base") + t("scan.cross.base")
        f["tuned_forward_s"] = t("scan.run.tuned") + t("scan.cross.tuned")
        f["statistics_s"] = t("statistics") + t("scan.compare")
        f["reports_s"] = t("reports")
        f["prefill_tokens_per_s"] = Double(counts["tokens.prefill"] ?? 0) / max(t("scan.prefill"), 1e-9)
        let decodeSeconds = t("scan.run.base") + t("scan.run.tuned") + t("scan.cross.base") + t("scan.cross.tuned")
        f["decode_tokens_per_s"] = Double((counts["tokens.decode"] ?? 0) + (counts["tokens.cross"] ?? 0)) / max(decodeSeconds, 1e-9)
        f["probes_per_s"] = Double(probes) / wall
        f["variants_per_s"] = Double(variants) / wall
        return f
    }

    /// Figures that moved the wrong way by more than `--threshold` percent since `last`.
    func regressionsSince(_ last: [String: Double], _ figures: [String: Double]) -> [String] {
        var regressions: [String] = []
        for (k, now) in figures.sorted(by: { $0.key < $1.key }) where k != "peak_rss_mb" {
            guard let then = last[k], then > 0 else { continue }
            let change = (now - then) / then * 100
            // Phases under 50 ms are noise at this resolution.
            if !Self.higherIsBetter(k) && max(now, then) < 0.05 { continue }
            if Self.higherIsBetter(k) ? change < -threshold : change > threshold {
                regressions.append(String(format: "%@ %.4g → %.4g (%+.1f%%)", k, then, now, change))
            }
        }
        return regressions
    }

    func render(_ out: Output, historyPath: String) throws -> String {
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            return String(decoding: try enc.encode(out), as: UTF8.self)
        }
        let machine = out.machine
        var s = "scan benchmark: \(out.pair)\nmachine: \(machine.cpu), \(machine.cores) cores, "
            + "\(machine.threads) threads, BLAS \(machine.blas)\n"
        s += "median of \(repeats)\(out.previous != nil ? "; previous run on this machine beside it" : "")\n\n"
        for (k, v) in out.figures.sorted(by: { $0.key < $1.key }) {
            s += "  \(k.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(format: "%12.3f", v))"
            if let p = out.previous?[k] { s += String(format: "   was %12.3f  (%+.1f%%)", p, (v - p) / max(p, 1e-12) * 100) }
            s += "\n"
        }
        if let note = out.referenceNote { s += "\n\(note)\n" }
        if compare && out.previous == nil { s += "\nno earlier run of this pair on this machine in \(historyPath): nothing to compare\n" }
        for r in out.regressions { s += "REGRESSION: \(r)\n" }
        return s
    }

    /// Hugging Face transformers on the base model's prefill and decode (the `bench model`
    /// workload), beside the scan's own token rates, when Python has torch and transformers.
    func referenceComparison(_ figures: [String: Double]) -> String? {
        var m = BenchModel()
        m.model = base
        m.threads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        m.probes = 32; m.tokens = 64; m.newTokens = 16; m.repeats = 1
        m.reference = reference
        let (r, note) = m.runReference()
        guard let r else { return note }
        return String(format: "Hugging Face transformers on %@ (batched prefill, batch-8 decode; one model): %.0f and %.1f tok/s; "
                          + "the scan's rates above cover both models: prefill %.2f×, decode %.2f× transformers'",
                      URL(fileURLWithPath: base).lastPathComponent, r.prefillLastTokensPerSecond, r.decodeBatch8TokensPerSecond,
                      (figures["prefill_tokens_per_s"] ?? 0) / max(r.prefillLastTokensPerSecond, 1e-9),
                      (figures["decode_tokens_per_s"] ?? 0) / max(r.decodeBatch8TokensPerSecond, 1e-9))
    }
}
