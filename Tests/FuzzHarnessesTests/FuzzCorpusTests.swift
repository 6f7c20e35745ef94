import Foundation
import Testing
import FuzzHarnesses

/// Replays every committed fuzz input (Fuzz/corpus/<harness>/: seeds and what the fuzzer kept;
/// Fuzz/regressions/<harness>/: inputs that once crashed, hung or leaked) through the same
/// harness the fuzzer runs. A parser that traps on any of them kills this test process.
@Suite struct FuzzCorpusTests {
    static let fuzz = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz")

    static func inputs(_ h: Harness) -> [URL] {
        ["corpus", "regressions"].flatMap { kind -> [URL] in
            let dir = fuzz.appendingPathComponent(kind).appendingPathComponent(h.rawValue)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
            return names.sorted().filter { !$0.hasPrefix(".") }.map { dir.appendingPathComponent($0) }
        }
    }

    @Test(arguments: Harness.allCases) func replay(_ h: Harness) throws {
        let files = Self.inputs(h)
        #expect(files.count >= 3, "\(h.rawValue): only \(files.count) corpus inputs")
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("assay-fuzz-replay-\(h.rawValue)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        for f in files {
            let start = Date()
            h.run([UInt8](try Data(contentsOf: f)), scratch: scratch)
            // A generous bound: the fuzzer's own timeout is 10 s per input in a release build.
            #expect(Date().timeIntervalSince(start) < 20, "\(h.rawValue)/\(f.lastPathComponent) took too long")
        }
    }
}
