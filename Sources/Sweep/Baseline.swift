import Foundation
import AssayCommon
import History
import Models
import Probes
import Scan
import Stats
import TensorCore

/// How far a model is from its approved fingerprint, per probe.
public struct DriftMeasurement: Sendable, Equatable {
    /// Mean over the K positions of JS(approved top-k + tail ‖ current, bucketed the same way).
    public var perProbe: [Double]
    /// Probes whose current greedy continuation differs from the approved one.
    public var changedContinuations: Int
    public var probes: Int
    /// Probes of the fingerprint no longer in the suites (or new ones): not compared.
    public var unmatched: Int
}

public enum BaselineCheck {
    public static let defaultTopK = 20

    /// Greedy K tokens per probe, then one teacher-forced pass of prompt + continuation, whose
    /// K response rows give the top-k. Batch invariant, so the same model gives the same bits.
    public static func capture(model: any CausalLanguageModel, encoder: any ChatEncoder, probes: [Probe], suites: [String: String],
                               responseTokens k: Int, topK: Int = defaultTopK, batchSize: Int = 16) throws -> BehaviouralFingerprint {
        var out: [BehaviouralFingerprint.ProbePrint] = []
        for start in stride(from: 0, to: probes.count, by: batchSize) {
            let batch = Array(probes[start..<min(start + batchSize, probes.count)])
            let prompts = try batch.map { try encoder.encode(system: $0.system, user: $0.prompt) }
            let conts = try model.greedy(prompts: prompts, maxNewTokens: k, stopTokens: [])
            let rows = try teacherForced(model: model, prompts: prompts, continuations: conts)
            for (j, p) in batch.enumerated() {
                let v = rows[j].shape[1]
                var positions: [BehaviouralFingerprint.Position] = []
                rows[j].withUnsafeBufferPointer { r in
                    for t in 0..<conts[j].count {
                        let row = UnsafeBufferPointer(rebasing: r[(t * v)..<((t + 1) * v)])
                        // Highest log-probs first, ties by id (deterministic).
                        let top = (0..<v).sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }.prefix(topK)
                        positions.append(.init(ids: Array(top), logProbs: top.map { row[$0] }))
                    }
                }
                out.append(.init(id: p.id, category: p.category, continuation: conts[j], positions: positions))
            }
        }
        return BehaviouralFingerprint(responseTokens: k, topK: topK, suites: suites, probes: out)
    }

    /// The current model along each approved continuation, against the approved top-k.
    public static func measure(_ fp: BehaviouralFingerprint, model: any CausalLanguageModel, encoder: any ChatEncoder,
                               probes: [Probe], batchSize: Int = 16) throws -> DriftMeasurement {
        let byID = Dictionary(probes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let matched = fp.probes.filter { byID[$0.id] != nil }
        var perProbe: [Double] = []
        var changed = 0
        for start in stride(from: 0, to: matched.count, by: batchSize) {
            let batch = Array(matched[start..<min(start + batchSize, matched.count)])
            let prompts = try batch.map { p in try encoder.encode(system: byID[p.id]!.system, user: byID[p.id]!.prompt) }
            let rows = try teacherForced(model: model, prompts: prompts, continuations: batch.map(\.continuation))
            for (j, p) in batch.enumerated() {
                let v = rows[j].shape[1]
                var js: Double = 0
                var differs = false
                rows[j].withUnsafeBufferPointer { r in
                    for (t, pos) in p.positions.enumerated() {
                        let row = UnsafeBufferPointer(rebasing: r[(t * v)..<((t + 1) * v)])
                        js += bucketedJS(approved: pos, current: row)
                        var best = 0
                        for i in 1..<v where row[i] > row[best] { best = i }
                        if best != p.continuation[t] { differs = true }
                    }
                }
                perProbe.append(p.positions.isEmpty ? 0 : js / Double(p.positions.count))
                if differs { changed += 1 }
            }
        }
        return DriftMeasurement(perProbe: perProbe, changedContinuations: changed, probes: matched.count,
                                unmatched: fp.probes.count - matched.count + Set(probes.map(\.id)).subtracting(fp.probes.map(\.id)).count)
    }

    /// JS divergence (nats) between the approved top-k plus one bucket for the rest of the
    /// vocabulary, and the current distribution folded onto the same k + 1 outcomes.
    static func bucketedJS(approved: BehaviouralFingerprint.Position, current row: UnsafeBufferPointer<Float>) -> Double {
        var p = approved.logProbs.map { exp(Double($0)) }
        var q = approved.ids.map { $0 < row.count ? exp(Double(row[$0])) : 0 }
        p.append(max(0, 1 - p.reduce(0, +)))
        q.append(max(0, 1 - q.reduce(0, +)))
        var js = 0.0
        for (a, b) in zip(p, q) {
            let m = (a + b) / 2
            if a > 0 { js += 0.5 * a * log(a / m) }
            if b > 0 { js += 0.5 * b * log(b / m) }
        }
        return max(0, js)
    }

    /// The drift as findings under the scan's statistics: the mean per-probe divergence with a
    /// seeded 95% bootstrap interval; `baseline_drift` when its lower end exceeds the policy's
    /// `baseline_drift_min_js`. Weight hashes that differ from the approved ones are named.
    public static func findings(_ d: DriftMeasurement, changedFiles: [String], approvedAt: String, policy: ScanPolicy,
                                seed: UInt64) throws -> [Scan.Finding] {
        var out: [Scan.Finding] = []
        let filesNote = changedFiles.isEmpty ? ""
            : "; files changed since approval: \(changedFiles.prefix(5).joined(separator: ", "))\(changedFiles.count > 5 ? ", …" : "")"
        guard !d.perProbe.isEmpty else {
            if !changedFiles.isEmpty {
                out.append(finding(.high, "weights differ from the baseline approved \(approvedAt) "
                                       + "and no approved probe is left to compare\(filesNote)", 0, nil))
            }
            return out
        }
        var rng = SeededRandom(seed: seed).derive("baseline-drift")
        let ci = try bootstrapCI(d.perProbe, rng: &rng)
        let changedShare = Double(d.changedContinuations) / Double(d.probes)
        if ci.low > policy.baselineDriftMinJS || (ci.estimate > policy.baselineDriftMinJS && d.changedContinuations > 0) {
            let sev: Severity = changedShare >= 0.1 ? .high : .medium
            out.append(finding(sev, String(format: "behaviour drifted from the baseline approved %@: mean divergence %.4f "
                                               + "(95%% CI %.4f–%.4f), greedy answers changed on %d of %d probes%@",
                                           approvedAt, ci.estimate, ci.low, ci.high, d.changedContinuations, d.probes, filesNote),
                               ci.estimate, changedShare))
        } else if !changedFiles.isEmpty {
            out.append(finding(.low, String(format: "files changed since the baseline approved %@ "
                                                + "but behaviour matches it (mean divergence %.2g)%@",
                                            approvedAt, ci.estimate, filesNote), ci.estimate, changedShare))
        }
        return out
    }

    static func finding(_ s: Severity, _ title: String, _ value: Double, _ share: Double?) -> Scan.Finding {
        Scan.Finding(kind: .baselineDrift, severity: s, title: title.terminalSafe, statistic: "mean JS vs approved top-k", value: value,
                     attackSuccess: share)
    }

    /// (K, V) log-probs at the K response positions of prompt + continuation, in one pass.
    static func teacherForced(model: any CausalLanguageModel, prompts: [[Int]], continuations: [[Int]]) throws -> [Tensor] {
        let logits = try model.forward(zip(prompts, continuations).map { p, c in
            let tokens = p + c.dropLast()
            return SequenceInput(tokens: tokens, cache: model.makeCache(), logitPositions: Array((p.count - 1)..<(p.count - 1 + c.count)))
        })
        return logits.map { $0.logSoftmax() }
    }
}
