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

// `assay bench scan`: the scan pipeline's throughput on a pair — tokens/s, probes/s, time per
// phase, peak RSS — recorded in the history store and compared with the last recorded run.

/// Scan throughput as a user-facing benchmark: the scan pipeline on a pair (default: the demo
/// pair), repeated; medians of tokens/s, probes/s and time per phase; recorded in the history
/// store and, with `compare`, set beside the last run recorded on this machine.
public struct ScanBenchmark: Sendable {
    public struct Options: Sendable {
        /// Base model directory.
        public var base: String
        /// Fine-tuned model directory.
        public var tuned: String?
        /// LoRA adapter directory (with neither `tuned` nor `adapter`: demo/backdoor-lora).
        public var adapter: String?
        /// Probe suites (empty: the built-in probes/default.jsonl).
        public var suite: [String]
        /// Trigger file (nil: the pipeline's default, probes/triggers.jsonl).
        public var triggers: String?
        /// Use the first N probes of the suites (0: all).
        public var maxProbes: Int
        /// Probes each trigger × insertion mode is inserted into.
        public var probesPerTrigger: Int
        /// Repeats (medians reported).
        public var repeats: Int
        /// Threads (nil: all cores).
        public var threads: Int?
        /// The history for the figures, as `HistoryStore.open` takes it: an SQLite file path or a
        /// postgres:// URL. (The CLI resolves --db, $ASSAY_DB and its default to this.)
        public var history: String
        /// Compare with the last recorded run of this pair on this machine.
        public var compare: Bool
        /// Regression threshold in percent for `compare`.
        public var threshold: Double
        /// Do not record the figures.
        public var noRecord: Bool
        /// Python with torch and transformers for a reference run of the base model's prefill and
        /// decode ("none" skips it; nil: as `ModelBenchmark.Options.reference`).
        public var reference: String?

        public init(base: String = ".models/SmolLM2-135M-Instruct", tuned: String? = nil, adapter: String? = nil,
                    suite: [String] = [], triggers: String? = nil, maxProbes: Int = 32, probesPerTrigger: Int = 2,
                    repeats: Int = 3, threads: Int? = nil, history: String = ".assay/history.sqlite", compare: Bool = false,
                    threshold: Double = 10.0, noRecord: Bool = false, reference: String? = nil) {
            self.base = base
            self.tuned = tuned
            self.adapter = adapter
            self.suite = suite
            self.triggers = triggers
            self.maxProbes = maxProbes
            self.probesPerTrigger = probesPerTrigger
            self.repeats = repeats
            self.threads = threads
            self.history = history
            self.compare = compare
            self.threshold = threshold
            self.noRecord = noRecord
            self.reference = reference
        }
    }

    /// What `bench scan --json` prints.
    public struct Output: Codable, Sendable {
        public var pair: String
        public var machine: Machine
        public var repeats: Int
        public var variants: Int
        public var probes: Int
        public var figures: [String: Double]
        public var previous: [String: Double]?
        public var regressions: [String]
        public var referenceNote: String?
    }

    public struct Machine: Codable, Sendable {
        public var cpu: String
        public var cores: Int
        public var threads: Int
        public var blas: String
        public var key: String { "\(cpu) × \(cores) cores, \(threads) threads" }
    }

    public struct Result: Sendable {
        public var output: Output
        /// The history the figures were recorded in and compared with (a file path, or the server
        /// URL without its password).
        public var historyPath: String
    }

    public var options: Options

    public init(options: Options = Options()) { self.options = options }

