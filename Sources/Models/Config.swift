import Foundation
import AssayCommon
import TensorCore

/// Typed, strict access to config.json. Every accessor names the field it failed on, and every
/// size is range-checked before anything is allocated from it.
public struct ConfigReader: Sendable {
    public let file: String
    public let json: JSONValue

    public static func load(_ url: URL) throws(ModelError) -> ConfigReader {
        let data: [UInt8]
        do { data = try SafeFile.read(url, maxBytes: 16 << 20) } catch {
            if case .notFound = error { throw .configMissing(directory: url.deletingLastPathComponent().path) }
            throw .invalidConfig(file: url.path, field: "(file)", reason: error.reasonOnly)
        }
        let json: JSONValue
        do { json = try JSONParser.parse(data) } catch {
            throw .invalidConfig(file: url.path, field: "(file)", reason: "not valid JSON: \(error.description)")
        }
        guard json.members != nil else {
            throw .invalidConfig(file: url.path, field: "(file)", reason: "must be a JSON object, found \(json.typeName)")
        }
        if let dup = json.firstDuplicateKeyPath { throw .invalidConfig(file: url.path, field: dup, reason: "appears more than once") }
        return ConfigReader(file: url.path, json: json)
    }

    public init(file: String, json: JSONValue) { self.file = file; self.json = json }

    func value(_ key: String) -> JSONValue? {
        guard let v = json[key], v != .null else { return nil }
        return v
    }

    public func has(_ key: String) -> Bool { value(key) != nil }

    /// A required integer within `range` (sizes: positive and small enough to allocate).
    public func int(_ key: String, _ range: ClosedRange<Int>, default def: Int? = nil) throws(ModelError) -> Int {
        guard let v = value(key) else {
            if let def { return def }
            throw .invalidConfig(file: file, field: key, reason: "missing")
        }
        guard let i = v.exactInt else { throw .invalidConfig(file: file, field: key, reason: "must be an integer, found \(Self.show(v))") }
        guard range.contains(i) else {
            throw .invalidConfig(file: file, field: key, reason: "\(i) is outside \(range.lowerBound)…\(range.upperBound)")
        }
        return i
    }

    public func optionalInt(_ key: String, _ range: ClosedRange<Int>) throws(ModelError) -> Int? {
        value(key) == nil ? nil : try int(key, range)
    }

    public func double(_ key: String, default def: Double? = nil, positive: Bool = true) throws(ModelError) -> Double {
        guard let v = value(key) else {
            if let def { return def }
            throw .invalidConfig(file: file, field: key, reason: "missing")
        }
        guard let d = v.double, d.isFinite else {
            throw .invalidConfig(file: file, field: key, reason: "must be a finite number, found \(Self.show(v))")
        }
        if positive && !(d > 0) { throw .invalidConfig(file: file, field: key, reason: "must be positive, found \(d)") }
        return d
    }

    public func bool(_ key: String, default def: Bool) throws(ModelError) -> Bool {
        guard let v = value(key) else { return def }
        guard let b = v.bool else { throw .invalidConfig(file: file, field: key, reason: "must be true or false, found \(Self.show(v))") }
        return b
    }

    public func string(_ key: String, default def: String? = nil) throws(ModelError) -> String {
        guard let v = value(key) else {
            if let def { return def }
            throw .invalidConfig(file: file, field: key, reason: "missing")
        }
        guard let s = v.string else { throw .invalidConfig(file: file, field: key, reason: "must be a string, found \(Self.show(v))") }
        return s
    }

    public func object(_ key: String) throws(ModelError) -> ConfigReader? {
        guard let v = value(key) else { return nil }
        guard v.members != nil else { throw .invalidConfig(file: file, field: key, reason: "must be an object, found \(v.typeName)") }
        return ConfigReader(file: file, json: v)
    }

    /// Token ids such as eos_token_id, which may be an integer or a list.
    public func tokenIDs(_ key: String, vocab: Int) throws(ModelError) -> [Int] {
        guard let v = value(key) else { return [] }
        let items = v.array ?? [v]
        var out: [Int] = []
        for item in items {
            guard let i = item.exactInt, i >= 0, i < vocab else {
                throw .invalidConfig(file: file, field: key, reason: "\(Self.show(item)) is not a token id below vocab_size \(vocab)")
            }
            out.append(i)
        }
        return out
    }

    static func show(_ v: JSONValue) -> String {
        switch v {
        case let .number(t): return t
        case let .string(s): return "\"\(s.terminalSafe)\""
        default: return v.typeName
        }
    }

