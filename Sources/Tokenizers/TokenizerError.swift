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
    /// The chat template has a syntax error or a construct the interpreter does not implement.
    case templateError(position: Int, message: String)
    /// The template called `raise_exception(message)`.
    case templateRaised(message: String)

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
            return "\(file.terminalSafe): \(path.terminalSafe): id \(id) is used by both '\(first.terminalSafe)' and '\(second.terminalSafe)'"
        case let .unsupportedRegex(file, path, pattern, reason):
            return "\(file.terminalSafe): \(path.terminalSafe): regex '\(pattern.terminalSafe)' refused: \(reason.terminalSafe)"
        case let .regexBudgetExceeded(pattern, position):
            return "regex '\(pattern.terminalSafe)' exceeded its work bound at input character \(position)"
        case let .invalidUTF8(file, offset): return "\(file.terminalSafe): invalid UTF-8 at byte \(offset)"
        case let .noChatTemplate(file): return "\(file.terminalSafe): the tokenizer has no chat template"
        case let .templateError(position, message): return "chat template: \(message.terminalSafe) at character \(position)"
        case let .templateRaised(message): return "chat template raised an exception: \(message.terminalSafe)"
        }
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
