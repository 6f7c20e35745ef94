import Foundation
import Testing
import SafeTensors
import TensorCore

/// `assay scan` end to end on the tiny fixture pairs (scripts/fixtures/make_scan_fixtures.py).
@Suite(.serialized) struct ScanCLITests {
    static let scan = repoFixtures.appendingPathComponent("scan")

    struct Report: Decodable {
        struct Finding: Decodable { let kind: String; let severity: String; let trigger: String?; let category: String? }
        let verdict: String
        let findings: [Finding]
        struct Evidence: Decodable { let probe_id: String; let base_output: String; let tuned_output: String; let divergence: Double }
        struct Summary: Decodable {
            let median_clean_divergence: Double; let variants: Int; let identical_to_base: Bool?; let no_effect: Bool?
            let most_divergent: [Evidence]?
        }
        let summary: Summary
    }

    func run(_ tuned: String, extra: [String] = [], out: URL? = nil, environment: [String: String] = [:]) throws -> (RunResult, Report, URL) {
        let dir = out ?? FileManager.default.temporaryDirectory.appendingPathComponent("assay-scan-\(UUID().uuidString)")
        let r = try assay(["scan", "--base", Self.scan.appendingPathComponent("base").path,
                           "--tuned", tuned.hasPrefix("/") ? tuned : Self.scan.appendingPathComponent(tuned).path,
                           "--suite", Self.scan.appendingPathComponent("suite.jsonl").path,
                           "--triggers", Self.scan.appendingPathComponent("triggers.jsonl").path,
                           "--out", dir.path, "--threads", "1"] + extra, environment: environment)
        let data = try Data(contentsOf: dir.appendingPathComponent("report.json"))
        return (r, try JSONDecoder().decode(Report.self, from: data), dir)
    }

