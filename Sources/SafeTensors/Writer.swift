import Foundation
import AssayCommon
import TensorCore

/// Writes safetensors files (fixtures, merged adapters, tests). Tensors are laid out in name
/// order, the header is padded with spaces to a multiple of 8 bytes as the reference writer
/// does, and the file appears atomically.
public enum SafeTensorsWriter {
    public struct Entry: Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public let bytes: [UInt8]

        public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }

        /// A Float32 tensor stored as F32, F16 or BF16.
        public init(name: String, tensor: Tensor, dtype: DType = .f32) {
            precondition(dtype.isComputable, "SafeTensorsWriter encodes F32, F16 or BF16, not \(dtype)")
            self.name = name
            self.dtype = dtype
            shape = tensor.shape
            bytes = tensor.withUnsafeBufferPointer { src in
                switch dtype {
                case .f32:
                    return Array(UnsafeRawBufferPointer(src))
                case .f16:
                    var out = [UInt8](repeating: 0, count: src.count * 2)
                    out.withUnsafeMutableBytes { o in
                        for (i, v) in src.enumerated() {
                            o.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: i * 2, as: UInt16.self)
                        }
                    }
                    return out
                default:
                    var out = [UInt8](repeating: 0, count: src.count * 2)
                    out.withUnsafeMutableBytes { o in
                        for (i, v) in src.enumerated() {
                            o.storeBytes(of: bfloat16Bits(v).littleEndian, toByteOffset: i * 2, as: UInt16.self)
                        }
                    }
                    return out
                }
            }
        }
    }

    /// The header bytes (length prefix excluded) for entries in the given order.
    public static func header(_ entries: [Entry], metadata: [String: String]?) -> [UInt8] {
        var parts: [String] = []
        if let metadata {
            let m = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
            parts.append("\"__metadata__\":{\(m)}")
        }
        var offset = 0
        for e in entries {
            let shape = e.shape.map(String.init).joined(separator: ",")
            parts.append("\(jsonString(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],"
                             + "\"data_offsets\":[\(offset),\(offset + e.bytes.count)]}")
            offset += e.bytes.count
        }
        var bytes = Array("{\(parts.joined(separator: ","))}".utf8)
        while bytes.count % 8 != 0 { bytes.append(0x20) }
        return bytes
    }

    public static func write(_ entries: [Entry], metadata: [String: String]? = nil, to url: URL) throws(FileWriteError) {
        let sorted = entries.sorted { $0.name < $1.name }
        let head = header(sorted, metadata: metadata)
        let w = try AtomicFileWriter(destination: url)
        var len = UInt64(head.count).littleEndian
        let r: Result<Void, FileWriteError> = withUnsafeBytes(of: &len) { b in
            do throws(FileWriteError) { try w.write(b); return .success(()) } catch { return .failure(error) }
        }
        try r.get()
        try w.write(head)
        for e in sorted { try w.write(e.bytes) }
        try w.commit()
    }

    /// JSON string literal with the escapes RFC 8259 requires.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}
