import CBLAS
import CLAPACK
import Dispatch

/// OpenBLAS controls. Never combine Dispatch parallelism with OpenBLAS threads in one phase:
/// callers pick one scheme per phase and set the thread count accordingly.
public enum BLAS {
    public static var threads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// The kernel set OpenBLAS picked at load (`openblas_get_corename`), e.g. "SkylakeX".
    public static var coreName: String {
        guard let c = openblas_get_corename() else { return "unknown" }
        return String(cString: c)
    }

    /// Kernel sets that use AVX-512 (SkylakeX and later) or at least AVX2+FMA (Haswell, Zen).
    static let avx512Cores: Set<String> = ["skylakex", "cooperlake", "sapphirerapids"]
    static let avx2Cores: Set<String> = avx512Cores.union(["haswell", "zen"])

    /// The `OPENBLAS_CORETYPE` to restart with when OpenBLAS fell back to generic kernels on a
    /// CPU it does not know (Debian's 0.3.21 picks "Prescott", SSE3 only, on some Xeons: 5×
    /// slower SVDs), or nil when its choice is fine. `explicit` is the user's own setting, which
    /// is always kept.
    public static func preferredCoreType(current: String, isa: ISA, explicit: String?) -> String? {
        if let explicit, !explicit.isEmpty { return nil }
        let c = current.lowercased()
        switch isa {
        case .avx512: return avx512Cores.contains(c) ? nil : "SkylakeX"
        case .avx2: return avx2Cores.contains(c) ? nil : "Haswell"
        case .scalar: return nil
        }
    }

    /// OpenBLAS's build description, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
    public static var configuration: String {
        guard let c = openblas_get_config() else { return "unknown" }
        return String(cString: c)
    }
}

public extension Tensor {
    /// Matrix product. (M, K) × (K, N) → (M, N); batched (B, M, K) × (B, K, N) or × (K, N).
    /// Through Assay's packed kernel (`PackedMatrix`): the right operand is packed per call
    /// (O(K·N), against the product's O(M·K·N)), so every product in Assay has the same
    /// batch- and ISA-invariant arithmetic. Transposed views pack without a copy.
    func matmul(_ other: Tensor) throws -> Tensor {
        if rank == 2 && other.rank == 2 {
            guard shape[1] == other.shape[0] else {
                throw TensorError.shapeMismatch(op: "matmul", expected: "(\(shape[0]), \(shape[1])) × (\(shape[1]), N)",
                                                got: "\(shape) × \(other.shape)")
            }
            return try linear(PackedMatrix(stacking: [PackedMatrix.Rows(other.transposed)]))
        }
        guard rank == 3, other.rank == 3 || other.rank == 2 else {
            throw TensorError.invalidShape(op: "matmul", shape: shape, reason: "expected rank 2 or 3 operands, other is \(other.shape)")
        }
        let (b, m, k) = (shape[0], shape[1], shape[2])
        let bShared = other.rank == 2
        let kn = bShared ? other.shape : Array(other.shape.dropFirst())
        guard kn[0] == k, bShared || other.shape[0] == b else {
            throw TensorError.shapeMismatch(op: "batched matmul", expected: "(\(b), \(m), \(k)) × (\(b), \(k), N)",
                                            got: "\(shape) × \(other.shape)")
        }
        let n = kn[1]
        if bShared {
            // (B, M, K) × (K, N) is one (B·M, K) × (K, N) product.
            return try reshaped([b * m, k]).contiguous().matmul(other).reshaped([b, m, n])
        }
        let parts = try (0..<b).map { i in try row(i).matmul(other.row(i)) }
        return Tensor.concatenate(parts, axis: 0).reshaped([b, m, n])
    }

    /// `x · Wᵀ (+ bias)` with W in the PyTorch `nn.Linear` layout (out, in): (N, in) → (N, out).
    /// Works on any leading shape: (…, in) → (…, out). Packs W for this call; a model packs its
    /// weights once at load and calls `linear(_: PackedMatrix, bias:)`.
    func linear(weight: Tensor, bias: Tensor? = nil) throws -> Tensor {
        guard weight.rank == 2, let inF = shape.last, weight.shape[1] == inF else {
            throw TensorError.shapeMismatch(op: "linear", expected: "(…, \(weight.shape.count == 2 ? weight.shape[1] : -1))",
                                            got: "\(shape)")
        }
        return try linear(PackedMatrix(weight), bias: bias)
    }
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
                                       // LAPACKE checks ldvt ≥ N even for jobz = N.
                                       up.baseAddress!, Int32(vectors ? r : 1), vp.baseAddress!, Int32(n))
                    }
                }
            }
        }
        guard info == 0 else { throw TensorError.lapackFailure(routine: "LAPACKE_sgesdd", info: Int(info)) }
        return SVD(u: vectors ? u : nil, s: s, vt: vectors ? vt : nil)
    }
}

/// The spectrum of a low-rank product without forming it.
public enum LowRank {
    /// Singular values, largest first, of `left · right` for a tall `left` (m × r) and a wide
    /// `right` (r × n), both row-major, r ≤ min(m, n): with left = Q₁R₁ and rightᵀ = Q₂R₂ (QR),
    /// left · right = Q₁ (R₁R₂ᵀ) Q₂ᵀ, so its singular values are those of the r × r core R₁R₂ᵀ.
    /// O((m + n)·r²) in Double instead of an O(m·n·min(m, n)) SVD of the product, and free of the
    /// rounding a product formed in Float32 would add. Returns r values (the rest are 0).
    public static func singularValues(left: [Double], m: Int, right: [Double], n: Int, r: Int) throws -> [Double] {
        precondition(left.count == m * r && right.count == r * n && r <= min(m, n))
        if r == 0 { return [] }
        let r1 = try triangularFactor(left, rows: m, cols: r)
        var rightT = [Double](repeating: 0, count: n * r)
        for i in 0..<r { for j in 0..<n { rightT[j * r + i] = right[i * n + j] } }
        let r2 = try triangularFactor(rightT, rows: n, cols: r)
        var core = [Double](repeating: 0, count: r * r)  // R₁ · R₂ᵀ
        for i in 0..<r {
            for j in 0..<r {
                var s = 0.0
                for k in max(i, j)..<r { s += r1[i * r + k] * r2[j * r + k] }
                core[i * r + j] = s
            }
        }
        var s = [Double](repeating: 0, count: r)
        var u = [Double](repeating: 0, count: 1), vt = [Double](repeating: 0, count: r)
        let info = LAPACKE_dgesdd(Int32(LAPACK_ROW_MAJOR), Int8(UInt8(ascii: "N")), Int32(r), Int32(r), &core, Int32(r),
                                  &s, &u, 1, &vt, Int32(r))
        guard info == 0 else { throw TensorError.lapackFailure(routine: "LAPACKE_dgesdd", info: Int(info)) }
        return s
    }

    /// The upper-triangular R (cols × cols, row-major) of a QR decomposition of a rows × cols matrix.
    static func triangularFactor(_ a: [Double], rows: Int, cols: Int) throws -> [Double] {
        var a = a
        var tau = [Double](repeating: 0, count: cols)
        let info = LAPACKE_dgeqrf(Int32(LAPACK_ROW_MAJOR), Int32(rows), Int32(cols), &a, Int32(cols), &tau)
        guard info == 0 else { throw TensorError.lapackFailure(routine: "LAPACKE_dgeqrf", info: Int(info)) }
        var r = [Double](repeating: 0, count: cols * cols)
        for i in 0..<cols { for j in i..<cols { r[i * cols + j] = a[i * cols + j] } }
        return r
    }
}
