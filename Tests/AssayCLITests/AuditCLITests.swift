import Foundation
import Testing

let provenanceCorpus = repoFixtures.appendingPathComponent("provenance")

@Suite struct AuditCLITests {
    struct Case: Decodable { let exit: Int32; let codes: [String]; let callables: [String] }

    /// Every corpus case through the binary: its exit code, and its findings in --json.
    @Test func corpusExitCodes() throws {
        let cases = try JSONDecoder().decode([String: Case].self, from: Data(contentsOf: provenanceCorpus.appendingPathComponent("expected.json")))
        for (rel, c) in cases.sorted(by: { $0.key < $1.key }) {
            let r = try assay(["audit", provenanceCorpus.appendingPathComponent(rel).path, "--json"])
            #expect(r.status == c.exit, "\(rel): exit \(r.status) \(r.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            let findings = json["findings"] as! [[String: Any]]
            let codes = Set(findings.compactMap { $0["code"] as? String })
            #expect(Set(c.codes).isSubset(of: codes), "\(rel): \(codes.sorted())")
        }
    }

    @Test func jsonSchemaAndTextOutput() throws {
        let path = provenanceCorpus.appendingPathComponent("malicious/exec_stack_global.pkl").path
        let a = try assay(["audit", path, "--json"]), b = try assay(["audit", path, "--json"])
        #expect(a.status == 1 && a.stdout == b.stdout)
        let json = try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as! [String: Any]
        #expect(Set(json.keys) == ["schema_version", "path", "policy", "files", "findings", "counts", "verdict"])
        #expect(json["verdict"] as? String == "fail")
        let file = (json["files"] as! [[String: Any]])[0]
        #expect(Set(file.keys).isSuperset(of: ["path", "type", "bytes", "sha256", "format", "extension_mismatch", "analysed", "pickle"]))
        let f = (json["findings"] as! [[String: Any]]).first { $0["callable"] as? String == "builtins.exec" }!
        #expect(f["kind"] as? String == "artifact" && f["severity"] as? String == "critical" && f["offset"] is Int)
        let text = try assay(["audit", path])
        #expect(text.stdout.contains("[critical] pickle_dangerous_callable"))
        #expect(text.stdout.contains("builtins.exec"))
        #expect(text.stdout.contains("verdict: fail"))
    }

    @Test func failOnChangesTheThreshold() throws {
        let unlisted = provenanceCorpus.appendingPathComponent("malicious/unlisted.pkl").path
        #expect(try assay(["audit", unlisted]).status == 1)
        #expect(try assay(["audit", unlisted, "--fail-on", "critical"]).status == 0)
        let shapes = provenanceCorpus.appendingPathComponent("dirs/shape_mismatch").path
        #expect(try assay(["audit", shapes]).status == 0)
        #expect(try assay(["audit", shapes, "--fail-on", "medium"]).status == 1)
        // Never 0 for something that could not be analysed, whatever the threshold.
        #expect(try assay(["audit", provenanceCorpus.appendingPathComponent("malicious/truncated_benign.pkl").path, "--fail-on", "critical"]).status == 2)
        #expect(try assay(["audit", unlisted, "--fail-on", "severe"]).status == 4)
    }

    @Test func missingAndEmptyPaths() throws {
        let missing = try assay(["audit", "/nonexistent/model"])
        #expect(missing.status == 2 && missing.stderr.contains("/nonexistent/model"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-cli-empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try assay(["audit", dir.path]).status == 3)
        #expect(try assay(["manifest", "create", dir.path]).status == 3)
    }

    @Test func manifestCreateAndVerify() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-cli-manifest-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: repoFixtures.appendingPathComponent("tiny-model"), to: dir)
        let out = dir.appendingPathComponent("MANIFEST.json").path
        #expect(try assay(["manifest", "create", dir.path, "--out", out]).status == 0)
        let stdout = try assay(["manifest", "create", dir.path])
        #expect(stdout.status == 0 && stdout.stdout.contains("\"schema_version\" : 1"))
        let ok = try assay(["manifest", "verify", dir.path, out, "--json"])
        #expect(ok.status == 0, "\(ok.stdout) \(ok.stderr)")
        try Data("{}".utf8).write(to: dir.appendingPathComponent("config.json"))
        let bad = try assay(["manifest", "verify", dir.path, out])
        #expect(bad.status == 1 && bad.stdout.contains("changed  config.json"))
        try Data("not json".utf8).write(to: dir.appendingPathComponent("bad.json"))
        #expect(try assay(["manifest", "verify", dir.path, dir.appendingPathComponent("bad.json").path]).status == 2)
    }

    @Test func modelSigningVerify() throws {
        let s = provenanceCorpus.appendingPathComponent("signing")
        let model = s.appendingPathComponent("model").path, key = s.appendingPathComponent("key.pub.pem").path
        let ok = try assay(["manifest", "verify", model, s.appendingPathComponent("model.sig").path, "--public-key", key])
        #expect(ok.status == 0 && ok.stdout.contains("signature: verified"))
        #expect(try assay(["manifest", "verify", model, s.appendingPathComponent("tampered_signature.sig").path, "--public-key", key]).status == 1)
        #expect(try assay(["manifest", "verify", model, s.appendingPathComponent("inconsistent_statement.json").path]).status == 2)
        #expect(try assay(["manifest", "verify", model, s.appendingPathComponent("model.sig").path, "--public-key", "/nonexistent.pem"]).status == 2)
    }
}
