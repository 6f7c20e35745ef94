import Foundation
import AssayCommon
import TensorCore

/// Keys and values of one sequence, per layer, as rows of width `kvDim` (= KV heads × head dim).
///
/// A cache may sit on a frozen parent: `fork()` makes a child that sees the parent's rows and
/// appends its own, so a shared prompt prefix is computed once and reused by many continuations
/// without copying (attention reads the chain segment by segment).
public final class KVCache: @unchecked Sendable {
    public let layers: Int
    public let kvDim: Int
    public let parent: KVCache?
    /// How many of the parent chain's rows this cache sees.
    public let parentLength: Int
    /// Per layer: rows × kvDim keys and values, grown geometrically.
    private var keyBuffers: [UnsafeMutablePointer<Float>?]
    private var valueBuffers: [UnsafeMutablePointer<Float>?]
    private var rowCounts: [Int]
    private var capacity = 0
    public private(set) var ownLength = 0
    private(set) var frozen = false

    public init(layers: Int, kvDim: Int) {
        self.layers = layers
        self.kvDim = kvDim
        parent = nil
        parentLength = 0
        keyBuffers = Array(repeating: nil, count: layers)
        valueBuffers = Array(repeating: nil, count: layers)
        rowCounts = Array(repeating: 0, count: layers)
    }

    deinit {
        for b in keyBuffers { b?.deallocate() }
        for b in valueBuffers { b?.deallocate() }
    }

    private init(parent: KVCache, keeping rows: Int) {
        layers = parent.layers
        kvDim = parent.kvDim
        self.parent = parent
        parentLength = rows
        keyBuffers = Array(repeating: nil, count: layers)
        valueBuffers = Array(repeating: nil, count: layers)
        rowCounts = Array(repeating: 0, count: layers)
    }

    /// Rows visible to the next token (its position id).
    public var length: Int { parentLength + ownLength }

    /// Bytes this cache itself holds (not its parents').
    public var ownBytes: Int { capacity * kvDim * layers * 2 * MemoryLayout<Float>.size }

    /// A child that shares this cache's rows; this cache becomes read-only.
    public func fork() -> KVCache {
        frozen = true
        return KVCache(parent: self, keeping: length)
    }

    /// A child that sees only the first `rows` rows of this cache's chain (a shared prompt prefix
    /// of a longer prompt); this cache becomes read-only.
    public func fork(keeping rows: Int) -> KVCache {
        precondition(rows >= 0 && rows <= length, "fork(keeping: \(rows)) of a cache holding \(length) rows")
        frozen = true
        return KVCache(parent: self, keeping: rows)
    }

    /// Appends `count` rows for `layer`, copied from a fused projection output whose rows are
    /// `rowStride` apart, keys at `keyColumn` and values at `valueColumn`.
    func appendRows(layer: Int, base: UnsafePointer<Float>, rowStride: Int, keyColumn: Int, valueColumn: Int, count: Int) {
        precondition(!frozen, "appending to a KV cache that has been forked")
        let have = rowCounts[layer]
        if have + count > capacity { grow(to: max(have + count, capacity * 2, 16)) }
        let k = keyBuffers[layer]!, v = valueBuffers[layer]!
        for r in 0..<count {
            (k + (have + r) * kvDim).update(from: base + r * rowStride + keyColumn, count: kvDim)
            (v + (have + r) * kvDim).update(from: base + r * rowStride + valueColumn, count: kvDim)
        }
        rowCounts[layer] = have + count
        if layer == layers - 1 { ownLength += count }
    }

    /// Appends a copy of `other`'s last `rows` own rows for `layer` (a shared block's keys and
    /// values, computed once by the other model of a pair).
    func appendCopy(layer: Int, from other: KVCache, rows: Int) {
        precondition(!frozen, "appending to a KV cache that has been forked")
        precondition(other.kvDim == kvDim && other.rowCounts[layer] >= rows, "appendCopy from an incompatible cache")
        let have = rowCounts[layer]
        if have + rows > capacity { grow(to: max(have + rows, capacity * 2, 16)) }
        let src = other.rowCounts[layer] - rows
        (keyBuffers[layer]! + have * kvDim).update(from: other.keyBuffers[layer]! + src * kvDim, count: rows * kvDim)
        (valueBuffers[layer]! + have * kvDim).update(from: other.valueBuffers[layer]! + src * kvDim, count: rows * kvDim)
        rowCounts[layer] = have + rows
        if layer == layers - 1 { ownLength += rows }
    }

