import Foundation
import GGUF
import Crypto
import AssayCommon
import SafeTensors

/// Errors from inspecting a path. SafeTensors violations are wrapped unchanged.
public enum InspectError: Error, Equatable, Sendable, CustomStringConvertible {
    case pathNotFound(String)
    case notInspectable(path: String, reason: String)
    case invalidConfig(file: String, reason: String)
    case safetensors(SafeTensorsError)
    case gguf(GGUFError)
    case io(file: String, reason: String)

    public var description: String {
        switch self {
        case let .pathNotFound(p): return "\(p.terminalSafe): no such file or directory"
        case let .notInspectable(p, r): return "\(p.terminalSafe): \(r)"
        case let .invalidConfig(f, r): return "\(f.terminalSafe): \(r)"
        case let .safetensors(e): return e.description
        case let .gguf(e): return e.description
        case let .io(f, r): return "\(f.terminalSafe): \(r)"
        }
    }
}

/// What `assay inspect` reports. Encoded as JSON with snake_case keys; the structure is
/// versioned by `schema_version` and documented in docs/usage.md.
public struct InspectionReport: Codable, Sendable, Equatable {
    public static let schemaVersion = 1

    public struct FileEntry: Codable, Sendable, Equatable {
        public var path: String
        public var bytes: Int
        public var sha256: String
    }

    public struct TensorEntry: Codable, Sendable, Equatable {
        public var file: String
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var bytes: Int
        public var parameters: Int
        /// NaN / ±Inf counts for floating-point dtypes that are counted (F32, F16, BF16, F64); nil otherwise.
        public var nan: Int?
        public var inf: Int?
    }

    public struct ConfigSummary: Codable, Sendable, Equatable {
        public var modelType: String?
        public var architectures: [String]?
        public var hiddenSize: Int?
        public var intermediateSize: Int?
        public var numHiddenLayers: Int?
        public var numAttentionHeads: Int?
        public var numKeyValueHeads: Int?
        public var vocabSize: Int?
        public var maxPositionEmbeddings: Int?
        public var torchDtype: String?
        public var tieWordEmbeddings: Bool?
        public var keys: Int

        enum CodingKeys: String, CodingKey {
            case modelType = "model_type", architectures, hiddenSize = "hidden_size"
            case intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
            case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads"
            case vocabSize = "vocab_size", maxPositionEmbeddings = "max_position_embeddings"
            case torchDtype = "torch_dtype", tieWordEmbeddings = "tie_word_embeddings", keys
        }
    }

    public var schemaVersion: Int
    public var path: String
    public var kind: String
    public var files: [FileEntry]
    public var tensors: [TensorEntry]
    public var tensorCount: Int
    public var parameterCount: Int
    public var metadata: [String: [String: String]]
    public var config: ConfigSummary?
    public var nonFiniteTensors: Int

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", path, kind, files, tensors, tensorCount = "tensor_count"
        case parameterCount = "parameter_count", metadata, config, nonFiniteTensors = "non_finite_tensors"
    }
}

public enum Inspector {
    /// Inspects a `.safetensors` file or a model directory: every file's SHA-256, each
    /// safetensors file's validated tensor table with NaN/Inf counts, and a config.json summary.
    /// A sharded checkpoint's index is validated as a whole.
    public static func inspect(_ url: URL) throws(InspectError) -> InspectionReport {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { throw .pathNotFound(url.path) }
        if !isDir.boolValue {
            if url.pathExtension.lowercased() == "gguf" || Self.startsWithGGUFMagic(url) { return try inspectGGUF(url) }
            let file: SafeTensorsFile
            do { file = try SafeTensorsFile(url: url) } catch { throw .safetensors(error) }
            let tensors = table(file, displayName: url.lastPathComponent)
            return InspectionReport(
                schemaVersion: InspectionReport.schemaVersion, path: url.path, kind: "file",
                files: [try fileEntry(url, relative: url.lastPathComponent, mapped: file.map)],
                tensors: tensors, tensorCount: tensors.count, parameterCount: tensors.reduce(0) { $0 + $1.parameters },
                metadata: file.metadata.isEmpty ? [:] : [url.lastPathComponent: file.metadata], config: nil,
                nonFiniteTensors: tensors.filter { ($0.nan ?? 0) + ($0.inf ?? 0) > 0 }.count)
        }

        let relFiles = try listFiles(url)
        var files: [InspectionReport.FileEntry] = []
        for rel in relFiles { files.append(try fileEntry(url.appendingPathComponent(rel), relative: rel, mapped: nil)) }

        // Validate a sharded index as a whole, then read every safetensors file's table.
        if relFiles.contains(Checkpoint.indexName) {
            do { _ = try Checkpoint.openIndex(url.appendingPathComponent(Checkpoint.indexName)) } catch { throw .safetensors(error) }
        }
        var tensors: [InspectionReport.TensorEntry] = []
        var metadata: [String: [String: String]] = [:]
        for rel in relFiles where rel.hasSuffix(".safetensors") {
            let f: SafeTensorsFile
            do { f = try SafeTensorsFile(url: url.appendingPathComponent(rel)) } catch { throw .safetensors(error) }
            tensors += table(f, displayName: rel)
            if !f.metadata.isEmpty { metadata[rel] = f.metadata }
        }
        guard !tensors.isEmpty || relFiles.contains(where: { $0.hasSuffix(".safetensors") }) else {
            throw .notInspectable(path: url.path, reason: "directory holds no .safetensors file")
        }
        var config: InspectionReport.ConfigSummary?
        if relFiles.contains("config.json") { config = try summarizeConfig(url.appendingPathComponent("config.json")) }
        return InspectionReport(
            schemaVersion: InspectionReport.schemaVersion, path: url.path, kind: "directory", files: files,
            tensors: tensors, tensorCount: tensors.count, parameterCount: tensors.reduce(0) { $0 + $1.parameters },
            metadata: metadata, config: config,
            nonFiniteTensors: tensors.filter { ($0.nan ?? 0) + ($0.inf ?? 0) > 0 }.count)
    }

