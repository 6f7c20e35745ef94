import Foundation
import AssayCommon

/// A file that made an entry's model or inputs: its role, path relative to its directory, sha256.
public struct StoredFile: Codable, Sendable, Equatable, Hashable {
    public var role: FileRole
    public var path: String
    public var sha256: String

    public init(role: FileRole, path: String, sha256: String) {
        self.role = role; self.path = path; self.sha256 = sha256
    }
}

public struct StoredFinding: Codable, Sendable, Equatable, Hashable {
    public var kind: FindingKind
    public var severity: Severity
    public var title: String
    public var trigger: String?
    public var category: String?
    public var value: Double
    public var pValue: Double?

    /// What identifies "the same finding" across nights (its numbers may move).
    public var identity: Identity {
        Identity(kind: kind, trigger: trigger, category: category, title: [.triggerBackdoor, .categoryShift].contains(kind) ? nil : title)
    }
    /// A trigger or category finding is the same finding whatever its title's numbers; other
    /// kinds are told apart by their title.
    public struct Identity: Hashable, Sendable {
        public var kind: FindingKind
        public var trigger: String?
        public var category: String?
        public var title: String?
    }

    public init(kind: FindingKind, severity: Severity, title: String, trigger: String? = nil, category: String? = nil, value: Double,
                pValue: Double? = nil) {
        self.kind = kind; self.severity = severity; self.title = title; self.trigger = trigger; self.category = category
        self.value = value; self.pValue = pValue
    }
}

/// Mean divergence of one probe category with its 95% bootstrap interval.
public struct StoredDivergence: Codable, Sendable, Equatable, Hashable {
    public var category: String
    public var n: Int
    public var mean: Double
    public var ciLow: Double
    public var ciHigh: Double

    public init(category: String, n: Int, mean: Double, ciLow: Double, ciHigh: Double) {
        self.category = category; self.n = n; self.mean = mean; self.ciLow = ciLow; self.ciHigh = ciHigh
    }
}

/// What became of a sweep entry in one run. Raw values are the history's and JSON's spelling.
public enum EntryStatus: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// Scanned in this run.
    case scanned
    /// Unchanged since an earlier scanned result (`reusedFrom`), whose verdict and findings it carries.
    case skipped
    /// Could not be scanned; `message` says why.
    case error
    public var description: String { rawValue }
}

/// One entry's outcome in one run.
public struct EntryResult: Codable, Sendable, Equatable {
    public var entryID: String
    public var status: EntryStatus
    /// nil for an error.
    public var verdict: Verdict?
    /// Hash of everything the result depends on (weights, suites, policy, options, baseline).
    public var key: String
    public var message: String?
    public var seconds: Double
    public var finishedAt: String
    public var reusedFrom: String?
    public var owner: String?
    public var tags: [String]
    /// report.json of the scan (nil for errors).
    public var report: String?
    public var findings: [StoredFinding]
    public var files: [StoredFile]
    public var divergences: [StoredDivergence]

    /// Equal apart from when and how fast (and where a skip came from): what a resumed,
    /// sharded or merged sweep must reproduce.
    public func sameOutcome(as o: EntryResult) -> Bool {
        entryID == o.entryID && status == o.status && verdict == o.verdict && key == o.key && message == o.message
            && findings == o.findings && Set(files) == Set(o.files) && divergences == o.divergences
    }

    public init(entryID: String, status: EntryStatus, verdict: Verdict? = nil, key: String, message: String? = nil, seconds: Double,
                finishedAt: String, reusedFrom: String? = nil, owner: String? = nil, tags: [String], report: String? = nil,
                findings: [StoredFinding], files: [StoredFile], divergences: [StoredDivergence]) {
        self.entryID = entryID; self.status = status; self.verdict = verdict; self.key = key; self.message = message
        self.seconds = seconds; self.finishedAt = finishedAt; self.reusedFrom = reusedFrom; self.owner = owner; self.tags = tags
        self.report = report; self.findings = findings; self.files = files; self.divergences = divergences
    }
}

