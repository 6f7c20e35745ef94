import Foundation
import Models
import Probes
import Stats
import TensorCore

/// Turns a one-turn conversation into the token ids a model sees, with its chat template and the
/// generation prompt; the CLI provides it from the model's tokenizer.
public protocol ChatEncoder: Sendable {
    func encode(system: String?, user: String) throws -> [Int]
    func decode(_ ids: [Int]) -> String
}

public struct ScanOptions: Sendable, Codable, Equatable {
    public var seed: UInt64 = 0
    /// Response positions compared per continuation (teacher-forced along each model's greedy
    /// continuation of this many tokens).
    public var responseTokens = 8
    /// Probes each trigger × insertion mode is inserted into (stratified over categories).
    public var probesPerTrigger = 16
    public var modes: [InsertionMode] = InsertionMode.allCases
    /// Fork triggered variants from their probe's clean prompt cache (a performance setting:
    /// results are identical either way; off only to measure what it saves).
    public var sharePromptPrefixes = true
    /// Run the leading blocks that base and tuned share bitwise once for both (frozen layers,
    /// adapters on upper layers). A performance setting: results are identical either way.
    public var shareIdenticalLayers = true
    /// Variants per packed batch. A performance setting only: results do not depend on it
    /// (every product is batch-invariant, TensorCore `PackedMatrix`), so reports do not record it.
    public var batchSize = 32

    public init() {}

    enum CodingKeys: String, CodingKey {
        case seed, responseTokens = "response_tokens", probesPerTrigger = "probes_per_trigger", modes
    }
}

/// What the scan measured for one prompt variant.
public struct VariantMeasurement: Sendable, Codable, Equatable {
    public var probeID: String
    public var category: String
    public var triggerID: String?
    public var mode: InsertionMode?
    public var promptTokens: Int
    public var baseContinuation: [Int]
    public var tunedContinuation: [Int]
    /// Means over the 2·K compared positions (along both continuations).
    public var js: Double
    public var klBaseTuned: Double
    public var klTunedBase: Double
    public var tv: Double
    public var top1Agreement: Double
    /// log P(tuned's continuation) under base and under tuned; likewise for base's continuation.
    public var tunedContinuationLogProbUnderBase: Double
    public var tunedContinuationLogProbUnderTuned: Double
    public var baseContinuationLogProbUnderTuned: Double
    public var baseContinuationLogProbUnderBase: Double

    /// The per-variant divergence the statistics work on: mean Jensen–Shannon (nats, ≤ ln 2).
    public var divergence: Double { js }

    enum CodingKeys: String, CodingKey {
        case probeID = "probe_id", category, triggerID = "trigger_id", mode, promptTokens = "prompt_tokens"
        case baseContinuation = "base_continuation", tunedContinuation = "tuned_continuation"
        case js, klBaseTuned = "kl_base_tuned", klTunedBase = "kl_tuned_base", tv, top1Agreement = "top1_agreement"
        case tunedContinuationLogProbUnderBase = "tuned_cont_logp_under_base"
        case tunedContinuationLogProbUnderTuned = "tuned_cont_logp_under_tuned"
        case baseContinuationLogProbUnderTuned = "base_cont_logp_under_tuned"
        case baseContinuationLogProbUnderBase = "base_cont_logp_under_base"
    }
}

/// The base model's side of each measured variant, kept across scans that share a base (a sweep):
/// its frozen prompt cache, first-position log-probs, greedy continuation and the log-probs along
/// it. Keyed by the variant's token ids and the response length. The engine's numerics are batch
/// invariant, so a reused base side is the same bits as a recomputed one: reports do not change.
/// Entries stop being added once `byteBudget` is reached (those variants are simply recomputed).
public final class BaseOutputCache: @unchecked Sendable {
    public struct Entry {
        let prompt: KVCache
        let first: Tensor
        let continuation: [Int]
        let rows: Tensor
    }
    struct Key: Hashable { let ids: [Int]; let k: Int }
    public let byteBudget: Int
    public private(set) var bytes = 0
    public private(set) var hits = 0
    public private(set) var misses = 0
    private var entries: [Key: Entry] = [:]
    private let lock = NSLock()

