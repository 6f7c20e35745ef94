import Foundation
import AssayCommon
import History

/// What stops a sweep (exit 2) or fails one entry (recorded as an error; the sweep goes on).
public enum SweepError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidInventory(file: String, line: Int?, message: String)
    /// The history the sweep reads and writes.
    case history(HistoryError)
    case unknownEntry(String)
    case invalid(String)

    public var description: String {
        switch self {
        case let .invalidInventory(file, line, message):
            return "\(file.terminalSafe)\(line.map { ":\($0)" } ?? ""): \(message)"
        case let .history(e): return e.description
        case let .unknownEntry(id): return "no entry `\(id.terminalSafe)` in the inventory"
        case let .invalid(m): return m
        }
    }

    /// Runs a call into the history, its error as the sweep's.
    static func fromHistory<T>(_ body: () throws(HistoryError) -> T) throws(SweepError) -> T {
        do { return try body() } catch { throw .history(error) }
    }
}