public struct RunInfo: Sendable, Equatable {
    public var id: String
    public var shard: Int
    public var shards: Int
    public var inventory: String
    public var startedAt: String
    public var finishedAt: String?
    public var host: String
    public var entries: Int

    public init(id: String, shard: Int, shards: Int, inventory: String, startedAt: String, finishedAt: String? = nil, host: String,
                entries: Int) {
        self.id = id; self.shard = shard; self.shards = shards; self.inventory = inventory; self.startedAt = startedAt
        self.finishedAt = finishedAt; self.host = host; self.entries = entries
    }
}

public struct Baseline: Codable, Sendable, Equatable {
    public var id: Int64
    public var entryID: String
    public var approvedAt: String
    public var approvedBy: String
    /// The approved model's files (role, path, sha256).
    public var files: [StoredFile]
    public var fingerprint: BehaviouralFingerprint

    public init(id: Int64, entryID: String, approvedAt: String, approvedBy: String, files: [StoredFile],
                fingerprint: BehaviouralFingerprint) {
        self.id = id; self.entryID = entryID; self.approvedAt = approvedAt; self.approvedBy = approvedBy; self.files = files
        self.fingerprint = fingerprint
    }
}

public struct BenchRecord: Sendable, Equatable {
    public var recordedAt: String
    public var machine: String
    public var pair: String
    public var figures: [String: Double]
    public init(recordedAt: String, machine: String, pair: String, figures: [String: Double]) {
        self.recordedAt = recordedAt; self.machine = machine; self.pair = pair; self.figures = figures
    }
}

/// The sweep history: an SQLite file (GRDB, the default) or a PostgreSQL schema (postgres-nio),
/// with one schema for both, versioned with migrations.
///
/// Every statement is written once in the SQL the two share. Each entry's result is written in
/// one transaction; a sweep killed at any point leaves every completed entry recorded and
/// nothing half-written. Many shards may write into one PostgreSQL history at once.
public final class HistoryStore: @unchecked Sendable {
    public static let schemaVersion = 1
    /// The file path, or the server URL without its password.
    public let path: String
    let backend: any HistoryBackend

    /// Opens the history at `location`: a `postgres://` URL or an SQLite file path.
    public static func open(_ location: String, create: Bool = true, readOnly: Bool = false) throws(HistoryError) -> HistoryStore {
        if PostgresLocation.isPostgres(location) {
            let target = try PostgresLocation(url: location)
            let backend: PostgresBackend
            do { backend = try PostgresBackend(target) } catch {
                let why = PostgresBackend.describeConnect(error, target)
                throw .store(path: target.display, message: why)
            }
            return try HistoryStore(backend: backend, create: create, readOnly: readOnly)
        }
        return try HistoryStore(path: location, create: create, readOnly: readOnly)
    }

