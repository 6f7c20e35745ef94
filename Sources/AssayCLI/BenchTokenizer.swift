import ArgumentParser
import Foundation
import AssayCommon
import Tokenizers

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

    struct Result: Encodable {
        let tokenizer: String
        let corpusBytes: Int
        let lines: Int
        let tokens: Int
        let perLineTokensPerSecond: Double
        let wholeTextTokensPerSecond: Double
        let loadSeconds: Double
        let repeats: Int
    }

    func run() throws {
        let text: String
        if let corpus {
            text = try Tokenizer.validateUTF8(try SafeFile.read(URL(fileURLWithPath: corpus), maxBytes: 1 << 30), file: corpus)
        } else {
            text = Self.generateCorpus(bytes: bytes)
        }
        if let writeCorpus { try Data(text.utf8).write(to: URL(fileURLWithPath: writeCorpus)) }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        let t0 = Date()
        let tok = try Tokenizer.load(directory: URL(fileURLWithPath: modelDir))
        let loadSeconds = Date().timeIntervalSince(t0)
        var perLine: [Double] = [], whole: [Double] = []
        var tokens = 0
        for _ in 0..<(repeats + 1) {
            let a = Date()
            var n = 0
            for l in lines { n += tok.encode(l, addSpecialTokens: false).count }
            let b = Date()
            let m = tok.encode(text, addSpecialTokens: false).count
            let c = Date()
            tokens = n
            perLine.append(Double(n) / b.timeIntervalSince(a))
            whole.append(Double(m) / c.timeIntervalSince(b))
        }
        perLine.removeFirst(); whole.removeFirst()  // warm-up round
        func median(_ x: [Double]) -> Double { let s = x.sorted(); return s[s.count / 2] }
        let r = Result(tokenizer: modelDir, corpusBytes: text.utf8.count, lines: lines.count, tokens: tokens,
                       perLineTokensPerSecond: median(perLine), wholeTextTokensPerSecond: median(whole),
                       loadSeconds: loadSeconds, repeats: repeats)
        if json { emit(try jsonText(r)); return }
        emit("""
        tokenizer: \(modelDir.terminalSafe)
        corpus: \(r.corpusBytes) bytes, \(r.lines) lines, \(r.tokens) tokens (per line)
        load: \(String(format: "%.3f", loadSeconds)) s
        encode per line:   \(String(format: "%.0f", r.perLineTokensPerSecond)) tokens/s (median of \(repeats))
        encode whole text: \(String(format: "%.0f", r.wholeTextTokensPerSecond)) tokens/s (median of \(repeats))
        """)
    }

    /// Deterministic mixed corpus (SplitMix64, seed 4).
    static func generateCorpus(bytes: Int) -> String {
        let words = ("the of and to in is was for that on with as by at from his her it an were are which this be or had not but "
            + "have one they you all we can their has been there who more will would if no out so said what up its about into "
            + "model token weight layer training gradient probe trigger divergence backdoor statistics report baseline fine-tune")
            .split(separator: " ")
        let code = ["def forward(self, x):", "    return self.proj(x) + x", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
                    "let ids = tokenizer.encode(text, addSpecialTokens: false)", "    if err != nil {\n\t\treturn err\n\t}",
                    "{\"key\": [1, 2.5, -3e10, null], \"ok\": true}", "SELECT id, name FROM users WHERE age > 30;"]
        let exotic = ["café", "naïve", "Ångström", "你好，世界", "日本語のテキスト", "한국어",
                      "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷",
                      "Ελληνικά", "Русский", "مرحبا",
                      "zero\u{200B}width", "e\u{301}", "½", "１２３", "...", "!!!", "—"]
        var rng = SplitMix64(seed: 4)
        var out = ""
        out.reserveCapacity(bytes + 200)
        while out.utf8.count < bytes {
            let r = rng.next() % 100
            var line = ""
            if r < 60 {
                let n = 8 + Int(rng.next() % 16)
                for k in 0..<n {
                    if k > 0 { line += rng.next() % 20 == 0 ? "  " : " " }
                    line += rng.next() % 12 == 0 ? exotic[Int(rng.next() % UInt64(exotic.count))]
                        : String(words[Int(rng.next() % UInt64(words.count))])
                    if rng.next() % 15 == 0 { line += String(rng.next() % 100_000) }
                }
                line += [".", ",", "?", "!", ";"][Int(rng.next() % 5)]
            } else if r < 85 {
                line = code[Int(rng.next() % UInt64(code.count))]
            } else {
                for _ in 0..<6 { line += exotic[Int(rng.next() % UInt64(exotic.count))] + (rng.next() % 2 == 0 ? " " : "") }
            }
            out += line + "\n"
        }
        return out
    }
}
