import Foundation
import AssayCommon
import TensorCore

/// LLaMA-family decoder (SmolLM, TinyLlama, Llama 2/3; Mistral and Qwen2 reuse it with their own
/// configs, see Mistral.swift and Qwen2.swift). transformers `modeling_llama.py`:
///
///     h = x + o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(rms(x))), v_proj(rms(x))))
///     y = h + down_proj(silu(gate_proj(rms(h))) * up_proj(rms(h)))
///     logits = lm_head(rms(y_last))
///
/// RMSNorm in Float32, rotary in the half-split form, grouped-query attention, SwiGLU MLP,
/// tied or untied embeddings.
public struct LlamaConfig: Sendable, Equatable {
    public var modelType: String
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var rmsNormEps: Float
    public var rope: RopeSettings
    /// Bias on q, k and v projections (Llama `attention_bias`, always on in Qwen2).
    public var qkvBias: Bool
    /// Bias on the output projection (Llama `attention_bias`; never in Qwen2).
    public var outputBias: Bool
    public var mlpBias: Bool
    public var tieWordEmbeddings: Bool
    /// Mistral's sliding attention window, if any.
    public var slidingWindow: Int?
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    /// Reads a `llama` config; Mistral and Qwen2 adjust the result.
    public init(_ c: ConfigReader) throws(ModelError) {
        try c.rejectQuantization()
        modelType = try c.string("model_type")
        hiddenSize = try c.int("hidden_size", Limits.hidden)
        intermediateSize = try c.int("intermediate_size", Limits.intermediate)
        numHiddenLayers = try c.int("num_hidden_layers", Limits.layers)
        numAttentionHeads = try c.int("num_attention_heads", Limits.heads)
        numKeyValueHeads = try c.int("num_key_value_heads", Limits.heads, default: numAttentionHeads)
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw .invalidConfig(file: c.file, field: "num_key_value_heads",
                                 reason: "\(numKeyValueHeads) does not divide num_attention_heads \(numAttentionHeads)")
        }
        if let hd = try c.optionalInt("head_dim", 1...4096) {
            headDim = hd
        } else {
            guard hiddenSize % numAttentionHeads == 0 else {
                throw .invalidConfig(file: c.file, field: "num_attention_heads",
                                     reason: "\(numAttentionHeads) does not divide hidden_size \(hiddenSize)")
            }
            headDim = hiddenSize / numAttentionHeads
        }
        guard headDim % 2 == 0 else {
            throw .invalidConfig(file: c.file, field: "head_dim", reason: "\(headDim) must be even for rotary embeddings")
        }
        vocabSize = try c.int("vocab_size", Limits.vocab)
        maxPositionEmbeddings = try c.int("max_position_embeddings", Limits.positions, default: 2048)
        rmsNormEps = Float(try c.double("rms_norm_eps", default: 1e-6))
        rope = try RopeSettings.read(c)
        let bias = try c.bool("attention_bias", default: false)
        qkvBias = bias
        outputBias = bias
        mlpBias = try c.bool("mlp_bias", default: false)
        tieWordEmbeddings = try c.bool("tie_word_embeddings", default: false)
        slidingWindow = nil
        let act = try c.string("hidden_act", default: "silu")
        guard act == "silu" else {
            throw .unsupportedOption(file: c.file, field: "hidden_act", value: "\"\(act)\" (LLaMA family uses silu)")
        }
        bosTokenID = try c.tokenIDs("bos_token_id", vocab: vocabSize).first
        eosTokenIDs = try c.tokenIDs("eos_token_id", vocab: vocabSize)
    }
}

public final class LlamaModel: CausalLanguageModel, @unchecked Sendable {
    /// One block. q/k/v and gate/up are fused into single projections at load, so each runs as
    /// one wider GEMM: (Hq·D + 2·Hkv·D, d) and (2f, d). Matrices are packed in their stored type.
    struct Layer {
        let inputNorm, postNorm: Tensor
        let wqkv, wo: PackedMatrix
        let bqkv, bo: Tensor?
        let gateUp, down: PackedMatrix
        let gateUpBias, downBias: Tensor?
    }

    public let config: LlamaConfig
    public var architecture: String { config.modelType }
    public var vocabularySize: Int { config.vocabSize }
    public var layerCount: Int { config.numHiddenLayers }
    public var kvDim: Int { config.numKeyValueHeads * config.headDim }
    public var maxPositions: Int { config.maxPositionEmbeddings }
    public var bosTokenID: Int? { config.bosTokenID }
    public var eosTokenIDs: [Int] { config.eosTokenIDs }
    public var tap: (any Tap)?

