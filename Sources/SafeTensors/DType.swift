/// The dtypes the safetensors format defines. Only F32, F16 and BF16 are decoded for compute;
/// the others are recognised, listed and refused with a clear error.
public enum DType: String, CaseIterable, Sendable, Codable {
    case bool = "BOOL"
    case u8 = "U8", i8 = "I8"
    case f8e5m2 = "F8_E5M2", f8e4m3 = "F8_E4M3", f8e8m0 = "F8_E8M0"
    case f4 = "F4", f6e2m3 = "F6_E2M3", f6e3m2 = "F6_E3M2"
    case i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32"
    case f64 = "F64", i64 = "I64", u64 = "U64"
    case c64 = "C64"

    /// Size of one element in bits (the sub-byte float formats pack).
    public var bits: Int {
        switch self {
        case .f4: return 4
        case .f6e2m3, .f6e3m2: return 6
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0: return 8
        case .i16, .u16, .f16, .bf16: return 16
        case .i32, .u32, .f32: return 32
        case .f64, .i64, .u64, .c64: return 64
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f16, .bf16, .f32, .f64, .f8e5m2, .f8e4m3, .f8e8m0, .f4, .f6e2m3, .f6e3m2: return true
        default: return false
        }
    }

    /// Whether `SafeTensorsFile.tensor(_:)` decodes this dtype to Float32.
    public var isComputable: Bool { self == .f32 || self == .f16 || self == .bf16 }
}
