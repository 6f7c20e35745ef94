import Foundation
import Testing
import GGUF
@testable import Tokenizers

let smolGGUFFile = tokFixtures.appendingPathComponent("../../.models/SmolLM2-135M-Instruct.Q4_1.gguf")

/// The tokenizer and chat template the real SmolLM2 GGUF carries in its `tokenizer.*` metadata,
/// against what Hugging Face tokenizers/transformers read from the same file (the goldens of
/// Tests/Fixtures/tokenizers/smollm2 and smollm2.jsonl / smollm2-chat.json).
@Suite(.enabled(if: FileManager.default.fileExists(atPath: smolGGUFFile.path), "scripts/fetch-models.sh has not run"))
struct SmolLM2GGUFTokenizerTests {
    @Test func idsDecodesAndChatMatchHuggingFace() throws {
        let tok = try Tokenizer.load(model: smolGGUFFile)
        var bad = 0
        let cases = try goldens("smollm2")
        #expect(cases.count >= 2000)
        for g in cases {
            let a = tok.encode(g.t), n = tok.encode(g.t, addSpecialTokens: false)
            if a != g.a || n != g.n || tok.decode(g.a) != g.d || tok.decode(g.a, skipSpecialTokens: true) != g.s {
                bad += 1
                if bad <= 3 { Issue.record("\(g.t.debugDescription): \(a) want \(g.a)") }
            }
        }
        #expect(bad == 0, "\(bad) of \(cases.count) strings differ")
        let lines = try String(contentsOf: tokFixtures.appendingPathComponent("tokenizers/smollm2.jsonl"), encoding: .utf8).split(separator: "\n")
        for l in lines {
            let g = try JSONDecoder().decode(FallbackGolden.self, from: Data(l.utf8))
            #expect(tok.encode(g.text) == g.ids, "\(g.text.debugDescription)")
        }
        let chats = try JSONDecoder().decode([FallbackChatGolden].self,
                                             from: Data(contentsOf: tokFixtures.appendingPathComponent("tokenizers/smollm2-chat.json")))
        for c in chats {
            let out = try tok.applyChatTemplate(c.messages.map { ChatMessage(role: $0.role, content: $0.content) }, addGenerationPrompt: c.gen)
            #expect(out == c.text)
        }
        #expect(tok.bosTokenID == 1 && tok.eosTokenIDs == [2] && tok.padTokenID == 2)
        #expect(tok.specialTokenIDs == Set(0..<17))
    }

    /// Read by content, the GGUF's tokenizer and the tokenizer.json transformers wrote from it are
    /// one tokenizer; a changed merge, token or template is not.
    @Test func contentIdentityWithTheConvertedDirectory() throws {
        let gguf = try Tokenizer.load(model: smolGGUFFile)
        let dir = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("smollm2"))
        #expect(gguf.contentDifference(from: dir) == nil)
        let other = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("gpt2-trained"))
        #expect(gguf.contentDifference(from: other) == "the vocabularies differ")
    }
}

/// GGUF tokenizer metadata an attacker controls: each refusal names the key.
@Suite struct HostileGGUFTokenizerTests {
    static func u32(_ x: UInt32) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func u64(_ x: UInt64) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func str(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }
    enum V { case s(String), b(Bool), u(UInt32), strings([String]), ints([Int32]) }

    /// A GGUF with these metadata entries and no tensors.
    static func file(_ kv: [(String, V)]) throws -> URL {
        var out: [UInt8] = Array("GGUF".utf8) + u32(3) + u64(0) + u64(UInt64(kv.count))
        for (k, v) in kv {
            out += str(k)
            switch v {
            case let .s(x): out += u32(8) + str(x)
            case let .b(x): out += u32(7) + [x ? 1 : 0]
            case let .u(x): out += u32(4) + u32(x)
            case let .strings(xs): out += u32(9) + u32(8) + u64(UInt64(xs.count)) + xs.flatMap(str)
            case let .ints(xs): out += u32(9) + u32(5) + u64(UInt64(xs.count)) + xs.flatMap { u32(UInt32(bitPattern: $0)) }
            }
        }
        out += [UInt8](repeating: 0, count: (32 - out.count % 32) % 32)  // the (empty) data section is aligned
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-tok-\(UUID().uuidString).gguf")
        try Data(out).write(to: url)
        return url
    }

    static let valid: [(String, V)] = [
        ("general.architecture", .s("llama")), ("tokenizer.ggml.model", .s("gpt2")), ("tokenizer.ggml.pre", .s("smollm")),
        ("tokenizer.ggml.tokens", .strings(["<|endoftext|>", "a", "b", "ab", "Ġ", "1", "2", "12"])),
        ("tokenizer.ggml.token_type", .ints([3, 1, 1, 1, 1, 1, 1, 1])),
        ("tokenizer.ggml.merges", .strings(["a b", "1 2"])), ("tokenizer.ggml.eos_token_id", .u(0)),
    ]

    static func edited(_ key: String, _ v: V?) -> [(String, V)] {
        var kv = valid.filter { $0.0 != key }
        if let v { kv.append((key, v)) }
        return kv
    }

    @Test func aSmallValidFileTokenizes() throws {
        let url = try Self.file(Self.valid)
        defer { try? FileManager.default.removeItem(at: url) }
        let tok = try Tokenizer.load(model: url)
        #expect(tok.encode("ab a<|endoftext|>") == [3, 4, 1, 0])
        #expect(tok.eosTokenIDs == [0] && tok.specialTokenIDs == [0])
    }

