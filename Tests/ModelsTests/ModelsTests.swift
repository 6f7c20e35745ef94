import Foundation
import Testing
import Models
import SafeTensors
import TensorCore

let modelFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/models")

struct ModelGolden: Decodable {
    let sequences: [[Int]]
    let logits: [[[Float]]]
    let greedy: [[Int]]
}

let goldens: [String: ModelGolden] = try! JSONDecoder().decode([String: ModelGolden].self,
    from: Data(contentsOf: modelFixtures.appendingPathComponent("goldens.json")))

func maxAbsDiff(_ t: Tensor, _ rows: [[Float]]) -> Float {
    var worst: Float = 0
    let a = t.array
    let v = rows.first?.count ?? 0
    #expect(t.shape == [rows.count, v])
    for (i, r) in rows.enumerated() { for (j, x) in r.enumerated() { worst = max(worst, abs(a[i * v + j] - x)) } }
    return worst
}

func load(_ name: String) throws -> any CausalLanguageModel {
    if name.hasSuffix("-lora") {
        return try ModelLoader.load(modelFixtures.appendingPathComponent(String(name.dropLast(5))),
                                    adapter: modelFixtures.appendingPathComponent(name))
    }
    return try ModelLoader.load(modelFixtures.appendingPathComponent(name))
}

@Suite struct ParityWithTransformers {
    static let names = ["llama-gqa", "llama-tied-bias", "llama-rope-llama3", "mistral", "qwen2", "gpt2", "gpt-neox",
                        "gpt-neox-sequential", "llama-gqa-lora", "gpt2-lora"]

    /// Every position's logits match transformers (F32 eager) within 1e-4, for a packed batch
    /// of mixed lengths.
    @Test(arguments: names)
    func logitsMatchInAMixedBatch(_ name: String) throws {
        let g = try #require(goldens[name])
        let model = try load(name)
        let out = try model.forward(g.sequences.map { SequenceInput(tokens: $0, logitPositions: Array($0.indices)) })
        for (i, rows) in g.logits.enumerated() {
            let d = maxAbsDiff(out[i], rows)
            #expect(d < 1e-4, "\(name) sequence \(i): max |Δ| = \(d)")
        }
    }

    @Test(arguments: names)
    func greedyGenerationsIdentical(_ name: String) throws {
        let g = try #require(goldens[name])
        let model = try load(name)
        #expect(try model.greedy(prompts: g.sequences, maxNewTokens: 8, stopTokens: []) == g.greedy)
    }

    /// A sequence's results do not depend on what else is in its batch, or on being computed
    /// incrementally through the KV cache from a shared, forked prefix.
    @Test func batchAndCacheInvariance() throws {
        let g = goldens["llama-gqa"]!
        let model = try load("llama-gqa")
        let seq = g.sequences[2]
        let alone = try model.forward([SequenceInput(tokens: seq, logitPositions: Array(seq.indices))])[0]
        let mixed = try model.forward(g.sequences.reversed().map { SequenceInput(tokens: $0, logitPositions: Array($0.indices)) })[0]
        #expect(maxAbsDiff(mixed, alone.rows) < 1e-5)
        // Prefix of 5 tokens computed once, forked, then the rest token by token.
        let prefix = try model.prefill(Array(seq[..<5]))
        let child = prefix.fork()
        var rows: [[Float]] = []
        for t in seq[5...] {
            rows += try model.forward([SequenceInput(tokens: [t], cache: child, logitPositions: [0])])[0].rows
        }
        #expect(maxAbsDiff(Tensor(shape: [rows.count, rows[0].count], data: rows.flatMap { $0 }), Array(alone.rows[5...])) < 1e-5)
        let sibling = prefix.fork()
        let rest = try model.forward([SequenceInput(tokens: Array(seq[5...]), cache: sibling, logitPositions: Array(0..<(seq.count - 5)))])[0]
        #expect(maxAbsDiff(rest, Array(alone.rows[5...])) < 1e-5)
    }
}

