import Foundation
import Testing
import AssayCommon
import Scan
@testable import History
@testable import Sweep

/// The server `scripts/test.sh` starts (scripts/postgres.sh): a real PostgreSQL on loopback.
/// Run `swift test` alone and these are skipped; the test command sets ASSAY_REQUIRE_POSTGRES=1,
/// and then a missing server is a failure, not a skip.
enum TestPostgres {
    static let url = ProcessInfo.processInfo.environment["ASSAY_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 }
    static var available: Bool { url != nil }

    /// A URL for a fresh schema of its own (tests run in parallel against one database).
    static func fresh(_ tag: String) -> String {
        let schema = "t_\(tag)_\(UUID().uuidString.prefix(8).lowercased())"
        return "\(url!)?schema=\(schema)&sslmode=disable"
    }

    /// Drops the schema a URL names, and everything in it.
    static func drop(_ url: String) {
        guard let store = try? HistoryStore.open(url), let pg = store.backend as? PostgresBackend else { return }
        _ = try? pg.write { s in try s.execute("DROP SCHEMA IF EXISTS \"\(pg.target.schema)\" CASCADE") }
    }
}

@Suite struct PostgresLocationTests {
    @Test func requiredServerIsThere() {
        if ProcessInfo.processInfo.environment["ASSAY_REQUIRE_POSTGRES"] == "1" {
            #expect(TestPostgres.available, "ASSAY_REQUIRE_POSTGRES=1 but ASSAY_TEST_POSTGRES is not set: scripts/postgres.sh did not start")
        }
    }

    @Test func parsesURLsTheWayLibpqDoes() throws {
        let l = try PostgresLocation(url: "postgres://sweeper:s%40cret@db.internal:6543/fleet?schema=nightly&sslmode=require", environment: [:])
        #expect(l.host == "db.internal" && l.port == 6543 && l.user == "sweeper" && l.password == "s@cret")
        #expect(l.database == "fleet" && l.schema == "nightly" && l.sslmode == "require")
        #expect(l.display == "postgres://sweeper@db.internal:6543/fleet?schema=nightly", "no password in what is shown")
        let d = try PostgresLocation(url: "postgresql://db", environment: ["PGUSER": "u", "PGPASSWORD": "p"])
        #expect(d.port == 5432 && d.user == "u" && d.password == "p" && d.database == "u" && d.schema == "public" && d.sslmode == "prefer")
        let v6 = try PostgresLocation(url: "postgres://a@[::1]:5433/x", environment: [:])
        #expect(v6.host == "::1" && v6.display == "postgres://a@[::1]:5433/x")
        let sock = try PostgresLocation(url: "postgres://a@/x?host=/var/run/postgresql&schema=s", environment: [:])
        #expect(sock.socketDirectory == "/var/run/postgresql" && sock.display == "postgres://a@:5432/x?host=/var/run/postgresql&schema=s")
    }

    @Test func badURLsAreInvalidInputThatHideThePassword() {
        for (url, says) in [
            ("postgres://u:hunter2@h/db?sslmod=require", "unknown parameter `sslmod`"),
            ("postgres://u:hunter2@h/db?schema=drop;table", "schema `drop;table`"),
            ("postgres://u:hunter2@h/db?sslmode=always", "sslmode `always`"),
            ("postgres://u:hunter2@h:0/db", "port 0 is out of range"),
            ("postgres://u:hunter2@h/db?connect_timeout=x", "connect_timeout `x`"),
            ("postgres://u:hunter2#x@h/db", "percent-encode"),
            ("postgres://u:hunter2/x?y@h/db", "percent-encode"),
            ("postgres://u:hunter2@h/db?schema=a%0A", "schema `a"),
        ] {
            #expect {
                _ = try PostgresLocation(url: url, environment: [:])
            } throws: { error in
                let d = (error as? HistoryError)?.description ?? ""
                return d.contains(says) && !d.contains("hunter2") && d.contains("***")
            }
        }
    }

    @Test func placeholdersAreNumberedOutsideQuotes() {
        #expect(PostgresBackend.numbered("SELECT '?' , \"a?\" FROM t WHERE a = ? AND b = ?") == "SELECT '?' , \"a?\" FROM t WHERE a = $1 AND b = $2")
    }