    /// Refuses options Assay does not implement instead of silently ignoring them.
    public func requireAbsent(_ keys: [String]) throws(ModelError) {
        for k in keys where value(k) != nil {
            if case .bool(false) = value(k)! { continue }
            throw .unsupportedOption(file: file, field: k, value: ConfigReader.show(value(k)!))
        }
    }

    /// Common refusals for every architecture.
    func rejectQuantization() throws(ModelError) {
        if let q = value("quantization_config") {
            throw .unsupportedOption(file: file, field: "quantization_config",
                                     value: q.typeName + " (only unquantized F32/F16/BF16 weights are supported)")
        }
    }
}

/// Rotary position embedding settings, read from transformers 5's `rope_parameters` or
/// transformers 4's `rope_theta` + `rope_scaling`.
public struct RopeSettings: Sendable, Equatable {
    public enum Scaling: Sendable, Equatable {
        case none
        case linear(factor: Double)
        case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalMaxPositions: Int)
    }
    public var theta: Double
    public var scaling: Scaling
    public var partialRotaryFactor: Double

    static func read(_ c: ConfigReader, defaultPartial: Double = 1.0) throws(ModelError) -> RopeSettings {
        var params = try c.object("rope_parameters")
        if params == nil { params = try c.object("rope_scaling") }
        let fieldName = c.has("rope_parameters") ? "rope_parameters" : "rope_scaling"
        var theta = try c.double("rope_theta", default: 10_000)
        if let p = params, p.has("rope_theta") { theta = try p.double("rope_theta") }
        if c.has("rotary_emb_base") { theta = try c.double("rotary_emb_base") }
        let pct = try c.double("rotary_pct", default: defaultPartial)
        var partial = try c.double("partial_rotary_factor", default: pct)
        if let p = params, p.has("partial_rotary_factor") { partial = try p.double("partial_rotary_factor") }
        guard partial > 0 && partial <= 1 else {
            throw .invalidConfig(file: c.file, field: "partial_rotary_factor", reason: "\(partial) is outside (0, 1]")
        }
        var scaling = Scaling.none
        if let p = params {
            let legacyKind = try p.string("type", default: "default")
            let kind = try p.string("rope_type", default: legacyKind)
            switch kind {
            case "default":
                break
            case "linear":
                scaling = .linear(factor: try p.double("factor"))
            case "llama3":
                scaling = .llama3(factor: try p.double("factor"), lowFrequencyFactor: try p.double("low_freq_factor"),
                                  highFrequencyFactor: try p.double("high_freq_factor"),
                                  originalMaxPositions: try p.int("original_max_position_embeddings", 1...(1 << 24)))
            default:
                throw .unsupportedOption(file: c.file, field: "\(fieldName).rope_type",
                                         value: "\"\(kind)\" (supported: default, linear, llama3)")
            }
        }
        return RopeSettings(theta: theta, scaling: scaling, partialRotaryFactor: partial)
    }

    /// The rotary embedding for a head size, with scaled frequencies computed as transformers'
    /// `modeling_rope_utils` does.
    public func embedding(headDim: Int) -> RotaryEmbedding {
        var rotary = Int(Double(headDim) * partialRotaryFactor)
        rotary -= rotary % 2
        let plain = RotaryEmbedding(headDim: headDim, rotaryDim: rotary, base: Float(theta))
        switch scaling {
        case .none:
            return plain
        case let .linear(factor):
            return RotaryEmbedding(headDim: headDim, rotaryDim: rotary, base: Float(theta),
                                   inverseFrequencies: plain.inverseFrequencies.map { $0 / Float(factor) })
        case let .llama3(factor, low, high, original):
            let lowWavelen = Float(original) / Float(low), highWavelen = Float(original) / Float(high)
            let f = plain.inverseFrequencies.map { inv -> Float in
                let wavelen = 2 * Float.pi / inv
                if wavelen < highWavelen { return inv }
                if wavelen > lowWavelen { return inv / Float(factor) }
                let smooth = (Float(original) / wavelen - Float(low)) / (Float(high) - Float(low))
                return (1 - smooth) * inv / Float(factor) + smooth * inv
            }
            return RotaryEmbedding(headDim: headDim, rotaryDim: rotary, base: Float(theta), inverseFrequencies: f)
        }
    }
}

/// Limits on config sizes: generous for any model Assay can run on a CPU, small enough that a
/// hostile config cannot make it allocate absurd amounts before weights are checked.
enum Limits {
    static let hidden = 1...65_536
    static let layers = 1...512
    static let heads = 1...1_024
    static let vocab = 1...(1 << 22)
    static let positions = 1...(1 << 24)
    static let intermediate = 1...(1 << 20)
}