    static func cpuModel() -> String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        }
        return "unknown CPU"
    }

    /// Figures where a larger value is better; every other figure is a time or a size.
    static func higherIsBetter(_ name: String) -> Bool { name.hasSuffix("_per_s") }

    /// Measures, then records and compares in the history; `log` receives a line per repeat (for
    /// stderr). Regressions are in `output.regressions`.
    public func run(log: (String) -> Void = { _ in }) throws -> Result {
        let nThreads = options.threads ?? ProcessInfo.processInfo.activeProcessorCount
        Parallel.configure(threads: nThreads)
        let adapterPath = options.adapter ?? (options.tuned == nil ? "demo/backdoor-lora" : nil)
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("assay-bench-scan-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let job = try makeJob(adapterPath: adapterPath, tmp: tmp)
        let (samples, variants, probes) = try measure(job, tmp: tmp, log: log)
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        var figures = samples.mapValues(median)
        figures["peak_rss_mb"] = Double(usage.ru_maxrss) / 1024
        let machine = Machine(cpu: Self.cpuModel(), cores: ProcessInfo.processInfo.activeProcessorCount, threads: nThreads,
                              blas: BLAS.configuration)
        let tunedName = (options.tuned ?? adapterPath).map { URL(fileURLWithPath: $0).lastPathComponent } ?? "?"
        let pair = "\(URL(fileURLWithPath: options.base).lastPathComponent) + \(tunedName); \(probes) probes, \(variants) variants"
        let store = try HistoryStore.open(options.history)
        let previous = options.compare ? try store.lastBench(machine: machine.key, pair: pair)?.figures : nil
        let regressions = previous.map { regressionsSince($0, figures) } ?? []
        if !options.noRecord {
            try store.recordBench(BenchRecord(recordedAt: SweepRunner.now(), machine: machine.key, pair: pair, figures: figures))
        }
        let out = Output(pair: pair, machine: machine, repeats: options.repeats, variants: variants, probes: probes, figures: figures,
                         previous: previous, regressions: regressions, referenceNote: referenceComparison(figures))
        return Result(output: out, historyPath: store.path)
    }

    /// The scan to time; a probe subset (`maxProbes`) keeps it to minutes, written once to a
    /// temporary suite in `tmp`.
    func makeJob(adapterPath: String?, tmp: URL) throws -> ScanJob {
        var job = ScanJob(base: URL(fileURLWithPath: options.base), tuned: options.tuned.map { URL(fileURLWithPath: $0) },
                          adapters: adapterPath.map { [URL(fileURLWithPath: $0)] } ?? [])
        let suites = SuiteLoader.suitesOrBuiltin(options.suite.map { URL(fileURLWithPath: $0) })
        guard !suites.isEmpty else { throw ScanError.invalidInput("no suite given and the built-in probes/ directory was not found") }
        if options.maxProbes > 0 {
            let probes = Array(try suites.flatMap { try SuiteLoader.loadProbes($0).probes }.prefix(options.maxProbes))
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
        job.triggers = options.triggers.map { URL(fileURLWithPath: $0) }
        job.options.probesPerTrigger = options.probesPerTrigger
        return job
    }

    /// `repeats` runs of the scan (reports written too): every figure's samples.
    func measure(_ job: ScanJob, tmp: URL, log: (String) -> Void) throws -> (samples: [String: [Double]], variants: Int, probes: Int) {
        let prof = Profiler(enabled: true)
        var samples: [String: [Double]] = [:]
        var variants = 0, probes = 0
        for i in 0..<options.repeats {
            prof.reset()
            let t0 = Date()
            let outcome = try ScanPipeline.run(job, profiler: prof)
            let reportStart = DispatchTime.now().uptimeNanoseconds
            try ReportWriter.write(outcome.report, to: tmp.appendingPathComponent("reports-\(i)"))
            prof.add("reports", since: reportStart)
            let wall = Date().timeIntervalSince(t0)
            variants = outcome.report.summary.variants
            probes = outcome.report.summary.probes
            for (k, v) in Self.figures(prof.snapshot(), wall: wall, variants: variants, probes: probes) {
                samples[k, default: []].append(v)
            }
            log(String(format: "assay: repeat %d/%d: %.1f s", i + 1, options.repeats, wall))
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

    /// Figures that moved the wrong way by more than `threshold` percent since `last`.
    func regressionsSince(_ last: [String: Double], _ figures: [String: Double]) -> [String] {
        var regressions: [String] = []
        for (k, now) in figures.sorted(by: { $0.key < $1.key }) where k != "peak_rss_mb" {
            guard let then = last[k], then > 0 else { continue }
            let change = (now - then) / then * 100
            // Phases under 50 ms are noise at this resolution.
            if !Self.higherIsBetter(k) && max(now, then) < 0.05 { continue }
            if Self.higherIsBetter(k) ? change < -options.threshold : change > options.threshold {
                regressions.append(String(format: "%@ %.4g → %.4g (%+.1f%%)", k, then, now, change))
            }
        }
        return regressions
    }

    /// Hugging Face transformers on the base model's prefill and decode (the `bench model`
    /// workload), beside the scan's own token rates, when Python has torch and transformers.
    func referenceComparison(_ figures: [String: Double]) -> String? {
        let m = ModelBenchmark(options: ModelBenchmark.Options(
            model: options.base, threads: options.threads ?? ProcessInfo.processInfo.activeProcessorCount,
            probes: 32, tokens: 64, newTokens: 16, repeats: 1, reference: options.reference))
        let (r, note) = m.runReference()
        guard let r else { return note }
        return String(format: "Hugging Face transformers on %@ (batched prefill, batch-8 decode; one model): %.0f and %.1f tok/s; "
                          + "the scan's rates above cover both models: prefill %.2f×, decode %.2f× transformers'",
                      URL(fileURLWithPath: options.base).lastPathComponent, r.prefillLastTokensPerSecond, r.decodeBatch8TokensPerSecond,
                      (figures["prefill_tokens_per_s"] ?? 0) / max(r.prefillLastTokensPerSecond, 1e-9),
                      (figures["decode_tokens_per_s"] ?? 0) / max(r.decodeBatch8TokensPerSecond, 1e-9))
    }
}
