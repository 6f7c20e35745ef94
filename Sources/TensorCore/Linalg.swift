import CBLAS
import CLAPACK
import Dispatch

/// OpenBLAS controls. Never combine Dispatch parallelism with OpenBLAS threads in one phase
/// (DESIGN.md): callers pick one scheme per phase and set the thread count accordingly.
public enum BLAS {
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// OpenBLAS's build description, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
    public static var configuration: String {
        guard let c = openblas_get_config() else { return "unknown" }
        return String(cString: c)
    }
}

/// How a 2-D tensor can be handed to BLAS without copying: row-major with leading dimension
/// `ld`, either as stored or transposed.
struct BLASOperand {
    let tensor: Tensor
    let transposed: Bool
    let ld: Int
    let rows: Int
    let cols: Int

    init(_ t: Tensor) {
        precondition(t.rank == 2)
        let (r, c) = (t.shape[0], t.shape[1])
        if t.strides[1] == 1 && (t.strides[0] >= max(c, 1) || r <= 1) {
            tensor = t; transposed = false; ld = max(t.strides[0], c, 1)
        } else if t.strides[0] == 1 && (t.strides[1] >= max(r, 1) || c <= 1) {
            tensor = t; transposed = true; ld = max(t.strides[1], r, 1)
        } else {
            let m = t.materialized()
            tensor = m; transposed = false; ld = max(c, 1)
        }
        rows = r; cols = c
    }

    var pointer: UnsafePointer<Float> { UnsafePointer(tensor.storage.pointer + tensor.offset) }
    var op: CBLAS_TRANSPOSE { transposed ? CblasTrans : CblasNoTrans }
}

public extension Tensor {
    /// Matrix product. (M, K) × (K, N) → (M, N); batched (B, M, K) × (B, K, N) or × (K, N).
    /// Transposed views are passed to BLAS as transposed operands, never copied.
    /// A single-row product goes to `cblas_sgemv`: OpenBLAS 0.3.21 does not route M=1 sgemm to
    /// gemv and is 2.5–5× slower there (DESIGN.md).
    func matmul(_ other: Tensor) throws -> Tensor {
        if rank == 2 && other.rank == 2 {
            guard shape[1] == other.shape[0] else {
                throw TensorError.shapeMismatch(op: "matmul", expected: "(\(shape[0]), \(shape[1])) × (\(shape[1]), N)", got: "\(shape) × \(other.shape)")
            }
            // beta = 0: GEMM overwrites C, so the output needs no zeroing pass.
            return Tensor(shape: [shape[0], other.shape[1]]) { c in
                Tensor.gemm(BLASOperand(self), BLASOperand(other), c.baseAddress!, ldc: other.shape[1], beta: 0)
            }
        }
        guard rank == 3, other.rank == 3 || other.rank == 2 else {
            throw TensorError.invalidShape(op: "matmul", shape: shape, reason: "expected rank 2 or 3 operands, other is \(other.shape)")
        }
        let (b, m, k) = (shape[0], shape[1], shape[2])
        let bShared = other.rank == 2
        let kn = bShared ? other.shape : Array(other.shape.dropFirst())
        guard kn[0] == k, bShared || other.shape[0] == b else {
            throw TensorError.shapeMismatch(op: "batched matmul", expected: "(\(b), \(m), \(k)) × (\(b), \(k), N)", got: "\(shape) × \(other.shape)")
        }
        let n = kn[1]
        if bShared {
            // (B, M, K) × (K, N) is one big (B·M, K) × (K, N) product when the batch is contiguous.
            let flat = reshaped([b * m, k])
            return try flat.matmul(other).reshaped([b, m, n])
        }
        var out = Tensor(zeros: [b, m, n])
        out.withUnsafeMutableBufferPointer { c in
            for i in 0..<b {
                Tensor.gemm(BLASOperand(row(i)), BLASOperand(other.row(i)), c.baseAddress! + i * m * n, ldc: n, beta: 0)
            }
        }
        return out
    }

