import Foundation
import AssayCommon

/// Every way a GGUF file can be refused. Each case names the file, the field (a metadata key, a
/// tensor, or a header field) and the byte offset where reading it started.
public enum GGUFError: Error, Equatable, Sendable, CustomStringConvertible {
    case io(file: String, reason: String)
    /// `needed` bytes at `offset` for `field`, but the file ends after `available`.
    case truncated(file: String, field: String, offset: Int, needed: UInt64, available: Int)
    case invalid(file: String, field: String, offset: Int, reason: String)
    /// A declared count or size above Assay's bound (`GGUFLimits`).
    case limit(file: String, field: String, offset: Int, value: UInt64, limit: Int)
    /// A metadata key or tensor name that appears twice.
    case duplicate(file: String, what: String, name: String, offset: Int)
    /// A tensor whose type the reader knows but cannot dequantise.
    case unsupportedType(file: String, tensor: String, type: String)

    public var description: String {
        switch self {
        case let .io(file, reason): return "\(file.terminalSafe): cannot read: \(reason.terminalSafe)"
        case let .truncated(file, field, offset, needed, available):
            return "\(file.terminalSafe): GGUF \(field.terminalSafe) at byte \(offset) needs \(needed) bytes but \(available) remain"
        case let .invalid(file, field, offset, reason):
            return "\(file.terminalSafe): GGUF \(field.terminalSafe) at byte \(offset): \(reason.terminalSafe)"
        case let .limit(file, field, offset, value, limit):
            return "\(file.terminalSafe): GGUF \(field.terminalSafe) at byte \(offset): \(value) is over the limit of \(limit)"
        case let .duplicate(file, what, name, offset):
            return "\(file.terminalSafe): GGUF \(what) '\(name.terminalSafe)' at byte \(offset) appears more than once"
        case let .unsupportedType(file, tensor, type):
            return "\(file.terminalSafe): GGUF tensor '\(tensor.terminalSafe)' has type \(type), which Assay does not dequantise"
        }
    }
}