    @Test func anUnreachableServerIsAClearHistoryError() {
        #expect {
            _ = try HistoryStore.open("postgres://assay:pw@127.0.0.1:1/assay?connect_timeout=5")
        } throws: { error in
            let d = (error as? HistoryError)?.description ?? ""
            return d.contains("postgres://assay@127.0.0.1:1/assay") && d.contains("cannot connect") && !d.contains("pw@")
        }
    }
}

/// The same operations against SQLite and PostgreSQL give the same history.
@Suite(.enabled(if: TestPostgres.available, "needs ASSAY_TEST_POSTGRES (scripts/test.sh starts a server)"))
struct PostgresHistoryTests {
    let base = HistoryStoreTests()

    func result(_ id: String, verdict: Verdict = .pass, finished: String = "2026-11-23T00:00:00Z") -> EntryResult {
        var r = base.result(id, verdict: verdict)
        r.finishedAt = finished
        r.message = id.contains("'") ? "quote ' and ? in a message" : nil
        r.report = "{\"entry\": \"\(id)\", \"unicode\": \"ÿ — ✓\"}"
        return r
    }

    /// Runs one sequence of writes and returns everything the store reads back.
    func exercise(_ s: HistoryStore) throws -> String {
        for (i, run) in ["r1", "r2"].enumerated() {
            try s.beginRun(RunInfo(id: run, shard: 0, shards: 1, inventory: "/inv.yaml", startedAt: "2026-11-2\(i + 1)T00:00:00Z", finishedAt: nil,
                                   host: "h", entries: 4), inventorySHA256: "x", toolVersion: "t")
            // Ids whose order differs between byte order and a linguistic collation.
            for id in ["ab", "a-c", "B", "it's"] {
                try s.record(result(id, verdict: i == 0 ? .pass : .fail, finished: "2026-11-2\(i + 1)T01:00:00Z"), run: run)
            }
            // Recording again replaces, it does not duplicate.
            try s.record(result("ab", verdict: .warn, finished: "2026-11-2\(i + 1)T02:00:00Z"), run: run)
            try s.finishRun(run, shard: 0, at: "2026-11-2\(i + 1)T03:00:00Z")
        }
        try s.approve(Baseline(id: 0, entryID: "ab", approvedAt: "2026-11-21T05:00:00Z", approvedBy: "me",
                               files: [StoredFile(role: .tuned, path: "m", sha256: "1")], fingerprint: BehaviouralFingerprint(responseTokens: 8, topK: 20, suites: ["s": "h"], probes: [])))
        try s.recordBench(BenchRecord(recordedAt: "2026-11-21T06:00:00Z", machine: "m", pair: "p", figures: ["probes_per_s": 1.5, "peak_rss_mb": 300]))
        var out = ""
        out += "\(try s.runs())\n\(try s.runIDs(inventory: "/inv.yaml"))\n\(try s.runIDs(inventory: "/other"))\n"
        for run in try s.runIDs() { out += "\(try s.results(run: run))\n" }
        out += "\(try s.lastGood(entry: "ab", key: "k-ab").map { "\($0.run) \($0.result)" } ?? "nil")\n"
        out += "\(try s.history(entry: "it's").map { "\($0.run) \($0.result.verdict?.rawValue ?? "-")" })\n"
        out += "\(try s.baseline(entry: "ab").map { "\($0.approvedBy) \($0.files)" } ?? "nil")\n"
        func figures(_ b: BenchRecord?) -> String { b.map { "\($0.recordedAt) \($0.machine) \($0.pair) \($0.figures.sorted { $0.key < $1.key })" } ?? "nil" }
        out += "\(try s.benchRecords().map(figures))\n\(figures(try s.lastBench(machine: "m", pair: "p")))\n"
        out += "\(try SweepDiff.changes(s, from: "r1", to: "r2").map(\.kind.rawValue))\n"
        return out
    }

