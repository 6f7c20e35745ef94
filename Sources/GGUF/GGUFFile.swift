import Foundation
import AssayCommon
import SafeTensors

/// Bounds on what a GGUF file may declare, checked before anything is sized (the file itself
/// bounds every allocation too: counts are checked against the bytes that remain).
public struct GGUFLimits: Sendable {
    public var maxTensors = 65_536
    public var maxKeys = 65_536
    /// One string (a key, a tensor name, a token, a chat template).
    public var maxStringBytes = 16 << 20
    /// Elements of one array (a vocabulary, its merges).
    public var maxArrayElements = 8 << 20
    /// Array elements of all the metadata together: each becomes a value in memory, many times
    /// its byte in the file, so a file of many arrays is bounded as a whole (a 256k vocabulary
    /// with its merges and scores is under 1M).
    public var maxMetadataElements = 16 << 20
    /// Arrays inside arrays.
    public var maxNesting = 3
    public init() {}
}

/// A metadata value, as typed in the file (`gguf_type`).
public indirect enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    /// Elements all of `type` (the type id the file gave).
    case array(type: UInt32, [GGUFValue])

    /// The value as an integer, whatever its integer width (nil for other types).
    public var integer: Int? {
        switch self {
        case let .uint8(x): return Int(x)
        case let .int8(x): return Int(x)
        case let .uint16(x): return Int(x)
        case let .int16(x): return Int(x)
        case let .uint32(x): return Int(x)
        case let .int32(x): return Int(x)
        case let .uint64(x): return x <= UInt64(Int.max) ? Int(x) : nil
        case let .int64(x): return Int(x)
        default: return nil
        }
    }
    public var string: String? { if case let .string(s) = self { s } else { nil } }
    public var typeName: String {
        switch self {
        case .uint8: "UINT8"
        case .int8: "INT8"
        case .uint16: "UINT16"
        case .int16: "INT16"
        case .uint32: "UINT32"
        case .int32: "INT32"
        case .float32: "FLOAT32"
        case .bool: "BOOL"
        case .string: "STRING"
        case .uint64: "UINT64"
        case .int64: "INT64"
        case .float64: "FLOAT64"
        case .array: "ARRAY"
        }
    }
}

/// One tensor's entry, validated: its bytes lie inside the data section, aligned, and overlap
/// no other tensor's.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml order: `dims[0]` is the innermost (row length).
    public let dims: [Int]
    public let type: GGMLType
    /// Absolute byte offset in the file and byte length.
    public let offset: Int
    public let byteCount: Int
    public var elementCount: Int { dims.reduce(1, *) }
    /// Row-major (PyTorch) order: the dims reversed.
    public var shape: [Int] { dims.reversed() }
}

/// A GGUF file (versions 2 and 3), read strictly from a memory map: the header, every metadata
/// key and value, every tensor's entry, the alignment and the data section, each checked with
/// overflow-checked arithmetic against the file before anything is sized. Nothing in it is run:
/// a chat template is a string here.
public final class GGUFFile: @unchecked Sendable {
    public let url: URL
    public let map: MappedFile
    public let version: UInt32
    /// Keys in file order, and their values.
    public let keys: [String]
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataOffset: Int

    public convenience init(url: URL, limits: GGUFLimits = GGUFLimits()) throws(GGUFError) {
        let map: MappedFile
        do { map = try MappedFile(path: url.path) } catch { throw .io(file: url.path, reason: "\(error)") }
        try self.init(url: url, map: map, limits: limits)
    }

    init(url: URL, map: MappedFile, limits: GGUFLimits) throws(GGUFError) {
        self.url = url
        self.map = map
        var r = GGUFCursor(bytes: map.bytes, file: url.path, limits: limits)
        let magic = try r.bytes(4, "magic")
        guard magic == Array("GGUF".utf8) else {
            throw .invalid(file: url.path, field: "magic", offset: 0, reason: "not a GGUF file (starts \(magic.map { String($0) }))")
        }
        let v = try r.u32("version")
        guard v == 2 || v == 3 else {
            let reason = v.byteSwapped == 2 || v.byteSwapped == 3 ? "a big-endian GGUF, which Assay does not read"
                : "version \(v); Assay reads versions 2 and 3"
            throw .invalid(file: url.path, field: "version", offset: 4, reason: reason)
        }
        version = v
        let tensorCount = try r.count("tensor_count", limit: limits.maxTensors)
        let keyCount = try r.count("metadata_kv_count", limit: limits.maxKeys)
        var keys: [String] = [], metadata: [String: GGUFValue] = [:], keyOffsets: [String: Int] = [:]
        for _ in 0..<keyCount {
            let at = r.pos
            let key = try r.string("metadata key")
            guard !key.isEmpty else { throw .invalid(file: url.path, field: "metadata key", offset: at, reason: "an empty key") }
            let value = try r.value(of: try r.u32("type of '\(key)'"), field: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw .duplicate(file: url.path, what: "key", name: key, offset: at)
            }
            keys.append(key)
            keyOffsets[key] = at
        }
        self.keys = keys
        self.metadata = metadata
        alignment = try Self.alignment(metadata, file: url.path, offset: keyOffsets["general.alignment"] ?? 0)
        let entries = try (0..<tensorCount).map { _ throws(GGUFError) in try r.tensorEntry() }
        // The data section starts at the next multiple of the alignment.
        let (padded, o) = r.pos.addingReportingOverflow(alignment - 1)
        let dataOffset = o ? Int.max : padded / alignment * alignment
        guard dataOffset <= map.size else {
            throw .truncated(file: url.path, field: "data section", offset: r.pos, needed: UInt64(dataOffset - r.pos),
                             available: map.size - r.pos)
        }
        self.dataOffset = dataOffset
        tensors = try Self.place(entries, dataOffset: dataOffset, alignment: alignment, fileSize: map.size, file: url.path)
    }