    private func grow(to rows: Int) {
        for l in 0..<layers {
            for which in 0..<2 {
                let new = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * kvDim, 1))
                let old = which == 0 ? keyBuffers[l] : valueBuffers[l]
                if let old { new.update(from: old, count: rowCounts[l] * kvDim); old.deallocate() }
                if which == 0 { keyBuffers[l] = new } else { valueBuffers[l] = new }
            }
        }
        capacity = rows
    }

    func keyPointer(_ layer: Int) -> UnsafePointer<Float> { UnsafePointer(keyBuffers[layer]!) }
    func valuePointer(_ layer: Int) -> UnsafePointer<Float> { UnsafePointer(valueBuffers[layer]!) }

    /// The chain root-first for one layer: (cache, rows it holds for that layer). Parents are
    /// frozen when forked, so each sees all of its own rows; the current cache already holds
    /// this step's rows for layers the forward pass has reached.
    func segments(layer: Int) -> [(KVCache, Int)] {
        var chain: [(KVCache, Int)] = []
        if let parent {
            // The parent chain as this cache sees it: its first `parentLength` rows.
            var left = parentLength
            for (c, rows) in parent.segments(layer: layer) where left > 0 {
                let take = min(rows, left)
                chain.append((c, take))
                left -= take
            }
        }
        chain.append((self, rowCounts[layer]))
        return chain
    }
}

/// One sequence of a packed batch: the new tokens, the cache they extend (nil: start fresh), and
/// the indices within `tokens` whose next-token logits the caller wants.
public struct SequenceInput {
    public var tokens: [Int]
    public var cache: KVCache?
    public var logitPositions: [Int]

    public init(tokens: [Int], cache: KVCache? = nil, logitPositions: [Int]) {
        self.tokens = tokens
        self.cache = cache
        self.logitPositions = logitPositions
    }
}

/// A decoder-only language model. Batches are packed: the sequences' tokens are concatenated
/// into one (N, d) activation matrix, so linear layers run as single GEMMs with no padding and
/// no sequence's numbers depend on its neighbours; attention runs per sequence against its own
/// cache.
public protocol CausalLanguageModel: AnyObject, Sendable {
    var architecture: String { get }
    var vocabularySize: Int { get }
    var layerCount: Int { get }
    var kvDim: Int { get }
    var maxPositions: Int { get }
    var bosTokenID: Int? { get }
    var eosTokenIDs: [Int] { get }
    /// Who watches the forward's named points (`norm`, `gemm.qkv`, … per layer; `Tap`); nil: nobody.
    var tap: (any Tap)? { get set }

    /// Runs blocks `plan.startLayer...` on the packed batch (from the embeddings, or from
    /// `plan.input`, the hidden rows entering that block), appending each run block's keys and
    /// values to the sequences' caches, and returns raw logits (positions.count, vocab) at the
    /// requested positions; with `plan.captureLayer`, also the hidden rows entering that block.
    func forward(_ batch: [SequenceInput], plan: ForwardPlan) throws -> ForwardResult

    /// How many leading blocks (with the embeddings) are bitwise identical to `other`'s, so a
    /// batch of identical tokens can run them once for both (`pairedForward`); 0 when the
    /// architectures or configs differ.
    func identicalLeadingLayers(with other: any CausalLanguageModel) -> Int
}

/// Where a forward pass starts and what it hands back besides logits.
public struct ForwardPlan: Sendable {
    public var startLayer = 0
    /// (N, d) hidden rows entering `startLayer`, in packed order; nil: the embeddings.
    public var input: Tensor?
    /// Return the hidden rows entering this block (`layerCount`: after the last block).
    public var captureLayer: Int?
    public init(startLayer: Int = 0, input: Tensor? = nil, captureLayer: Int? = nil) {
        self.startLayer = startLayer; self.input = input; self.captureLayer = captureLayer
    }
}

public struct ForwardResult {
    public var logits: [Tensor]
    public var captured: Tensor?
}

public extension CausalLanguageModel {
    func makeCache() -> KVCache { KVCache(layers: layerCount, kvDim: kvDim) }

    /// Runs each sequence's tokens after its cache (appending to it) and returns, per sequence,
    /// raw logits (positions.count, vocab) at the requested positions.
    func forward(_ batch: [SequenceInput]) throws -> [Tensor] { try forward(batch, plan: ForwardPlan()).logits }
}