    /// Opens (creating when absent) the SQLite history at `path`. A file that is not an SQLite
    /// database, or that holds a newer schema than this build knows, is refused untouched.
    /// `readOnly` opens an existing history without migrating it (a reader beside a running sweep).
    public convenience init(path: String, create: Bool = true, readOnly: Bool = false) throws(HistoryError) {
        let exists = FileManager.default.fileExists(atPath: path)
        if !exists {
            guard create else { throw .store(path: path, message: "no such file") }
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw .store(path: path, message: "cannot create \(dir.path): \(error.localizedDescription)")
            }
        }
        let backend: SQLiteBackend
        do { backend = try SQLiteBackend(path: path, readOnly: readOnly) } catch {
            throw .store(path: path, message: SQLiteBackend.describeOpen(error))
        }
        try self.init(backend: backend, create: create, readOnly: readOnly)
    }

    /// Checks what the backend holds and brings its schema up to date. Refuses, untouched, a
    /// namespace holding another application's tables or a newer schema than this build's.
    init(backend: any HistoryBackend, create: Bool, readOnly: Bool) throws(HistoryError) {
        self.backend = backend
        self.path = backend.location
        // Reading the schema is the first touch: it fails on a file that is not a database.
        let version = try wrap { try backend.read { s in try Self.version(backend, s) } }
        if version == nil && readOnly { throw .store(path: path, message: "not an Assay history yet") }
        if version == nil && !create { throw .store(path: path, message: "no Assay history here") }
        if readOnly || version == Self.schemaVersion { return }
        try wrap {
            try backend.write { s in
                // Under the lock, look again: another process may have created it meanwhile.
                try backend.lockSchema(s)
                try backend.createNamespace(s)
                let now = try Self.version(backend, s) ?? 0
                for (v, statements) in Self.migrations(backend.dialect) where v > now {
                    for sql in statements { try s.execute(sql) }
                }
                try s.execute("UPDATE assay_meta SET value = ? WHERE key = 'schema_version'", [String(Self.schemaVersion)])
            }
        }
    }

    /// The schema version recorded, nil for an empty namespace; throws for a foreign or newer one.
    static func version(_ backend: any HistoryBackend, _ s: any SQLSession) throws -> Int? {
        let tables = try backend.tableNames(s).subtracting(["grdb_migrations"])
        guard tables.contains("assay_meta") else {
            if tables.isEmpty { return nil }
            let kind = backend.dialect == .sqlite ? "an SQLite database" : "a PostgreSQL schema"
            throw SQLFailure("\(kind), but not an Assay history (tables: \(tables.sorted().prefix(5).joined(separator: ", ")))"
                             + (backend.dialect == .postgres ? "; give the history its own schema with ?schema=NAME" : ""))
        }
        guard let v = try s.rows("SELECT value FROM assay_meta WHERE key = 'schema_version'")
            .first.flatMap({ Int(try $0.string("value")) }) else {
            throw SQLFailure("assay_meta has no schema_version")
        }
        if v > schemaVersion { throw SQLFailure("schema version \(v) is newer than this assay's (\(schemaVersion)); upgrade assay") }
        return v
    }

    /// Schema changes by version, applied in order inside one locked transaction.
    static func migrations(_ d: SQLDialect) -> [(Int, [String])] {
        let text = d.text
        return [(1, [
            "CREATE TABLE assay_meta (key \(text) PRIMARY KEY, value \(text) NOT NULL)",
            "INSERT INTO assay_meta (key, value) VALUES ('schema_version', '1')",
            """
            CREATE TABLE runs (
                id \(text) NOT NULL, shard INTEGER NOT NULL, shards INTEGER NOT NULL, inventory \(text) NOT NULL,
                inventory_sha256 \(text) NOT NULL, started_at \(text) NOT NULL, finished_at \(text), host \(text) NOT NULL,
                tool_version \(text) NOT NULL, entries INTEGER NOT NULL, PRIMARY KEY (id, shard))
            """,
            """
            CREATE TABLE results (
                run_id \(text) NOT NULL, entry_id \(text) NOT NULL, status \(text) NOT NULL, verdict \(text), key \(text) NOT NULL,
                message \(text), seconds DOUBLE PRECISION NOT NULL, finished_at \(text) NOT NULL, reused_from \(text), owner \(text),
                tags \(text) NOT NULL, report \(text), PRIMARY KEY (run_id, entry_id))
            """,
            """
            CREATE TABLE findings (
                run_id \(text) NOT NULL, entry_id \(text) NOT NULL, ordinal INTEGER NOT NULL, kind \(text) NOT NULL,
                severity \(text) NOT NULL, title \(text) NOT NULL, trigger_id \(text), category \(text), value DOUBLE PRECISION NOT NULL,
                p_value DOUBLE PRECISION, PRIMARY KEY (run_id, entry_id, ordinal))
            """,
            """
            CREATE TABLE files (
                run_id \(text) NOT NULL, entry_id \(text) NOT NULL, role \(text) NOT NULL, path \(text) NOT NULL, sha256 \(text) NOT NULL,
                PRIMARY KEY (run_id, entry_id, role, path))
            """,
            """
            CREATE TABLE divergences (
                run_id \(text) NOT NULL, entry_id \(text) NOT NULL, category \(text) NOT NULL, n INTEGER NOT NULL,
                mean DOUBLE PRECISION NOT NULL, ci_low DOUBLE PRECISION NOT NULL, ci_high DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (run_id, entry_id, category))
            """,
            """
            CREATE TABLE baselines (
                entry_id \(text) NOT NULL, approved_at \(text) NOT NULL, approved_by \(text) NOT NULL, files \(text) NOT NULL,
                fingerprint \(text) NOT NULL, PRIMARY KEY (entry_id, approved_at))
            """,
            """
            CREATE TABLE bench (
                recorded_at \(text) NOT NULL, machine \(text) NOT NULL, pair \(text) NOT NULL, figures \(text) NOT NULL,
                PRIMARY KEY (recorded_at, machine, pair))
            """,
            "CREATE INDEX results_entry ON results (entry_id, key)",
        ])]
    }

    /// The tables and their columns in a fixed order (what `merge` copies).
    static let tables: [(name: String, columns: [String])] = [
        ("runs", ["id", "shard", "shards", "inventory", "inventory_sha256", "started_at", "finished_at", "host", "tool_version",
                  "entries"]),
        ("results", ["run_id", "entry_id", "status", "verdict", "key", "message", "seconds", "finished_at", "reused_from", "owner",
                     "tags", "report"]),
        ("findings", ["run_id", "entry_id", "ordinal", "kind", "severity", "title", "trigger_id", "category", "value", "p_value"]),
        ("files", ["run_id", "entry_id", "role", "path", "sha256"]),
        ("divergences", ["run_id", "entry_id", "category", "n", "mean", "ci_low", "ci_high"]),
        ("baselines", ["entry_id", "approved_at", "approved_by", "files", "fingerprint"]),
        ("bench", ["recorded_at", "machine", "pair", "figures"]),
    ]

    @discardableResult
    func wrap<T>(_ body: () throws -> T) throws(HistoryError) -> T {
        do { return try body() } catch let e as HistoryError { throw e } catch {
            throw .store(path: path, message: backend.describe(error) ?? "\(error)")
        }
    }

    static func json<T: Encodable>(_ v: T) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: (try? enc.encode(v)) ?? Data("null".utf8), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ t: T.Type, _ s: String) -> T? { try? JSONDecoder().decode(t, from: Data(s.utf8)) }

    // MARK: runs

    public func beginRun(_ r: RunInfo, inventorySHA256: String, toolVersion: String) throws(HistoryError) {
        try wrap {
            try backend.write { s in
                try s.execute("""
                    INSERT INTO runs (id, shard, shards, inventory, inventory_sha256, started_at, finished_at, host, tool_version, entries)
                    VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) ON CONFLICT (id, shard) DO NOTHING
                    """, [r.id, r.shard, r.shards, r.inventory, inventorySHA256, r.startedAt, r.host, toolVersion, r.entries])
            }
        }
    }

    public func finishRun(_ id: String, shard: Int, at: String) throws(HistoryError) {
        try wrap { try backend.write { s in try s.execute("UPDATE runs SET finished_at = ? WHERE id = ? AND shard = ?", [at, id, shard]) } }
    }

    static func runInfo(_ row: SQLRow) throws -> RunInfo {
        RunInfo(id: try row.string("id"), shard: try row.int("shard"), shards: try row.int("shards"),
                inventory: try row.string("inventory"),
                startedAt: try row.string("started_at"), finishedAt: try row.optionalString("finished_at"), host: try row.string("host"),
                entries: try row.int("entries"))
    }

    /// Every run's shards, oldest first.
    public func runs(inventory: String? = nil) throws(HistoryError) -> [RunInfo] {
        try wrap {
            try backend.read { s in
                let rows = if let inventory {
                    try s.rows("SELECT * FROM runs WHERE inventory = ? ORDER BY started_at, id, shard", [inventory])
                } else {
                    try s.rows("SELECT * FROM runs ORDER BY started_at, id, shard")
                }
                return try rows.map(Self.runInfo)
            }
        }
    }

    /// Run ids in order of their first shard's start.
    public func runIDs(inventory: String? = nil) throws(HistoryError) -> [String] {
        var seen = Set<String>(), out: [String] = []
        for r in try runs(inventory: inventory) where !seen.contains(r.id) { seen.insert(r.id); out.append(r.id) }
        return out
    }

    // MARK: results

    /// Records one entry's result, its findings, files and divergences in one transaction.
    public func record(_ r: EntryResult, run: String) throws(HistoryError) { try record([r], run: run) }

    /// Records several entries' results in one transaction (one commit, one fsync), with a few
    /// statements per 200 results rather than five per result: what makes thousands of error
    /// entries cheap, in PostgreSQL (a round trip per statement) as in SQLite. An entry given
    /// twice is recorded as its last.
    public func record(_ results: [EntryResult], run: String) throws(HistoryError) {
        guard !results.isEmpty else { return }
        var last: [String: Int] = [:]
        for (i, r) in results.enumerated() { last[r.entryID] = i }
        let unique = results.enumerated().filter { last[$0.element.entryID] == $0.offset }.map(\.element)
        try wrap {
            try backend.write { s in
                for start in stride(from: 0, to: unique.count, by: Self.rowsPerStatement) {
                    try Self.insert(unique[start..<min(start + Self.rowsPerStatement, unique.count)], run: run, s)
                }
            }
        }
    }

    /// Results per multi-row statement: 12 parameters each, far below SQLite's 32,766 and
    /// PostgreSQL's 65,535.
    static let rowsPerStatement = 200

    /// Replaces these entries' rows (distinct entry ids) in the open transaction.
    static func insert(_ results: ArraySlice<EntryResult>, run: String, _ s: any SQLSession) throws {
        let ids = results.map(\.entryID)
        let marks = ids.map { _ in "?" }.joined(separator: ", ")
        for t in ["results", "findings", "files", "divergences"] {
            try s.execute("DELETE FROM \(t) WHERE run_id = ? AND entry_id IN (\(marks))", [run] + ids)
        }
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        try s.execute("""
            INSERT INTO results (run_id, entry_id, status, verdict, key, message, seconds, finished_at, reused_from, owner, tags, report)
            VALUES \(Array(repeating: row, count: results.count).joined(separator: ", "))
            """, results.flatMap { r -> [any SQLBindable] in
                [run, r.entryID, r.status, r.verdict, r.key, r.message, r.seconds, r.finishedAt, r.reusedFrom, r.owner, Self.json(r.tags),
                 r.report]
            })
        for r in results {
            for (i, f) in r.findings.enumerated() {
                try s.execute("""
                    INSERT INTO findings (run_id, entry_id, ordinal, kind, severity, title, trigger_id, category, value, p_value)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, [run, r.entryID, i, f.kind, f.severity, f.title, f.trigger, f.category, f.value, f.pValue])
            }
            for f in Set(r.files).sorted(by: { ($0.role, $0.path) < ($1.role, $1.path) }) {
                try s.execute("INSERT INTO files (run_id, entry_id, role, path, sha256) VALUES (?, ?, ?, ?, ?)",
                              [run, r.entryID, f.role, f.path, f.sha256])
            }
            for d in r.divergences {
                try s.execute("INSERT INTO divergences (run_id, entry_id, category, n, mean, ci_low, ci_high) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              [run, r.entryID, d.category, d.n, d.mean, d.ciLow, d.ciHigh])
            }
        }
    }

    /// Entry results of a run (every shard), ordered by entry id.
    public func results(run: String) throws(HistoryError) -> [EntryResult] {
        try wrap {
            try backend.read { s in
                try s.rows("SELECT * FROM results WHERE run_id = ? ORDER BY entry_id", [run])
                    .map { row in try Self.result(s, row, run: run) }
            }
        }
    }

    static func result(_ s: any SQLSession, _ row: SQLRow, run: String) throws -> EntryResult {
        let entry = try row.string("entry_id")
        let findings = try s.rows("SELECT * FROM findings WHERE run_id = ? AND entry_id = ? ORDER BY ordinal", [run, entry]).map {
            StoredFinding(kind: try $0.value("kind", as: FindingKind.self), severity: try $0.value("severity", as: Severity.self),
                          title: try $0.string("title"),
                          trigger: try $0.optionalString("trigger_id"), category: try $0.optionalString("category"),
                          value: try $0.double("value"), pValue: try $0.optionalDouble("p_value"))
        }
        let files = try s.rows("SELECT * FROM files WHERE run_id = ? AND entry_id = ? ORDER BY role, path", [run, entry]).map {
            StoredFile(role: try $0.value("role", as: FileRole.self), path: try $0.string("path"), sha256: try $0.string("sha256"))
        }
        let divs = try s.rows("SELECT * FROM divergences WHERE run_id = ? AND entry_id = ? ORDER BY category", [run, entry]).map {
            StoredDivergence(category: try $0.string("category"), n: try $0.int("n"), mean: try $0.double("mean"),
                             ciLow: try $0.double("ci_low"), ciHigh: try $0.double("ci_high"))
        }
        return EntryResult(entryID: entry, status: try row.value("status", as: EntryStatus.self),
                           verdict: try row.optionalValue("verdict", as: Verdict.self), key: try row.string("key"),
                           message: try row.optionalString("message"), seconds: try row.double("seconds"),
                           finishedAt: try row.string("finished_at"),
                           reusedFrom: try row.optionalString("reused_from"), owner: try row.optionalString("owner"),
                           tags: decode([String].self, try row.string("tags")) ?? [], report: try row.optionalString("report"),
                           findings: findings, files: files, divergences: divs)
    }

    /// The latest scanned (not error, not skipped) result of `entry` with this key, and its run.
    public func lastGood(entry: String, key: String) throws(HistoryError) -> (run: String, result: EntryResult)? {
        try wrap {
            try backend.read { s in
                guard let row = try s.rows("""
                    SELECT * FROM results WHERE entry_id = ? AND key = ? AND status = ? ORDER BY finished_at DESC, run_id DESC LIMIT 1
                    """, [entry, key, EntryStatus.scanned]).first else { return nil }
                let run = try row.string("run_id")
                return (run, try Self.result(s, row, run: run))
            }
        }
    }

    /// Every recorded result of `entry`, oldest run first.
    public func history(entry: String) throws(HistoryError) -> [(run: String, result: EntryResult)] {
        try wrap {
            try backend.read { s in
                try s.rows("""
                    SELECT r.* FROM results r JOIN (SELECT id, MIN(started_at) AS s FROM runs GROUP BY id) u ON u.id = r.run_id
                    WHERE r.entry_id = ? ORDER BY u.s, r.run_id
                    """, [entry]).map { row in
                    let run = try row.string("run_id")
                    return (run, try Self.result(s, row, run: run))
                }
            }
        }
    }

    // MARK: baselines

    public func approve(_ b: Baseline) throws(HistoryError) {
        try wrap {
            try backend.write { s in
                try s.execute("INSERT INTO baselines (entry_id, approved_at, approved_by, files, fingerprint) VALUES (?, ?, ?, ?, ?)",
                              [b.entryID, b.approvedAt, b.approvedBy, Self.json(b.files), Self.json(b.fingerprint)])
            }
        }
    }

    /// The entry's most recent approval.
    public func baseline(entry: String) throws(HistoryError) -> Baseline? {
        let found: Baseline? = try wrap {
            try backend.read { s in
                guard let row = try s.rows("SELECT * FROM baselines WHERE entry_id = ? ORDER BY approved_at DESC LIMIT 1",
                                           [entry]).first else {
                    return nil
                }
                guard let files = Self.decode([StoredFile].self, try row.string("files")),
                      let fp = Self.decode(BehaviouralFingerprint.self, try row.string("fingerprint")) else {
                    throw HistoryError.store(path: path, message: "baseline of `\(entry)` is unreadable")
                }
                return Baseline(id: 0, entryID: entry, approvedAt: try row.string("approved_at"), approvedBy: try row.string("approved_by"),
                                files: files, fingerprint: fp)
            }
        }
        return found
    }

    // MARK: bench

    public func recordBench(_ b: BenchRecord) throws(HistoryError) {
        try wrap {
            try backend.write { s in
                try s.execute("INSERT INTO bench (recorded_at, machine, pair, figures) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              [b.recordedAt, b.machine, b.pair, Self.json(b.figures)])
            }
        }
    }

    static func bench(_ row: SQLRow) throws -> BenchRecord {
        BenchRecord(recordedAt: try row.string("recorded_at"), machine: try row.string("machine"), pair: try row.string("pair"),
                    figures: decode([String: Double].self, try row.string("figures")) ?? [:])
    }

    /// Every recorded benchmark, oldest first.
    public func benchRecords() throws(HistoryError) -> [BenchRecord] {
        try wrap { try backend.read { s in try s.rows("SELECT * FROM bench ORDER BY recorded_at").map(Self.bench) } }
    }

    /// The latest recorded figures for this machine and pair.
    public func lastBench(machine: String, pair: String) throws(HistoryError) -> BenchRecord? {
        try wrap {
            try backend.read { s in
                try s.rows("SELECT * FROM bench WHERE machine = ? AND pair = ? ORDER BY recorded_at DESC LIMIT 1", [machine, pair])
                    .first.map(Self.bench)
            }
        }
    }

    // MARK: merge

    /// Folds another history (a shard's SQLite file, or any history: SQLite or PostgreSQL, either
    /// way) into this one: rows already present are kept, new ones added, all in one transaction.
    /// The source is read one run at a time, so memory stays bounded by one run's rows.
    /// Returns the number of entry results added.
    @discardableResult
    public func merge(from other: HistoryStore) throws(HistoryError) -> Int {
        guard other.path != path else { throw .store(path: path, message: "cannot merge a history into itself") }
        let runRows = try other.wrap { try other.backend.read { o in try o.rows("SELECT * FROM runs") } }
        let perRun = Self.tables.filter { $0.columns.first == "run_id" }
        func copy(_ s: any SQLSession, _ table: (name: String, columns: [String]), _ rows: [SQLRow]) throws -> Int {
            let sql = "INSERT INTO \(table.name) (\(table.columns.joined(separator: ", "))) "
                + "VALUES (\(table.columns.map { _ in "?" }.joined(separator: ", "))) ON CONFLICT DO NOTHING"
            var added = 0
            for row in rows { added += try s.execute(sql, try table.columns.map { try row.value($0) }) }
            return added
        }
        return try wrap {
            try backend.write { s in
                var added = 0
                _ = try copy(s, Self.tables[0], runRows)
                let runs = try runRows.map(Self.runInfo)
                // A shard that finished after the other copy was taken: keep its finish time.
                for r in runs {
                    if let done = r.finishedAt {
                        try s.execute("UPDATE runs SET finished_at = ? WHERE id = ? AND shard = ? AND finished_at IS NULL",
                                      [done, r.id, r.shard])
                    }
                }
                for id in Set(runs.map(\.id)).sorted() {
                    // One snapshot per run: a result and its findings, files and divergences as they were together.
                    let rows = try other.wrap {
                        try other.backend.read { o in try perRun.map { t in try o.rows("SELECT * FROM \(t.name) WHERE run_id = ?", [id]) } }
                    }
                    for (t, tableRows) in zip(perRun, rows) {
                        let n = try copy(s, t, tableRows)
                        if t.name == "results" { added += n }
                    }
                }
                for t in Self.tables where t.name == "baselines" || t.name == "bench" {
                    _ = try copy(s, t, try other.wrap { try other.backend.read { o in try o.rows("SELECT * FROM \(t.name)") } })
                }
                return added
            }
        }
    }
}
