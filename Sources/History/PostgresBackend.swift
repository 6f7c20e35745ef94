import Foundation
import AssayCommon
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL history lives, parsed from
/// `postgres://[user[:password]@]host[:port][/database][?sslmode=…&schema=…&connect_timeout=…&host=/socket/dir]`.
///
/// The password may also come from `$PGPASSWORD` and the user from `$PGUSER` (libpq's
/// conventions), so it need not appear on a command line. `sslmode` follows libpq: `disable`,
/// `prefer` (the default: encrypt when the server offers it, no certificate check), `require`
/// (encrypt, no certificate check), `verify-ca`, `verify-full` (check the certificate against
/// the system's roots; `verify-full` also checks the host name). `schema` (default `public`)
/// is the namespace the history's tables live in; it is created when absent.
public struct PostgresLocation: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var socketDirectory: String?
    public var user: String
    public var password: String?
    public var database: String
    public var schema: String
    public var sslmode: String
    public var connectTimeout: Int

    public static func isPostgres(_ s: String) -> Bool { s.hasPrefix("postgres://") || s.hasPrefix("postgresql://") }

    public init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(HistoryError) {
        func bad(_ why: String) -> HistoryError { .invalidLocation("--db \(Self.redact(url)): \(why)") }
        guard Self.isPostgres(url), let c = URLComponents(string: url) else {
            throw bad("not a postgres:// URL (postgres://user@host:port/database?schema=NAME; percent-encode `#`, `/`, `?` and `@` in a "
                          + "password, or give it in $PGPASSWORD)")
        }
        var query: [String: String] = [:]
        for item in c.queryItems ?? [] {
            guard ["sslmode", "schema", "connect_timeout", "host"].contains(item.name) else {
                throw bad("unknown parameter `\(item.name)` (known: sslmode, schema, connect_timeout, host)")
            }
            query[item.name] = item.value ?? ""
        }
        socketDirectory = query["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        if let h = query["host"], socketDirectory == nil {
            throw bad("`host=\(h)`: only a socket directory (an absolute path) may be given here")
        }
        host = c.host.map { $0.hasPrefix("[") ? String($0.dropFirst().dropLast()) : $0 } ?? ""
        if host.isEmpty && socketDirectory == nil { throw bad("no host") }
        port = c.port ?? 5432
        guard (1...65535).contains(port) else { throw bad("port \(port) is out of range") }
        user = c.user ?? environment["PGUSER"] ?? "postgres"
        password = c.password ?? environment["PGPASSWORD"]
        let path = c.path.hasPrefix("/") ? String(c.path.dropFirst()) : c.path
        database = path.isEmpty ? user : path
        guard !database.contains("/") else { throw bad("database name `\(database)` contains `/`") }
        schema = query["schema"] ?? "public"
        let word = schema.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || $0 == "_") }
        guard word, (1...63).contains(schema.unicodeScalars.count), !("0"..."9").contains(schema.first!) else {
            throw bad("schema `\(schema)`: use letters, digits and `_` (at most 63, not starting with a digit)")
        }
        sslmode = query["sslmode"] ?? "prefer"
        guard ["disable", "prefer", "require", "verify-ca", "verify-full"].contains(sslmode) else {
            throw bad("sslmode `\(sslmode)` (known: disable, prefer, require, verify-ca, verify-full)")
        }
        let timeout = query["connect_timeout"] ?? "10"
        guard let t = Int(timeout), (1...3600).contains(t) else { throw bad("connect_timeout `\(timeout)`: seconds, 1–3600") }
        connectTimeout = t
    }

    /// The URL without its password: what messages and the history itself may show.
    public var display: String {
        let hostPort = socketDirectory == nil ? "\(host.contains(":") ? "[\(host)]" : host):\(port)" : ":\(port)"
        let query = [socketDirectory.map { "host=\($0)" }, schema == "public" ? nil : "schema=\(schema)"].compactMap { $0 }
        return "postgres://\(user)@\(hostPort)/\(database)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }

    /// A URL as given, with any password replaced by `***`.
    /// Works on text URLComponents cannot parse too (a password holding `#`, `/` or `?`): whatever
    /// stands between the scheme's `//` and the last `@` before the path is user[:password].
    public static func redact(_ url: String) -> String {
        guard let scheme = url.range(of: "://") else { return url.terminalSafe }
        let rest = url[scheme.upperBound...]
        guard let at = rest.lastIndex(of: "@") else { return url.terminalSafe }
        let userinfo = rest[..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return url.terminalSafe }
        return (String(url[..<scheme.upperBound]) + userinfo[..<colon] + ":***" + rest[at...]).terminalSafe
    }
}

