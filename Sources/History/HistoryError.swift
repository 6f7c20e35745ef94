import Foundation
import AssayCommon

/// What a history store refuses or cannot do: the store at `path` cannot be opened, read or
/// written (not a database, another application's tables, a newer schema, a server that is
/// down), or a history location that is not one.
public enum HistoryError: Error, Equatable, Sendable, CustomStringConvertible {
    case store(path: String, message: String)
    case invalidLocation(String)

    public var description: String {
        switch self {
        case let .store(path, message): return "history \(path.terminalSafe): \(message)"
        case let .invalidLocation(m): return m
        }
    }
}
