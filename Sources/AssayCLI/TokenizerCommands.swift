import ArgumentParser
import Foundation
import AssayCommon
import Tokenizers

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Token ids and tokens of a text, as Hugging Face tokenizers gives them.")
    @Argument(help: "Model directory with tokenizer.json.") var model: String
    @Argument(help: "Text to tokenize (or --file).") var text: String?
    @Option(help: "Read the text from a file (must be UTF-8).") var file: String?
    @Flag(help: "Do not add the post-processor's special tokens.") var noSpecialTokens = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (text == nil) != (file == nil) else { throw ValidationError("give exactly one of TEXT and --file") }
    }

    func run() throws {
        let t = try Tokenizer.load(directory: URL(fileURLWithPath: model))
        var input = text ?? ""
        if let file {
            let data: [UInt8]
            do { data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file))) } catch {
                throw TokenizerError.io(file: file, reason: "cannot read")
            }
            guard let s = String(validating: data, as: UTF8.self) else {
                var it = data.makeIterator(), dec = UTF8(), offset = 0
                loop: while true {
                    switch dec.decode(&it) {
                    case let .scalarValue(v): offset += UTF8.width(v)
                    case .emptyInput, .error: break loop
                    }
                }
                throw TokenizerError.invalid(file: file, path: "byte \(offset)", reason: "invalid UTF-8")
            }
            input = s
        }
        let ids = t.encode(input, addSpecialTokens: !noSpecialTokens)
        if json {
            let tokens = ids.map { t.tokenString($0) ?? "" }
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            struct Out: Encodable { let ids: [Int]; let tokens: [String] }
            emit(String(decoding: try enc.encode(Out(ids: ids, tokens: tokens)), as: UTF8.self))
        } else {
            emit(ids.map(String.init).joined(separator: " "))
            emit(ids.map { (t.tokenString($0) ?? "?").terminalSafe }.joined(separator: " | "))
        }
    }
}

struct Detokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Text of token ids.")
    @Argument(help: "Model directory with tokenizer.json.") var model: String
    @Argument(help: "Token ids, comma or space separated.") var ids: String
    @Flag(help: "Drop special tokens.") var skipSpecialTokens = false

    func run() throws {
        let t = try Tokenizer.load(directory: URL(fileURLWithPath: model))
        var out: [Int] = []
        for p in ids.split(whereSeparator: { $0 == "," || $0 == " " }) {
            guard let i = Int(p), i >= 0, t.tokenString(i) != nil else { throw ValidationError("'\(String(p).terminalSafe)' is not a token id of this tokenizer") }
            out.append(i)
        }
        emit(t.decode(out, skipSpecialTokens: skipSpecialTokens))
    }
}

struct ChatTemplateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "chat-template", abstract: "Render the model's chat template for a one-turn conversation.")
    @Argument(help: "Model directory.") var model: String
    @Option(help: "User message.") var user: String
    @Option(help: "System message.") var system: String?
    @Flag(help: "Leave out the generation prompt.") var noGenerationPrompt = false

    func run() throws {
        let t = try Tokenizer.load(directory: URL(fileURLWithPath: model))
        var m: [ChatMessage] = []
        if let system { m.append(ChatMessage(role: "system", content: system)) }
        m.append(ChatMessage(role: "user", content: user))
        FileHandle.standardOutput.write(Data(try t.applyChatTemplate(m, addGenerationPrompt: !noGenerationPrompt).utf8))
    }
}
