import Dispatch

/// A GEMM whose every output element is computed by the same arithmetic wherever it sits:
/// C[i, j] = beta·C[i, j] + Σ_k A[i, k]·B[j, k], with A (M×K) and B (N×K) row-major (B in the
/// `nn.Linear` weight layout).
///
/// Why: OpenBLAS picks micro-kernels and summation orders by a row's position in its tile and
/// by the matrix sizes (measured on 0.3.21: a row's bits change with M, with its offset, and
/// between sgemm and sgemv), so a sequence's logits would depend on what else is in its batch.
/// Here each element is one dot product: eight FMA lanes running over k in order (k ≡ lane
/// mod 8, a zero-padded last vector), then a fixed pairwise reduction of the lanes. Register
/// blocking (3 rows of A × 3 rows of B) and cache blocking only change which dot products run
/// together, never their arithmetic, so the result is bitwise independent of M, of the row's
/// position, of N's split across cores and of the thread count. This is the "batch-invariant
/// kernel" idea. Linear layers go through `PackedMatrix` (CKernels); this dot-product form serves
/// attention, whose operands (a query block against the cached keys) change every call and are
/// not worth packing.
enum InvariantGEMM {
    typealias V = SIMD8<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }

    @inline(__always)
    static func loadTail(_ p: UnsafePointer<Float>, _ r: Int) -> V {
        var v = V(repeating: 0)
        for l in 0..<r { v[l] = p[l] }
        return v
    }

    /// The one reduction every element goes through.
    @inline(__always)
    static func reduce(_ v: V) -> Float {
        let h = v.lowHalf + v.highHalf
        let q = h.lowHalf + h.highHalf
        return q[0] + q[1]
    }

    @inline(__always)
    static func store(_ c: UnsafeMutablePointer<Float>, _ v: V, _ beta: Float) {
        let s = reduce(v)
        c.pointee = beta == 0 ? s : beta * c.pointee + s
    }

    /// Rows `rows` of C for columns `cols`. C, A and B are row-major with leading dimensions.
    static func run(rows: Range<Int>, cols: Range<Int>, k: Int,
                    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                    c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float) {
        let k8 = k & ~7, tail = k - k8
        // Cache blocking: a panel of B rows that stays in L2 while every row block of A runs over it.
        let panel = max(3, min(cols.count, (192 * 1024) / max(1, k * 4) / 3 * 3))
        var j0 = cols.lowerBound
        while j0 < cols.upperBound {
            let j1 = min(cols.upperBound, j0 + panel)
            var i = rows.lowerBound
            while i < rows.upperBound {
                let mr = min(3, rows.upperBound - i)
                var j = j0
                while j < j1 {
                    let nr = min(3, j1 - j)
                    if mr == 3 && nr == 3 {
                        tile3x3(k8: k8, tail: tail, a: a + i * lda, lda: lda, b: b + j * ldb, ldb: ldb,
                                c: c + i * ldc + j, ldc: ldc, beta: beta)
                    } else {
                        for ii in i..<(i + mr) {
                            for jj in j..<(j + nr) {
                                store(c + ii * ldc + jj, dot(k8: k8, tail: tail, a + ii * lda, b + jj * ldb), beta)
                            }
                        }
                    }
                    j += nr
                }
                i += mr
            }
            j0 = j1
        }
    }

    @inline(__always)
    static func dot(k8: Int, tail: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> V {
        var acc = V(repeating: 0)
        var kk = 0
        while kk < k8 { acc = acc.addingProduct(load(x + kk), load(y + kk)); kk += 8 }
        if tail > 0 { acc = acc.addingProduct(loadTail(x + k8, tail), loadTail(y + k8, tail)) }
        return acc
    }

    @inline(__always)
    static func tile3x3(k8: Int, tail: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                        c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float) {
        // 9 accumulators + 3 B vectors + 1 A vector: fits AVX2's 16 registers without spills.
        let a0 = a, a1 = a + lda, a2 = a + 2 * lda
        let b0 = b, b1 = b + ldb, b2 = b + 2 * ldb
        var c00 = V(repeating: 0), c01 = V(repeating: 0), c02 = V(repeating: 0)
        var c10 = V(repeating: 0), c11 = V(repeating: 0), c12 = V(repeating: 0)
        var c20 = V(repeating: 0), c21 = V(repeating: 0), c22 = V(repeating: 0)
        var kk = 0
        while kk < k8 {
            let y0 = load(b0 + kk), y1 = load(b1 + kk), y2 = load(b2 + kk)
            let x0 = load(a0 + kk)
            c00 = c00.addingProduct(x0, y0); c01 = c01.addingProduct(x0, y1); c02 = c02.addingProduct(x0, y2)
            let x1 = load(a1 + kk)
            c10 = c10.addingProduct(x1, y0); c11 = c11.addingProduct(x1, y1); c12 = c12.addingProduct(x1, y2)
            let x2 = load(a2 + kk)
            c20 = c20.addingProduct(x2, y0); c21 = c21.addingProduct(x2, y1); c22 = c22.addingProduct(x2, y2)
            kk += 8
        }
        if tail > 0 {
            let y0 = loadTail(b0 + k8, tail), y1 = loadTail(b1 + k8, tail), y2 = loadTail(b2 + k8, tail)
            let x0 = loadTail(a0 + k8, tail), x1 = loadTail(a1 + k8, tail), x2 = loadTail(a2 + k8, tail)
            c00 = c00.addingProduct(x0, y0); c01 = c01.addingProduct(x0, y1); c02 = c02.addingProduct(x0, y2)
            c10 = c10.addingProduct(x1, y0); c11 = c11.addingProduct(x1, y1); c12 = c12.addingProduct(x1, y2)
            c20 = c20.addingProduct(x2, y0); c21 = c21.addingProduct(x2, y1); c22 = c22.addingProduct(x2, y2)
        }
        store(c, c00, beta); store(c + 1, c01, beta); store(c + 2, c02, beta)
        store(c + ldc, c10, beta); store(c + ldc + 1, c11, beta); store(c + ldc + 2, c12, beta)
        store(c + 2 * ldc, c20, beta); store(c + 2 * ldc + 1, c21, beta); store(c + 2 * ldc + 2, c22, beta)
    }

    /// C (M×N) = A·Bᵀ + beta·C, split by columns of C across `ways` cores (any split gives the
    /// same bits).
    static func gemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float, ways: Int) {
        if m == 0 || n == 0 { return }
        let parts = (ways < 2 || m * n * k < 1 << 17) ? 1 : min(ways, max(1, n / 24))
        if parts == 1 {
            run(rows: 0..<m, cols: 0..<n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, beta: beta)
            return
        }
        nonisolated(unsafe) let (ap, bp, cp) = (a, b, c)
        Parallel.run(parts) { p in
            let j0 = n * p / parts, j1 = n * (p + 1) / parts
            run(rows: 0..<m, cols: j0..<j1, k: k, a: ap, lda: lda, b: bp, ldb: ldb, c: cp, ldc: ldc, beta: beta)
        }
    }
}

