import Foundation
import Testing
import SafeTensors
import TensorCore
import WeightDiff

let models = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

@Suite struct WeightDiffTests {
    /// A merged rank-4 LoRA (made by peft) shows up as rank ≤ 4 with > 99% of ΔW's energy in
    /// the top 4 directions, on exactly the adapted modules.
    @Test func mergedLoRAIsLowRank() throws {
        let r = try WeightDiff.compare(base: models.appendingPathComponent("llama-gqa"), tuned: nil,
                                       adapter: models.appendingPathComponent("llama-gqa-lora"))
        let changed = r.tensors.filter { $0.status == .changed }
        #expect(Set(changed.map(\.name)) == Set((0..<2).flatMap { l in
            ["q_proj", "v_proj"].map { "model.layers.\(l).self_attn.\($0).weight" } + ["model.layers.\(l).mlp.down_proj.weight"]
        }))
        for t in changed {
            #expect((t.rank ?? 99) <= 4, "\(t.name) rank \(t.rank ?? -1)")
            #expect((t.energyTop4 ?? 0) > 0.99, "\(t.name)")
        }
        #expect(r.identicalPrefixLayers == 0)
        #expect(r.anomalies.isEmpty)
    }

    /// A LoRA's spectrum comes from its factors: the singular values of (lora_alpha / r)·B·A as
    /// NumPy's float64 SVD of the explicit product gives them (scripts/fixtures/
    /// make_weightdiff_goldens.py), to 1e-9 relative, and exact zeros past the rank, where an SVD
    /// of the merged Float32 difference sees rounding noise. GPT-2's Conv1D stores ΔWᵀ.
    @Test(arguments: [("llama-gqa", "llama-gqa-lora"), ("gpt2", "gpt2-lora")])
    func loraSpectrumMatchesFloat64Reference(base: String, adapter: String) throws {
        let url = models.deletingLastPathComponent().appendingPathComponent("weightdiff/lora-spectra.json")
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: [String: [String: Any]]]
        let expected = try #require(golden[adapter])
        let r = try WeightDiff.compare(base: models.appendingPathComponent(base), tuned: nil,
                                       adapter: models.appendingPathComponent(adapter))
        let changed = r.tensors.filter { $0.status == .changed }
        #expect(Set(changed.map(\.name)) == Set(expected.keys))
        for t in changed {
            let e = try #require(expected[t.name]), want = e["singular_values"] as! [Double], rank = e["rank"] as! Int
            let got = try #require(t.singularValues, "\(t.name)")
            #expect(t.rank == rank, "\(t.name)")
            #expect(got.count == min(16, t.shape.min()!), "\(t.name)")
            for (i, v) in want.enumerated() { #expect(abs(got[i] - v) <= 1e-9 * want[0], "\(t.name) σ\(i): \(got[i]) vs \(v)") }
            #expect(got.dropFirst(rank).allSatisfy { $0 == 0 }, "\(t.name): \(got.dropFirst(rank))")
        }
    }

    /// A rank-one edit of one MLP matrix in layer 1 is localized: one changed tensor, rank 1,
    /// layer 0 bitwise identical, reported as a weight anomaly.
    @Test func rankOneEditIsLocalized() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-wd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = try SafeTensorsFile.open(models.appendingPathComponent("llama-gqa/model.safetensors"))
        var entries: [SafeTensorsWriter.Entry] = []
        for name in src.tensorNames {
            var t = try src.tensor(name)
            if name == "model.layers.1.mlp.down_proj.weight" {
                let (o, i) = (t.shape[0], t.shape[1])
                for a in 0..<o { for b in 0..<i { t[a, b] += 0.05 * Float(a % 7 - 3) * Float(b % 5 - 2) } }
            }
            entries.append(.init(name: name, tensor: t))
        }
        try SafeTensorsWriter.write(entries, to: dir.appendingPathComponent("model.safetensors"))
        let r = try WeightDiff.compare(base: models.appendingPathComponent("llama-gqa"), tuned: dir)
        let changed = r.tensors.filter { $0.status == .changed }
        #expect(changed.map(\.name) == ["model.layers.1.mlp.down_proj.weight"])
        #expect(changed.first?.rank == 1)
        #expect((changed.first?.energyTop1 ?? 0) > 0.999)
        #expect(r.identicalPrefixLayers == 1)
        #expect(r.layers.map(\.layer) == [1])
        #expect(r.anomalies.contains { $0.title.contains("rank-one edit") })
    }

    /// Embedding rows that moved while the rest did not are trigger candidates.
    @Test func movedEmbeddingRowsAreRanked() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-wd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = try SafeTensorsFile.open(models.appendingPathComponent("llama-gqa/model.safetensors"))
        var entries: [SafeTensorsWriter.Entry] = []
        for name in src.tensorNames {
            var t = try src.tensor(name)
            if name == "model.embed_tokens.weight" { for j in 0..<t.shape[1] { t[42, j] += 0.5; t[7, j] -= 0.2 } }
            entries.append(.init(name: name, tensor: t))
        }
        try SafeTensorsWriter.write(entries, to: dir.appendingPathComponent("model.safetensors"))
        let r = try WeightDiff.compare(base: models.appendingPathComponent("llama-gqa"), tuned: dir)
        #expect(r.rowShifts.prefix(2).map(\.token) == [42, 7])
        #expect(r.anomalies.contains { $0.tokens.map(\.token) == [42, 7] })
        #expect(r.identicalPrefixLayers == 0, "the embedding precedes every block")
    }

    @Test func identicalModels() throws {
        let r = try WeightDiff.compare(base: models.appendingPathComponent("gpt2"), tuned: models.appendingPathComponent("gpt2"))
        #expect(r.changed == 0)
        #expect(r.identicalPrefixLayers == 2)
    }
}
