import AssayCommon
import GGUF
import SafeTensors
import TensorCore

/// Why a model could not be loaded or run. Each case names the file and the field or tensor.
public enum ModelError: Error, Equatable, Sendable, CustomStringConvertible {
    case configMissing(directory: String)
    case invalidConfig(file: String, field: String, reason: String)
    case unsupportedArchitecture(file: String, modelType: String)
    case unsupportedOption(file: String, field: String, value: String)
    case missingTensor(file: String, tensor: String)
    case unexpectedTensors(file: String, tensors: [String])
    case tensorShape(file: String, tensor: String, expected: [Int], got: [Int], field: String)
    case nonFiniteWeights(file: String, tensor: String, nan: Int, inf: Int)
    case safetensors(SafeTensorsError)
    case gguf(GGUFError)
    case tensor(String)
    case invalidInput(String)
    case adapter(file: String, reason: String)

    public var description: String {
        switch self {
        case let .configMissing(d): return "\(d.terminalSafe): no config.json"
        case let .invalidConfig(f, field, r): return "\(f.terminalSafe): field '\(field)': \(r)"
        case let .unsupportedArchitecture(f, t):
            return "\(f.terminalSafe): model_type '\(t.terminalSafe)' is not supported (supported: llama, mistral, qwen2, gpt2, gpt_neox)"
        case let .unsupportedOption(f, field, v):
            return "\(f.terminalSafe): field '\(field)' = \(v.terminalSafe) is not supported"
        case let .missingTensor(f, t): return "\(f.terminalSafe): missing tensor '\(t.terminalSafe)'"
        case let .unexpectedTensors(f, ts):
            let shown = ts.prefix(5).map { "'\($0.terminalSafe)'" }.joined(separator: ", ")
            return "\(f.terminalSafe): \(ts.count) tensor(s) the architecture does not use: \(shown)\(ts.count > 5 ? ", …" : "")"
        case let .tensorShape(f, t, e, g, field):
            return "\(f.terminalSafe): tensor '\(t.terminalSafe)' has shape \(g), expected \(e) from config field(s) \(field)"
        case let .nonFiniteWeights(f, t, n, i):
            return "\(f.terminalSafe): tensor '\(t.terminalSafe)' holds \(n) NaN and \(i) Inf values"
        case let .safetensors(e): return e.description
        case let .gguf(e): return e.description
        case let .tensor(m): return m
        case let .invalidInput(m): return m
        case let .adapter(f, r): return "\(f.terminalSafe): \(r)"
        }
    }
}
