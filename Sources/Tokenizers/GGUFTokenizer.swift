import Foundation
import AssayCommon
import GGUF

/// The tokenizer a GGUF file describes in its `tokenizer.*` metadata: the byte-level BPE
/// vocabulary (`gpt2`) becomes a tokenizer.json pipeline as transformers builds it
/// (`integrations/gguf/gguf_tokenizer_mapping.py`: control tokens special added tokens,
/// user-defined ones plain added tokens), split before BPE as llama.cpp, which serves the file,
/// splits for its `tokenizer.ggml.pre`.
///
/// A file that this reader cannot build exactly as llama.cpp tokenizes it is refused, naming the
/// key: SentencePiece (`llama`) vocabularies, pre-tokenizers not listed in `splits`, BOS/EOS
/// insertion, a prefix space.
enum GGUFTokenizer {
    /// How a `tokenizer.ggml.pre` value splits text before BPE. The GGUF is served by llama.cpp
    /// (and Ollama, LM Studio), so each value is read as llama.cpp reads it (`llm_tokenizer_bpe`);
    /// only values whose llama.cpp split Assay reproduces exactly are accepted, anything else
    /// (a missing value and `default` included: llama.cpp's default split is not GPT-2's) is refused.
    enum Split: Sendable {
        /// GPT-2's regex (llama.cpp's GPT2, MPT, OLMO, JAIS, TRILLION and GRANITE_DOCLING types).
        case gpt2
        /// Every digit on its own, then GPT-2's regex (llama.cpp's STARCODER, REFACT, COMMAND_R,
        /// SMOLLM, CODESHELL, EXAONE, MINERVA types; SmolLM2's own tokenizer.json says the same:
        /// Digits(individual) then ByteLevel). transformers' GGUF reader leaves these at plain
        /// ByteLevel, so it would read "2024" as other tokens than the served model does.
        case digitsThenGPT2
        /// One regex, then byte-level mapping (Llama 3, Qwen2); transformers splits these the same way.
        case regex(String)
    }

