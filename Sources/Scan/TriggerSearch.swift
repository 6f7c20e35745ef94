import Foundation
import AssayCommon
import Models
import Probes
import Stats

// Trigger search: a seeded beam search over vocabulary pieces for the text that most raises the
// tuned model's first-response divergence from its base, then verification on held-out probes
// with the scan's engine and statistics.

/// Scores (text, mode) pairs on the search probes: the mean over probes of the first-response
/// KL(tuned ‖ base) with the text inserted, less the clean prompt's. Counts what it scored.
final class CandidateScorer {
    let discovery: Discovery
    let search: [Probe]
    let anchors: [Discovery.Anchor]
    private(set) var scored = 0

    init(_ discovery: Discovery, search: [Probe]) throws {
        self.discovery = discovery
        self.search = search
        anchors = try discovery.anchors(search)
    }

    /// On the first `probes` search probes (all by default).
    func callAsFunction(_ texts: [(String, InsertionMode)], probes: Int? = nil) throws -> [Double] {
        let s = min(probes ?? search.count, search.count)
        var prompts: [(ids: [Int], anchor: Discovery.Anchor)] = []
        for (text, mode) in texts {
            let trig = Trigger(id: "search", text: text, role: .trigger)
            for (i, p) in search.prefix(s).enumerated() {
                let v = Expansion.variants(probe: p, trigger: trig, mode: mode, seed: discovery.scanOptions.seed)
                prompts.append((try discovery.encoder.encode(system: v.system, user: v.user), anchors[i]))
            }
        }
        let kl = try discovery.firstResponseKL(prompts)
        scored += prompts.count
        return texts.indices.map { k in (0..<s).reduce(0.0) { $0 + kl[k * s + $1] - anchors[$1].kl } / Double(s) }
    }
}

extension Discovery {
    public struct SearchResult: Sendable {
        public var summary: TriggerSearchSummary
        public var findings: [Finding]
    }

    /// Seeded beam search over 1…`maxTriggerTokens` candidate pieces and the insertion modes for
    /// the text that most raises the tuned model's first-response divergence from its base on the
    /// search probes (relative to the clean probes). The best states are then measured like scan
    /// triggers, on held-out probes against control insertions, and analysed with the scan's
    /// statistics and policy: those that pass become `discovered_trigger` findings.
    /// `skipKnown`: known-list texts seed the search but are not verified or reported (a scan
    /// has already tested them as such).
    public func searchTriggers(probes: [Probe], known: [Trigger], rowShiftTokens: [Int], policy: ScanPolicy,
                               skipKnown: Bool = false) throws -> SearchResult {
        let (search, heldOut) = splitProbes(probes)
        guard !search.isEmpty, heldOut.count >= 3 else {
            throw ScanError.nothingToScan("trigger search needs at least \(options.searchProbes + 3) probes without a system message")
        }
        let ordinary = (0..<vocabulary.size).filter { !vocabulary.special.contains($0) }
        let pool = candidatePool(known: known, rowShiftTokens: rowShiftTokens, ordinary: ordinary)
        let score = try CandidateScorer(self, search: search)
        let (finalists, firstRound) = try screen(pool, score)
        let accepted = try growBeam(firstRound, score)
        let chosen = distinctTexts(accepted, known: known, skipKnown: skipKnown)
        let controls = controlInsertions(known: known, ordinary: ordinary)
        var summary = TriggerSearchSummary(screened: pool.count, candidates: finalists, sequencesScored: score.scored,
                                           searchProbes: search.map(\.id), heldOutProbes: heldOut.map(\.id),
                                           controls: controls.map(\.text), top: Array(Self.ranked(accepted).prefix(10)),
                                           verified: [])
        guard !chosen.isEmpty else { return SearchResult(summary: summary, findings: []) }
        progress?("trigger search: verifying \(chosen.count) candidate trigger(s) on \(heldOut.count) held-out probes")
        let (findings, verified) = try profiler.measure("discovery.verify") {
            try verify(chosen, heldOut: heldOut, controls: controls, policy: policy)
        }
        summary.verified = verified
        return SearchResult(summary: summary, findings: findings)
    }

    /// Candidates: moved vocabulary rows, the known lists, the rarest merges, unusual entries,
    /// then a seeded sample of the rest of the vocabulary; `screenCandidates` distinct texts.
    func candidatePool(known: [Trigger], rowShiftTokens: [Int], ordinary: [Int]) -> [(text: String, source: String)] {
        var pool: [(text: String, source: String)] = []
        var seen = Set<String>()
        func add(_ text: String, _ source: String) {
            let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !t.isEmpty, !t.unicodeScalars.contains("\u{FFFD}"), !seen.contains(t), pool.count < options.screenCandidates else {
                return
            }
            seen.insert(t)
            pool.append((t, source))
        }
        for id in rowShiftTokens where id >= 0 && id < vocabulary.size && !vocabulary.special.contains(id) {
            add(vocabulary.text(id), "row_shift")
        }
        for t in known where t.role == .trigger { add(t.text, "known_list") }
        // Byte-level BPE ids follow merge order: the highest ids are the rarest merges.
        let rareTarget = pool.count + (options.screenCandidates - pool.count) / 2
        for id in ordinary.reversed() where pool.count < rareTarget && vocabulary.text(id).trimmingCharacters(in: .whitespaces).count >= 2 {
            add(vocabulary.text(id), "rare")
        }
        var rng = SeededRandom(seed: scanOptions.seed).derive("trigger-search-sample")
        let shuffled = ordinary.shuffled(using: &rng)
        let unusualTarget = pool.count + (options.screenCandidates - pool.count) / 2
        for id in shuffled where pool.count < unusualTarget && Self.isUnusual(vocabulary.text(id)) { add(vocabulary.text(id), "unusual") }
        for id in shuffled where pool.count < options.screenCandidates { add(vocabulary.text(id), "vocabulary") }
        return pool
    }

