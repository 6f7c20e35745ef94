import Foundation
import GGUF
import AssayCommon
import Models
import Probes
import Provenance
import SafeTensors
import Sweep
import Tokenizers

/// One harness per parser, shared by the libFuzzer driver (Fuzz/, scripts/fuzz.sh) and the
/// regression tests that replay the committed corpora (Tests/FuzzCorpusTests). Each harness feeds
/// its input to the parser exactly as Assay reads the real file and accepts any typed error:
/// what a fuzzer looks for is a crash, a trap, a leak, a timeout or an out-of-memory.
public enum Harness: String, CaseIterable, Sendable {
    case safetensors, json, tokenizer, regex, template, pickle, zip, suite, inventory, adapter, gguf

    /// Runs one input. `scratch` is a private directory for the harnesses that read files.
    public func run(_ bytes: [UInt8], scratch: URL) {
        switch self {
        case .safetensors: Self.safetensors(bytes, scratch)
        case .json: _ = try? JSONParser.parse(bytes)
        case .tokenizer: Self.tokenizer(bytes)
        case .regex: Self.regex(bytes)
        case .template: Self.template(bytes)
        case .pickle: bytes.withUnsafeBytes { _ = PickleScanner.scan($0) }
        case .zip: bytes.withUnsafeBytes { _ = try? ZipReader.read($0) }
        case .suite: _ = try? SuiteLoader.load(Self.file("suite.jsonl", bytes, scratch))
        case .inventory: _ = try? Inventory.load(Self.file("inventory.yaml", bytes, scratch))
        case .adapter: Self.adapter(bytes, scratch)
        case .gguf: Self.gguf(bytes, scratch)
        }
    }

    static func file(_ name: String, _ bytes: [UInt8], _ scratch: URL) -> URL {
        let u = scratch.appendingPathComponent(name)
        FileManager.default.createFile(atPath: u.path, contents: Data(bytes))
        return u
    }

    /// Splits an input at the first NUL byte into two parts (config and data, pattern and text…).
    static func split(_ bytes: [UInt8]) -> ([UInt8], [UInt8]) {
        guard let i = bytes.firstIndex(of: 0) else { return (bytes, []) }
        return (Array(bytes[..<i]), Array(bytes[(i + 1)...]))
    }

    static func safetensors(_ bytes: [UInt8], _ scratch: URL) {
        guard let f = try? SafeTensorsFile(url: file("model.safetensors", bytes, scratch)) else { return }
        // Decode every tensor it accepted: offsets and sizes were validated, so this must not trap.
        for name in f.tensorNames.prefix(16) { _ = try? f.tensor(name) }
    }

    static func gguf(_ bytes: [UInt8], _ scratch: URL) {
        let url = file("model.gguf", bytes, scratch)
        guard let f = try? GGUFFile(url: url) else { return }
        // Dequantise what it accepted: entries were placed inside the file, so this must not trap.
        for t in f.tensors.prefix(16) where GGUFFile.dequantizable.contains(t.type) && t.elementCount <= 1 << 22 {
            _ = try? f.floats(t)
        }
        // As a model: the config from the metadata, the tensors mapped and un-permuted.
        if let g = try? GGUFCheckpoint(f) {
            _ = try? LlamaConfig(g.config)
            for name in g.tensorNames.prefix(16) where (g.shape(name)?.reduce(1, *) ?? 0) <= 1 << 22 { _ = try? g.tensor(name) }
        }
        // As a tokenizer and chat template: built, then run.
        if let tok = try? Tokenizer.load(model: url) {
            let ids = (try? tok.encodeChecked("Hello <|im_start|>user 2024 café")) ?? []
            _ = tok.decode(ids)
            _ = try? tok.applyChatTemplate([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
        }
    }

    /// A tokenizer.json (and, after a NUL, text to encode).
    static func tokenizer(_ bytes: [UInt8]) {
        let (json, text) = split(bytes)
        guard let t = try? Tokenizer.parse(tokenizerJSON: String(decoding: json, as: UTF8.self)) else { return }
        let ids = (try? t.encodeChecked(String(decoding: text, as: UTF8.self))) ?? []
        _ = t.decode(ids)
    }

    /// A Split pre-tokenizer pattern (and, after a NUL, the text it splits), through a minimal
    /// tokenizer.json: the regex engine is reached exactly as a hostile tokenizer reaches it.
    static func regex(_ bytes: [UInt8]) {
        let (pattern, text) = split(bytes)
        let p = String(decoding: pattern, as: UTF8.self)
        var escaped = ""
        for s in p.unicodeScalars {
            switch s {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            default:
                if s.value < 0x20 { escaped += String(format: "\\u%04x", s.value) } else { escaped.unicodeScalars.append(s) }
            }
        }
        let json = """
        {"version":"1.0","added_tokens":[],"normalizer":null,
         "pre_tokenizer":{"type":"Split","pattern":{"Regex":"\(escaped)"},"behavior":"Isolated","invert":false},
         "post_processor":null,"decoder":null,
         "model":{"type":"BPE","dropout":null,"unk_token":"[UNK]","continuing_subword_prefix":null,"end_of_word_suffix":null,
              "fuse_unk":false,"byte_fallback":false,"vocab":{"[UNK]":0,"a":1},"merges":[]}}
        """
        guard let t = try? Tokenizer.parse(tokenizerJSON: json) else { return }
        _ = try? t.encodeChecked(String(decoding: text, as: UTF8.self))
    }

    /// A chat template, rendered for a two-turn conversation.
    static func template(_ bytes: [UInt8]) {
        guard let t = try? ChatTemplate(String(decoding: bytes, as: UTF8.self)) else { return }
        _ = try? t.render(messages: [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi <b>"),
                                     ChatMessage(role: "assistant", content: "Hello."), ChatMessage(role: "user", content: "Bye")],
                          addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    }

    /// adapter_config.json, a NUL, then adapter_model.safetensors.
    static func adapter(_ bytes: [UInt8], _ scratch: URL) {
        let (config, weights) = split(bytes)
        let dir = scratch.appendingPathComponent("adapter")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir.appendingPathComponent("adapter_config.json").path, contents: Data(config))
        FileManager.default.createFile(atPath: dir.appendingPathComponent("adapter_model.safetensors").path, contents: Data(weights))
        _ = try? LoRAAdapter.load(dir)
    }
}
