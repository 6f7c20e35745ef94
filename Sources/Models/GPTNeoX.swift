import Foundation
import AssayCommon
import TensorCore

/// GPT-NeoX / Pythia (transformers `modeling_gpt_neox.py`): LayerNorm, fused query_key_value
/// laid out per head as [q | k | v], partial rotary (`rotary_pct`, 0.25 by default), exact GELU,
/// untied `embed_out`, and the parallel residual:
///
///     x = x + attn(ln_1(x)) + mlp(ln_2(x))          (use_parallel_residual, the default)
///     h = x + attn(ln_1(x)); x = h + mlp(ln_2(h))   (otherwise)
public struct GPTNeoXConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var intermediateSize: Int
    public var vocabSize: Int
    public var maxPositionEmbeddings: Int
    public var layerNormEps: Float
    public var rope: RopeSettings
    public var useParallelResidual: Bool
    public var attentionBias: Bool
    public var tieWordEmbeddings: Bool
    public var activation: GPT2Config.Activation
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    public init(_ c: ConfigReader) throws(ModelError) {
        try c.rejectQuantization()
        hiddenSize = try c.int("hidden_size", Limits.hidden)
        numHiddenLayers = try c.int("num_hidden_layers", Limits.layers)
        numAttentionHeads = try c.int("num_attention_heads", Limits.heads)
        guard hiddenSize % numAttentionHeads == 0 else {
            throw .invalidConfig(file: c.file, field: "num_attention_heads",
                                 reason: "\(numAttentionHeads) does not divide hidden_size \(hiddenSize)")
        }
        intermediateSize = try c.int("intermediate_size", Limits.intermediate)
        vocabSize = try c.int("vocab_size", Limits.vocab)
        maxPositionEmbeddings = try c.int("max_position_embeddings", Limits.positions, default: 2048)
        layerNormEps = Float(try c.double("layer_norm_eps", default: 1e-5))
        rope = try RopeSettings.read(c, defaultPartial: 0.25)
        useParallelResidual = try c.bool("use_parallel_residual", default: true)
        attentionBias = try c.bool("attention_bias", default: true)
        tieWordEmbeddings = try c.bool("tie_word_embeddings", default: false)
        let act = try c.string("hidden_act", default: "gelu")
        guard let a = GPT2Config.Activation(rawValue: act) else {
            throw .unsupportedOption(file: c.file, field: "hidden_act", value: "\"\(act)\" (supported: gelu, gelu_new, gelu_pytorch_tanh)")
        }
        activation = a
        bosTokenID = try c.tokenIDs("bos_token_id", vocab: vocabSize).first
        eosTokenIDs = try c.tokenIDs("eos_token_id", vocab: vocabSize)
        let headDim = hiddenSize / numAttentionHeads
        guard Int(Double(headDim) * rope.partialRotaryFactor) >= 2 else {
            throw .invalidConfig(file: c.file, field: "rotary_pct", reason: "leaves no rotary dimensions for head size \(headDim)")
        }
    }
}

public final class GPTNeoXModel: CausalLanguageModel, @unchecked Sendable {
    struct Layer {
        let ln1w, ln1b, ln2w, ln2b: Tensor
        let wqkv: PackedMatrix        // (3d, d): all query heads, then keys, then values
        let bqkv: Tensor?
        let wo: PackedMatrix, bo: Tensor?
        let up: PackedMatrix, upb: Tensor, down: PackedMatrix, downb: Tensor
    }

    public let config: GPTNeoXConfig
    public var architecture: String { "gpt_neox" }
    public var vocabularySize: Int { config.vocabSize }
    public var layerCount: Int { config.numHiddenLayers }
    public var kvDim: Int { config.hiddenSize }
    public var maxPositions: Int { config.maxPositionEmbeddings }
    public var bosTokenID: Int? { config.bosTokenID }
    public var eosTokenIDs: [Int] { config.eosTokenIDs }
    public var tap: (any Tap)?

    let embed: PackedMatrix
    let layers: [Layer]
    let lnfw, lnfb: Tensor
    let lmHead: PackedMatrix
    let rope: RotaryEmbedding

    /// Buffers older checkpoints carry that are not weights.
    public static func isBuffer(_ name: String) -> Bool {
        name.hasSuffix(".attention.bias") || name.hasSuffix(".attention.masked_bias") || name.hasSuffix(".rotary_emb.inv_freq")
    }

