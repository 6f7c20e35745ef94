import Foundation
import CBLAS

// Element-wise ops, activations, softmax and normalization. Hot loops take the buffers once and
// work in SIMD8 lanes; with `-target-cpu haswell` these compile to AVX2/FMA.

@usableFromInline typealias F8 = SIMD8<Float>

@inline(__always)
func simdMap(_ src: UnsafeBufferPointer<Float>, _ dst: UnsafeMutableBufferPointer<Float>,
             vector: (F8) -> F8, scalar: (Float) -> Float) {
    let n = src.count
    let s = src.baseAddress!, d = dst.baseAddress!
    var i = 0
    while i + 8 <= n {
        let v = UnsafeRawPointer(s + i).loadUnaligned(as: F8.self)
        UnsafeMutableRawPointer(d + i).storeBytes(of: vector(v), as: F8.self)
        i += 8
    }
    while i < n { d[i] = scalar(s[i]); i += 1 }
}

@inline(__always)
func simdZip(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, _ dst: UnsafeMutableBufferPointer<Float>,
             vector: (F8, F8) -> F8, scalar: (Float, Float) -> Float) {
    let n = a.count
    let x = a.baseAddress!, y = b.baseAddress!, d = dst.baseAddress!
    var i = 0
    while i + 8 <= n {
        let u = UnsafeRawPointer(x + i).loadUnaligned(as: F8.self)
        let v = UnsafeRawPointer(y + i).loadUnaligned(as: F8.self)
        UnsafeMutableRawPointer(d + i).storeBytes(of: vector(u, v), as: F8.self)
        i += 8
    }
    while i < n { d[i] = scalar(x[i], y[i]); i += 1 }
}

/// Sum of a contiguous run, eight lanes at a time.
@inline(__always)
public func vsum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = F8(repeating: 0)
    var i = 0
    while i + 8 <= n { acc += UnsafeRawPointer(p + i).loadUnaligned(as: F8.self); i += 8 }
    var s = acc.sum()
    while i < n { s += p[i]; i += 1 }
    return s
}

/// Maximum of a contiguous run (n ≥ 1); NaN propagates as in PyTorch.
@inline(__always)
public func vmax(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = -Float.infinity
    var hasNaN = false
    var i = 0
    if n >= 8 {
        var acc = F8(repeating: -.infinity)
        while i + 8 <= n {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: F8.self)
            hasNaN = hasNaN || any(v .!= v)
            acc = pointwiseMax(acc, v)
            i += 8
        }
        m = acc.max()
    }
    while i < n { let v = p[i]; if v.isNaN { hasNaN = true } else if v > m { m = v }; i += 1 }
    return hasNaN ? .nan : m
}

public extension Tensor {
    // MARK: element-wise

    func map(_ vector: (SIMD8<Float>) -> SIMD8<Float>, _ scalar: (Float) -> Float) -> Tensor {
        withUnsafeBufferPointer { src in
            Tensor(shape: shape) { dst in simdMap(src, dst, vector: vector, scalar: scalar) }
        }
    }

