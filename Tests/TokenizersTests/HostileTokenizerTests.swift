import Foundation
import Testing
@testable import Tokenizers

/// tokenizer.json and its neighbours come from the model directory: nesting, ids and file kinds
/// are checked at load, each breach a typed error naming the file and the JSON path.
@Suite struct HostileTokenizers {
    static func json(vocab: [String] = ["a", "b", "ab", "<s>"], added: String = "[]", preTokenizer: String = "null",
                     normalizer: String = "null", postProcessor: String = "null") -> String {
        let v = vocab.enumerated().map { "\"\(jsonEscape($1))\": \($0)" }.joined(separator: ", ")
        return """
        {"added_tokens": \(added), "normalizer": \(normalizer), "pre_tokenizer": \(preTokenizer), "post_processor": \(postProcessor),
         "decoder": null, "model": {"type": "BPE", "vocab": {\(v)}, "merges": [["a", "b"]]}}
        """
    }
    static func added(_ id: Int, _ content: String) -> String {
        #"{"id": \#(id), "content": "\#(content)", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}"#
    }

    func loadError(_ s: String) -> TokenizerError? {
        do { _ = try Tokenizer.parse(tokenizerJSON: s); return nil } catch { return error as? TokenizerError }
    }

    @Test func deeplyNestedRegexIsRefusedWithItsPath() throws {
        // 1000 nested groups: under the length limit, over the nesting limit.
        let deep = String(repeating: "(", count: 1000) + "a" + String(repeating: ")", count: 1000)
        let e = loadError(Self.json(preTokenizer: #"{"type": "Split", "pattern": {"Regex": "\#(deep)"}, "behavior": "Isolated"}"#))
        guard case let .unsupportedRegex(file, path, _, reason)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(file == "tokenizer.json")
        #expect(path == "pre_tokenizer.pattern.Regex")
        #expect(reason.contains("nested deeper than \(TokenizerLimits.maxRegexNesting)") && reason.contains("at character 64"), "\(reason)")
        #expect(e!.description.count < 300, "one short line: \(e!.description)")

        // Stacked quantifiers and lookaheads nest without a group; 100k nested groups are over the length limit.
        for (p, needle) in [("a" + String(repeating: "?", count: 1000), "stacked"),
                            (String(repeating: "(?=", count: 1000) + "a" + String(repeating: ")", count: 1000), "nested deeper"),
                            (String(repeating: "(", count: 100_000) + "a" + String(repeating: ")", count: 100_000), "character limit"),
                            (String(repeating: "a", count: 20_000), "character limit")] {
            let e2 = loadError(Self.json(normalizer: #"{"type": "Replace", "pattern": {"Regex": "\#(p)"}, "content": "x"}"#))
            guard case let .unsupportedRegex(_, path2, _, reason2)? = e2 else { Issue.record("\(String(describing: e2))"); continue }
            #expect(path2 == "normalizer.pattern.Regex")
            #expect(reason2.contains(needle), "\(reason2)")
        }
        // Real patterns still compile (nesting 3).
        #expect(throws: Never.self) { try BoundedRegex(#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#) }
    }

    @Test func truncatedEscapesAreRefused() {
        // A class range ending on a lone backslash trapped the parser (found by the regex fuzzer,
        // Fuzz/regressions/regex/); an unterminated \x{ read past the pattern.
        for (p, needle) in [(#"[a-\\"#, "trailing backslash"), (#"[\\x{41"#, "unterminated"), (#"\\x{41"#, "unterminated")] {
            let e = loadError(Self.json(normalizer: #"{"type": "Replace", "pattern": {"Regex": "\#(p)"}, "content": "x"}"#))
            guard case let .unsupportedRegex(_, _, _, reason)? = e else { Issue.record("\(p): \(String(describing: e))"); continue }
            #expect(reason.contains(needle), "\(p): \(reason)")
        }
    }

    @Test func sequenceNestingIsBounded() {
        var n = #"{"type": "Lowercase"}"#
        for _ in 0..<(TokenizerLimits.maxSequenceNesting + 2) { n = #"{"type": "Sequence", "normalizers": [\#(n)]}"# }
        let e = loadError(Self.json(normalizer: n))
        guard case let .nestingTooDeep(file, path, what, limit, _)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(file == "tokenizer.json" && what == "normalizer Sequence" && limit == TokenizerLimits.maxSequenceNesting)
        #expect(path.hasPrefix("normalizer.normalizers[0]"), "\(path)")
        var ok = #"{"type": "Lowercase"}"#
        for _ in 0..<2 { ok = #"{"type": "Sequence", "normalizers": [\#(ok)]}"# }
        #expect(loadError(Self.json(normalizer: ok)) == nil)
    }

    @Test func addedTokenIDsMustBeWhatHuggingFaceAssigns() {
        // 2^62: tokenizers refuses it (ids are u32).
        let huge = loadError(Self.json(added: "[\(Self.added(1 << 62, "<evil>"))]"))
        guard case let .tokenIDOutOfRange(file, path, token, id, _, _)? = huge else { Issue.record("\(String(describing: huge))"); return }
        #expect(file == "tokenizer.json" && path == "added_tokens[0].id" && token == "<evil>" && id == 1 << 62)
        // A new token takes the next id after the vocabulary (4 here), whatever the file says.
        let skipped = loadError(Self.json(added: "[\(Self.added(9, "<x>"))]"))
        guard case let .invalidField(_, p2, m2)? = skipped else { Issue.record("\(String(describing: skipped))"); return }
        #expect(p2 == "added_tokens[0].id" && m2.contains("'<x>'") && m2.contains("id 9") && m2.contains("gives it id 4"), "\(m2)")
        // Content already in the vocabulary keeps its vocabulary id.
        let moved = loadError(Self.json(added: "[\(Self.added(4, "<s>"))]"))
        guard case let .invalidField(_, _, m3)? = moved else { Issue.record("\(String(describing: moved))"); return }
        #expect(m3.contains("gives it id 3"), "\(m3)")
        // What tokenizers would assign loads.
        #expect(loadError(Self.json(added: "[\(Self.added(3, "<s>")), \(Self.added(4, "<x>")), \(Self.added(5, "<y>"))]")) == nil)
    }

    @Test func addedTokensDecoderMustAgreeWithTokenizerJSON() {
        func configError(_ cfg: String) -> TokenizerError? {
            do { _ = try Tokenizer.parse(tokenizerJSON: Self.json(added: "[\(Self.added(4, "<x>"))]"), configJSON: cfg); return nil } catch {
                return error as? TokenizerError
            }
        }
        #expect(configError(#"{"added_tokens_decoder": {"4": {"content": "<x>"}, "3": {"content": "<s>"}}}"#) == nil)
        let moved = configError(#"{"added_tokens_decoder": {"7": {"content": "<x>"}}}"#)
        #expect(moved == .invalidField(file: "tokenizer_config.json", path: "added_tokens_decoder.7", message: "token '<x>' has id 7 here but 4 in tokenizer.json"))
        let extra = configError(#"{"added_tokens_decoder": {"5": {"content": "<tool>"}}}"#)
        #expect(extra?.description.contains("'<tool>' (id 5) is not in tokenizer.json") == true, "\(String(describing: extra))")
        let huge = configError(#"{"added_tokens_decoder": {"4611686018427387904": {"content": "<x>"}}}"#)
        guard case let .tokenIDOutOfRange(file, _, token, id, _, _)? = huge else { Issue.record("\(String(describing: huge))"); return }
        #expect(file == "tokenizer_config.json" && token == "<x>" && id == 1 << 62)
    }

    @Test func postProcessorIDsMustNameTokens() {
        let pp = #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],"#
            + #" "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [4611686018427387904], "tokens": ["<s>"]}}}"#
        let e = loadError(Self.json(postProcessor: pp))
        guard case let .tokenIDOutOfRange(file, path, token, id, _, what)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(file == "tokenizer.json" && path == "post_processor.special_tokens.<s>.ids[0]" && token == "<s>" && id == 1 << 62 && what == "the vocabulary")
        let bert = loadError(Self.json(postProcessor: #"{"type": "BertProcessing", "cls": ["[CLS]", 700], "sep": ["<s>", 3]}"#))
        guard case let .tokenIDOutOfRange(_, p2, t2, i2, _, _)? = bert else { Issue.record("\(String(describing: bert))"); return }
        #expect(p2 == "post_processor.cls[1]" && t2 == "[CLS]" && i2 == 700)
    }

    @Test func idsAreCheckedAgainstTheEmbeddingMatrix() throws {
        let tok = try Tokenizer.parse(tokenizerJSON: Self.json(added: "[\(Self.added(4, "<x>"))]"))
        try tok.checkIDs(embeddingRows: 5, configFile: "config.json")
        do { try tok.checkIDs(embeddingRows: 4, configFile: "config.json"); Issue.record("accepted") } catch {
            #expect(error == .tokenIDOutOfRange(file: "tokenizer.json", path: "added_tokens[0].id", token: "<x>", id: 4, limit: 4,
                                                what: "the model's embedding matrix (vocab_size in config.json)"))
            #expect(error.description.contains("'<x>'") && error.description.contains("config.json"))
        }
        do { try tok.checkIDs(embeddingRows: 2, configFile: "config.json"); Issue.record("accepted") } catch {
            #expect(error.description.contains("added_tokens[0].id"), "the largest id is named: \(error)")
        }
        let plain = try Tokenizer.parse(tokenizerJSON: Self.json())
        do { try plain.checkIDs(embeddingRows: 2, configFile: "config.json"); Issue.record("accepted") } catch {
            #expect(error.description.contains("model.vocab") && error.description.contains("'<s>'"), "\(error)")
        }
    }

    @Test func specialFilesAreRefusedWithoutBlocking() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-hostile-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(Self.json().utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        #expect(mkfifo(dir.appendingPathComponent("tokenizer_config.json").path, 0o644) == 0)
        do { _ = try Tokenizer.load(directory: dir); Issue.record("loaded") } catch let e as TokenizerError {
            guard case let .unreadable(file, reason) = e else { Issue.record("\(e)"); return }
            #expect(file.hasSuffix("tokenizer_config.json") && reason.contains("FIFO"), "\(e)")
        }
        // A 1 GB (sparse) tokenizer_config.json is refused by its size, before anything is read.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer_config.json"))
        #expect(FileManager.default.createFile(atPath: dir.appendingPathComponent("tokenizer_config.json").path, contents: nil))
        let h = try FileHandle(forWritingTo: dir.appendingPathComponent("tokenizer_config.json"))
        try h.truncate(atOffset: 1 << 30)
        try h.close()
        do { _ = try Tokenizer.load(directory: dir); Issue.record("loaded") } catch let e as TokenizerError {
            #expect(e.description.contains("tokenizer_config.json") && e.description.contains("over the \(TokenizerLimits.maxConfigBytes)-byte limit"), "\(e)")
        }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("tokenizer_config.json"))
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("chat_template.jinja"), withIntermediateDirectories: false)
        do { _ = try Tokenizer.load(directory: dir); Issue.record("loaded") } catch let e as TokenizerError {
            #expect(e.description.contains("chat_template.jinja") && e.description.contains("directory"), "\(e)")
        }
    }
}
