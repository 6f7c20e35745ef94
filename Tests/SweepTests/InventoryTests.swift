import Foundation
import Testing
import GRDB
import AssayCommon
import Scan
@testable import History
@testable import Sweep

func tempDir() throws -> URL {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("assay-sweep-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
    return d
}

func inventory(_ yaml: String) throws -> (URL, Result<Inventory, SweepError>) {
    let dir = try tempDir()
    let url = dir.appendingPathComponent("inventory.yaml")
    try yaml.write(to: url, atomically: true, encoding: .utf8)
    do { return (url, .success(try Inventory.load(url))) } catch { return (url, .failure(error)) }
}

@Suite struct InventoryTests {
    @Test func parsesEntriesDefaultsAndResolvesPathsAgainstTheFile() throws {
        let (url, r) = try inventory("""
            defaults:
              suites: [suites/a.jsonl]
              policy: policy.json
            entries:
              - id: one
                base: models/base
                adapters: [adapters/x, /abs/y]
                owner: team
                tags: [prod, eu]
              - id: two
                base: models/base
                tuned: models/ft
                suites: s2.jsonl
            """)
        let inv = try r.get()
        let dir = url.deletingLastPathComponent().standardizedFileURL.path
        #expect(inv.entries.map(\.id) == ["one", "two"])
        #expect(inv.entries[0].adapters.map(\.path) == ["\(dir)/adapters/x", "/abs/y"])
        #expect(inv.entries[0].tuned == nil)
        #expect(inv.entries[0].suites.map(\.path) == ["\(dir)/suites/a.jsonl"])
        #expect(inv.entries[0].policy?.path == "\(dir)/policy.json")
        #expect(inv.entries[0].tags == ["prod", "eu"])
        #expect(inv.entries[1].suites.map(\.path) == ["\(dir)/s2.jsonl"])
        #expect(inv.entries[1].tuned?.path == "\(dir)/models/ft")
        #expect(inv.entries[1].line == 10)
    }

    func expectError(_ yaml: String, _ fragments: [String]) throws {
        let (url, r) = try inventory(yaml)
        guard case let .failure(e) = r else { Issue.record("accepted: \(yaml)"); return }
        let text = e.description
        #expect(text.contains(url.path), "names the file: \(text)")
        for f in fragments { #expect(text.contains(f), "\(text) lacks \(f)") }
    }

    @Test func yamlSyntaxErrorGivesLineAndColumn() throws {
        try expectError("entries:\n  - id: a\n    base: [unclosed\n", ["line 4, column 1"])
    }

    @Test func duplicateIDIsNamedWithBothLines() throws {
        try expectError("entries:\n  - id: a\n    base: b\n    tuned: t\n  - id: a\n    base: b\n    tuned: t\n",
                        [":5:", "duplicate entry id `a`", "first at line 2"])
    }

    @Test func tunedAndAdaptersTogetherIsRefused() throws {
        try expectError("entries:\n  - id: a\n    base: b\n    tuned: t\n    adapters: [x]\n", ["`a` has both `tuned` and `adapters`"])
    }

    @Test func otherMistakesAreNamed() throws {
        try expectError("entries:\n  - id: a\n    base: b\n", ["needs `tuned` or `adapters`"])
        try expectError("entries:\n  - id: a\n    base: b\n    tuned: t\n    tunned: x\n", ["unknown entry key `tunned`"])
        try expectError("entrys: []\n", ["unknown top-level key `entrys`"])
        try expectError("- a\n- b\n", ["top level must be a mapping"])
        try expectError("entries:\n  - base: b\n    tuned: t\n", ["has no `id`"])
        try expectError("entries: {a: 1}\n", ["`entries` must be a list"])
        try expectError("", ["top level must be a mapping"])
    }

    /// Base groups stay whole, shards are disjoint and cover everything, and the assignment
    /// depends only on the inventory.
    @Test func shardsKeepBasesTogetherAndCoverEveryEntry() throws {
        var yaml = "entries:\n"
        let bases = ["b1", "b1", "b1", "b2", "b3", "b3", "b4", "b5", "b5", "b5", "b5"]
        for (i, b) in bases.enumerated() { yaml += "  - {id: e\(i), base: \(b), tuned: t\(i)}\n" }
        let inv = try inventory(yaml).1.get()
        for n in 1...5 {
            let shards = (0..<n).map { inv.shard($0, of: n) }
            #expect(shards.flatMap { $0.map(\.id) }.sorted() == inv.entries.map(\.id).sorted())
            for s in shards {
                for b in Set(s.map(\.base)) {
                    #expect(s.filter { $0.base == b }.count == inv.entries.filter { $0.base == b }.count, "base \(b.lastPathComponent) split")
                }
            }
            #expect((0..<n).map { inv.shard($0, of: n).map(\.id) } == shards.map { $0.map(\.id) })
        }
        // Largest group first onto the emptiest shard: 2 shards get {b5, b2, b4} and {b1, b3}.
        #expect(inv.shard(0, of: 2).map(\.id) == ["e3", "e6", "e7", "e8", "e9", "e10"])
    }
}

@Suite struct HistoryStoreTests {
    func result(_ id: String, verdict: Verdict = .pass) -> EntryResult {
        EntryResult(entryID: id, status: .scanned, verdict: verdict, key: "k-\(id)", message: nil, seconds: 1, finishedAt: "2026-11-23T00:00:00Z",
                    reusedFrom: nil, owner: "o", tags: ["t"], report: "{}",
                    findings: [StoredFinding(kind: .categoryShift, severity: .high, title: "x", trigger: nil, category: "c", value: 0.3, pValue: 0.001)],
                    files: [StoredFile(role: .tuned, path: "model.safetensors", sha256: "ab")],
                    divergences: [StoredDivergence(category: "c", n: 4, mean: 0.1, ciLow: 0.05, ciHigh: 0.15)])
    }

    @Test func recordsAndReadsBackAResultWithItsRows() throws {
        let path = try tempDir().appendingPathComponent("h.sqlite").path
        let s = try HistoryStore(path: path)
        try s.beginRun(RunInfo(id: "r1", shard: 0, shards: 1, inventory: "/i.yaml", startedAt: "2026-11-23T00:00:00Z", finishedAt: nil, host: "h", entries: 1),
                       inventorySHA256: "x", toolVersion: "t")
        try s.record(result("a"), run: "r1")
        let back = try s.results(run: "r1")
        #expect(back == [result("a")])
        #expect(try s.lastGood(entry: "a", key: "k-a")?.run == "r1")
        #expect(try s.lastGood(entry: "a", key: "other") == nil)
        // Reopening runs no migration twice and keeps the rows.
        #expect(try HistoryStore(path: path).results(run: "r1") == [result("a")])
    }

    /// Shards starting at once on one fresh file: the migration runs once, under the write lock.
    @Test func openingAFreshHistoryFromManyConnectionsAtOnceCreatesItOnce() async throws {
        for round in 0..<5 {
            let path = try tempDir().appendingPathComponent("race\(round).sqlite").path
            let errors = await withTaskGroup(of: String?.self) { group in
                for _ in 0..<6 { group.addTask { do { _ = try HistoryStore(path: path); return nil } catch { return "\(error)" } } }
                var out: [String] = []
                for await e in group { if let e { out.append(e) } }
                return out
            }
            #expect(errors.isEmpty, "\(errors)")
        }
    }

    /// Histories written by earlier builds (GRDB's migrator, which left `grdb_migrations`) still open.
    @Test func opensAHistoryWrittenByTheEarlierMigrator() throws {
        let path = try tempDir().appendingPathComponent("old.sqlite").path
        let q = try DatabaseQueue(path: path)
        try q.write { db in
            try db.execute(sql: "CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
            try db.execute(sql: "INSERT INTO grdb_migrations VALUES ('v1')")
            for sql in HistoryStore.migrations(.sqlite).flatMap(\.1) { try db.execute(sql: sql) }
            try db.execute(sql: "INSERT INTO results VALUES ('r', 'a', 'scanned', 'pass', 'k', NULL, 1.5, 't', NULL, NULL, '[]', NULL)")
        }
        try q.close()
        #expect(try HistoryStore(path: path, create: false).results(run: "r").map(\.verdict) == [.pass])
    }

    @Test func refusesAFileThatIsNotADatabaseAndLeavesItAlone() throws {
        let url = try tempDir().appendingPathComponent("h.sqlite")
        let junk = Data("this is not a database, just text that is long enough to be read as a header".utf8)
        try junk.write(to: url)
        #expect {
            _ = try HistoryStore(path: url.path)
        } throws: { ($0 as? HistoryError)?.description.contains("not an SQLite database") == true }
        #expect(try Data(contentsOf: url) == junk)
    }

    @Test func refusesANewerSchemaWithoutTouchingIt() throws {
        let url = try tempDir().appendingPathComponent("h.sqlite")
        _ = try HistoryStore(path: url.path)
        let q = try DatabaseQueue(path: url.path)
        try q.write { try $0.execute(sql: "UPDATE assay_meta SET value = '99' WHERE key = 'schema_version'") }
        try q.close()
        let before = try Data(contentsOf: url)
        #expect {
            _ = try HistoryStore(path: url.path)
        } throws: { ($0 as? HistoryError)?.description.contains("schema version 99 is newer") == true }
        #expect(try Data(contentsOf: url) == before)
    }

    @Test func refusesAnotherApplicationsDatabase() throws {
        let url = try tempDir().appendingPathComponent("other.sqlite")
        let q = try DatabaseQueue(path: url.path)
        try q.write { try $0.execute(sql: "CREATE TABLE customers (id INTEGER)") }
        try q.close()
        #expect {
            _ = try HistoryStore(path: url.path)
        } throws: { ($0 as? HistoryError)?.description.contains("not an Assay history (tables: customers)") == true }
    }

    @Test func mergeAddsNewRowsAndIsIdempotent() throws {
        let dir = try tempDir()
        let a = try HistoryStore(path: dir.appendingPathComponent("a.sqlite").path)
        let b = try HistoryStore(path: dir.appendingPathComponent("b.sqlite").path)
        for (s, shard, e) in [(a, 0, "x"), (b, 1, "y")] {
            try s.beginRun(RunInfo(id: "r", shard: shard, shards: 2, inventory: "/i", startedAt: "2026-11-23T00:00:0\(shard)Z", finishedAt: nil, host: "h", entries: 1),
                           inventorySHA256: "s", toolVersion: "t")
            try s.record(result(e), run: "r")
            try s.finishRun("r", shard: shard, at: "2026-11-23T01:00:00Z")
        }
        let m = try HistoryStore(path: dir.appendingPathComponent("m.sqlite").path)
        #expect(try m.merge(from: a) == 1)
        #expect(try m.merge(from: b) == 1)
        #expect(try m.merge(from: b) == 0)
        #expect(try m.results(run: "r") == [result("x"), result("y")])
        #expect(try m.runs().map(\.shard) == [0, 1])
    }

    @Test func diffNamesFilesVerdictsFindingsAndMovedDivergence() throws {
        let old = result("a")
        var new = result("a", verdict: .fail)
        new.files = [StoredFile(role: .tuned, path: "model.safetensors", sha256: "cd"), StoredFile(role: .adapter(nil), path: "a.safetensors", sha256: "ef")]
        new.findings = [StoredFinding(kind: .triggerBackdoor, severity: .critical, title: "t", trigger: "cf", category: nil, value: 1, pValue: nil)]
        new.divergences = [StoredDivergence(category: "c", n: 4, mean: 0.3, ciLow: 0.25, ciHigh: 0.35)]
        let kinds = SweepDiff.changes(entry: "a", old, new).map(\.kind.rawValue)
        #expect(kinds == ["file_added", "file_rehashed", "verdict", "finding_new", "finding_resolved", "divergence_moved"])
        // Within each other's intervals: not a move.
        var near = result("a")
        near.divergences = [StoredDivergence(category: "c", n: 4, mean: 0.12, ciLow: 0.07, ciHigh: 0.17)]
        #expect(SweepDiff.changes(entry: "a", old, near).isEmpty)
    }
}
