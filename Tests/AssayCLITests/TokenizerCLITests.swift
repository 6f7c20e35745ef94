import Foundation
import Testing

@Suite struct TokenizerCLITests {
    let fx = repoFixtures.appendingPathComponent("tokenizers")

    @Test func tokenizeTextAndJSON() throws {
        let dir = fx.appendingPathComponent("minilm").path
        let r = try assay(["tokenize", dir, "Hello, world!"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("6 tokens\n101\t\"[CLS]\"\n7592\t\"hello\""))
        let j = try assay(["tokenize", dir, "Hello, world!", "--json", "--no-special-tokens"])
        #expect(j.status == 0)
        #expect(j.stdout == "{\"count\":4,\"ids\":[7592,1010,2088,999],\"tokens\":[\"hello\",\",\",\"world\",\"!\"]}\n")
    }

    @Test func detokenizeAndChatTemplate() throws {
        let dir = fx.appendingPathComponent("smollm2").path
        let d = try assay(["detokenize", dir, "1,19556, 17,2"])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(d.stdout == "<|im_start|>Hello!<|im_end|>\n")
        let skip = try assay(["detokenize", dir, "1", "19556", "--skip-special-tokens"])
        #expect(skip.stdout == "Hello\n")
        #expect(try assay(["detokenize", dir, "999999"]).status == 2)
        #expect(try assay(["detokenize", dir, "x1"]).status == 4)
        let c = try assay(["chat-template", dir, "--user", "Hi", "--system", "Be brief."])
        #expect(c.status == 0, "\(c.stderr)")
        #expect(c.stdout == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        let n = try assay(["chat-template", dir, "--user", "Hi", "--no-generation-prompt"])
        #expect(n.stdout.hasSuffix("<|im_start|>user\nHi<|im_end|>\n"))
        let none = try assay(["chat-template", fx.appendingPathComponent("minilm").path, "--user", "Hi"])
        #expect(none.status == 2 && none.stderr.contains("no chat template"))
    }

    /// Each malformed tokenizer: exit 2 and one line naming the file and the JSON path at fault.
    @Test func badInputsExitTwo() throws {
        let cases = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: fx.appendingPathComponent("bad/cases.json")))
        #expect(cases.count >= 8)
        for (name, message) in cases.sorted(by: { $0.key < $1.key }) {
            let dir = fx.appendingPathComponent("bad/\(name)")
            let start = Date()
            let r = try assay(["tokenize", dir.path, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"])
            #expect(Date().timeIntervalSince(start) < 10, "\(name) took too long")
            #expect(r.status == 2, "\(name): exit \(r.status) \(r.stderr)")
            #expect(r.stderr.contains(message), "\(name): \(r.stderr)")
            #expect(r.stderr.contains("tokenizer.json"), "\(name): \(r.stderr)")
            #expect(r.stdout.isEmpty)
        }
        let utf8 = try assay(["tokenize", fx.appendingPathComponent("minilm").path, "--file", fx.appendingPathComponent("bad/invalid-utf8.txt").path])
        #expect(utf8.status == 2)
        #expect(utf8.stderr.contains("invalid-utf8.txt: invalid UTF-8 at byte 9"), "\(utf8.stderr)")
        #expect(try assay(["tokenize", fx.appendingPathComponent("minilm").path]).status == 4)
        #expect(try assay(["tokenize", "/nonexistent/dir", "x"]).status == 2)
    }

    @Test func benchTokenizerRuns() throws {
        let r = try assay(["bench", "tokenizer", fx.appendingPathComponent("smollm2").path, "--bytes", "20000", "--repeats", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\"perLineTokensPerSecond\""))
    }
}