    let embed: PackedMatrix   // (V, d)
    let layers: [Layer]
    let norm: Tensor          // (d)
    let lmHead: PackedMatrix  // (V, d); the embedding itself when tied
    let rope: RotaryEmbedding

    /// Weight names as transformers' LlamaForCausalLM saves them.
    public init(config: LlamaConfig, weights w: WeightStore) throws(ModelError) {
        self.config = config
        let d = config.hiddenSize, v = config.vocabSize, f = config.intermediateSize
        let qDim = config.numAttentionHeads * config.headDim, kv = config.numKeyValueHeads * config.headDim
        embed = try w.takeMatrix("model.embed_tokens.weight", [v, d], field: "vocab_size, hidden_size")
        var layers: [Layer] = []
        for i in 0..<config.numHiddenLayers {
            let p = "model.layers.\(i)."
            func t(_ n: String, _ s: [Int], _ field: String) throws(ModelError) -> Tensor { try w.take(p + n, s, field: field) }
            func m(_ n: String, _ s: [Int], _ field: String) throws(ModelError) -> PackedMatrix.Rows {
                try w.takeRows(p + n, s, field: field)
            }
            func b(_ n: String, _ s: [Int], _ on: Bool, _ field: String) throws(ModelError) -> Tensor? {
                on ? try w.take(p + n, s, field: field) : nil
            }
            let wq = try m("self_attn.q_proj.weight", [qDim, d], "num_attention_heads × head_dim, hidden_size")
            let wk = try m("self_attn.k_proj.weight", [kv, d], "num_key_value_heads × head_dim, hidden_size")
            let wv = try m("self_attn.v_proj.weight", [kv, d], "num_key_value_heads × head_dim, hidden_size")
            let bq = try b("self_attn.q_proj.bias", [qDim], config.qkvBias, "attention bias")
            let bk = try b("self_attn.k_proj.bias", [kv], config.qkvBias, "attention bias")
            let bv = try b("self_attn.v_proj.bias", [kv], config.qkvBias, "attention bias")
            let gate = try m("mlp.gate_proj.weight", [f, d], "intermediate_size, hidden_size")
            let up = try m("mlp.up_proj.weight", [f, d], "intermediate_size, hidden_size")
            let gateBias = try b("mlp.gate_proj.bias", [f], config.mlpBias, "mlp_bias")
            let upBias = try b("mlp.up_proj.bias", [f], config.mlpBias, "mlp_bias")
            layers.append(Layer(
                inputNorm: try t("input_layernorm.weight", [d], "hidden_size"),
                postNorm: try t("post_attention_layernorm.weight", [d], "hidden_size"),
                wqkv: PackedMatrix(stacking: [wq, wk, wv]),
                wo: try w.takeMatrix(p + "self_attn.o_proj.weight", [d, qDim], field: "hidden_size, num_attention_heads × head_dim"),
                bqkv: config.qkvBias ? Tensor.concatenate([bq!, bk!, bv!], axis: 0) : nil,
                bo: try b("self_attn.o_proj.bias", [d], config.outputBias, "attention_bias"),
                gateUp: PackedMatrix(stacking: [gate, up]),
                down: try w.takeMatrix(p + "mlp.down_proj.weight", [d, f], field: "hidden_size, intermediate_size"),
                gateUpBias: config.mlpBias ? Tensor.concatenate([gateBias!, upBias!], axis: 0) : nil,
                downBias: try b("mlp.down_proj.bias", [d], config.mlpBias, "mlp_bias")))
        }
        self.layers = layers
        norm = try w.take("model.norm.weight", [d], field: "hidden_size")
        lmHead = try bindOutputHead(w, name: "lm_head.weight", embedding: embed, tied: config.tieWordEmbeddings, shape: [v, d])
        try w.finish()
        rope = config.rope.embedding(headDim: config.headDim)
    }

    public func identicalLeadingLayers(with other: any CausalLanguageModel) -> Int {
        guard let o = other as? LlamaModel, o.config == config, o.embed == embed else { return 0 }
        return zip(layers, o.layers).prefix { a, b in
            a.inputNorm == b.inputNorm && a.postNorm == b.postNorm && a.wqkv == b.wqkv && a.wo == b.wo && a.bqkv == b.bqkv
                && a.bo == b.bo && a.gateUp == b.gateUp && a.down == b.down && a.gateUpBias == b.gateUpBias && a.downBias == b.downBias
        }.count
    }