    /// `tokenizer.ggml.pre` is read as llama.cpp reads it: `smollm` splits every digit before BPE
    /// (transformers' GGUF reader would merge "12"), `gpt-2` does not.
    @Test(arguments: [("smollm", [5, 6]), ("starcoder", [5, 6]), ("gpt-2", [7]), ("qwen2", [5, 6]), ("llama-bpe", [7])])
    func preTokenizerSplitsAsLlamaCpp(_ pre: String, _ ids: [Int]) throws {
        var kv = Self.edited("tokenizer.ggml.pre", .s(pre))
        kv.append(("tokenizer.ggml.add_bos_token", .b(false)))
        let url = try Self.file(kv)
        defer { try? FileManager.default.removeItem(at: url) }
        #expect(try Tokenizer.load(model: url).encode("12") == ids, "\(pre)")
    }

    static let cases: [(String, [(String, V)], String)] = [
        ("sentencepiece", edited("tokenizer.ggml.model", .s("llama")), "tokenizer.ggml.model"),
        ("no tokens", edited("tokenizer.ggml.tokens", nil), "tokenizer.ggml.tokens"),
        ("tokens not strings", edited("tokenizer.ggml.tokens", .ints([1, 2, 3, 4, 5])), "tokenizer.ggml.tokens[0]"),
        ("types short", edited("tokenizer.ggml.token_type", .ints([1, 1])), "tokenizer.ggml.token_type"),
        ("merge of three", edited("tokenizer.ggml.merges", .strings(["a b c"])), "tokenizer.ggml.merges[0]"),
        ("respelled twice", edited("tokenizer.ggml.tokens", .strings(["<|endoftext|>", "a", "b", "Ġ", " ", "1", "2", "12"])),
         "tokenizer.ggml.tokens[4]"),
        ("adds bos", edited("tokenizer.ggml.add_bos_token", .b(true)), "tokenizer.ggml.add_bos_token"),
        ("prefix space", edited("tokenizer.ggml.add_space_prefix", .b(true)), "tokenizer.ggml.add_space_prefix"),
        ("unknown split", edited("tokenizer.ggml.pre", .s("tekken")), "tokenizer.ggml.pre"),
        ("no split", edited("tokenizer.ggml.pre", nil), "tokenizer.ggml.pre"),
        ("default split", edited("tokenizer.ggml.pre", .s("default")), "tokenizer.ggml.pre"),
        ("split not text", edited("tokenizer.ggml.pre", .u(1)), "tokenizer.ggml.pre"),
        ("llama3 adds bos by default", edited("tokenizer.ggml.pre", .s("llama-bpe")), "tokenizer.ggml.add_bos_token"),
        ("unknown key", edited("tokenizer.ggml.precompiled_charsmap", .s("x")), "tokenizer.ggml.precompiled_charsmap"),
        ("eos outside", edited("tokenizer.ggml.eos_token_id", .u(99)), "tokenizer.ggml.eos_token_id"),
        ("template not text", edited("tokenizer.chat_template", .u(1)), "tokenizer.chat_template"),
    ]

    @Test(arguments: 0..<cases.count)
    func refused(_ i: Int) throws {
        let (name, kv, key) = Self.cases[i]
        let url = try Self.file(kv)
        defer { try? FileManager.default.removeItem(at: url) }
        do {
            _ = try Tokenizer.load(model: url)
            Issue.record("\(name): accepted")
        } catch let e as TokenizerError {
            guard case let .invalidField(file, path, _) = e else { Issue.record("\(name): \(e)"); return }
            #expect(file.hasPrefix(url.path) && path == key, "\(name): \(e)")
        }
    }
}

/// The scan fixture's tokenizer written into GGUF metadata: AutoTokenizer(gguf_file=) ids, and
/// the chat template's ids, as transformers gives them.
@Suite struct GGUFFixtureTokenizerTests {
    static let dir = tokFixtures.appendingPathComponent("gguf/scan")
    struct Golden: Decodable {
        struct Prompt: Decodable { let user: String; let ids: [Int] }
        struct Text: Decodable { let text: String; let ids: [Int] }
        let prompts: [Prompt]
        let texts: [Text]
    }

    @Test(arguments: ["base.F32.gguf", "base.Q8_0.gguf"])
    func idsAndChatAsTransformers(_ name: String) throws {
        let goldens = try JSONDecoder().decode([String: Golden].self, from: Data(contentsOf: Self.dir.appendingPathComponent("goldens.json")))
        let g = try #require(goldens[name])
        let tok = try Tokenizer.load(model: Self.dir.appendingPathComponent(name))
        for t in g.texts { #expect(tok.encode(t.text) == t.ids, "\(t.text.debugDescription)") }
        for p in g.prompts {
            let text = try tok.applyChatTemplate([ChatMessage(role: "user", content: p.user)], addGenerationPrompt: true)
            #expect(tok.encode(text, addSpecialTokens: false) == p.ids, "\(p.user)")
        }
        let directory = try Tokenizer.load(directory: tokFixtures.appendingPathComponent("scan/base"))
        #expect(tok.contentDifference(from: directory) == nil)
    }

    /// A GPT-2 GGUF (no chat template): its prompts are plain text.
    @Test func gpt2IDsAsTransformers() throws {
        let goldens = try JSONDecoder().decode([String: Golden].self, from: Data(contentsOf: Self.dir.appendingPathComponent("goldens.json")))
        let g = try #require(goldens["gpt2.Q8_0.gguf"])
        let tok = try Tokenizer.load(model: Self.dir.appendingPathComponent("gpt2.Q8_0.gguf"))
        for t in g.texts + g.prompts.map({ Golden.Text(text: $0.user, ids: $0.ids) }) {
            #expect(tok.encode(t.text) == t.ids, "\(t.text.debugDescription)")
        }
        #expect(!tok.hasChatTemplate)
    }
}
