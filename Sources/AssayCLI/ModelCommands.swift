import ArgumentParser
import Foundation
import AssayCommon
import Models
import TensorCore
import Tokenizers

/// Options shared by commands that load one model.
struct ModelOptions: ParsableArguments {
    @Argument(help: "Model directory (config.json + safetensors).")
    var model: String

    @Option(help: "PEFT LoRA adapter directory merged into the model at load.")
    var adapter: String?

    @Option(help: "Token ids, comma or space separated (instead of --prompt).")
    var ids: String?

    @Option(help: "OpenBLAS threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
    }

    func load() throws -> any CausalLanguageModel {
        Parallel.configure(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        return try ModelLoader.load(URL(fileURLWithPath: model), adapter: adapter.map { URL(fileURLWithPath: $0) })
    }

    func parseIDs() throws -> [Int]? {
        guard let ids else { return nil }
        let parts = ids.split(whereSeparator: { $0 == "," || $0 == " " })
        var out: [Int] = []
        for p in parts {
            guard let i = Int(p), i >= 0 else { throw ValidationError("--ids: '\(String(p).terminalSafe)' is not a token id") }
            out.append(i)
        }
        guard !out.isEmpty else { throw ValidationError("--ids is empty") }
        return out
    }
}

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print, for every position, the top-K next tokens with their log-probabilities and the log-sum-exp."
    )

    @OptionGroup var options: ModelOptions

    @Option(help: "Text, tokenized as transformers' tokenizer(text) does.")
    var prompt: String?

    @Option(help: "How many tokens per position.")
    var top = 5

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard (prompt == nil) != (options.ids == nil) else { throw ValidationError("give exactly one of --prompt and --ids") }
        guard top >= 1 && top <= 1000 else { throw ValidationError("--top must be between 1 and 1000") }
    }

    struct Position: Codable {
        var position: Int
        var token: Int
        var logsumexp: Float
        var top: [Entry]
    }
    struct Entry: Codable { var id: Int; var logprob: Float }

    func run() throws {
        // ASSAY_PROFILE=1: the forward against what the command adds (top K, formatting).
        let prof = Profiler.fromEnvironment()
        let model = try prof.measure("logits.load") { try options.load() }
        model.tap = prof.tap
        let ids = try promptIDs(prompt: prompt, options: options, model: model)
        let logits = try prof.measure("logits.forward") {
            try model.forward([SequenceInput(tokens: ids, logitPositions: Array(ids.indices))])[0]
        }
        let rows = prof.measure("logits.top_k") {
            zip(ids.indices, logits.topLogProbabilities(top)).map { t, r in
                Position(position: t, token: ids[t], logsumexp: r.logsumexp, top: r.top.map { Entry(id: $0.id, logprob: $0.logprob) })
            }
        }
        defer { if prof.enabled { printError("profile (ASSAY_PROFILE=1):\n" + prof.report()) } }
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { prof.add("logits.print", since: t0) }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try enc.encode(rows), as: UTF8.self))
        } else {
            var out = ""
            for r in rows {
                out += String(format: "%4d  token %6d  lse %9.4f  ", r.position, r.token, r.logsumexp)
                out += r.top.map { String(format: "%d:%.4f", $0.id, $0.logprob) }.joined(separator: "  ") + "\n"
            }
            emit(out)
        }
    }
}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Greedy generation.")

    @OptionGroup var options: ModelOptions

    @Option(help: "Text, tokenized as transformers' tokenizer(text) does.")
    var prompt: String?

    @Option(help: "Maximum new tokens.")
    var maxTokens = 64

    @Flag(help: "Wrap --prompt in the model's chat template as a user message (with the generation prompt).")
    var chat = false

    @Flag(help: "Print token ids instead of text.")
    var printIds = false

    func validate() throws {
        guard (prompt == nil) != (options.ids == nil) else { throw ValidationError("give exactly one of --prompt and --ids") }
        if chat && prompt == nil { throw ValidationError("--chat needs --prompt") }
        guard maxTokens >= 1 && maxTokens <= 100_000 else { throw ValidationError("--max-tokens must be between 1 and 100000") }
    }

    func run() throws {
        let model = try options.load()
        let ids = try promptIDs(prompt: prompt, options: options, model: model, chat: chat)
        var stops = Set(model.eosTokenIDs)
        let tokenizer = prompt == nil ? nil : try loadCheckedTokenizer(options, model)
        if let t = tokenizer { stops.formUnion(t.eosTokenIDs) }
        let out = try model.greedy(prompts: [ids], maxNewTokens: maxTokens, stopTokens: stops)[0]
        if printIds || tokenizer == nil {
            emit(out.map(String.init).joined(separator: " "))
        } else {
            emit(tokenizer!.decode(out, skipSpecialTokens: true))
        }
    }
}

/// The model directory's tokenizer, every id it names checked against the model's embedding rows.
func loadCheckedTokenizer(_ options: ModelOptions, _ model: any CausalLanguageModel) throws -> Tokenizer {
    let dir = URL(fileURLWithPath: options.model)
    let tokenizer = try Tokenizer.load(model: dir)
    try tokenizer.checkIDs(embeddingRows: model.vocabularySize, configFile: dir.appendingPathComponent("config.json").path)
    return tokenizer
}

/// Token ids from --ids (checked against the vocabulary) or --prompt, tokenized as transformers'
/// tokenizer(text) does, or through the chat template with `chat`.
func promptIDs(prompt: String?, options: ModelOptions, model: any CausalLanguageModel, chat: Bool = false) throws -> [Int] {
    if let ids = try options.parseIDs() {
        if let bad = ids.first(where: { $0 >= model.vocabularySize }) {
            throw ModelError.invalidInput("--ids: token id \(bad) is outside the vocabulary of \(model.vocabularySize)")
        }
        return ids
    }
    let tokenizer = try loadCheckedTokenizer(options, model)
    let ids: [Int]
    if chat {
        let text = try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: prompt ?? "")], addGenerationPrompt: true)
        ids = tokenizer.encode(text, addSpecialTokens: false)
    } else {
        ids = tokenizer.encode(prompt ?? "")
    }
    guard !ids.isEmpty else { throw ModelError.invalidInput("--prompt tokenizes to nothing") }
    if let bad = ids.first(where: { $0 >= model.vocabularySize }) {
        throw ModelError.invalidInput("the tokenizer produced id \(bad), outside the model's vocabulary of \(model.vocabularySize)")
    }
    return ids
}
