import Foundation
import Testing
import AssayCommon
@testable import Tokenizers

/// A minimal tokenizer.json around a given pipeline, for component tests.
func miniTokenizer(vocab: [String], merges: [[String]] = [], normalizer: String = "null", preTokenizer: String = "null",
                   decoder: String = "null", model extra: String = "", added: String = "[]") throws -> Tokenizer {
    let v = vocab.enumerated().map { "\"\(jsonEscape($1))\": \($0)" }.joined(separator: ", ")
    let m = merges.map { "[\"\(jsonEscape($0[0]))\", \"\(jsonEscape($0[1]))\"]" }.joined(separator: ", ")
    return try Tokenizer.parse(tokenizerJSON: """
    {"version": "1.0", "added_tokens": \(added), "normalizer": \(normalizer), "pre_tokenizer": \(preTokenizer),
     "post_processor": null, "decoder": \(decoder),
     "model": {"type": "BPE", "vocab": {\(v)}, "merges": [\(m)] \(extra)}}
    """)
}
func jsonEscape(_ s: String) -> String { s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") }

@Suite struct Components {
    let letters = (Array("abcdefghijklmnopqrstuvwxyz0123456789 ▁.,!?'-") ).map { String($0) }

    @Test func normalizers() throws {
        func n(_ json: String, _ s: String) throws -> String {
            let node = Node(value: try JSONParser.parse(json), path: "normalizer", file: "t")
            return try Normalizer.load(node).normalize(s)
        }
        #expect(try n(#"{"type": "NFC"}"#, "e\u{301}") == "\u{e9}")
        #expect(try n(#"{"type": "NFD"}"#, "\u{e9}").unicodeScalars.count == 2)
        #expect(try n(#"{"type": "NFKC"}"#, "ﬁ²") == "fi2")
        #expect(try n(#"{"type": "Lowercase"}"#, "ÀBΣ") == "àbσ")
        #expect(try n(#"{"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]}"#, "Ångström") == "Angstrom")
        #expect(try n(#"{"type": "Strip", "strip_left": true, "strip_right": false}"#, "  a  ") == "a  ")
        #expect(try n(#"{"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}"#, "a    b  c") == "a b c")
        #expect(try n(#"{"type": "Prepend", "prepend": "▁"}"#, "x") == "▁x")
        #expect(try n(#"{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": false, "lowercase": false}"#, "Á\u{0}b\t你") == "Áb  你 ")
    }

    @Test func preTokenizers() throws {
        func p(_ json: String, _ s: String) throws -> [String] {
            let node = Node(value: try JSONParser.parse(json), path: "pre_tokenizer", file: "t")
            return try PreTokenizer.load(node).apply([Piece(text: s, atOrigin: true)]).map(\.text)
        }
        #expect(try p(#"{"type": "Whitespace"}"#, "Hey, you-there  42!") == ["Hey", ",", "you", "-", "there", "42", "!"])
        #expect(try p(#"{"type": "WhitespaceSplit"}"#, " a  b\tc ") == ["a", "b", "c"])
        #expect(try p(#"{"type": "Digits", "individual_digits": true}"#, "a123b") == ["a", "1", "2", "3", "b"])
        #expect(try p(#"{"type": "Digits", "individual_digits": false}"#, "a123b") == ["a", "123", "b"])
        #expect(try p(#"{"type": "Punctuation", "behavior": "Contiguous"}"#, "a!!b?") == ["a", "!!", "b", "?"])
        #expect(try p(#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}"#, "a b  c") == ["▁a", "▁b", "▁", "▁c"])
        #expect(try p(#"{"type": "Split", "pattern": {"String": "-"}, "behavior": "MergedWithPrevious", "invert": false}"#, "a-b--c") == ["a-", "b-", "-", "c"])
        #expect(try p(#"{"type": "Split", "pattern": {"String": "-"}, "behavior": "MergedWithNext", "invert": false}"#, "a-b--c") == ["a", "-b", "-", "-c"])
        #expect(try p(#"{"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "Removed", "invert": false}"#, "a12b3") == ["a", "b"])
        #expect(try p(#"{"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}"#, "Hi  there") == ["ĠHi", "Ġ", "Ġthere"])
    }

    @Test func bpeOptions() throws {
        // byte_fallback + unk + fuse_unk, ignore_merges, continuing_subword_prefix.
        let bytes = (0..<256).map { String(format: "<0x%02X>", $0) }
        let t = try miniTokenizer(vocab: ["<unk>"] + letters + bytes + ["ab", "abc"], merges: [["a", "b"], ["ab", "c"]],
                                  model: #", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true"#)
        #expect(t.encode("abc") == [t.tokenID("abc")!])
        #expect(t.encode("é").map { t.tokenString($0)! } == ["<0xC3>", "<0xA9>"])
        let u = try miniTokenizer(vocab: ["<unk>"] + letters, model: #", "unk_token": "<unk>", "fuse_unk": true"#)
        #expect(u.encode("aééb") == [u.tokenID("a")!, 0, u.tokenID("b")!])
        let nofuse = try miniTokenizer(vocab: ["<unk>"] + letters, model: #", "unk_token": "<unk>", "fuse_unk": false"#)
        #expect(nofuse.encode("éé") == [0, 0])
        let ig = try miniTokenizer(vocab: letters + ["xyz"], model: #", "ignore_merges": true"#)
        #expect(ig.encode("xyz") == [ig.tokenID("xyz")!])
        let pre = try miniTokenizer(vocab: ["a", "##b", "ab"], merges: [["a", "##b"]], model: ###", "continuing_subword_prefix": "##""###)
        #expect(pre.encode("ab") == [2])
    }

    @Test func addedTokenFlags() throws {
        // New added tokens take the ids after the vocabulary, as Hugging Face tokenizers assigns them.
        let (l, r, ab, up) = (letters.count, letters.count + 1, letters.count + 2, letters.count + 3)
        let added = """
        [{"id": \(l), "content": "<L>", "lstrip": true, "rstrip": false, "single_word": false, "normalized": false, "special": true},
         {"id": \(r), "content": "<R>", "lstrip": false, "rstrip": true, "single_word": false, "normalized": false, "special": true},
         {"id": \(ab), "content": "ab", "lstrip": false, "rstrip": false, "single_word": true, "normalized": false, "special": false},
         {"id": \(up), "content": "up", "lstrip": false, "rstrip": false, "single_word": false, "normalized": true, "special": false}]
        """
        let t = try miniTokenizer(vocab: letters, normalizer: #"{"type": "Lowercase"}"#, decoder: #"{"type": "Fuse"}"#, added: added)
        let sp = t.tokenID(" ")!
        #expect(t.encode("x  <L>y") == [t.tokenID("x")!, l, t.tokenID("y")!])
        #expect(t.encode("x<R>  y") == [t.tokenID("x")!, r, t.tokenID("y")!])
        #expect(t.encode("ab cab") == [ab, sp, t.tokenID("c")!, t.tokenID("a")!, t.tokenID("b")!])
        #expect(t.encode("UP") == [up])
        #expect(t.decode([l, ab, r], skipSpecialTokens: true) == "ab")
        #expect(t.specialTokenIDs == [l, r])
        #expect(t.vocabularySize == letters.count + 4)
    }

    @Test func decoders() throws {
        func d(_ json: String, _ toks: [String]) throws -> String {
            let node = Node(value: try JSONParser.parse(json), path: "decoder", file: "t")
            return try Decoder.load(node).decodeChain(toks).joined()
        }
        #expect(try d(#"{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}"#, ["▁Hey", "▁you"]) == "Hey you")
        #expect(try d(###"{"type": "WordPiece", "prefix": "##", "cleanup": true}"###, ["do", "##n", "'", "t", "."]) == "don ' t.")
        #expect(try d(#"{"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}"#, ["<0xE4>", "<0xBD>", "<0xA0>", "a", "<0xFF>"]) == "你a\u{FFFD}")
        #expect(try d(#"{"type": "Strip", "content": "x", "start": 2, "stop": 1}"#, ["xxxax"]) == "xa")
        #expect(try d(#"{"type": "BPEDecoder", "suffix": "</w>"}"#, ["a</w>", "b</w>"]) == "a b")
    }

    /// The bounded regex engine: semantics on the Llama-3 pattern pieces and refusal of
    /// catastrophic patterns.
    @Test func boundedRegex() throws {
        func m(_ p: String, _ s: String) throws -> [String] {
            let u = s.unicodeScalars.map(\.value)
            return try BoundedRegex(p).matches(in: u).map { String(scalars: u[$0].map { Unicode.Scalar($0)! }) }
        }
        #expect(try m(#"(?i:'s|'t)|\p{L}+|\p{N}{1,3}|\s+(?!\S)|\s+"#, "IT'S 12345  x") == ["IT", "'S", " ", "123", "45", " ", " ", "x"])
        #expect(try m("a*?b|[^a-c]", "aab d") == ["aab", " ", "d"])
        #expect(try m("^x|y$", "xxy y") == ["x", "y"])
        for bad in ["(a+)+$", "(a*)*b", "(a|a)+", "(?:\\s*x?)*", "(a|ab)*c", "(?<=a)b", "\\bfoo"] {
            #expect(throws: BoundedRegex.Refusal.self, "\(bad)") { _ = try BoundedRegex(bad) }
        }
        // Polynomial patterns that pass the static check still end within their step budget.
        let r = try BoundedRegex("\\s*\\s*\\s*\\s*x")
        let long = Array(repeating: UInt32(32), count: 3000)
        #expect(throws: BoundedRegex.BudgetExceeded.self) { _ = try r.matches(in: long) }
    }

    @Test func configTokensAndVocabulary() throws {
        let tok = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("smollm2"))
        #expect(tok.vocabularySize == 49152)
        #expect(tok.bosTokenID == 1 && tok.eosTokenIDs == [2] && tok.padTokenID == 2)
        #expect(tok.tokenID("<|im_start|>") == 1 && tok.tokenString(2) == "<|im_end|>")
        #expect(tok.specialTokenIDs.contains(0))
        let bert = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("minilm"))
        #expect(bert.vocabularySize == 30522 && bert.padTokenID == 0)
        #expect(bert.encode("Hello, world!") == [101, 7592, 1010, 2088, 999, 102])
    }

    /// Shared across threads: the same results from many concurrent encoders.
    @Test func concurrentEncode() async throws {
        let tok = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("smollm2"))
        let cases = Array(try goldens("smollm2").prefix(400))
        try await withThrowingTaskGroup(of: Int.self) { group in
            for k in 0..<4 {
                group.addTask { cases.enumerated().filter { $0.offset % 4 == k }.filter { tok.encode($0.element.t) != $0.element.a }.count }
            }
            for try await bad in group { #expect(bad == 0) }
        }
    }
}

@Suite struct BadInput {
    /// Every malformed tokenizer throws a typed error whose text names the file and JSON path.
    @Test func malformedTokenizersThrowTypedErrors() throws {
        let bad = tokenizerFixtures.appendingPathComponent("bad")
        let cases = try JSONDecoder().decode([String: String].self, from: Data(contentsOf: bad.appendingPathComponent("cases.json")))
        for (name, message) in cases {
            do {
                _ = try Tokenizer.load(directory: bad.appendingPathComponent(name))
                Issue.record("\(name) loaded")
            } catch let e as TokenizerError {
                #expect(e.description.contains(message), "\(name): \(e)")
            }
        }
        let bytes = [UInt8](try Data(contentsOf: bad.appendingPathComponent("invalid-utf8.txt")))
        #expect(throws: TokenizerError.invalidUTF8(file: "f.txt", offset: 9)) { _ = try Tokenizer.validateUTF8(bytes, file: "f.txt") }
        #expect(throws: TokenizerError.invalidUTF8(file: "f", offset: 1)) { _ = try Tokenizer.validateUTF8([0x61, 0xC3], file: "f") }
    }
}
