import Foundation
import Testing
import Models
import TensorCore

/// SmolLM2-135M-Instruct converted by scripts/fixtures/convert_smollm2.py (scripts/fetch-models.sh
/// runs it), or where ASSAY_SMOLLM2_DIR points.
func smolLM2Directory() -> URL? {
    if let env = ProcessInfo.processInfo.environment["ASSAY_SMOLLM2_DIR"] { return URL(fileURLWithPath: env) }
    let local = modelFixtures.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".models/SmolLM2-135M-Instruct")
    return FileManager.default.fileExists(atPath: local.appendingPathComponent("model.safetensors").path) ? local : nil
}

struct SmolGolden: Decodable {
    struct Prompt: Decodable {
        let prompt: String
        let ids: [Int]
        let top_ids: [[Int]]
        let top_logprobs: [[Float]]
        let logsumexp: [Float]
        let greedy: [Int]
    }
    let prompts: [Prompt]
}

@Suite(.serialized, .enabled(if: smolLM2Directory() != nil, "SmolLM2-135M not converted (scripts/fetch-models.sh)"))
struct SmolLM2Parity {
    static let golden = try! JSONDecoder().decode(SmolGolden.self, from: Data(contentsOf: modelFixtures.appendingPathComponent("smollm2.json")))
    static let model: any CausalLanguageModel = try! ModelLoader.load(smolLM2Directory()!)

    /// Top-20 log-probabilities and log-sum-exp at every position match transformers within 1e-3.
    @Test func topLogProbabilitiesMatch() throws {
        let batch = Self.golden.prompts.map { SequenceInput(tokens: $0.ids, logitPositions: Array($0.ids.indices)) }
        let logits = try Self.model.forward(batch)
        for (p, g) in zip(logits, Self.golden.prompts) {
            let lse = p.logSumExp().array
            let lp = p.logSoftmax()
            let v = lp.shape[1]
            let a = lp.array
            var worst: Float = 0
            for t in g.ids.indices {
                worst = max(worst, abs(lse[t] - g.logsumexp[t]))
                for (id, want) in zip(g.top_ids[t], g.top_logprobs[t]) { worst = max(worst, abs(a[t * v + id] - want)) }
            }
            #expect(worst < 1e-3, "\(g.prompt.prefix(30)): max |Δ| = \(worst)")
        }
    }

    @Test func greedyContinuationIdentical() throws {
        let gs = Self.golden.prompts
        let out = try Self.model.greedy(prompts: gs.map(\.ids), maxNewTokens: 32, stopTokens: [])
        for (o, g) in zip(out, gs) { #expect(o == g.greedy, "\(g.prompt.prefix(30))") }
    }
}
