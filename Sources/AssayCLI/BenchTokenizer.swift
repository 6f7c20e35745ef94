import ArgumentParser
import Foundation
import AssayBench
import AssayCommon

/// Tokenizer throughput: encodes a ~1 MB mixed corpus (English, code, numbers, whitespace runs,
/// accents, CJK, emoji) and reports tokens/s, median over repeats. Compare with
/// `scripts/bench/tokenizers_reference.py` (Hugging Face tokenizers, one thread) on the same
/// corpus: write it with `--write-corpus` (see docs/benchmarks.md, "Tokenizer throughput").
struct BenchTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Tokenizer encode throughput (tokens/s) on a ~1 MB mixed corpus.")

    @Argument(help: "Model directory with tokenizer.json (default: the SmolLM2 test fixture).")
    var modelDir: String = "Tests/Fixtures/tokenizers/smollm2"

    @Option(help: "Repeats (the median is reported).")
    var repeats = 5

    @Option(help: "Read the corpus from this file instead of generating it.")
    var corpus: String?

    @Option(help: "Write the generated corpus to this file (for the reference script) and continue.")
    var writeCorpus: String?

    @Option(help: "Approximate corpus size in bytes when generating.")
    var bytes = 1_000_000

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard repeats >= 1 && repeats <= 1000 else { throw ValidationError("--repeats must be between 1 and 1000") }
        guard bytes >= 1000 && bytes <= 100_000_000 else { throw ValidationError("--bytes must be between 1000 and 100000000") }
    }

    func run() throws {
        let options = TokenizerBenchmark.Options(modelDir: modelDir, repeats: repeats, corpus: corpus, writeCorpus: writeCorpus,
                                                 bytes: bytes)
        let r = try TokenizerBenchmark(options: options).run()
        if json { emit(try jsonText(r)); return }
        emit("""
        tokenizer: \(modelDir.terminalSafe)
        corpus: \(r.corpusBytes) bytes, \(r.lines) lines, \(r.tokens) tokens (per line)
        load: \(String(format: "%.3f", r.loadSeconds)) s
        encode per line:   \(String(format: "%.0f", r.perLineTokensPerSecond)) tokens/s (median of \(repeats))
        encode whole text: \(String(format: "%.0f", r.wholeTextTokensPerSecond)) tokens/s (median of \(repeats))
        """)
    }
}
