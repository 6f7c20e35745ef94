import Foundation

// Float16/BFloat16 ↔ Float32 at the load/store boundary (all arithmetic is in Float32).
// Widening is exact. BF16 is the top half of an F32; F16 goes through the hardware conversion
// (F16C with -target-cpu haswell).

/// Decodes little-endian F32/F16/BF16 bytes into Float32.
public func decodeToFloat32(_ raw: UnsafeRawBufferPointer, dtype: DType, into dst: UnsafeMutableBufferPointer<Float>) {
    let n = dst.count
    guard n > 0, let src = raw.baseAddress else { return }
    let d = dst.baseAddress!
    switch dtype {
    case .f32:
        UnsafeMutableRawPointer(d).copyMemory(from: src, byteCount: n * 4)
    case .bf16:
        var i = 0
        while i + 8 <= n {
            let h = src.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<UInt16>.self)
            let w = SIMD8<UInt32>(truncatingIfNeeded: h) &<< 16
            UnsafeMutableRawPointer(d + i).storeBytes(of: w, as: SIMD8<UInt32>.self)
            i += 8
        }
        while i < n {
            d[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) << 16)
            i += 1
        }
    case .f16:
        var i = 0
        while i + 8 <= n {
            let h = src.loadUnaligned(fromByteOffset: i * 2, as: SIMD8<UInt16>.self)
            let f = SIMD8<Float>(unsafeBitCast(h, to: SIMD8<Float16>.self))
            UnsafeMutableRawPointer(d + i).storeBytes(of: f, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            d[i] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
            i += 1
        }
    default:
        preconditionFailure("decodeToFloat32 called for \(dtype)")
    }
}

/// Counts NaN and infinite values by bit pattern (exponent all ones; zero mantissa is ±Inf).
func countNonFinite(_ raw: UnsafeRawBufferPointer, dtype: DType) -> (nan: Int, inf: Int) {
    var nan = 0, inf = 0
    switch dtype {
    case .f32:
        let n = raw.count / 4
        var i = 0
        let expMask = SIMD8<UInt32>(repeating: 0x7F80_0000), manMask = SIMD8<UInt32>(repeating: 0x007F_FFFF)
        while i + 8 <= n {
            let w = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self)
            let special = (w & expMask) .== expMask
            if any(special) {
                let zeroMan = (w & manMask) .== SIMD8<UInt32>(repeating: 0)
                for l in 0..<8 where special[l] { if zeroMan[l] { inf += 1 } else { nan += 1 } }
            }
            i += 8
        }
        while i < n {
            let w = raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)
            if w & 0x7F80_0000 == 0x7F80_0000 { if w & 0x007F_FFFF == 0 { inf += 1 } else { nan += 1 } }
            i += 1
        }
    case .f16, .bf16:
        let (e, m): (UInt16, UInt16) = dtype == .f16 ? (0x7C00, 0x03FF) : (0x7F80, 0x007F)
        for i in 0..<(raw.count / 2) {
            let w = raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)
            if w & e == e { if w & m == 0 { inf += 1 } else { nan += 1 } }
        }
    case .f64:
        for i in 0..<(raw.count / 8) {
            let w = raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)
            if w & 0x7FF0_0000_0000_0000 == 0x7FF0_0000_0000_0000 {
                if w & 0x000F_FFFF_FFFF_FFFF == 0 { inf += 1 } else { nan += 1 }
            }
        }
    default:
        break
    }
    return (nan, inf)
}

/// Rounds Float32 to BF16 bits, round-to-nearest-even, NaN kept quiet (as PyTorch does).
public func bfloat16Bits(_ x: Float) -> UInt16 {
    let w = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: (w >> 16) | 0x0040) }
    let rounding = 0x7FFF + ((w >> 16) & 1)
    return UInt16(truncatingIfNeeded: (w &+ rounding) >> 16)
}
