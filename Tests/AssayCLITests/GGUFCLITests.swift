import Foundation
import Testing

/// `assay inspect` on GGUF files: the fixture of every dequantised type, and that file cut or
/// altered at each header field, every breach exit 2 naming the file and the field.
@Suite struct GGUFCLITests {
    static let quants = repoFixtures.appendingPathComponent("gguf/quants.gguf")

    @Test func inspectsAGGUF() throws {
        let r = try assay(["inspect", Self.quants.path, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(j["kind"] as? String == "gguf")
        #expect(j["parameter_count"] as? Int == 8 * 256 + 5 * 1024)
        let tensors = try #require(j["tensors"] as? [[String: Any]])
        #expect(tensors.compactMap { $0["dtype"] as? String } == ["BF16", "F16", "F32", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"])
        let meta = (j["metadata"] as? [String: [String: String]])?["quants.gguf"]
        #expect(meta?["test.strings"] == "[3 STRING]" && meta?["test.u64"] == "1099511627776" && meta?["gguf.version"] == "3")
    }

    @Test(arguments: [
        (3, "magic at byte 0 needs 4 bytes but 3 remain"), (12, "tensor_count at byte 8 needs 8 bytes but 4 remain"),
        (30, "length of metadata key at byte 24 needs 8 bytes"), (200, "length of metadata key at byte 197"),
        (1000, "dim 1 of 't.q5_1' at byte 996"), (3000, "tensor 't.bf16' data at byte 740 needs 2048 bytes but 1752 remain"),
    ])
    func aCutFileIsExit2(_ c: (Int, String)) throws {
        let bytes = try Data(contentsOf: Self.quants).prefix(c.0)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cut-\(c.0)-\(UUID().uuidString).gguf")
        try bytes.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let r = try assay(["inspect", url.path])
        #expect(r.status == 2, "cut at \(c.0): \(r.stdout)")
        #expect(r.stderr.contains(url.lastPathComponent) && r.stderr.contains(c.1), "cut at \(c.0): \(r.stderr)")
    }

    @Test func aBigEndianGGUFIsRefusedByName() throws {
        var bytes = [UInt8](try Data(contentsOf: Self.quants))
        bytes[4...7] = [0, 0, 0, 3]
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("be-\(UUID().uuidString).gguf")
        try Data(bytes).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let r = try assay(["inspect", url.path])
        #expect(r.status == 2 && r.stderr.contains("a big-endian GGUF, which Assay does not read"), "\(r.stderr)")
    }
}
