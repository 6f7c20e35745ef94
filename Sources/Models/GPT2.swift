import Foundation
import AssayCommon
import TensorCore

/// GPT-2 (transformers `modeling_gpt2.py`): learned positions, pre-LayerNorm blocks, fused
/// `c_attn` and Conv1D weights stored (in, out), tanh GELU, tied output head.
///
///     x = wte[ids] + wpe[pos]
///     x = x + c_proj(attn(split(c_attn(ln_1(x)))))
///     x = x + mlp.c_proj(gelu(mlp.c_fc(ln_2(x))))
///     logits = ln_f(x) · wteᵀ
public struct GPT2Config: Sendable, Equatable {
    public enum Activation: String, Sendable { case geluNew = "gelu_new", geluTanh = "gelu_pytorch_tanh", gelu = "gelu" }
    public var nEmbd: Int
    public var nLayer: Int
    public var nHead: Int
    public var nInner: Int
    public var nPositions: Int
    public var vocabSize: Int
    public var layerNormEpsilon: Float
    public var activation: Activation
    public var scaleAttnWeights: Bool
    public var scaleAttnByInverseLayerIdx: Bool
    public var tieWordEmbeddings: Bool
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    public init(_ c: ConfigReader) throws(ModelError) {
        try c.rejectQuantization()
        nEmbd = try c.int("n_embd", Limits.hidden)
        nLayer = try c.int("n_layer", Limits.layers)
        nHead = try c.int("n_head", Limits.heads)
        guard nEmbd % nHead == 0 else {
            throw .invalidConfig(file: c.file, field: "n_head", reason: "\(nHead) does not divide n_embd \(nEmbd)")
        }
        nInner = try c.optionalInt("n_inner", Limits.intermediate) ?? 4 * nEmbd
        nPositions = try c.int("n_positions", Limits.positions, default: 1024)
        vocabSize = try c.int("vocab_size", Limits.vocab)
        layerNormEpsilon = Float(try c.double("layer_norm_epsilon", default: 1e-5))
        let act = try c.string("activation_function", default: "gelu_new")
        guard let a = Activation(rawValue: act) else {
            throw .unsupportedOption(file: c.file, field: "activation_function",
                                     value: "\"\(act)\" (supported: gelu_new, gelu_pytorch_tanh, gelu)")
        }
        activation = a
        scaleAttnWeights = try c.bool("scale_attn_weights", default: true)
        scaleAttnByInverseLayerIdx = try c.bool("scale_attn_by_inverse_layer_idx", default: false)
        tieWordEmbeddings = try c.bool("tie_word_embeddings", default: true)
        try c.requireAbsent(["add_cross_attention"])
        bosTokenID = try c.tokenIDs("bos_token_id", vocab: vocabSize).first
        eosTokenIDs = try c.tokenIDs("eos_token_id", vocab: vocabSize)
    }
}

public final class GPT2Model: CausalLanguageModel, @unchecked Sendable {
    struct Layer {
        let ln1w, ln1b, ln2w, ln2b: Tensor
        let wqkv: PackedMatrix        // (3d, d), nn.Linear layout (out, in)
        let bqkv: Tensor
        let wo: PackedMatrix, bo: Tensor
        let fc: PackedMatrix, fcb: Tensor, proj: PackedMatrix, projb: Tensor
    }

    public let config: GPT2Config
    public var architecture: String { "gpt2" }
    public var vocabularySize: Int { config.vocabSize }
    public var layerCount: Int { config.nLayer }
    public var kvDim: Int { config.nEmbd }
    public var maxPositions: Int { config.nPositions }
    public var bosTokenID: Int? { config.bosTokenID }
    public var eosTokenIDs: [Int] { config.eosTokenIDs }
    public var tap: (any Tap)?

    let wte: PackedMatrix
    let wpe: Tensor
    let layers: [Layer]
    let lnfw, lnfb: Tensor
    let lmHead: PackedMatrix

    /// Checkpoints from GPT2LMHeadModel prefix names with `transformer.`; older GPT2Model ones do
    /// not. The causal-mask buffers `attn.bias` / `attn.masked_bias` some carry are not weights.
    public static func isBuffer(_ name: String) -> Bool {
        name.hasSuffix(".attn.bias") || name.hasSuffix(".attn.masked_bias")
    }

