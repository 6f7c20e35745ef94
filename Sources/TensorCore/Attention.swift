import Foundation

/// Rotary position embeddings in the half-split form Hugging Face uses (`rotate_half`):
/// the first `rotaryDim` features of each head are split into halves (x₁, x₂) and rotated as
/// (x₁·cos − x₂·sin, x₂·cos + x₁·sin) with frequencies θ⁻²ⁱᐟʳ. Features past `rotaryDim` pass
/// through (GPT-NeoX's partial rotary).
public struct RotaryEmbedding: Sendable {
    public let headDim: Int
    public let rotaryDim: Int
    public let base: Float
    /// inv_freq[i] = 1 / base^(2i / rotaryDim), computed as transformers does: the exponent in
    /// Float32, the power in Float32.
    public let inverseFrequencies: [Float]

    public init(headDim: Int, rotaryDim: Int? = nil, base: Float) {
        self.headDim = headDim
        let r = rotaryDim ?? headDim
        precondition(r % 2 == 0 && r <= headDim, "rotary dim \(r) must be even and ≤ head dim \(headDim)")
        self.rotaryDim = r
        self.base = base
        inverseFrequencies = (0..<(r / 2)).map { i in
            let exponent = Float(2 * i) / Float(r)
            return 1 / powf(base, exponent)
        }
    }

    /// Rotary embedding with precomputed frequencies (scaled RoPE variants compute their own).
    public init(headDim: Int, rotaryDim: Int, base: Float, inverseFrequencies: [Float]) {
        precondition(rotaryDim % 2 == 0 && rotaryDim <= headDim && inverseFrequencies.count == rotaryDim / 2)
        self.headDim = headDim
        self.rotaryDim = rotaryDim
        self.base = base
        self.inverseFrequencies = inverseFrequencies
    }

    /// cos and sin for one position, each rotaryDim/2 long (the halves share them).
    @inline(__always)
    func angles(position: Int, cos c: UnsafeMutablePointer<Float>, sin s: UnsafeMutablePointer<Float>) {
        let p = Float(position)
        for i in 0..<(rotaryDim / 2) {
            let a = p * inverseFrequencies[i]  // Float32 product, as torch computes freqs
            c[i] = Float(Foundation.cos(Double(a)))
            s[i] = Float(Foundation.sin(Double(a)))
        }
    }

    /// cos/sin for a list of position ids, computed once per forward pass and shared by every
    /// layer and by queries and keys: (positions, rotaryDim/2) each.
    public struct Table: Sendable {
        public let cos: [Float]
        public let sin: [Float]
        public let half: Int
    }

    public func table(positions: [Int]) -> Table {
        let half = rotaryDim / 2
        var c = [Float](repeating: 0, count: positions.count * half), s = c
        c.withUnsafeMutableBufferPointer { cp in
            s.withUnsafeMutableBufferPointer { sp in
                for (r, pos) in positions.enumerated() {
                    angles(position: pos, cos: cp.baseAddress! + r * half, sin: sp.baseAddress! + r * half)
                }
            }
        }
        return Table(cos: c, sin: s, half: half)
    }

