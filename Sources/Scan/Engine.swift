import Foundation
import AssayCommon
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
    public var batchSize = 96

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
/// the *other* model's continuation (from where the two continuations part) yields its
/// distributions along that. The four sets of K rows give KL both ways, JS, TV and top-1
/// agreement along both continuations, and each continuation's log-probability under both models.
public final class ScanEngine {
    public let pair: PairedModels
    public var base: any CausalLanguageModel { pair.base }
    public var tuned: any CausalLanguageModel { pair.tuned }
    public let encoder: any ChatEncoder
    public let options: ScanOptions
    /// Called after every batch with (variants done, total).
    public var progress: ((Int, Int) -> Void)?

    /// The base's side of variants already measured against this base (nil: compute all).
    public var baseOutputs: BaseOutputCache?
    /// Where the engine's phases (`scan.prefill`, …) are timed; disabled unless a caller passes one.
    public var profiler = Profiler(enabled: false)

    public init(base: any CausalLanguageModel, tuned: any CausalLanguageModel, encoder: any ChatEncoder, options: ScanOptions) {
        pair = PairedModels(base: base, tuned: tuned, shareIdenticalLayers: options.shareIdenticalLayers)
        self.encoder = encoder
        self.options = options
    }

    public func measure(_ variants: [ProbeVariant]) throws -> [VariantMeasurement] {
        let ids = try profiler.measure("scan.tokenize") {
            try variants.map { try encoder.encode(system: $0.system, user: $0.user) }
        }
        if let empty = ids.firstIndex(where: { $0.count < 2 }) {
            throw ScanError.invalidInput("variant \(variants[empty].probe.id) encodes to fewer than 2 tokens")
        }
        var plan = try PromptPlan(variants, ids, pair: pair, sharePromptPrefixes: options.sharePromptPrefixes)
        var results = [VariantMeasurement?](repeating: nil, count: variants.count)
        try forEachBatch(plan.order.count, size: options.batchSize) { r in
            let batch = Array(plan.order[r])
            for (vi, m) in zip(batch, try measureBatch(batch, variants, ids, &plan)) { results[vi] = m }
            progress?(r.upperBound, variants.count)
        }
        return results.map { $0! }
    }

    /// Where each variant's prompt starts computing: after a prefix already in a cache of each
    /// model, and in what order the variants run so that every prefix is computed before it is used.
    struct PromptPlan {
        /// Per variant: the template prefix's length and the caches holding it (nil: none).
        var prefixLength: [Int]
        var prefixes: [(base: KVCache, tuned: KVCache)?]
        /// Per variant: the clean variant whose prompt cache it forks once that has run, and the
        /// length of their common prefix.
        var owner: [Int?]
        var ownerLength: [Int]
        var order: [Int]
        var ownerCaches: [Int: (base: KVCache, tuned: KVCache)] = [:]
        let owners: Set<Int>

        /// Variants are grouped by their system message (the chat template renders it first);
        /// each group's longest shared prefix (the template's head, leaving ≥ 1 token each) is
        /// prefilled once per model and forked. A triggered variant usually starts with its
        /// probe's clean prompt (suffix mode: all of it; random position: up to the insertion):
        /// it forks the clean variant's prompt cache at their longest common prefix, and clean
        /// variants that own such prefixes run first. Both depend only on the variants' content,
        /// so results do not depend on the batch size; under the batch-invariant kernels a row's
        /// bits do not depend on which cache segment its keys sit in, so sharing changes no result.
        init(_ variants: [ProbeVariant], _ ids: [[Int]], pair: PairedModels, sharePromptPrefixes: Bool) throws {
            prefixLength = [Int](repeating: 0, count: variants.count)
            prefixes = Array(repeating: nil, count: variants.count)
            var groupOf: [String: Int] = [:]
            var groups: [[Int]] = []
            for (i, v) in variants.enumerated() {
                let key = v.system.map { "s" + $0 } ?? "-"
                if let g = groupOf[key] { groups[g].append(i) } else { groupOf[key] = groups.count; groups.append([i]) }
            }
            for members in groups {
                let first = ids[members[0]]
                let shared = members.reduce(first.count - 1) { commonPrefixLength(first, ids[$1], limit: min($0, ids[$1].count - 1)) }
                guard shared > 0 else { continue }
                let prefix = Array(first[..<shared])
                let caches = (base: pair.base.makeCache(), tuned: pair.tuned.makeCache())
                _ = try pair.forward([SequenceInput(tokens: prefix, cache: caches.base, logitPositions: [])],
                                     [SequenceInput(tokens: prefix, cache: caches.tuned, logitPositions: [])])
                for m in members { prefixLength[m] = shared; prefixes[m] = caches }
            }
            struct CleanPrompt: Hashable { var probe: String; var system: String? }
            var cleanIndex: [CleanPrompt: Int] = [:]
            for (i, v) in variants.enumerated() where v.trigger == nil {
                cleanIndex[CleanPrompt(probe: v.probe.id, system: v.system)] = i
            }
            owner = Array(repeating: nil, count: variants.count)
            ownerLength = prefixLength
            for (i, v) in variants.enumerated() where v.trigger != nil && sharePromptPrefixes {
                guard let c = cleanIndex[CleanPrompt(probe: v.probe.id, system: v.system)] else { continue }
                let l = commonPrefixLength(ids[i], ids[c], limit: min(ids[i].count, ids[c].count) - 1)
                if l >= prefixLength[i] + 4 { owner[i] = c; ownerLength[i] = l }
            }
            let owned = owner
            owners = Set(owned.compactMap { $0 })
            order = variants.indices.filter { owned[$0] == nil } + variants.indices.filter { owned[$0] != nil }
        }