    public init(config: GPTNeoXConfig, weights w: WeightStore) throws(ModelError) {
        self.config = config
        let d = config.hiddenSize, f = config.intermediateSize, v = config.vocabSize
        let heads = config.numAttentionHeads, hd = d / heads
        embed = try w.takeMatrix("gpt_neox.embed_in.weight", [v, d], field: "vocab_size, hidden_size")
        var layers: [Layer] = []
        for i in 0..<config.numHiddenLayers {
            let p = "gpt_neox.layers.\(i)."
            func t(_ n: String, _ s: [Int], _ field: String) throws(ModelError) -> Tensor { try w.take(p + n, s, field: field) }
            // query_key_value rows are grouped per head as [q_h | k_h | v_h] (3·D rows per head);
            // regroup once into [q heads | k heads | v heads] so attention reads column blocks.
            let qkv = try w.takeRows(p + "attention.query_key_value.weight", [3 * d, d], field: "3 × hidden_size, hidden_size")
            let qkvb = config.attentionBias ? try t("attention.query_key_value.bias", [3 * d], "3 × hidden_size") : nil
            func rows(_ which: Int) -> [Int] { (0..<heads).flatMap { h in (0..<hd).map { h * 3 * hd + which * hd + $0 } } }
            let order = rows(0) + rows(1) + rows(2)
            layers.append(Layer(
                ln1w: try t("input_layernorm.weight", [d], "hidden_size"), ln1b: try t("input_layernorm.bias", [d], "hidden_size"),
                ln2w: try t("post_attention_layernorm.weight", [d], "hidden_size"),
                ln2b: try t("post_attention_layernorm.bias", [d], "hidden_size"),
                wqkv: PackedMatrix(stacking: (0..<3).flatMap { which in
                    (0..<heads).map { h in qkv.slice((h * 3 + which) * hd ..< (h * 3 + which + 1) * hd) }
                }),
                bqkv: qkvb.map { b in let a = b.array; return Tensor(shape: [3 * d], data: order.map { a[$0] }) },
                wo: try w.takeMatrix(p + "attention.dense.weight", [d, d], field: "hidden_size"),
                bo: config.attentionBias ? try t("attention.dense.bias", [d], "hidden_size") : nil,
                up: try w.takeMatrix(p + "mlp.dense_h_to_4h.weight", [f, d], field: "intermediate_size, hidden_size"),
                upb: try t("mlp.dense_h_to_4h.bias", [f], "intermediate_size"),
                down: try w.takeMatrix(p + "mlp.dense_4h_to_h.weight", [d, f], field: "hidden_size, intermediate_size"),
                downb: try t("mlp.dense_4h_to_h.bias", [d], "hidden_size")))
        }
        self.layers = layers
        lnfw = try w.take("gpt_neox.final_layer_norm.weight", [d], field: "hidden_size")
        lnfb = try w.take("gpt_neox.final_layer_norm.bias", [d], field: "hidden_size")
        lmHead = try bindOutputHead(w, name: "embed_out.weight", embedding: embed, tied: config.tieWordEmbeddings, shape: [v, d])
        try w.finish()
        rope = config.rope.embedding(headDim: hd)
    }

    func activate(_ x: Tensor) -> Tensor { config.activation == .gelu ? x.gelu() : x.geluTanh() }

    public func identicalLeadingLayers(with other: any CausalLanguageModel) -> Int {
        guard let o = other as? GPTNeoXModel, o.config == config, o.embed == embed else { return 0 }
        return zip(layers, o.layers).prefix { a, b in
            a.ln1w == b.ln1w && a.ln1b == b.ln1b && a.wqkv == b.wqkv && a.bqkv == b.bqkv && a.wo == b.wo && a.bo == b.bo
                && a.ln2w == b.ln2w && a.ln2b == b.ln2b && a.up == b.up && a.upb == b.upb && a.down == b.down && a.downb == b.downb
        }.count
    }

    public func forward(_ batch: [SequenceInput], plan: ForwardPlan) throws -> ForwardResult {
        let c = config
        let packing = try Packing(batch, makeCache: makeCache, maxPositions: c.maxPositionEmbeddings, vocab: c.vocabSize)
        if packing.rows == 0 { return ForwardResult(logits: batch.map { _ in Tensor(zeros: [0, c.vocabSize]) }, captured: nil) }
        let heads = c.numAttentionHeads, hd = c.hiddenSize / heads
        let scale = 1 / Float(hd).squareRoot()
        let d = c.hiddenSize
        let table = packing.rotaryTable(rope)
        var x = plan.input ?? embed.gatherRows(packing.tokens)
        var captured: Tensor?
        var cb = TapClock(tap)
        for (li, l) in layers.enumerated() where li >= plan.startLayer {
            if li == plan.captureLayer { captured = x }
            let h = try x.layerNorm(weight: l.ln1w, bias: l.ln1b, eps: c.layerNormEps); cb.mark("norm", layer: li)
            var qkv = try h.linear(l.wqkv, bias: l.bqkv);                              cb.mark("gemm.qkv", layer: li)  // (N, 3d)
            applyRotary(&qkv, column: 0, heads: heads, rope: rope, table: table)
            applyRotary(&qkv, column: d, heads: heads, rope: rope, table: table)
            packing.appendToCaches(layer: li, qkv: qkv, keyColumn: d, valueColumn: 2 * d); cb.mark("rope+cache", layer: li)
            let attn = try packedAttention(qkv: qkv, queryColumn: 0, packing: packing, layer: li, heads: heads, kvHeads: heads,
                                           headDim: hd, scale: scale)
                .linear(l.wo, bias: l.bo)
            cb.mark("attention+o", layer: li)
            if c.useParallelResidual {
                let h2 = try x.layerNorm(weight: l.ln2w, bias: l.ln2b, eps: c.layerNormEps)
                let mlp = try activate(try h2.linear(l.up, bias: l.upb)).linear(l.down, bias: l.downb)
                try x.add(attn)
                try x.add(mlp)
            } else {
                try x.add(attn)
                let h2 = try x.layerNorm(weight: l.ln2w, bias: l.ln2b, eps: c.layerNormEps)
                try x.add(try activate(try h2.linear(l.up, bias: l.upb)).linear(l.down, bias: l.downb))
            }
            cb.mark("mlp", layer: li)
        }
        if plan.captureLayer == layers.count { captured = x }
        let rows = packing.logitRows(batch)
        if rows.isEmpty { return ForwardResult(logits: packing.split(Tensor(zeros: [0, c.vocabSize]), batch), captured: captured) }
        let last = try x.gatherRows(rows).layerNorm(weight: lnfw, bias: lnfb, eps: c.layerNormEps)
        cb.mark("norm")
        let logits = try last.linear(lmHead);                                          cb.mark("gemm.lm_head")
        return ForwardResult(logits: packing.split(logits, batch), captured: captured)
    }
}