    public func forward(_ batch: [SequenceInput], plan: ForwardPlan) throws -> ForwardResult {
        let c = config
        let packing = try Packing(batch, makeCache: makeCache, maxPositions: c.maxPositionEmbeddings, vocab: c.vocabSize)
        if packing.rows == 0 { return ForwardResult(logits: batch.map { _ in Tensor(zeros: [0, c.vocabSize]) }, captured: nil) }
        let scale = 1 / Float(c.headDim).squareRoot()
        let qDim = c.numAttentionHeads * c.headDim, kv = c.numKeyValueHeads * c.headDim
        let table = packing.rotaryTable(rope)
        var x = plan.input ?? embed.gatherRows(packing.tokens)                     // (N, d)
        var captured: Tensor?
        var cb = TapClock(tap)
        cb.count("rows.blocks", packing.rows * (layers.count - plan.startLayer))
        for (li, l) in layers.enumerated() where li >= plan.startLayer {
            if li == plan.captureLayer { captured = x }
            let h = try x.rmsNorm(weight: l.inputNorm, eps: c.rmsNormEps);           cb.mark("norm", layer: li)
            var qkv = try h.linear(l.wqkv, bias: l.bqkv);                           cb.mark("gemm.qkv", layer: li)  // (N, (Hq+2Hkv)·D)
            applyRotary(&qkv, column: 0, heads: c.numAttentionHeads, rope: rope, table: table)
            applyRotary(&qkv, column: qDim, heads: c.numKeyValueHeads, rope: rope, table: table)
            packing.appendToCaches(layer: li, qkv: qkv, keyColumn: qDim, valueColumn: qDim + kv); cb.mark("rope+cache", layer: li)
            let attn = packedAttention(qkv: qkv, queryColumn: 0, packing: packing, layer: li, heads: c.numAttentionHeads,
                                       kvHeads: c.numKeyValueHeads, headDim: c.headDim, scale: scale, window: c.slidingWindow)
            cb.mark("attention", layer: li)
            let o = try attn.linear(l.wo, bias: l.bo);                              cb.mark("gemm.o", layer: li)    // (N, d)
            try x.add(o);                                                           cb.mark("residual", layer: li)
            let h2 = try x.rmsNorm(weight: l.postNorm, eps: c.rmsNormEps);          cb.mark("norm", layer: li)
            let gateUp = try h2.linear(l.gateUp, bias: l.gateUpBias);               cb.mark("gemm.gate_up", layer: li) // (N, 2f)
            let act = try gateUp.siluGateFused();                                   cb.mark("silu_gate", layer: li)
            let down = try act.linear(l.down, bias: l.downBias);                    cb.mark("gemm.down", layer: li)  // (N, d)
            try x.add(down);                                                        cb.mark("residual", layer: li)
        }
        if plan.captureLayer == layers.count { captured = x }
        // The output projection is a third of the FLOPs: only at the rows asked for.
        let rows = packing.logitRows(batch)
        if rows.isEmpty { return ForwardResult(logits: packing.split(Tensor(zeros: [0, c.vocabSize]), batch), captured: captured) }
        let last = try x.gatherRows(rows).rmsNorm(weight: norm, eps: c.rmsNormEps)   // (R, d)
        cb.mark("norm")
        cb.count("rows.lm_head", rows.count)
        let logits = try last.linear(lmHead);                                        cb.mark("gemm.lm_head")          // (R, V)
        return ForwardResult(logits: packing.split(logits, batch), captured: captured)
    }
}

/// The output head: the embedding when tied (a saved copy must then equal it, or the model would
/// behave differently in loaders that do not tie), else its own tensor.
func bindOutputHead(_ w: WeightStore, name: String, embedding: PackedMatrix, tied: Bool, shape: [Int]) throws(ModelError) -> PackedMatrix {
    if tied {
        if w.contains(name) {
            let head = try w.takeMatrix(name, shape, field: "vocab_size, hidden_size")
            guard head == embedding || head.unpacked() == embedding.unpacked() else {
                throw .invalidConfig(file: w.source, field: "tie_word_embeddings",
                                     reason: "true, but '\(name)' is saved and differs from the input embedding")
            }
        }
        return embedding
    }
    return try w.takeMatrix(name, shape, field: "vocab_size, hidden_size")
}

extension ModelError {
    init(_ e: TensorError) { self = .tensor(e.description) }
}