    static let llama3Split = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"#
        + #"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Split = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"#
        + #"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    /// llama.cpp adds BOS for these unless `tokenizer.ggml.add_bos_token` says otherwise.
    static let bosByDefault: Set<String> = ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                                            "jina-v5-nano"]
    static let splits: [String: Split] = {
        var d: [String: Split] = [:]
        for p in bosByDefault.union(["dbrx", "smaug-bpe"]) { d[p] = .regex(llama3Split) }
        for p in ["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan"] { d[p] = .regex(qwen2Split) }
        for p in ["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "modern-bert",
                  "mpt", "olmo", "jais", "exaone4", "trillion", "granite-docling"] { d[p] = .gpt2 }
        for p in ["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"] { d[p] = .digitsThenGPT2 }
        return d
    }()

    static func preTokenizer(_ f: GGUFFile, _ fail: (String, String) -> TokenizerError) throws(TokenizerError) -> JSONValue {
        guard let v = f.metadata["tokenizer.ggml.pre"] else {
            throw fail("tokenizer.ggml.pre", "missing: llama.cpp would split with its 'default' regexes, which Assay does not reproduce")
        }
        guard case let .string(p) = v else { throw fail("tokenizer.ggml.pre", "must be a STRING, found \(v.typeName)") }
        guard let split = splits[p] else {
            throw fail("tokenizer.ggml.pre", "'\(p)': a split Assay does not reproduce exactly as llama.cpp does")
        }
        if bosByDefault.contains(p), f.metadata["tokenizer.ggml.add_bos_token"] == nil {
            throw fail("tokenizer.ggml.add_bos_token", "missing: llama.cpp adds BOS by default for the '\(p)' pre-tokenizer")
        }
        switch split {
        case .gpt2: return byteLevel(regex: true)
        case .digitsThenGPT2:
            return obj(["type": .string("Sequence"), "pretokenizers": .array([
                obj(["type": .string("Digits"), "individual_digits": .bool(true)]), byteLevel(regex: true),
            ])])
        case .regex(let regex):
            return obj(["type": .string("Sequence"), "pretokenizers": .array([
                obj(["type": .string("Split"), "pattern": obj(["Regex": .string(regex)]), "behavior": .string("Isolated"),
                     "invert": .bool(false)]),
                byteLevel(regex: false),
            ])])
        }
    }

    /// Keys of `tokenizer.` this reader understands; any other would be ignored by one reader and
    /// not the other.
    static let knownKeys: Set<String> = [
        "ggml.model", "ggml.pre", "ggml.tokens", "ggml.token_type", "ggml.merges", "ggml.scores", "ggml.bos_token_id",
        "ggml.eos_token_id", "ggml.unknown_token_id", "ggml.padding_token_id", "ggml.add_bos_token", "ggml.add_eos_token",
        "ggml.add_space_prefix", "chat_template",
    ]

    static func load(_ f: GGUFFile) throws(TokenizerError) -> Tokenizer {
        let file = f.url.path
        func fail(_ key: String, _ message: String) -> TokenizerError { .invalidField(file: file, path: key, message: message) }
        for key in f.keys where key.hasPrefix("tokenizer.") && !knownKeys.contains(String(key.dropFirst("tokenizer.".count))) {
            throw fail(key, "a tokenizer key Assay does not read (llama.cpp or transformers might)")
        }
        guard case let .string(model)? = f.metadata["tokenizer.ggml.model"] else {
            throw fail("tokenizer.ggml.model", "missing or not a string")
        }
        guard model == "gpt2" else {
            throw fail("tokenizer.ggml.model", "'\(model)': Assay builds byte-level BPE (gpt2) tokenizers from GGUF metadata only")
        }
        let tokens = try strings(f, "tokenizer.ggml.tokens", fail)
        guard !tokens.isEmpty, tokens.count <= TokenizerLimits.maxVocabulary else {
            throw fail("tokenizer.ggml.tokens", "\(tokens.count) tokens (1…\(TokenizerLimits.maxVocabulary) allowed)")
        }
        let merges = try strings(f, "tokenizer.ggml.merges", fail)
        let types = try integers(f, "tokenizer.ggml.token_type", count: tokens.count, fail)
        for key in ["tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix"] {
            guard let v = f.metadata[key] else { continue }
            guard case let .bool(on) = v else { throw fail(key, "must be a BOOL, found \(v.typeName)") }
            if on { throw fail(key, "true: Assay does not build tokenizers that insert BOS/EOS or a prefix space from GGUF") }
        }
        let pre = try preTokenizer(f, fail)
        let vocab = try respelledVocabulary(tokens, fail)
        var mergePairs: [JSONValue] = []
        mergePairs.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() {
            let parts = m.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw fail("tokenizer.ggml.merges[\(i)]", "'\(m)' is not two tokens separated by one space") }
            mergePairs.append(.array([.string(String(parts[0])), .string(String(parts[1]))]))
        }
        let root = obj([
            "version": .string("1.0"), "normalizer": .null, "pre_tokenizer": pre,
            "added_tokens": .array(addedTokens(tokens, types: types, vocab: vocab)),
            "post_processor": obj(["type": .string("TemplateProcessing"),
                                   "single": .array([obj(["Sequence": obj(["id": .string("A"), "type_id": .number("0")])])]),
                                   "pair": .array([obj(["Sequence": obj(["id": .string("A"), "type_id": .number("0")])]),
                                                   obj(["Sequence": obj(["id": .string("B"), "type_id": .number("1")])])]),
                                   "special_tokens": .object([])]),
            "decoder": obj(["type": .string("ByteLevel"), "add_prefix_space": .bool(true), "trim_offsets": .bool(true),
                            "use_regex": .bool(true)]),
            "model": obj(["type": .string("BPE"), "dropout": .null, "unk_token": .null, "continuing_subword_prefix": .string(""),
                          "end_of_word_suffix": .string(""), "fuse_unk": .bool(false), "byte_fallback": .bool(false),
                          "ignore_merges": .bool(false), "vocab": .object(vocab.map { JSONMember(key: $0.0, value: .number("\($0.1)")) }),
                          "merges": .array(mergePairs)]),
        ])
        var config: [JSONMember] = []
        for (name, key) in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id"),
                            ("pad_token", "padding_token_id")] {
            guard let v = f.metadata["tokenizer.ggml." + key] else { continue }
            guard let id = v.integer, id >= 0, id < tokens.count else {
                throw fail("tokenizer.ggml." + key, "\(v.integer.map(String.init) ?? v.typeName) is not a token id below \(tokens.count)")
            }
            config.append(JSONMember(key: name, value: .string(vocab[id].0)))
        }
        var template: (String, String)? = nil
        if let v = f.metadata["tokenizer.chat_template"] {
            guard case let .string(t) = v else { throw fail("tokenizer.chat_template", "must be a STRING, found \(v.typeName)") }
            guard t.utf8.count <= ChatTemplate.Limits.maxSourceBytes else {
                throw fail("tokenizer.chat_template", "\(t.utf8.count) bytes (at most \(ChatTemplate.Limits.maxSourceBytes))")
            }
            template = (t, file + ": tokenizer.chat_template")
        }
        return try Tokenizer(root: Node(value: root, path: "", file: file + " (tokenizer.ggml.*)"),
                             config: Node(value: .object(config), path: "", file: file + " (tokenizer.ggml.*)"), chatTemplate: template)
    }

    static func obj(_ d: KeyValuePairs<String, JSONValue>) -> JSONValue { .object(d.map { JSONMember(key: $0.key, value: $0.value) }) }

    static func byteLevel(regex: Bool) -> JSONValue {
        obj(["type": .string("ByteLevel"), "add_prefix_space": .bool(false), "trim_offsets": .bool(true), "use_regex": .bool(regex)])
    }

    /// transformers spells a token that uses characters outside GPT-2's byte alphabet by the
    /// alphabet's stand-ins for its UTF-8 bytes. Two tokens that end up with one spelling would
    /// leave transformers with one id where llama.cpp has two: refused.
    static func respelledVocabulary(_ tokens: [String],
                                    _ fail: (String, String) -> TokenizerError) throws(TokenizerError) -> [(String, Int)] {
        var seen: [String: Int] = [:]
        var out: [(String, Int)] = []
        out.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() {
            let spelled = t.unicodeScalars.allSatisfy { ByteLevelMap.scalarToByte[$0.value] != nil } ? t : ByteLevelMap.map(Array(t.utf8))
            if let j = seen.updateValue(i, forKey: spelled) {
                throw fail("tokenizer.ggml.tokens[\(i)]", "spells the same token as [\(j)] ('\(spelled)')")
            }
            out.append((spelled, i))
        }
        return out
    }

    /// Control tokens (type 3) spelled in the byte alphabet as special added tokens, user-defined
    /// ones (type 4) as plain added tokens, in id order, each under its vocabulary id.
    static func addedTokens(_ tokens: [String], types: [Int], vocab: [(String, Int)]) -> [JSONValue] {
        func token(_ i: Int, special: Bool) -> JSONValue {
            obj(["id": .number("\(i)"), "content": .string(vocab[i].0), "single_word": .bool(false), "lstrip": .bool(false),
                 "rstrip": .bool(false), "normalized": .bool(false), "special": .bool(special)])
        }
        var out: [JSONValue] = []
        func spelledInAlphabet(_ t: String) -> Bool { t.unicodeScalars.allSatisfy { ByteLevelMap.scalarToByte[$0.value] != nil } }
        for (i, t) in tokens.enumerated() where types[i] == 3 && spelledInAlphabet(t) {
            out.append(token(i, special: true))
        }
        // A user-defined token is added only under its own spelling, if the vocabulary has it.
        let ids = Dictionary(vocab.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        for (i, t) in tokens.enumerated() where types[i] == 4 {
            if let id = ids[t] { out.append(token(id, special: false)) }
        }
        return out
    }

    static func strings(_ f: GGUFFile, _ key: String, _ fail: (String, String) -> TokenizerError) throws(TokenizerError) -> [String] {
        guard let v = f.metadata[key] else { throw fail(key, "missing") }
        guard case let .array(_, items) = v else { throw fail(key, "must be an ARRAY of STRING, found \(v.typeName)") }
        var out: [String] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            guard case let .string(s) = item else { throw fail("\(key)[\(i)]", "must be a STRING, found \(item.typeName)") }
            out.append(s)
        }
        return out
    }

    static func integers(_ f: GGUFFile, _ key: String, count: Int,
                         _ fail: (String, String) -> TokenizerError) throws(TokenizerError) -> [Int] {
        guard let v = f.metadata[key] else { return [Int](repeating: 1, count: count) }
        guard case let .array(_, items) = v, items.count == count else {
            throw fail(key, "must be an ARRAY of \(count) integers (one per token)")
        }
        var out: [Int] = []
        out.reserveCapacity(count)
        for (i, item) in items.enumerated() {
            guard let x = item.integer else { throw fail("\(key)[\(i)]", "must be an integer, found \(item.typeName)") }
            out.append(x)
        }
        return out
    }
}