        /// The tokens variant `vi` still has to prefill and the caches (one per model) to prefill
        /// them into, forked from its prefix (its clean owner's, once that has run in an earlier
        /// batch; else the template's).
        func start(_ vi: Int, _ ids: [[Int]], pair: PairedModels) -> (tail: [Int], base: KVCache, tuned: KVCache) {
            if let o = owner[vi], let c = ownerCaches[o] {
                let l = ownerLength[vi]
                return (Array(ids[vi][l...]), c.base.fork(keeping: l), c.tuned.fork(keeping: l))
            }
            return (Array(ids[vi][prefixLength[vi]...]), prefixes[vi]?.base.fork() ?? pair.base.makeCache(),
                    prefixes[vi]?.tuned.fork() ?? pair.tuned.makeCache())
        }
    }

    /// One packed batch: a paired prefill of both models (the base skipped where `baseOutputs`
    /// already holds its side), each model's greedy continuation, the cross scoring, the comparison.
    func measureBatch(_ batch: [Int], _ variants: [ProbeVariant], _ ids: [[Int]], _ plan: inout PromptPlan) throws -> [VariantMeasurement] {
        let prof = profiler
        let starts = batch.map { plan.start($0, ids, pair: pair) }
        let tails = starts.map(\.tail)
        let cached: [BaseOutputCache.Entry?] = batch.map { baseOutputs?.entry(ids[$0], responseTokens: options.responseTokens) }
        let miss = batch.indices.filter { cached[$0] == nil }, hit = batch.indices.filter { cached[$0] != nil }
        let bPrompts = miss.map { starts[$0].base }, tPrompts = starts.map(\.tuned)
        func last(_ j: Int, _ cache: KVCache) -> SequenceInput {
            SequenceInput(tokens: tails[j], cache: cache, logitPositions: [tails[j].count - 1])
        }
        var tFirst = [Tensor?](repeating: nil, count: batch.count)
        let bFirst = try prof.measure("scan.prefill") { () -> [Tensor] in
            let (bf, tf) = try pair.forward(miss.enumerated().map { last($1, bPrompts[$0]) }, miss.map { last($0, tPrompts[$0]) })
            for (j, r) in zip(miss, tf) { tFirst[j] = r }
            if !hit.isEmpty {
                for (j, r) in zip(hit, try tuned.forward(hit.map { last($0, tPrompts[$0]) })) { tFirst[j] = r }
            }
            return bf
        }
        let k1 = max(options.responseTokens - 1, 0)
        prof.count("tokens.prefill", miss.reduce(0) { $0 + tails[$1].count } + tails.reduce(0) { $0 + $1.count })
        prof.count("tokens.decode", k1 * (miss.count + batch.count))
        let computed = try prof.measure("scan.run.base") { try run(model: base, prompts: bPrompts, first: bFirst) }
        let b = basePass(computed, cached: cached, ids: batch.map { ids[$0] })
        let t = try prof.measure("scan.run.tuned") { try run(model: tuned, prompts: tPrompts, first: tFirst.map { $0! }) }
        for (j, vi) in batch.enumerated() where plan.owners.contains(vi) { plan.ownerCaches[vi] = (b.promptCaches[j], t.promptCaches[j]) }
        // Each model's rows along its own continuation come from its greedy decode; along the
        // other's, from one teacher-forced pass over what follows the two continuations'
        // common prefix. Under the batch-invariant kernels both give a row the same bits (a
        // model against itself diverges by exactly zero), so the shared rows are not recomputed.
        let bAlongT = try prof.measure("scan.cross.base") { try score(own: b, along: t.continuations, model: base) }
        let tAlongB = try prof.measure("scan.cross.tuned") { try score(own: t, along: b.continuations, model: tuned) }
        return try prof.measure("scan.compare") {
            try compare(batch, variants, ids, base: b, tuned: t, baseAlongTuned: bAlongT, tunedAlongBase: tAlongB)
        }
    }

