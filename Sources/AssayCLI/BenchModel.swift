import ArgumentParser
import Foundation
import AssayBench

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

    func run() throws {
        let options = ModelBenchmark.Options(model: model, threads: threads, probes: probes, tokens: tokens, newTokens: newTokens,
                                             repeats: repeats, reference: reference)
        let result = try ModelBenchmark(options: options).run(log: printError)
        emit(try render(result))
    }

    func render(_ result: ModelBenchmark.Result) throws -> String {
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
}