extension Tokenizer {
    /// The tokenizer of a model location: a model directory (`load(directory:)`) or a GGUF file
    /// (its `tokenizer.*` metadata).
    public static func load(model location: URL) throws -> Tokenizer {
        guard GGUFFile.isGGUF(location) else { return try load(directory: location) }
        let f: GGUFFile
        do { f = try GGUFFile(url: location) } catch { throw TokenizerError.invalidField(file: location.path, path: "(file)",
                                                                                          message: error.description) }
        return try GGUFTokenizer.load(f)
    }
}

extension Tokenizer {
    /// Text that exercises every stage of a tokenizer (normalizer, pre-tokenizer split, BPE,
    /// added tokens, decoder): two tokenizers that agree on all of it and on their vocabularies,
    /// merges, added tokens and chat templates read text alike.
    static let identityProbes = [
        "Hello world", "  leading and trailing  ", "line one\nline two\r\n\ttabbed", "It's they're we'll I'd",
        "In 2024, 1234567 people paid $3.50 (or €3,20).", "naïve café résumé — “quotes” ✓ 日本語 한국어 🤖",
        "def f(x):\n    return x ** 2  # comment\n", "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
        "URL: https://example.com/a?b=c&d=e", "UPPER lower MiXeD", "\u{00A0}nbsp\u{2003}em space", "a\u{0301}e\u{0300}",
    ]