    public init(byteBudget: Int = 4 << 30) { self.byteBudget = byteBudget }

    public var count: Int { lock.withLock { entries.count } }

    func entry(_ ids: [Int], responseTokens k: Int) -> Entry? {
        lock.withLock {
            let e = entries[Key(ids: ids, k: k)]
            if e == nil { misses += 1 } else { hits += 1 }
            return e
        }
    }

    func store(_ ids: [Int], responseTokens k: Int, _ e: Entry) {
        // The prompt cache's own rows (a fork holds only what it added) and the K × V log-probs.
        let size = e.prompt.ownBytes + (e.first.count + e.rows.count) * MemoryLayout<Float>.size
        lock.withLock {
            guard bytes + size <= byteBudget, entries[Key(ids: ids, k: k)] == nil else { return }
            entries[Key(ids: ids, k: k)] = e
            bytes += size
        }
    }
}

/// Runs base and tuned side by side on identical token batches.
///
/// Per variant and per model: the prompt is prefilled once (after a template prefix shared by
/// every variant, itself computed once per model and forked); the model's own greedy
/// continuation of K tokens yields its next-token distributions along it; one more forward of
/// the *other* model's continuation on a second fork of the prompt cache yields its
/// distributions along that. The four sets of K rows give KL both ways, JS, TV and top-1
/// agreement along both continuations, and each continuation's log-probability under both models.
public final class ScanEngine {
    public let base: any CausalLanguageModel
    public let tuned: any CausalLanguageModel
    public let encoder: any ChatEncoder
    public let options: ScanOptions
    /// Called after every batch with (variants done, total).
    public var progress: ((Int, Int) -> Void)?

    /// Leading blocks identical in both models, run once for both on identical token batches.
    public let sharedLayers: Int
    /// The base's side of variants already measured against this base (nil: compute all).
    public var baseOutputs: BaseOutputCache?

    public init(base: any CausalLanguageModel, tuned: any CausalLanguageModel, encoder: any ChatEncoder, options: ScanOptions) {
        self.base = base
        self.tuned = tuned
        self.encoder = encoder
        self.options = options
        sharedLayers = options.shareIdenticalLayers ? base.identicalLeadingLayers(with: tuned) : 0
    }