    /// `x · Wᵀ (+ bias)` with W in the PyTorch `nn.Linear` layout (out, in): (N, in) → (N, out).
    /// Works on any leading shape: (…, in) → (…, out).
    func linear(weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
        guard weight.rank == 2, let inF = shape.last, weight.shape[1] == inF else {
            throw TensorError.shapeMismatch(op: "linear", expected: "(…, \(weight.shape.count == 2 ? weight.shape[1] : -1))", got: "\(shape)")
        }
        let outF = weight.shape[0]
        if let bias, bias.shape != [outF] {
            throw TensorError.shapeMismatch(op: "linear bias", expected: "[\(outF)]", got: "\(bias.shape)")
        }
        let lead = Array(shape.dropLast())
        let rows = lead.reduce(1, *)
        let x = reshaped([rows, inF])
        var out: Tensor
        if let bias {
            // Start C from the broadcast bias and let GEMM accumulate into it (beta = 1).
            out = Tensor(shape: [rows, outF]) { dst in
                bias.withUnsafeBufferPointer { b in
                    for r in 0..<rows { (dst.baseAddress! + r * outF).update(from: b.baseAddress!, count: outF) }
                }
            }
        } else {
            out = Tensor(shape: [rows, outF]) { _ in }  // overwritten by GEMM (beta = 0)
        }
        let beta: Float = bias == nil ? 0 : 1
        let ways = Parallel.ways
        let xc = x.contiguous(), wc = weight.contiguous()
        if Parallel.batchInvariant {
            Tensor.invariantLinear(xc, wc, &out, rows: rows, inF: inF, outF: outF, beta: beta, ways: ways)
            return out.reshaped(lead + [outF])
        }
        out.withUnsafeMutableBufferPointer { c in
            if ways < 2 || rows * outF * inF < 1 << 18 {
                Tensor.gemm(BLASOperand(xc), BLASOperand(wc.transposed), c.baseAddress!, ldc: outF, beta: beta)
                return
            }
            // Assay's own split (OpenBLAS is single-threaded, see `Parallel`): by rows when
            // there are many (prefill), else by output features, so each core streams its own
            // share of the weight (decode is memory-bound).
            nonisolated(unsafe) let cp = c.baseAddress!
            if rows >= 32 * ways {
                DispatchQueue.concurrentPerform(iterations: ways) { k in
                    let r0 = rows * k / ways, r1 = rows * (k + 1) / ways
                    Tensor.gemm(BLASOperand(xc.slice(axis: 0, r0..<r1)), BLASOperand(wc.transposed), cp + r0 * outF, ldc: outF, beta: beta)
                }
            } else {
                DispatchQueue.concurrentPerform(iterations: ways) { k in
                    let o0 = outF * k / ways, o1 = outF * (k + 1) / ways
                    Tensor.gemm(BLASOperand(xc), BLASOperand(wc.slice(axis: 0, o0..<o1).transposed), cp + o0, ldc: outF, beta: beta)
                }
            }
        }
        return out.reshaped(lead + [outF])
    }

    /// The batch-invariant linear layer (see `Parallel.batchInvariant` and `InvariantGEMM`).
    internal static func invariantLinear(_ x: Tensor, _ w: Tensor, _ out: inout Tensor, rows: Int, inF: Int, outF: Int, beta: Float, ways: Int) {
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                out.withUnsafeMutableBufferPointer { cp in
                    InvariantGEMM.gemm(m: rows, n: outF, k: inF, a: xp.baseAddress!, lda: inF, b: wp.baseAddress!, ldb: inF,
                                       c: cp.baseAddress!, ldc: outF, beta: beta, ways: ways)
                }
            }
        }
    }

    /// C = A·B + beta·C, choosing gemv for single-row or single-column products.
    internal static func gemm(_ a: BLASOperand, _ b: BLASOperand, _ c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float) {
        let (m, k, n) = (a.rows, a.cols, b.cols)
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        if m == 1 && n > 1 {
            // c (1×N) = a (1×K) · B (K×N)  ⇔  cᵀ = Bᵀ · aᵀ. The row of `a` is strided by 1 when
            // stored row-major; when transposed its elements are `ld` apart.
            let incA = a.transposed ? a.ld : 1
            // B stored as (K×N) row-major with ld: Bᵀ·x is gemv(Trans) on that storage.
            // B stored transposed (i.e. (N×K) row-major): gemv(NoTrans) on that storage.
            if b.transposed {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), 1, b.pointer, Int32(b.ld),
                            a.pointer, Int32(incA), beta, c, 1)
            } else {
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(n), 1, b.pointer, Int32(b.ld),
                            a.pointer, Int32(incA), beta, c, 1)
            }
            return
        }
        if n == 1 && m > 1 {
            // c (M×1) = A (M×K) · b (K×1); c's elements are ldc apart.
            let incB = b.transposed ? 1 : b.ld
            if a.transposed {
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(m), 1, a.pointer, Int32(a.ld),
                            b.pointer, Int32(incB), beta, c, Int32(ldc))
            } else {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(k), 1, a.pointer, Int32(a.ld),
                            b.pointer, Int32(incB), beta, c, Int32(ldc))
            }
            return
        }
        cblas_sgemm(CblasRowMajor, a.op, b.op, Int32(m), Int32(n), Int32(k), 1,
                    a.pointer, Int32(a.ld), b.pointer, Int32(b.ld), beta, c, Int32(ldc))
    }
}

