import Foundation
import AssayCommon
import GGUF
import SafeTensors
import TensorCore

/// A GGUF file read as the Hugging Face checkpoint transformers makes of it
/// (`modeling_gguf_pytorch_utils.load_gguf_checkpoint` and `integrations/gguf`): llama.cpp's
/// metadata becomes a config.json, its tensor names the architecture's, every tensor is
/// dequantised to Float32, and what llama.cpp's converter rearranged is put back: the Q/K rows
/// it permuted for its rotary layout (LLaMA), the Conv1D matrices it transposed (GPT-2).
///
/// What transformers would ignore but llama.cpp would honour (rope scaling, a `rope_freqs` tensor,
/// sliding windows, keys this reader does not know under the architecture's prefix) is refused:
/// Assay must see the model that is served.
public final class GGUFCheckpoint: @unchecked Sendable {
    public let file: GGUFFile
    /// `model_type` as transformers names it.
    public let modelType: String
    /// The config.json transformers derives from the metadata.
    public let config: ConfigReader
    /// How a stored tensor becomes the Hugging Face one.
    enum Layout: Sendable { case stored, unpermute(heads: Int), transposed }
    /// Hugging Face tensor name → the GGUF tensor and its layout.
    let mapping: [String: (info: GGUFTensorInfo, layout: Layout)]

    public var path: String { file.url.path }
    public var tensorNames: [String] { mapping.keys.sorted() }

    /// How many tensors of each quantisation type the file holds (`Q4_1: 210, F32: 61, …`).
    public var quantizationTypes: [String: Int] {
        file.tensors.reduce(into: [:]) { $0[$1.type.description, default: 0] += 1 }
    }

    /// llama.cpp's architectures read here. GPT-NeoX (`gptneox`) is not: transformers has no GGUF
    /// reader for it to check against.
    public static let architectures = ["llama", "qwen2", "gpt2"]

    public static func open(_ url: URL) throws(ModelError) -> GGUFCheckpoint {
        let file: GGUFFile
        do { file = try GGUFFile(url: url) } catch { throw .gguf(error) }
        return try GGUFCheckpoint(file)
    }

    public init(_ file: GGUFFile) throws(ModelError) {
        self.file = file
        let path = file.url.path
        guard case let .string(arch)? = file.metadata["general.architecture"] else {
            throw .invalidConfig(file: path, field: "general.architecture", reason: "missing or not a string")
        }
        guard Self.architectures.contains(arch) else { throw .unsupportedArchitecture(file: path, modelType: arch) }
        if case .string("mistral")? = file.metadata["general.name"] {
            // transformers reads such a file as Mistral (sliding window and all), llama.cpp as LLaMA.
            throw .unsupportedOption(file: path, field: "general.name",
                                     value: "\"mistral\" (transformers and llama.cpp read it differently)")
        }
        modelType = arch
        let json = try GGUFConfig.configJSON(file, architecture: arch)
        config = ConfigReader(file: path, json: json)
        mapping = try GGUFConfig.tensorMapping(file, architecture: arch, config: config)
    }

    public func shape(_ name: String) -> [Int]? {
        guard let (info, layout) = mapping[name] else { return nil }
        if case .transposed = layout, info.shape.count == 2 { return [info.shape[1], info.shape[0]] }
        return info.shape
    }

    /// The GGUF tensor a Hugging Face name is read from.
    public func storedInfo(_ name: String) -> GGUFTensorInfo? { mapping[name]?.info }

    /// The tensor in Hugging Face layout, dequantised to Float32.
    public func tensor(_ name: String) throws(ModelError) -> Tensor {
        guard let (info, layout) = mapping[name] else { throw .missingTensor(file: path, tensor: name) }
        var values: [Float]
        do { values = try file.floats(info) } catch { throw .gguf(error) }
        let shape = info.shape
        switch layout {
        case .stored: break
        case .unpermute(let heads): values = try Self.unpermute(values, shape: shape, heads: heads, name: name, file: path)
        case .transposed:
            guard shape.count == 2 else { break }
            return Tensor(shape: [shape[1], shape[0]], data: Self.transpose(values, rows: shape[0], cols: shape[1]))
        }
        return Tensor(shape: shape, data: values)
    }

