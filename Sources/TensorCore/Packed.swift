import CKernels
import Dispatch
import Foundation

/// The instruction-set variant of Assay's kernels (Sources/CKernels), chosen once per process
/// from CPUID. `ASSAY_ISA=scalar|avx2|avx512` lowers it (to check that a report does not depend
/// on it, or to run as a Zen-class machine would); a request above what the CPU has is refused
/// by the CLI (`ISA.validateEnvironment`).
public enum ISA: Int32, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case scalar = 0
    case avx2 = 1
    case avx512 = 2

    public static func < (a: ISA, b: ISA) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .scalar: return "scalar"
        case .avx2: return "avx2"
        case .avx512: return "avx512"
        }
    }

    /// The best variant this CPU and OS support.
    public static let detected: ISA = ISA(rawValue: assay_isa_detect()) ?? .scalar

    /// The variant the kernels use: `ASSAY_ISA` when it names one the CPU has, else `detected`.
    public static let active: ISA = {
        if case let .success(isa?) = requested(ProcessInfo.processInfo.environment["ASSAY_ISA"]) { return isa }
        return detected
    }()

    /// Parses an `ASSAY_ISA` value: nil when unset or empty; a failure names what is wrong.
    public static func requested(_ value: String?) -> Result<ISA?, ISAError> {
        guard let value, !value.isEmpty else { return .success(nil) }
        guard let isa = ISA.allCases.first(where: { $0.description == value.lowercased() }) else {
            return .failure(ISAError(message: "ASSAY_ISA=\(value.debugDescription) is not one of scalar, avx2, avx512"))
        }
        guard isa <= detected else {
            return .failure(ISAError(message: "ASSAY_ISA=\(value) asks for more than this CPU has (\(detected))"))
        }
        return .success(isa)
    }

    /// Checks `ASSAY_ISA` of this process (the CLI calls it at start-up).
    public static func validateEnvironment() throws(ISAError) {
        if case let .failure(e) = requested(ProcessInfo.processInfo.environment["ASSAY_ISA"]) { throw e }
    }
}

public struct ISAError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Element type of a packed matrix: the checkpoint's, kept as stored and widened in registers.
public enum PackedDType: Int32, Sendable, CustomStringConvertible {
    case f32 = 0
    case bf16 = 1
    case f16 = 2

    public var size: Int { self == .f32 ? 4 : 2 }
    public var description: String { self == .f32 ? "F32" : self == .bf16 ? "BF16" : "F16" }
}

/// A weight matrix W (N×K, the `nn.Linear` layout: out features × in features) packed once at
/// load into 16-column panels for Assay's GEMM (CKernels `assay_pack`), in the element type it
/// was stored in. Every product through it is batch-invariant: output element (i, j) is one FMA
/// chain over k in order, so its bits depend on neither the other rows of the batch, nor the
/// column split across cores, nor the ISA variant (kernels.c states the contract).
public final class PackedMatrix: Equatable, @unchecked Sendable {
    /// N: output features (rows of W).
    public let rows: Int
    /// K: input features (columns of W).
    public let cols: Int
    public let dtype: PackedDType
    let base: UnsafeMutableRawPointer
    public let byteCount: Int
    var panels: Int { (rows + 15) / 16 }

    /// One source of rows for `init(stacking:)`: a strided matrix of `dtype` elements.
    public struct Rows {
        let pointer: UnsafeRawPointer
        let dtype: PackedDType
        let rows: Int
        let cols: Int
        let rowStride: Int
        let colStride: Int
        let keepAlive: Any?
        /// Called once the rows are packed (a mapped checkpoint drops its pages from memory).
        public var packed: (() -> Void)?

        /// Rows of raw stored elements (a checkpoint's bytes): element (r, k) at element offset
        /// r·rowStride + k·colStride from `raw`, which `owner` keeps valid.
        public init(raw: UnsafeRawPointer, dtype: PackedDType, rows: Int, cols: Int, rowStride: Int? = nil, colStride: Int = 1,
                    owner: Any? = nil) {
            pointer = raw; self.dtype = dtype; self.rows = rows; self.cols = cols
            self.rowStride = rowStride ?? cols; self.colStride = colStride; keepAlive = owner
        }