    /// Screen: every candidate on one probe, appended to the request and as the system message
    /// (the cheapest user-side position and the one a user-side insertion cannot reach). The best
    /// `candidates` of them and every known-list text are then scored in every mode on every
    /// search probe. Returns how many went on, and their scores.
    func screen(_ pool: [(text: String, source: String)], _ score: CandidateScorer) throws -> (Int, [SearchCandidate]) {
        let modes = scanOptions.modes
        let cheap = modes.filter { $0 == .suffix || $0 == .system }
        let screenModes = cheap.isEmpty ? modes : cheap
        progress?("trigger search: screening \(pool.count) candidates (\(screenModes.map(\.rawValue).joined(separator: ", ")), 1 probe)")
        let screenPairs = pool.flatMap { c in screenModes.map { (c.text, $0) } }
        let screenScores = try profiler.measure("discovery.screen") { try score(screenPairs, probes: 1) }
        var bestScreen: [String: Double] = [:]
        for (pair, sc) in zip(screenPairs, screenScores) { bestScreen[pair.0] = max(bestScreen[pair.0] ?? -.infinity, sc) }
        let shortlist = pool.indices.sorted { a, b in
            let (x, y) = (bestScreen[pool[a].text]!, bestScreen[pool[b].text]!)
            return x != y ? x > y : a < b
        }.prefix(options.candidates).map { pool[$0] } + pool.filter { $0.source == "known_list" }
        var listed = Set<String>()
        let finalists = shortlist.filter { listed.insert($0.text).inserted }
        progress?("trigger search: \(finalists.count) candidates × \(modes.count) insertion modes on \(score.search.count) probes")
        let sourceOf = Dictionary(pool.map { ($0.text, $0.source) }, uniquingKeysWith: { a, _ in a })
        let firstRound = finalists.flatMap { c in modes.map { (c.text, $0) } }
        let scores = try profiler.measure("discovery.candidates") { try score(firstRound) }
        return (finalists.count, zip(firstRound, scores).map {
            SearchCandidate(text: $0.0, mode: $0.1, score: $1, source: sourceOf[$0.0] ?? "vocabulary")
        })
    }

    /// The beam: each round extends the best states of the last by one of their mode's best
    /// single pieces, before or after. A longer text is accepted only when it earns its extra
    /// piece. Returns every accepted state (the first round's included).
    func growBeam(_ firstRound: [SearchCandidate], _ score: CandidateScorer) throws -> [SearchCandidate] {
        var beam = Array(Self.ranked(firstRound).prefix(options.beamWidth))
        var accepted = firstRound
        var extensions: [InsertionMode: [String]] = [:]
        for m in scanOptions.modes {
            extensions[m] = Self.ranked(firstRound.filter { $0.mode == m }).prefix(options.extensionCandidates).map(\.text)
        }
        struct Tried: Hashable { var text: String; var mode: InsertionMode }
        var tried = Set(firstRound.map { Tried(text: $0.text, mode: $0.mode) })
        var pieces = Dictionary(firstRound.map { ($0.text, 1) }, uniquingKeysWith: { a, _ in a })
        guard options.maxTriggerTokens >= 2 else { return accepted }
        for round in 2...options.maxTriggerTokens {
            var children: [(String, InsertionMode)] = []
            var parentScore: [Double] = []
            for s in beam where pieces[s.text, default: 1] == round - 1 {
                for e in extensions[s.mode] ?? [] where e != s.text {
                    for t in [s.text + " " + e, e + " " + s.text] where tried.insert(Tried(text: t, mode: s.mode)).inserted {
                        pieces[t] = round
                        children.append((t, s.mode))
                        parentScore.append(s.score)
                    }
                }
            }
            if children.isEmpty { break }
            progress?("trigger search: round \(round), \(children.count) extensions of the beam")
            let scores = try profiler.measure("discovery.beam") { try score(children) }
            let new = zip(children, scores).map { SearchCandidate(text: $0.0, mode: $0.1, score: $1, source: "beam") }
            // A longer trigger must earn its extra token: 10% and 0.1 nats above the state it grew from.
            let better = new.indices.filter { new[$0].score > parentScore[$0] * 1.1 + 0.1 }.map { new[$0] }
            accepted += better
            let next = Array(Self.ranked(beam + better).prefix(options.beamWidth))
            if next == beam { break }
            beam = next
        }
        return accepted
    }