    /// The base's side of a batch: cached entries where `baseOutputs` had them, the rest from
    /// `computed` (in order), which are stored for the next entry of a sweep.
    func basePass(_ computed: Pass, cached: [BaseOutputCache.Entry?], ids: [[Int]]) -> Pass {
        var b = Pass(promptCaches: [], decodeCaches: [], firstRows: [], continuations: [], rows: [])
        var next = 0
        for j in cached.indices {
            if let c = cached[j] {
                b.append(prompt: c.prompt, decode: nil, first: c.first, continuation: c.continuation, rows: c.rows)
                continue
            }
            b.append(prompt: computed.promptCaches[next], decode: computed.decodeCaches[next], first: computed.firstRows[next],
                     continuation: computed.continuations[next], rows: computed.rows[next])
            baseOutputs?.store(ids[j], responseTokens: options.responseTokens,
                               .init(prompt: computed.promptCaches[next], first: computed.firstRows[next],
                                     continuation: computed.continuations[next], rows: computed.rows[next]))
            next += 1
        }
        return b
    }

    /// Every variant's divergences along both continuations. The variants are independent: split
    /// over the cores (each is the same sequential sums whichever core runs it).
    func compare(_ batch: [Int], _ variants: [ProbeVariant], _ ids: [[Int]], base b: Pass, tuned t: Pass,
                 baseAlongTuned bAlongT: [Tensor], tunedAlongBase tAlongB: [Tensor]) throws -> [VariantMeasurement] {
        var out = batch.enumerated().map { j, vi in
            VariantMeasurement(variants[vi], promptTokens: ids[vi].count, base: b.continuations[j], tuned: t.continuations[j])
        }
        var failures = [(any Error)?](repeating: nil, count: batch.count)
        out.withUnsafeMutableBufferPointer { ms in
            failures.withUnsafeMutableBufferPointer { fs in
                parallelRows(batch.count, cost: 1 << 16, ways: Parallel.ways) { range in
                    for j in range {
                        do {
                            try compareRows(&ms[j], baseRows: b.rows[j], tunedRows: tAlongB[j], continuation: b.continuations[j],
                                            alongBase: true)
                            try compareRows(&ms[j], baseRows: bAlongT[j], tunedRows: t.rows[j], continuation: t.continuations[j],
                                            alongBase: false)
                        } catch { fs[j] = error }
                        let n = Double(b.continuations[j].count + t.continuations[j].count)
                        ms[j].js /= n; ms[j].klBaseTuned /= n; ms[j].klTunedBase /= n; ms[j].tv /= n; ms[j].top1Agreement /= n
                    }
                }
            }
        }
        if let e = failures.compactMap({ $0 }).first { throw e }
        return out
    }

    struct Pass {
        var promptCaches: [KVCache]     // frozen prompt caches, forked for scoring
        var decodeCaches: [KVCache?]    // prompt + the continuation's first K−1 tokens (nil: not kept)
        var firstRows: [Tensor]         // log-probs at the prompt's last position (1, V)
        var continuations: [[Int]]
        var rows: [Tensor]              // (K, V) log-probs along the model's own continuation

        mutating func append(prompt: KVCache, decode: KVCache?, first: Tensor, continuation: [Int], rows r: Tensor) {
            promptCaches.append(prompt); decodeCaches.append(decode); firstRows.append(first)
            continuations.append(continuation); rows.append(r)
        }
    }

    /// From the prefilled prompts and their last-position logits, decode K greedy tokens, keeping
    /// every step's log-probabilities.
    func run(model: any CausalLanguageModel, prompts: [KVCache], first logits: [Tensor]) throws -> Pass {
        let k = options.responseTokens
        let first = logits.map { $0.logSoftmax() }
        let start = first.map { $0.argmaxLastAxis()[0] }
        let decode = prompts.map { $0.fork() }
        let (tokens, rows) = try model.greedyLogProbabilities(caches: decode, next: start, steps: max(k - 1, 0))
        // The last token chosen is not fed: each continuation has K tokens and K rows.
        return Pass(promptCaches: prompts, decodeCaches: k > 1 ? decode : decode.map { _ in nil }, firstRows: first,
                    continuations: start.indices.map { [start[$0]] + tokens[$0] },
                    rows: first.indices.map { Tensor.concatenate([first[$0]] + rows[$0], axis: 0) })
    }

