import ArgumentParser
import Foundation
import AssayCommon
import Models
import TensorCore

/// Model throughput: batched prefill (logits at the last position and at every position),
/// greedy decode at batch 1 and 8, load time and peak RSS; optionally the same workload through
/// Hugging Face transformers (scripts/bench/transformers_reference.py) and the ratio.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Prefill and decode throughput of a model, beside Hugging Face transformers when Python has it."
    )

    @Argument(help: "Model directory (default: .models/SmolLM2-135M-Instruct).")
    var model: String = ".models/SmolLM2-135M-Instruct"

    @Option(help: "Threads for BLAS (and for the reference's torch).")
    var threads = 2

    @Option(help: "Probes in the prefill batch.")
    var probes = 32

    @Option(help: "Tokens per probe.")
    var tokens = 64

    @Option(help: "New tokens per decode run.")
    var newTokens = 64

    @Option(help: "Repeats (median reported).")
    var repeats = 3

    @Option(help: """
        Python interpreter with torch and transformers for the reference run; 'none' to skip. Default: .venv-fixtures/bin/python if \
        present.
        """)
    var reference: String?

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard (1...256).contains(threads), (1...4096).contains(probes), (2...8192).contains(tokens),
              (1...4096).contains(newTokens), (1...100).contains(repeats) else {
            throw ValidationError("--threads, --probes, --tokens, --new-tokens or --repeats out of range")
        }
    }

    struct Figures: Codable {
        var loadSeconds: Double
        var prefillLastTokensPerSecond: Double
        var prefillAllTokensPerSecond: Double
        var decodeBatch1TokensPerSecond: Double
        var decodeBatch8TokensPerSecond: Double
        var peakRSSMegabytes: Double
        enum CodingKeys: String, CodingKey {
            case loadSeconds = "load_seconds", prefillLastTokensPerSecond = "prefill_last_tok_s"
            case prefillAllTokensPerSecond = "prefill_all_tok_s", decodeBatch1TokensPerSecond = "decode_b1_tok_s"
            case decodeBatch8TokensPerSecond = "decode_b8_tok_s", peakRSSMegabytes = "peak_rss_mb"
        }
    }

    struct Result: Codable {
        var model: String
        var threads: Int
        var workload: String
        var assay: Figures
        var reference: Figures?
        var referenceNote: String?
    }

    /// The same deterministic token ids the reference script builds.
    static func ids(_ seq: Int, _ len: Int, vocab: Int) -> [Int] {
        (0..<len).map { t in (seq * 7919 + t * 104_729 + 12_345) % vocab }
    }

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
    func median(_ xs: [Double]) -> Double { let s = xs.sorted(); return s[s.count / 2] }

    func run() throws {
        Parallel.configure(threads: threads)
        var loads: [Double] = []
        var m: (any CausalLanguageModel)?
        for _ in 0..<repeats {
            let t0 = now()
            m = try ModelLoader.load(URL(fileURLWithPath: model))
            loads.append(now() - t0)
        }
        let lm = m!
        PhaseProfile.shared.reset()
        let last = try prefill(lm, all: false)
        if PhaseProfile.shared.enabled { printError("profile, prefill (last position):\n" + PhaseProfile.shared.report()) }
        let all = try prefill(lm, all: true)
        PhaseProfile.shared.reset()
        let d1 = try decode(lm, batch: 1)
        if PhaseProfile.shared.enabled { printError("profile, decode b=1:\n" + PhaseProfile.shared.report()) }
        let d8 = try decode(lm, batch: 8)
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let ours = Figures(loadSeconds: median(loads), prefillLastTokensPerSecond: last, prefillAllTokensPerSecond: all,
                           decodeBatch1TokensPerSecond: d1, decodeBatch8TokensPerSecond: d8,
                           peakRSSMegabytes: Double(usage.ru_maxrss) / 1024)
        var result = Result(model: model, threads: threads,
                            workload: "prefill \(probes)×\(tokens); decode \(newTokens) new tokens after 16-token prompts",
                            assay: ours)
        (result.reference, result.referenceNote) = runReference()
        emit(try render(result))
    }

    /// Prefill tokens/s of `--probes` prompts of `--tokens` ids in one batch, logits at the last
    /// position or at every position.
    func prefill(_ lm: any CausalLanguageModel, all: Bool) throws -> Double {
        let prompts = (0..<probes).map { Self.ids($0, tokens, vocab: lm.vocabularySize) }
        var ts: [Double] = []
        for _ in 0..<repeats {
            let batch = prompts.map { SequenceInput(tokens: $0, logitPositions: all ? Array($0.indices) : [$0.count - 1]) }
            let t0 = now()
            _ = try lm.forward(batch)
            ts.append(now() - t0)
        }
        return Double(probes * tokens) / median(ts)
    }

    /// Greedy decode tokens/s: `--new-tokens` after 16-token prompts, `batch` sequences at once.
    func decode(_ lm: any CausalLanguageModel, batch: Int) throws -> Double {
        var ts: [Double] = []
        for _ in 0..<repeats {
            let ps = (0..<batch).map { Self.ids(1000 + $0, 16, vocab: lm.vocabularySize) }
            let t0 = now()
            _ = try lm.greedy(prompts: ps, maxNewTokens: newTokens, stopTokens: [])
            ts.append(now() - t0)
        }
        return Double(batch * newTokens) / median(ts)
    }

    func render(_ result: Result) throws -> String {
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            return String(decoding: try enc.encode(result), as: UTF8.self)
        }
        var out = "model \(model), \(threads) threads, \(result.workload), median of \(repeats)\n\n"
        out += "                              assay    transformers    ratio\n"
        func line(_ name: String, _ a: Double, _ r: Double?, higherIsBetter: Bool = true) {
            out += name.padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: "%11.1f", a)
            if let r {
                out += String(format: "   %13.1f   %6.2f×", r, higherIsBetter ? a / r : r / a)
            }
            out += "\n"
        }
        let (ours, r) = (result.assay, result.reference)
        line("prefill, last (tok/s)", ours.prefillLastTokensPerSecond, r?.prefillLastTokensPerSecond)
        line("prefill, all (tok/s)", ours.prefillAllTokensPerSecond, r?.prefillAllTokensPerSecond)
        line("decode b=1 (tok/s)", ours.decodeBatch1TokensPerSecond, r?.decodeBatch1TokensPerSecond)
        line("decode b=8 (tok/s)", ours.decodeBatch8TokensPerSecond, r?.decodeBatch8TokensPerSecond)
        line("load (s)", ours.loadSeconds, r?.loadSeconds, higherIsBetter: false)
        line("peak RSS (MB)", ours.peakRSSMegabytes, r?.peakRSSMegabytes, higherIsBetter: false)
        if let note = result.referenceNote { out += "\n\(note)\n" }
        return out
    }

    /// Runs scripts/bench/transformers_reference.py with the same workload, if possible.
    func runReference() -> (Figures?, String?) {
        var python = reference
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
        p.arguments = [python!, script, model, "--threads", String(threads), "--probes", String(probes), "--tokens", String(tokens),
                       "--new-tokens", String(newTokens), "--repeats", String(repeats)]
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
