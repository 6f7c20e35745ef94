import Foundation
import AssayCommon

public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// A Hugging Face `tokenizer.json` pipeline: added tokens → normalizer → pre-tokenizer → model →
/// post-processor on the way in, decoder on the way out (tokenizers/src/tokenizer/mod.rs).
/// Immutable after loading except for an internal word cache, so it can be shared across threads.
public final class Tokenizer: Sendable {
    let model: Model
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let postProcessor: PostProcessor?
    let decoder: Decoder?
    let added: [AddedToken]
    let addedByID: [Int: AddedToken]
    let addedByContent: [TokenKey: Int]
    let rawTrie: TokenTrie
    let normalizedTrie: TokenTrie
    let chatTemplateSource: String?
    /// The file the chat template came from (chat_template.jinja or tokenizer_config.json), for errors.
    let chatTemplateFile: String
    let configTokens: [String: String]
    /// The tokenizer.json path, and every explicitly numbered token it names (added tokens,
    /// post-processor specials) with its JSON path, for `checkIDs(embeddingRows:configFile:)`.
    let file: String
    let namedIDs: [(path: String, token: String, id: Int)]

    public let specialTokenIDs: Set<Int>
    public let vocabularySize: Int
    public let bosTokenID: Int?
    public let eosTokenIDs: [Int]
    public let padTokenID: Int?

    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` and `chat_template.jinja`.
    /// Every file is read with `SafeFile` (regular files only, never blocking on a FIFO, size-bounded).
    public static func load(directory: URL) throws -> Tokenizer {
        let config = directory.appendingPathComponent("tokenizer_config.json")
        let jinja = directory.appendingPathComponent("chat_template.jinja")
        var template: (String, String)? = nil
        if SafeFile.exists(jinja) {
            do { template = (try SafeFile.readText(jinja, maxBytes: ChatTemplate.Limits.maxSourceBytes), jinja.path) } catch {
                throw TokenizerError(error)
            }
        }
        return try load(tokenizerJSON: directory.appendingPathComponent("tokenizer.json"),
                        config: SafeFile.exists(config) ? config : nil, chatTemplate: template)
    }

    public static func load(tokenizerJSON: URL, config: URL?) throws -> Tokenizer {
        try load(tokenizerJSON: tokenizerJSON, config: config, chatTemplate: nil)
    }

    static func readJSON(_ url: URL, maxBytes: Int) throws(TokenizerError) -> JSONValue {
        let bytes: [UInt8]
        do { bytes = try SafeFile.read(url, maxBytes: maxBytes) } catch { throw TokenizerError(error) }
        do { return try JSONParser.parse(bytes) } catch { throw .invalidJSON(file: url.path, offset: error.offset, message: error.message) }
    }

    /// `chatTemplate`: the text of chat_template.jinja and its path.
    static func load(tokenizerJSON: URL, config: URL?, chatTemplate: (String, String)?) throws(TokenizerError) -> Tokenizer {
        let root = Node(value: try readJSON(tokenizerJSON, maxBytes: TokenizerLimits.maxTokenizerJSONBytes), path: "",
                        file: tokenizerJSON.path)
        var cfg: Node? = nil
        if let config { cfg = Node(value: try readJSON(config, maxBytes: TokenizerLimits.maxConfigBytes), path: "", file: config.path) }
        return try Tokenizer(root: root, config: cfg, chatTemplate: chatTemplate)
    }

    /// Parses a tokenizer from in-memory JSON (tests, embedded tokenizers).
    public static func parse(tokenizerJSON: String, configJSON: String? = nil, chatTemplate: String? = nil) throws -> Tokenizer {
        func node(_ s: String, _ name: String) throws(TokenizerError) -> Node {
            do { return Node(value: try JSONParser.parse(s), path: "", file: name) } catch {
                throw .invalidJSON(file: name, offset: error.offset, message: error.message)
            }
        }
        return try Tokenizer(root: try node(tokenizerJSON, "tokenizer.json"),
                             config: try configJSON.map { (s) throws(TokenizerError) in try node(s, "tokenizer_config.json") },
                             chatTemplate: chatTemplate.map { ($0, "chat_template.jinja") })
    }

    init(root: Node, config: Node?, chatTemplate: (String, String)?) throws(TokenizerError) {
        guard root.value.members != nil else { throw root.fail("expected an object, found \(root.value.typeName)") }
        model = try Model.load(try root.require("model"))
        normalizer = try root.child("normalizer").map { (n) throws(TokenizerError) in try Normalizer.load(n) }
        preTokenizer = try root.child("pre_tokenizer").map { (n) throws(TokenizerError) in try PreTokenizer.load(n) }
        decoder = try root.child("decoder").map { (n) throws(TokenizerError) in try Decoder.load(n) }
        let vocab = model.vocab
        var added: [AddedToken] = []
        var byID: [Int: AddedToken] = [:]
        var byContent: [TokenKey: Int] = [:]
        var named: [(path: String, token: String, id: Int)] = []
        var maxAdded: Int? = nil
        for n in try root.child("added_tokens")?.items() ?? [] {
            let t = try AddedToken.load(n)
            let idPath = n.path + ".id"
            // Hugging Face tokenizers ignores the stored id: an added token takes its content's id
            // (an earlier added token's, or the vocabulary's), else the next free id after the
            // vocabulary (tokenizers/src/tokenizer/added_vocabulary.rs, add_tokens). A stored id that
            // differs would make Assay read ids PyTorch never sees, so it is refused.
            guard t.id >= 0, t.id <= Int(UInt32.max) else {
                throw TokenizerError.tokenIDOutOfRange(file: n.file, path: idPath, token: t.content, id: t.id, limit: Int(UInt32.max) + 1,
                                                       what: "the 32-bit ids Hugging Face tokenizers accepts")
            }
            guard !t.content.isEmpty else { throw n.fail("added token with empty content (Hugging Face tokenizers skips it)") }
            let v = vocab.toID.count
            let next = maxAdded.map { $0 >= v || v == 0 ? $0 + 1 : v } ?? v
            let expected = byContent[TokenKey(t.content)] ?? vocab.id(t.content) ?? next
            guard t.id == expected else {
                throw TokenizerError.invalidField(file: n.file, path: idPath,
                    message: "token '\(t.content)' has id \(t.id), but Hugging Face tokenizers gives it id \(expected) (its vocabulary "
                        + "id or the next free one)")
            }
            if byContent[TokenKey(t.content)] == nil {
                added.append(t); byID[t.id] = t; byContent[TokenKey(t.content)] = t.id
                maxAdded = max(maxAdded ?? t.id, t.id)
            }
            named.append((idPath, t.content, t.id))
        }
        self.added = added
        addedByID = byID
        addedByContent = byContent
        let norm = normalizer
        rawTrie = TokenTrie(added.filter { !$0.normalized }) { $0.content }
        normalizedTrie = TokenTrie(added.filter { $0.normalized }) { norm?.normalize($0.content) ?? $0.content }
        // Post-processor ids are used as written (by tokenizers too), so each must name a token.
        func known(_ id: Int) -> Bool { byID[id] != nil || vocab.token(id) != nil }
        postProcessor = try root.child("post_processor").map { (n) throws(TokenizerError) in
            try PostProcessor.load(n) { (token, id, at) throws(TokenizerError) in
                guard known(id) else {
                    throw TokenizerError.tokenIDOutOfRange(file: at.file, path: at.path, token: token, id: id,
                                                           limit: max(vocab.toToken.count, (maxAdded ?? -1) + 1), what: "the vocabulary")
                }
                named.append((at.path, token, id))
            }
        }
        namedIDs = named
        file = root.file
        specialTokenIDs = Set(added.filter(\.special).map(\.id))
        var all = Set(vocab.toID.keys)
        for t in added { all.insert(TokenKey(t.content)) }
        vocabularySize = all.count

        // tokenizer_config.json: special token strings and the chat template.
        var tokens: [String: String] = [:]
        var template = chatTemplate?.0
        var templateFile = chatTemplate?.1 ?? ""
        if let config {
            try Self.checkAddedTokensDecoder(config, byContent: byContent, vocab: vocab)
            for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
                guard let v = config.child(key) else { continue }
                if let s = v.value.string { tokens[key] = s } else { tokens[key] = try v.string("content") }
            }
            if template == nil, let t = config.child("chat_template") {
                templateFile = config.file
                if let s = t.value.string { template = s } else {
                    for item in try t.items() where try item.string("name") == "default" { template = try item.string("template") }
                    if template == nil { throw t.fail("no template named 'default'") }
                }
            }
        }
        configTokens = tokens
        chatTemplateSource = template
        chatTemplateFile = templateFile
        func id(_ key: String) -> Int? { tokens[key].flatMap { byContent[TokenKey($0)] ?? vocab.id($0) } }
        bosTokenID = id("bos_token")
        eosTokenIDs = id("eos_token").map { [$0] } ?? []
        padTokenID = id("pad_token")
    }

    /// transformers (4.x) re-adds every `added_tokens_decoder` entry of tokenizer_config.json that
    /// tokenizer.json lacks, as a new token with a new id (PreTrainedTokenizerFast.__init__), so an
    /// entry naming a token tokenizer.json does not have, or has under another id, would make
    /// PyTorch tokenize differently from Assay: refused.
    static func checkAddedTokensDecoder(_ config: Node, byContent: [TokenKey: Int], vocab: Vocab) throws(TokenizerError) {
        guard let decoder = config.child("added_tokens_decoder") else { return }
        for (key, n) in try decoder.members() {
            let content = try n.string("content")
            guard let id = Int(key), id >= 0, id <= Int(UInt32.max) else {
                throw TokenizerError.tokenIDOutOfRange(file: n.file, path: n.path, token: content, id: Int(key) ?? -1,
                                                       limit: Int(UInt32.max) + 1,
                                                       what: "the 32-bit ids Hugging Face tokenizers accepts")
            }
            guard let have = byContent[TokenKey(content)] ?? vocab.id(content) else {
                throw n.fail("token '\(content)' (id \(id)) is not in tokenizer.json; transformers would add it as a new token")
            }
            guard have == id else { throw n.fail("token '\(content)' has id \(id) here but \(have) in tokenizer.json") }
        }
    }

    // MARK: encode

    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        (try? encodeChecked(text, addSpecialTokens: addSpecialTokens)) ?? []
    }

    /// As `encode`, but reports a regex that exceeded its work bound instead of returning [].
    public func encodeChecked(_ text: String, addSpecialTokens: Bool = true) throws(TokenizerError) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        let bytes = Array(text.utf8)
        for (r, tok) in rawTrie.split(bytes) {
            if let tok { ids.append(tok); continue }
            var piece = String(decoding: bytes[r], as: UTF8.self)
            if let normalizer { piece = normalizer.normalize(piece) }
            let atOrigin = r.lowerBound == 0
            if normalizedTrie.isEmpty {
                try encodePiece(Piece(text: piece, atOrigin: atOrigin), into: &ids)
            } else {
                let nb = Array(piece.utf8)
                for (r2, tok2) in normalizedTrie.split(nb) {
                    if let tok2 { ids.append(tok2); continue }
                    try encodePiece(Piece(text: String(decoding: nb[r2], as: UTF8.self), atOrigin: atOrigin && r2.lowerBound == 0),
                                    into: &ids)
                }
            }
        }
        if addSpecialTokens, let postProcessor { ids = postProcessor.process(ids) }
        return ids
    }

    @inline(__always) private func encodePiece(_ p: Piece, into ids: inout [Int]) throws(TokenizerError) {
        if p.text.isEmpty { return }
        guard let preTokenizer else { model.tokenize(p.text, into: &ids); return }
        // Hot path: byte-level with GPT-2's regex straight into the model.
        if case let .byteLevel(addPrefix, true) = preTokenizer, !addPrefix {
            GPT2Splitter.split(p.text) { bytes, _ in model.tokenize(ByteLevelMap.map(bytes), into: &ids) }
            return
        }
        for w in try preTokenizer.apply([p]) { model.tokenize(w.text, into: &ids) }
    }

    /// Encodes the bytes of a file, reporting the byte offset of the first invalid UTF-8 sequence.
    public func encode(fileBytes: [UInt8], file: String, addSpecialTokens: Bool = true) throws(TokenizerError) -> [Int] {
        try encodeChecked(try Self.validateUTF8(fileBytes, file: file), addSpecialTokens: addSpecialTokens)
    }

    public static func validateUTF8(_ bytes: [UInt8], file: String) throws(TokenizerError) -> String {
        var it = bytes.makeIterator()
        var dec = UTF8()
        var offset = 0
        var out = String.UnicodeScalarView()
        loop: while true {
            switch dec.decode(&it) {
            case let .scalarValue(s): out.append(s); offset += UTF8.width(s)
            case .emptyInput: break loop
            case .error: throw .invalidUTF8(file: file, offset: offset)
            }
        }
        return String(out)
    }

    // MARK: decode and vocabulary

    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            if let a = addedByID[id] {
                if skipSpecialTokens && a.special { continue }
                tokens.append(a.content)
            } else if let t = model.vocab.token(id) {
                if skipSpecialTokens, let aid = addedByContent[TokenKey(t)], addedByID[aid]?.special == true { continue }
                tokens.append(t)
            }
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.decodeChain(tokens).joined()
    }

    public func tokenString(_ id: Int) -> String? { addedByID[id]?.content ?? model.vocab.token(id) }
    public func tokenID(_ token: String) -> Int? { addedByContent[TokenKey(token)] ?? model.vocab.id(token) }

    // MARK: chat template

    public var hasChatTemplate: Bool { chatTemplateSource != nil }

    /// Renders the tokenizer's chat template as transformers' `apply_chat_template(tokenize=False)`.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws(TokenizerError) -> String {
        guard let src = chatTemplateSource else { throw TokenizerError.noChatTemplate(file: "tokenizer_config.json") }
        let t = try ChatTemplate(src, file: chatTemplateFile)
        return try t.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                            bosToken: configTokens["bos_token"], eosToken: configTokens["eos_token"],
                            extra: ["pad_token": configTokens["pad_token"], "unk_token": configTokens["unk_token"]].compactMapValues { $0 })
    }
}

extension Tokenizer {
    /// Checks every id the tokenizer can emit or names against a model's embedding matrix
    /// (`vocab_size` rows in `configFile`): the vocabulary, the added tokens, the post-processor's
    /// special tokens. The first offending token (the one with the largest id) is named.
    public func checkIDs(embeddingRows: Int, configFile: String) throws(TokenizerError) {
        var worst: (path: String, token: String, id: Int)? = nil
        if let maxID = model.vocab.toToken.indices.last, let t = model.vocab.toToken[maxID] { worst = ("model.vocab", t, maxID) }
        for n in namedIDs where n.id > (worst?.id ?? -1) { worst = n }
        guard let w = worst, w.id >= embeddingRows else { return }
        throw .tokenIDOutOfRange(file: file, path: w.path, token: w.token, id: w.id, limit: embeddingRows,
                                 what: "the model's embedding matrix (vocab_size in \(configFile))")
    }
}

extension TokenizerError {
    /// A file the tokenizer could not read safely, keeping the path.
    init(_ e: SafeFileError) {
        switch e {
        case let .notFound(p): self = .unreadable(file: p, reason: "no such file")
        case let .notRegular(p, kind): self = .unreadable(file: p, reason: "is \(kind), not a regular file; refusing to read it")
        case let .tooLarge(p, size, limit): self = .unreadable(file: p, reason: "\(size) bytes, over the \(limit)-byte limit for this file")
        case let .unreadable(p, reason): self = .unreadable(file: p, reason: reason)
        }
    }
}