        /// Rows `range` of these rows.
        public func slice(_ range: Range<Int>) -> Rows {
            precondition(range.lowerBound >= 0 && range.upperBound <= rows)
            return Rows(raw: pointer + range.lowerBound * rowStride * dtype.size, dtype: dtype, rows: range.count, cols: cols,
                        rowStride: rowStride, colStride: colStride, owner: keepAlive)
        }

        /// The transpose, as a view (Conv1D weights stored (in, out)).
        public var transposed: Rows {
            Rows(raw: pointer, dtype: dtype, rows: cols, cols: rows, rowStride: colStride, colStride: rowStride, owner: keepAlive)
        }

        /// The rows of a rank-2 Float32 tensor (any strides: a transposed view packs without a copy).
        public init(_ t: Tensor) {
            precondition(t.rank == 2, "PackedMatrix.Rows needs a matrix, got \(t.shape)")
            pointer = UnsafeRawPointer(t.storage.pointer + t.offset)
            dtype = .f32; rows = t.shape[0]; cols = t.shape[1]
            rowStride = t.strides[0]; colStride = t.strides[1]; keepAlive = t.storage
        }
    }

    /// W as the row-wise concatenation of `parts` (fused q/k/v, gate/up). Parts of one element
    /// type keep it; mixed types are widened to F32.
    public init(stacking parts: [Rows]) {
        precondition(!parts.isEmpty && parts.allSatisfy { $0.cols == parts[0].cols }, "PackedMatrix parts must share K")
        let dtype = parts.allSatisfy({ $0.dtype == parts[0].dtype }) ? parts[0].dtype : .f32
        self.dtype = dtype
        rows = parts.reduce(0) { $0 + $1.rows }
        cols = parts[0].cols
        byteCount = max(1, (rows + 15) / 16 * 16 * cols * dtype.size)
        base = LargeBuffer(bytes: byteCount).base
        // Every element of rows < N is written below; only the last group holds padding.
        let lastGroup = max(0, (((rows + 15) / 16 + 3) / 4 - 1)) * 64 * cols * dtype.size
        (base + lastGroup).initializeMemory(as: UInt8.self, repeating: 0, count: byteCount - lastGroup)
        var first = 0
        for part in parts {
            if part.dtype == dtype {
                assay_pack(part.pointer, dtype.rawValue, part.rows, part.cols, part.rowStride, part.colStride, base, rows, first)
            } else {
                let wide = Tensor.widened(part)
                assay_pack(UnsafeRawPointer(wide.storage.pointer), PackedDType.f32.rawValue, part.rows, part.cols, part.cols, 1,
                           base, rows, first)
            }
            withExtendedLifetime(part.keepAlive) {}
            part.packed?()
            first += part.rows
        }
    }

    /// A Float32 matrix.
    public convenience init(_ w: Tensor) { self.init(stacking: [Rows(w)]) }

    /// Same shape, element type and bytes (the same weights, packed the same way).
    public static func == (a: PackedMatrix, b: PackedMatrix) -> Bool {
        a === b || (a.rows == b.rows && a.cols == b.cols && a.dtype == b.dtype && memcmp(a.base, b.base, a.byteCount) == 0)
    }

    /// The embedding rows of `ids`, widened: (ids.count, K).
    public func gatherRows(_ ids: [Int]) -> Tensor {
        Tensor(shape: [ids.count, cols]) { p in
            for (i, id) in ids.enumerated() { row(id, into: p.baseAddress! + i * cols) }
        }
    }

    deinit { base.deallocate() }

    /// Row `i` of W widened to Float32 (an embedding lookup through a tied head).
    public func row(_ i: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(i >= 0 && i < rows)
        assay_packed_row(base, dtype.rawValue, rows, cols, i, out)
    }

    /// W as a Float32 tensor (tests, weight diffs).
    public func unpacked() -> Tensor {
        Tensor(shape: [rows, cols]) { p in
            for i in 0..<rows { row(i, into: p.baseAddress! + i * cols) }
        }
    }