/// A history in PostgreSQL: one connection, statements serialized on it, every read a
/// repeatable-read snapshot and every write one transaction. Many shards on many machines
/// write into one schema; each writes only its own entries' rows.
final class PostgresBackend: HistoryBackend, @unchecked Sendable {
    let location: String
    let dialect = SQLDialect.postgres
    let target: PostgresLocation
    /// Replaced when the server drops it (guarded by `lock`, as every statement is).
    var connection: PostgresConnection
    let logger = Logger(label: "assay.history", factory: { _ in SwiftLogNoOpLogHandler() })
    let lock = NSLock()

    init(_ target: PostgresLocation) throws {
        self.target = target
        location = target.display
        connection = try Self.connect(target, logger: logger)
    }

    static func connect(_ target: PostgresLocation, logger: Logger) throws -> PostgresConnection {
        var config: PostgresConnection.Configuration
        let tls: PostgresConnection.Configuration.TLS
        switch target.sslmode {
        case "disable": tls = .disable
        default:
            // verify-full: postgres-nio sends the host name for SNI and NIOSSL checks the
            // certificate against it (or against the address, for an IP).
            var t = TLSConfiguration.makeClientConfiguration()
            switch target.sslmode {
            case "verify-full": break
            case "verify-ca": t.certificateVerification = .noHostnameVerification
            default: t.certificateVerification = .none
            }
            let context = try NIOSSLContext(configuration: t)
            tls = target.sslmode == "prefer" ? .prefer(context) : .require(context)
        }
        if let dir = target.socketDirectory {
            config = .init(unixSocketPath: "\(dir)/.s.PGSQL.\(target.port)", username: target.user, password: target.password,
                           database: target.database)
        } else {
            config = .init(host: target.host, port: target.port, username: target.user, password: target.password,
                           database: target.database, tls: tls)
        }
        config.options.connectTimeout = .seconds(Int64(target.connectTimeout))
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let connection = try PostgresConnection.connect(on: loop, configuration: config, id: 1, logger: logger).wait()
        // Unqualified names resolve in the history's schema (created, under a lock, by the first migration).
        do {
            _ = try wait(connection.query(PostgresQuery(unsafeSQL: "SET search_path TO \"\(target.schema)\""), logger: logger), connection)
        } catch {
            let _: EventLoopFuture<Void> = connection.close()
            throw error
        }
        return connection
    }

    deinit { _ = try? Self.wait(connection.close(), connection) }

    struct Session: SQLSession {
        let backend: PostgresBackend
        func execute(_ sql: String, _ args: [any SQLBindable]) throws -> Int {
            try backend.run(sql, args).metadata.rows ?? 0
        }
        func rows(_ sql: String, _ args: [any SQLBindable]) throws -> [SQLRow] {
            try backend.run(sql, args).rows.map { row in
                var columns: [String: SQLValue] = [:]
                for cell in row { columns[cell.columnName] = try Self.value(cell) }
                return SQLRow(columns: columns)
            }
        }
        static func value(_ cell: PostgresCell) throws -> SQLValue {
            guard cell.bytes != nil else { return .null }
            switch cell.dataType {
            case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
            case .float4, .float8, .numeric: return .real(try cell.decode(Double.self))
            case .bool: return .integer(try cell.decode(Bool.self) ? 1 : 0)
            default: return .text(try cell.decode(String.self))
            }
        }
    }

    /// `?` placeholders (outside quotes) become PostgreSQL's `$1, $2, …`.
    static func numbered(_ sql: String) -> String {
        var out = "", n = 0, quote: Character?
        for ch in sql {
            if let q = quote {
                if ch == q { quote = nil }
                out.append(ch)
            } else if ch == "'" || ch == "\"" {
                quote = ch; out.append(ch)
            } else if ch == "?" {
                n += 1; out += "$\(n)"
            } else {
                out.append(ch)
            }
        }
        return out
    }

    func run(_ sql: String, _ args: [any SQLBindable]) throws -> PostgresQueryResult {
        var binds = PostgresBindings(capacity: args.count)
        for a in args {
            switch a.sqlValue {
            case .null: binds.appendNull()
            case .integer(let i): binds.append(i)
            case .real(let d): binds.append(d)
            case .text(let s): binds.append(s)
            }
        }
        return try Self.wait(connection.query(PostgresQuery(unsafeSQL: Self.numbered(sql), binds: binds), logger: logger), connection)
    }

    /// Longest wait for one statement's answer. postgres-nio's future API never completes a query
    /// written to a channel that has just closed, and a half-open TCP connection never answers:
    /// either would hang a nightly sweep. Past this, the connection is closed and counted as lost.
    static let answerTimeout: TimeInterval = 300

    struct NoAnswer: Error, CustomStringConvertible {
        var description: String { "no answer from the server in \(Int(PostgresBackend.answerTimeout)) s" }
    }

    static func wait<T: Sendable>(_ future: EventLoopFuture<T>, _ connection: PostgresConnection) throws -> T {
        let done = DispatchSemaphore(value: 0)
        future.whenComplete { _ in done.signal() }
        guard done.wait(timeout: .now() + answerTimeout) == .success else {
            let _: EventLoopFuture<Void> = connection.close()
            throw NoAnswer()
        }
        return try future.wait()
    }