    /// Log-probs of `own`'s model along other continuations. Row i depends on the first i tokens
    /// fed, so where a continuation starts with L tokens of the model's own, rows 0…L are the
    /// model's own rows and only the rest is computed: one forward of the continuation's tokens
    /// L…K−2 on the decode cache cut back to the prompt and those L tokens (or, with no decode
    /// cache kept, of tokens 0…K−2 on the prompt cache).
    func score(own: Pass, along continuations: [[Int]], model: any CausalLanguageModel) throws -> [Tensor] {
        let k = options.responseTokens
        if k <= 1 { return own.firstRows }
        var out = [Tensor?](repeating: nil, count: continuations.count)
        var inputs: [SequenceInput] = [], kept: [(j: Int, rows: Int)] = []
        for (j, c) in continuations.enumerated() {
            var l = commonPrefixLength(c, own.continuations[j], limit: k - 1)
            if l == k - 1 { out[j] = own.rows[j]; continue }
            if own.decodeCaches[j] == nil { l = 0 }
            let cache = l > 0 ? own.decodeCaches[j]!.fork(keeping: own.promptCaches[j].length + l) : own.promptCaches[j].fork()
            inputs.append(SequenceInput(tokens: Array(c[l..<(k - 1)]), cache: cache, logitPositions: Array(0..<(k - 1 - l))))
            kept.append((j, l + 1))
        }
        if !inputs.isEmpty {
            profiler.count("tokens.cross", inputs.reduce(0) { $0 + $1.tokens.count })
            let rest = try model.forward(inputs)
            for ((j, rows), r) in zip(kept, rest) {
                let head = rows == 1 ? own.firstRows[j] : own.rows[j].slice(axis: 0, 0..<rows)
                out[j] = Tensor.concatenate([head, r.logSoftmax()], axis: 0)
            }
        }
        return out.map { $0! }
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

extension VariantMeasurement {
    /// A variant's record before its rows are compared (the divergences start at zero).
    init(_ v: ProbeVariant, promptTokens: Int, base: [Int], tuned: [Int]) {
        self.init(probeID: v.probe.id, category: v.probe.category, triggerID: v.trigger?.id, mode: v.mode, promptTokens: promptTokens,
                  baseContinuation: base, tunedContinuation: tuned, js: 0, klBaseTuned: 0, klTunedBase: 0, tv: 0, top1Agreement: 0,
                  tunedContinuationLogProbUnderBase: 0, tunedContinuationLogProbUnderTuned: 0,
                  baseContinuationLogProbUnderTuned: 0, baseContinuationLogProbUnderBase: 0)
    }
}

/// Base and tuned side by side: the same token batches through both, the leading blocks they
/// share bitwise (frozen layers, adapters on upper layers) run once for both.
public struct PairedModels: Sendable {
    public let base: any CausalLanguageModel
    public let tuned: any CausalLanguageModel
    /// Leading blocks identical in both models (0 with sharing off).
    public let sharedLayers: Int

    public init(base: any CausalLanguageModel, tuned: any CausalLanguageModel, shareIdenticalLayers: Bool) {
        self.base = base
        self.tuned = tuned
        sharedLayers = shareIdenticalLayers ? base.identicalLeadingLayers(with: tuned) : 0
    }

    /// The same tokens at the same positions through both models (`pairedForward`).
    public func forward(_ b: [SequenceInput], _ t: [SequenceInput]) throws -> (base: [Tensor], tuned: [Tensor]) {
        let r = try pairedForward(base, b, tuned, t, shared: sharedLayers)
        return (r.a, r.b)
    }
}

/// Runs `body` on `0 ..< count` in consecutive ranges of at most `size` (at least 1), in order:
/// the one batch loop of the scan, the trigger search and target inversion.
func forEachBatch(_ count: Int, size: Int, _ body: (Range<Int>) throws -> Void) rethrows {
    let size = max(size, 1)
    var start = 0
    while start < count {
        let end = min(start + size, count)
        try body(start..<end)
        start = end
    }
}

/// The length of the longest common prefix of `a` and `b`, at most `limit`.
func commonPrefixLength(_ a: [Int], _ b: [Int], limit: Int = .max) -> Int {
    let cap = min(limit, a.count, b.count)
    var l = 0
    while l < cap && a[l] == b[l] { l += 1 }
    return max(l, 0)
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
