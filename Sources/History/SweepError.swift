import Foundation
import AssayCommon

/// What stops a sweep (exit 2) or fails one entry (recorded as an error; the sweep goes on).
public enum SweepError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidInventory(file: String, line: Int?, message: String)
    case history(path: String, message: String)
    case unknownEntry(String)
    case invalid(String)

    public var description: String {
        switch self {
        case let .invalidInventory(file, line, message):
            return "\(file.terminalSafe)\(line.map { ":\($0)" } ?? ""): \(message)"
        case let .history(path, message): return "history \(path.terminalSafe): \(message)"
        case let .unknownEntry(id): return "no entry `\(id.terminalSafe)` in the inventory"
        case let .invalid(m): return m
        }
    }
}
