import CKernels
import Foundation
import Dispatch

// Vectorized transcendental functions and a two-way row splitter for element-wise phases.

/// e^x for eight lanes: Cody–Waite range reduction x = n·ln2 + r and Cephes' degree-6 minimax
/// polynomial for e^r (relative error ≈ 1 ulp over the clamped range). Inputs below −87.3 give
/// ≈ 1e-38 instead of a denormal or 0, which is indistinguishable after softmax normalisation.
///
/// Rounding and the float→int step use the 1.5·2²³ trick: Swift's `rounded()` and checked
/// `SIMD8<Int32>(_:)` conversions are lowered lane by lane and made this 30× slower.
@inline(__always)
public func vexp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let clamped = pointwiseMin(pointwiseMax(x, SIMD8(repeating: -87.3)), SIMD8(repeating: 88.7))
    let magic = SIMD8<Float>(repeating: 12_582_912)            // 1.5 · 2²³
    let shifted = clamped * 1.44269504088896341 + magic         // n in the low mantissa bits
    let n = shifted - magic                                     // round-to-nearest-even n
    var r = clamped - n * 0.693359375
    r = r - n * -2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * (r * r) + r + 1
    // 2ⁿ: n sits in the low bits of `shifted`; add the exponent bias and move it into place.
    let nBits = unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &- 0x4B40_0000
    let scale = unsafeBitCast((nBits &+ 127) &<< 23, to: SIMD8<Float>.self)
    return p * scale
}

/// Scalar e^x with the same polynomial, for loop tails (so results do not depend on alignment).
@inline(__always)
public func sexp(_ x: Float) -> Float {
    vexp(SIMD8(repeating: x))[0]
}

/// Splits `count` rows into at most `ways` contiguous chunks and runs them concurrently when the
/// work (`count × cost`) is large enough to pay for it. Used only between BLAS calls, never while
/// BLAS threads run (one parallel scheme per phase: `Parallel`).
@inline(__always)
public func parallelRows(_ count: Int, cost: Int, ways: Int = 2, _ body: (Range<Int>) -> Void) {
    if count < 2 || count * cost < 1 << 16 || ways < 2 {
        body(0..<count)
        return
    }
    let chunks = min(ways, count)
    // The chunks touch disjoint rows.
    Parallel.run(chunks) { c in body((count * c / chunks)..<(count * (c + 1) / chunks)) }
}

/// The parallel scheme. Assay's kernels (GEMM through `PackedMatrix`, attention, element-wise
/// rows) split their work `ways` ways on Assay's fork-join pool (`run`); OpenBLAS, now used only for LAPACK's SVD,
/// runs single-threaded unless a phase that is nothing but LAPACK asks for its threads
/// (`useBLASThreads`): OpenBLAS workers busy-wait after each call and would fight Dispatch for
/// the cores (one scheme per phase). Every split gives the same bits.
public enum Parallel {
    nonisolated(unsafe) public private(set) static var ways = 1

    public static func configure(threads: Int) {
        let n = max(1, min(threads, 64))
        ways = n
        BLAS.threads = 1
    }

    /// Runs `body(0 ..< parts)` and returns when all have finished, on this thread and Assay's
    /// fork-join pool (`assay_parallel`: one worker per other CPU, spinning between regions, so a
    /// region of microseconds does not wait for a thread to wake; a region inside a region runs
    /// its parts in turn). The closure is only borrowed for the call.
    public static func run(_ parts: Int, _ body: (Int) -> Void) {
        if parts <= 1 {
            if parts == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { escaped in
            var b = escaped
            withUnsafeMutablePointer(to: &b) { box in
                assay_parallel(parts, { ctx, part in
                    ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(part)
                }, box)
            }
        }
    }

    /// OpenBLAS threads instead of Assay's (for BLAS-only phases such as `bench core`).
    public static func useBLASThreads(_ threads: Int) {
        ways = 1
        BLAS.threads = threads
    }
}

/// Kept for call sites that split element-wise work: the configured number of ways.
public var elementwiseWays: Int { Parallel.ways }
