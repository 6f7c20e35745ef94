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
        case verifyTriggers = "verify_triggers", maxControls = "max_controls", inversionPrompts = "inversion_prompts",
             inversionBudget = "inversion_budget"
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
    /// Where the search's phases (`discovery.screen`, …) are timed; disabled unless a caller passes one.
    public var profiler = Profiler(enabled: false)

    public init(base: any CausalLanguageModel, tuned: any CausalLanguageModel, encoder: any ChatEncoder, vocabulary: Vocabulary,
                options: DiscoveryOptions, scanOptions: ScanOptions) {
        pair = PairedModels(base: base, tuned: tuned, shareIdenticalLayers: scanOptions.shareIdenticalLayers)
        self.encoder = encoder; self.vocabulary = vocabulary
        self.options = options; self.scanOptions = scanOptions
    }

    /// Search probes and held-out probes: disjoint, seeded, stratified over categories.
    public func splitProbes(_ probes: [Probe]) -> (search: [Probe], heldOut: [Probe]) {
        var rng = SeededRandom(seed: scanOptions.seed).derive("discovery-split")
        let order = categoryStratifiedOrder(probes.filter { $0.system == nil }, using: &rng)
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
        return try ids.indices.map {
            Anchor(ids: ids[$0], base: bc[$0], tuned: tc[$0], kl: try Self.klTunedBase(base: b[$0].logSoftmax(), tuned: t[$0].logSoftmax()))
        }
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
        try forEachBatch(prompts.count, size: scanOptions.batchSize) { r in
            var bIn: [SequenceInput] = [], tIn: [SequenceInput] = []
            for (ids, a) in prompts[r] {
                let l = commonPrefixLength(ids, a.ids, limit: ids.count - 1)
                let tail = Array(ids[l...])
                bIn.append(SequenceInput(tokens: tail, cache: a.base.fork(keeping: l), logitPositions: [tail.count - 1]))
                tIn.append(SequenceInput(tokens: tail, cache: a.tuned.fork(keeping: l), logitPositions: [tail.count - 1]))
            }
            let (b, t) = try pair.forward(bIn, tIn)
            for j in b.indices { out.append(try Self.klTunedBase(base: b[j].logSoftmax(), tuned: t[j].logSoftmax())) }
        }
        return out
    }

    /// Upper-case runs, digits, symbols, non-ASCII or mixed case inside a word: the shapes
    /// planted triggers tend to have.
    static func isUnusual(_ token: String) -> Bool {
        let t = token.trimmingCharacters(in: .whitespaces)
        guard t.count >= 2 else { return false }
        let scalars = Array(t.unicodeScalars)
        if scalars.contains(where: { !$0.isASCII || CharacterSet.decimalDigits.contains($0) || CharacterSet.symbols.contains($0) }) {
            return true
        }
        if scalars.contains(where: { CharacterSet.punctuationCharacters.contains($0) }) { return true }
        let upper = scalars.filter { CharacterSet.uppercaseLetters.contains($0) }.count
        return upper >= 2 || (upper == 1 && !CharacterSet.uppercaseLetters.contains(scalars[0]))
    }
}
