import Foundation
import Testing
@testable import GGUF

let ggufFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/gguf")

/// The reader against the `gguf` Python package (scripts/fixtures/make_gguf_fixtures.py →
/// Tests/Fixtures/gguf): every metadata value type, every tensor's offset and size as gguf's
/// reader sees them, and dequantisation bit for bit as `gguf.quants.dequantize` computes it.
@Suite struct GGUFReaderTests {
    struct Index: Decodable {
        struct Tensor: Decodable { var name: String; var type: String; var shape: [Int]; var offset: Int; var count: Int }
        struct Read: Decodable {
            var name: String; var type: String; var shape: [Int]
            var data_offset: Int; var n_bytes: Int
        }
        var tensors: [Tensor]
        var reader: [Read]
    }

    static func load() throws -> (GGUFFile, Index, [Float]) {
        let file = try GGUFFile(url: ggufFixtures.appendingPathComponent("quants.gguf"))
        let index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: ggufFixtures.appendingPathComponent("quants.json")))
        let raw = try Data(contentsOf: ggufFixtures.appendingPathComponent("quants.dequant.f32"))
        let floats = raw.withUnsafeBytes { p in
            (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
        return (file, index, floats)
    }

    @Test func readsEveryValueType() throws {
        let (f, _, _) = try Self.load()
        #expect(f.version == 3)
        #expect(f.alignment == 32)
        let m = f.metadata
        #expect(m["general.architecture"] == .string("llama"))
        #expect(m["test.u8"] == .uint8(200) && m["test.i8"] == .int8(-100))
        #expect(m["test.u16"] == .uint16(60000) && m["test.i16"] == .int16(-30000))
        #expect(m["test.u32"] == .uint32(7) && m["test.i32"] == .int32(-7))
        #expect(m["test.u64"] == .uint64(1 << 40) && m["test.i64"] == .int64(-(1 << 40)))
        #expect(m["test.f32"] == .float32(0.25) && m["test.f64"] == .float64(1.5) && m["test.bool"] == .bool(true))
        #expect(m["test.string"] == .string("héllo ✓"))
        #expect(m["test.strings"] == .array(type: 8, [.string("a"), .string("bb"), .string("ccc")]))
        #expect(m["test.ints"] == .array(type: 5, [.int32(1), .int32(2), .int32(3)]))
        #expect(m["test.nested"] == .array(type: 9, [.array(type: 5, [.int32(1), .int32(2)]), .array(type: 5, [.int32(3)])]))
        #expect(m["tokenizer.chat_template"]?.string == "{% for m in messages %}{{ m['content'] }}{% endfor %}")
        #expect(f.keys.first == "general.architecture", "keys in file order")
    }

    @Test func tensorsLieWhereGGUFReadsThem() throws {
        let (f, index, _) = try Self.load()
        #expect(f.tensors.map(\.name) == index.reader.map(\.name))
        for (t, r) in zip(f.tensors, index.reader) {
            #expect(t.type.description == r.type, "\(t.name)")
            #expect(t.dims == r.shape, "\(t.name): ggml order")
            #expect(t.shape == Array(r.shape.reversed()) && t.shape.first == 4)
            #expect(t.offset == r.data_offset && t.byteCount == r.n_bytes, "\(t.name)")
        }
    }

    @Test func dequantisesBitForBitAsGGUF() throws {
        let (f, index, reference) = try Self.load()
        #expect(Set(index.tensors.map(\.type)) == Set(GGUFFile.dequantizable.map(\.description)), "every type Assay reads is covered")
        for t in index.tensors {
            let ours = try f.floats(try #require(f.tensor(t.name)))
            let theirs = reference[t.offset..<(t.offset + t.count)]
            #expect(ours.map(\.bitPattern) == theirs.map(\.bitPattern), "\(t.name) (\(t.type))")
        }
    }
}
