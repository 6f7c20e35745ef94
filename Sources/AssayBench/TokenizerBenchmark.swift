import Foundation
import AssayCommon
import Tokenizers

// `assay bench tokenizer`: encode throughput (tokens/s) of a tokenizer.json on a ~1 MB mixed
// corpus, line by line and as one text, with the tokenizer's load time.

/// Tokenizer throughput: encodes a ~1 MB mixed corpus (English, code, numbers, whitespace runs,
/// accents, CJK, emoji) and reports tokens/s, median over repeats. Compare with
/// `scripts/bench/tokenizers_reference.py` (Hugging Face tokenizers, one thread) on the same
/// corpus: write it with `--write-corpus` (see docs/benchmarks.md, "Tokenizer throughput").
public struct TokenizerBenchmark: Sendable {
    public struct Options: Sendable {
        /// Model directory with tokenizer.json.
        public var modelDir: String
        /// Repeats (the median is reported).
        public var repeats: Int
        /// Read the corpus from this file instead of generating it.
        public var corpus: String?
        /// Write the generated corpus to this file (for the reference script) and continue.
        public var writeCorpus: String?
        /// Approximate corpus size in bytes when generating.
        public var bytes: Int

        public init(modelDir: String = "Tests/Fixtures/tokenizers/smollm2", repeats: Int = 5, corpus: String? = nil,
                    writeCorpus: String? = nil, bytes: Int = 1_000_000) {
            self.modelDir = modelDir
            self.repeats = repeats
            self.corpus = corpus
            self.writeCorpus = writeCorpus
            self.bytes = bytes
        }
    }

    public struct Result: Encodable, Sendable {
        public let tokenizer: String
        public let corpusBytes: Int
        public let lines: Int
        public let tokens: Int
        public let perLineTokensPerSecond: Double
        public let wholeTextTokensPerSecond: Double
        public let loadSeconds: Double
        public let repeats: Int
    }

    public var options: Options

    public init(options: Options = Options()) { self.options = options }

    public func run() throws -> Result {
        let text: String
        if let corpus = options.corpus {
            text = try Tokenizer.validateUTF8(try SafeFile.read(URL(fileURLWithPath: corpus), maxBytes: 1 << 30), file: corpus)
        } else {
            text = Self.generateCorpus(bytes: options.bytes)
        }
        if let writeCorpus = options.writeCorpus { try Data(text.utf8).write(to: URL(fileURLWithPath: writeCorpus)) }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        let t0 = Date()
        let tok = try Tokenizer.load(model: URL(fileURLWithPath: options.modelDir))
        let loadSeconds = Date().timeIntervalSince(t0)
        var perLine: [Double] = [], whole: [Double] = []
        var tokens = 0
        for _ in 0..<(options.repeats + 1) {
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
        return Result(tokenizer: options.modelDir, corpusBytes: text.utf8.count, lines: lines.count, tokens: tokens,
                      perLineTokensPerSecond: median(perLine), wholeTextTokensPerSecond: median(whole),
                      loadSeconds: loadSeconds, repeats: options.repeats)
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
