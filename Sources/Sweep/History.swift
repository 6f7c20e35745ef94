import Foundation
import AssayCommon
import GRDB

/// A file that made an entry's model or inputs: role ("base", "tuned", "adapter", "adapter 2",
/// "suite", "triggers", "policy", "manifest"), path relative to its directory, sha256.
public struct StoredFile: Codable, Sendable, Equatable, Hashable {
    public var role: String
    public var path: String
    public var sha256: String
}

public struct StoredFinding: Codable, Sendable, Equatable, Hashable {
    public var kind: String
    public var severity: String
    public var title: String
    public var trigger: String?
    public var category: String?
    public var value: Double
    public var pValue: Double?

    /// What identifies "the same finding" across nights (its numbers may move).
    public var identity: String { [kind, trigger ?? "", category ?? "", kind == "trigger_backdoor" || kind == "category_shift" ? "" : title].joined(separator: "\u{1F}") }
}

/// Mean divergence of one probe category with its 95% bootstrap interval.
public struct StoredDivergence: Codable, Sendable, Equatable, Hashable {
    public var category: String
    public var n: Int
    public var mean: Double
    public var ciLow: Double
    public var ciHigh: Double
}

/// One entry's outcome in one run.
public struct EntryResult: Codable, Sendable, Equatable {
    /// "scanned", "skipped" (unchanged since `reusedFrom`) or "error".
    public var entryID: String
    public var status: String
    /// pass, warn, fail (nil for an error).
    public var verdict: String?
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
}

public struct Baseline: Codable, Sendable, Equatable {
    public var id: Int64
    public var entryID: String
    public var approvedAt: String
    public var approvedBy: String
    /// The approved model's files (role, path, sha256).
    public var files: [StoredFile]
    public var fingerprint: BehaviouralFingerprint
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

/// The sweep history: an SQLite database (GRDB), schema-versioned with migrations.
///
/// Every statement is plain SQL that PostgreSQL also accepts, so the same schema can live in a
/// shared server. Each entry's result is written in one transaction; a sweep killed at any
/// point leaves every completed entry recorded and nothing half-written.
public final class HistoryStore: @unchecked Sendable {
    public static let schemaVersion = 1
    public let path: String
    let db: DatabaseQueue

