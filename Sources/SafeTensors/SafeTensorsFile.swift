import Foundation
import AssayCommon
import TensorCore

/// A read-only memory map of a whole file. Mapping costs nothing up front and lets the loader
/// validate the header before any tensor byte is touched or any buffer is sized.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws(SafeTensorsError) {
        self.path = path
        // Non-blocking open and fstat on the descriptor: a FIFO or device named like a weight
        // file is refused at once instead of hanging the scan.
        let opened: (fd: Int32, size: Int)
        do { opened = try SafeFile.open(path, maxBytes: Int.max) } catch { throw .io(file: path, reason: error.reasonOnly) }
        let fd = opened.fd
        defer { close(fd) }
        size = opened.size
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw .io(file: path, reason: "mmap failed: \(String(cString: strerror(errno)))") }
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }
}

/// One tensor's entry in a safetensors header, validated.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range within the data section (which starts after the header).
    public let dataOffsets: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { dataOffsets.count }
}

/// A validated, memory-mapped safetensors file.
///
/// Validation follows the reference implementation (huggingface/safetensors `read_metadata` and
/// `Metadata::validate`) and is stricter where it is silent: the header must start with '{',
/// duplicate names and unknown entry fields are refused, and `__metadata__` must map strings to
/// strings.
public struct SafeTensorsFile: Sendable {
    public static let maxHeaderLength = 100_000_000

    public let url: URL
    public let map: MappedFile
    public let headerLength: Int
    public let metadata: [String: String]
    /// Tensors in data-offset order.
    public let tensors: [TensorInfo]
    private let index: [String: Int]

    public var path: String { url.path }
    public var fileSize: Int { map.size }
    public var dataStart: Int { 8 + headerLength }
    public var tensorNames: [String] { tensors.map(\.name) }

    public static func open(_ url: URL) throws(SafeTensorsError) -> SafeTensorsFile {
        try SafeTensorsFile(url: url)
    }

    public init(url: URL) throws(SafeTensorsError) {
        self.url = url
        let file = url.path
        map = try MappedFile(path: file)
        let size = map.size
        guard size >= 8 else { throw .fileTooSmall(file: file, size: size) }
        let declared = map.bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard declared <= UInt64(SafeTensorsFile.maxHeaderLength) else {
            throw .headerTooLarge(file: file, declared: declared, limit: SafeTensorsFile.maxHeaderLength)
        }
        let n = Int(declared)
        guard 8 + n <= size else { throw .headerPastEndOfFile(file: file, declared: declared, fileSize: size) }
        headerLength = n
        let header = UnsafeBufferPointer(start: map.bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + 8, count: n)
        if String(validating: header, as: UTF8.self) == nil {
            throw .headerNotUTF8(file: file, byteOffset: SafeTensorsFile.firstInvalidUTF8(header))
        }
        guard n > 0 else { throw .headerNotJSON(file: file, reason: "empty header") }
        guard header[0] == UInt8(ascii: "{") else { throw .headerDoesNotStartWithBrace(file: file, firstByte: header[0]) }
        let json: JSONValue
        do { json = try JSONParser.parse(header) } catch { throw .headerNotJSON(file: file, reason: error.description) }
        guard let members = json.members else { throw .headerNotObject(file: file, found: json.typeName) }

        var metadata: [String: String] = [:]
        var sawMetadata = false
        var infos: [TensorInfo] = []
        var seen = Set<String>()
        infos.reserveCapacity(members.count)
        for m in members {
            if m.key == "__metadata__" {
                guard !sawMetadata else { throw .duplicateTensor(file: file, tensor: "__metadata__") }
                sawMetadata = true
                metadata = try SafeTensorsFile.parseMetadata(m.value, file: file)
                continue
            }
            guard seen.insert(m.key).inserted else { throw .duplicateTensor(file: file, tensor: m.key) }
            infos.append(try SafeTensorsFile.parseEntry(name: m.key, m.value, file: file))
        }

        // Offsets must tile the data section exactly: sorted by start, each tensor begins where
        // the previous ended, the first at 0, the last at the end of the file.
        infos.sort {
            ($0.dataOffsets.lowerBound, $0.dataOffsets.upperBound, $0.name)
                < ($1.dataOffsets.lowerBound, $1.dataOffsets.upperBound, $1.name)
        }
        var expected = 0
        var previous = ""
        for info in infos {
            let start = info.dataOffsets.lowerBound
            if start < expected {
                throw .overlappingTensors(file: file, tensor: info.name, start: start, previous: previous, previousEnd: expected)
            }
            if start > expected {
                throw .holeBeforeTensor(file: file, tensor: info.name, start: start, expectedStart: expected)
            }
            expected = info.dataOffsets.upperBound
            previous = info.name
        }
        let dataBytes = size - 8 - n
        guard expected == dataBytes else { throw .dataSizeMismatch(file: file, tensorsEnd: expected, dataBytes: dataBytes) }

        self.metadata = metadata
        tensors = infos
        var idx: [String: Int] = [:]
        for (i, t) in infos.enumerated() { idx[t.name] = i }
        index = idx
    }

