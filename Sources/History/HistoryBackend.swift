import Foundation
import AssayCommon

/// A value crossing the SQL boundary: the storage classes the history uses.
public enum SQLValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
}

/// Something that binds to a `?` placeholder.
public protocol SQLBindable {
    var sqlValue: SQLValue { get }
}

extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .integer(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .integer(self) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .real(self) } }
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
/// Enums are stored by their raw value (the JSON spelling).
extension SQLBindable where Self: RawRepresentable, Self.RawValue == String { public var sqlValue: SQLValue { .text(rawValue) } }
extension FindingKind: SQLBindable {}
extension Severity: SQLBindable {}
extension Verdict: SQLBindable {}
extension EntryStatus: SQLBindable {}
extension FileRole: SQLBindable {}
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self.map(\.sqlValue) ?? .null }
}

/// A failure below the history: the backends' own errors become this, and the store names
/// its location (file path or redacted URL) when it reports it.
struct SQLFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// One result row, by column name. Reading a column as the wrong kind is an error, not a trap:
/// a history edited by hand (or by another program) must not crash the tool.
public struct SQLRow: Sendable {
    public let columns: [String: SQLValue]

    func value(_ c: String) throws -> SQLValue {
        guard let v = columns[c] else { throw SQLFailure("no column `\(c)`") }
        return v
    }
    func string(_ c: String) throws -> String {
        guard let s = try optionalString(c) else { throw SQLFailure("column `\(c)` is NULL") }
        return s
    }
    /// A text column holding one of an enum's raw values (a status, verdict, kind or severity).
    func value<T: RawRepresentable>(_ c: String, as: T.Type) throws -> T where T.RawValue == String {
        let s = try string(c)
        guard let v = T(rawValue: s) else { throw SQLFailure("column `\(c)` holds `\(s.terminalSafe)`, not a known \(T.self)") }
        return v
    }
    func optionalValue<T: RawRepresentable>(_ c: String, as: T.Type) throws -> T? where T.RawValue == String {
        guard try optionalString(c) != nil else { return nil }
        return try value(c, as: T.self)
    }
    func optionalString(_ c: String) throws -> String? {
        switch try value(c) {
        case .null: return nil
        case .text(let s): return s
        case let v: throw SQLFailure("column `\(c)` holds \(v), not text")
        }
    }
    func int(_ c: String) throws -> Int {
        switch try value(c) {
        case .integer(let i): return Int(i)
        case .real(let d) where d == d.rounded() && abs(d) < 9e15: return Int(d)
        case let v: throw SQLFailure("column `\(c)` holds \(v), not an integer")
        }
    }
    func double(_ c: String) throws -> Double {
        guard let d = try optionalDouble(c) else { throw SQLFailure("column `\(c)` is NULL") }
        return d
    }
    func optionalDouble(_ c: String) throws -> Double? {
        switch try value(c) {
        case .null: return nil
        case .real(let d): return d
        case .integer(let i): return Double(i)
        case let v: throw SQLFailure("column `\(c)` holds \(v), not a number")
        }
    }
}

/// Statements inside one read or one write transaction. SQL is written once, with `?`
/// placeholders, in the subset SQLite and PostgreSQL share.
public protocol SQLSession {
    /// Runs a statement; returns the number of rows it changed.
    @discardableResult
    func execute(_ sql: String, _ args: [any SQLBindable]) throws -> Int
    func rows(_ sql: String, _ args: [any SQLBindable]) throws -> [SQLRow]
}

extension SQLSession {
    @discardableResult
    func execute(_ sql: String) throws -> Int { try execute(sql, []) }
    func rows(_ sql: String) throws -> [SQLRow] { try rows(sql, []) }
}

/// Where the SQL dialects differ, as far as the history's schema goes.
public enum SQLDialect: Sendable {
    case sqlite, postgres

    /// Text compares and sorts by bytes in both (SQLite's BINARY default; PostgreSQL's
    /// database collation would otherwise order `a-c` after `ab`).
    var text: String { self == .sqlite ? "TEXT" : "TEXT COLLATE \"C\"" }
}

/// A database the history lives in: SQLite (a file, GRDB) or PostgreSQL (a server, postgres-nio).
public protocol HistoryBackend: AnyObject, Sendable {
    /// A file path, or the server URL without its password: what error messages name.
    var location: String { get }
    var dialect: SQLDialect { get }
    /// A consistent read (one snapshot).
    func read<T>(_ body: (any SQLSession) throws -> T) throws -> T
    /// One transaction holding the write lock: committed when `body` returns, rolled back when it throws.
    func write<T>(_ body: (any SQLSession) throws -> T) throws -> T
    /// Tables of the history's namespace (the SQLite file, or the PostgreSQL schema).
    func tableNames(_ s: any SQLSession) throws -> Set<String>
    /// Taken at the start of a migration's transaction so two processes opening a fresh history
    /// at once cannot both create it.
    func lockSchema(_ s: any SQLSession) throws
    /// Creates the namespace when the backend has one (a PostgreSQL schema).
    func createNamespace(_ s: any SQLSession) throws
    /// Turns a backend error into a message (nil: not this backend's error).
    func describe(_ error: any Error) -> String?
}
