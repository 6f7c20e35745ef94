import Foundation
import Testing
@testable import Tokenizers

let tokenizerFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tokenizers")

struct Golden: Decodable {
    let t: String   // text
    let a: [Int]    // ids, add_special_tokens=True
    let n: [Int]    // ids, add_special_tokens=False
    let d: String   // transformers decode(a)
    let s: String   // transformers decode(a, skip_special_tokens=True)
}

func goldens(_ name: String) throws -> [Golden] {
    let text = try String(contentsOf: tokenizerFixtures.appendingPathComponent("\(name)/golden.jsonl"), encoding: .utf8)
    let dec = JSONDecoder()
    return try text.split(separator: "\n").map { try dec.decode(Golden.self, from: Data($0.utf8)) }
}

let parityTokenizers = ["gpt2-trained", "smollm2", "llama-trained", "llama-legacy", "minilm"]

/// Exact parity with Hugging Face tokenizers/transformers on ≥ 2,000 generated strings per tokenizer.
@Suite struct Parity {
    @Test(arguments: parityTokenizers)
    func idsAndDecodeMatchHuggingFace(_ name: String) throws {
        let tok = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent(name))
        let cases = try goldens(name)
        #expect(cases.count >= 2000)
        var bad = 0
        for g in cases {
            let a = tok.encode(g.t), n = tok.encode(g.t, addSpecialTokens: false)
            let d = tok.decode(g.a), s = tok.decode(g.a, skipSpecialTokens: true)
            if a != g.a || n != g.n || d != g.d || s != g.s {
                bad += 1
                if bad <= 5 {
                    Issue.record("\(name): \(g.t.debugDescription)\n ids  \(a)\n want \(g.a)\n noSp \(n)\n want \(g.n)\n dec  \(d.debugDescription)\n want \(g.d.debugDescription)\n skip \(s.debugDescription)\n want \(g.s.debugDescription)")
                }
            }
        }
        #expect(bad == 0, "\(name): \(bad) of \(cases.count) strings differ")
    }
}