    /// Whether the file's first four bytes are GGUF's magic (a GGUF named otherwise is still one).
    static func startsWithGGUFMagic(_ url: URL) -> Bool {
        guard let map = try? MappedFile(path: url.path), map.size >= 4 else { return false }
        return Array(map.bytes.prefix(4)) == Array("GGUF".utf8)
    }

    static func table(_ f: SafeTensorsFile, displayName: String) -> [InspectionReport.TensorEntry] {
        f.tensors.sorted { $0.name < $1.name }.map { t in
            let nf = f.nonFiniteCounts(t)
            return .init(file: displayName, name: t.name, dtype: t.dtype.rawValue, shape: t.shape, bytes: t.byteCount,
                         parameters: t.elementCount, nan: nf?.nan, inf: nf?.inf)
        }
    }

    /// Regular files below `root`, relative and sorted, symlinks to them included. A FIFO, socket or device is refused, naming it: it is
    /// never opened, and a directory that holds one is not a model to inspect.
    static func listFiles(_ root: URL) throws(InspectError) -> [String] {
        guard let e = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey, .isSymbolicLinkKey],
                                                     options: [], errorHandler: nil) else {
            throw .io(file: root.path, reason: "cannot list directory")
        }
        var out: [String] = []
        let base = root.standardizedFileURL.path
        for case let u as URL in e {
            // Symlinks are followed as the loaders follow them (the audit says where they lead).
            var st = stat()
            guard stat(u.path, &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            if type == S_IFDIR { continue }
            guard type == S_IFREG else {
                throw .io(file: u.path, reason: "is \(SafeFile.kind(ofMode: st.st_mode)), not a regular file; refusing to read it")
            }
            var rel = u.standardizedFileURL.path
            if rel.hasPrefix(base + "/") { rel.removeFirst(base.count + 1) }
            out.append(rel)
        }
        return out.sorted()
    }

    static func fileEntry(_ url: URL, relative: String, mapped: MappedFile?) throws(InspectError) -> InspectionReport.FileEntry {
        let map: MappedFile
        if let mapped { map = mapped } else {
            do { map = try MappedFile(path: url.path) } catch { throw .io(file: url.path, reason: error.description) }
        }
        return .init(path: relative, bytes: map.size, sha256: sha256Hex(map.bytes))
    }

    public static func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var h = SHA256()
        h.update(bufferPointer: bytes)
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// SHA-256 of a file's bytes, hex.
    public static func sha256Hex(file url: URL) throws(InspectError) -> String {
        let map: MappedFile
        do { map = try MappedFile(path: url.path) } catch { throw .io(file: url.path, reason: error.description) }
        return sha256Hex(map.bytes)
    }

    static func summarizeConfig(_ url: URL) throws(InspectError) -> InspectionReport.ConfigSummary {
        let map: MappedFile
        do { map = try MappedFile(path: url.path) } catch { throw .io(file: url.path, reason: error.description) }
        guard map.size <= 16 << 20 else { throw .invalidConfig(file: url.path, reason: "config.json is \(map.size) bytes, over 16 MiB") }
        let json: JSONValue
        do {
            json = try JSONParser.parse(UnsafeBufferPointer(start: map.bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                                            count: map.size))
        } catch { throw .invalidConfig(file: url.path, reason: "not valid JSON: \(error.description)") }
        guard let members = json.members else {
            throw .invalidConfig(file: url.path, reason: "must be a JSON object, found \(json.typeName)")
        }
        if let dup = json.firstDuplicateKeyPath {
            throw .invalidConfig(file: url.path, reason: "key '\(dup.terminalSafe)' appears more than once")
        }
        func int(_ keys: String...) throws(InspectError) -> Int? {
            for k in keys {
                guard let v = json[k], v != .null else { continue }
                guard let i = v.exactInt else { throw .invalidConfig(file: url.path, reason: "'\(k)' must be an integer, found \(v)") }
                return i
            }
            return nil
        }
        func str(_ k: String) throws(InspectError) -> String? {
            guard let v = json[k], v != .null else { return nil }
            guard let s = v.string else { throw .invalidConfig(file: url.path, reason: "'\(k)' must be a string, found \(v.typeName)") }
            return s
        }
        var arch: [String]?
        if let a = json["architectures"], a != .null {
            guard let items = a.array, items.allSatisfy({ $0.string != nil }) else {
                throw .invalidConfig(file: url.path, reason: "'architectures' must be an array of strings")
            }
            arch = items.compactMap(\.string)
        }
        return .init(modelType: try str("model_type"), architectures: arch,
                     hiddenSize: try int("hidden_size", "n_embd", "d_model"),
                     intermediateSize: try int("intermediate_size", "n_inner"),
                     numHiddenLayers: try int("num_hidden_layers", "n_layer"),
                     numAttentionHeads: try int("num_attention_heads", "n_head"),
                     numKeyValueHeads: try int("num_key_value_heads"),
                     vocabSize: try int("vocab_size"),
                     maxPositionEmbeddings: try int("max_position_embeddings", "n_positions"),
                     torchDtype: try str("torch_dtype"), tieWordEmbeddings: json["tie_word_embeddings"]?.bool,
                     keys: members.count)
    }
}
