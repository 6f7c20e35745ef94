import Foundation
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
    var keys: [[Float]]
    var values: [[Float]]
    public private(set) var ownLength = 0
    private(set) var frozen = false

    public init(layers: Int, kvDim: Int) {
        self.layers = layers
        self.kvDim = kvDim
        parent = nil
        parentLength = 0
        keys = Array(repeating: [], count: layers)
        values = Array(repeating: [], count: layers)
    }

    private init(parent: KVCache) {
        layers = parent.layers
        kvDim = parent.kvDim
        self.parent = parent
        parentLength = parent.length
        keys = Array(repeating: [], count: layers)
        values = Array(repeating: [], count: layers)
    }

    /// Rows visible to the next token (its position id).
    public var length: Int { parentLength + ownLength }

    /// A child that shares this cache's rows; this cache becomes read-only.
    public func fork() -> KVCache {
        frozen = true
        return KVCache(parent: self)
    }

    /// Appends `count` rows for `layer` (keys and values `count × kvDim` each).
    func append(layer: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, count: Int) {
        precondition(!frozen, "appending to a KV cache that has been forked")
        keys[layer].append(contentsOf: UnsafeBufferPointer(start: k, count: count * kvDim))
        values[layer].append(contentsOf: UnsafeBufferPointer(start: v, count: count * kvDim))
        if layer == layers - 1 { ownLength += count }
    }

    /// The chain root-first for one layer: (cache, rows it holds for that layer). Parents are
    /// frozen when forked, so each sees all of its own rows; the current cache already holds
    /// this step's rows for layers the forward pass has reached.
    func segments(layer: Int) -> [(KVCache, Int)] {
        var chain: [(KVCache, Int)] = []
        var c: KVCache? = self
        while let cur = c {
            chain.append((cur, cur.keys[layer].count / max(kvDim, 1)))
            c = cur.parent
        }
        return chain.reversed()
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

    /// Runs each sequence's tokens after its cache (appending to it) and returns, per sequence,
    /// raw logits (positions.count, vocab) at the requested positions.
    func forward(_ batch: [SequenceInput]) throws -> [Tensor]
}

public extension CausalLanguageModel {
    func makeCache() -> KVCache { KVCache(layers: layerCount, kvDim: kvDim) }
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

    /// Appends this layer's new keys and values (rows of (N, kvDim) matrices) to every sequence's cache.
    func appendToCaches(layer: Int, keys: Tensor, values: Tensor) {
        let kvDim = caches.first?.kvDim ?? 0
        keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in
                for (i, c) in caches.enumerated() where lengths[i] > 0 {
                    c.append(layer: layer, keys: k.baseAddress! + offsets[i] * kvDim, values: v.baseAddress! + offsets[i] * kvDim, count: lengths[i])
                }
            }
        }
    }
}

/// Causal attention of packed queries against each sequence's cache chain (which already holds
/// this step's keys and values). q: (N, Hq·D) → (N, Hq·D). Query head h reads KV head
/// h / (Hq/Hkv). `window`: a key more than `window − 1` positions back is masked (Mistral).
func packedAttention(q: Tensor, packing: Packing, layer: Int, heads hq: Int, kvHeads hkv: Int, headDim d: Int,
                     scale: Float, window: Int? = nil) -> Tensor {
    let ldq = hq * d, kvDim = hkv * d
    let group = hq / hkv
    let n = packing.rows
    return q.withUnsafeBufferPointer { qp in
        Tensor(shape: [n, ldq]) { out in
            var scores: [Float] = []
            for (si, cache) in packing.caches.enumerated() {
                let t = packing.lengths[si]
                if t == 0 { continue }
                let segments = cache.segments(layer: layer)
                let s = segments.reduce(0) { $0 + $1.1 }
                let queryOffset = s - t
                if scores.count < t * s { scores = [Float](repeating: 0, count: t * s) }
                scores.withUnsafeMutableBufferPointer { sp in
                    let p = sp.baseAddress!
                    // Segment pointers (keys, values, rows, first column).
                    var segs: [(UnsafePointer<Float>, UnsafePointer<Float>, Int, Int)] = []
                    var col = 0
                    for (c, rows) in segments where rows > 0 {
                        let k = c.keys[layer].withUnsafeBufferPointer { $0.baseAddress! }
                        let v = c.values[layer].withUnsafeBufferPointer { $0.baseAddress! }
                        segs.append((k, v, rows, col))
                        col += rows
                    }
                    for h in 0..<hq {
                        let g = h / group
                        let qh = qp.baseAddress! + packing.offsets[si] * ldq + h * d   // (T, D), ld = Hq·D
                        let oh = out.baseAddress! + packing.offsets[si] * ldq + h * d  // (T, D), ld = Hq·D
                        // scores (T, S) = Q · Kᵀ, one GEMM per segment into its columns.
                        for (k, _, rows, c0) in segs {
                            if t == 1 {
                                sgemv(trans: false, m: rows, n: d, a: k + g * d, lda: kvDim, x: qh, y: p + c0)
                            } else {
                                sgemm(transA: false, transB: true, m: t, n: rows, k: d, a: qh, lda: ldq,
                                      b: k + g * d, ldb: kvDim, c: p + c0, ldc: s)
                            }
                        }
                        for i in 0..<t {
                            let row = p + i * s
                            let hi = queryOffset + i + 1
                            let lo = window.map { max(0, hi - $0) } ?? 0
                            var m = -Float.infinity
                            for j in lo..<hi { row[j] *= scale; if row[j] > m { m = row[j] } }
                            var sum: Float = 0
                            for j in lo..<hi { let e = expf(row[j] - m); row[j] = e; sum += e }
                            let inv = 1 / sum
                            for j in 0..<s { row[j] = (j >= lo && j < hi) ? row[j] * inv : 0 }
                        }
                        // out (T, D) = P · V, accumulated over segments.
                        for (si2, (_, v, rows, c0)) in segs.enumerated() {
                            let beta: Float = si2 == 0 ? 0 : 1
                            if t == 1 {
                                sgemv(trans: true, m: rows, n: d, a: v + g * d, lda: kvDim, x: p + c0, beta: beta, y: oh)
                            } else {
                                sgemm(transA: false, transB: false, m: t, n: d, k: rows, a: p + c0, lda: s,
                                      b: v + g * d, ldb: kvDim, beta: beta, c: oh, ldc: ldq)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Applies rotary embeddings to packed rows (N, H·D) at the given position ids.
func applyRotary(_ x: inout Tensor, heads: Int, rope: RotaryEmbedding, positions: [Int]) throws {
    let n = x.shape[0]
    var v = x.reshaped([1, n, heads, rope.headDim])
    try rope.apply(&v, positions: [positions])
    x = v.reshaped([n, heads * rope.headDim])
}