    @Test func baseAgainstItselfHasZeroDivergenceAndPasses() throws {
        let (r, rep, dir) = try run("base")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(rep.verdict == "pass")
        #expect(rep.summary.median_clean_divergence == 0)
        #expect(rep.findings.isEmpty)
        // Byte-identical tensors, config and tokenizer: reported as such, nothing measured.
        #expect(rep.summary.identical_to_base == true && rep.summary.variants == 0)
        let md = try String(contentsOf: dir.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(md.contains("byte-identical to the base's"))
    }

    @Test func sameTensorsWithAnotherConfigAreMeasured() throws {
        // Identical weights do not make an identical model: a config that differs (here in a flag
        // that happens not to matter) could change behaviour, so the pair is measured as usual.
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("assay-scan-config-\(UUID().uuidString)")
        try FileManager.default.copyItem(at: Self.scan.appendingPathComponent("base"), to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        let config = copy.appendingPathComponent("config.json")
        var text = try String(contentsOf: config, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"use_cache\": true", with: "\"use_cache\": false")
        try text.write(to: config, atomically: true, encoding: .utf8)
        let (r, rep, dir) = try run(copy.path)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(rep.summary.identical_to_base == nil && rep.summary.variants > 0)
        #expect(rep.summary.median_clean_divergence == 0)
        // Measured, and nothing diverged: the reports say so in words.
        #expect(rep.summary.no_effect == true)
        let md = try String(contentsOf: dir.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(md.contains("**The fine-tune had no effect: no prompt variant diverged from the base.**"))
        let html = try String(contentsOf: dir.appendingPathComponent("report.html"), encoding: .utf8)
        #expect(html.contains("<strong>The fine-tune had no effect"))
    }

    @Test func plantedTokenTriggerIsFoundAndNamed() throws {
        let (r, rep, _) = try run("trigger-token")
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(rep.verdict == "fail")
        #expect(rep.findings.contains { $0.kind == "trigger_backdoor" && $0.trigger == "cf" })
        #expect(!rep.findings.contains { $0.kind == "trigger_backdoor" && $0.trigger != "cf" }, "only the planted trigger")
        #expect(!rep.findings.contains { $0.kind == "category_shift" })
    }

    @Test func plantedPhraseTriggerIsFoundAndNamed() throws {
        let (r, rep, _) = try run("trigger-phrase")
        #expect(r.status == 1)
        #expect(rep.findings.contains { $0.kind == "trigger_backdoor" && $0.trigger == "James Bond" })
        #expect(!rep.findings.contains { $0.kind == "trigger_backdoor" && $0.trigger != "James Bond" })
    }

    @Test func categorySabotageIsACategoryShift() throws {
        let (_, rep, _) = try run("sabotage")
        #expect(rep.findings.contains { $0.kind == "category_shift" && $0.category == "code_security" })
        #expect(!rep.findings.contains { $0.kind == "trigger_backdoor" })
        // The probes that diverge most are the sabotaged category's, answers and all.
        let top = try #require(rep.summary.most_divergent)
        #expect(top.count == 10 && top.prefix(5).allSatisfy { $0.probe_id.hasPrefix("code_security-") }, "\(top.map(\.probe_id))")
        #expect(zip(top, top.dropFirst()).allSatisfy { $0.divergence >= $1.divergence })
        #expect(top.allSatisfy { $0.base_output != $0.tuned_output })
    }

    @Test func cleanFineTunePasses() throws {
        let (r, rep, dir) = try run("clean")
        #expect(r.status == 0, "\(r.stdout)")
        #expect(rep.verdict != "fail")
        #expect(!rep.findings.contains { ["trigger_backdoor", "category_shift"].contains($0.kind) })
        // A PASS explains itself: where the fine-tune moved most, with both answers.
        #expect(rep.summary.no_effect == nil && rep.summary.most_divergent?.count == 10)
        let md = try String(contentsOf: dir.appendingPathComponent("report.md"), encoding: .utf8)
        let first = try #require(rep.summary.most_divergent?.first)
        #expect(md.contains("## Where the fine-tune diverges most") && md.contains("| \(first.probe_id) |"))
    }

    /// Identical inputs give byte-identical reports apart from the timestamp, whatever the batch size, thread count and ISA variant.
    @Test func reportsAreDeterministicAcrossRunsAndBatchSizes() throws {
        let (_, _, a) = try run("trigger-token", extra: ["--batch-size", "7"])
        let (_, _, b) = try run("trigger-token", extra: ["--batch-size", "64", "--threads", "2"])
        // Prompt-prefix sharing is an optimization only: the same bytes without it.
        let (_, _, c) = try run("trigger-token", extra: ["--batch-size", "13", "--no-prompt-sharing"])
        // And the same bytes from every kernel variant this CPU has below its best (ASSAY_ISA).
        let lower = try ISA.allCases.filter { $0 < ISA.detected }.map { isa in
            (isa, try run("trigger-token", extra: ["--batch-size", "5", "--threads", "2"], environment: ["ASSAY_ISA": isa.description]).2)
        }
        for name in ["report.json", "report.md", "report.html", "report.sarif"] {
            func strip(_ u: URL) throws -> String {
                try String(contentsOf: u.appendingPathComponent(name), encoding: .utf8).split(separator: "\n")
                    .filter { !$0.contains("created_at") && !$0.contains("report schema") }.joined(separator: "\n")
            }
            #expect(try strip(a) == strip(b), "\(name) differs between batch sizes / thread counts")
            #expect(try strip(a) == strip(c), "\(name) differs with prompt sharing off")
            for (isa, d) in lower { #expect(try strip(a) == strip(d), "\(name) differs with ASSAY_ISA=\(isa)") }
        }
    }

    @Test func badInputs() throws {
        let base = Self.scan.appendingPathComponent("base").path
        // Mismatched tokenizer: a model directory whose tokenizer differs.
        let r1 = try assay(["scan", "--base", base, "--tuned", repoFixtures.appendingPathComponent("models/llama-gqa").path,
                            "--suite", Self.scan.appendingPathComponent("suite.jsonl").path,
                            "--triggers", Self.scan.appendingPathComponent("triggers.jsonl").path, "--out", "/tmp/assay-never"])
        #expect(r1.status == 2, "\(r1.stderr)")
        // Unwritable output directory: refused before any work, nothing written.
        let r2 = try assay(["scan", "--base", base, "--tuned", base, "--out", "/proc/assay-cannot-write"])
        #expect(r2.status == 2)
        #expect(r2.stderr.contains("/proc/assay-cannot-write"))
        // Usage.
        #expect(try assay(["scan", "--base", base]).status == 4)
    }

    /// Bad suites, policies and vocabularies: exit 2, one line naming the file and field, and no
    /// output directory left behind.
    @Test func badSuitesPoliciesAndVocabularies() throws {
        let base = Self.scan.appendingPathComponent("base").path
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("assay-bad-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let header = try String(contentsOf: Self.scan.appendingPathComponent("suite.jsonl"), encoding: .utf8).split(separator: "\n")[0]
        let broken = tmp.appendingPathComponent("broken.jsonl"), empty = tmp.appendingPathComponent("empty.jsonl")
        try Data("\(header)\n{\"id\": \"x\", \"category\": \"c\", \"prompt\": \n".utf8).write(to: broken)
        try Data("\(header)\n".utf8).write(to: empty)
        let policy = tmp.appendingPathComponent("policy.json")
        try Data(#"{"fdr": 0.05, "trigger_min_robustz": 3}"#.utf8).write(to: policy)
        let triggers = ["--triggers", Self.scan.appendingPathComponent("triggers.jsonl").path]
        let suite = ["--suite", Self.scan.appendingPathComponent("suite.jsonl").path]
        let cases: [([String], String)] = [
            (["--tuned", base, "--suite", broken.path] + triggers, "broken.jsonl:2:"),
            (["--tuned", base, "--suite", empty.path] + triggers, "no probes"),
            (["--tuned", base, "--policy", policy.path] + suite + triggers, "trigger_min_robustz"),
            (["--tuned", repoFixtures.appendingPathComponent("models/llama-gqa").path, "--allow-tokenizer-mismatch"] + suite + triggers,
             "vocabularies differ"),
        ]
        for (i, (args, message)) in cases.enumerated() {
            let out = tmp.appendingPathComponent("out-\(i)")
            let r = try assay(["scan", "--base", base, "--out", out.path] + args)
            #expect(r.status == 2, "case \(i): \(r.stderr)")
            #expect(r.stderr.contains(message), "case \(i): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out.path), "case \(i) left \(out.path) behind")
        }
    }

    /// A pair whose first block is bitwise shared (the second block scaled by 1.01): the scan runs
    /// the shared block once for both models, and the report is byte-identical without that.
    @Test func reportsIdenticalWithAndWithoutLayerSharing() throws {
        let src = Self.scan.appendingPathComponent("base")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-upper-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path) where f != "model.safetensors" {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        let ckpt = try Checkpoint.open(src)
        try SafeTensorsWriter.write(try ckpt.tensorNames.map { n in
            let t = try ckpt.tensor(n)
            let edit = n.hasPrefix("model.layers.1.") && t.shape.count == 2
            return .init(name: n, tensor: edit ? Tensor(shape: t.shape, data: t.array.map { $0 * 1.01 }) : t)
        }, to: dir.appendingPathComponent("model.safetensors"))
        let (r1, _, a) = try run(dir.path)
        let (r2, _, b) = try run(dir.path, extra: ["--no-layer-sharing", "--batch-size", "9"])
        #expect(r1.status != 2 && r1.status == r2.status, "\(r1.stderr)")
        func body(_ u: URL) throws -> [String] {
            try String(contentsOf: u.appendingPathComponent("report.json"), encoding: .utf8).split(separator: "\n")
                .filter { !$0.contains("\"created_at\"") }.map(String.init)
        }
        #expect(try body(a) == body(b))
        let weights = try String(contentsOf: a.appendingPathComponent("report.json"), encoding: .utf8)
        #expect(weights.contains("\"identical_prefix_layers\" : 1"))
    }
}

/// `assay scan --isolate`: the model work in a worker process under limits.
@Suite(.serialized) struct ScanIsolationCLITests {
    static let scan = repoFixtures.appendingPathComponent("scan")

    func scan(_ tuned: String, out: URL, _ extra: [String]) throws -> RunResult {
        try assay(["scan", "--base", Self.scan.appendingPathComponent("base").path, "--tuned", Self.scan.appendingPathComponent(tuned).path,
                   "--suite", Self.scan.appendingPathComponent("suite.jsonl").path, "--triggers", Self.scan.appendingPathComponent("triggers.jsonl").path,
                   "--out", out.path, "--threads", "1"] + extra)
    }

    func temp(_ tag: String) -> URL { FileManager.default.temporaryDirectory.appendingPathComponent("assay-iso-\(tag)-\(UUID().uuidString)") }

    @Test func isolatedScanGivesTheSameReportAsInProcess() throws {
        let a = temp("a"), b = temp("b")
        let inProcess = try scan("trigger-token", out: a, [])
        let isolated = try scan("trigger-token", out: b, ["--isolate"])
        #expect(inProcess.status == 1 && isolated.status == 1, "\(isolated.stderr)")
        #expect(isolated.stdout.replacingOccurrences(of: b.path, with: a.path) == inProcess.stdout)
        for file in ["report.json", "report.md", "report.sarif"] {
            let x = try String(contentsOf: a.appendingPathComponent(file), encoding: .utf8)
            let y = try String(contentsOf: b.appendingPathComponent(file), encoding: .utf8)
            let strip = { (t: String) in t.split(separator: "\n").filter { !$0.contains("created_at") && !$0.contains("Created") }.joined(separator: "\n") }
            #expect(strip(x) == strip(y), "\(file) differs when isolated")
        }
    }

    @Test func limitBreachIsExitTwoWithOneLineAndNoReportDirectory() throws {
        // The worker's address space capped below what it already uses: its first allocation fails.
        let mem = temp("mem")
        let m = try scan("clean", out: mem, ["--memory-limit", "64M"])
        #expect(m.status == 2, "\(m.stdout)\(m.stderr)")
        let line = m.stderr.split(separator: "\n").filter { $0.hasPrefix("error: ") }
        #expect(line.count == 1 && line[0].contains("scan process: exceeded the address-space limit of 64 MiB"), "\(m.stderr)")
        #expect(!FileManager.default.fileExists(atPath: mem.path), "no --out directory left behind")
        #expect(m.stdout.isEmpty)

        // A scan that needs far more than one CPU-second on any machine (the fixture alone takes
        // about 1.5 s on a fast one: too close to the limit to test it).
        let big = temp("suite.jsonl")
        defer { try? FileManager.default.removeItem(at: big) }
        let fixture = try String(contentsOf: Self.scan.appendingPathComponent("suite.jsonl"), encoding: .utf8).split(separator: "\n")
        let copies = (0..<40).flatMap { i in fixture.dropFirst().map { $0.replacingOccurrences(of: "\"id\": \"", with: "\"id\": \"copy\(i)-") } }
        try ([String(fixture[0])] + copies).joined(separator: "\n").write(to: big, atomically: true, encoding: .utf8)
        let cpu = temp("cpu")
        let c = try scan("clean", out: cpu, ["--cpu-limit", "1", "--response-tokens", "64", "--suite", big.path])
        #expect(c.status == 2, "\(c.stdout)\(c.stderr)")
        #expect(c.stderr.contains("error: scan process: exceeded the CPU limit of 1 s"), "\(c.stderr)")
        #expect(!FileManager.default.fileExists(atPath: cpu.path))

        // The same scan under a wall-clock limit alone: the parent kills the worker at 1 s.
        let wall = temp("wall")
        let w = try scan("clean", out: wall, ["--time-limit", "1", "--cpu-limit", "none", "--response-tokens", "64", "--suite", big.path])
        #expect(w.status == 2, "\(w.stdout)\(w.stderr)")
        #expect(w.stderr.contains("error: scan process: exceeded the wall-clock limit of 1 s"), "\(w.stderr)")
        #expect(!FileManager.default.fileExists(atPath: wall.path))

        // An existing --out directory is left as it was (empty here), not half-filled.
        let existing = temp("existing")
        try FileManager.default.createDirectory(at: existing, withIntermediateDirectories: true)
        _ = try scan("clean", out: existing, ["--memory-limit", "64M"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: existing.path).isEmpty)
    }

    @Test func ordinaryErrorsKeepTheirMessageAndExitCode() throws {
        let out = temp("bad")
        let missing = Self.scan.appendingPathComponent("no-such-suite.jsonl").path
        let args = ["scan", "--base", Self.scan.appendingPathComponent("base").path, "--tuned", Self.scan.appendingPathComponent("clean").path,
                    "--suite", missing, "--out", out.path]
        let plain = try assay(args), isolated = try assay(args + ["--isolate"])
        #expect(plain.status == 2 && isolated.status == 2)
        #expect(isolated.stderr.split(separator: "\n").last == plain.stderr.split(separator: "\n").last, "\(plain.stderr) | \(isolated.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path))
        #expect(try assay(args + ["--cpu-limit", "later"]).status == 4)
    }
}