    private func zipped(_ other: Tensor, op: String, _ vector: (F8, F8) -> F8, _ scalar: (Float, Float) -> Float) throws -> Tensor {
        if other.shape == shape {
            return withUnsafeBufferPointer { a in
                other.withUnsafeBufferPointer { b in
                    Tensor(shape: shape) { dst in simdZip(a, b, dst, vector: vector, scalar: scalar) }
                }
            }
        }
        // Broadcast a trailing vector: (…, d) op (d).
        guard other.rank == 1, let d = shape.last, other.shape[0] == d else {
            throw TensorError.shapeMismatch(op: op, expected: "\(shape) or [\(shape.last ?? 0)]", got: "\(other.shape)")
        }
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                Tensor(shape: shape) { dst in
                    let rows = d == 0 ? 0 : a.count / d
                    for r in 0..<rows {
                        simdZip(UnsafeBufferPointer(rebasing: a[(r * d)..<((r + 1) * d)]), b,
                                UnsafeMutableBufferPointer(rebasing: dst[(r * d)..<((r + 1) * d)]),
                                vector: vector, scalar: scalar)
                    }
                }
            }
        }
    }

    /// Element-wise sum; `other` may be a trailing vector broadcast over rows.
    func adding(_ other: Tensor) throws -> Tensor { try zipped(other, op: "add", { $0 + $1 }, { $0 + $1 }) }
    func subtracting(_ other: Tensor) throws -> Tensor { try zipped(other, op: "sub", { $0 - $1 }, { $0 - $1 }) }
    func multiplying(_ other: Tensor) throws -> Tensor { try zipped(other, op: "mul", { $0 * $1 }, { $0 * $1 }) }
    func scaled(by s: Float) -> Tensor { map({ $0 * s }, { $0 * s }) }

    /// In-place `self += other` (same shape), the residual add.
    mutating func add(_ other: Tensor) throws {
        guard other.shape == shape else { throw TensorError.shapeMismatch(op: "add", expected: "\(shape)", got: "\(other.shape)") }
        let n = count
        other.withUnsafeBufferPointer { b in
            withUnsafeMutableBufferPointer { a in cblas_saxpy(Int32(n), 1, b.baseAddress, 1, a.baseAddress, 1) }
        }
    }

    // MARK: activations

    /// SiLU (swish): x · σ(x), as in LLaMA's SwiGLU MLP.
    func silu() -> Tensor {
        withUnsafeBufferPointer { src in
            Tensor(shape: shape) { dst in
                simdMap(src, dst, vector: { x in x / (1 + vexp(-x)) }, scalar: { x in x / (1 + sexp(-x)) })
            }
        }
    }

    /// GELU, exact form 0.5·x·(1 + erf(x/√2)) (PyTorch `gelu`, HF "gelu").
    func gelu() -> Tensor {
        let d = shape.last ?? 1
        return withUnsafeBufferPointer { src in
            Tensor(shape: shape) { dst in
                let rows = d == 0 ? 0 : src.count / d
                parallelRows(rows, cost: d * 8, ways: elementwiseWays) { range in
                    for i in (range.lowerBound * d)..<(range.upperBound * d) {
                        let x = src[i]; dst[i] = 0.5 * x * (1 + erff(x * 0.70710678118654752))
                    }
                }
            }
        }
    }

    /// GELU, tanh approximation (HF "gelu_new" / "gelu_pytorch_tanh", GPT-2):
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), with 1 + tanh(y) = 2 − 2/(e^{2y} + 1).
    func geluTanh() -> Tensor {
        withUnsafeBufferPointer { src in
            Tensor(shape: shape) { dst in
                let c: Float = 0.7978845608028654
                simdMap(src, dst, vector: { x in
                    let y = c * (x + 0.044715 * x * x * x)
                    return x - x / (vexp(2 * y) + 1)
                }, scalar: { x in 0.5 * x * (1 + tanhf(c * (x + 0.044715 * x * x * x))) })
            }
        }
    }

    /// SwiGLU's gate: silu(gate) ⊙ up, fused so the MLP makes one pass over the (N, ffn) activations.
    static func siluGate(_ gate: Tensor, _ up: Tensor) throws -> Tensor {
        guard gate.shape == up.shape else { throw TensorError.shapeMismatch(op: "siluGate", expected: "\(gate.shape)", got: "\(up.shape)") }
        return gate.withUnsafeBufferPointer { g in
            up.withUnsafeBufferPointer { u in
                Tensor(shape: gate.shape) { dst in
                    simdZip(g, u, dst, vector: { x, y in x / (1 + vexp(-x)) * y }, scalar: { x, y in x / (1 + sexp(-x)) * y })
                }
            }
        }
    }

    /// SwiGLU's gate on a fused (N, 2f) [gate | up] projection: (N, 2f) → (N, f).
    func siluGateFused() throws -> Tensor {
        guard rank == 2, shape[1] % 2 == 0 else {
            throw TensorError.invalidShape(op: "siluGateFused", shape: shape, reason: "needs (N, 2f)")
        }
        let n = shape[0], f = shape[1] / 2
        return withUnsafeBufferPointer { src in
            Tensor(shape: [n, f]) { dst in
                parallelRows(n, cost: f * 4, ways: elementwiseWays) { range in
                    for r in range {
                        simdZip(UnsafeBufferPointer(rebasing: src[(r * 2 * f)..<(r * 2 * f + f)]),
                                UnsafeBufferPointer(rebasing: src[(r * 2 * f + f)..<((r + 1) * 2 * f)]),
                                UnsafeMutableBufferPointer(rebasing: dst[(r * f)..<((r + 1) * f)]),
                                vector: { x, y in x / (1 + vexp(-x)) * y }, scalar: { x, y in x / (1 + sexp(-x)) * y })
                    }
                }
            }
        }
    }

    // MARK: softmax

    /// Softmax over the last axis, max-subtracted for stability.
    func softmax() -> Tensor {
        let d = shape.last ?? 1
        return withUnsafeBufferPointer { src in
            Tensor(shape: shape) { dst in
                let rows = d == 0 ? 0 : src.count / d
                parallelRows(rows, cost: d * 4, ways: elementwiseWays) { range in
                    for r in range { softmaxRow(src.baseAddress! + r * d, dst.baseAddress! + r * d, d) }
                }
            }
        }
    }

    /// Log-softmax over the last axis: (x − max) − log Σ exp(x − max); subtracting the max
    /// first keeps large logits exact.
    func logSoftmax() -> Tensor {
        let d = shape.last ?? 1
        return withUnsafeBufferPointer { src in
            Tensor(shape: shape) { dst in
                let rows = d == 0 ? 0 : src.count / d
                parallelRows(rows, cost: d * 4, ways: elementwiseWays) { range in
                    for r in range {
                        let x = src.baseAddress! + r * d, y = dst.baseAddress! + r * d
                        let m = vmax(x, d)
                        if !m.isFinite { for i in 0..<d { y[i] = x[i] - m }; continue }
                        let logS = logf(sumExpShifted(x, d, m))
                        for i in 0..<d { y[i] = (x[i] - m) - logS }
                    }
                }
            }
        }
    }

    /// log Σ exp over the last axis: (…, d) → (…).
    func logSumExp() -> Tensor {
        let d = shape.last ?? 1
        return withUnsafeBufferPointer { src in
            Tensor(shape: Array(shape.dropLast())) { dst in
                for r in 0..<dst.count { dst[r] = logSumExpRow(src.baseAddress! + r * d, d) }
            }
        }
    }

    // MARK: normalization

    /// LayerNorm over the last axis: (x − mean)/√(var + eps) · γ + β, biased variance as PyTorch.
    func layerNorm(weight: Tensor, bias: Tensor?, eps: Float) throws -> Tensor {
        let d = shape.last ?? 0
        guard weight.shape == [d], bias == nil || bias!.shape == [d] else {
            throw TensorError.shapeMismatch(op: "layerNorm", expected: "[\(d)]", got: "\(weight.shape), \(bias?.shape ?? [])")
        }
        let g = weight.array, b = bias?.array
        return withUnsafeBufferPointer { src in
            Tensor(shape: shape) { dst in
                let rows = d == 0 ? 0 : src.count / d
                for r in 0..<rows {
                    let x = src.baseAddress! + r * d, y = dst.baseAddress! + r * d
                    // Two passes in Double: the mean, then the centred second moment.
                    var mean = 0.0
                    for i in 0..<d { mean += Double(x[i]) }
                    mean /= Double(d)
                    var v = 0.0
                    for i in 0..<d { let c = Double(x[i]) - mean; v += c * c }
                    v /= Double(d)
                    let inv = Float(1 / (v + Double(eps)).squareRoot())
                    let m = Float(mean)
                    if let b {
                        for i in 0..<d { y[i] = (x[i] - m) * inv * g[i] + b[i] }
                    } else {
                        for i in 0..<d { y[i] = (x[i] - m) * inv * g[i] }
                    }
                }
            }
        }
    }

    /// RMSNorm over the last axis as LLaMA does it: x · rsqrt(mean(x²) + eps) · w, in Float32.
    func rmsNorm(weight: Tensor, eps: Float) throws -> Tensor {
        let d = shape.last ?? 0
        guard weight.shape == [d] else {
            throw TensorError.shapeMismatch(op: "rmsNorm", expected: "[\(d)]", got: "\(weight.shape)")
        }
        return weight.withUnsafeBufferPointer { w in
            withUnsafeBufferPointer { src in
                Tensor(shape: shape) { dst in
                    let rows = d == 0 ? 0 : src.count / d
                    parallelRows(rows, cost: d * 2, ways: elementwiseWays) { range in
                        for r in range {
                            let x = src.baseAddress! + r * d, y = dst.baseAddress! + r * d
                            var acc = SIMD8<Float>(repeating: 0)
                            var i = 0
                            while i + 8 <= d { let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self); acc += v * v; i += 8 }
                            var ss = acc.sum()
                            while i < d { ss += x[i] * x[i]; i += 1 }
                            let inv = 1 / (ss / Float(d) + eps).squareRoot()
                            for i in 0..<d { y[i] = w[i] * (x[i] * inv) }
                        }
                    }
                }
            }
        }
    }

    // MARK: reductions

    var sum: Float { withUnsafeBufferPointer { vsum($0.baseAddress!, $0.count) } }

    /// Frobenius (L2) norm of all elements, accumulated in Double.
    var frobeniusNorm: Double {
        withUnsafeBufferPointer { p in
            var s = 0.0
            for v in p { s += Double(v) * Double(v) }
            return s.squareRoot()
        }
    }

    /// Index of the largest element of each row of the last axis: (…, d) → [Int].
    func argmaxLastAxis() -> [Int] {
        let d = shape.last ?? 1
        return withUnsafeBufferPointer { p in
            (0..<(d == 0 ? 0 : p.count / d)).map { r in
                var best = 0
                var bv = -Float.infinity
                for i in 0..<d where p[r * d + i] > bv { bv = p[r * d + i]; best = i }
                return best
            }
        }
    }
}

