import Foundation
import GRDB

/// The embedded default: one SQLite file (GRDB). Writes take the write lock up front
/// (`BEGIN IMMEDIATE`), so two processes on one file queue rather than deadlock.
final class SQLiteBackend: HistoryBackend, @unchecked Sendable {
    let location: String
    let dialect = SQLDialect.sqlite
    let queue: DatabaseQueue

    init(path: String, readOnly: Bool) throws {
        location = path
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.readonly = readOnly
        queue = try DatabaseQueue(path: path, configuration: config)
    }

    struct Session: SQLSession {
        let db: Database
        func execute(_ sql: String, _ args: [any SQLBindable]) throws -> Int {
            // Compiled once per connection: recompiling (and GRDB's authorizer pass) was most of
            // the cost of recording an entry.
            try db.cachedStatement(sql: sql).execute(arguments: Self.arguments(args))
            return db.changesCount
        }
        func rows(_ sql: String, _ args: [any SQLBindable]) throws -> [SQLRow] {
            try Row.fetchAll(db.cachedStatement(sql: sql), arguments: Self.arguments(args)).map { row in
                var columns: [String: SQLValue] = [:]
                for (name, value) in row {
                    switch value.storage {
                    case .null: columns[name] = .null
                    case .int64(let i): columns[name] = .integer(i)
                    case .double(let d): columns[name] = .real(d)
                    case .string(let s): columns[name] = .text(s)
                    case .blob(let b): columns[name] = .text(String(decoding: b, as: UTF8.self))
                    }
                }
                return SQLRow(columns: columns)
            }
        }
        static func arguments(_ args: [any SQLBindable]) -> StatementArguments {
            StatementArguments(args.map { a -> (any DatabaseValueConvertible)? in
                switch a.sqlValue {
                case .null: return nil
                case .integer(let i): return i
                case .real(let d): return d
                case .text(let s): return s
                }
            })
        }
    }

    func read<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try queue.read { db in try body(Session(db: db)) }
    }

    func write<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try queue.writeWithoutTransaction { db in
            var out: T?
            try db.inTransaction(.immediate) {
                out = try body(Session(db: db))
                return .commit
            }
            return out!
        }
    }

    func tableNames(_ s: any SQLSession) throws -> Set<String> {
        Set(try s.rows("SELECT name FROM sqlite_master WHERE type = 'table'").map { try $0.string("name") })
    }

    func lockSchema(_ s: any SQLSession) throws {}  // BEGIN IMMEDIATE already holds the write lock
    func createNamespace(_ s: any SQLSession) throws {}

    func describe(_ error: any Error) -> String? { Self.describe(error) }

    static func describeOpen(_ error: any Error) -> String { describe(error) ?? "\(error)" }

    static func describe(_ error: any Error) -> String? {
        guard let e = error as? DatabaseError else { return nil }
        if e.resultCode == .SQLITE_NOTADB { return "not an SQLite database" }
        if e.resultCode == .SQLITE_READONLY { return "the history is read-only here: \(e.message ?? "\(e)")" }
        return e.message ?? "\(e)"
    }
}
