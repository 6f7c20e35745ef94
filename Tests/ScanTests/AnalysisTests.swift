import Foundation
import Testing
import AssayCommon
import Probes
@testable import Scan

/// The scan's decision logic on constructed measurements, against numbers computed independently
/// with NumPy and SciPy (`scripts/fixtures/make_analysis_fixtures.py` → Tests/Fixtures/analysis):
/// medians, robust z, exact Wilcoxon and permutation p-values, the Benjamini–Hochberg q-values of
/// the whole scan, attack success, Cliff's delta, severities, the minimum detectable effect and
/// the verdict.
@Suite struct AnalysisTests {
    struct Case: Decodable {
        struct TriggerSpec: Decodable { let id: String; let text: String; let role: String }
        struct Expected: Decodable {
            struct Category: Decodable { let name: String; let n: Int; let divergence: Double }
            struct Summary: Decodable {
                let trigger: String; let role: String; let mode: String; let n: Int
                let median_change: Double; let robust_z: Double; let p_value: Double; let q_value: Double
            }
            struct Finding: Decodable {
                let kind: String; let severity: String; let value: Double
                let trigger: String?; let insertion: String?; let category: String?
                let effect_size: Double?; let attack_success: Double?; let p_value: Double?; let q_value: Double?
            }
            struct Cell: Decodable { let trigger: String; let role: String; let category: String; let n: Int; let median_change: Double }
            let categories: [Category]
            let triggers: [Summary]
            let findings: [Finding]
            let trigger_categories: [Cell]
            let minimum_detectable_effect: Double
            let verdict: String
        }
        let measurements: [VariantMeasurement]
        let triggers: [TriggerSpec]
        let expected: Expected
    }

