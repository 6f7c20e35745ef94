import AssayCommon

/// Every way a safetensors file, or a sharded checkpoint's index, can be invalid. Each case names
/// the file and, where there is one, the tensor and the numbers involved. Names are escaped when
/// printed.
public enum SafeTensorsError: Error, Equatable, Sendable, CustomStringConvertible {
    case io(file: String, reason: String)
    case fileTooSmall(file: String, size: Int)
    case headerTooLarge(file: String, declared: UInt64, limit: Int)
    case headerPastEndOfFile(file: String, declared: UInt64, fileSize: Int)
    case headerNotUTF8(file: String, byteOffset: Int)
    case headerNotJSON(file: String, reason: String)
    case headerNotObject(file: String, found: String)
    case headerDoesNotStartWithBrace(file: String, firstByte: UInt8)
    case duplicateTensor(file: String, tensor: String)
    case invalidTensorEntry(file: String, tensor: String, reason: String)
    case unknownDType(file: String, tensor: String, dtype: String)
    case invalidOffsets(file: String, tensor: String, reason: String)
    case invalidShape(file: String, tensor: String, reason: String)
    case shapeOverflow(file: String, tensor: String, shape: [UInt64])
    case sizeMismatch(file: String, tensor: String, dtype: String, shape: [Int], expectedBytes: Int, spanBytes: Int)
    case overlappingTensors(file: String, tensor: String, start: Int, previous: String, previousEnd: Int)
    case holeBeforeTensor(file: String, tensor: String, start: Int, expectedStart: Int)
    case dataSizeMismatch(file: String, tensorsEnd: Int, dataBytes: Int)
    case invalidMetadata(file: String, key: String, reason: String)
    case tensorNotFound(file: String, tensor: String)
    case dtypeNotSupportedForCompute(file: String, tensor: String, dtype: String)
    case tooLargeToLoad(file: String, tensor: String, elements: Int)
    // Sharded checkpoints
    case invalidIndex(file: String, reason: String)
    case shardPathEscapes(index: String, shard: String)
    case shardMissing(index: String, shard: String)
    case tensorMissingFromShard(index: String, tensor: String, shard: String)
    case tensorNotInIndex(index: String, tensor: String, shard: String)
    case tensorInTwoShards(index: String, tensor: String, shards: [String])
    case noCheckpoint(directory: String)

    /// The case name (`"holeBeforeTensor"`), stable for tests and machine-readable output.
    public var kind: String { Mirror(reflecting: self).children.first?.label ?? "unknown" }

    public var description: String {
        switch self {
        case let .io(f, r): return "\(f.terminalSafe): \(r)"
        case let .fileTooSmall(f, n):
            return "\(f.terminalSafe): file is \(n) bytes, too small for a safetensors file (needs at least the 8-byte header length)"
        case let .headerTooLarge(f, d, l):
            return "\(f.terminalSafe): declared header length \(d) exceeds the limit of \(l) bytes"
        case let .headerPastEndOfFile(f, d, s):
            return "\(f.terminalSafe): declared header length \(d) runs past the end of the \(s)-byte file"
        case let .headerNotUTF8(f, o):
            return "\(f.terminalSafe): header is not valid UTF-8 (first bad byte at header offset \(o))"
        case let .headerNotJSON(f, r): return "\(f.terminalSafe): header is not valid JSON: \(r)"
        case let .headerNotObject(f, t): return "\(f.terminalSafe): header must be a JSON object, found \(t)"
        case let .headerDoesNotStartWithBrace(f, b):
            return "\(f.terminalSafe): header must start with '{', found byte 0x\(String(b, radix: 16))"
        case let .duplicateTensor(f, t): return "\(f.terminalSafe): tensor '\(t.terminalSafe)' is declared more than once"
        case let .invalidTensorEntry(f, t, r): return "\(f.terminalSafe): tensor '\(t.terminalSafe)': \(r)"
        case let .unknownDType(f, t, d): return "\(f.terminalSafe): tensor '\(t.terminalSafe)' has unknown dtype '\(d.terminalSafe)'"
        case let .invalidOffsets(f, t, r): return "\(f.terminalSafe): tensor '\(t.terminalSafe)' has invalid data_offsets: \(r)"
        case let .invalidShape(f, t, r): return "\(f.terminalSafe): tensor '\(t.terminalSafe)' has an invalid shape: \(r)"
        case let .shapeOverflow(f, t, s):
            return "\(f.terminalSafe): tensor '\(t.terminalSafe)' shape \(s) overflows when its size is computed"
        case let .sizeMismatch(f, t, d, s, e, sp):
            return "\(f.terminalSafe): tensor '\(t.terminalSafe)' is \(d) \(s) = \(e) bytes but its data_offsets span \(sp) bytes"
        case let .overlappingTensors(f, t, s, p, pe):
            return "\(f.terminalSafe): tensor '\(t.terminalSafe)' starts at \(s), inside tensor '\(p.terminalSafe)' which ends at \(pe)"
        case let .holeBeforeTensor(f, t, s, e):
            return "\(f.terminalSafe): tensor '\(t.terminalSafe)' starts at \(s) but the previous data ends at \(e) "
                + "(a hole of \(s - e) bytes)"
        case let .dataSizeMismatch(f, end, bytes):
            return end < bytes
                ? "\(f.terminalSafe): tensors end at \(end) but the data section is \(bytes) bytes (\(bytes - end) trailing bytes)"
                : "\(f.terminalSafe): tensors end at \(end) but the data section is only \(bytes) bytes (file truncated)"
        case let .invalidMetadata(f, k, r): return "\(f.terminalSafe): __metadata__ entry '\(k.terminalSafe)': \(r)"
        case let .tensorNotFound(f, t): return "\(f.terminalSafe): no tensor named '\(t.terminalSafe)'"
        case let .dtypeNotSupportedForCompute(f, t, d):
            return "\(f.terminalSafe): tensor '\(t.terminalSafe)' has dtype \(d); only F32, F16 and BF16 can be used for compute"
        case let .tooLargeToLoad(f, t, n): return "\(f.terminalSafe): tensor '\(t.terminalSafe)' has \(n) elements, more than Assay loads"
        case let .invalidIndex(f, r): return "\(f.terminalSafe): invalid checkpoint index: \(r)"
        case let .shardPathEscapes(i, s): return "\(i.terminalSafe): shard path '\(s.terminalSafe)' points outside the model directory"
        case let .shardMissing(i, s): return "\(i.terminalSafe): shard '\(s.terminalSafe)' does not exist"
        case let .tensorMissingFromShard(i, t, s):
            return "\(i.terminalSafe): tensor '\(t.terminalSafe)' is mapped to shard '\(s.terminalSafe)' which does not contain it"
        case let .tensorNotInIndex(i, t, s):
            return "\(i.terminalSafe): shard '\(s.terminalSafe)' contains tensor '\(t.terminalSafe)' which the index does not list"
        case let .tensorInTwoShards(i, t, s):
            return "\(i.terminalSafe): tensor '\(t.terminalSafe)' appears in more than one shard: \(s.map { $0.terminalSafe })"
        case let .noCheckpoint(d):
            return "\(d.terminalSafe): no model.safetensors, model.safetensors.index.json or *.safetensors file"
        }
    }
}