/// Fixed-order kernels for attention: a query row's scores and
/// output do not depend on how many query rows run with it (decoding one token and scoring a
/// whole continuation give the same bits).
public enum InvariantKernels {
    /// C (M×N, ldc) = A (M×K, lda) · B (N×K, ldb)ᵀ, one thread, each element one fixed-order dot product.
    public static func gemmABt(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                               c: UnsafeMutablePointer<Float>, ldc: Int) {
        InvariantGEMM.run(rows: 0..<m, cols: 0..<n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc, beta: 0)
    }

    /// out[c] = (accumulate ? out[c] : 0) + Σ_r weights[r] · rows[r·ld + c] for c < d, summing r
    /// in order with one FMA per step. Up to 64 columns advance together (eight independent
    /// 8-lane chains in flight instead of one), which changes no element's arithmetic.
    public static func weightedRowSum(out: UnsafeMutablePointer<Float>, d: Int, weights: UnsafePointer<Float>,
                                      rows: UnsafePointer<Float>, ld: Int, count: Int, accumulate: Bool) {
        typealias V = SIMD8<Float>
        @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
        @inline(__always) func start(_ c: Int) -> V { accumulate ? load(out + c) : V(repeating: 0) }
        @inline(__always) func put(_ c: Int, _ v: V) { UnsafeMutableRawPointer(out + c).storeBytes(of: v, as: V.self) }
        var c = 0
        while c + 64 <= d {
            var a0 = start(c), a1 = start(c + 8), a2 = start(c + 16), a3 = start(c + 24)
            var a4 = start(c + 32), a5 = start(c + 40), a6 = start(c + 48), a7 = start(c + 56)
            var p = rows + c
            for r in 0..<count {
                let w = V(repeating: weights[r])
                a0 = a0.addingProduct(w, load(p)); a1 = a1.addingProduct(w, load(p + 8))
                a2 = a2.addingProduct(w, load(p + 16)); a3 = a3.addingProduct(w, load(p + 24))
                a4 = a4.addingProduct(w, load(p + 32)); a5 = a5.addingProduct(w, load(p + 40))
                a6 = a6.addingProduct(w, load(p + 48)); a7 = a7.addingProduct(w, load(p + 56))
                p += ld
            }
            put(c, a0); put(c + 8, a1); put(c + 16, a2); put(c + 24, a3)
            put(c + 32, a4); put(c + 40, a5); put(c + 48, a6); put(c + 56, a7)
            c += 64
        }
        while c + 16 <= d {
            var a0 = start(c), a1 = start(c + 8)
            var p = rows + c
            for r in 0..<count {
                let w = V(repeating: weights[r])
                a0 = a0.addingProduct(w, load(p)); a1 = a1.addingProduct(w, load(p + 8))
                p += ld
            }
            put(c, a0); put(c + 8, a1)
            c += 16
        }
        while c + 8 <= d {
            var acc = start(c)
            for r in 0..<count { acc = acc.addingProduct(V(repeating: weights[r]), load(rows + r * ld + c)) }
            put(c, acc)
            c += 8
        }
        while c < d {
            var acc = accumulate ? out[c] : 0
            for r in 0..<count { acc = acc.addingProduct(weights[r], rows[r * ld + c]) }
            out[c] = acc
            c += 1
        }
    }
}
