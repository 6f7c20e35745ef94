import Foundation
import AssayCommon
import GGUF

/// `assay inspect` of a GGUF file: its tensors with their ggml types and row-major shapes (NaN
/// and Inf counted after dequantising the types Assay reads), its scalar metadata as text (an
/// array as its element count and type), and the architecture's sizes from the metadata.
extension Inspector {
    static func inspectGGUF(_ url: URL) throws(InspectError) -> InspectionReport {
        let f: GGUFFile
        do { f = try GGUFFile(url: url) } catch { throw .gguf(error) }
        let name = url.lastPathComponent
        var tensors: [InspectionReport.TensorEntry] = []
        for t in f.tensors.sorted(by: { $0.name < $1.name }) {
            var nan: Int?, inf: Int?
            if GGUFFile.dequantizable.contains(t.type), let xs = try? f.floats(t) {
                var n = 0, i = 0
                for x in xs where !x.isFinite { if x.isNaN { n += 1 } else { i += 1 } }
                (nan, inf) = (n, i)
            }
            tensors.append(.init(file: name, name: t.name, dtype: t.type.description, shape: t.shape, bytes: t.byteCount,
                                 parameters: t.elementCount, nan: nan, inf: inf))
        }
        var metadata: [String: String] = ["gguf.version": String(f.version)]
        for key in f.keys { metadata[key] = Self.text(f.metadata[key]!) }
        let arch = f.metadata["general.architecture"]?.string
        func int(_ suffix: String) -> Int? { arch.flatMap { f.metadata["\($0).\(suffix)"]?.integer } }
        var vocab: Int?
        if case let .array(_, tokens)? = f.metadata["tokenizer.ggml.tokens"] { vocab = tokens.count }
        let config = InspectionReport.ConfigSummary(
            modelType: arch, architectures: nil, hiddenSize: int("embedding_length"), intermediateSize: int("feed_forward_length"),
            numHiddenLayers: int("block_count"), numAttentionHeads: int("attention.head_count"),
            numKeyValueHeads: int("attention.head_count_kv"), vocabSize: vocab, maxPositionEmbeddings: int("context_length"),
            torchDtype: nil, tieWordEmbeddings: f.tensor("output.weight") == nil, keys: f.keys.count)
        return InspectionReport(
            schemaVersion: InspectionReport.schemaVersion, path: url.path, kind: "gguf",
            files: [try fileEntry(url, relative: name, mapped: f.map)], tensors: tensors, tensorCount: tensors.count,
            parameterCount: tensors.reduce(0) { $0 + $1.parameters }, metadata: [name: metadata], config: config,
            nonFiniteTensors: tensors.filter { ($0.nan ?? 0) + ($0.inf ?? 0) > 0 }.count)
    }

    static func text(_ v: GGUFValue) -> String {
        switch v {
        case let .uint8(x): String(x)
        case let .int8(x): String(x)
        case let .uint16(x): String(x)
        case let .int16(x): String(x)
        case let .uint32(x): String(x)
        case let .int32(x): String(x)
        case let .uint64(x): String(x)
        case let .int64(x): String(x)
        case let .float32(x): String(x)
        case let .float64(x): String(x)
        case let .bool(x): String(x)
        case let .string(s): s
        case let .array(_, xs): "[\(xs.count) \(xs.first?.typeName ?? "")]"
        }
    }
}
