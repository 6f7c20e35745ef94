import Foundation
import AssayCommon
import SafeTensors
import TensorCore

/// A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`), merged into the base
/// weights at load: W ← W + s·B·A with s = lora_alpha / r (lora_alpha / √r with `use_rslora`),
/// per-module r and alpha from `rank_pattern` / `alpha_pattern`, and (B·A)ᵀ for Conv1D layers
/// (`fan_in_fan_out`, GPT-2). DoRA, trained biases and `modules_to_save` are refused rather than
/// half-applied.
public struct LoRAAdapter: Sendable {
    public struct Module: Sendable {
        /// Base weight name, e.g. `model.layers.0.self_attn.q_proj.weight`.
        public let weight: String
        public let a: Tensor      // (r, in)
        public let b: Tensor      // (out, r)
        public let scale: Float
    }

    public let directory: URL
    public let rank: Int
    public let alpha: Double
    public let fanInFanOut: Bool
    public let modules: [Module]

    public static func load(_ dir: URL) throws(ModelError) -> LoRAAdapter {
        let cfgURL = dir.appendingPathComponent("adapter_config.json")
        guard FileManager.default.fileExists(atPath: cfgURL.path) else {
            throw .adapter(file: dir.path, reason: "no adapter_config.json (expected a PEFT LoRA adapter directory)")
        }
        let c = try ConfigReader.load(cfgURL)
        let type = try c.string("peft_type", default: "LORA")
        guard type == "LORA" else { throw .unsupportedOption(file: c.file, field: "peft_type", value: "\"\(type)\" (only LORA)") }
        let r = try c.int("r", 1...65_536)
        let alpha = try c.double("lora_alpha", default: Double(r))
        let rslora = try c.bool("use_rslora", default: false)
        if try c.bool("use_dora", default: false) { throw .unsupportedOption(file: c.file, field: "use_dora", value: "true") }
        let bias = try c.string("bias", default: "none")
        guard bias == "none" else { throw .unsupportedOption(file: c.file, field: "bias", value: "\"\(bias)\" (only \"none\")") }
        if let m = c.json["modules_to_save"], m != .null, m.array?.isEmpty == false {
            throw .unsupportedOption(file: c.file, field: "modules_to_save", value: "non-empty list")
        }
        if try c.bool("lora_bias", default: false) { throw .unsupportedOption(file: c.file, field: "lora_bias", value: "true") }
        try c.requireAbsent(["layer_replication"])
        let fanInFanOut = try c.bool("fan_in_fan_out", default: false)
        func patterns(_ key: String) throws(ModelError) -> [(String, Double)] {
            guard let o = try c.object(key) else { return [] }
            var out: [(String, Double)] = []
            for m in o.json.members ?? [] {
                guard let v = m.value.double, v > 0 else { throw .invalidConfig(file: c.file, field: "\(key).\(m.key)", reason: "must be a positive number") }
                out.append((m.key, v))
            }
            return out
        }
        let rankPattern = try patterns("rank_pattern"), alphaPattern = try patterns("alpha_pattern")

        let weightsURL = dir.appendingPathComponent("adapter_model.safetensors")
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            throw .adapter(file: dir.path, reason: "no adapter_model.safetensors (pickled adapter_model.bin is never loaded)")
        }
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(url: weightsURL) } catch { throw .safetensors(error) }
        var aByModule: [String: String] = [:], bByModule: [String: String] = [:]
        for name in file.tensorNames {
            var n = name
            if n.hasPrefix("base_model.model.") { n.removeFirst("base_model.model.".count) }
            if n.hasSuffix(".lora_A.weight") {
                aByModule[String(n.dropLast(".lora_A.weight".count))] = name
            } else if n.hasSuffix(".lora_B.weight") {
                bByModule[String(n.dropLast(".lora_B.weight".count))] = name
            } else {
                throw .adapter(file: weightsURL.path, reason: "tensor '\(name.terminalSafe)' is not a LoRA A or B matrix")
            }
        }
        guard Set(aByModule.keys) == Set(bByModule.keys) else {
            let odd = Set(aByModule.keys).symmetricDifference(bByModule.keys).sorted().first ?? ""
            throw .adapter(file: weightsURL.path, reason: "module '\(odd.terminalSafe)' has only one of lora_A and lora_B")
        }
        guard !aByModule.isEmpty else { throw .adapter(file: weightsURL.path, reason: "no LoRA tensors") }
        func matches(_ module: String, _ key: String) -> Bool { module == key || module.hasSuffix("." + key) }
        var modules: [Module] = []
        for module in aByModule.keys.sorted() {
            let a: Tensor, b: Tensor
            do { a = try file.tensor(aByModule[module]!); b = try file.tensor(bByModule[module]!) } catch { throw .safetensors(error) }
            let mr = rankPattern.last(where: { matches(module, $0.0) }).map { Int($0.1) } ?? r
            let ma = alphaPattern.last(where: { matches(module, $0.0) })?.1 ?? alpha
            guard a.rank == 2, b.rank == 2, a.shape[0] == mr, b.shape[1] == mr else {
                throw .adapter(file: weightsURL.path,
                               reason: "module '\(module.terminalSafe)': lora_A \(a.shape) and lora_B \(b.shape) do not share rank r = \(mr)")
            }
            let scale = rslora ? ma / Double(mr).squareRoot() : ma / Double(mr)
            modules.append(Module(weight: module + ".weight", a: a, b: b, scale: Float(scale)))
        }
        return LoRAAdapter(directory: dir, rank: r, alpha: alpha, fanInFanOut: fanInFanOut, modules: modules)
    }

    /// Merges into the base weights. Every adapted module must exist in the base with the shape
    /// B·A implies.
    public func merge(into w: WeightStore) throws(ModelError) {
        for m in modules {
            guard let shape = w.shape(m.weight) else {
                throw .adapter(file: directory.path, reason: "adapts '\(m.weight.terminalSafe)', which the base model does not have")
            }
            let (out, inF) = (m.b.shape[0], m.a.shape[1])
            let expected = fanInFanOut ? [inF, out] : [out, inF]
            guard shape == expected else {
                throw .adapter(file: directory.path,
                               reason: "'\(m.weight.terminalSafe)' is \(shape) in the base but the adapter's B·A is \(expected)")
            }
            var base = try w.take(m.weight, shape, field: "adapter base")
            do {
                var delta = try m.b.matmul(m.a)                          // (out, r) × (r, in) → (out, in)
                if fanInFanOut { delta = delta.transposed.materialized() }
                delta = delta.scaled(by: m.scale)
                try base.add(delta)
            } catch let e as TensorError { throw ModelError(e) } catch { throw .tensor("\(error)") }
            w.set(m.weight, base)
        }
    }
}