/// Runs the same tokens through two models whose first `shared` blocks are bitwise identical
/// (`identicalLeadingLayers`): those blocks once, in `a`, then each model's own blocks from
/// there. `b`'s caches receive copies of `a`'s keys and values for the shared blocks, so they
/// continue exactly as if `b` had computed them (it would have: same weights, same inputs, and
/// the batch-invariant kernels make a row's bits independent of its batch).
public func pairedForward(_ a: any CausalLanguageModel, _ aBatch: [SequenceInput], _ b: any CausalLanguageModel, _ bBatch: [SequenceInput],
                          shared: Int) throws -> (a: [Tensor], b: [Tensor]) {
    guard shared > 0 else { return (try a.forward(aBatch), try b.forward(bBatch)) }
    precondition(aBatch.count == bBatch.count
                 && zip(aBatch, bBatch).allSatisfy { $0.tokens == $1.tokens && $0.cache?.length == $1.cache?.length },
                 "pairedForward needs the same tokens at the same positions")
    let ra = try a.forward(aBatch, plan: ForwardPlan(captureLayer: shared))
    let rb = try b.forward(bBatch, plan: ForwardPlan(startLayer: shared, input: ra.captured))
    for (sa, sb) in zip(aBatch, bBatch) {
        guard let ca = sa.cache, let cb = sb.cache else { continue }
        for layer in 0..<shared { cb.appendCopy(layer: layer, from: ca, rows: sa.tokens.count) }
    }
    return (ra.logits, rb.logits)
}

/// Bookkeeping for a packed batch.
struct Packing {
    let offsets: [Int]        // first row of each sequence
    let lengths: [Int]
    let positions: [Int]      // position id of every packed row
    let caches: [KVCache]
    let tokens: [Int]
    var rows: Int { tokens.count }

    init(_ batch: [SequenceInput], makeCache: () -> KVCache, maxPositions: Int, vocab: Int) throws(ModelError) {
        var offsets: [Int] = [], lengths: [Int] = [], positions: [Int] = [], caches: [KVCache] = [], tokens: [Int] = []
        for (i, s) in batch.enumerated() {
            let cache = s.cache ?? makeCache()
            guard s.tokens.allSatisfy({ $0 >= 0 && $0 < vocab }) else {
                throw .invalidInput("sequence \(i): token id outside 0..<\(vocab)")
            }
            guard s.logitPositions.allSatisfy({ $0 >= 0 && $0 < s.tokens.count }) else {
                throw .invalidInput("sequence \(i): logit position outside 0..<\(s.tokens.count)")
            }
            guard cache.length + s.tokens.count <= maxPositions else {
                throw .invalidInput("sequence \(i): \(cache.length + s.tokens.count) positions exceed the model's \(maxPositions)")
            }
            offsets.append(tokens.count)
            lengths.append(s.tokens.count)
            positions += (0..<s.tokens.count).map { cache.length + $0 }
            tokens += s.tokens
            caches.append(cache)
        }
        self.offsets = offsets; self.lengths = lengths; self.positions = positions; self.caches = caches; self.tokens = tokens
    }

    /// Row indices (into the packed matrix) whose logits are wanted, in batch order.
    func logitRows(_ batch: [SequenceInput]) -> [Int] {
        batch.enumerated().flatMap { i, s in s.logitPositions.map { offsets[i] + $0 } }
    }

    /// Splits (R, V) logits back per sequence.
    func split(_ logits: Tensor, _ batch: [SequenceInput]) -> [Tensor] {
        var out: [Tensor] = []
        var r = 0
        for s in batch {
            out.append(logits.slice(axis: 0, r..<(r + s.logitPositions.count)).contiguous())
            r += s.logitPositions.count
        }
        return out
    }

    /// Appends this layer's new keys and values to every sequence's cache. They are column
    /// blocks of the fused (N, W) projection output: keys at `keyColumn`, values at `valueColumn`.
    func appendToCaches(layer: Int, qkv: Tensor, keyColumn: Int, valueColumn: Int) {
        let kvDim = caches.first?.kvDim ?? 0
        let w = qkv.shape[1]
        qkv.withUnsafeBufferPointer { p in
            for (i, c) in caches.enumerated() where lengths[i] > 0 {
                c.appendRows(layer: layer, base: p.baseAddress! + offsets[i] * w, rowStride: w,
                             keyColumn: keyColumn, valueColumn: valueColumn, count: lengths[i])
            }
        }
    }

    /// Rotary cos/sin for every packed row.
    func rotaryTable(_ rope: RotaryEmbedding) -> RotaryEmbedding.Table { rope.table(positions: positions) }
}