    /// C (M×N, ldc) = A (M×K, lda) · Wᵀ (+ C when `accumulate`), the N columns split by panel
    /// groups across `ways` cores (any split gives the same bits).
    public func multiply(m: Int, a: UnsafePointer<Float>, lda: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
                         accumulate: Bool, ways: Int = Parallel.ways, isa: ISA = .active) {
        if m == 0 || rows == 0 { return }
        // A is packed once into row tiles (O(M·K)) and shared by the cores, which split W.
        let aFloats = assay_packed_a_floats(m, cols)
        let ap = LargeBuffer(bytes: aFloats * 4)
        defer { ap.free() }
        let apf = ap.base.assumingMemoryBound(to: Float.self)
        assay_pack_a(m, cols, a, lda, apf)
        let groups = (panels + 3) / 4
        let parts = ways < 2 || m * rows * cols < 1 << 17 ? 1 : min(ways, groups)
        let acc: Int32 = accumulate ? 1 : 0
        if parts == 1 {
            assay_gemm_packed(isa.rawValue, m, rows, cols, apf, base, dtype.rawValue, c, ldc, acc, 0, panels)
            return
        }
        nonisolated(unsafe) let (app, cp, bp) = (UnsafePointer(apf), c, UnsafeRawPointer(base))
        let (n, k, dt, np) = (rows, cols, dtype.rawValue, panels)
        Parallel.run(parts) { q in
            let p0 = 4 * (groups * q / parts), p1 = min(np, 4 * (groups * (q + 1) / parts))
            assay_gemm_packed(isa.rawValue, m, n, k, app, bp, dt, cp, ldc, acc, p0, p1)
        }
    }
}

/// An aligned allocation; from 4 MiB up it is 2 MiB-aligned and asks for transparent huge pages
/// (packed weights and large operands are read in long streams: fewer TLB misses, ~10% faster
/// GEMM measured here).
struct LargeBuffer {
    let base: UnsafeMutableRawPointer
    let bytes: Int

    init(bytes: Int) {
        self.bytes = max(bytes, 1)
        let huge = self.bytes >= 4 << 20
        base = UnsafeMutableRawPointer.allocate(byteCount: self.bytes, alignment: huge ? 2 << 20 : 64)
        if huge { _ = madvise(base, self.bytes / (2 << 20) * (2 << 20), MADV_HUGEPAGE) }
    }

    func free() { base.deallocate() }
}

extension Tensor {
    /// A row source widened to a contiguous Float32 tensor.
    static func widened(_ part: PackedMatrix.Rows) -> Tensor {
        Tensor(shape: [part.rows, part.cols]) { dst in
            for r in 0..<part.rows {
                for k in 0..<part.cols {
                    let at = r * part.rowStride + k * part.colStride
                    dst[r * part.cols + k] = part.dtype == .f32
                        ? part.pointer.load(fromByteOffset: at * 4, as: Float.self)
                        : widen(part.pointer.load(fromByteOffset: at * 2, as: UInt16.self), part.dtype)
                }
            }
        }
    }

    static func widen(_ bits: UInt16, _ dtype: PackedDType) -> Float {
        if dtype == .bf16 { return Float(bitPattern: UInt32(bits) << 16) }
        return Float(Float16(bitPattern: bits))
    }

    /// `x · Wᵀ (+ bias)` through a packed weight: (…, K) → (…, N). Batch-invariant, see `PackedMatrix`.
    public func linear(_ w: PackedMatrix, bias: Tensor? = nil) throws -> Tensor {
        guard let inF = shape.last, w.cols == inF else {
            throw TensorError.shapeMismatch(op: "linear", expected: "(…, \(w.cols))", got: "\(shape)")
        }
        let outF = w.rows
        if let bias, bias.shape != [outF] {
            throw TensorError.shapeMismatch(op: "linear bias", expected: "[\(outF)]", got: "\(bias.shape)")
        }
        let lead = Array(shape.dropLast())
        let n = lead.reduce(1, *)
        let x = reshaped([n, inF]).contiguous()
        let out = Tensor(shape: [n, outF]) { dst in
            if let bias {
                // The chain of each element starts from its bias (accumulate).
                bias.contiguous().withUnsafeBufferPointer { b in
                    for r in 0..<n { (dst.baseAddress! + r * outF).update(from: b.baseAddress!, count: outF) }
                }
            }
            x.withUnsafeBufferPointer { xp in
                w.multiply(m: n, a: xp.baseAddress!, lda: inF, c: dst.baseAddress!, ldc: outF, accumulate: bias != nil)
            }
        }
        return out.reshaped(lead + [outF])
    }
}

/// Reads `count` floats once with the widest loads the CPU has and returns their sum: the read
/// bandwidth probe of `assay bench kernels`.
public func streamingRead(_ p: UnsafePointer<Float>, count: Int) -> Float { assay_stream_read(p, count) }
