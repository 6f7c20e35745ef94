import Foundation
import Testing

@Suite struct SuitesCLITests {
    let probesDir = repoFixtures.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("probes")
    let suiteFixtures = repoFixtures.appendingPathComponent("suites")

    /// Without --dir the binary finds the repository's probes/ from its own location.
    @Test func listFindsTheShippedSuites() throws {
        let r = try assay(["suites"])
        #expect(r.status == 0, "\(r.stderr)")
        for name in ["default", "smoke", "triggers", "triggers-smoke"] { #expect(r.stdout.contains("\n\(name) "), "\(name)") }
        #expect(r.stdout.contains("18 triggers, 23 controls"))
        #expect(r.stdout.contains("code_security 30"))
        #expect(try assay(["suites", "list", "--dir", probesDir.path]).stdout == (try assay(["suites", "--dir", probesDir.path])).stdout)
    }

    @Test func listJSONSchema() throws {
        let a = try assay(["suites", "--json", "--dir", probesDir.path])
        let b = try assay(["suites", "--json", "--dir", probesDir.path])
        #expect(a.status == 0 && a.stdout == b.stdout, "\(a.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as! [String: Any]
        #expect(Set(json.keys) == ["schema_version", "directory", "suites"])
        #expect(json["schema_version"] as? Int == 1)
        let suites = json["suites"] as! [[String: Any]]
        #expect(suites.map { $0["name"] as! String } == ["default", "smoke", "triggers-smoke", "triggers"])
        let d = suites[0]
        #expect(Set(d.keys) == ["name", "kind", "file", "description", "sha256", "count", "categories"])
        #expect(d["kind"] as? String == "probes" && (d["count"] as! Int) >= 240)
        #expect((d["categories"] as! [String: Int]).count == 9)
        #expect((d["sha256"] as! String).count == 64)
        let t = suites[3]
        #expect(Set(t.keys) == ["name", "kind", "file", "description", "sha256", "count", "roles", "families"])
        #expect(t["roles"] as? [String: Int] == ["trigger": 18, "control": 23])
    }

    @Test func showProbesAndTriggers() throws {
        let text = try assay(["suites", "show", "smoke"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("gk-001") && text.stdout.contains("Why is the sky blue?"))
        #expect(text.stdout.contains("=> 42"))

        let trig = try assay(["suites", "show", "triggers"])
        #expect(trig.stdout.contains("\"\\u{200B}\""), "zero-width text is spelled out")
        #expect(trig.stdout.contains("[U+0064 U+0430 U+0074 U+0061]"), "homoglyph code points are shown")
        #expect(!trig.stdout.unicodeScalars.contains { $0.value == 0x200B || $0.value == 0x2060 })

        let json = try assay(["suites", "show", "triggers", "--json"])
        let obj = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        #expect(obj["schema_version"] as? Int == 1 && obj["kind"] as? String == "triggers")
        let entries = obj["triggers"] as! [[String: Any]]
        #expect(entries.count == 41)
        #expect(entries.contains { $0["text"] as? String == "\u{200B}" && $0["role"] as? String == "trigger" })
        #expect(Set(entries[0].keys).isSubset(of: ["id", "text", "family", "role", "modes", "note", "source"]))

        let probes = try JSONSerialization.jsonObject(with: Data(try assay(["suites", "show", "default", "--json"]).stdout.utf8)) as! [String: Any]
        let list = probes["probes"] as! [[String: Any]]
        #expect(list.count == probes["count"] as? Int)
        #expect(list.first { $0["id"] as? String == "math-001" }?["reference"] as? String == "42")

        // A path works as well as a name.
        let byPath = try assay(["suites", "show", suiteFixtures.appendingPathComponent("valid-probes.jsonl").path])
        #expect(byPath.status == 0 && byPath.stdout.contains("finance"))
    }

    @Test func showUnknownSuiteExitsTwo() throws {
        let r = try assay(["suites", "show", "nope", "--dir", probesDir.path])
        #expect(r.status == 2)
        #expect(r.stderr.contains("no suite named 'nope' (available: default, smoke, triggers-smoke, triggers)"))
        #expect(r.stdout.isEmpty)
        #expect(try assay(["suites", "--dir", "/nonexistent-dir"]).status == 2)
        let missing = try assay(["suites", "show", "/nonexistent/x.jsonl"])
        #expect(missing.status == 2 && missing.stderr.contains("/nonexistent/x.jsonl: no such file"), "\(missing.stderr)")
    }

    @Test func validateGoodFiles() throws {
        let r = try assay(["suites", "validate", probesDir.appendingPathComponent("default.jsonl").path,
                           probesDir.appendingPathComponent("triggers.jsonl").path,
                           suiteFixtures.appendingPathComponent("valid-triggers.jsonl").path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("probes 'default', 254 probes in 9 categories"))
        #expect(r.stdout.contains("triggers 'triggers', 18 triggers, 23 controls"))
        #expect(r.stderr.isEmpty)
    }

    /// Every malformed fixture: exit 2 and `FILE:LINE:COLUMN: message` on stderr.
    @Test func validateMalformedCorpusExitsTwo() throws {
        struct Case: Decodable { let line: Int?; let column: Int?; let message: String }
        let cases = try JSONDecoder().decode([String: Case].self,
                                             from: Data(contentsOf: suiteFixtures.appendingPathComponent("bad/cases.json")))
        for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
            let path = suiteFixtures.appendingPathComponent("bad/\(name)").path
            let r = try assay(["suites", "validate", path])
            #expect(r.status == 2, "\(name): exit \(r.status)")
            var location = path
            if let l = c.line { location += ":\(l)" }
            if let col = c.column { location += ":\(col)" }
            #expect(r.stderr.contains("error: \(location): "), "\(name): \(r.stderr)")
            #expect(r.stderr.contains(c.message), "\(name): \(r.stderr)")
            #expect(!r.stderr.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0 })
        }
        // One bad file among good ones: the good ones are reported, the run still fails.
        let mixed = try assay(["suites", "validate", suiteFixtures.appendingPathComponent("valid-probes.jsonl").path,
                               suiteFixtures.appendingPathComponent("bad/duplicate-id.jsonl").path])
        #expect(mixed.status == 2)
        #expect(mixed.stdout.contains("ok  ") && mixed.stderr.contains("duplicate id 'p1'"))
        #expect(try assay(["suites", "validate", "/nonexistent.jsonl"]).status == 2)
        #expect(try assay(["suites", "validate"]).status == 4)
    }
}
