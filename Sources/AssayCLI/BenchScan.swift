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
        abstract: "Scan throughput on a pair: tokens/s, probes/s, time per phase, peak RSS; recorded in the history, --compare to gate on regressions.",
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
    @Option(help: "Python with torch and transformers for a reference run of the base model's prefill/decode ('none' to skip).") var reference: String?
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
        var job = ScanJob(base: URL(fileURLWithPath: base), tuned: tuned.map { URL(fileURLWithPath: $0) },
                          adapters: adapterPath.map { [URL(fileURLWithPath: $0)] } ?? [])
        // A probe subset keeps the benchmark to minutes: written once to a temporary suite.
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("assay-bench-scan-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let suites = suite.isEmpty ? [SuiteLoader.builtinDirectory()?.appendingPathComponent("default.jsonl")].compactMap { $0 } : suite.map { URL(fileURLWithPath: $0) }
        guard !suites.isEmpty else { throw ScanError.invalidInput("no suite given and the built-in probes/ directory was not found") }
        if maxProbes > 0 {
            var probes = try suites.flatMap { try SuiteLoader.loadProbes($0).probes }
            probes = Array(probes.prefix(maxProbes))
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
            let (sec, counts) = prof.snapshot()
            variants = outcome.report.summary.variants
            probes = outcome.report.summary.probes
            var f: [String: Double] = [:]
            f["wall_s"] = wall
            f["load_s"] = sec["load"] ?? 0
            f["weights_s"] = sec["weights"] ?? 0
            f["tokenize_s"] = sec["scan.tokenize"] ?? 0
            f["paired_prefill_s"] = sec["scan.prefill"] ?? 0
            f["base_forward_s"] = (sec["scan.run.base"] ?? 0) + (sec["scan.cross.base"] ?? 0)
            f["tuned_forward_s"] = (sec["scan.run.tuned"] ?? 0) + (sec["scan.cross.tuned"] ?? 0)
            f["statistics_s"] = (sec["statistics"] ?? 0) + (sec["scan.compare"] ?? 0)
            f["reports_s"] = sec["reports"] ?? 0
            f["prefill_tokens_per_s"] = Double(counts["tokens.prefill"] ?? 0) / max(sec["scan.prefill"] ?? 0, 1e-9)
            let decodeSeconds = (sec["scan.run.base"] ?? 0) + (sec["scan.run.tuned"] ?? 0) + (sec["scan.cross.base"] ?? 0) + (sec["scan.cross.tuned"] ?? 0)
            f["decode_tokens_per_s"] = Double((counts["tokens.decode"] ?? 0) + (counts["tokens.cross"] ?? 0)) / max(decodeSeconds, 1e-9)
            f["probes_per_s"] = Double(probes) / wall
            f["variants_per_s"] = Double(variants) / wall
            for (k, v) in f { samples[k, default: []].append(v) }
            if !json { printError(String(format: "assay: repeat %d/%d: %.1f s", i + 1, repeats, wall)) }
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        var figures = samples.mapValues { xs in let s = xs.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
        figures["peak_rss_mb"] = Double(usage.ru_maxrss) / 1024
        let machine = Machine(cpu: Self.cpuModel(), cores: ProcessInfo.processInfo.activeProcessorCount, threads: nThreads, blas: BLAS.configuration)
        let pair = "\(URL(fileURLWithPath: base).lastPathComponent) + \((tuned ?? adapterPath).map { URL(fileURLWithPath: $0).lastPathComponent } ?? "?"); \(probes) probes, \(variants) variants"

        let store = try HistoryStore.open(HistoryArguments.resolve(
            db ?? HistoryArguments.environmentDB ?? ".assay/history.sqlite"))
        var previous: [String: Double]?
        var regressions: [String] = []
        if compare, let last = try store.lastBench(machine: machine.key, pair: pair) {
            previous = last.figures
            for (k, now) in figures.sorted(by: { $0.key < $1.key }) where k != "peak_rss_mb" {
                guard let then = last.figures[k], then > 0 else { continue }
                let change = (now - then) / then * 100
                // Phases under 50 ms are noise at this resolution.
                if !Self.higherIsBetter(k) && max(now, then) < 0.05 { continue }
                if Self.higherIsBetter(k) ? change < -threshold : change > threshold {
                    regressions.append(String(format: "%@ %.4g → %.4g (%+.1f%%)", k, then, now, change))
                }
            }
        }
        if !noRecord {
            try store.recordBench(BenchRecord(recordedAt: SweepRunner.now(), machine: machine.key, pair: pair, figures: figures))
        }
        let referenceNote = referenceComparison(figures)
        let out = Output(pair: pair, machine: machine, repeats: repeats, variants: variants, probes: probes, figures: figures,
                         previous: previous, regressions: regressions, referenceNote: referenceNote)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try enc.encode(out), as: UTF8.self))
        } else {
            var s = "scan benchmark: \(pair)\nmachine: \(machine.cpu), \(machine.cores) cores, \(nThreads) threads, BLAS \(machine.blas)\n"
            s += "median of \(repeats)\(previous != nil ? "; previous run on this machine beside it" : "")\n\n"
            for (k, v) in figures.sorted(by: { $0.key < $1.key }) {
                s += "  \(k.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(format: "%12.3f", v))"
                if let p = previous?[k] { s += String(format: "   was %12.3f  (%+.1f%%)", p, (v - p) / max(p, 1e-12) * 100) }
                s += "\n"
            }
            if let referenceNote { s += "\n\(referenceNote)\n" }
            if compare && previous == nil { s += "\nno earlier run of this pair on this machine in \(store.path): nothing to compare\n" }
            for r in regressions { s += "REGRESSION: \(r)\n" }
            emit(s)
        }
        if !regressions.isEmpty { throw ExitCode(ExitStatus.findings.rawValue) }
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
        return String(format: "Hugging Face transformers on %@ (batched prefill, batch-8 decode; one model): %.0f and %.1f tok/s; the scan's rates above cover both models: prefill %.2f×, decode %.2f× transformers'",
                      URL(fileURLWithPath: base).lastPathComponent, r.prefillLastTokensPerSecond, r.decodeBatch8TokensPerSecond,
                      (figures["prefill_tokens_per_s"] ?? 0) / max(r.prefillLastTokensPerSecond, 1e-9),
                      (figures["decode_tokens_per_s"] ?? 0) / max(r.decodeBatch8TokensPerSecond, 1e-9))
    }
}
