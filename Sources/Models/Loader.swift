import Foundation
import AssayCommon
import GGUF
import SafeTensors
import TensorCore

/// Loads a model directory (config.json + safetensors) by `model_type`, optionally merging a LoRA
/// adapter. Nothing in the directory is executed; `auto_map` / custom code is never consulted.
public enum ModelLoader {
    public static let supported = ["llama", "mistral", "qwen2", "gpt2", "gpt_neox"]

    public static func load(_ dir: URL, adapter: URL? = nil) throws(ModelError) -> any CausalLanguageModel {
        try load(dir, adapters: adapter.map { [$0] } ?? [])
    }

    /// The model with `adapters` merged in the order given (each on the result of the last).
    /// `location` is a model directory or a `.gguf` file (`GGUFCheckpoint`).
    public static func load(_ location: URL, adapters: [URL]) throws(ModelError) -> any CausalLanguageModel {
        let gguf = try isGGUF(location) ? GGUFCheckpoint.open(location) : nil
        let c: ConfigReader
        if let gguf { c = gguf.config } else {
            let cfgURL = location.appendingPathComponent("config.json")
            guard FileManager.default.fileExists(atPath: cfgURL.path) else { throw .configMissing(directory: location.path) }
            c = try ConfigReader.load(cfgURL)
        }
        let type = try c.string("model_type")
        // Validate the config fully before touching any weight.
        enum Parsed { case llama(LlamaConfig), gpt2(GPT2Config), neox(GPTNeoXConfig) }
        let parsed: Parsed
        switch type {
        case "llama": parsed = .llama(try LlamaConfig(c))
        case "mistral": parsed = .llama(try Mistral.config(c))
        case "qwen2": parsed = .llama(try Qwen2.config(c))
        case "gpt2": parsed = .gpt2(try GPT2Config(c))
        case "gpt_neox": parsed = .neox(try GPTNeoXConfig(c))
        default: throw .unsupportedArchitecture(file: c.file, modelType: type)
        }
        let buffers: (String) -> Bool
        switch parsed {
        case .gpt2: buffers = GPT2Model.isBuffer
        case .neox: buffers = GPTNeoXModel.isBuffer
        case .llama: buffers = { $0.hasSuffix(".rotary_emb.inv_freq") }
        }
        let weights: WeightStore
        if let gguf {
            weights = WeightStore(.gguf(gguf), source: gguf.path)
        } else {
            let ckpt: Checkpoint
            do { ckpt = try Checkpoint.open(location) } catch { throw .safetensors(error) }
            let source = ckpt.indexURL?.path ?? ckpt.files.first?.path ?? location.path
            weights = WeightStore(checkpoint: ckpt, source: source, ignorable: buffers)
        }
        let tied: Bool
        switch parsed {
        case let .llama(cfg): tied = cfg.tieWordEmbeddings
        case let .gpt2(cfg): tied = cfg.tieWordEmbeddings
        case let .neox(cfg): tied = cfg.tieWordEmbeddings
        }
        for adapter in adapters { try LoRAAdapter.load(adapter).merge(into: weights, modelType: type, tiedOutputHead: tied) }
        switch parsed {
        case let .llama(cfg): return try LlamaModel(config: cfg, weights: weights)
        case let .gpt2(cfg): return try GPT2Model(config: cfg, weights: weights)
        case let .neox(cfg): return try GPTNeoXModel(config: cfg, weights: weights)
        }
    }

    public static func isGGUF(_ url: URL) -> Bool { GGUFFile.isGGUF(url) }

    /// The config of a model location: config.json of a directory (nil if it has none), or the
    /// one a GGUF file's metadata gives.
    public static func config(at location: URL) throws(ModelError) -> ConfigReader? {
        if isGGUF(location) { return try GGUFCheckpoint.open(location).config }
        let url = location.appendingPathComponent("config.json")
        return SafeFile.isRegularFile(url) ? try ConfigReader.load(url) : nil
    }
}