/// Raw GEMM on row-major buffers, for hot paths that manage their own memory (attention,
/// benchmarks). C (M×N, ldc) = op(A) · op(B) + beta·C.
@inline(__always)
public func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// y = op(A)·x + beta·y for a row-major (M×N, lda) matrix A.
@inline(__always)
public func sgemv(trans: Bool, m: Int, n: Int, a: UnsafePointer<Float>, lda: Int,
                  x: UnsafePointer<Float>, incx: Int = 1, beta: Float = 0,
                  y: UnsafeMutablePointer<Float>, incy: Int = 1) {
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), 1, a, Int32(lda),
                x, Int32(incx), beta, y, Int32(incy))
}

/// Singular value decomposition of a matrix through LAPACKE `sgesdd` (divide and conquer).
public struct SVD: Sendable {
    /// (M, r) left singular vectors, r = min(M, N); nil when only values were asked for.
    public let u: Tensor?
    /// r singular values, descending.
    public let s: [Float]
    /// (r, N) right singular vectors, transposed; nil when only values were asked for.
    public let vt: Tensor?
}

public extension Tensor {
    /// Thin SVD, `self = U · diag(S) · Vᵀ`. `vectors: false` computes singular values only,
    /// which is all the weight diff needs and several times faster.
    func svd(vectors: Bool = true) throws -> SVD {
        guard rank == 2 else { throw TensorError.invalidShape(op: "svd", shape: shape, reason: "needs a matrix") }
        let (m, n) = (shape[0], shape[1])
        let r = min(m, n)
        if r == 0 { return SVD(u: vectors ? Tensor(zeros: [m, 0]) : nil, s: [], vt: vectors ? Tensor(zeros: [0, n]) : nil) }
        var a = materialized()  // LAPACK overwrites its input
        var s = [Float](repeating: 0, count: r)
        var u = vectors ? Tensor(zeros: [m, r]) : Tensor(zeros: [1])
        var vt = vectors ? Tensor(zeros: [r, n]) : Tensor(zeros: [1])
        let info: Int32 = a.withUnsafeMutableBufferPointer { ap in
            u.withUnsafeMutableBufferPointer { up in
                vt.withUnsafeMutableBufferPointer { vp in
                    s.withUnsafeMutableBufferPointer { sp in
                        LAPACKE_sgesdd(Int32(LAPACK_ROW_MAJOR), vectors ? Int8(UInt8(ascii: "S")) : Int8(UInt8(ascii: "N")),
                                       Int32(m), Int32(n), ap.baseAddress!, Int32(n), sp.baseAddress!,
                                       up.baseAddress!, Int32(vectors ? r : 1), vp.baseAddress!, Int32(n))  // LAPACKE checks ldvt ≥ N even for jobz = N
                    }
                }
            }
        }
        guard info == 0 else { throw TensorError.lapackFailure(routine: "LAPACKE_sgesdd", info: Int(info)) }
        return SVD(u: vectors ? u : nil, s: s, vt: vectors ? vt : nil)
    }
}