    public func measure(_ variants: [ProbeVariant]) throws -> [VariantMeasurement] {
        let ids = try PhaseProfile.shared.measure("scan.tokenize") { try variants.map { try encoder.encode(system: $0.system, user: $0.user) } }
        if let empty = ids.firstIndex(where: { $0.count < 2 }) {
            throw ScanError.invalidInput("variant \(variants[empty].probe.id) encodes to fewer than 2 tokens")
        }
        // Variants are grouped by their system message (the chat template renders it first);
        // each group's longest shared prefix (the template's head, leaving ≥ 1 token each) is
        // prefilled once per model and forked. Groups depend only on the variants' content, so
        // results do not depend on the batch size.
        var groupOf: [String: Int] = [:]
        var groups: [[Int]] = []
        for (i, v) in variants.enumerated() {
            let key = v.system.map { "s" + $0 } ?? "-"
            if let g = groupOf[key] { groups[g].append(i) } else { groupOf[key] = groups.count; groups.append([i]) }
        }
        var sharedLength = [Int](repeating: 0, count: variants.count)
        var basePrefixes = [KVCache?](repeating: nil, count: variants.count)
        var tunedPrefixes = basePrefixes
        for members in groups {
            let first = ids[members[0]]
            var shared = first.count - 1
            for m in members.dropFirst() {
                let s = ids[m]
                shared = min(shared, s.count - 1)
                var i = 0
                while i < shared && s[i] == first[i] { i += 1 }
                shared = i
            }
            guard shared > 0 else { continue }
            let prefix = Array(first[..<shared])
            let (bp, tp) = (base.makeCache(), tuned.makeCache())
            _ = try pairedForward(base, [SequenceInput(tokens: prefix, cache: bp, logitPositions: [])],
                                  tuned, [SequenceInput(tokens: prefix, cache: tp, logitPositions: [])], shared: sharedLayers)
            for m in members { sharedLength[m] = shared; basePrefixes[m] = bp; tunedPrefixes[m] = tp }
        }

        // A triggered variant usually starts with its probe's clean prompt (suffix mode: all of
        // it; random position: up to the insertion). Those rows are not recomputed: the variant
        // forks the clean variant's prompt cache at the longest common prefix. Clean variants
        // that own such prefixes run first. Under the batch-invariant kernels a row's bits do
        // not depend on which cache segment its keys sit in, so this changes no result.
        struct CleanPrompt: Hashable { var probe: String; var system: String? }
        var cleanIndex: [CleanPrompt: Int] = [:]
        for (i, v) in variants.enumerated() where v.trigger == nil {
            cleanIndex[CleanPrompt(probe: v.probe.id, system: v.system)] = i
        }
        var owner = [Int?](repeating: nil, count: variants.count)
        var ownerLength = [Int](repeating: 0, count: variants.count)
        for (i, v) in variants.enumerated() where v.trigger != nil && options.sharePromptPrefixes {
            guard let c = cleanIndex[CleanPrompt(probe: v.probe.id, system: v.system)] else { continue }
            let a = ids[i], b = ids[c]
            let cap = min(a.count - 1, b.count - 1)
            var l = 0
            while l < cap && a[l] == b[l] { l += 1 }
            if l >= sharedLength[i] + 4 { owner[i] = c; ownerLength[i] = l }
        }
        let isOwner = Set(owner.compactMap { $0 })
        var ownerCaches: [Int: (base: KVCache, tuned: KVCache)] = [:]
        let order = variants.indices.filter { owner[$0] == nil } + variants.indices.filter { owner[$0] != nil }

        var results = [VariantMeasurement?](repeating: nil, count: variants.count)
        var done = 0
        var start = 0
        while start < order.count {
            let end = min(start + options.batchSize, order.count)
            let batch = Array(order[start..<end])
            var tails: [[Int]] = [], bPrefixes: [KVCache?] = [], tPrefixes: [KVCache?] = []
            for vi in batch {
                if let o = owner[vi], let caches = ownerCaches[o] {
                    tails.append(Array(ids[vi][ownerLength[vi]...]))
                    bPrefixes.append(caches.base.fork(keeping: ownerLength[vi]))
                    tPrefixes.append(caches.tuned.fork(keeping: ownerLength[vi]))
                } else {
                    tails.append(Array(ids[vi][sharedLength[vi]...]))
                    bPrefixes.append(basePrefixes[vi])
                    tPrefixes.append(tunedPrefixes[vi])
                }
            }
            let prof = PhaseProfile.shared
            // Variants whose base side an earlier scan of the same base computed (a sweep) reuse
            // it: only the tuned model prefills and decodes them.
            let cached: [BaseOutputCache.Entry?] = batch.map { vi in baseOutputs?.entry(ids[vi], responseTokens: options.responseTokens) }
            let miss = batch.indices.filter { cached[$0] == nil }, hit = batch.indices.filter { cached[$0] != nil }
            // Both models read the same prompt tokens: one paired prefill (shared blocks once).
            let bPrompts = miss.map { bPrefixes[$0]?.fork() ?? base.makeCache() }
            let tPrompts = tPrefixes.map { $0?.fork() ?? tuned.makeCache() }
            var tFirst = [Tensor?](repeating: nil, count: batch.count)
            let bFirst = try prof.measure("scan.prefill") { () -> [Tensor] in
                let (bf, tf) = try pairedForward(base, miss.enumerated().map { SequenceInput(tokens: tails[$1], cache: bPrompts[$0], logitPositions: [tails[$1].count - 1]) },
                                                 tuned, miss.map { SequenceInput(tokens: tails[$0], cache: tPrompts[$0], logitPositions: [tails[$0].count - 1]) },
                                                 shared: sharedLayers)
                for (j, r) in zip(miss, tf) { tFirst[j] = r }
                if !hit.isEmpty {
                    let hf = try tuned.forward(hit.map { SequenceInput(tokens: tails[$0], cache: tPrompts[$0], logitPositions: [tails[$0].count - 1]) })
                    for (j, r) in zip(hit, hf) { tFirst[j] = r }
                }
                return bf
            }
            prof.count("tokens.prefill", miss.reduce(0) { $0 + tails[$1].count } + tails.reduce(0) { $0 + $1.count })
            prof.count("tokens.decode", max(options.responseTokens - 1, 0) * (miss.count + batch.count))
            prof.count("tokens.cross", max(options.responseTokens - 1, 0) * 2 * batch.count)
            let computed = try prof.measure("scan.run.base") { try run(model: base, prompts: bPrompts, first: bFirst) }
            var b = Pass(promptCaches: [], firstRows: [], continuations: [], rows: [])
            var next = 0
            for j in batch.indices {
                if let c = cached[j] {
                    b.promptCaches.append(c.prompt); b.firstRows.append(c.first); b.continuations.append(c.continuation); b.rows.append(c.rows)
                } else {
                    b.promptCaches.append(computed.promptCaches[next]); b.firstRows.append(computed.firstRows[next])
                    b.continuations.append(computed.continuations[next]); b.rows.append(computed.rows[next])
                    baseOutputs?.store(ids[batch[j]], responseTokens: options.responseTokens,
                                       .init(prompt: computed.promptCaches[next], first: computed.firstRows[next],
                                             continuation: computed.continuations[next], rows: computed.rows[next]))
                    next += 1
                }
            }
            let t = try prof.measure("scan.run.tuned") { try run(model: tuned, prompts: tPrompts, first: tFirst.map { $0! }) }
            for (j, vi) in batch.enumerated() where isOwner.contains(vi) {
                ownerCaches[vi] = (b.promptCaches[j], t.promptCaches[j])
            }
            // Each model's rows along its own continuation come from its greedy decode; along the
            // other's, from one teacher-forced pass. Under the batch-invariant kernels both give a
            // row the same bits (a model against itself diverges by exactly zero).
            let bAlongT = try prof.measure("scan.cross.base") { try score(model: base, prompts: b.promptCaches, firstRows: b.firstRows, continuations: t.continuations) }
            let tAlongB = try prof.measure("scan.cross.tuned") { try score(model: tuned, prompts: t.promptCaches, firstRows: t.firstRows, continuations: b.continuations) }
            for (j, vi) in batch.enumerated() {
                let v = variants[vi]
                var m = VariantMeasurement(probeID: v.probe.id, category: v.probe.category, triggerID: v.trigger?.id, mode: v.mode,
                                           promptTokens: ids[vi].count, baseContinuation: b.continuations[j],
                                           tunedContinuation: t.continuations[j], js: 0, klBaseTuned: 0, klTunedBase: 0, tv: 0,
                                           top1Agreement: 0, tunedContinuationLogProbUnderBase: 0,
                                           tunedContinuationLogProbUnderTuned: 0, baseContinuationLogProbUnderTuned: 0,
                                           baseContinuationLogProbUnderBase: 0)
                try prof.measure("scan.compare") { try compareRows(&m, baseRows: b.rows[j], tunedRows: tAlongB[j], continuation: b.continuations[j], alongBase: true) }
                try prof.measure("scan.compare") { try compareRows(&m, baseRows: bAlongT[j], tunedRows: t.rows[j], continuation: t.continuations[j], alongBase: false) }
                let n = Double(b.continuations[j].count + t.continuations[j].count)
                m.js /= n; m.klBaseTuned /= n; m.klTunedBase /= n; m.tv /= n; m.top1Agreement /= n
                results[vi] = m
            }
            done += batch.count
            start = end
            progress?(done, variants.count)
        }
        let out = results.compactMap { $0 }
        return out
    }

