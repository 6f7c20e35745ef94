import Foundation
import AssayCommon
import GGUF
import SafeTensors
import TensorCore

/// Where a store's tensors come from: a safetensors checkpoint (weights kept as stored) or a GGUF
/// file (dequantised to Float32 on demand, in Hugging Face names and layout).
public enum WeightSource {
    case safetensors(Checkpoint)
    case gguf(GGUFCheckpoint)

    /// A model directory's safetensors checkpoint, or a GGUF file's tensors.
    public static func open(_ location: URL) throws(ModelError) -> WeightSource {
        if GGUFFile.isGGUF(location) { return .gguf(try GGUFCheckpoint.open(location)) }
        do { return .safetensors(try Checkpoint.open(location)) } catch { throw .safetensors(error) }
    }

    public var tensorNames: [String] {
        switch self {
        case let .safetensors(c): c.tensorNames
        case let .gguf(g): g.tensorNames
        }
    }

    public func shape(_ name: String) -> [Int]? {
        switch self {
        case let .safetensors(c): c.info(name)?.shape
        case let .gguf(g): g.shape(name)
        }
    }

    /// The tensor as Float32 (GGUF: dequantised, in Hugging Face layout).
    public func tensor(_ name: String) throws(ModelError) -> Tensor {
        switch self {
        case let .safetensors(c): do { return try c.tensor(name) } catch { throw .safetensors(error) }
        case let .gguf(g): return try g.tensor(name)
        }
    }

    /// Whether the tensor's values can be read as numbers (safetensors bool/int tensors cannot).
    public func isComputable(_ name: String) -> Bool {
        switch self {
        case let .safetensors(c): c.info(name)?.dtype.isComputable ?? false
        case let .gguf(g): g.shape(name) != nil
        }
    }

    /// Whether `name` is stored with the same type and bytes here and in `other`, compared
    /// straight from the maps; nil when the two store it in different formats (compare values).
    public func storedBytesEqual(_ name: String, _ other: WeightSource) -> Bool? {
        func same(_ x: UnsafeRawBufferPointer, _ y: UnsafeRawBufferPointer) -> Bool {
            x.count == y.count && (x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0)
        }
        switch (self, other) {
        case let (.safetensors(a), .safetensors(b)):
            guard let ai = a.info(name), let bi = b.info(name) else { return false }
            return ai.dtype == bi.dtype && a.file(containing: name)!.withRawBytes(ai) { x in
                b.file(containing: name)!.withRawBytes(bi) { y in same(x, y) }
            }
        case let (.gguf(a), .gguf(b)):
            guard let ai = a.storedInfo(name), let bi = b.storedInfo(name) else { return false }
            return ai.type == bi.type && ai.dims == bi.dims && same(a.file.bytes(of: ai), b.file.bytes(of: bi))
        default:
            return nil
        }
    }
}

/// Strict weight binding: the architecture asks for each tensor by name and
/// expected shape; a missing or mis-shaped tensor is an error naming it, and after binding any
/// tensor nobody asked for is an error too. Shapes are checked against the safetensors header
/// before a single byte is decoded.
public final class WeightStore {
    public let source: String
    let backing: WeightSource?
    /// Tensors already decoded (adapter merges, tests), by name.
    var overrides: [String: Tensor]
    var consumed = Set<String>()
    /// Overrides `set` put here (merged adapters) are handed over on their first `take` and
    /// dropped from the store, so a merged model does not hold every Float32 weight twice while it
    /// packs them; a second `take` of one is an error, not a silent read of the unmerged bytes.
    var handOver = Set<String>(), handedOver = Set<String>()
    /// Buffers transformers saves in some checkpoints that carry no learned weights.
    let ignorable: (String) -> Bool

    public convenience init(checkpoint: Checkpoint, source: String, ignorable: @escaping (String) -> Bool = { _ in false }) {
        self.init(.safetensors(checkpoint), source: source, ignorable: ignorable)
    }