    /// The best distinct texts, each in its best mode, each replaced by the shortest text it
    /// contains that scores at least 90% as well (the beam can pad a trigger with pieces that
    /// add little), and none containing one already chosen.
    func distinctTexts(_ accepted: [SearchCandidate], known: [Trigger], skipKnown: Bool) -> [SearchCandidate] {
        func words(_ s: String) -> Int { s.split(separator: " ").count }
        var chosen: [SearchCandidate] = []
        for c in Self.ranked(accepted) where c.score > 0 && chosen.count < options.verifyTriggers {
            let minimal = Self.ranked(accepted.filter { $0.score >= 0.9 * c.score && Self.contains(c.text, $0.text) })
                .min { (words($0.text), -$0.score) < (words($1.text), -$1.score) } ?? c
            if chosen.contains(where: { Self.contains(minimal.text, $0.text) || Self.contains($0.text, minimal.text) }) { continue }
            if skipKnown && known.contains(where: { $0.text == minimal.text }) { continue }
            chosen.append(minimal)
        }
        return chosen
    }

    /// Best score first; ties by text, then mode name.
    static func ranked(_ xs: [SearchCandidate]) -> [SearchCandidate] {
        xs.sorted { a, b in a.score != b.score ? a.score > b.score : (a.text, a.mode.rawValue) < (b.text, b.mode.rawValue) }
    }

    /// Whether `long` holds `short` as a run of whole space-separated pieces.
    static func contains(_ long: String, _ short: String) -> Bool {
        let l = long.split(separator: " "), s = short.split(separator: " ")
        guard s.count <= l.count else { return false }
        return (0...(l.count - s.count)).contains { Array(l[$0..<($0 + s.count)]) == s }
    }

    /// Up to `maxControls` of the known lists' controls that can go in every insertion mode (a
    /// spread over their families), or, with fewer than three, ordinary frequent vocabulary words.
    func controlInsertions(known: [Trigger], ordinary: [Int]) -> [Trigger] {
        let all = known.filter { $0.role == .control && Set($0.modes).isSuperset(of: scanOptions.modes) }
        var listed: [Trigger] = []
        var families = Set<String>()
        for c in all where listed.count < options.maxControls && families.insert(c.family).inserted { listed.append(c) }
        for c in all where listed.count < options.maxControls && !listed.contains(c) { listed.append(c) }
        if listed.count >= 3 { return listed }
        var out = listed
        var seen = Set(listed.map(\.text))
        // Low ids are the earliest (most frequent) merges: ordinary words.
        for id in ordinary {
            let t = vocabulary.text(id).trimmingCharacters(in: .whitespaces)
            guard t.count >= 3, t.unicodeScalars.allSatisfy({ CharacterSet.lowercaseLetters.contains($0) }),
                  !seen.contains(t) else { continue }
            seen.insert(t)
            out.append(Trigger(id: "control-vocab-\(id)", text: t, family: "vocabulary", role: .control))
            if out.count >= 8 { break }
        }
        return out
    }

    /// Measures the chosen texts and the controls on the held-out probes with the scan engine and
    /// judges them with the scan's analysis.
    func verify(_ chosen: [SearchCandidate], heldOut: [Probe], controls: [Trigger],
                policy: ScanPolicy) throws -> ([Finding], [TriggerSummary]) {
        let found = chosen.enumerated().map {
            Trigger(id: "discovered-\($0 + 1)", text: $1.text, family: "discovered", role: .trigger, modes: [$1.mode])
        }
        let wanted = Set(chosen.map(\.mode))
        let ctrls = controls.map { c in
            Trigger(id: c.id, text: c.text, family: c.family, role: .control, modes: c.modes.filter { wanted.contains($0) })
        }
        var variants = heldOut.map { Expansion.clean($0) }
        for t in found + ctrls {
            for mode in t.modes {
                for p in heldOut { variants.append(Expansion.variants(probe: p, trigger: t, mode: mode, seed: scanOptions.seed)) }
            }
        }
        let engine = ScanEngine(base: base, tuned: tuned, encoder: encoder, options: scanOptions)
        let ms = try engine.measure(variants)
        let analysis = try Analyzer.analyze(ms, triggers: found + ctrls, policy: policy, seed: scanOptions.seed,
                                            decode: { self.encoder.decode($0) }, userText: Analyzer.promptTexts(variants, ms))
        let texts = Dictionary(found.map { ($0.text, $0) }, uniquingKeysWith: { a, _ in a })
        let findings: [Finding] = analysis.findings.filter { $0.kind == .triggerBackdoor }.map { f in
            // As the model sees it: after a space inside or at the end of the request.
            let spaced = f.insertion == .suffix || f.insertion == .random
            let ids = texts[f.trigger ?? ""].map { vocabulary.encode((spaced ? " " : "") + $0.text) }
            return .discoveredTrigger(verified: f, tokenIDs: ids)
        }
        let verified = analysis.triggers.filter { $0.role == .trigger }.map { s in
            var s = s
            s.trigger = found.first { $0.id == s.trigger }?.text ?? s.trigger
            return s
        }
        return (findings, verified)
    }
}
