import Foundation
import Dispatch

// Vectorized transcendental functions and a two-way row splitter for element-wise phases.

/// e^x for eight lanes: Cody–Waite range reduction x = n·ln2 + r and Cephes' degree-6 minimax
/// polynomial for e^r (relative error ≈ 1 ulp over the clamped range). Inputs below −87.3 give
/// ≈ 1e-38 instead of a denormal or 0, which is indistinguishable after softmax normalisation.
@inline(__always)
public func vexp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let clamped = x.clamped(lowerBound: SIMD8(repeating: -87.3), upperBound: SIMD8(repeating: 88.7))
    let n = (clamped * 1.44269504088896341).rounded(.toNearestOrEven)
    var r = clamped - n * 0.693359375
    r = r - n * -2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    p = p * (r * r) + r + 1
    let bits = (SIMD8<Int32>(n) &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: SIMD8<Float>.self)
}

/// Scalar e^x with the same polynomial, for loop tails (so results do not depend on alignment).
@inline(__always)
public func sexp(_ x: Float) -> Float {
    vexp(SIMD8(repeating: x))[0]
}

/// Splits `count` rows into at most `ways` contiguous chunks and runs them concurrently when the
/// work (`count × cost`) is large enough to pay for it. Used only between BLAS calls, never while
/// BLAS threads run (DESIGN.md: one parallel scheme per phase).
@inline(__always)
public func parallelRows(_ count: Int, cost: Int, ways: Int = 2, _ body: (Range<Int>) -> Void) {
    if count < 2 || count * cost < 1 << 16 || ways < 2 {
        body(0..<count)
        return
    }
    let chunks = min(ways, count)
    withoutActuallyEscaping(body) { escaped in
        // The chunks touch disjoint rows; the closure is only borrowed for this call.
        nonisolated(unsafe) let b = escaped
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = count * c / chunks, hi = count * (c + 1) / chunks
            b(lo..<hi)
        }
    }
}

/// How many ways element-wise phases split (the machine's cores, at most 8).
public let elementwiseWays = max(1, min(8, ProcessInfo.processInfo.activeProcessorCount))
