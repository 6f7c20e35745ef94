import Foundation
import AssayCommon
import Models
import TensorCore

// `assay bench model`: a model's throughput — batched prefill (logits at the last position and
// at every position), greedy decode at batch 1 and 8, load time and peak RSS — and the same
// workload through Hugging Face transformers when Python has it.

/// Model throughput: batched prefill (logits at the last position and at every position),
/// greedy decode at batch 1 and 8, load time and peak RSS; optionally the same workload through
/// Hugging Face transformers (scripts/bench/transformers_reference.py) and the ratio.
public struct ModelBenchmark: Sendable {
    public struct Options: Sendable {
        /// Model directory.
        public var model: String
        /// Threads for BLAS (and for the reference's torch).
        public var threads: Int
        /// Probes in the prefill batch.
        public var probes: Int
        /// Tokens per probe.
        public var tokens: Int
        /// New tokens per decode run.
        public var newTokens: Int
        /// Repeats (median reported).
        public var repeats: Int
        /// Python interpreter with torch and transformers for the reference run; "none" skips it; nil:
        /// .venv-fixtures/bin/python if present, else python3.
        public var reference: String?

        public init(model: String = ".models/SmolLM2-135M-Instruct", threads: Int = 2, probes: Int = 32, tokens: Int = 64,
                    newTokens: Int = 64, repeats: Int = 3, reference: String? = nil) {
            self.model = model
            self.threads = threads
            self.probes = probes
            self.tokens = tokens
            self.newTokens = newTokens
            self.repeats = repeats
            self.reference = reference
        }
    }

    public struct Figures: Codable, Sendable {
        public var loadSeconds: Double
        public var prefillLastTokensPerSecond: Double
        public var prefillAllTokensPerSecond: Double
        public var decodeBatch1TokensPerSecond: Double
        public var decodeBatch8TokensPerSecond: Double
        public var peakRSSMegabytes: Double
        enum CodingKeys: String, CodingKey {
            case loadSeconds = "load_seconds", prefillLastTokensPerSecond = "prefill_last_tok_s"
            case prefillAllTokensPerSecond = "prefill_all_tok_s", decodeBatch1TokensPerSecond = "decode_b1_tok_s"
            case decodeBatch8TokensPerSecond = "decode_b8_tok_s", peakRSSMegabytes = "peak_rss_mb"
        }
    }

    public struct Result: Codable, Sendable {
        public var model: String
        public var threads: Int
        public var workload: String
        public var assay: Figures
        public var reference: Figures?
        public var referenceNote: String?
    }

    public var options: Options

    public init(options: Options = Options()) { self.options = options }

    /// The same deterministic token ids the reference script builds.
    static func ids(_ seq: Int, _ len: Int, vocab: Int) -> [Int] {
        (0..<len).map { t in (seq * 7919 + t * 104_729 + 12_345) % vocab }
    }

    /// Loads the model `repeats` times, then prefill, decode and the reference run; `log`
    /// receives the ASSAY_PROFILE=1 phase reports (for stderr).
    public func run(log: (String) -> Void = { _ in }) throws -> Result {
        Parallel.configure(threads: options.threads)
        var loads: [Double] = []
        var m: (any CausalLanguageModel)?
        for _ in 0..<options.repeats {
            let t0 = now()
            m = try ModelLoader.load(URL(fileURLWithPath: options.model))
            loads.append(now() - t0)
        }
        let lm = m!
        // ASSAY_PROFILE=1: the forward's phases (its taps) for the last-position prefill and for decode at b=1.
        let profiler = Profiler.fromEnvironment()
        lm.tap = profiler.tap
        let last = try prefill(lm, all: false)
        if profiler.enabled { log("profile, prefill (last position):\n" + profiler.report()) }
        lm.tap = nil
        let all = try prefill(lm, all: true)
        profiler.reset()
        lm.tap = profiler.tap
        let d1 = try decode(lm, batch: 1)
        if profiler.enabled { log("profile, decode b=1:\n" + profiler.report()) }
        lm.tap = nil
        let d8 = try decode(lm, batch: 8)
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let ours = Figures(loadSeconds: median(loads), prefillLastTokensPerSecond: last, prefillAllTokensPerSecond: all,
                           decodeBatch1TokensPerSecond: d1, decodeBatch8TokensPerSecond: d8,
                           peakRSSMegabytes: Double(usage.ru_maxrss) / 1024)
        let workload = "prefill \(options.probes)×\(options.tokens); decode \(options.newTokens) new tokens after 16-token prompts"
        var result = Result(model: options.model, threads: options.threads, workload: workload, assay: ours)
        (result.reference, result.referenceNote) = runReference()
        return result
    }

    /// Prefill tokens/s of `probes` prompts of `tokens` ids in one batch, logits at the last
    /// position or at every position.
    func prefill(_ lm: any CausalLanguageModel, all: Bool) throws -> Double {
        let prompts = (0..<options.probes).map { Self.ids($0, options.tokens, vocab: lm.vocabularySize) }
        var ts: [Double] = []
        for _ in 0..<options.repeats {
            let batch = prompts.map { SequenceInput(tokens: $0, logitPositions: all ? Array($0.indices) : [$0.count - 1]) }
            let t0 = now()
            _ = try lm.forward(batch)
            ts.append(now() - t0)
        }
        return Double(options.probes * options.tokens) / median(ts)
    }

    /// Greedy decode tokens/s: `newTokens` after 16-token prompts, `batch` sequences at once.
    func decode(_ lm: any CausalLanguageModel, batch: Int) throws -> Double {
        var ts: [Double] = []
        for _ in 0..<options.repeats {
            let ps = (0..<batch).map { Self.ids(1000 + $0, 16, vocab: lm.vocabularySize) }
            let t0 = now()
            _ = try lm.greedy(prompts: ps, maxNewTokens: options.newTokens, stopTokens: [])
            ts.append(now() - t0)
        }
        return Double(batch * options.newTokens) / median(ts)
    }

    /// Runs scripts/bench/transformers_reference.py with the same workload, if possible.
    func runReference() -> (Figures?, String?) {
        var python = options.reference
        if python == nil {
            let venv = ".venv-fixtures/bin/python"
            python = FileManager.default.isExecutableFile(atPath: venv) ? venv : "python3"
        }
        if python == "none" { return (nil, "reference skipped (--reference none)") }
        let script = "scripts/bench/transformers_reference.py"
        guard FileManager.default.fileExists(atPath: script) else {
            return (nil, "reference skipped: \(script) not found (run from the repository root)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [python!, script, options.model, "--threads", String(options.threads), "--probes", String(options.probes),
                       "--tokens", String(options.tokens), "--new-tokens", String(options.newTokens),
                       "--repeats", String(options.repeats)]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { return (nil, "reference skipped: cannot run \(python!): \(error)") }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errText = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0, let f = try? JSONDecoder().decode(Figures.self, from: data) else {
            let last = errText.split(separator: "\n").last.map(String.init) ?? "exit \(p.terminationStatus)"
            return (nil, "reference skipped: \(python!) could not run transformers (\(last.terminalSafe))")
        }
        return (f, nil)
    }
}