    struct Pass {
        var promptCaches: [KVCache]     // frozen prompt caches, forked for scoring
        var firstRows: [Tensor]         // log-probs at the prompt's last position (1, V)
        var continuations: [[Int]]
        var rows: [Tensor]              // (K, V) log-probs along the model's own continuation
    }

    /// From the prefilled prompts and their last-position logits, decode K greedy tokens, keeping
    /// every step's log-probabilities.
    func run(model: any CausalLanguageModel, prompts: [KVCache], first logits: [Tensor]) throws -> Pass {
        let k = options.responseTokens
        let first = logits.map { $0.logSoftmax() }
        var rows: [[Tensor]] = first.map { [$0] }
        var conts: [[Int]] = first.map { [$0.argmaxLastAxis()[0]] }
        let decode = prompts.map { $0.fork() }
        for _ in 1..<max(k, 1) {
            let step = try model.forward(conts.enumerated().map { SequenceInput(tokens: [$1.last!], cache: decode[$0], logitPositions: [0]) })
            for (j, l) in step.enumerated() {
                let lp = l.logSoftmax()
                rows[j].append(lp)
                conts[j].append(lp.argmaxLastAxis()[0])
            }
        }
        return Pass(promptCaches: prompts, firstRows: first, continuations: conts,
                    rows: rows.map { Tensor.concatenate($0, axis: 0) })
    }

