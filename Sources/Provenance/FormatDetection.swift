import Foundation
import AssayCommon
import SafeTensors

/// A file's format, decided from its bytes — never from its name.
public enum FileFormat: String, Codable, Sendable, CaseIterable {
    case safetensors
    case pickle
    case pytorchZip = "pytorch-zip"
    case zip
    case gguf
    case numpy
    case onnx
    case hdf5
    case json
    case text
    case tar
    case gzip
    case empty
    case unknown

    /// Formats whose loading can run code (pickles, and archives that hold them).
    public var canRunCode: Bool { self == .pickle || self == .pytorchZip || self == .zip || self == .tar }
}

public enum FormatDetector {
    /// What an extension promises, for the extension/content mismatch check. Extensions not
    /// listed promise nothing.
    public static let expectedFormats: [String: Set<FileFormat>] = [
        "safetensors": [.safetensors],
        "bin": [.pickle, .pytorchZip], "pt": [.pickle, .pytorchZip], "pth": [.pickle, .pytorchZip],
        "ckpt": [.pickle, .pytorchZip], "pkl": [.pickle], "pickle": [.pickle], "p": [.pickle], "joblib": [.pickle],
        "npy": [.numpy], "npz": [.zip], "gguf": [.gguf], "onnx": [.onnx], "h5": [.hdf5], "hdf5": [.hdf5],
        "json": [.json], "txt": [.text, .empty], "md": [.text, .empty], "jinja": [.text, .empty], "py": [.text, .empty],
        "zip": [.zip, .pytorchZip], "tar": [.tar], "gz": [.gzip], "tgz": [.gzip],
    ]

    /// Extensions whose promise is "data only": pickles or archives behind them are disguised.
    static let dataOnlyExtensions: Set<String> = ["safetensors", "npy", "gguf", "onnx", "h5", "hdf5", "json", "txt", "md", "jinja",
                                                  "msgpack"]

    /// Extensions that a PyTorch or pickle loader is pointed at.
    public static let pickleExtensions: Set<String> = ["bin", "pt", "pth", "ckpt", "pkl", "pickle", "p", "joblib", "dat", "data", "model"]

    /// Detects the format of `bytes`. `url` lets a safetensors candidate be validated by the
    /// strict reader; pass nil for archive members.
    public static func detect(_ b: UnsafeRawBufferPointer, url: URL?, fileExtension: String) -> (FileFormat, String?) {
        let n = b.count
        if n == 0 { return (.empty, nil) }
        func starts(_ sig: [UInt8], at o: Int = 0) -> Bool {
            guard o + sig.count <= n else { return false }
            for (i, x) in sig.enumerated() where b[o + i] != x { return false }
            return true
        }
        if starts([0x50, 0x4B, 0x03, 0x04]) || starts([0x50, 0x4B, 0x05, 0x06]) { return (.zip, nil) }
        if starts(Array("GGUF".utf8)) { return (.gguf, n >= 8 ? "version \(UInt32(b[4]) | UInt32(b[5]) << 8)" : nil) }
        if starts([0x93] + Array("NUMPY".utf8)) { return (.numpy, n >= 8 ? "format \(b[6]).\(b[7])" : nil) }
        if starts([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return (.hdf5, nil) }
        if starts([0x1F, 0x8B]) { return (.gzip, nil) }
        if starts(Array("ustar".utf8), at: 257) { return (.tar, nil) }
        if n >= 9, b[8] == UInt8(ascii: "{") {
            var len: UInt64 = 0
            for i in (0..<8).reversed() { len = len << 8 | UInt64(b[i]) }
            if len <= UInt64(n - 8) {
                if let url {
                    do { _ = try SafeTensorsFile(url: url); return (.safetensors, nil) } catch {
                        return (.safetensors, "invalid: \(error.description)")
                    }
                }
                return (.safetensors, nil)
            }
        }
        if b[0] == 0x80, n >= 2, b[1] <= 5 { return (.pickle, "protocol \(b[1])") }
        if let j = jsonCandidate(b) { return j.0 == .text && fileExtension != "json" ? (.text, nil) : j }
        if looksLikeONNX(b) { return (.onnx, "best effort: protobuf ModelProto field layout") }
        // Protocol 0/1 pickles have no PROTO opcode: a bounded parse that reaches STOP decides.
        let trial = PickleScanner.scan(UnsafeRawBufferPointer(rebasing: b[0..<min(n, 64 << 20)]))
        if trial.complete, trial.opcodeCount >= 2 { return (.pickle, "protocol 0/1") }
        let text = isText(b)
        if !trial.imports.isEmpty, pickleExtensions.contains(fileExtension) || !text {
            return (.pickle, "protocol 0/1, malformed")
        }
        if text { return (.text, nil) }
        return (.unknown, nil)
    }

    static func jsonCandidate(_ b: UnsafeRawBufferPointer) -> (FileFormat, String?)? {
        var i = 0
        if b.count >= 3, b[0] == 0xEF, b[1] == 0xBB, b[2] == 0xBF { i = 3 }
        while i < b.count, [0x20, 0x09, 0x0A, 0x0D].contains(b[i]) { i += 1 }
        guard i < b.count, b[i] == UInt8(ascii: "{") || b[i] == UInt8(ascii: "[") else { return nil }
        guard b.count <= 256 << 20 else { return (.json, "not parsed: over 256 MiB") }
        do {
            _ = try JSONParser.parse(UnsafeBufferPointer(start: b.baseAddress!.assumingMemoryBound(to: UInt8.self) + i, count: b.count - i))
            return (.json, nil)
        } catch {
            return isText(b) ? (.text, "starts like JSON but does not parse: \(error.description)") : nil
        }
    }

    /// Valid UTF-8 in the first MiB with no NUL and few control characters.
    static func isText(_ b: UnsafeRawBufferPointer) -> Bool {
        var end = min(b.count, 1 << 20)
        // Do not cut a multi-byte character at the window's edge.
        if end < b.count { while end > 0, b[end] & 0xC0 == 0x80 { end -= 1 }; if end > 0 { end -= 1 } }
        let w = UnsafeRawBufferPointer(rebasing: b[0..<end])
        var control = 0
        for x in w {
            if x == 0 { return false }
            if x < 0x20, x != 0x09, x != 0x0A, x != 0x0D, x != 0x0C { control += 1 }
        }
        guard control * 100 <= max(w.count, 1) else { return false }
        return String(validating: w, as: UTF8.self) != nil
    }

    /// ONNX ModelProto: field 1 (ir_version, varint) first, then a known ModelProto field.
    static func looksLikeONNX(_ b: UnsafeRawBufferPointer) -> Bool {
        guard b.count >= 4, b[0] == 0x08 else { return false }
        var i = 1, v: UInt64 = 0, shift: UInt64 = 0
        while i < b.count, i < 11 {
            v |= UInt64(b[i] & 0x7F) << shift
            shift += 7
            i += 1
            if b[i - 1] & 0x80 == 0 { break }
        }
        guard v >= 1, v <= 64, i < b.count else { return false }
        return [0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA].contains(b[i])
    }
}