    @Test func holdsTheSameHistoryAsSQLite() throws {
        let url = TestPostgres.fresh("same")
        defer { TestPostgres.drop(url) }
        let lite = try exercise(HistoryStore(path: try tempDir().appendingPathComponent("h.sqlite").path))
        let pg = try exercise(HistoryStore.open(url))
        if pg != lite {
            // Line by line, so a failure shows where the two differ.
            for (a, b) in zip(lite.split(separator: "\n"), pg.split(separator: "\n")) where a != b { Issue.record("SQLite: \(a)\nPostgreSQL: \(b)") }
        }
        #expect(pg == lite)
        #expect(lite.contains("B") && lite.range(of: "entryID: \"B\"")!.lowerBound < lite.range(of: "entryID: \"a-c\"")!.lowerBound)
        // Reopening finds the schema current and migrates nothing.
        let again = try HistoryStore.open(url)
        #expect(try again.results(run: "r2").map(\.entryID) == ["B", "a-c", "ab", "it's"])
    }

    @Test func manyProcessesOpeningAFreshSchemaAtOnceCreateItOnce() async throws {
        let url = TestPostgres.fresh("race")
        defer { TestPostgres.drop(url) }
        let opened = await withTaskGroup(of: String?.self) { group in
            for _ in 0..<6 {
                group.addTask { do { _ = try HistoryStore.open(url); return nil } catch { return "\(error)" } }
            }
            var errors: [String] = []
            for await e in group { if let e { errors.append(e) } }
            return errors
        }
        #expect(opened.isEmpty, "\(opened)")
        let pg = try #require(try HistoryStore.open(url).backend as? PostgresBackend)
        let n = try pg.read { s in try s.rows("SELECT COUNT(*) AS n FROM assay_meta").first!.int("n") }
        #expect(n == 1)
    }

    @Test func refusesAForeignSchemaAndANewerVersionUntouched() throws {
        let url = TestPostgres.fresh("foreign")
        defer { TestPostgres.drop(url) }
        let pg = try #require(try HistoryStore.open(url).backend as? PostgresBackend)
        let schema = pg.target.schema
        // Another application's schema: tables, no assay_meta.
        try pg.write { s in
            for t in ["assay_meta", "runs", "results", "findings", "files", "divergences", "baselines", "bench"] { try s.execute("DROP TABLE \(t)") }
            try s.execute("CREATE TABLE customers (id INTEGER)")
        }
        #expect {
            _ = try HistoryStore.open(url)
        } throws: { ($0 as? HistoryError)?.description.contains("a PostgreSQL schema, but not an Assay history (tables: customers)") == true }
        let tables = try pg.read { s in try pg.tableNames(s) }
        #expect(tables == ["customers"], "refused without creating anything in \(schema)")

