import Crypto

/// SHA-256 of suite files and of the seeds behind random insertion positions, through
/// swift-crypto (the one SHA-256 the project uses; Provenance hashes model files with it too).
/// The tests compare it with the FIPS 180-4 examples and with Python's hashlib at every padding
/// boundary.
public enum SuiteDigest {
    /// The 32-byte digest.
    public static func sha256<Bytes: Collection>(_ message: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        var h = SHA256()
        if message.withContiguousStorageIfAvailable({ h.update(bufferPointer: UnsafeRawBufferPointer($0)) }) == nil {
            Array(message).withUnsafeBytes { h.update(bufferPointer: $0) }
        }
        return Array(h.finalize())
    }

    /// The digest as 64 lower-case hex digits.
    public static func sha256Hex<Bytes: Collection>(_ message: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in sha256(message) {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