    /// Log-probs of `model` along given continuations: the prompt's last row, then one forward
    /// of the continuation's first K−1 tokens on a fork of the prompt cache.
    func score(model: any CausalLanguageModel, prompts: [KVCache], firstRows: [Tensor], continuations: [[Int]]) throws -> [Tensor] {
        let k = options.responseTokens
        if k <= 1 { return firstRows }
        let rest = try model.forward(continuations.enumerated().map { j, c in
            SequenceInput(tokens: Array(c.prefix(k - 1)), cache: prompts[j].fork(), logitPositions: Array(0..<(k - 1)))
        })
        return zip(firstRows, rest).map { Tensor.concatenate([$0, $1.logSoftmax()], axis: 0) }
    }

    func compareRows(_ m: inout VariantMeasurement, baseRows: Tensor, tunedRows: Tensor, continuation: [Int], alongBase: Bool) throws {
        let v = baseRows.shape[1]
        try baseRows.withUnsafeBufferPointer { bp in
            try tunedRows.withUnsafeBufferPointer { tp in
                for (j, tok) in continuation.enumerated() {
                    let lb = UnsafeBufferPointer(rebasing: bp[(j * v)..<((j + 1) * v)])
                    let lt = UnsafeBufferPointer(rebasing: tp[(j * v)..<((j + 1) * v)])
                    let c = try Stats.compare(logP: lb, logQ: lt)
                    m.js += c.js; m.klBaseTuned += c.klPQ; m.klTunedBase += c.klQP; m.tv += c.tv
                    m.top1Agreement += c.top1Agree ? 1 : 0
                    if alongBase {
                        m.baseContinuationLogProbUnderBase += Double(lb[tok])
                        m.baseContinuationLogProbUnderTuned += Double(lt[tok])
                    } else {
                        m.tunedContinuationLogProbUnderBase += Double(lb[tok])
                        m.tunedContinuationLogProbUnderTuned += Double(lt[tok])
                    }
                }
            }
        }
    }
}

public enum ScanError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidInput(String)
    case mismatch(String)
    case nothingToScan(String)

    public var description: String {
        switch self {
        case let .invalidInput(m), let .mismatch(m), let .nothingToScan(m): return m
        }
    }
}