    public init(config: GPT2Config, weights w: WeightStore) throws(ModelError) {
        self.config = config
        let d = config.nEmbd, f = config.nInner, v = config.vocabSize
        let p = w.contains("transformer.wte.weight") ? "transformer." : ""
        wte = try w.takeMatrix(p + "wte.weight", [v, d], field: "vocab_size, n_embd")
        wpe = try w.take(p + "wpe.weight", [config.nPositions, d], field: "n_positions, n_embd")
        var layers: [Layer] = []
        for i in 0..<config.nLayer {
            let q = "\(p)h.\(i)."
            func t(_ n: String, _ s: [Int], _ field: String) throws(ModelError) -> Tensor { try w.take(q + n, s, field: field) }
            // Conv1D stores (in, out): y = x·W + b. Packed as its transpose, (out, in).
            func m(_ n: String, _ s: [Int], _ field: String) throws(ModelError) -> PackedMatrix {
                PackedMatrix(stacking: [try w.takeRows(q + n, s, field: field).transposed])
            }
            layers.append(Layer(
                ln1w: try t("ln_1.weight", [d], "n_embd"), ln1b: try t("ln_1.bias", [d], "n_embd"),
                ln2w: try t("ln_2.weight", [d], "n_embd"), ln2b: try t("ln_2.bias", [d], "n_embd"),
                wqkv: try m("attn.c_attn.weight", [d, 3 * d], "n_embd, 3 × n_embd"),
                bqkv: try t("attn.c_attn.bias", [3 * d], "3 × n_embd"),
                wo: try m("attn.c_proj.weight", [d, d], "n_embd"),
                bo: try t("attn.c_proj.bias", [d], "n_embd"),
                fc: try m("mlp.c_fc.weight", [d, f], "n_embd, n_inner"),
                fcb: try t("mlp.c_fc.bias", [f], "n_inner"),
                proj: try m("mlp.c_proj.weight", [f, d], "n_inner, n_embd"),
                projb: try t("mlp.c_proj.bias", [d], "n_embd")))
        }
        self.layers = layers
        lnfw = try w.take(p + "ln_f.weight", [d], field: "n_embd")
        lnfb = try w.take(p + "ln_f.bias", [d], field: "n_embd")
        lmHead = try bindOutputHead(w, name: "lm_head.weight", embedding: wte, tied: config.tieWordEmbeddings, shape: [v, d])
        try w.finish()
    }

    func activate(_ x: Tensor) -> Tensor {
        config.activation == .gelu ? x.gelu() : x.geluTanh()
    }

    public func identicalLeadingLayers(with other: any CausalLanguageModel) -> Int {
        guard let o = other as? GPT2Model, o.config == config, o.wte == wte, o.wpe == wpe else { return 0 }
        return zip(layers, o.layers).prefix { a, b in
            a.ln1w == b.ln1w && a.ln1b == b.ln1b && a.wqkv == b.wqkv && a.bqkv == b.bqkv && a.wo == b.wo && a.bo == b.bo
                && a.ln2w == b.ln2w && a.ln2b == b.ln2b && a.fc == b.fc && a.fcb == b.fcb && a.proj == b.proj && a.projb == b.projb
        }.count
    }

    public func forward(_ batch: [SequenceInput], plan: ForwardPlan) throws -> ForwardResult {
        let c = config
        let packing = try Packing(batch, makeCache: makeCache, maxPositions: c.nPositions, vocab: c.vocabSize)
        if packing.rows == 0 { return ForwardResult(logits: batch.map { _ in Tensor(zeros: [0, c.vocabSize]) }, captured: nil) }
        let headDim = c.nEmbd / c.nHead
        var x = try plan.input ?? wte.gatherRows(packing.tokens).adding(wpe.gatherRows(packing.positions))   // (N, d)
        var captured: Tensor?
        var cb = TapClock(tap)
        for (li, l) in layers.enumerated() where li >= plan.startLayer {
            if li == plan.captureLayer { captured = x }
            let h = try x.layerNorm(weight: l.ln1w, bias: l.ln1b, eps: c.layerNormEpsilon);  cb.mark("norm", layer: li)
            let qkv = try h.linear(l.wqkv, bias: l.bqkv);                                   cb.mark("gemm.qkv", layer: li)  // (N, 3d)
            packing.appendToCaches(layer: li, qkv: qkv, keyColumn: c.nEmbd, valueColumn: 2 * c.nEmbd)
            var scale: Float = c.scaleAttnWeights ? 1 / Float(headDim).squareRoot() : 1
            if c.scaleAttnByInverseLayerIdx { scale /= Float(li + 1) }
            let attn = packedAttention(qkv: qkv, queryColumn: 0, packing: packing, layer: li, heads: c.nHead, kvHeads: c.nHead,
                                       headDim: headDim, scale: scale)
            cb.mark("attention", layer: li)
            try x.add(try attn.linear(l.wo, bias: l.bo));                                   cb.mark("gemm.o", layer: li)
            let h2 = try x.layerNorm(weight: l.ln2w, bias: l.ln2b, eps: c.layerNormEpsilon); cb.mark("norm", layer: li)
            try x.add(try activate(try h2.linear(l.fc, bias: l.fcb)).linear(l.proj, bias: l.projb))
            cb.mark("mlp", layer: li)
        }
        if plan.captureLayer == layers.count { captured = x }
        let rows = packing.logitRows(batch)
        if rows.isEmpty { return ForwardResult(logits: packing.split(Tensor(zeros: [0, c.vocabSize]), batch), captured: captured) }
        let last = try x.gatherRows(rows).layerNorm(weight: lnfw, bias: lnfb, eps: c.layerNormEpsilon)
        cb.mark("norm")
        let logits = try last.linear(lmHead);                                             cb.mark("gemm.lm_head")
        return ForwardResult(logits: packing.split(logits, batch), captured: captured)
    }
}
