import Foundation
import Testing
@testable import GGUF

/// A small valid GGUF and one way each to break it: every case is refused with a `GGUFError`
/// naming the file, the field and what is wrong, before anything is sized from it.
@Suite struct MalformedGGUFTests {
    static func u32(_ x: UInt32) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func u64(_ x: UInt64) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func str(_ s: [UInt8]) -> [UInt8] { u64(UInt64(s.count)) + s }
    static func str(_ s: String) -> [UInt8] { str(Array(s.utf8)) }

    /// A GGUF of parts: each metadata entry is a key and its typed value's bytes.
    struct Builder {
        var magic = Array("GGUF".utf8)
        var version: [UInt8] = u32(3)
        var kvs: [(key: [UInt8], value: [UInt8])] = [(Array("general.architecture".utf8), u32(8) + str("llama"))]
        var kvCount: UInt64?
        var tensors: [(name: [UInt8], dims: [UInt64], type: UInt32, offset: UInt64)] = [
            (Array("a".utf8), [4], 0, 0),        // F32, 16 bytes
            (Array("b".utf8), [32], 8, 32),      // Q8_0, one block of 34 bytes
        ]
        var tensorCount: UInt64?
        var data = [UInt8](repeating: 0, count: 66)
        var cut: Int?

        func bytes() -> [UInt8] {
            var b = magic + version + u64(tensorCount ?? UInt64(tensors.count)) + u64(kvCount ?? UInt64(kvs.count))
            for (k, v) in kvs { b += str(k) + v }
            for t in tensors {
                b += str(t.name) + u32(UInt32(t.dims.count))
                for d in t.dims { b += u64(d) }
                b += u32(t.type) + u64(t.offset)
            }
            while b.count % 32 != 0 { b.append(0) }
            b += data
            return cut.map { Array(b.prefix($0)) } ?? b
        }
    }

    static func read(_ bytes: [UInt8]) throws -> GGUFFile {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        return try GGUFFile(url: url)
    }

    @Test func theBaseFileIsValid() throws {
        let f = try Self.read(Builder().bytes())
        #expect(f.tensors.map(\.name) == ["a", "b"])
        #expect(f.tensors.map(\.byteCount) == [16, 34])
        #expect(f.tensors[1].offset == f.dataOffset + 32)
    }

    static func case_(_ name: String, _ says: String, _ edit: (inout Builder) -> Void) -> (String, String, [UInt8]) {
        var b = Builder()
        edit(&b)
        return (name, says, b.bytes())
    }

    static let nested5: [UInt8] = {
        // Array of array of array of array of INT32: four levels, one more than the limit of 3.
        var v = u32(5) + u64(1) + u32(1)
        for _ in 0..<3 { v = u32(9) + u64(1) + v }
        return u32(9) + v
    }()

