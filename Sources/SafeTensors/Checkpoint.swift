import Foundation
import AssayCommon
import TensorCore

/// The weights of one model: a single safetensors file, or shards listed by
/// `model.safetensors.index.json`. Tensor names are unique across the whole checkpoint.
public struct Checkpoint: Sendable {
    public static let indexName = "model.safetensors.index.json"
    public static let singleName = "model.safetensors"

    public let files: [SafeTensorsFile]
    /// The index file, for a sharded checkpoint.
    public let indexURL: URL?
    private let location: [String: Int]

    /// Sorted tensor names.
    public var tensorNames: [String] { location.keys.sorted() }

    /// Opens a `.safetensors` file, an index JSON, or a model directory. A directory is read as
    /// `model.safetensors` if present, else `model.safetensors.index.json`, else its only
    /// `*.safetensors` file (adapters ship `adapter_model.safetensors`).
    public static func open(_ url: URL) throws(SafeTensorsError) -> Checkpoint {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw .io(file: url.path, reason: "no such file or directory")
        }
        if !isDir.boolValue {
            if url.lastPathComponent.hasSuffix(".json") { return try openIndex(url) }
            return try single(SafeTensorsFile(url: url))
        }
        let single = url.appendingPathComponent(singleName)
        if FileManager.default.fileExists(atPath: single.path) { return try self.single(SafeTensorsFile(url: single)) }
        let index = url.appendingPathComponent(indexName)
        if FileManager.default.fileExists(atPath: index.path) { return try openIndex(index) }
        let candidates = ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? [])
            .filter { $0.hasSuffix(".safetensors") }.sorted()
        if candidates.count == 1 { return try self.single(SafeTensorsFile(url: url.appendingPathComponent(candidates[0]))) }
        throw .noCheckpoint(directory: url.path)
    }

    static func single(_ file: SafeTensorsFile) -> Checkpoint {
        var loc: [String: Int] = [:]
        for t in file.tensors { loc[t.name] = 0 }
        return Checkpoint(files: [file], indexURL: nil, location: loc)
    }

    /// Reads a sharded checkpoint's index. Shard paths must be plain relative names that resolve
    /// (symlinks included) inside the index's directory; every mapped tensor must be in its shard
    /// and every tensor in a shard must be mapped to it.
    public static func openIndex(_ indexURL: URL) throws(SafeTensorsError) -> Checkpoint {
        let ip = indexURL.path
        let map = try MappedFile(path: ip)
        guard map.size <= SafeTensorsFile.maxHeaderLength else {
            throw .invalidIndex(file: ip, reason: "index is \(map.size) bytes, over the \(SafeTensorsFile.maxHeaderLength)-byte limit")
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(UnsafeBufferPointer(start: map.bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                                            count: map.size))
        } catch {
            throw .invalidIndex(file: ip, reason: "not valid JSON: \(error.description)")
        }
        guard json.members != nil else { throw .invalidIndex(file: ip, reason: "must be a JSON object, found \(json.typeName)") }
        guard let weightMap = json["weight_map"] else { throw .invalidIndex(file: ip, reason: "missing 'weight_map'") }
        guard let entries = weightMap.members else {
            throw .invalidIndex(file: ip, reason: "'weight_map' must be an object, found \(weightMap.typeName)")
        }
        if let dup = weightMap.firstDuplicateKey {
            throw .invalidIndex(file: ip, reason: "tensor '\(dup.terminalSafe)' is listed more than once in 'weight_map'")
        }
        let dir = indexURL.deletingLastPathComponent()
        let dirReal = realPath(dir.path) ?? dir.standardizedFileURL.path
        var shardOrder: [String] = []
        var wanted: [String: String] = [:]
        for e in entries {
            guard let shard = e.value.string else {
                throw .invalidIndex(file: ip, reason: "shard for '\(e.key.terminalSafe)' must be a string, found \(e.value.typeName)")
            }
            wanted[e.key] = shard
            if !shardOrder.contains(shard) { shardOrder.append(shard) }
        }
        var files: [SafeTensorsFile] = []
        var location: [String: Int] = [:]
        for shard in shardOrder {
            let parts = shard.split(separator: "/", omittingEmptySubsequences: false)
            if shard.isEmpty || shard.hasPrefix("/") || parts.contains("..") || shard.contains("\0") {
                throw .shardPathEscapes(index: ip, shard: shard)
            }
            let url = dir.appendingPathComponent(shard)
            guard FileManager.default.fileExists(atPath: url.path) else { throw .shardMissing(index: ip, shard: shard) }
            guard let real = realPath(url.path), real.hasPrefix(dirReal + "/") else {
                throw .shardPathEscapes(index: ip, shard: shard)
            }
            let file = try SafeTensorsFile(url: url)
            let fi = files.count
            for t in file.tensors {
                guard let mapped = wanted[t.name] else { throw .tensorNotInIndex(index: ip, tensor: t.name, shard: shard) }
                guard mapped == shard else { throw .tensorInTwoShards(index: ip, tensor: t.name, shards: [mapped, shard]) }
                location[t.name] = fi
            }
            files.append(file)
        }
        for (name, shard) in wanted where location[name] == nil {
            throw .tensorMissingFromShard(index: ip, tensor: name, shard: shard)
        }
        return Checkpoint(files: files, indexURL: indexURL, location: location)
    }

    static func realPath(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    public func file(containing name: String) -> SafeTensorsFile? { location[name].map { files[$0] } }

    public func info(_ name: String) -> TensorInfo? { file(containing: name)?.info(name) }

    public func tensor(_ name: String) throws(SafeTensorsError) -> Tensor {
        guard let f = file(containing: name) else {
            throw .tensorNotFound(file: indexURL?.path ?? files.first?.path ?? "checkpoint", tensor: name)
        }
        return try f.tensor(name)
    }

    public var parameterCount: Int { files.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.elementCount } } }
}