        // A newer schema version.
        _ = try pg.write { s in try s.execute("DROP TABLE customers") }
        let store = try HistoryStore.open(url)
        try store.beginRun(RunInfo(id: "r", shard: 0, shards: 1, inventory: "/i", startedAt: "t", finishedAt: nil, host: "h", entries: 1),
                           inventorySHA256: "x", toolVersion: "t")
        _ = try pg.write { s in try s.execute("UPDATE assay_meta SET value = '99' WHERE key = 'schema_version'") }
        #expect {
            _ = try HistoryStore.open(url)
        } throws: { ($0 as? HistoryError)?.description.contains("schema version 99 is newer") == true }
        let runs = try pg.read { s in try s.rows("SELECT id FROM runs").map { try $0.string("id") } }
        #expect(runs == ["r"])
        // Not there at all, when it must be.
        #expect {
            _ = try HistoryStore.open(TestPostgres.fresh("absent"), create: false)
        } throws: { ($0 as? HistoryError)?.description.contains("no Assay history here") == true }
    }

    /// scripts/postgres.sh serves TLS with a self-signed certificate: `require` and `prefer`
    /// encrypt without checking it, `verify-full` refuses it.
    @Test func encryptsWhenAskedAndRefusesAnUntrustedCertificate() throws {
        let schema = "t_tls_\(UUID().uuidString.prefix(8).lowercased())"
        defer { TestPostgres.drop("\(TestPostgres.url!)?schema=\(schema)&sslmode=disable") }
        for mode in ["require", "prefer"] {
            let pg = try #require(try HistoryStore.open("\(TestPostgres.url!)?schema=\(schema)&sslmode=\(mode)").backend as? PostgresBackend)
            let ssl = try pg.read { s in try s.rows("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").first?.int("ssl") }
            #expect(ssl == 1, "sslmode=\(mode) connection is encrypted")
        }
        #expect {
            _ = try HistoryStore.open("\(TestPostgres.url!)?schema=\(schema)&sslmode=verify-full")
        } throws: { error in
            let d = (error as? HistoryError)?.description ?? ""
            return d.contains("cannot connect") && d.lowercased().contains("certificate")
        }
    }

    /// Over the server's Unix socket (scripts/postgres.sh puts it in ASSAY_PG_DIR).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["ASSAY_PG_DIR"] != nil))
    func connectsOverTheUnixSocket() throws {
        let tcp = try PostgresLocation(url: TestPostgres.url!)
        let dir = ProcessInfo.processInfo.environment["ASSAY_PG_DIR"]!
        let url = "postgres://\(tcp.user):\(tcp.password ?? "")@:\(tcp.port)/\(tcp.database)?host=\(dir)&schema=t_sock_\(UUID().uuidString.prefix(8).lowercased())"
        defer { TestPostgres.drop(url) }
        let store = try HistoryStore.open(url)
        #expect(store.path.hasPrefix("postgres://\(tcp.user)@:\(tcp.port)/\(tcp.database)?host=\(dir)"))
        try store.beginRun(RunInfo(id: "r", shard: 0, shards: 1, inventory: "/i", startedAt: "t", finishedAt: nil, host: "h", entries: 1),
                           inventorySHA256: "s", toolVersion: "t")
        try store.record(result("x"), run: "r")
        #expect(try HistoryStore.open(url, create: false).results(run: "r") == [result("x")])
    }

    /// A sweep holds its connection for hours: one the server drops is replaced, and the
    /// statement that found it gone runs again.
    @Test func reconnectsWhenTheServerDropsTheConnection() throws {
        let url = TestPostgres.fresh("drop")
        defer { TestPostgres.drop(url) }
        let store = try HistoryStore.open(url)
        try store.beginRun(RunInfo(id: "r", shard: 0, shards: 1, inventory: "/i", startedAt: "t", finishedAt: nil, host: "h", entries: 1),
                           inventorySHA256: "s", toolVersion: "t")
        let pg = try #require(store.backend as? PostgresBackend)
        let pid = try pg.read { s in try s.rows("SELECT pg_backend_pid() AS pid").first!.int("pid") }
        let admin = try #require(try HistoryStore.open(url).backend as? PostgresBackend)
        let killed = try admin.read { s in try s.rows("SELECT pg_terminate_backend(CAST(? AS INTEGER)) AS done", [pid]).first!.int("done") }
        #expect(killed == 1)
        Thread.sleep(forTimeInterval: 0.2)
        try store.record(result("x"), run: "r")
        #expect(try store.results(run: "r") == [result("x")])
        let newPid = try pg.read { s in try s.rows("SELECT pg_backend_pid() AS pid").first!.int("pid") }
        #expect(newPid != pid)
    }

    @Test func mergesBothWaysBetweenSQLiteAndPostgreSQL() throws {
        let url = TestPostgres.fresh("merge")
        defer { TestPostgres.drop(url) }
        let dir = try tempDir()
        let shard = try HistoryStore(path: dir.appendingPathComponent("shard.sqlite").path)
        try shard.beginRun(RunInfo(id: "r", shard: 1, shards: 2, inventory: "/i", startedAt: "2026-11-23T00:00:01Z", finishedAt: nil, host: "h", entries: 1),
                           inventorySHA256: "s", toolVersion: "t")
        try shard.record(result("y"), run: "r")
        try shard.finishRun("r", shard: 1, at: "2026-11-23T01:00:00Z")
        let server = try HistoryStore.open(url)
        try server.beginRun(RunInfo(id: "r", shard: 0, shards: 2, inventory: "/i", startedAt: "2026-11-23T00:00:00Z", finishedAt: nil, host: "h", entries: 1),
                            inventorySHA256: "s", toolVersion: "t")
        try server.record(result("x"), run: "r")
        #expect(try server.merge(from: shard) == 1)
        #expect(try server.merge(from: shard) == 0)
        #expect(try server.results(run: "r") == [result("x"), result("y")])
        #expect(try server.runs().map { "\($0.shard) \($0.finishedAt ?? "-")" } == ["0 -", "1 2026-11-23T01:00:00Z"])
        // And back: the server's history into a local file.
        let local = try HistoryStore(path: dir.appendingPathComponent("local.sqlite").path)
        #expect(try local.merge(from: server) == 2)
        #expect(try local.results(run: "r") == server.results(run: "r"))
    }
}
