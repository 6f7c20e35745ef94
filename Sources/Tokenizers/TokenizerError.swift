import AssayCommon

/// Everything that can go wrong loading a tokenizer, encoding text from a file or rendering a
/// chat template. Each case names the file and the JSON path (`model.merges[17]`) or the input
/// position at fault, so the CLI can print one useful line and exit 2.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file could not be read.
    case unreadable(file: String, reason: String)
    /// The file is not valid JSON (truncated, stray bytes…); `offset` is a byte offset.
    case invalidJSON(file: String, offset: Int, message: String)
    /// A field is missing or has the wrong type or value.
    case invalidField(file: String, path: String, message: String)
    /// A component `type` this implementation does not know (model, normalizer, pre-tokenizer…).
    case unsupportedComponent(file: String, path: String, kind: String, type: String)
    /// A merge names a token that is not in the vocabulary (or whose concatenation is not).
    case unknownMergeToken(file: String, path: String, token: String)
    /// Two vocabulary entries share one id.
    case duplicateID(file: String, path: String, id: Int, first: String, second: String)
    /// A Split/Replace regex that could backtrack catastrophically, or that uses syntax the
    /// bounded engine does not implement.
    case unsupportedRegex(file: String, path: String, pattern: String, reason: String)
    /// A regex ran past its work bound while matching (only reachable through `encodeChecked`).
    case regexBudgetExceeded(pattern: String, position: Int)
    /// Input text is not valid UTF-8; `offset` is the byte offset of the first bad byte.
    case invalidUTF8(file: String, offset: Int)
    /// The tokenizer has no chat template.
    case noChatTemplate(file: String)
    /// The chat template has a syntax error, a construct the interpreter does not implement, or a
    /// runtime error (integer overflow, division by zero, bad argument…); `line` and `column`
    /// (1-based, in Unicode scalars) are within the template text, which `file` holds.
    case templateError(file: String, line: Int, column: Int, message: String)
    /// The chat template broke one of `ChatTemplate.Limits` (nesting, work, output or value size).
    case templateLimit(file: String, line: Int, column: Int, limit: ChatTemplate.Limit, message: String)
    /// The template called `raise_exception(message)`.
    case templateRaised(file: String, message: String)
    /// A token id (added token, special token, post-processor id) outside the vocabulary or the
    /// model's embedding matrix; `path` is the JSON path or field naming it.
    case tokenIDOutOfRange(file: String, path: String, token: String, id: Int, limit: Int, what: String)
    /// A construct nested deeper than its limit (regex groups, Sequence components).
    case nestingTooDeep(file: String, path: String, what: String, limit: Int, position: Int?)

    public var description: String {
        switch self {
        case let .unreadable(file, reason): return "\(file.terminalSafe): cannot read: \(reason.terminalSafe)"
        case let .invalidJSON(file, offset, message): return "\(file.terminalSafe): invalid JSON: \(message.terminalSafe) at byte \(offset)"
        case let .invalidField(file, path, message): return "\(file.terminalSafe): \(path.terminalSafe): \(message.terminalSafe)"
        case let .unsupportedComponent(file, path, kind, type):
            return "\(file.terminalSafe): \(path.terminalSafe): unsupported \(kind) type '\(type.terminalSafe)'"
        case let .unknownMergeToken(file, path, token):
            return "\(file.terminalSafe): \(path.terminalSafe): merge refers to unknown token '\(token.terminalSafe)'"
        case let .duplicateID(file, path, id, first, second):
            return "\(file.terminalSafe): \(path.terminalSafe): id \(id) is used by both '\(first.terminalSafe)' and "
                + "'\(second.terminalSafe)'"
        case let .unsupportedRegex(file, path, pattern, reason):
            return "\(file.terminalSafe): \(path.terminalSafe): regex '\(pattern.shortened.terminalSafe)' refused: \(reason.terminalSafe)"
        case let .regexBudgetExceeded(pattern, position):
            return "regex '\(pattern.shortened.terminalSafe)' exceeded its work bound at input character \(position)"
        case let .invalidUTF8(file, offset): return "\(file.terminalSafe): invalid UTF-8 at byte \(offset)"
        case let .noChatTemplate(file): return "\(file.terminalSafe): the tokenizer has no chat template"
        case let .templateError(file, line, column, message):
            return "\(file.terminalSafe): chat template line \(line), column \(column): \(message.terminalSafe)"
        case let .templateLimit(file, line, column, limit, message):
            return "\(file.terminalSafe): chat template line \(line), column \(column): \(limit.rawValue) limit: \(message.terminalSafe)"
        case let .templateRaised(file, message): return "\(file.terminalSafe): chat template raised an exception: \(message.terminalSafe)"
        case let .tokenIDOutOfRange(file, path, token, id, limit, what):
            return "\(file.terminalSafe): \(path.terminalSafe): token '\(token.terminalSafe)' has id \(id), outside \(what) (0..<\(limit))"
        case let .nestingTooDeep(file, path, what, limit, position):
            return "\(file.terminalSafe): \(path.terminalSafe): \(what) nested deeper than \(limit)"
                + "\(position.map { " at character \($0)" } ?? "")"
        }
    }
}