    /// Nil when `other` reads text exactly as this tokenizer does; otherwise what differs. Used
    /// where two models' tokenizers come from different files (a GGUF's metadata against a
    /// tokenizer.json), so file hashes cannot be compared.
    public func contentDifference(from other: Tokenizer) -> String? {
        if model.vocab.toToken != other.model.vocab.toToken { return "the vocabularies differ" }
        switch (model, other.model) {
        case let (.bpe(a), .bpe(b)):
            if a.merges != b.merges { return "the BPE merges differ" }
            if (a.unkID, a.fuseUnk, a.byteFallback, a.ignoreMerges, a.prefix, a.suffix)
                != (b.unkID, b.fuseUnk, b.byteFallback, b.ignoreMerges, b.prefix, b.suffix) { return "the BPE settings differ" }
        case (.wordPiece, .wordPiece): break
        default: return "the tokenizer models differ"
        }
        func key(_ t: AddedToken) -> String {
            "\(t.id)\u{0}\(t.content)\u{0}\(t.singleWord)\(t.lstrip)\(t.rstrip)\(t.normalized)\(t.special)"
        }
        if added.map(key) != other.added.map(key) { return "the added tokens differ" }
        if (bosTokenID, eosTokenIDs, padTokenID) != (other.bosTokenID, other.eosTokenIDs, other.padTokenID) {
            return "the BOS, EOS or padding tokens differ"
        }
        if chatTemplateSource != other.chatTemplateSource { return "the chat templates differ" }
        for text in Self.identityProbes {
            let a = try? encodeChecked(text, addSpecialTokens: true), b = try? other.encodeChecked(text, addSpecialTokens: true)
            if a != b { return "they tokenize \"\(text.terminalSafe)\" differently" }
            if let a, decode(a, skipSpecialTokens: false) != other.decode(a, skipSpecialTokens: false) {
                return "they decode \"\(text.terminalSafe)\" differently"
            }
        }
        return nil
    }
}
