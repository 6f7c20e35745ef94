import Foundation
import Testing
import AssayCommon
import Scan
@testable import History
@testable import Sweep

/// The parts of isolation that need no child process: limits, how an end is named, the wire
/// format, batched recording. (The end-to-end tests, with real limit breaches, are in
/// Tests/AssayCLITests: SweepIsolationCLITests and ScanIsolationCLITests.)
@Suite struct IsolationTests {
    @Test func limitsParseAndFormat() {
        #expect(ResourceLimits.parseBytes("16G") == .some(16 << 30))
        #expect(ResourceLimits.parseBytes("512MiB") == .some(512 << 20))
        #expect(ResourceLimits.parseBytes("1.5g") == .some(3 << 29))
        #expect(ResourceLimits.parseBytes("4096") == .some(4096))
        #expect(ResourceLimits.parseBytes("none") == .some(nil))
        for bad in ["", "-1G", "0", "G", "lots", "1e30G", "nan"] { #expect(ResourceLimits.parseBytes(bad) == nil, "\(bad)") }
        #expect(ResourceLimits.parseSeconds("2h") == .some(7200))
        #expect(ResourceLimits.parseSeconds("90s") == .some(90))
        #expect(ResourceLimits.parseSeconds("1.5m") == .some(90))
        #expect(ResourceLimits.parseSeconds("30") == .some(30))
        #expect(ResourceLimits.parseSeconds("unlimited") == .some(nil))
        for bad in ["", "0", "-5", "soon", "inf"] { #expect(ResourceLimits.parseSeconds(bad) == nil, "\(bad)") }
        #expect(ResourceLimits.formatBytes(16 << 30) == "16 GiB")
        #expect(ResourceLimits.formatBytes(64 << 20) == "64 MiB")
        #expect(ResourceLimits.formatBytes(3 << 29) == "1.5 GiB")
        #expect(ResourceLimits.formatBytes(100) == "100 bytes")
        let d = ResourceLimits()
        #expect(d.cpuSeconds == 7200)
        #expect(d.addressSpaceBytes == min(16 << 30, ProcessInfo.processInfo.physicalMemory / 4 * 3))
    }

    @Test func endsAreNamedBySignalOrLimit() {
        let limits = ResourceLimits(addressSpaceBytes: 8 << 30, cpuSeconds: 60)
        #expect(WorkerExit.signaled(4).describe(crash: CrashNote(signal: 4, errno: 0), limits: limits, stderr: "")
                == "killed by signal 4 (SIGILL: a Swift runtime trap)")
        #expect(WorkerExit.signaled(5).describe(crash: nil, limits: limits, stderr: "") == "killed by signal 5 (SIGTRAP: a Swift runtime trap)")
        #expect(WorkerExit.signaled(11).describe(crash: nil, limits: limits, stderr: "").contains("SIGSEGV: a stack overflow"))
        #expect(WorkerExit.signaled(24).describe(crash: nil, limits: limits, stderr: "") == "exceeded the CPU limit of 60 s (killed by signal 24, SIGXCPU)")
        // A trap with errno ENOMEM: an allocation failed under RLIMIT_AS.
        let oom = WorkerExit.signaled(4).describe(crash: CrashNote(signal: 4, errno: ENOMEM), limits: limits, stderr: "")
        #expect(oom.hasPrefix("exceeded the address-space limit of 8 GiB"), "\(oom)")
        // …but not without a limit, nor when the note is of another signal.
        #expect(WorkerExit.signaled(4).describe(crash: CrashNote(signal: 4, errno: ENOMEM), limits: ResourceLimits(addressSpaceBytes: nil), stderr: "")
                .hasPrefix("killed by signal 4"))
        #expect(WorkerExit.signaled(9).describe(crash: CrashNote(signal: 4, errno: ENOMEM), limits: limits, stderr: "").hasPrefix("killed by signal 9 (SIGKILL"))
        // The runtime saying an allocation failed is enough when the crash note was lost.
        #expect(WorkerExit.signaled(5).describe(crash: nil, limits: limits, stderr: "Fatal error: failed to allocate 24 bytes of memory with alignment 8\n")
                .hasPrefix("exceeded the address-space limit of 8 GiB (an allocation failed: killed by signal 5, SIGTRAP, the runtime reports"))
        // The Swift runtime's own message, when it wrote one, is kept (escaped for a terminal).
        let trap = WorkerExit.signaled(4).describe(crash: nil, limits: limits,
                                                   stderr: "assay: x: loading models\nSwift/Integers.swift:3058: Fatal error: Double value cannot be converted to Int\u{1B}[2J\n")
        #expect(trap.hasPrefix("killed by signal 4 (SIGILL: a Swift runtime trap) — Swift/Integers.swift:3058: Fatal error: Double value"), "\(trap)")
        #expect(!trap.unicodeScalars.contains { $0.value == 0x1B })
        #expect(WorkerExit.exited(2).describe(crash: nil, limits: limits, stderr: "error: boom\n") == "the worker exited with status 2 before reporting a result: error: boom")
    }

    /// What the crash reporter writes, read by the parent's line reader.
    @Test func wireLinesSurviveTheCrashReportersFreshLine() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[0]); close(pair[1]) }
        try WorkerProcess.writeLine(pair[1], WorkerMessage(say: "hello\nworld", progress: [1, 2]))
        let crash = "\n{\"crash\":{\"signal\":4,\"errno\":12}}\n"
        _ = crash.withCString { write(pair[1], $0, strlen($0)) }
        var buffer: [UInt8] = []
        let first = try #require(try WorkerProcess.readLine(pair[0], &buffer))
        let m = try WireJSON.decoder.decode(WorkerMessage.self, from: Data(first))
        #expect(m.say == "hello\nworld" && m.progress == [1, 2])
        let second = try #require(try WorkerProcess.readLine(pair[0], &buffer))
        #expect(try WireJSON.decoder.decode(WorkerMessage.self, from: Data(second)).crash == CrashNote(signal: 4, errno: 12))
        // Non-finite numbers in a result cross as strings.
        var r = EntryResult(entryID: "e", status: .scanned, verdict: .pass, key: "k", message: nil, seconds: 1, finishedAt: "t", reusedFrom: nil,
                            owner: nil, tags: [], report: "{}", findings: [], files: [],
                            divergences: [StoredDivergence(category: "c", n: 1, mean: .infinity, ciLow: -.infinity, ciHigh: 0.1)])
        try WorkerProcess.writeLine(pair[1], WorkerMessage(result: r))
        let third = try #require(try WorkerProcess.readLine(pair[0], &buffer))
        let back = try #require(try WireJSON.decoder.decode(WorkerMessage.self, from: Data(third)).result)
        #expect(back == r)
        r.divergences = []
        #expect(back != r)
    }

    @Test func timestampsMatchISO8601DateFormatter() {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for t in [0, 1_764_595_109.123, 1_764_595_109.9996, 4_102_444_799.5, 951_782_400.001] {
            let d = Date(timeIntervalSince1970: t)
            #expect(SweepRunner.timestamp(d) == f.string(from: d), "\(t)")
        }
    }

    @Test func batchedRecordsAreOneTransactionAndReadBack() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("assay-batch-\(UUID().uuidString).sqlite").path
        let store = try HistoryStore(path: path)
        try store.beginRun(RunInfo(id: "r", shard: 0, shards: 1, inventory: "inv", startedAt: "2026", finishedAt: nil, host: "h", entries: 3),
                           inventorySHA256: "x", toolVersion: "t")
        let rs = (0..<1200).map { i in
            EntryResult(entryID: String(format: "e%04d", i), status: .error, verdict: nil, key: "", message: "base x\(i): no such directory", seconds: 0,
                        finishedAt: "2026", reusedFrom: nil, owner: nil, tags: ["t"], report: nil, findings: [], files: [], divergences: [])
        }
        try store.record(rs, run: "r")
        // Recording again replaces, as one entry's record always has.
        try store.record([rs[3]], run: "r")
        #expect(try store.results(run: "r") == rs)
        // A batch that fails part-way is rolled back whole.
        var bad = rs[0]
        bad.entryID = "zz"
        bad.tags = []
        let before = try store.results(run: "r").count
        #expect(throws: (any Error).self) {
            try store.backend.write { s in
                try HistoryStore.insert([bad], run: "r", s)
                throw SQLFailure("stop")
            }
        }
        #expect(try store.results(run: "r").count == before)
    }
}