/// Causal attention of packed queries against each sequence's cache chain (which already holds
/// this step's keys and values). Queries are the column block at `queryColumn` of the fused
/// (N, W) projection output, (N, Hq·D) → (N, Hq·D). Query head h reads KV head h / (Hq/Hkv).
/// `window`: a key more than `window − 1` positions back is masked (Mistral).
///
/// (sequence, head) pairs are split across cores with BLAS held to one thread for the phase
/// (never Dispatch parallelism and BLAS threads at once: `Parallel`).
func packedAttention(qkv: Tensor, queryColumn: Int, packing: Packing, layer: Int, heads hq: Int, kvHeads hkv: Int,
                     headDim d: Int, scale: Float, window: Int? = nil) -> Tensor {
    let ldq = qkv.shape[1], ldo = hq * d, kvDim = hkv * d
    let group = hq / hkv
    let n = packing.rows
    // Per sequence: its key/value segments (pointer, pointer, rows, first column) and total keys.
    typealias Segment = (k: UnsafePointer<Float>, v: UnsafePointer<Float>, rows: Int, column: Int)
    var plans: [(segments: [Segment], keys: Int)] = []
    for cache in packing.caches {
        var segs: [Segment] = []
        var col = 0
        for (c, rows) in cache.segments(layer: layer) where rows > 0 {
            segs.append((c.keyPointer(layer), c.valuePointer(layer), rows, col))
            col += rows
        }
        plans.append((segs, col))
    }
    let work = packing.lengths.enumerated().flatMap { si, t in t == 0 ? [] : (0..<hq).map { (si, $0) } }
    let maxScores = packing.lengths.enumerated().map { $0.element * plans[$0.offset].keys }.max() ?? 0
    let cost = packing.lengths.enumerated().reduce(0) { $0 + $1.element * plans[$1.offset].keys * d } / max(work.count, 1)
    // Parallel only under Assay's own scheme (OpenBLAS single-threaded), see `Parallel`.
    let parallel = Parallel.ways > 1 && work.count >= 2 && cost * work.count >= 1 << 15
    return qkv.withUnsafeBufferPointer { qp in
        Tensor(shape: [n, ldo]) { out in
            parallelRows(work.count, cost: parallel ? 1 << 16 : 0, ways: elementwiseWays) { range in
                var scores = [Float](repeating: 0, count: max(maxScores, 1))
                scores.withUnsafeMutableBufferPointer { sp in
                    let p = sp.baseAddress!
                    for (si, h) in work[range] {
                        let t = packing.lengths[si]
                        let (segs, s) = plans[si]
                        let queryOffset = s - t
                        let g = h / group
                        let qh = qp.baseAddress! + packing.offsets[si] * ldq + queryColumn + h * d  // (T, D), ld = W
                        let oh = out.baseAddress! + packing.offsets[si] * ldo + h * d              // (T, D), ld = Hq·D
                        // scores (T, S) = Q · Kᵀ, one product per segment into its columns, by blocks of
                        // query rows and only over the keys some row of the block sees (causal, window):
                        // the rest are masked below, and each score is the same dot product either way.
                        var i0 = 0
                        while i0 < t {
                            let i1 = min(t, i0 + 32)
                            let seen = (window.map { max(0, queryOffset + i0 + 1 - $0) } ?? 0)..<(queryOffset + i1)
                            for seg in segs {
                                let c0 = max(seen.lowerBound, seg.column), c1 = min(seen.upperBound, seg.column + seg.rows)
                                guard c1 > c0 else { continue }
                                InvariantKernels.gemmABt(m: i1 - i0, n: c1 - c0, k: d, a: qh + i0 * ldq, lda: ldq,
                                                         b: seg.k + (c0 - seg.column) * kvDim + g * d, ldb: kvDim,
                                                         c: p + i0 * s + c0, ldc: s)
                            }
                            i0 = i1
                        }
                        for i in 0..<t {
                            let row = p + i * s
                            let hi = queryOffset + i + 1
                            let lo = window.map { max(0, hi - $0) } ?? 0
                            for j in lo..<hi { row[j] *= scale }
                            softmaxRow(row + lo, row + lo, hi - lo)
                            if lo > 0 { row.update(repeating: 0, count: lo) }
                            if hi < s { (row + hi).update(repeating: 0, count: s - hi) }
                        }
                        // out (T, D) = P · V: each output row sums its unmasked keys in key order,
                        // whatever T is (decoding one token and scoring a continuation agree).
                        for i in 0..<t {
                            let hi = queryOffset + i + 1
                            let lo = window.map { max(0, hi - $0) } ?? 0
                            var first = true
                            for seg in segs {
                                let r0 = max(lo, seg.column), r1 = min(hi, seg.column + seg.rows)
                                guard r1 > r0 else { continue }
                                InvariantKernels.weightedRowSum(out: oh + i * ldo, d: d, weights: p + i * s + r0,
                                                                rows: seg.v + (r0 - seg.column) * kvDim + g * d, ld: kvDim,
                                                                count: r1 - r0, accumulate: !first)
                                first = false
                            }
                            if first { (oh + i * ldo).update(repeating: 0, count: d) }
                        }
                    }
                }
            }
        }
    }
}

/// Applies rotary embeddings in place to `heads` heads starting at `column` of every row of a
/// fused (N, W) projection output.
func applyRotary(_ x: inout Tensor, column: Int, heads: Int, rope: RotaryEmbedding, table: RotaryEmbedding.Table) {
    let (n, w) = (x.shape[0], x.shape[1])
    x.withUnsafeMutableBufferPointer { p in
        rope.apply(p.baseAddress! + column, rows: n, rowStride: w, heads: heads, table: table)
    }
}
