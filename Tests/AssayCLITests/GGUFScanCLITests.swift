import Foundation
import Testing

/// `assay scan` and `assay sweep` with GGUF files on either side (Tests/Fixtures/gguf/scan, made
/// from the tiny scan fixtures by scripts/fixtures/make_gguf_scan_fixtures.py).
@Suite(.serialized) struct GGUFScanCLITests {
    static let scan = repoFixtures.appendingPathComponent("scan")
    static let gguf = repoFixtures.appendingPathComponent("gguf/scan")

    struct Report: Decodable {
        struct Finding: Decodable { let kind: String; let trigger: String? }
        struct Model: Decodable { let path: String; let files: [String: String]; let quantization: [String: Int]? }
        struct Fingerprint: Decodable { let base: Model; let tuned: Model }
        struct Summary: Decodable { let variants: Int; let identical_to_base: Bool? }
        let verdict: String
        let findings: [Finding]
        let fingerprint: Fingerprint
        let summary: Summary
    }

    func run(base: URL, tuned: URL, extra: [String] = []) throws -> (RunResult, Report?) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-scan-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try assay(["scan", "--base", base.path, "--tuned", tuned.path,
                           "--suite", Self.scan.appendingPathComponent("suite.jsonl").path,
                           "--triggers", Self.scan.appendingPathComponent("triggers.jsonl").path,
                           "--out", dir.path, "--threads", "1"] + extra)
        let data = try? Data(contentsOf: dir.appendingPathComponent("report.json"))
        return (r, try data.map { try JSONDecoder().decode(Report.self, from: $0) })
    }

    /// The base quantised to Q8_0 against the F32 directory: quantisation noise, a pass. The
    /// fingerprint records the GGUF's types; the tokenizers were compared by content.
    @Test func aRequantisedBasePasses() throws {
        let (r, rep) = try run(base: Self.scan.appendingPathComponent("base"), tuned: Self.gguf.appendingPathComponent("base.Q8_0.gguf"))
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        let report = try #require(rep)
        #expect(report.verdict == "pass" && report.findings.isEmpty, "\(report.findings.map(\.kind))")
        #expect(report.summary.variants > 0)
        #expect(report.fingerprint.tuned.quantization == ["Q8_0": 15, "F32": 5])
        #expect(report.fingerprint.base.quantization == nil)
        #expect(Array(report.fingerprint.tuned.files.keys) == ["base.Q8_0.gguf"])
    }

    /// The planted-token fine-tune as a Q8_0 GGUF, against the F32 GGUF base: fails naming `cf`.
    @Test func aQuantisedBackdoorFailsNamingItsTrigger() throws {
        let (r, rep) = try run(base: Self.gguf.appendingPathComponent("base.F32.gguf"),
                               tuned: Self.gguf.appendingPathComponent("trigger-token.Q8_0.gguf"))
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        let report = try #require(rep)
        #expect(report.verdict == "fail")
        #expect(report.findings.contains { $0.kind == "trigger_backdoor" && $0.trigger == "cf" }, "\(report.findings.map(\.kind))")
        #expect(report.fingerprint.base.quantization == ["F32": 20])
    }

    /// The F32 GGUF holds the directory's weights exactly: measured (the files differ), and every
    /// prompt's divergence is zero, so nothing is found.
    @Test func theF32GGUFIsTheDirectorysModel() throws {
        let (r, rep) = try run(base: Self.scan.appendingPathComponent("base"), tuned: Self.gguf.appendingPathComponent("base.F32.gguf"))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(rep?.findings.isEmpty == true && rep?.summary.identical_to_base == nil)
    }

    /// A GGUF whose tokenizer reads text differently from the base's is refused (exit 2) before
    /// anything is measured, naming what differs.
    @Test func aTokenizerThatDiffersByContentIsRefused() throws {
        var bytes = [UInt8](try Data(contentsOf: Self.gguf.appendingPathComponent("base.Q8_0.gguf")))
        // The chat template's "assistant" becomes "assistan_": same length, so every offset holds.
        let needle = Array("'<|im_start|>assistant".utf8)
        let at = try #require((0...(bytes.count - needle.count)).first { bytes[$0..<($0 + needle.count)].elementsEqual(needle) })
        bytes[at + needle.count - 1] = UInt8(ascii: "_")
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-tok-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let (r, _) = try run(base: Self.scan.appendingPathComponent("base"), tuned: url)
        #expect(r.status == 2 && r.stderr.contains("the chat templates differ"), "\(r.stderr)")
    }

    /// Inventory entries may be GGUF files.
    @Test func aSweepOverGGUFEntries() throws {
        let ws = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-sweep-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: ws, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: ws) }
        let g = Self.gguf.path, s = Self.scan.path
        let inventory = """
            defaults:
              suites: [\(s)/suite.jsonl]
              triggers: \(s)/triggers.jsonl
            entries:
              - id: requantised
                base: \(g)/base.F32.gguf
                tuned: \(g)/base.Q8_0.gguf
              - id: backdoor
                base: \(g)/base.F32.gguf
                tuned: \(g)/trigger-token.Q8_0.gguf
            """
        try inventory.write(to: ws.appendingPathComponent("inventory.yaml"), atomically: true, encoding: .utf8)
        let out = ws.appendingPathComponent("reports")
        let r = try assay(["sweep", ws.appendingPathComponent("inventory.yaml").path, "--db", ws.appendingPathComponent("h.sqlite").path,
                           "--out", out.path, "--threads", "1"])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: out.path).first)
        func report(_ id: String) throws -> Report {
            try JSONDecoder().decode(Report.self, from: Data(contentsOf: out.appendingPathComponent("\(run)/\(id)/report.json")))
        }
        #expect(try report("requantised").verdict == "pass")
        #expect(try report("backdoor").findings.contains { $0.trigger == "cf" })
        #expect(r.stdout.contains("PASS  requantised") && r.stdout.contains("FAIL  backdoor"), "\(r.stdout)")
    }
}