    public init(_ backing: WeightSource, source: String, ignorable: @escaping (String) -> Bool = { _ in false }) {
        self.backing = backing
        self.source = source
        self.overrides = [:]
        self.ignorable = ignorable
    }

    public init(tensors: [String: Tensor], source: String) {
        backing = nil
        self.source = source
        overrides = tensors
        ignorable = { _ in false }
    }

    public var names: [String] {
        Set((backing?.tensorNames ?? []) + Array(overrides.keys)).sorted()
    }

    public func contains(_ name: String) -> Bool { overrides[name] != nil || backing?.shape(name) != nil }

    public func shape(_ name: String) -> [Int]? { overrides[name]?.shape ?? backing?.shape(name) }

    /// Replaces a tensor's value (LoRA merge).
    public func set(_ name: String, _ t: Tensor) {
        overrides[name] = t
        handOver.insert(name)
        handedOver.remove(name)
    }

    /// The tensor, checked for shape and for NaN/Inf.
    public func take(_ name: String, _ shape: [Int], field: String) throws(ModelError) -> Tensor {
        guard let got = self.shape(name) else { throw .missingTensor(file: source, tensor: name) }
        guard got == shape else { throw .tensorShape(file: source, tensor: name, expected: shape, got: got, field: field) }
        guard !handedOver.contains(name) else {
            throw .tensor("\(source.terminalSafe): '\(name.terminalSafe)' (merged from an adapter) was bound twice")
        }
        consumed.insert(name)
        let t: Tensor
        if let o = overrides[name] {
            t = o
            if handOver.remove(name) != nil {
                overrides[name] = nil
                handedOver.insert(name)
            }
        } else {
            t = try backing!.tensor(name)
        }
        var nan = 0, inf = 0
        t.withUnsafeBufferPointer { p in
            for v in p where !v.isFinite { if v.isNaN { nan += 1 } else { inf += 1 } }
        }
        if nan + inf > 0 { throw .nonFiniteWeights(file: source, tensor: name, nan: nan, inf: inf) }
        return t
    }

    /// A weight matrix as stored (BF16 and F16 stay so, widened in registers), checked for shape and
    /// for NaN/Inf, as rows to pack (`PackedMatrix`). Overrides (merged adapters) are Float32.
    public func takeRows(_ name: String, _ shape: [Int], field: String) throws(ModelError) -> PackedMatrix.Rows {
        guard let got = self.shape(name) else { throw .missingTensor(file: source, tensor: name) }
        guard got == shape, shape.count == 2 else {
            throw .tensorShape(file: source, tensor: name, expected: shape, got: got, field: field)
        }
        guard case let .safetensors(checkpoint)? = backing, overrides[name] == nil, !handedOver.contains(name) else {
            return PackedMatrix.Rows(try take(name, shape, field: field))
        }
        consumed.insert(name)
        guard let file = checkpoint.file(containing: name), let info = file.info(name) else {
            throw .missingTensor(file: source, tensor: name)
        }
        if let (nan, inf) = file.nonFiniteCounts(info), nan + inf > 0 {
            throw .nonFiniteWeights(file: source, tensor: name, nan: nan, inf: inf)
        }
        do { return try file.storedRows(info) } catch { throw .safetensors(error) }
    }

    /// One weight matrix, packed as stored.
    public func takeMatrix(_ name: String, _ shape: [Int], field: String) throws(ModelError) -> PackedMatrix {
        PackedMatrix(stacking: [try takeRows(name, shape, field: field)])
    }

    public func takeOptional(_ name: String, _ shape: [Int], field: String) throws(ModelError) -> Tensor? {
        contains(name) ? try take(name, shape, field: field) : nil
    }

    /// Marks a tensor as read without binding it (a tied copy checked separately).
    func markConsumed(_ name: String) { consumed.insert(name) }

    /// Fails if any tensor was never bound.
    public func finish() throws(ModelError) {
        let left = names.filter { !consumed.contains($0) && !ignorable($0) }
        if !left.isEmpty { throw .unexpectedTensors(file: source, tensors: left) }
    }
}