    /// One transaction. A connection the server dropped (idle timeout, restart, failover: a
    /// sweep holds its connection for hours) is replaced and the transaction run again, once;
    /// the server rolled back whatever the lost one had begun, and every write here is
    /// idempotent (replace an entry's rows, insert-or-keep), so running it again is safe.
    func transaction<T>(_ begin: String, _ body: (any SQLSession) throws -> T) throws -> T {
        lock.lock(); defer { lock.unlock() }
        if connection.isClosed { try reconnect() }
        do {
            return try attempt(begin, body)
        } catch where Self.connectionLost(error) {
            try reconnect()
            return try attempt(begin, body)
        }
    }

    func reconnect() throws {
        let _: EventLoopFuture<Void> = connection.close()
        connection = try Self.connect(target, logger: logger)
    }

    func attempt<T>(_ begin: String, _ body: (any SQLSession) throws -> T) throws -> T {
        let s = Session(backend: self)
        try s.execute(begin)
        do {
            let out = try body(s)
            try s.execute("COMMIT")
            return out
        } catch {
            _ = try? s.execute("ROLLBACK")
            throw error
        }
    }

    static func connectionLost(_ error: any Error) -> Bool {
        if let e = error as? PSQLError {
            return [.serverClosedConnection, .clientClosedConnection, .uncleanShutdown].contains(e.code)
                || (e.code == .server && e.serverInfo?[.sqlState].map { $0.hasPrefix("57P") || $0.hasPrefix("08") } == true)
        }
        return error is ChannelError || error is NoAnswer
    }

    func read<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", body)
    }

    func write<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try transaction("BEGIN", body)
    }

    func tableNames(_ s: any SQLSession) throws -> Set<String> {
        Set(try s.rows("SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [target.schema])
            .map { try $0.string("table_name") })
    }

    /// One advisory lock per schema, held to the end of the migrating transaction.
    func lockSchema(_ s: any SQLSession) throws {
        _ = try s.rows("SELECT pg_advisory_xact_lock(hashtext(?)) AS locked", ["assay history " + target.schema])
    }

    /// Creates the schema only when it is missing: a user may hold CREATE on a schema a DBA made
    /// without holding CREATE on the database, which even `CREATE SCHEMA IF NOT EXISTS` needs.
    func createNamespace(_ s: any SQLSession) throws {
        if try s.rows("SELECT 1 AS present FROM pg_namespace WHERE nspname = ?", [target.schema]).isEmpty {
            try s.execute("CREATE SCHEMA \"\(target.schema)\"")
        }
    }

    func describe(_ error: any Error) -> String? { Self.describe(error, target) }

    /// Why connecting failed, naming where.
    static func describeConnect(_ error: any Error, _ target: PostgresLocation) -> String {
        describe(error, target) ?? "cannot connect to the server: \(error)"
    }

    static func describe(_ error: any Error, _ target: PostgresLocation) -> String? {
        if let e = error as? PSQLError {
            if let info = e.serverInfo, let message = info[.message] {
                return message + (info[.detail].map { " (\($0))" } ?? "") + (info[.sqlState].map { " [SQLSTATE \($0)]" } ?? "")
            }
            let under = e.underlying.map { ": \(Self.describeUnderlying($0))" } ?? ""
            switch e.code {
            case .connectionError: return "cannot connect to the server\(under)"
            case .saslError, .unsupportedAuthMechanism: return "authentication failed (\(e.code))\(under)"
            case .serverClosedConnection, .uncleanShutdown: return "the server closed the connection\(under)"
            case .sslUnsupported: return "the server does not offer TLS (sslmode=\(target.sslmode)); use sslmode=prefer or disable"
            case .authMechanismRequiresPassword: return "the server asks for a password: put it in the URL or in $PGPASSWORD"
            default: return "\(e.code)\(under)"
            }
        }
        if error is NIOSSLError || error is IOError || error is ChannelError || error is NIOConnectionError {
            return "cannot connect to the server: \(Self.describeUnderlying(error))"
        }
        return nil
    }

    static func describeUnderlying(_ e: any Error) -> String {
        if let ssl = e as? NIOSSLError {
            let text = "\(ssl)"
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return "TLS handshake failed: the server's certificate is not trusted by this machine's roots "
                    + "(sslmode=verify-ca/verify-full check it; sslmode=require encrypts without checking)"
            }
            return "TLS handshake failed: \(text)"
        }
        if let c = e as? NIOConnectionError {
            return c.connectionErrors.map { "\($0.target): \($0.error)" }.joined(separator: "; ").nonEmpty ?? "\(c)"
        }
        return "\(e)"
    }
}

extension String {
    var nonEmpty: String? { isEmpty ? nil : self }
}