/// Σ exp(x − m) over a row, eight lanes at a time.
@inline(__always)
func sumExpShifted(_ x: UnsafePointer<Float>, _ d: Int, _ m: Float) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    let mv = SIMD8<Float>(repeating: m)
    var i = 0
    while i + 8 <= d { acc += vexp(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) - mv); i += 8 }
    var s = acc.sum()
    while i < d { s += sexp(x[i] - m); i += 1 }
    return s
}

@inline(__always)
func logSumExpRow(_ x: UnsafePointer<Float>, _ d: Int) -> Float {
    let m = vmax(x, d)
    if !m.isFinite { return m }
    return m + logf(sumExpShifted(x, d, m))
}

/// Softmax of a row into `y` (may alias `x`).
@inline(__always)
public func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ d: Int) {
    let m = vmax(x, d)
    let mv = SIMD8<Float>(repeating: m)
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= d {
        let e = vexp(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) - mv)
        UnsafeMutableRawPointer(y + i).storeBytes(of: e, as: SIMD8<Float>.self)
        acc += e
        i += 8
    }
    var s = acc.sum()
    while i < d { let e = sexp(x[i] - m); y[i] = e; s += e; i += 1 }
    let inv = SIMD8<Float>(repeating: 1 / s)
    i = 0
    while i + 8 <= d {
        let v = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self) * inv
        UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < d { y[i] *= inv[0]; i += 1 }
}

