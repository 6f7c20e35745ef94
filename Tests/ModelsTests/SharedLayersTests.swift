import Foundation
import Testing
import Models
import SafeTensors
import TensorCore

/// Leading blocks identical in two models run once for both (`pairedForward`), and nothing
/// downstream can tell: logits and the caches later decode steps read are bit-identical.
@Suite(.serialized) struct SharedLayersTests {
    /// A copy of `name` whose last block's tensors are scaled by 1.01: its other blocks and the
    /// embeddings stay bitwise identical.
    static func editedCopy(_ name: String) throws -> (URL, Int) {
        let src = modelFixtures.appendingPathComponent(name)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-shared-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: src.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
        let ckpt = try Checkpoint.open(src)
        func layer(_ n: String) -> Int? {
            let parts = n.split(separator: ".")
            for (i, p) in parts.enumerated() where (p == "layers" || p == "h") && i + 1 < parts.count { if let l = Int(parts[i + 1]) { return l } }
            return nil
        }
        let last = ckpt.tensorNames.compactMap(layer).max()!
        var entries: [SafeTensorsWriter.Entry] = []
        for n in ckpt.tensorNames {
            var t = try ckpt.tensor(n)
            if layer(n) == last && n.hasSuffix("weight") && t.shape.count == 2 { t = Tensor(shape: t.shape, data: t.array.map { $0 * 1.01 }) }
            entries.append(.init(name: n, tensor: t))
        }
        try SafeTensorsWriter.write(entries, to: dir.appendingPathComponent("model.safetensors"))
        return (dir, last)
    }

    @Test(arguments: ["llama-gqa", "qwen2", "gpt2", "gpt-neox"])
    func pairedForwardIsBitIdentical(_ name: String) throws {
        let (dir, last) = try Self.editedCopy(name)
        let base = try load(name)
        let tuned = try ModelLoader.load(dir)
        let shared = base.identicalLeadingLayers(with: tuned)
        #expect(shared == last, "blocks before the edited one are shared")
        #expect(base.identicalLeadingLayers(with: try load(name)) == base.layerCount, "a model shares every block with a copy of itself")
        #expect(base.identicalLeadingLayers(with: try load(name == "gpt2" ? "gpt-neox" : "gpt2")) == 0, "other architectures share nothing")

        let prompts = [[1, 5, 9, 2, 7], [3, 3, 8], [4, 11, 6, 2, 2, 9, 1]]
        func run(_ shared: Int) throws -> ([Tensor], [Tensor], [Tensor]) {
            let cb = prompts.map { _ in base.makeCache() }, ct = prompts.map { _ in tuned.makeCache() }
            let (b, t) = try pairedForward(base, prompts.enumerated().map { SequenceInput(tokens: $1, cache: cb[$0], logitPositions: Array(0..<$1.count)) },
                                           tuned, prompts.enumerated().map { SequenceInput(tokens: $1, cache: ct[$0], logitPositions: Array(0..<$1.count)) },
                                           shared: shared)
            // Two decode steps of the tuned model read every block's cached keys, shared ones included.
            var steps: [Tensor] = []
            for tok in [10, 12] {
                steps += try tuned.forward(ct.map { SequenceInput(tokens: [tok], cache: $0, logitPositions: [0]) })
            }
            return (b, t, steps)
        }
        let separate = try run(0), paired = try run(shared)
        #expect(separate.0 == paired.0)
        #expect(separate.1 == paired.1)
        #expect(separate.2 == paired.2)
        #expect(separate.1 != separate.0, "the edit changes the tuned model's logits")
    }
}