extension Tensor {
    var rows: [[Float]] {
        let a = array, v = shape[1]
        return (0..<shape[0]).map { Array(a[($0 * v)..<(($0 + 1) * v)]) }
    }
}

@Suite struct BadModels {
    /// Copies a fixture model into a temp dir, lets the test edit it, and expects an error.
    func broken(_ base: String = "llama-gqa", config edit: (inout [String: Any]) -> Void = { _ in },
                weights: (([String: Tensor]) -> [String: Tensor])? = nil) throws -> (URL, () -> Void) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-model-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: modelFixtures.appendingPathComponent("\(base)/config.json"))) as! [String: Any]
        edit(&cfg)
        try JSONSerialization.data(withJSONObject: cfg).write(to: dir.appendingPathComponent("config.json"))
        let src = modelFixtures.appendingPathComponent("\(base)/model.safetensors")
        if let weights {
            let f = try SafeTensorsFile.open(src)
            var ts: [String: Tensor] = [:]
            for n in f.tensorNames { ts[n] = try f.tensor(n) }
            try SafeTensorsWriter.write(weights(ts).map { .init(name: $0.key, tensor: $0.value) }, to: dir.appendingPathComponent("model.safetensors"))
        } else {
            try FileManager.default.copyItem(at: src, to: dir.appendingPathComponent("model.safetensors"))
        }
        return (dir, { try? FileManager.default.removeItem(at: dir) })
    }

    func expectError(_ fragment: String, config edit: (inout [String: Any]) -> Void = { _ in },
                     weights: (([String: Tensor]) -> [String: Tensor])? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (dir, cleanup) = try broken(config: edit, weights: weights)
        defer { cleanup() }
        do {
            _ = try ModelLoader.load(dir)
            Issue.record("loaded a broken model; expected '\(fragment)'", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(fragment), "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func configAndWeightMismatches() throws {
        try expectError("model.embed_tokens.weight' has shape [97, 32], expected [97, 48]") { $0["hidden_size"] = 48; $0["head_dim"] = 12 }
        try expectError("missing tensor 'model.layers.2.self_attn.q_proj.weight'") { $0["num_hidden_layers"] = 3 }
        try expectError("tensor(s) the architecture does not use") { $0["num_hidden_layers"] = 1 }
        try expectError("expected [100, 32]") { $0["vocab_size"] = 100 }
        try expectError("does not divide hidden_size") { $0["num_attention_heads"] = 5; $0["num_key_value_heads"] = 5; $0.removeValue(forKey: "head_dim") }
        try expectError("does not divide num_attention_heads") { $0["num_key_value_heads"] = 3 }
    }

    @Test func absurdValuesAreRefusedBeforeAllocating() throws {
        try expectError("'hidden_size': -4 is outside") { $0["hidden_size"] = -4 }
        try expectError("'vocab_size': 4611686018427387904 is outside") { $0["vocab_size"] = 1 << 62 }
        try expectError("'num_hidden_layers': must be an integer") { $0["num_hidden_layers"] = 2.5 }
        try expectError("'rms_norm_eps': must be a finite number") { $0["rms_norm_eps"] = "tiny" }
        try expectError("model_type 'bert' is not supported") { $0["model_type"] = "bert" }
        try expectError(#"'rope_parameters.rope_type' = "yarn""#) { $0["rope_parameters"] = ["rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0] }
        try expectError(#"'hidden_act' = "gelu""#) { $0["hidden_act"] = "gelu" }
    }

    @Test func nonFiniteWeights() throws {
        try expectError("holds 1 NaN and 0 Inf values", weights: { ts in
            var ts = ts
            var t = ts["model.layers.0.mlp.up_proj.weight"]!
            t[3, 4] = .nan
            ts["model.layers.0.mlp.up_proj.weight"] = t
            return ts
        })
    }

    @Test func adapterWhoseShapesDoNotMatchTheBase() throws {
        let other = modelFixtures.appendingPathComponent("gpt2")
        #expect {
            _ = try ModelLoader.load(other, adapter: modelFixtures.appendingPathComponent("llama-gqa-lora"))
        } throws: { "\($0)".contains("which the base model does not have") }
        let (dir, cleanup) = try broken(config: { $0["intermediate_size"] = 48 }, weights: { ts in
            var ts = ts
            ts["model.layers.0.mlp.down_proj.weight"] = Tensor(zeros: [32, 48])
            ts["model.layers.1.mlp.down_proj.weight"] = Tensor(zeros: [32, 48])
            ts["model.layers.0.mlp.up_proj.weight"] = Tensor(zeros: [48, 32])
            ts["model.layers.1.mlp.up_proj.weight"] = Tensor(zeros: [48, 32])
            ts["model.layers.0.mlp.gate_proj.weight"] = Tensor(zeros: [48, 32])
            ts["model.layers.1.mlp.gate_proj.weight"] = Tensor(zeros: [48, 32])
            return ts
        })
        defer { cleanup() }
        #expect {
            _ = try ModelLoader.load(dir, adapter: modelFixtures.appendingPathComponent("llama-gqa-lora"))
        } throws: { "\($0)".contains("is [32, 48] in the base but the adapter's B·A is [32, 64]") }
    }
}

/// A sequence's log-probabilities are bitwise
/// the same alone, in a mixed batch, decoded token by token from a forked prefix, and
/// teacher-forced in one pass — for every architecture. The scan relies on it: a model against
/// itself diverges by exactly zero, and reports do not depend on the batch size.
@Suite(.serialized) struct BitwiseBatchInvariance {
    @Test(arguments: ["llama-gqa", "mistral", "qwen2", "gpt2", "gpt-neox", "llama-gqa-lora"])
    func sameBitsEverywhere(_ name: String) throws {
        let g = try #require(goldens[name])
        let model = try load(name)
        let seq = g.sequences.max { $0.count < $1.count }!
        let alone = try model.forward([SequenceInput(tokens: seq, logitPositions: Array(seq.indices))])[0].array
        let mixed = try model.forward((g.sequences + [seq]).map { SequenceInput(tokens: $0, logitPositions: Array($0.indices)) }).last!.array
        let sameInBatch = mixed == alone
        #expect(sameInBatch, "\(name): a mixed batch changed the bits")
        let cut = min(3, seq.count - 1)
        let prefix = try model.prefill(Array(seq[..<cut]))
        let decode = prefix.fork()
        var stepped: [Float] = []
        for t in seq[cut...] {
            stepped += try model.forward([SequenceInput(tokens: [t], cache: decode, logitPositions: [0])])[0].array
        }
        let v = alone.count / seq.count
        let sameStepped = stepped == Array(alone[(cut * v)...])
        #expect(sameStepped, "\(name): token-by-token decoding changed the bits")
        let forced = try model.forward([SequenceInput(tokens: Array(seq[cut...]), cache: prefix.fork(),
                                                      logitPositions: Array(0..<(seq.count - cut)))])[0].array
        let sameForced = forced == stepped
        #expect(sameForced, "\(name): teacher forcing and decoding differ")
        // A prompt that shares only its first tokens with a cached one: fork the cache at the
        // common prefix (`fork(keeping:)`) and run the rest; same bits as running it alone.
        let other = g.sequences.first { $0 != seq }!
        let shared = min(4, seq.count - 1)
        let seq2 = Array(seq[..<shared]) + other
        let full = try model.prefill(seq)
        let viaFork = try model.forward([SequenceInput(tokens: Array(seq2[shared...]), cache: full.fork(keeping: shared),
                                                       logitPositions: Array(0..<(seq2.count - shared)))])[0].array
        let direct = try model.forward([SequenceInput(tokens: seq2, logitPositions: Array(seq2.indices))])[0].array
        let sameViaFork = viaFork == Array(direct[(shared * v)...])
        #expect(sameViaFork, "\(name): a cache forked at a shared prefix changed the bits")
    }
}