extension String {
    /// At most 80 scalars, for quoting hostile patterns in a one-line message.
    var shortened: String {
        let u = unicodeScalars
        return u.count <= 80 ? self : String(String.UnicodeScalarView(u.prefix(80))) + "… (\(u.count) characters)"
    }
}

/// Bounds on tokenizer.json structures whose handling recurses. (AssayCommon's JSON reader
/// already stops at 128 levels; these name the construct and keep the recursion far shallower.)
public enum TokenizerLimits {
    /// `Sequence` normalizers/pre-tokenizers/decoders/post-processors inside one another; real
    /// tokenizers nest one level.
    public static let maxSequenceNesting = 16
    /// Groups and lookaheads nested inside one another in a Split/Replace regex; real patterns
    /// (GPT-2, Llama 3, Qwen2) nest at most 3.
    public static let maxRegexNesting = 64
    /// tokenizer.json size; the largest real ones (Gemma 3's 262k-token vocabulary) are ~35 MB.
    public static let maxTokenizerJSONBytes = 128 << 20
    /// tokenizer_config.json size; real ones, chat templates included, are under 1 MB.
    public static let maxConfigBytes = 16 << 20
    /// Tokens in a vocabulary built from GGUF metadata (the model loader allows the same).
    public static let maxVocabulary = 1 << 22
}

func checkSequenceDepth(_ n: Node, _ depth: Int, _ kind: String) throws(TokenizerError) {
    guard depth < TokenizerLimits.maxSequenceNesting else {
        throw .nestingTooDeep(file: n.file, path: n.path, what: "\(kind) Sequence", limit: TokenizerLimits.maxSequenceNesting,
                              position: nil)
    }
}

/// A JSON value together with its path, so every error can name where it happened.
struct Node {
    let value: JSONValue
    let path: String
    let file: String

    func fail(_ message: String) -> TokenizerError { .invalidField(file: file, path: path, message: message) }

    func child(_ key: String) -> Node? {
        guard let v = value[key], v != .null else { return nil }
        return Node(value: v, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }
    func require(_ key: String) throws(TokenizerError) -> Node {
        guard let c = child(key) else { throw Node(value: value, path: path.isEmpty ? key : "\(path).\(key)", file: file).fail("missing") }
        return c
    }
    func items() throws(TokenizerError) -> [Node] {
        guard let a = value.array else { throw fail("expected an array, found \(value.typeName)") }
        return a.enumerated().map { Node(value: $1, path: "\(path)[\($0)]", file: file) }
    }
    func members() throws(TokenizerError) -> [(String, Node)] {
        guard let m = value.members else { throw fail("expected an object, found \(value.typeName)") }
        return m.map { ($0.key, Node(value: $0.value, path: "\(path).\($0.key)", file: file)) }
    }
    func string() throws(TokenizerError) -> String {
        guard let s = value.string else { throw fail("expected a string, found \(value.typeName)") }
        return s
    }
    func int() throws(TokenizerError) -> Int {
        guard let i = value.exactInt else { throw fail("expected an integer, found \(value.typeName)") }
        return i
    }
    func bool() throws(TokenizerError) -> Bool {
        guard let b = value.bool else { throw fail("expected a boolean, found \(value.typeName)") }
        return b
    }
    func string(_ key: String, default d: String? = nil) throws(TokenizerError) -> String {
        if let c = child(key) { return try c.string() }
        if let d { return d }
        throw try require(key).fail("missing")
    }
    func optionalString(_ key: String) throws(TokenizerError) -> String? { try child(key)?.string() }
    func bool(_ key: String, default d: Bool) throws(TokenizerError) -> Bool { try child(key)?.bool() ?? d }
    func int(_ key: String, default d: Int) throws(TokenizerError) -> Int { try child(key)?.int() ?? d }
    var type: String? { value["type"]?.string }
}