    /// `general.alignment`: a UINT32 power of two (32 without it), as llama.cpp requires.
    static func alignment(_ metadata: [String: GGUFValue], file: String, offset: Int) throws(GGUFError) -> Int {
        guard let v = metadata["general.alignment"] else { return 32 }
        guard case let .uint32(a) = v, a > 0, a & (a - 1) == 0, a <= 1 << 20 else {
            throw .invalid(file: file, field: "general.alignment", offset: offset,
                           reason: "a \(v.typeName) \(v.integer.map(String.init) ?? "") is not a UINT32 power of two up to 2^20")
        }
        return Int(a)
    }

    /// Each tensor's bytes at its offset from the data section: aligned, inside the file, and
    /// apart from every other tensor's.
    static func place(_ entries: [GGUFCursor.Entry], dataOffset: Int, alignment: Int, fileSize: Int,
                      file: String) throws(GGUFError) -> [GGUFTensorInfo] {
        var seen = Set<String>()
        var out: [GGUFTensorInfo] = []
        for e in entries {
            guard seen.insert(e.name).inserted else { throw .duplicate(file: file, what: "tensor", name: e.name, offset: e.at) }
            guard e.offset % UInt64(alignment) == 0 else {
                throw .invalid(file: file, field: "tensor '\(e.name)' offset", offset: e.at,
                               reason: "\(e.offset) is not a multiple of the alignment \(alignment)")
            }
            let available = fileSize - dataOffset
            guard e.offset <= UInt64(available), UInt64(e.byteCount) <= UInt64(available) - e.offset else {
                throw .truncated(file: file, field: "tensor '\(e.name)' data", offset: e.at, needed: e.offset &+ UInt64(e.byteCount),
                                 available: available)
            }
            out.append(GGUFTensorInfo(name: e.name, dims: e.dims, type: e.type, offset: dataOffset + Int(e.offset),
                                      byteCount: e.byteCount))
        }
        let sorted = out.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw .invalid(file: file, field: "tensor '\(b.name)' offset", offset: b.offset,
                           reason: "its bytes overlap those of '\(a.name)'")
        }
        return out
    }

    /// A regular file (not a directory, FIFO or device) that starts with the GGUF magic.
    public static func isGGUF(_ url: URL) -> Bool {
        guard SafeFile.isRegularFile(url), let head = try? SafeFile.readPrefix(url, count: 4) else { return false }
        return head == Array("GGUF".utf8)
    }

    public func tensor(_ name: String) -> GGUFTensorInfo? { tensors.first { $0.name == name } }

    /// The tensor's raw bytes (inside the map: valid while this file is).
    public func bytes(of t: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: map.bytes[t.offset..<(t.offset + t.byteCount)])
    }
}