    static func firstInvalidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var decoder = UTF8()
        var it = bytes.makeIterator()
        var consumed = 0
        var lastGood = 0
        while true {
            switch decoder.decode(&it) {
            case let .scalarValue(s): consumed += UTF8.width(s); lastGood = consumed
            case .emptyInput: return bytes.count
            case .error: return lastGood
            }
        }
    }

    static func parseMetadata(_ v: JSONValue, file: String) throws(SafeTensorsError) -> [String: String] {
        if v == .null { return [:] }
        guard let members = v.members else {
            throw .invalidMetadata(file: file, key: "__metadata__", reason: "must be an object of strings, found \(v.typeName)")
        }
        var out: [String: String] = [:]
        for m in members {
            guard let s = m.value.string else {
                throw .invalidMetadata(file: file, key: m.key, reason: "value must be a string, found \(m.value.typeName)")
            }
            guard out[m.key] == nil else { throw .invalidMetadata(file: file, key: m.key, reason: "key appears more than once") }
            out[m.key] = s
        }
        return out
    }

    static func parseEntry(name: String, _ v: JSONValue, file: String) throws(SafeTensorsError) -> TensorInfo {
        guard let fields = v.members else {
            throw .invalidTensorEntry(file: file, tensor: name, reason: "entry must be an object, found \(v.typeName)")
        }
        var dtypeValue: JSONValue?, shapeValue: JSONValue?, offsetsValue: JSONValue?
        for f in fields {
            switch f.key {
            case "dtype" where dtypeValue == nil: dtypeValue = f.value
            case "shape" where shapeValue == nil: shapeValue = f.value
            case "data_offsets" where offsetsValue == nil: offsetsValue = f.value
            case "dtype", "shape", "data_offsets":
                throw .invalidTensorEntry(file: file, tensor: name, reason: "field '\(f.key)' appears more than once")
            default:
                throw .invalidTensorEntry(file: file, tensor: name, reason: "unknown field '\(f.key.terminalSafe)'")
            }
        }
        guard let dtypeValue else { throw .invalidTensorEntry(file: file, tensor: name, reason: "missing field 'dtype'") }
        guard let shapeValue else { throw .invalidTensorEntry(file: file, tensor: name, reason: "missing field 'shape'") }
        guard let offsetsValue else { throw .invalidTensorEntry(file: file, tensor: name, reason: "missing field 'data_offsets'") }
        guard let dtypeName = dtypeValue.string else {
            throw .invalidTensorEntry(file: file, tensor: name, reason: "'dtype' must be a string, found \(dtypeValue.typeName)")
        }
        guard let dtype = DType(rawValue: dtypeName) else { throw .unknownDType(file: file, tensor: name, dtype: dtypeName) }

        guard let dims = shapeValue.array else {
            throw .invalidShape(file: file, tensor: name, reason: "must be an array, found \(shapeValue.typeName)")
        }
        var shape: [Int] = []
        var raw: [UInt64] = []
        for d in dims {
            guard case let .number(text) = d else {
                throw .invalidShape(file: file, tensor: name, reason: "dimension must be an integer, found \(d.typeName)")
            }
            guard let k = d.exactInt else {
                throw .invalidShape(file: file, tensor: name, reason: "dimension '\(text)' is not an integer that fits in 64 bits")
            }
            guard k >= 0 else { throw .invalidShape(file: file, tensor: name, reason: "dimension \(k) is negative") }
            shape.append(k)
            raw.append(UInt64(k))
        }
        var elements = 1
        for k in shape {
            let (p, o) = elements.multipliedReportingOverflow(by: k)
            guard !o else { throw .shapeOverflow(file: file, tensor: name, shape: raw) }
            elements = p
        }
        let (bits, o) = elements.multipliedReportingOverflow(by: dtype.bits)
        guard !o else { throw .shapeOverflow(file: file, tensor: name, shape: raw) }
        guard bits % 8 == 0 else {
            throw .invalidShape(file: file, tensor: name, reason: "\(elements) elements of \(dtype.rawValue) do not fill whole bytes")
        }
        let bytes = bits / 8

        guard let pair = offsetsValue.array, pair.count == 2 else {
            throw .invalidOffsets(file: file, tensor: name, reason: "must be an array of two integers")
        }
        var ends: [Int] = []
        for p in pair {
            guard case let .number(text) = p else {
                throw .invalidOffsets(file: file, tensor: name, reason: "offset must be an integer, found \(p.typeName)")
            }
            guard let k = p.exactInt else {
                throw .invalidOffsets(file: file, tensor: name, reason: "offset '\(text)' is not an integer that fits in 64 bits")
            }
            guard k >= 0 else { throw .invalidOffsets(file: file, tensor: name, reason: "offset \(k) is negative") }
            ends.append(k)
        }
        guard ends[0] <= ends[1] else {
            throw .invalidOffsets(file: file, tensor: name, reason: "end \(ends[1]) is before start \(ends[0])")
        }
        guard bytes == ends[1] - ends[0] else {
            throw .sizeMismatch(file: file, tensor: name, dtype: dtype.rawValue, shape: shape, expectedBytes: bytes,
                                spanBytes: ends[1] - ends[0])
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: ends[0]..<ends[1])
    }

    // MARK: access

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// The raw little-endian bytes of a tensor, valid while this file value is alive.
    public func withRawBytes<R>(_ info: TensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let start = map.bytes.baseAddress.map { $0 + dataStart + info.dataOffsets.lowerBound }
        return try withExtendedLifetime(map) {
            try body(UnsafeRawBufferPointer(start: start, count: info.byteCount))
        }
    }

    /// The tensor decoded to Float32 (F16 and BF16 are widened exactly).
    public func tensor(_ name: String) throws(SafeTensorsError) -> Tensor {
        guard let info = info(name) else { throw .tensorNotFound(file: path, tensor: name) }
        return try tensor(info)
    }

    public func tensor(_ info: TensorInfo) throws(SafeTensorsError) -> Tensor {
        guard info.dtype.isComputable else {
            throw .dtypeNotSupportedForCompute(file: path, tensor: info.name, dtype: info.dtype.rawValue)
        }
        guard info.elementCount <= Tensor.maxElements else {
            throw .tooLargeToLoad(file: path, tensor: info.name, elements: info.elementCount)
        }
        return withRawBytes(info) { raw in
            Tensor(shape: info.shape) { dst in decodeToFloat32(raw, dtype: info.dtype, into: dst) }
        }
    }

    /// A matrix's elements as stored (F32, BF16 or F16, not widened), pointing into the mapped
    /// file, for `PackedMatrix` to pack without a Float32 copy. Rank-2 tensors only.
    public func storedRows(_ info: TensorInfo) throws(SafeTensorsError) -> PackedMatrix.Rows {
        let dtype: PackedDType
        switch info.dtype {
        case .f32: dtype = .f32
        case .bf16: dtype = .bf16
        case .f16: dtype = .f16
        default: throw .dtypeNotSupportedForCompute(file: path, tensor: info.name, dtype: info.dtype.rawValue)
        }
        guard info.shape.count == 2 else {
            throw .tensorNotFound(file: path, tensor: "\(info.name) as a matrix (shape \(info.shape))")
        }
        guard info.elementCount <= Tensor.maxElements else {
            throw .tooLargeToLoad(file: path, tensor: info.name, elements: info.elementCount)
        }
        // An empty matrix has no bytes to point at; any non-null pointer will do (nothing is read).
        let base = map.bytes.baseAddress.map { UnsafeRawPointer($0 + dataStart + info.dataOffsets.lowerBound) }
            ?? UnsafeRawPointer(bitPattern: 64)!
        var rows = PackedMatrix.Rows(raw: base, dtype: dtype, rows: info.shape[0], cols: info.shape[1], owner: map)
        // Packed, the file's pages are not needed again: dropping them from this mapping keeps a
        // model's resident size at its packed copy (clean file pages; a later read maps them in).
        let (map, range) = (map, info.byteCount)
        rows.packed = {
            guard range > 0, let start = map.bytes.baseAddress else { return }
            let page = Int(getpagesize())
            let lo = (base - start) / page * page, hi = min(map.size, ((base - start) + range + page - 1) / page * page)
            _ = madvise(UnsafeMutableRawPointer(mutating: start + lo), hi - lo, MADV_DONTNEED)
        }
        return rows
    }

    /// NaN and ±Inf counts of a floating-point tensor, read straight from its bytes.
    public func nonFiniteCounts(_ info: TensorInfo) -> (nan: Int, inf: Int)? {
        switch info.dtype {
        case .f32, .f16, .bf16, .f64:
            return withRawBytes(info) { countNonFinite($0, dtype: info.dtype) }
        default:
            return nil
        }
    }
}