/// The `k` largest entries of a row, best first, ties to the lower index: one pass that keeps a
/// sorted list of `k` and rejects nearly every entry with one comparison (O(d) for k ≪ d, where
/// sorting the row was O(d log d): half of `assay logits` on a 49,152-token vocabulary).
public func topIndices(_ x: UnsafePointer<Float>, _ d: Int, _ k: Int) -> [Int] {
    let k = min(k, d)
    if k <= 0 { return [] }
    var best: [Int] = []
    best.reserveCapacity(k + 1)
    @inline(__always) func better(_ i: Int, _ j: Int) -> Bool { x[i] > x[j] || (x[i] == x[j] && i < j) }
    for i in 0..<d {
        if best.count == k && !better(i, best[k - 1]) { continue }
        var lo = 0, hi = best.count
        while lo < hi { let mid = (lo + hi) / 2; if better(best[mid], i) { lo = mid + 1 } else { hi = mid } }
        best.insert(i, at: lo)
        if best.count > k { best.removeLast() }
    }
    return best
}

public extension Tensor {
    /// Per row of (…, d) logits: log Σ exp and the `k` most likely entries with their
    /// log-probabilities, bitwise as `logSumExp()` and `logSoftmax()` give them, without
    /// materialising the log-softmax.
    func topLogProbabilities(_ k: Int) -> [(logsumexp: Float, top: [(id: Int, logprob: Float)])] {
        let d = shape.last ?? 1
        return withUnsafeBufferPointer { src in
            let rows = d == 0 ? 0 : src.count / d
            var out = [(logsumexp: Float, top: [(id: Int, logprob: Float)])](repeating: (0, []), count: rows)
            out.withUnsafeMutableBufferPointer { o in
                nonisolated(unsafe) let op = o.baseAddress!
                parallelRows(rows, cost: d * 4, ways: elementwiseWays) { range in
                    for r in range {
                        let x = src.baseAddress! + r * d
                        let m = vmax(x, d)
                        let best = topIndices(x, d, k)
                        if !m.isFinite { op[r] = (m, best.map { ($0, x[$0] - m) }); continue }
                        let logS = logf(sumExpShifted(x, d, m))
                        op[r] = (m + logS, best.map { ($0, (x[$0] - m) - logS) })
                    }
                }
            }
            return out
        }
    }
}
