import Foundation
import SafeTensors

/// Dequantisation to Float32, block by block, as the `gguf` Python package's reference
/// (`gguf.quants.dequantize`) and ggml's `dequantize_row_*` compute it: the scale and minimum
/// are F16 widened to Float32, each element one Float32 multiply (and one add for the `_1`
/// formats), never fused, so the bits match.
extension GGUFFile {
    /// The types `dequantize` reads.
    public static let dequantizable: Set<GGMLType> = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1,
                                                      .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

    /// The tensor's elements in ggml order (row-major for `shape`).
    public func floats(_ t: GGUFTensorInfo) throws(GGUFError) -> [Float] {
        try [Float](unsafeUninitializedCapacity: t.elementCount) { buf, n throws(GGUFError) in
            try dequantize(t, into: buf)
            n = t.elementCount
        }
    }

    public func dequantize(_ t: GGUFTensorInfo, into dst: UnsafeMutableBufferPointer<Float>) throws(GGUFError) {
        precondition(dst.count == t.elementCount, "destination of \(dst.count) for \(t.elementCount) elements")
        let src = bytes(of: t)
        let blocks = t.elementCount / t.type.block.elements, size = t.type.block.bytes
        func f16(_ b: Int, _ at: Int) -> Float {
            Float(Float16(bitPattern: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: b * size + at, as: UInt16.self))))
        }
        func byte(_ b: Int, _ at: Int) -> UInt8 { src[b * size + at] }
        func qh(_ b: Int, _ at: Int) -> UInt32 { UInt32(littleEndian: src.loadUnaligned(fromByteOffset: b * size + at, as: UInt32.self)) }
        let y = dst.baseAddress!
        switch t.type {
        case .f32: decodeToFloat32(src, dtype: .f32, into: dst)
        case .f16: decodeToFloat32(src, dtype: .f16, into: dst)
        case .bf16: decodeToFloat32(src, dtype: .bf16, into: dst)
        case .q8_0:
            for b in 0..<blocks {
                let d = f16(b, 0)
                for j in 0..<32 { y[b * 32 + j] = d * Float(Int8(bitPattern: byte(b, 2 + j))) }
            }
        case .q4_0:
            for b in 0..<blocks {
                let d = f16(b, 0)
                for j in 0..<16 {
                    let q = byte(b, 2 + j)
                    y[b * 32 + j] = d * Float(Int(q & 0xF) - 8)
                    y[b * 32 + j + 16] = d * Float(Int(q >> 4) - 8)
                }
            }
        case .q4_1:
            for b in 0..<blocks {
                let d = f16(b, 0), m = f16(b, 2)
                for j in 0..<16 {
                    let q = byte(b, 4 + j)
                    y[b * 32 + j] = d * Float(q & 0xF) + m
                    y[b * 32 + j + 16] = d * Float(q >> 4) + m
                }
            }
        case .q5_0:
            for b in 0..<blocks {
                let d = f16(b, 0), h = qh(b, 2)
                for j in 0..<16 {
                    let q = byte(b, 6 + j)
                    let lo = Int(q & 0xF) | Int((h >> UInt32(j)) << 4 & 0x10)
                    let hi = Int(q >> 4) | Int((h >> UInt32(j + 12)) & 0x10)
                    y[b * 32 + j] = d * Float(lo - 16)
                    y[b * 32 + j + 16] = d * Float(hi - 16)
                }
            }
        case .q5_1:
            for b in 0..<blocks {
                let d = f16(b, 0), m = f16(b, 2), h = qh(b, 4)
                for j in 0..<16 {
                    let q = byte(b, 8 + j)
                    let lo = Int(q & 0xF) | Int((h >> UInt32(j)) << 4 & 0x10)
                    let hi = Int(q >> 4) | Int((h >> UInt32(j + 12)) & 0x10)
                    y[b * 32 + j] = d * Float(lo) + m
                    y[b * 32 + j + 16] = d * Float(hi) + m
                }
            }
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            for b in 0..<blocks {
                let block = UnsafeRawBufferPointer(rebasing: src[(b * size)..<(b * size + size)])
                KQuant.dequantize(t.type, block, into: y + b * 256)
            }
        default:
            throw .unsupportedType(file: url.path, tensor: t.name, type: t.type.description)
        }
    }
}