    /// Rotates, in place, `heads` heads of every row of a row-major matrix: row r's head h starts
    /// at `base + r·rowStride + h·headDim` and uses row r of `table`.
    public func apply(_ base: UnsafeMutablePointer<Float>, rows: Int, rowStride: Int, heads: Int, table: Table) {
        let half = table.half
        table.cos.withUnsafeBufferPointer { cp in
            table.sin.withUnsafeBufferPointer { sp in
                for r in 0..<rows {
                    let c = cp.baseAddress! + r * half, s = sp.baseAddress! + r * half
                    for h in 0..<heads {
                        let v = base + r * rowStride + h * headDim
                        var i = 0
                        while i + 8 <= half {
                            let x1 = UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float>.self)
                            let x2 = UnsafeRawPointer(v + i + half).loadUnaligned(as: SIMD8<Float>.self)
                            let cv = UnsafeRawPointer(c + i).loadUnaligned(as: SIMD8<Float>.self)
                            let sv = UnsafeRawPointer(s + i).loadUnaligned(as: SIMD8<Float>.self)
                            UnsafeMutableRawPointer(v + i).storeBytes(of: x1 * cv - x2 * sv, as: SIMD8<Float>.self)
                            UnsafeMutableRawPointer(v + i + half).storeBytes(of: x2 * cv + x1 * sv, as: SIMD8<Float>.self)
                            i += 8
                        }
                        while i < half {
                            let x1 = v[i], x2 = v[i + half]
                            v[i] = x1 * c[i] - x2 * s[i]
                            v[i + half] = x2 * c[i] + x1 * s[i]
                            i += 1
                        }
                    }
                }
            }
        }
    }

    /// Rotates `x` of shape (B, T, H, headDim) in place; `positions[b][t]` is the position id.
    public func apply(_ x: inout Tensor, positions: [[Int]]) throws {
        guard x.rank == 4, x.shape[3] == headDim, positions.count == x.shape[0],
              positions.allSatisfy({ $0.count == x.shape[1] }) else {
            throw TensorError.shapeMismatch(op: "rotary", expected: "(B, T, H, \(headDim)) with B×T positions", got: "\(x.shape)")
        }
        let (b, t, h) = (x.shape[0], x.shape[1], x.shape[2])
        let half = rotaryDim / 2
        var cosBuf = [Float](repeating: 0, count: half), sinBuf = [Float](repeating: 0, count: half)
        x.withUnsafeMutableBufferPointer { buf in
            cosBuf.withUnsafeMutableBufferPointer { cp in
                sinBuf.withUnsafeMutableBufferPointer { sp in
                    let c = cp.baseAddress!, s = sp.baseAddress!
                    for bi in 0..<b {
                        for ti in 0..<t {
                            angles(position: positions[bi][ti], cos: c, sin: s)
                            for hi in 0..<h {
                                let v = buf.baseAddress! + ((bi * t + ti) * h + hi) * headDim
                                for i in 0..<half {
                                    let x1 = v[i], x2 = v[i + half]
                                    v[i] = x1 * c[i] - x2 * s[i]
                                    v[i + half] = x2 * c[i] + x1 * s[i]
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Which keys each query may see. Keys of batch row b that are real tokens lie in
/// `validKeys[b]`; the rest is padding. Query i of a row sits at key index `queryOffset + i`
/// (with a KV cache of S keys and T new queries, queryOffset = S − T); causal attention lets it
/// see keys up to and including that index.
public struct AttentionMask: Sendable, Equatable {
    public var validKeys: [Range<Int>]
    public var queryOffset: Int
    public var causal: Bool

    public init(validKeys: [Range<Int>], queryOffset: Int = 0, causal: Bool = true) {
        self.validKeys = validKeys
        self.queryOffset = queryOffset
        self.causal = causal
    }

    /// Keys query `i` of row `b` attends to; empty for a padding query that sees no real key.
    @inline(__always)
    public func keys(row b: Int, query i: Int) -> Range<Int> {
        let v = validKeys[b]
        let hi = causal ? min(v.upperBound, queryOffset + i + 1) : v.upperBound
        return v.lowerBound < hi ? v.lowerBound..<hi : v.lowerBound..<v.lowerBound
    }
}

/// Scaled dot-product attention with grouped-query heads.
///
/// q: (B, T, Hq, D), k and v: (B, S, Hkv, D) with Hq a multiple of Hkv; query head h reads
/// key/value head h / (Hq/Hkv), as transformers' `repeat_kv`. Returns (B, T, Hq, D), which is
/// the (B·T, Hq·D) layout the output projection wants. The per-head operands are strided views
/// of these layouts read with their leading dimensions, so nothing is transposed or copied. A query
/// that sees no real key (left padding) gets zeros.
public func scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, mask: AttentionMask,
                                      scale: Float? = nil) throws -> Tensor {
    guard q.rank == 4, k.rank == 4, v.shape == k.shape, q.shape[0] == k.shape[0], q.shape[3] == k.shape[3],
          k.shape[2] > 0, q.shape[2] % k.shape[2] == 0 else {
        throw TensorError.shapeMismatch(op: "attention", expected: "q (B, T, Hq, D), k = v (B, S, Hkv, D), Hkv | Hq",
                                        got: "q \(q.shape), k \(k.shape), v \(v.shape)")
    }
    let (b, t, hq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
    let (s, hkv) = (k.shape[1], k.shape[2])
    guard mask.validKeys.count == b, mask.validKeys.allSatisfy({ $0.lowerBound >= 0 && $0.upperBound <= s }) else {
        throw TensorError.shapeMismatch(op: "attention mask", expected: "\(b) key ranges within 0..<\(s)", got: "\(mask.validKeys)")
    }
    let group = hq / hkv
    let sc = scale ?? 1 / Float(d).squareRoot()
    let qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous()
    var out = Tensor(zeros: [b, t, hq, d])
    var scores = [Float](repeating: 0, count: max(t * s, 1))
    let ldq = hq * d, ldk = hkv * d
    qc.withUnsafeBufferPointer { qp in
        kc.withUnsafeBufferPointer { kp in
            vc.withUnsafeBufferPointer { vp in
                out.withUnsafeMutableBufferPointer { op in
                    scores.withUnsafeMutableBufferPointer { sp in
                        for bi in 0..<b {
                            for h in 0..<hq {
                                let g = h / group
                                let qh = qp.baseAddress! + bi * t * ldq + h * d   // (T, D), ld = Hq·D
                                let kh = kp.baseAddress! + bi * s * ldk + g * d   // (S, D), ld = Hkv·D
                                let vh = vp.baseAddress! + bi * s * ldk + g * d   // (S, D), ld = Hkv·D
                                let oh = op.baseAddress! + bi * t * ldq + h * d   // (T, D), ld = Hq·D
                                let p = sp.baseAddress!
                                // scores (T, S) = Q · Kᵀ, each one fixed-order dot product
                                InvariantKernels.gemmABt(m: t, n: s, k: d, a: qh, lda: ldq, b: kh, ldb: ldk, c: p, ldc: s)
                                // Masked softmax row by row; masked entries become exact zeros.
                                for i in 0..<t {
                                    let row = p + i * s
                                    let keys = mask.keys(row: bi, query: i)
                                    if keys.isEmpty { row.update(repeating: 0, count: s); continue }
                                    var m = -Float.infinity
                                    for j in keys { row[j] *= sc; if row[j] > m { m = row[j] } }
                                    var sum: Float = 0
                                    for j in keys { let e = expf(row[j] - m); row[j] = e; sum += e }
                                    let inv = 1 / sum
                                    for j in 0..<s { row[j] = keys.contains(j) ? row[j] * inv : 0 }
                                }
                                // out (T, D) = P · V, keys summed in order
                                for i in 0..<t {
                                    InvariantKernels.weightedRowSum(out: oh + i * ldq, d: d, weights: p + i * s, rows: vh, ld: ldk,
                                                                    count: s, accumulate: false)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    return out
}