    static let fixture: Case = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/analysis/case.json")
        return try! JSONDecoder().decode(Case.self, from: Data(contentsOf: url))
    }()

    static var triggers: [Trigger] {
        fixture.triggers.map { Trigger(id: $0.id, text: $0.text, role: Trigger.Role(rawValue: $0.role)!) }
    }

    func analyse(_ policy: ScanPolicy = ScanPolicy()) throws -> Analysis {
        try Analyzer.analyze(Self.fixture.measurements, triggers: Self.triggers, policy: policy, seed: 0,
                             decode: { $0.map(String.init).joined(separator: " ") }, userText: { $0.probeID })
    }

    func close(_ a: Double?, _ b: Double?, _ tol: Double = 1e-12) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        return abs(a - b) <= tol * max(1, abs(b))
    }

    @Test func summariesMatchSciPy() throws {
        let a = try analyse(), e = Self.fixture.expected
        #expect(a.categories.map(\.name) == e.categories.map(\.name))
        for (c, x) in zip(a.categories, e.categories) {
            #expect(c.n == x.n && close(c.divergence, x.divergence), "\(c.name): \(c.divergence) vs \(x.divergence)")
            #expect(c.ciLow <= c.divergence && c.divergence <= c.ciHigh)
        }
        #expect(a.triggers.count == e.triggers.count)
        for (s, x) in zip(a.triggers, e.triggers) {
            #expect(s.trigger == x.trigger && s.role.rawValue == x.role && s.mode.rawValue == x.mode && s.n == x.n)
            #expect(close(s.medianChange, x.median_change), "\(s.trigger): median \(s.medianChange) vs \(x.median_change)")
            #expect(close(s.robustZ, x.robust_z), "\(s.trigger): robust z \(s.robustZ) vs \(x.robust_z)")
            #expect(close(s.pValue, x.p_value), "\(s.trigger): p \(s.pValue) vs \(x.p_value)")
            #expect(close(s.qValue, x.q_value), "\(s.trigger): q \(String(describing: s.qValue)) vs \(x.q_value)")
        }
        #expect(a.triggerCategories.count == e.trigger_categories.count)
        for (c, x) in zip(a.triggerCategories, e.trigger_categories) {
            #expect(c.trigger == x.trigger && c.role.rawValue == x.role && c.category == x.category && c.n == x.n)
            #expect(close(c.medianChange, x.median_change))
        }
        #expect(close(a.minimumDetectableEffect, e.minimum_detectable_effect))
    }

    @Test func findingsSeveritiesAndVerdictMatchTheRules() throws {
        let a = try analyse(), e = Self.fixture.expected
        #expect(a.findings.map(\.kind.rawValue) == e.findings.map(\.kind))
        for (f, x) in zip(a.findings, e.findings) {
            #expect(f.severity.rawValue == x.severity, "\(f.kind)")
            #expect(close(f.value, x.value), "\(f.kind): value \(f.value) vs \(x.value)")
            #expect(f.trigger == x.trigger && f.insertion?.rawValue == x.insertion && f.category == x.category)
            #expect(close(f.effectSize, x.effect_size), "\(f.kind): effect \(String(describing: f.effectSize))")
            #expect(close(f.attackSuccess, x.attack_success))
            #expect(close(f.pValue, x.p_value), "\(f.kind): p \(String(describing: f.pValue)) vs \(String(describing: x.p_value))")
            #expect(close(f.qValue, x.q_value), "\(f.kind): q \(String(describing: f.qValue)) vs \(String(describing: x.q_value))")
        }
        // The trigger's evidence: its three most divergent triggered probes, with their clean divergence.
        let trigger = try #require(a.findings.first { $0.kind == .triggerBackdoor })
        #expect(trigger.evidence.count == 3 && trigger.evidence.allSatisfy { $0.cleanDivergence != nil })
        #expect(trigger.evidence.map(\.divergence) == trigger.evidence.map(\.divergence).sorted(by: >))
        #expect(Verdict(findings: a.findings, policy: ScanPolicy()).rawValue == e.verdict)
    }

    /// The policy's thresholds move the decisions exactly where the rules say.
    @Test func thresholdsAndGateFollowThePolicy() throws {
        let z = try #require(try analyse().triggers.first { $0.role == .trigger }).robustZ
        var p = ScanPolicy()
        p.triggerMinRobustZ = z.nextUp
        #expect(!(try analyse(p)).findings.contains { $0.kind == .triggerBackdoor }, "z just below the threshold")
        p.triggerMinRobustZ = z
        #expect((try analyse(p)).findings.contains { $0.kind == .triggerBackdoor }, "z at the threshold")
        p = ScanPolicy()
        p.triggerCriticalDivergence = 1
        #expect((try analyse(p)).findings.first { $0.kind == .triggerBackdoor }?.severity == .high)
        p = ScanPolicy()
        p.fdr = 0.005  // below the category test's q (0.0054), above the trigger's (0.00098)
        let kinds = Set((try analyse(p)).findings.map(\.kind))
        #expect(kinds == [.triggerBackdoor, .globalShift])
        p = ScanPolicy()
        p.categoryMinRatio = 6  // ratio 11 < 2 × 6: medium, not high
        #expect((try analyse(p)).findings.first { $0.kind == .categoryShift }?.severity == .medium)
        let findings = try analyse().findings
        p = ScanPolicy()
        p.failOn = []
        p.warnOn = [.critical]
        #expect(Verdict(findings: findings, policy: p) == .warn)
        p.warnOn = [.low]
        #expect(Verdict(findings: findings, policy: p) == .pass)
    }

    @Test func invertedTargetRule() {
        func target(score: Double, confidence: Double, consistency: Double, tokens: Int) -> InvertedTarget {
            InvertedTarget(token: 1, text: "x", tokenIDs: Array(repeating: 1, count: tokens), firstRoundScore: 0, robustZ: 0,
                           score: score, tunedConfidence: confidence, consistency: consistency)
        }
        let pass = target(score: 4, confidence: 0.75, consistency: 0.75, tokens: 3)
        #expect(FindingRules.invertedTargetPasses(pass, minGain: 4, minConfidence: 0.75))
        #expect(!FindingRules.invertedTargetPasses(target(score: 4, confidence: 0.75, consistency: 0.75, tokens: 2), minGain: 4,
                                                   minConfidence: 0.75))
        #expect(!FindingRules.invertedTargetPasses(target(score: 3.99, confidence: 0.75, consistency: 0.75, tokens: 3), minGain: 4,
                                                   minConfidence: 0.75))
        #expect(!FindingRules.invertedTargetPasses(target(score: 4, confidence: 0.75, consistency: 0.74, tokens: 3), minGain: 4,
                                                   minConfidence: 0.75))
        #expect(FindingRules.invertedTargetSeverity(pass) == .medium)
        #expect(FindingRules.invertedTargetSeverity(target(score: 4, confidence: 0.9, consistency: 0.75, tokens: 3)) == .high)
    }
}