    /// Opens (creating when absent) the history at `path`. A file that is not an SQLite
    /// database, or that holds a newer schema than this build knows, is refused untouched.
    /// `readOnly` opens an existing history without migrating it (a reader beside a running sweep).
    public init(path: String, create: Bool = true, readOnly: Bool = false) throws(SweepError) {
        self.path = path
        let exists = FileManager.default.fileExists(atPath: path)
        if !exists {
            guard create else { throw .history(path: path, message: "no such file") }
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw .history(path: path, message: "cannot create \(dir.path): \(error.localizedDescription)")
            }
        }
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.readonly = readOnly
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            // Reading the schema is the first touch of the file: it fails on a non-database.
            let (tables, version) = try db.read { db -> (Set<String>, Int?) in
                let t = Set(try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'"))
                let v = t.contains("assay_meta")
                    ? try String.fetchOne(db, sql: "SELECT value FROM assay_meta WHERE key = 'schema_version'").flatMap(Int.init) : nil
                return (t, v)
            }
            if let version, version > Self.schemaVersion {
                throw SweepError.history(path: path, message: "schema version \(version) is newer than this assay's (\(Self.schemaVersion)); upgrade assay")
            }
            if version == nil && !tables.isEmpty && !tables.contains("assay_meta") {
                throw SweepError.history(path: path, message: "an SQLite database, but not an Assay history (tables: \(tables.sorted().prefix(5).joined(separator: ", ")))")
            }
            if readOnly {
                guard version != nil else { throw SweepError.history(path: path, message: "not an Assay history yet") }
            } else {
                try Self.migrator.migrate(db)
            }
        } catch let e as SweepError {
            throw e
        } catch let e as DatabaseError {
            throw .history(path: path, message: e.resultCode == .SQLITE_NOTADB ? "not an SQLite database" : "\(e.message ?? "\(e)")")
        } catch {
            throw .history(path: path, message: "\(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE assay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                INSERT INTO assay_meta (key, value) VALUES ('schema_version', '1');
                CREATE TABLE runs (
                    id TEXT NOT NULL, shard INTEGER NOT NULL, shards INTEGER NOT NULL, inventory TEXT NOT NULL,
                    inventory_sha256 TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, host TEXT NOT NULL,
                    tool_version TEXT NOT NULL, entries INTEGER NOT NULL, PRIMARY KEY (id, shard));
                CREATE TABLE results (
                    run_id TEXT NOT NULL, entry_id TEXT NOT NULL, status TEXT NOT NULL, verdict TEXT, key TEXT NOT NULL,
                    message TEXT, seconds DOUBLE PRECISION NOT NULL, finished_at TEXT NOT NULL, reused_from TEXT, owner TEXT,
                    tags TEXT NOT NULL, report TEXT, PRIMARY KEY (run_id, entry_id));
                CREATE TABLE findings (
                    run_id TEXT NOT NULL, entry_id TEXT NOT NULL, ordinal INTEGER NOT NULL, kind TEXT NOT NULL,
                    severity TEXT NOT NULL, title TEXT NOT NULL, trigger_id TEXT, category TEXT, value DOUBLE PRECISION NOT NULL,
                    p_value DOUBLE PRECISION, PRIMARY KEY (run_id, entry_id, ordinal));
                CREATE TABLE files (
                    run_id TEXT NOT NULL, entry_id TEXT NOT NULL, role TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
                    PRIMARY KEY (run_id, entry_id, role, path));
                CREATE TABLE divergences (
                    run_id TEXT NOT NULL, entry_id TEXT NOT NULL, category TEXT NOT NULL, n INTEGER NOT NULL,
                    mean DOUBLE PRECISION NOT NULL, ci_low DOUBLE PRECISION NOT NULL, ci_high DOUBLE PRECISION NOT NULL,
                    PRIMARY KEY (run_id, entry_id, category));
                CREATE TABLE baselines (
                    entry_id TEXT NOT NULL, approved_at TEXT NOT NULL, approved_by TEXT NOT NULL, files TEXT NOT NULL,
                    fingerprint TEXT NOT NULL, PRIMARY KEY (entry_id, approved_at));
                CREATE TABLE bench (
                    recorded_at TEXT NOT NULL, machine TEXT NOT NULL, pair TEXT NOT NULL, figures TEXT NOT NULL,
                    PRIMARY KEY (recorded_at, machine, pair));
                CREATE INDEX results_entry ON results (entry_id, key);
                """)
        }
        return m
    }

    func wrap<T>(_ body: () throws -> T) throws(SweepError) -> T {
        do { return try body() } catch let e as SweepError { throw e } catch let e as DatabaseError {
            throw .history(path: path, message: e.message ?? "\(e)")
        } catch { throw .history(path: path, message: "\(error)") }
    }

    static func json<T: Encodable>(_ v: T) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: (try? enc.encode(v)) ?? Data("null".utf8), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ t: T.Type, _ s: String) -> T? { try? JSONDecoder().decode(t, from: Data(s.utf8)) }

    // MARK: runs

    public func beginRun(_ r: RunInfo, inventorySHA256: String, toolVersion: String) throws(SweepError) {
        try wrap {
            try db.write { db in
                try db.execute(sql: """
                    INSERT INTO runs (id, shard, shards, inventory, inventory_sha256, started_at, finished_at, host, tool_version, entries)
                    VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?) ON CONFLICT (id, shard) DO NOTHING
                    """, arguments: [r.id, r.shard, r.shards, r.inventory, inventorySHA256, r.startedAt, r.host, toolVersion, r.entries])
            }
        }
    }

    public func finishRun(_ id: String, shard: Int, at: String) throws(SweepError) {
        try wrap { try db.write { db in try db.execute(sql: "UPDATE runs SET finished_at = ? WHERE id = ? AND shard = ?", arguments: [at, id, shard]) } }
    }

    static func runInfo(_ row: Row) -> RunInfo {
        RunInfo(id: row["id"], shard: row["shard"], shards: row["shards"], inventory: row["inventory"], startedAt: row["started_at"],
                finishedAt: row["finished_at"], host: row["host"], entries: row["entries"])
    }

    /// Every run's shards, oldest first.
    public func runs(inventory: String? = nil) throws(SweepError) -> [RunInfo] {
        try wrap {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM runs WHERE ? IS NULL OR inventory = ? ORDER BY started_at, id, shard",
                                 arguments: [inventory, inventory]).map(Self.runInfo)
            }
        }
    }

    /// Run ids in order of their first shard's start.
    public func runIDs(inventory: String? = nil) throws(SweepError) -> [String] {
        var seen = Set<String>(), out: [String] = []
        for r in try runs(inventory: inventory) where !seen.contains(r.id) { seen.insert(r.id); out.append(r.id) }
        return out
    }

    // MARK: results

    /// Records one entry's result, its findings, files and divergences in one transaction.
    public func record(_ r: EntryResult, run: String) throws(SweepError) {
        try wrap {
            try db.write { db in
                try db.execute(sql: "DELETE FROM results WHERE run_id = ? AND entry_id = ?", arguments: [run, r.entryID])
                for t in ["findings", "files", "divergences"] {
                    try db.execute(sql: "DELETE FROM \(t) WHERE run_id = ? AND entry_id = ?", arguments: [run, r.entryID])
                }
                try db.execute(sql: """
                    INSERT INTO results (run_id, entry_id, status, verdict, key, message, seconds, finished_at, reused_from, owner, tags, report)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [run, r.entryID, r.status, r.verdict, r.key, r.message, r.seconds, r.finishedAt, r.reusedFrom, r.owner,
                                     Self.json(r.tags), r.report])
                for (i, f) in r.findings.enumerated() {
                    try db.execute(sql: """
                        INSERT INTO findings (run_id, entry_id, ordinal, kind, severity, title, trigger_id, category, value, p_value)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """, arguments: [run, r.entryID, i, f.kind, f.severity, f.title, f.trigger, f.category, f.value, f.pValue])
                }
                for f in Set(r.files) {
                    try db.execute(sql: "INSERT INTO files (run_id, entry_id, role, path, sha256) VALUES (?, ?, ?, ?, ?)",
                                   arguments: [run, r.entryID, f.role, f.path, f.sha256])
                }
                for d in r.divergences {
                    try db.execute(sql: "INSERT INTO divergences (run_id, entry_id, category, n, mean, ci_low, ci_high) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                   arguments: [run, r.entryID, d.category, d.n, d.mean, d.ciLow, d.ciHigh])
                }
            }
        }
    }

    /// Entry results of a run (every shard), ordered by entry id.
    public func results(run: String) throws(SweepError) -> [EntryResult] {
        try wrap {
            try db.read { db in
                let rows = try Row.fetchAll(db, sql: "SELECT * FROM results WHERE run_id = ? ORDER BY entry_id", arguments: [run])
                return try rows.map { row in try Self.result(db, row, run: run) }
            }
        }
    }

    static func result(_ db: Database, _ row: Row, run: String) throws -> EntryResult {
        let entry: String = row["entry_id"]
        let findings = try Row.fetchAll(db, sql: "SELECT * FROM findings WHERE run_id = ? AND entry_id = ? ORDER BY ordinal", arguments: [run, entry]).map {
            StoredFinding(kind: $0["kind"], severity: $0["severity"], title: $0["title"], trigger: $0["trigger_id"], category: $0["category"],
                          value: $0["value"], pValue: $0["p_value"])
        }
        let files = try Row.fetchAll(db, sql: "SELECT * FROM files WHERE run_id = ? AND entry_id = ? ORDER BY role, path", arguments: [run, entry]).map {
            StoredFile(role: $0["role"], path: $0["path"], sha256: $0["sha256"])
        }
        let divs = try Row.fetchAll(db, sql: "SELECT * FROM divergences WHERE run_id = ? AND entry_id = ? ORDER BY category", arguments: [run, entry]).map {
            StoredDivergence(category: $0["category"], n: $0["n"], mean: $0["mean"], ciLow: $0["ci_low"], ciHigh: $0["ci_high"])
        }
        return EntryResult(entryID: entry, status: row["status"], verdict: row["verdict"], key: row["key"], message: row["message"],
                           seconds: row["seconds"], finishedAt: row["finished_at"], reusedFrom: row["reused_from"], owner: row["owner"],
                           tags: decode([String].self, row["tags"]) ?? [], report: row["report"], findings: findings, files: files, divergences: divs)
    }

    /// The latest scanned (not error, not skipped) result of `entry` with this key, and its run.
    public func lastGood(entry: String, key: String) throws(SweepError) -> (run: String, result: EntryResult)? {
        try wrap {
            try db.read { db in
                guard let row = try Row.fetchOne(db, sql: """
                    SELECT * FROM results WHERE entry_id = ? AND key = ? AND status = 'scanned' ORDER BY finished_at DESC, run_id DESC LIMIT 1
                    """, arguments: [entry, key]) else { return nil }
                let run: String = row["run_id"]
                return (run, try Self.result(db, row, run: run))
            }
        }
    }

    /// Every recorded result of `entry`, oldest run first.
    public func history(entry: String) throws(SweepError) -> [(run: String, result: EntryResult)] {
        try wrap {
            try db.read { db in
                try Row.fetchAll(db, sql: """
                    SELECT r.* FROM results r JOIN (SELECT id, MIN(started_at) AS s FROM runs GROUP BY id) u ON u.id = r.run_id
                    WHERE r.entry_id = ? ORDER BY u.s, r.run_id
                    """, arguments: [entry]).map { row in
                    let run: String = row["run_id"]
                    return (run, try Self.result(db, row, run: run))
                }
            }
        }
    }

    // MARK: baselines

    public func approve(_ b: Baseline) throws(SweepError) {
        try wrap {
            try db.write { db in
                try db.execute(sql: "INSERT INTO baselines (entry_id, approved_at, approved_by, files, fingerprint) VALUES (?, ?, ?, ?, ?)",
                               arguments: [b.entryID, b.approvedAt, b.approvedBy, Self.json(b.files), Self.json(b.fingerprint)])
            }
        }
    }

    /// The entry's most recent approval.
    public func baseline(entry: String) throws(SweepError) -> Baseline? {
        let found: Baseline? = try wrap {
            try db.read { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM baselines WHERE entry_id = ? ORDER BY approved_at DESC LIMIT 1",
                                                 arguments: [entry]) else { return nil }
                guard let files = Self.decode([StoredFile].self, row["files"]),
                      let fp = Self.decode(BehaviouralFingerprint.self, row["fingerprint"]) else {
                    throw SweepError.history(path: path, message: "baseline of `\(entry)` is unreadable")
                }
                return Baseline(id: 0, entryID: entry, approvedAt: row["approved_at"], approvedBy: row["approved_by"], files: files, fingerprint: fp)
            }
        }
        return found
    }

    // MARK: bench

    public func recordBench(_ b: BenchRecord) throws(SweepError) {
        try wrap {
            try db.write { db in
                try db.execute(sql: "INSERT INTO bench (recorded_at, machine, pair, figures) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               arguments: [b.recordedAt, b.machine, b.pair, Self.json(b.figures)])
            }
        }
    }

    /// Every recorded benchmark, oldest first.
    public func benchRecords() throws(SweepError) -> [BenchRecord] {
        try wrap {
            try db.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM bench ORDER BY recorded_at").map {
                    BenchRecord(recordedAt: $0["recorded_at"], machine: $0["machine"], pair: $0["pair"],
                                figures: Self.decode([String: Double].self, $0["figures"]) ?? [:])
                }
            }
        }
    }

    /// The latest recorded figures for this machine and pair.
    public func lastBench(machine: String, pair: String) throws(SweepError) -> BenchRecord? {
        try wrap {
            try db.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM bench WHERE machine = ? AND pair = ? ORDER BY recorded_at DESC LIMIT 1",
                                 arguments: [machine, pair]).map {
                    BenchRecord(recordedAt: $0["recorded_at"], machine: $0["machine"], pair: $0["pair"],
                                figures: Self.decode([String: Double].self, $0["figures"]) ?? [:])
                }
            }
        }
    }

    // MARK: merge

    /// Folds another history (a shard's SQLite file) into this one: rows already present are
    /// kept, new ones added, all in one transaction. Returns the number of results added.
    @discardableResult
    public func merge(from other: HistoryStore) throws(SweepError) -> Int {
        try wrap {
            try db.inDatabase { db in
                try db.execute(sql: "ATTACH DATABASE ? AS other", arguments: [other.path])
                defer { try? db.execute(sql: "DETACH DATABASE other") }
                var added = 0
                try db.inTransaction {
                    for t in ["runs", "results", "findings", "files", "divergences", "baselines", "bench"] {
                        try db.execute(sql: "INSERT OR IGNORE INTO main.\(t) SELECT * FROM other.\(t)")
                        if t == "results" { added = db.changesCount }
                    }
                    // A shard that finished after the other copy was taken: keep its finish time.
                    try db.execute(sql: """
                        UPDATE main.runs SET finished_at = (SELECT o.finished_at FROM other.runs o WHERE o.id = runs.id AND o.shard = runs.shard)
                        WHERE finished_at IS NULL
                        """)
                    return .commit
                }
                return added
            }
        }
    }
}