/// Reads the header's little-endian fields from the map, every read checked against the end.
struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    let file: String
    let limits: GGUFLimits
    var pos = 0
    /// Array elements read so far (`GGUFLimits.maxMetadataElements`).
    var elements = 0

    struct Entry { var name: String; var dims: [Int]; var type: GGMLType; var offset: UInt64; var byteCount: Int; var at: Int }

    init(bytes: UnsafeRawBufferPointer, file: String, limits: GGUFLimits) {
        self.bytes = bytes; self.file = file; self.limits = limits
    }

    mutating func need(_ n: UInt64, _ field: String) throws(GGUFError) {
        guard n <= UInt64(bytes.count - pos) else {
            throw .truncated(file: file, field: field, offset: pos, needed: n, available: bytes.count - pos)
        }
    }
    mutating func bytes(_ n: Int, _ field: String) throws(GGUFError) -> [UInt8] {
        try need(UInt64(n), field)
        defer { pos += n }
        return Array(bytes[pos..<(pos + n)])
    }
    mutating func load<T: FixedWidthInteger>(_: T.Type, _ field: String) throws(GGUFError) -> T {
        try need(UInt64(MemoryLayout<T>.size), field)
        defer { pos += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: pos, as: T.self))
    }
    mutating func u32(_ field: String) throws(GGUFError) -> UInt32 { try load(UInt32.self, field) }
    mutating func u64(_ field: String) throws(GGUFError) -> UInt64 { try load(UInt64.self, field) }

    /// A UINT64 count, bounded.
    mutating func count(_ field: String, limit: Int) throws(GGUFError) -> Int {
        let at = pos
        let n = try u64(field)
        guard n <= UInt64(limit) else { throw .limit(file: file, field: field, offset: at, value: n, limit: limit) }
        return Int(n)
    }

    /// A UINT64 length and that many bytes of UTF-8.
    mutating func string(_ field: String) throws(GGUFError) -> String {
        let at = pos
        let n = try u64("length of \(field)")
        guard n <= UInt64(limits.maxStringBytes) else {
            throw .limit(file: file, field: "length of \(field)", offset: at, value: n, limit: limits.maxStringBytes)
        }
        try need(n, field)
        let raw = UnsafeRawBufferPointer(rebasing: bytes[pos..<(pos + Int(n))])
        guard let s = String(validating: raw, as: UTF8.self) else {
            throw .invalid(file: file, field: field, offset: pos, reason: "not valid UTF-8")
        }
        pos += Int(n)
        return s
    }

    /// A value of type id `type` (`gguf_type`); arrays nest at most `limits.maxNesting` deep.
    mutating func value(of type: UInt32, field: String, depth: Int) throws(GGUFError) -> GGUFValue {
        switch type {
        case 0: return .uint8(try load(UInt8.self, field))
        case 1: return .int8(try load(Int8.self, field))
        case 2: return .uint16(try load(UInt16.self, field))
        case 3: return .int16(try load(Int16.self, field))
        case 4: return .uint32(try load(UInt32.self, field))
        case 5: return .int32(try load(Int32.self, field))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self, field)))
        case 7:
            let at = pos
            let b = try load(UInt8.self, field)
            guard b <= 1 else { throw .invalid(file: file, field: field, offset: at, reason: "BOOL \(b) is neither 0 nor 1") }
            return .bool(b == 1)
        case 8: return .string(try string(field))
        case 9:
            let at = pos
            guard depth < limits.maxNesting else {
                throw .limit(file: file, field: field, offset: at, value: UInt64(depth + 1), limit: limits.maxNesting)
            }
            let elementType = try u32("element type of \(field)")
            let n = try count("length of \(field)", limit: limits.maxArrayElements)
            // Every element takes at least one byte: a count the file cannot hold fails here.
            try need(UInt64(n), field)
            guard n <= limits.maxMetadataElements - elements else {
                throw .limit(file: file, field: "array elements of the metadata, at \(field)", offset: at,
                             value: UInt64(elements + n), limit: limits.maxMetadataElements)
            }
            elements += n
            var xs: [GGUFValue] = []
            xs.reserveCapacity(n)
            for i in 0..<n { xs.append(try value(of: elementType, field: "\(field)[\(i)]", depth: depth + 1)) }
            return .array(type: elementType, xs)
        case 10: return .uint64(try load(UInt64.self, field))
        case 11: return .int64(try load(Int64.self, field))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self, field)))
        default: throw .invalid(file: file, field: field, offset: pos - 4, reason: "unknown value type \(type)")
        }
    }

    /// A tensor's entry: name (under 64 bytes, as ggml's), 1 to 4 dims, type, offset, and its byte
    /// size from the type's block (the row length a whole number of blocks).
    mutating func tensorEntry() throws(GGUFError) -> Entry {
        let at = pos
        let name = try string("tensor name")
        guard !name.isEmpty, name.utf8.count < 64 else {
            throw .invalid(file: file, field: "tensor name", offset: at, reason: "'\(name)' is empty or 64 bytes or longer")
        }
        let nDims = try u32("dims of '\(name)'")
        guard (1...4).contains(nDims) else {
            throw .invalid(file: file, field: "dims of '\(name)'", offset: pos - 4, reason: "\(nDims) dimensions; 1 to 4 are allowed")
        }
        var dims: [Int] = []
        var elements = 1
        for i in 0..<Int(nDims) {
            let d = try u64("dim \(i) of '\(name)'")
            let (e, o) = elements.multipliedReportingOverflow(by: Int(truncatingIfNeeded: d))
            guard d >= 1, d <= UInt64(Int32.max), !o, e <= Int(Int32.max) * 64 else {
                throw .invalid(file: file, field: "dim \(i) of '\(name)'", offset: pos - 8,
                               reason: "\(d) makes no valid tensor shape")
            }
            dims.append(Int(d))
            elements = e
        }
        let typeID = try u32("type of '\(name)'")
        guard let type = GGMLType(rawValue: typeID) else {
            throw .invalid(file: file, field: "type of '\(name)'", offset: pos - 4, reason: "unknown ggml type \(typeID)")
        }
        let (blockElements, blockBytes) = type.block
        guard dims[0] % blockElements == 0 else {
            throw .invalid(file: file, field: "dim 0 of '\(name)'", offset: at,
                           reason: "\(dims[0]) is not a multiple of \(type)'s block of \(blockElements)")
        }
        let offset = try u64("offset of '\(name)'")
        return Entry(name: name, dims: dims, type: type, offset: offset, byteCount: elements / blockElements * blockBytes, at: at)
    }
}