    static let cases: [(String, String, [UInt8])] = [
        ("empty file", "magic at byte 0 needs 4 bytes", [UInt8]()),
        case_("wrong magic", "not a GGUF file") { $0.magic = Array("GGUG".utf8) },
        case_("version 1", "version 1; Assay reads versions 2 and 3") { $0.version = u32(1) },
        case_("big-endian", "big-endian GGUF") { $0.version = u32(UInt32(3).byteSwapped) },
        case_("cut after the version", "tensor_count at byte 8 needs 8 bytes") { $0.cut = 10 },
        case_("tensor count over the limit", "tensor_count at byte 8: 1099511627776 is over the limit") { $0.tensorCount = 1 << 40 },
        case_("key count over the limit", "metadata_kv_count at byte 16: 1048576 is over the limit") { $0.kvCount = 1 << 20 },
        // Past the one entry come the zeros padding the header: a key of length 0.
        case_("key count beyond the entries", "an empty key") { $0.kvCount = 5; $0.tensors = []; $0.data = [] },
        ("key length over the limit", "length of metadata key at byte 24: 1099511627776 is over the limit",
         Array("GGUF".utf8) + u32(3) + u64(0) + u64(1) + u64(1 << 40)),
        ("key longer than the file", "metadata key at byte 32 needs 100 bytes",
         Array("GGUF".utf8) + u32(3) + u64(0) + u64(1) + u64(100) + Array("abc".utf8)),
        case_("invalid UTF-8 key", "metadata key at byte 32: not valid UTF-8") { $0.kvs[0].key = [0x61, 0xFF] },
        case_("empty key", "an empty key") { $0.kvs[0].key = [] },
        case_("duplicate key", "key 'general.architecture'") { $0.kvs.append($0.kvs[0]) },
        case_("unknown value type", "unknown value type 13") { $0.kvs[0].value = u32(13) + u32(0) },
        case_("bool 2", "BOOL 2 is neither 0 nor 1") { $0.kvs.append((Array("x.b".utf8), u32(7) + [2])) },
        case_("arrays nested too deep", "over the limit of 3") { $0.kvs.append((Array("x.n".utf8), nested5)) },
        case_("array longer than the file", "needs 1000000") { $0.kvs.append((Array("x.a".utf8), u32(9) + u32(0) + u64(1_000_000))) },
        case_("array count over the limit", "over the limit of 8388608") {
            $0.kvs.append((Array("x.a".utf8), u32(9) + u32(0) + u64(1 << 30)))
        },
        case_("string value not UTF-8", "x.s at byte") { $0.kvs.append((Array("x.s".utf8), u32(8) + str([0xC3, 0x28]))) },
        case_("alignment not a power of two", "general.alignment") { $0.kvs.append((Array("general.alignment".utf8), u32(4) + u32(3))) },
        case_("alignment not UINT32", "not a UINT32 power of two") { $0.kvs.append((Array("general.alignment".utf8), u32(10) + u64(32))) },
        case_("empty tensor name", "is empty or 64 bytes or longer") { $0.tensors[0].name = [] },
        case_("tensor name of 64 bytes", "is empty or 64 bytes or longer") { $0.tensors[0].name = Array(repeating: 0x61, count: 64) },
        case_("no dims", "0 dimensions; 1 to 4 are allowed") { $0.tensors[0].dims = [] },
        case_("five dims", "5 dimensions; 1 to 4 are allowed") { $0.tensors[0].dims = [4, 1, 1, 1, 1] },
        case_("a zero dim", "dim 0 of 'a'") { $0.tensors[0].dims = [0] },
        case_("dims overflow", "makes no valid tensor shape") { $0.tensors[0].dims = [0x7FFF_FFFF, 0x7FFF_FFFF, 0x7FFF_FFFF] },
        case_("unknown ggml type", "unknown ggml type 4") { $0.tensors[0].type = 4 },
        case_("row not whole blocks", "16 is not a multiple of Q8_0's block of 32") { $0.tensors[1].dims = [16] },
        case_("misaligned offset", "4 is not a multiple of the alignment 32") { $0.tensors[1].offset = 4 },
        case_("offset past the end", "tensor 'b' data") { $0.tensors[1].offset = 1 << 20 },
        case_("duplicate tensor", "tensor 'a'") { $0.tensors[1].name = Array("a".utf8) },
        case_("overlapping tensors", "overlap those of 'b'") { $0.tensors[0].offset = 32; $0.tensors[1].offset = 0 },
        case_("data cut inside a tensor", "tensor 'b' data") { $0.data = Array(repeating: 0, count: 50) },
        case_("cut inside the tensor entries", "needs") { b in b.cut = b.bytes().count - 66 - 20 },
    ]

    @Test(arguments: cases.indices)
    func refused(_ i: Int) throws {
        let (name, says, bytes) = Self.cases[i]
        do {
            let f = try Self.read(bytes)
            Issue.record("\(name): read, \(f.tensors.count) tensors")
        } catch let e as GGUFError {
            #expect(e.description.contains(says), "\(name): \(e.description)")
            #expect(e.description.contains("assay-gguf-"), "\(name): names the file")
        }
    }

    @Test func theCorpusIsLarge() { #expect(Self.cases.count >= 25) }

    /// Many arrays each within the per-array bound still meet the bound on all of them together.
    @Test func metadataArraysAreBoundedTogether() throws {
        var b = Builder()
        for i in 0..<3 {
            b.kvs.append((Array("x.a\(i)".utf8), Self.u32(9) + Self.u32(0) + Self.u64(1000) + [UInt8](repeating: 7, count: 1000)))
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-\(UUID().uuidString).gguf")
        try Data(b.bytes()).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        var limits = GGUFLimits()
        limits.maxMetadataElements = 2500
        #expect(throws: GGUFError.self) { _ = try GGUFFile(url: url, limits: limits) }
        do { _ = try GGUFFile(url: url, limits: limits) } catch {
            #expect(error.description.contains("array elements of the metadata, at x.a2 at byte") && error.description.contains("3000"))
        }
        limits.maxMetadataElements = 3000
        #expect(try GGUFFile(url: url, limits: limits).metadata["x.a2"] != nil)
    }
}
