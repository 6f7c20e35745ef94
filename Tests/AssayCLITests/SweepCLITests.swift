import Foundation
import Testing
import AssayCommon
import Scan
@testable import History
@testable import Sweep

/// `assay sweep` end to end on an inventory of the tiny scan and discovery pairs
/// (Tests/Fixtures/sweep/inventory.yaml), copied to a temporary directory so entries can change.
@Suite(.serialized) struct SweepCLITests {
    /// A private copy of the fixtures: <tmp>/scan, <tmp>/discovery, <tmp>/sweep/inventory.yaml.
    func workspace() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-sweep-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for sub in ["scan", "discovery", "sweep"] {
            try FileManager.default.copyItem(at: repoFixtures.appendingPathComponent(sub), to: dir.appendingPathComponent(sub))
        }
        return dir
    }

    func sweep(_ ws: URL, _ extra: [String] = [], db: String = "h.sqlite") throws -> RunResult {
        try assay(["sweep", ws.appendingPathComponent("sweep/inventory.yaml").path, "--db", ws.appendingPathComponent(db).path,
                   "--threads", "1"] + extra)
    }

    func results(_ ws: URL, db: String = "h.sqlite") throws -> (runs: [String], last: [EntryResult]) {
        let s = try HistoryStore(path: ws.appendingPathComponent(db).path, create: false)
        let ids = try s.runIDs()
        return (ids, try ids.last.map { try s.results(run: $0) } ?? [])
    }

    static let expected: [String: Verdict] = [
        "clean-ft": .pass, "trigger-ft": .fail, "sabotage-ft": .fail, "base-self": .pass, "disc-clean": .pass, "disc-rare-token": .pass,
    ]

    @Test func sweepGivesTheScanVerdictsRecordsAnErrorAndSkipsWhatDidNotChange() throws {
        let ws = try workspace()
        let junit = ws.appendingPathComponent("junit.xml")
        let r = try sweep(ws, ["--junit", junit.path])
        #expect(r.status == 1, "a failing entry fails the sweep: \(r.stdout)\(r.stderr)")
        let (_, rs) = try results(ws)
        #expect(rs.count == 7)
        for x in rs where x.entryID != "broken" {
            #expect(x.status == .scanned)
            #expect(x.verdict == Self.expected[x.entryID], "\(x.entryID): \(x.verdict?.rawValue ?? "nil")")
        }
        let broken = try #require(rs.first { $0.entryID == "broken" })
        #expect(broken.status == .error && broken.message?.contains("does-not-exist: no such directory") == true)
        #expect(rs.first { $0.entryID == "trigger-ft" }!.findings.contains { $0.kind == .triggerBackdoor && $0.trigger == "cf" })
        #expect(rs.first { $0.entryID == "sabotage-ft" }!.findings.contains { $0.kind == .categoryShift && $0.category == "code_security" })
        #expect(rs.first { $0.entryID == "base-self" }!.findings.isEmpty)
        // One line per entry on stdout, then the summary.
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.filter { $0.hasPrefix("PASS ") }.count == 4 && lines.filter { $0.hasPrefix("FAIL ") }.count == 2)
        #expect(lines.contains { $0.hasPrefix("ERROR broken: ") })
        #expect(r.stdout.contains("base outputs reused for"))
        // JUnit: every entry a test case, failures and errors where they belong.
        let xml = try String(contentsOf: junit, encoding: .utf8)
        #expect(xml.contains("tests=\"7\" failures=\"2\" errors=\"1\""))
        #expect(xml.contains("<testcase classname=\"assay.sweep\" name=\"trigger-ft\""))
        #expect(xml.components(separatedBy: "<failure ").count == 3 && xml.components(separatedBy: "<error ").count == 2)

        // Nothing changed: every entry that has a good result is skipped, with the same outcome.
        let again = try sweep(ws)
        #expect(again.status == 1)
        let (runs, rs2) = try results(ws)
        #expect(runs.count == 2)
        for (a, b) in zip(rs, rs2) where a.entryID != "broken" {
            #expect(b.status == .skipped && b.reusedFrom == runs[0])
            #expect(b.verdict == a.verdict && b.findings == a.findings && b.key == a.key)
        }
        #expect(rs2.first { $0.entryID == "broken" }?.status == .error, "an error is retried, not skipped")
        #expect(again.stdout.contains("6 unchanged and skipped"))
        #expect(again.stdout.contains("no changes from"))
        // --force rescans.
        _ = try sweep(ws, ["--force"])
        #expect(try results(ws).last.filter { $0.status == .scanned }.count == 6)
    }

    @Test func changingOneFileRescansExactlyThatEntryAndDiffNamesIt() throws {
        let ws = try workspace()
        _ = try sweep(ws)
        // The sabotage fine-tune's weights are replaced by the planted trigger's.
        let target = ws.appendingPathComponent("scan/sabotage/model.safetensors")
        try FileManager.default.removeItem(at: target)
        try FileManager.default.copyItem(at: ws.appendingPathComponent("scan/trigger-token/model.safetensors"), to: target)
        let r = try sweep(ws)
        let (_, rs) = try results(ws)
        #expect(rs.filter { $0.status == .scanned }.map(\.entryID) == ["sabotage-ft"])
        #expect(rs.filter { $0.status == .skipped }.count == 5)
        #expect(rs.first { $0.entryID == "sabotage-ft" }!.findings.contains { $0.kind == .triggerBackdoor && $0.trigger == "cf" })
        for text in [r.stdout, try assay(["sweep", "diff", ws.appendingPathComponent("sweep/inventory.yaml").path,
                                          "--db", ws.appendingPathComponent("h.sqlite").path]).stdout] {
            #expect(text.contains("sabotage-ft: tuned model.safetensors changed"), "\(text)")
            #expect(text.contains("sabotage-ft: new high trigger_backdoor"))
            #expect(text.contains("sabotage-ft: resolved high category_shift"))
            #expect(!text.contains("clean-ft:"), "only the changed entry")
        }
    }

    /// Reusing the base's outputs across entries changes no result.
    @Test func sharedBaseOutputsGiveTheSameResultsAsNone() throws {
        let ws = try workspace()
        _ = try sweep(ws, ["--base-cache-mib", "0"], db: "none.sqlite")
        let shared = try sweep(ws, [], db: "shared.sqlite")
        #expect(shared.stdout.contains("base outputs reused for"))
        let a = try results(ws, db: "none.sqlite").last, b = try results(ws, db: "shared.sqlite").last
        #expect(a.count == 7 && a.count == b.count)
        for (x, y) in zip(a, b) {
            #expect(x.sameOutcome(as: y), "\(x.entryID)")
            #expect(strip(x.report) == strip(y.report), "\(x.entryID): report differs with base outputs reused")
        }
    }

    func strip(_ report: String?) -> String? {
        report?.split(separator: "\n").filter { !$0.contains("created_at") }.joined(separator: "\n")
    }

    @Test func killedSweepResumesToTheSameHistory() throws {
        let ws = try workspace()
        _ = try sweep(ws, [], db: "straight.sqlite")
        let p = Process()
        p.executableURL = assayBinary()
        p.arguments = ["sweep", ws.appendingPathComponent("sweep/inventory.yaml").path, "--db", ws.appendingPathComponent("killed.sqlite").path, "--threads", "1"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // kill -9 once two entries are committed.
        let deadline = Date().addingTimeInterval(120)
        var recorded = 0
        while Date() < deadline && p.isRunning {
            if FileManager.default.fileExists(atPath: ws.appendingPathComponent("killed.sqlite").path),
               let s = try? HistoryStore(path: ws.appendingPathComponent("killed.sqlite").path, create: false, readOnly: true),
               let id = try? s.runIDs().last, let n = try? s.results(run: id).count {
                recorded = n
                if n >= 2 { break }
            }
            usleep(10_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal, "killed mid-sweep")
        let partial = try results(ws, db: "killed.sqlite")
        #expect(partial.last.count >= 2 && partial.last.count < 7, "killed with \(partial.last.count) of 7 recorded (saw \(recorded))")
        let resumed = try sweep(ws, [], db: "killed.sqlite")
        #expect(resumed.stderr.contains("resuming run \(partial.runs.last ?? "?")"), "\(resumed.stderr)")
        let (runs, after) = try results(ws, db: "killed.sqlite")
        #expect(runs == partial.runs, "one run, resumed")
        let straight = try results(ws, db: "straight.sqlite").last
        #expect(after.count == straight.count)
        for (x, y) in zip(after, straight) { #expect(x.sameOutcome(as: y), "\(x.entryID) differs after resuming") }
    }

    @Test func shardsRunAsSeparateProcessesAndMergeToTheUnshardedResults() throws {
        let ws = try workspace()
        _ = try sweep(ws, [], db: "all.sqlite")
        // Shard 0 from a Kubernetes Indexed Job's variables, shard 1 from a Slurm array's (1-based).
        let inv = ws.appendingPathComponent("sweep/inventory.yaml").path
        let k8s = try assay(["sweep", inv, "--db", ws.appendingPathComponent("s0.sqlite").path, "--threads", "1"],
                            environment: ["JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": "2", "ASSAY_RUN_ID": "nightly-1"])
        let slurm = try assay(["sweep", inv, "--db", ws.appendingPathComponent("s1.sqlite").path, "--threads", "1"],
                              environment: ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_JOB_ID": "77"])
        #expect(k8s.stderr.contains("shard 1 of 2") && slurm.stderr.contains("shard 2 of 2"), "\(k8s.stderr)\(slurm.stderr)")
        let s0 = try results(ws, db: "s0.sqlite").last, s1 = try results(ws, db: "s1.sqlite").last
        #expect(!s0.isEmpty && !s1.isEmpty && s0.count + s1.count == 7)
        #expect(Set(s0.map(\.entryID)).isDisjoint(with: s1.map(\.entryID)))
        // Entries on one base stay on one shard.
        #expect(Set(s1.map(\.entryID)) == ["disc-clean", "disc-rare-token"] || Set(s0.map(\.entryID)) == ["disc-clean", "disc-rare-token"])
        let m = try assay(["sweep", "merge", "--into", ws.appendingPathComponent("merged.sqlite").path,
                           ws.appendingPathComponent("s0.sqlite").path, ws.appendingPathComponent("s1.sqlite").path])
        #expect(m.status == 0, "\(m.stderr)")
        let merged = try HistoryStore(path: ws.appendingPathComponent("merged.sqlite").path, create: false)
        let mergedResults = try merged.runIDs().flatMap { try merged.results(run: $0) }.sorted { $0.entryID < $1.entryID }
        let all = try results(ws, db: "all.sqlite").last
        #expect(mergedResults.count == all.count)
        for (x, y) in zip(mergedResults, all) { #expect(x.sameOutcome(as: y), "\(x.entryID) differs sharded") }
    }

    static let postgres = ProcessInfo.processInfo.environment["ASSAY_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 }

    /// The shared history: two shards as concurrent processes write one PostgreSQL history, which
    /// then holds what an unsharded sweep into SQLite holds; a second sweep skips from it; diff,
    /// report and merge read it.
    @Test(.enabled(if: postgres != nil, "needs ASSAY_TEST_POSTGRES (scripts/test.sh starts a server)"))
    func concurrentShardsIntoPostgreSQLHoldWhatSQLiteHolds() throws {
        let ws = try workspace()
        let url = "\(Self.postgres!)?schema=t_cli_\(UUID().uuidString.prefix(8).lowercased())&sslmode=disable"
        defer {
            if let pg = (try? HistoryStore.open(url))?.backend as? PostgresBackend {
                _ = try? pg.write { s in try s.execute("DROP SCHEMA \"\(pg.target.schema)\" CASCADE") }
            }
        }
        _ = try sweep(ws, [], db: "all.sqlite")
        let inv = ws.appendingPathComponent("sweep/inventory.yaml").path
        // The password comes from $PGPASSWORD, not the command line.
        var parts = URLComponents(string: url)!
        let password = parts.password!
        parts.password = nil
        let shown = parts.string!
        final class Outcomes: @unchecked Sendable { let lock = NSLock(); var runs = [RunResult?](repeating: nil, count: 2) }
        let outcomes = Outcomes()
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let r = try? assay(["sweep", inv, "--db", shown, "--threads", "1"],
                               environment: ["JOB_COMPLETION_INDEX": "\(i)", "JOB_COMPLETIONS": "2", "ASSAY_RUN_ID": "nightly-pg", "PGPASSWORD": password])
            outcomes.lock.withLock { outcomes.runs[i] = r }
        }
        // One shard holds the failing entries (exit 1), the other only passing ones (exit 0).
        #expect(Set(outcomes.runs.map { $0?.status ?? -1 }) == [0, 1], "\(outcomes.runs.map { "\($0?.stdout ?? "")\($0?.stderr ?? "")" })")
        for r in outcomes.runs { #expect(r?.stderr.contains("of 2") == true, "\(r?.stderr ?? "")") }
        let store = try HistoryStore.open(url, create: false)
        #expect(try store.runIDs() == ["nightly-pg"])
        #expect(try Set(store.runs().map(\.shard)) == [0, 1])
        let pg = try store.results(run: "nightly-pg")
        let lite = try results(ws, db: "all.sqlite").last
        #expect(pg.count == 7 && pg.count == lite.count)
        for (x, y) in zip(pg, lite) { #expect(x.sameOutcome(as: y) && strip(x.report) == strip(y.report), "\(x.entryID) differs in PostgreSQL") }

        // Nothing changed: a second sweep into the server skips every good entry.
        let again = try assay(["sweep", inv, "--db", url, "--threads", "1"], environment: ["ASSAY_DB": "ignored.sqlite"])
        #expect(again.status == 1 && again.stdout.contains("6 unchanged and skipped") && again.stdout.contains("no changes from"), "\(again.stdout)\(again.stderr)")
        // $ASSAY_DB names the history when --db is not given.
        let diff = try assay(["sweep", "diff", inv], environment: ["ASSAY_DB": url])
        #expect(diff.status == 0 && diff.stdout.contains("no changes"), "\(diff.stdout)\(diff.stderr)")
        let out = ws.appendingPathComponent("dash")
        let report = try assay(["sweep", "report", "--db", url, "--out", out.path])
        #expect(report.status == 0 && FileManager.default.fileExists(atPath: out.appendingPathComponent("index.html").path), "\(report.stderr)")
        // And the server's history folds into a local file.
        let local = ws.appendingPathComponent("local.sqlite").path
        let m = try assay(["sweep", "merge", "--into", local, url])
        #expect(m.status == 0 && m.stdout.contains("14 entry results added"), "\(m.stdout)\(m.stderr)")
        let copy = try HistoryStore(path: local, create: false)
        #expect(try copy.runIDs() == store.runIDs())
        for run in try store.runIDs() { #expect(try copy.results(run: run) == store.results(run: run)) }
    }

    @Test func approvedBaselineCatchesSwappedWeights() throws {
        let ws = try workspace()
        let inv = ws.appendingPathComponent("sweep/inventory.yaml").path
        let db = ws.appendingPathComponent("h.sqlite").path
        let a = try assay(["baseline", "approve", "clean-ft", "--inventory", inv, "--db", db, "--by", "alice"])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("approved clean-ft") && a.stdout.contains("by alice"))
        let show = try assay(["baseline", "show", "clean-ft", "--inventory", inv, "--db", db])
        #expect(show.stdout.contains("by alice") && show.stdout.contains("tuned model.safetensors"))
        _ = try sweep(ws)
        #expect(try results(ws).last.first { $0.entryID == "clean-ft" }!.findings.isEmpty, "unchanged model: no drift")
        // Another fine-tune's weights in the deployed directory.
        let target = ws.appendingPathComponent("scan/clean/model.safetensors")
        try FileManager.default.removeItem(at: target)
        try FileManager.default.copyItem(at: ws.appendingPathComponent("scan/sabotage/model.safetensors"), to: target)
        _ = try sweep(ws)
        let drift = try #require(try results(ws).last.first { $0.entryID == "clean-ft" }?.findings.first { $0.kind == .baselineDrift })
        #expect(drift.severity == .high)
        #expect(drift.title.contains("tuned: model.safetensors"))
        #expect(try assay(["baseline", "approve", "nope", "--inventory", inv, "--db", db]).status == 2)
    }

    /// Approving runs the model in a worker under limits: a breach is exit 2 naming the limit, and
    /// nothing is approved.
    @Test func approvalUnderItsLimitsRecordsNothingOnABreach() throws {
        let ws = try workspace()
        let inv = ws.appendingPathComponent("sweep/inventory.yaml").path
        let db = ws.appendingPathComponent("h.sqlite").path
        let r = try assay(["baseline", "approve", "clean-ft", "--inventory", inv, "--db", db, "--memory-limit", "64M"])
        #expect(r.status == 2, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("approval process: exceeded the address-space limit of 64 MiB"), "\(r.stderr)")
        let show = try assay(["baseline", "show", "clean-ft", "--inventory", inv, "--db", db])
        #expect(show.status == 2 && show.stderr.contains("no baseline approved"), "\(show.stdout)\(show.stderr)")
        #expect(try assay(["baseline", "approve", "clean-ft", "--inventory", inv, "--db", db, "--time-limit", "soon"]).status == 4)
    }

    @Test func dashboardHasEveryEntryAndATrendChart() throws {
        let ws = try workspace()
        _ = try sweep(ws)
        _ = try sweep(ws, ["--force"])
        let out = ws.appendingPathComponent("dash")
        let r = try assay(["sweep", "report", ws.appendingPathComponent("sweep/inventory.yaml").path, "--db", ws.appendingPathComponent("h.sqlite").path,
                           "--out", out.path])
        #expect(r.status == 0, "\(r.stderr)")
        let html = try String(contentsOf: out.appendingPathComponent("index.html"), encoding: .utf8)
        for id in Self.expected.keys { #expect(html.contains("id=\"e-\(id)\"")) }
        #expect(html.contains("<svg") && html.contains("<polyline") && html.contains("code_security"))
        #expect(!html.contains("<script"), "self-contained, no script")
    }

    @Test func badInputStopsTheSweepWithExit2AndTouchesNoHistory() throws {
        let ws = try workspace()
        let inv = ws.appendingPathComponent("sweep/inventory.yaml")
        _ = try sweep(ws)
        let db = ws.appendingPathComponent("h.sqlite")
        let before = try Data(contentsOf: db)

        let bad = ws.appendingPathComponent("sweep/bad.yaml")
        try "entries:\n  - id: a\n    base: [x\n".write(to: bad, atomically: true, encoding: .utf8)
        var r = try assay(["sweep", bad.path, "--db", db.path])
        #expect(r.status == 2 && r.stderr.contains("bad.yaml") && r.stderr.contains("line 4, column 1"), "\(r.stderr)")
        try "entries:\n  - {id: a, base: ../scan/base, tuned: ../scan/clean}\n  - {id: a, base: ../scan/base, tuned: ../scan/clean}\n"
            .write(to: bad, atomically: true, encoding: .utf8)
        r = try assay(["sweep", bad.path, "--db", db.path])
        #expect(r.status == 2 && r.stderr.contains("duplicate entry id `a`"))
        try "entries:\n  - {id: a, base: ../scan/base, tuned: ../scan/clean, adapters: [x]}\n".write(to: bad, atomically: true, encoding: .utf8)
        r = try assay(["sweep", bad.path, "--db", db.path])
        #expect(r.status == 2 && r.stderr.contains("has both `tuned` and `adapters`"))
        #expect(try Data(contentsOf: db) == before, "history untouched by a refused inventory")

        let notDB = ws.appendingPathComponent("notes.sqlite")
        try Data(String(repeating: "not a database ", count: 20).utf8).write(to: notDB)
        r = try assay(["sweep", inv.path, "--db", notDB.path])
        #expect(r.status == 2 && r.stderr.contains("notes.sqlite") && r.stderr.contains("not an SQLite database"), "\(r.stderr)")
        // An unreachable PostgreSQL server: exit 2, the server named, the password not.
        r = try assay(["sweep", inv.path, "--db", "postgres://assay:hunter2@127.0.0.1:1/assay?connect_timeout=5"])
        #expect(r.status == 2 && r.stderr.contains("postgres://assay@127.0.0.1:1/assay") && r.stderr.contains("cannot connect"), "\(r.stderr)")
        #expect(!r.stderr.contains("hunter2"))

        // Nothing scannable: exit 3.
        try "entries:\n  - {id: gone, base: ../scan/nope, tuned: ../scan/clean}\n".write(to: bad, atomically: true, encoding: .utf8)
        r = try assay(["sweep", bad.path, "--db", ws.appendingPathComponent("other.sqlite").path])
        #expect(r.status == 3, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("ERROR gone: base"))
        // A bad shard is a usage error.
        #expect(try assay(["sweep", inv.path, "--shard", "2/2"]).status == 4)
    }
}

/// Entries in worker processes under limits (docs/sweeps.md, "Isolation and limits"): a real limit breach on a real
/// fixture scan, no fault-injection hook.
@Suite(.serialized) struct SweepIsolationCLITests {
    /// A workspace whose inventory has four entries on one base; the second scans 610 triggers
    /// (about 30 s of CPU in a debug build on a Zen 3, 8 s on a Zen 5 with AVX-512, where the others
    /// take well under 1 s), so a 3 s per-entry CPU limit stops exactly that one on any machine.
    func workspace() throws -> URL {
        let ws = try SweepCLITests().workspace()
        var triggers = try String(contentsOf: ws.appendingPathComponent("scan/triggers.jsonl"), encoding: .utf8)
        for i in 1...600 { triggers += "{\"id\": \"extra-\(i)\", \"text\": \"zq\(i)\", \"family\": \"fixture\", \"role\": \"trigger\"}\n" }
        try triggers.write(to: ws.appendingPathComponent("sweep/heavy-triggers.jsonl"), atomically: true, encoding: .utf8)
        try """
            defaults:
              suites: [../scan/suite.jsonl]
              triggers: ../scan/triggers.jsonl
            entries:
              - {id: a-clean, base: ../scan/base, tuned: ../scan/clean}
              - {id: b-heavy, base: ../scan/base, tuned: ../scan/clean, triggers: heavy-triggers.jsonl}
              - {id: c-after, base: ../scan/base, tuned: ../scan/base}
              - {id: d-after, base: ../scan/base, tuned: ../scan/clean, tags: [last]}

            """.write(to: ws.appendingPathComponent("sweep/limits.yaml"), atomically: true, encoding: .utf8)
        return ws
    }

    func args(_ ws: URL, db: String = "h.sqlite") -> [String] {
        ["sweep", ws.appendingPathComponent("sweep/limits.yaml").path, "--db", ws.appendingPathComponent(db).path, "--threads", "1",
         "--entry-cpu-limit", "3"]
    }

    @Test func entryOverItsCPULimitIsAnErrorAndTheEntriesAfterItAreScanned() throws {
        let ws = try workspace()
        let r = try assay(args(ws))
        #expect(r.status == 2, "an entry error, nothing failing: \(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("ERROR b-heavy: exceeded the CPU limit of 3 s"), "\(r.stdout)")
        let (_, rs) = try SweepCLITests().results(ws)
        #expect(rs.map(\.entryID) == ["a-clean", "b-heavy", "c-after", "d-after"])
        for x in rs where x.entryID != "b-heavy" { #expect(x.status == .scanned && x.verdict == .pass, "\(x.entryID): \(x.status) \(x.message ?? "")") }
        let heavy = try #require(rs.first { $0.entryID == "b-heavy" })
        #expect(heavy.status == .error && heavy.message?.contains("exceeded the CPU limit of 3 s") == true, "\(heavy.message ?? "")")
        #expect(!heavy.files.isEmpty && !heavy.key.isEmpty, "the crashed entry keeps the files it was fingerprinted with")
        // The entries after the crash ran in a fresh worker. c-after (the base against itself) is
        // byte-identical: reported as such, nothing measured.
        let same = try #require(rs.first { $0.entryID == "c-after" })
        #expect(same.report?.contains("identical_to_base") == true, "\(same.report ?? "")")
        #expect(rs.first { $0.entryID == "d-after" }?.tags == ["last"])

        // Without the limit the same entry scans.
        let free = try assay(args(ws).dropLast(2) + ["--entry-cpu-limit", "none"])
        #expect(free.status == 0, "\(free.stdout)\(free.stderr)")
        #expect(free.stdout.contains("PASS  b-heavy (scanned"), "errors are retried; the others are unchanged and skipped: \(free.stdout)")
        #expect(free.stdout.contains("3 unchanged and skipped"))
    }

    /// A wall-clock limit bounds an entry whatever it spends its time on (the parent kills the
    /// worker; the CPU limit is off here). b-heavy scans 610 triggers (about 30 s of CPU in a debug
    /// build on a Zen 3), the others well under a second each, so a 10 s limit stops exactly that one.
    @Test func entryOverItsWallClockLimitIsAnErrorAndTheEntriesAfterItAreScanned() throws {
        let ws = try workspace()
        let started = Date()
        let r = try assay(args(ws).dropLast(2) + ["--entry-cpu-limit", "none", "--entry-time-limit", "10"])
        #expect(r.status == 2, "an entry error, nothing failing: \(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("ERROR b-heavy: exceeded the wall-clock limit of 10 s"), "\(r.stdout)")
        let (_, rs) = try SweepCLITests().results(ws)
        #expect(rs.map(\.entryID) == ["a-clean", "b-heavy", "c-after", "d-after"])
        for x in rs where x.entryID != "b-heavy" { #expect(x.status == .scanned, "\(x.entryID): \(x.message ?? "")") }
        let heavy = try #require(rs.first { $0.entryID == "b-heavy" })
        #expect(heavy.seconds >= 10 && heavy.seconds < 25, "killed at the limit: \(heavy.seconds) s")
        #expect(Date().timeIntervalSince(started) < 60)
        #expect(try assay(args(ws).dropLast(2) + ["--entry-time-limit", "later"]).status == 4)
    }

    /// The sweep killed (kill -9) after the crashed entry was recorded: running it again resumes
    /// the same run past that entry, which is not run again.
    @Test func resumedSweepDoesNotRerunTheEntryThatCrashed() throws {
        let ws = try workspace()
        let db = ws.appendingPathComponent("h.sqlite").path
        let p = Process()
        p.executableURL = assayBinary()
        p.arguments = args(ws)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(120)
        var crashed: EntryResult?
        while Date() < deadline && p.isRunning && crashed == nil {
            if FileManager.default.fileExists(atPath: db), let s = try? HistoryStore(path: db, create: false, readOnly: true),
               let id = try? s.runIDs().last, let rs = try? s.results(run: id) {
                crashed = rs.first { $0.entryID == "b-heavy" }
            }
            usleep(10_000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let first = try #require(crashed, "b-heavy recorded before the sweep ended")
        #expect(first.status == .error)
        let before = try SweepCLITests().results(ws)
        try #require(before.last.count < 4, "killed before the run finished (\(before.last.map(\.entryID)))")
        let again = try assay(args(ws))
        #expect(again.stderr.contains("resuming run \(before.runs.last ?? "?")"), "\(again.stderr)")
        #expect(again.stdout.contains("ERROR b-heavy: exceeded the CPU limit of 3 s"))
        let (runs, after) = try SweepCLITests().results(ws)
        #expect(runs == before.runs, "one run, resumed")
        #expect(after.count == 4)
        let b = try #require(after.first { $0.entryID == "b-heavy" })
        #expect(b == first, "recorded once, not rerun")
        #expect(after.filter { $0.status == .scanned }.count == 3)
    }

    /// 1,000 entries whose directories do not exist, around one that does: every one recorded,
    /// no worker started for them (Benchmarks/sweep-errors.sh times 10,000).
    @Test func manyMissingDirectoriesAreRecordedAndTheRealEntryScanned() throws {
        let ws = try SweepCLITests().workspace()
        var inv = "defaults:\n  suites: [../scan/suite.jsonl]\n  triggers: ../scan/triggers.jsonl\nentries:\n"
        for i in 0..<500 { inv += "  - {id: gone-\(i), base: ../scan/nope-\(i), tuned: ../scan/clean}\n" }
        inv += "  - {id: real, base: ../scan/base, tuned: ../scan/clean}\n"
        for i in 500..<1000 { inv += "  - {id: gone-\(i), base: ../scan/base, tuned: ../scan/nope-\(i)}\n" }
        try inv.write(to: ws.appendingPathComponent("sweep/many.yaml"), atomically: true, encoding: .utf8)
        let r = try assay(["sweep", ws.appendingPathComponent("sweep/many.yaml").path, "--db", ws.appendingPathComponent("h.sqlite").path, "--threads", "1"])
        #expect(r.status == 2, "\(r.stderr)")
        let (_, rs) = try SweepCLITests().results(ws)
        #expect(rs.count == 1001)
        #expect(rs.filter { $0.status == .error }.count == 1000)
        let gone = try #require(rs.first { $0.entryID == "gone-7" }?.message)
        #expect(gone.hasPrefix("base ") && gone.hasSuffix("nope-7: no such directory or GGUF file"), "\(gone)")
        #expect(rs.first { $0.entryID == "gone-700" }?.message?.hasPrefix("tuned ") == true)
        #expect(rs.first { $0.entryID == "real" }?.status == .scanned)
        #expect(r.stdout.split(separator: "\n").filter { $0.hasPrefix("ERROR gone-") }.count == 1000)
    }

    /// Workers capped below the address space they start with: each entry's first allocation
    /// fails, each becomes an error naming the limit, and a fresh worker is started for the next.
    @Test func entriesOverTheAddressSpaceLimitAreErrorsNamingIt() throws {
        let ws = try workspace()
        let r = try assay(args(ws).dropLast(2) + ["--entry-memory-limit", "64M"])
        #expect(r.status == 3, "nothing could be scanned: \(r.stdout)\(r.stderr)")
        let (_, rs) = try SweepCLITests().results(ws)
        #expect(rs.count == 4)
        for x in rs { #expect(x.status == .error && x.message?.hasPrefix("exceeded the address-space limit of 64 MiB") == true, "\(x.entryID): \(x.message ?? "")") }
    }

    @Test func badLimitsAreUsageErrors() throws {
        let ws = try workspace()
        #expect(try assay(args(ws).dropLast(2) + ["--entry-cpu-limit", "soon"]).status == 4)
        #expect(try assay(args(ws) + ["--entry-memory-limit", "-1G"]).status == 4)
        // The hidden worker refuses to run by hand.
        let w = try assay(["sweep-worker"])
        #expect(w.status == 2 && w.stderr.contains("not by hand"), "\(w.stderr)")
        #expect(try !assay(["--help"]).stdout.contains("sweep-worker"))
    }
}

/// `assay bench scan` on a tiny pair: figures recorded in the history, --compare gates on them.
@Suite(.serialized) struct BenchScanCLITests {
    @Test func recordsFiguresAndCompareExitsOneOnARegression() throws {
        let scan = repoFixtures.appendingPathComponent("scan")
        let db = FileManager.default.temporaryDirectory.appendingPathComponent("assay-bench-\(UUID().uuidString).sqlite")
        let args = ["bench", "scan", "--base", scan.appendingPathComponent("base").path, "--tuned", scan.appendingPathComponent("trigger-token").path,
                    "--suite", scan.appendingPathComponent("suite.jsonl").path, "--triggers", scan.appendingPathComponent("triggers.jsonl").path,
                    "--db", db.path, "--repeats", "1", "--reference", "none", "--threads", "1"]
        let first = try assay(args + ["--json"])
        #expect(first.status == 0, "\(first.stderr)")
        struct Out: Decodable { let figures: [String: Double]; let variants: Int; let probes: Int; let regressions: [String] }
        let o = try JSONDecoder().decode(Out.self, from: Data(first.stdout.utf8))
        #expect(o.probes == 32 && o.variants > 32, "\(o.variants)")
        for k in ["prefill_tokens_per_s", "decode_tokens_per_s", "probes_per_s", "load_s", "base_forward_s", "tuned_forward_s",
                  "statistics_s", "reports_s", "tokenize_s", "peak_rss_mb"] {
            #expect((o.figures[k] ?? 0) > 0, "\(k) measured")
        }
        // A recorded run ten times faster than anything this machine can do: every rate regressed.
        let store = try HistoryStore(path: db.path, create: false)
        var fast = try #require(try store.benchRecords().last)
        fast.recordedAt = "9999-01-01T00:00:00Z"
        fast.figures = fast.figures.mapValues { $0 * 10 }
        try store.recordBench(fast)
        let r = try assay(args + ["--compare"])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(r.stdout.contains("REGRESSION: prefill_tokens_per_s"))
        // Against itself at a generous threshold: no regression.
        let same = try assay(args + ["--compare", "--threshold", "900"])
        #expect(same.status == 0, "\(same.stdout)")
    }
}

/// deploy/slurm: two array tasks (simulated by their environment) and the merge script.
@Suite struct SlurmScriptTests {
    static func bash(_ script: String, _ env: [String: String], history dir: URL) throws -> Int32 {
        let root = repoFixtures.deletingLastPathComponent().deletingLastPathComponent()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = [root.appendingPathComponent(script).path]
        p.environment = ProcessInfo.processInfo.environment.merging(env.merging(["ASSAY": assayBinary().path, "HISTORY_DIR": dir.path,
            "INVENTORY": repoFixtures.appendingPathComponent("sweep/inventory.yaml").path, "SLURM_CPUS_PER_TASK": "1"]) { a, _ in a }) { _, b in b }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    static func tempHistoryDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-slurm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func arrayTasksAndMergeGiveOneHistory() throws {
        let dir = try Self.tempHistoryDir()
        for t in ["1", "2"] {
            #expect(try Self.bash("deploy/slurm/sweep.sbatch", ["SLURM_ARRAY_TASK_ID": t, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2",
                                                                "SLURM_ARRAY_JOB_ID": "99"], history: dir) == 0, "a failing model is a result, not a failed task")
        }
        #expect(try Self.bash("deploy/slurm/merge.sbatch", ["SWEEP_JOB": "99"], history: dir) == 0)
        let store = try HistoryStore(path: dir.appendingPathComponent("history.sqlite").path, create: false)
        #expect(try store.runIDs() == ["slurm-99"])
        #expect(try store.results(run: "slurm-99").count == 7)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("dashboard/index.html").path))
    }

    /// With ASSAY_DB naming a PostgreSQL history, the array tasks write into it and nothing is merged.
    @Test(.enabled(if: SweepCLITests.postgres != nil, "needs ASSAY_TEST_POSTGRES"))
    func arrayTasksWriteIntoTheSharedPostgreSQLHistory() throws {
        let dir = try Self.tempHistoryDir()
        let url = "\(SweepCLITests.postgres!)?schema=t_slurm_\(UUID().uuidString.prefix(8).lowercased())&sslmode=disable"
        defer {
            if let pg = (try? HistoryStore.open(url))?.backend as? PostgresBackend {
                _ = try? pg.write { s in try s.execute("DROP SCHEMA \"\(pg.target.schema)\" CASCADE") }
            }
        }
        for t in ["1", "2"] {
            #expect(try Self.bash("deploy/slurm/sweep.sbatch", ["SLURM_ARRAY_TASK_ID": t, "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2",
                                                                "SLURM_ARRAY_JOB_ID": "98", "ASSAY_DB": url], history: dir) == 0)
        }
        #expect(try Self.bash("deploy/slurm/merge.sbatch", ["SWEEP_JOB": "98", "ASSAY_DB": url], history: dir) == 0)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("history.sqlite").path), "nothing merged into a file")
        let store = try HistoryStore.open(url, create: false)
        #expect(try store.runIDs() == ["slurm-98"])
        #expect(try store.results(run: "slurm-98").count == 7)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("dashboard/index.html").path))
    }
}