    /// llama.cpp's GPT-2 converter stores each Conv1D matrix (in, out) as (out, in); transformers'
    /// `GPT2TensorProcessor` transposes it back.
    static func transpose(_ x: [Float], rows: Int, cols: Int) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for r in 0..<rows { for c in 0..<cols { dst[c * rows + r] = src[r * cols + c] } }
            }
        }
        return out
    }

    /// Undoes llama.cpp's `permute` (convert_hf_to_gguf.py, LlamaModel): within each head, the
    /// rows of the two rotary halves were interleaved; transformers' `_reverse_permute_weights`
    /// reads row `h·2d + a·d + i` from row `h·2d + 2i + a`.
    static func unpermute(_ x: [Float], shape: [Int], heads: Int, name: String, file: String) throws(ModelError) -> [Float] {
        let rows = shape[0], cols = shape.count > 1 ? shape[1] : 1
        guard heads > 0, rows % (2 * heads) == 0 else {
            throw .tensorShape(file: file, tensor: name, expected: [rows - rows % (2 * max(heads, 1))] + shape.dropFirst(),
                               got: shape, field: "num_attention_heads / num_key_value_heads (rows must split into 2 halves per head)")
        }
        let d = rows / heads / 2
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for h in 0..<heads {
                    for a in 0..<2 {
                        for i in 0..<d {
                            let to = (h * 2 * d + a * d + i) * cols, from = (h * 2 * d + 2 * i + a) * cols
                            for c in 0..<cols { dst[to + c] = src[from + c] }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// llama.cpp's metadata and tensor names, as transformers maps them (integrations/gguf).
enum GGUFConfig {
    /// `{arch}.` keys and the config.json field each becomes (nil: read but implied elsewhere).
    static let keys: [String: String?] = [
        "context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
        "feed_forward_length": "intermediate_size", "embedding_length": "hidden_size",
        "rope.dimension_count": "head_dim", "rope.freq_base": "rope_theta",
        "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
        "attention.layer_norm_rms_epsilon": "rms_norm_eps", "vocab_size": "vocab_size",
    ]
    /// GPT-2's keys, in GPT2Config's names. transformers maps `context_length` and
    /// `feed_forward_length` to names GPT2Config ignores, so it can only load a file whose position
    /// table and MLP have the default sizes (1024, 4 × n_embd); reading them as llama.cpp does gives
    /// the same model for such a file, and the served one for any other.
    static let gpt2Keys: [String: String?] = [
        "context_length": "n_positions", "block_count": "n_layer", "embedding_length": "n_embd",
        "feed_forward_length": "n_inner", "attention.head_count": "n_head",
        "attention.layer_norm_epsilon": "layer_norm_epsilon", "vocab_size": "vocab_size",
    ]

    /// tokenizer.ggml ids that config.json carries too.
    static let tokenIDs = ["bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
                           "unknown_token_id": "unk_token_id", "padding_token_id": "pad_token_id"]

    static func configJSON(_ file: GGUFFile, architecture arch: String) throws(ModelError) -> JSONValue {
        var members: [JSONMember] = [JSONMember(key: "model_type", value: .string(arch))]
        func add(_ key: String, _ v: GGUFValue, from: String) throws(ModelError) {
            switch v {
            case .float32(let f): members.append(JSONMember(key: key, value: .number("\(Double(f))")))
            case .float64(let f): members.append(JSONMember(key: key, value: .number("\(f)")))
            case .bool(let b): members.append(JSONMember(key: key, value: .bool(b)))
            default:
                guard let i = v.integer else {
                    throw .invalidConfig(file: file.url.path, field: from, reason: "must be a number, found \(v.typeName)")
                }
                members.append(JSONMember(key: key, value: .number("\(i)")))
            }
        }
        for key in file.keys where key.hasPrefix(arch + ".") {
            let field = String(key.dropFirst(arch.count + 1))
            guard let mapped = (arch == "gpt2" ? gpt2Keys : keys)[field] else {
                // transformers would skip it; llama.cpp reads it (rope scaling, sliding windows, …).
                throw .unsupportedOption(file: file.url.path, field: key, value: "(\(file.metadata[key]!.typeName))")
            }
            // Qwen2's head size is hidden_size / heads in transformers, whatever the file says.
            guard let name = mapped, !(arch == "qwen2" && field == "rope.dimension_count") else { continue }
            try add(name, file.metadata[key]!, from: key)
        }
        for (key, name) in tokenIDs.sorted(by: { $0.key < $1.key }) {
            if let v = file.metadata["tokenizer.ggml." + key] { try add(name, v, from: "tokenizer.ggml." + key) }
        }
        if file.metadata[arch + ".vocab_size"] == nil, case let .array(_, tokens)? = file.metadata["tokenizer.ggml.tokens"] {
            members.append(JSONMember(key: "vocab_size", value: .number("\(tokens.count)")))
        }
        let tied = file.tensor("output.weight") == nil
        members.append(JSONMember(key: "tie_word_embeddings", value: .bool(tied)))
        return .object(members)
    }

    /// llama.cpp's tensor names → Hugging Face's, per architecture: (global names, block names, block prefix).
    static func names(_ arch: String) -> (global: [String: String], block: [String: String], prefix: String) {
        if arch == "gpt2" {
            return (["token_embd": "transformer.wte", "position_embd": "transformer.wpe", "output_norm": "transformer.ln_f",
                     "output": "lm_head"],
                    ["attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
                     "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"], "transformer.h.")
        }
        return (["token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"],
                ["attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"], "model.layers.")
    }

    /// Each GGUF tensor's Hugging Face name and layout; a name outside the architecture's is refused.
    static func tensorMapping(_ file: GGUFFile, architecture arch: String,
                              config: ConfigReader) throws(ModelError) -> [String: (info: GGUFTensorInfo, layout: GGUFCheckpoint.Layout)] {
        let gpt2 = arch == "gpt2"
        let layers = try config.int(gpt2 ? "n_layer" : "num_hidden_layers", Limits.layers)
        var permute: (q: Int, k: Int)? = nil
        if arch == "llama" {
            let heads = try config.int("num_attention_heads", Limits.heads)
            permute = (heads, try config.int("num_key_value_heads", Limits.heads, default: heads))
        }
        let (global, block, prefix) = names(arch)
        var out: [String: (info: GGUFTensorInfo, layout: GGUFCheckpoint.Layout)] = [:]
        for t in file.tensors {
            let parts = t.name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard let kind = parts.last, kind == "weight" || kind == "bias" else { throw unknown(t, file) }
            var hf: String? = nil
            var layout = GGUFCheckpoint.Layout.stored
            if parts.count == 2, let g = global[parts[0]] {
                hf = "\(g).\(kind)"
            } else if parts.count == 4, parts[0] == "blk", let i = Int(parts[1]), String(i) == parts[1], (0..<layers).contains(i),
                      let b = block[parts[2]] {
                hf = "\(prefix)\(i).\(b).\(kind)"
                if let p = permute, parts[2] == "attn_q" || parts[2] == "attn_k" {
                    layout = .unpermute(heads: parts[2] == "attn_q" ? p.q : p.k)
                }
                if gpt2, kind == "weight", ["attn_qkv", "attn_output", "ffn_up", "ffn_down"].contains(parts[2]) { layout = .transposed }
            }
            guard let name = hf else { throw unknown(t, file) }
            out[name] = (t, layout)
        }
        return out
    }

    static func unknown(_ t: GGUFTensorInfo, _ file: GGUFFile) -> ModelError {
        // rope_freqs (Llama 3 scaling) and anything else: llama.cpp would use it, transformers not.
        .unexpectedTensors(file: file.url.path, tensors: [t.name])
    }
}
