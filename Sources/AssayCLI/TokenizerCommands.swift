import ArgumentParser
import Foundation
import AssayCommon
import Tokenizers

/// An invalid-input error raised by the CLI itself (exit 2).
struct InputError: Error, CustomStringConvertible {
    let description: String
}

/// Escapes control characters but keeps newlines and tabs, for printing rendered prompts.
func printable(_ s: String) -> String {
    s.split(separator: "\n", omittingEmptySubsequences: false)
        .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map { String($0).terminalSafe }.joined(separator: "\t") }
        .joined(separator: "\n")
}

func jsonText(_ value: some Encodable) throws -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try enc.encode(value), as: UTF8.self)
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encode text with a model directory's tokenizer.json and print the ids and tokens.")

    @Argument(help: "Model directory holding tokenizer.json (and tokenizer_config.json).")
    var modelDir: String

    @Argument(help: "Text to encode (or use --file).")
    var text: String?

    @Option(help: "Encode the contents of this file (must be valid UTF-8).")
    var file: String?

    @Flag(help: "Print JSON: {\"ids\", \"tokens\", \"count\"}.")
    var json = false

    @Flag(name: .customLong("no-special-tokens"), help: "Do not add the post-processor's special tokens (BOS, [CLS]…).")
    var noSpecialTokens = false

    func validate() throws {
        guard (text == nil) != (file == nil) else { throw ValidationError("give either TEXT or --file PATH") }
    }

    struct Output: Encodable { let ids: [Int]; let tokens: [String]; let count: Int }

    func run() throws {
        let tok = try Tokenizer.load(model: URL(fileURLWithPath: modelDir))
        let ids: [Int]
        if let file {
            // SafeFile: a FIFO or device passed as --file is refused instead of blocking.
            let bytes = try SafeFile.read(URL(fileURLWithPath: file))
            ids = try tok.encode(fileBytes: bytes, file: file, addSpecialTokens: !noSpecialTokens)
        } else {
            ids = try tok.encodeChecked(text!, addSpecialTokens: !noSpecialTokens)
        }
        let tokens = ids.map { tok.tokenString($0) ?? "" }
        if json {
            emit(try jsonText(Output(ids: ids, tokens: tokens, count: ids.count)))
            return
        }
        var out = "\(ids.count) tokens\n"
        for (id, t) in zip(ids, tokens) { out += "\(id)\t\(t.debugDescription.terminalSafe)\n" }
        emit(out)
    }
}

struct Detokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Decode token ids (comma or space separated) back to text.")

    @Argument(help: "Model directory holding tokenizer.json.")
    var modelDir: String

    @Argument(parsing: .remaining, help: "Token ids, e.g. \"1,2,3\" or 1 2 3.")
    var ids: [String] = []

    @Flag(help: "Leave out special tokens.")
    var skipSpecialTokens = false

    func run() throws {
        var parsed: [Int] = []
        for part in ids.joined(separator: " ").split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\n" || $0 == "\t" }) {
            guard let v = Int(part), v >= 0 else { throw ValidationError("'\(String(part).terminalSafe)' is not a token id") }
            parsed.append(v)
        }
        guard !parsed.isEmpty else { throw ValidationError("give at least one token id") }
        let tok = try Tokenizer.load(model: URL(fileURLWithPath: modelDir))
        for id in parsed where tok.tokenString(id) == nil {
            throw InputError(description: "token id \(id) is not in the vocabulary of \(modelDir.terminalSafe) "
                                 + "(\(tok.vocabularySize) tokens)")
        }
        emit(printable(tok.decode(parsed, skipSpecialTokens: skipSpecialTokens)))
    }
}

struct ChatTemplateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-template",
        abstract: "Render the model's chat template for one user turn (as transformers' apply_chat_template).")

    @Argument(help: "Model directory (tokenizer_config.json chat_template or chat_template.jinja).")
    var modelDir: String

    @Option(help: "The user message.")
    var user: String

    @Option(help: "An optional system message.")
    var system: String?

    @Flag(name: .customLong("no-generation-prompt"), help: "Do not append the assistant turn header.")
    var noGenerationPrompt = false

    @Flag(help: "Also print the token ids of the rendered prompt (encoded without extra special tokens).")
    var ids = false

    func run() throws {
        let tok = try Tokenizer.load(model: URL(fileURLWithPath: modelDir))
        var messages: [ChatMessage] = []
        if let system { messages.append(ChatMessage(role: "system", content: system)) }
        messages.append(ChatMessage(role: "user", content: user))
        let text = try tok.applyChatTemplate(messages, addGenerationPrompt: !noGenerationPrompt)
        if ids {
            emit(printable(text))
            emit(tok.encode(text, addSpecialTokens: false).map(String.init).joined(separator: " "))
        } else {
            FileHandle.standardOutput.write(Data(printable(text).utf8))
        }
    }
}
