import Foundation
import SafeTensors

/// Dequantisation to Float32, block by block, as the `gguf` Python package's reference
/// (`gguf.quants.dequantize`) and ggml's `dequantize_row_*` compute it: the scale and minimum
/// are F16 widened to Float32, each element one Float32 multiply (and one add for the `_1`
/// formats), never fused, so the bits match.
extension GGUFFile {
    /// The types `dequantize` reads.
    public static let dequantizable: Set<GGMLType> = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1]

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
        default:
            throw .unsupportedType(file: url.path, tensor: t.name, type: t.type.description)
        }
    }
}