/// The K-quants: super-blocks of 256 elements in 16 or 8 sub-blocks, each with its own scale
/// (and minimum), the sub-block scales themselves quantised against one or two F16 scales
/// (ggml-quants.c `dequantize_row_q*_K`). The arithmetic is `gguf.quants`' order: the sub-block
/// scale `d · sc` first, then `scale · q − min`, each a separate Float32 operation.
enum KQuant {
    static func dequantize(_ type: GGMLType, _ x: UnsafeRawBufferPointer, into y: UnsafeMutablePointer<Float>) {
        func f16(_ at: Int) -> Float {
            Float(Float16(bitPattern: UInt16(littleEndian: x.loadUnaligned(fromByteOffset: at, as: UInt16.self))))
        }
        switch type {
        case .q2_K: q2K(x, d: f16(80), dmin: f16(82), y)
        case .q3_K: q3K(x, d: f16(108), y)
        case .q4_K: q45K(x, d: f16(0), dmin: f16(2), highBits: nil, quants: 16, y)
        case .q5_K: q45K(x, d: f16(0), dmin: f16(2), highBits: 16, quants: 48, y)
        case .q6_K: q6K(x, d: f16(208), y)
        default: preconditionFailure("\(type.description) is not a K-quant")
        }
    }

    /// block_q2_K: scales[16] (low nibble scale, high nibble minimum), qs[64] (2 bits each), d, dmin.
    static func q2K(_ x: UnsafeRawBufferPointer, d: Float, dmin: Float, _ y: UnsafeMutablePointer<Float>) {
        for e in 0..<256 {
            let sc = x[e / 16]
            let scale = d * Float(sc & 0xF), min = dmin * Float(sc >> 4)
            let (half, shift, j) = (e / 128, (e % 128) / 32, e % 32)
            let q = (x[16 + half * 32 + j] >> UInt8(2 * shift)) & 3
            y[e] = scale * Float(q) - min
        }
    }

    /// block_q3_K: hmask[32] (the third bit, set meaning no offset), qs[64] (low 2 bits),
    /// scales[12] (16 six-bit scales, offset by 32), d.
    static func q3K(_ x: UnsafeRawBufferPointer, d: Float, _ y: UnsafeMutablePointer<Float>) {
        for k in 0..<16 {
            let low = (x[96 + k % 8] >> UInt8(4 * (k / 8))) & 0x0F
            let high = (x[104 + k % 4] >> UInt8(2 * (k / 4))) & 0x03
            let scale = d * Float(Int(low | high << 4) - 32)
            for e in (k * 16)..<(k * 16 + 16) {
                let (half, shift, j) = (e / 128, (e % 128) / 32, e % 32)
                let low = Int((x[32 + half * 32 + j] >> UInt8(2 * shift)) & 3)
                let noOffset = (x[j] >> UInt8(e / 32)) & 1
                y[e] = scale * Float(low - (noOffset == 0 ? 4 : 0))
            }
        }
    }

    /// Q4_K and Q5_K: d, dmin, scales[12] (8 six-bit scales and minimums, `get_scale_min_k4`),
    /// Q5_K's qh[32] (the fifth bit), qs[128] (4 bits, low nibbles first within each 64).
    static func q45K(_ x: UnsafeRawBufferPointer, d: Float, dmin: Float, highBits: Int?, quants: Int,
                     _ y: UnsafeMutablePointer<Float>) {
        for k in 0..<8 {
            let sc: UInt8, mn: UInt8
            if k < 4 {
                sc = x[4 + k] & 0x3F
                mn = x[8 + k] & 0x3F
            } else {
                sc = (x[12 + k - 4] & 0x0F) | ((x[4 + k - 4] >> 2) & 0x30)
                mn = (x[12 + k - 4] >> 4) | ((x[8 + k - 4] >> 2) & 0x30)
            }
            let scale = d * Float(sc), min = dmin * Float(mn)
            for j in 0..<32 {
                var q = (x[quants + (k / 2) * 32 + j] >> UInt8(4 * (k % 2))) & 0x0F
                if let h = highBits { q |= ((x[h + j] >> UInt8(k)) & 1) << 4 }
                y[k * 32 + j] = scale * Float(q) - min
            }
        }
    }

    /// block_q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (Int8), d.
    static func q6K(_ x: UnsafeRawBufferPointer, d: Float, _ y: UnsafeMutablePointer<Float>) {
        for e in 0..<256 {
            let scale = d * Float(Int8(bitPattern: x[192 + e / 16]))
            let half = e / 128
            let low = (x[half * 64 + e % 64] >> UInt8(4 * ((e % 128) / 64))) & 0x0F
            let high = (x[128 + half * 32 + e % 32] >> UInt8(2 * ((e % 128) / 32))) & 0x03
            y[e] = scale * Float(Int(low | high << 4) - 32)
        }
    }
}
