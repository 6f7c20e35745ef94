import Foundation

/// A Jinja2-subset interpreter that runs Hugging Face chat templates as written, with the
/// environment transformers uses (`trim_blocks`, `lstrip_blocks`, loop controls, default
/// Undefined, `raise_exception`, `tojson`).
///
/// Supported: `{{ }}`, `{% if/elif/else/endif %}`, `{% for x in … [if …] %}…{% else %}…{% endfor %}`
/// (with `loop.*`, tuple targets), `{% set x = … %}`, `{% set ns.attr = … %}`, `namespace()`,
/// `{% break/continue %}`, `{% generation %}`, comments, `-` whitespace control; expressions with
/// literals, lists, dicts, `+ - * / // % ~`, comparisons, `and/or/not`, `in`, `is [not] test`,
/// conditional expressions, slicing, attribute/item access, the usual string methods and filters.
/// Anything else (macros, `include`, unknown filters…) is a `TokenizerError.templateError` naming it.
///
/// The template comes from the model directory, so it is hostile input: parsing and rendering are
/// bounded by `Limits` (nesting, work, sizes), integer arithmetic is checked, and every breach is
/// a `TokenizerError` naming the file, the line and column, and the construct.
public struct ChatTemplate: Sendable {
    /// Bounds on what a template can make Assay do. Real templates (the parity set in
    /// Tests/Fixtures/tokenizers/chat_templates.json, the largest tool-use templates on the Hub at
    /// ~20 KB) stay orders of magnitude below every one of them.
    public enum Limits {
        /// Template source size (UTF-8 bytes); the largest real templates are ~20 KB.
        public static let maxSourceBytes = 1 << 20
        /// Expression nesting (parentheses, operators, subscripts, filter chains, unary `-`/`not`):
        /// both the parser's recursion and the depth of the expression tree.
        public static let maxExpressionDepth = 64
        /// Nested `{% if %}` / `{% for %}` / `{% generation %}` blocks.
        public static let maxBlockDepth = 64
        /// List/dict nesting of any value built while rendering (messages are 2–4 deep).
        public static let maxValueDepth = 64
        /// Recursion of the evaluator (blocks + expressions); a backstop to the two above.
        public static let maxEvalDepth = 256
        /// Bytes one render may output.
        public static let maxOutputBytes = 16 << 20
        /// UTF-8 bytes of any one string an operation produces (`*`, `~`, `+`, join, replace, tojson…).
        public static let maxStringBytes = 16 << 20
        /// Items of any one list or dict an operation produces (`range`, `+`, `list`…).
        public static let maxItems = 1 << 20
        /// Work units per render: one per expression evaluated, loop iteration, call, filter and
        /// list or dict item an operation makes, plus one per `bytesPerWorkUnit` bytes it reads or
        /// writes. Since every allocation is charged, the budget also bounds memory (≈ 200 MB). A real
        /// template over a long conversation uses a few thousand; the budget is a few seconds of
        /// a debug build.
        public static let maxWorkUnits = 2_000_000
        public static let bytesPerWorkUnit = 64
        /// Largest `tojson(indent=…)`.
        public static let maxIndent = 16
        /// Longest `raise_exception` message kept (scalars); the rest is cut off.
        public static let maxRaisedMessage = 1_000
    }

    /// Which bound a template broke (see `Limits`).
    public enum Limit: String, Sendable, Equatable {
        case sourceSize = "source size", expressionDepth = "expression nesting", blockDepth = "block nesting"
        case valueDepth = "value nesting", evalDepth = "evaluation depth", outputSize = "output size"
        case valueSize = "value size", work = "work budget"
    }

    let body: [JNode]
    public let source: String
    /// The file the template came from (`…/chat_template.jinja` or `…/tokenizer_config.json`), for errors.
    public let file: String

    public init(_ source: String, file: String = "chat template") throws(TokenizerError) {
        self.source = source
        self.file = file
        guard source.utf8.count <= Limits.maxSourceBytes else {
            throw .templateLimit(file: file, line: 1, column: 1, limit: .sourceSize,
                                 message: "template is \(source.utf8.count) bytes, over the \(Limits.maxSourceBytes)-byte limit")
        }
        do {
            var lexer = JLexer(source)
            let toks = try lexer.run()
            var p = JParser(toks)
            body = try p.parseBody(until: [])
        } catch { throw Self.located(error, source: source, file: file) }
    }

    /// Renders as transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt:)`.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String?, eosToken: String?,
                       extra: [String: String] = [:]) throws(TokenizerError) -> String {
        var vars: [String: JValue] = [
            "messages": .list(messages.map { .dict([("role", .string($0.role)), ("content", .string($0.content))]) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "tools": .none, "documents": .none,
        ]
        if let bosToken { vars["bos_token"] = .string(bosToken) }
        if let eosToken { vars["eos_token"] = .string(eosToken) }
        for (k, v) in extra { vars[k] = .string(v) }
        let ctx = JEvaluator(scopes: [vars])
        do { try ctx.exec(body) } catch {
            switch error {
            case let .fault(f): throw Self.located(f, source: source, file: file)
            case let .raised(m): throw .templateRaised(file: file, message: m)
            case .brk, .cont: break  // `{% break %}` outside a loop ends the render, as Jinja's would not compile
            }
        }
        return ctx.out
    }

    static func located(_ f: TemplateFault, source: String, file: String) -> TokenizerError {
        let (line, column) = lineColumn(source, f.position)
        if let limit = f.limit { return .templateLimit(file: file, line: line, column: column, limit: limit, message: f.message) }
        return .templateError(file: file, line: line, column: column, message: f.message)
    }

    /// 1-based line and column (in scalars) of a scalar offset.
    static func lineColumn(_ source: String, _ offset: Int) -> (Int, Int) {
        var line = 1, col = 1, k = 0
        for c in source.unicodeScalars {
            if k >= offset { break }
            if c == "\n" { line += 1; col = 1 } else { col += 1 }
            k += 1
        }
        return (line, col)
    }
}

/// A template error before it is located: a scalar offset into the source and, for a limit
/// breach, which limit.
struct TemplateFault: Error {
    let position: Int
    let limit: ChatTemplate.Limit?
    let message: String
    init(_ position: Int, _ message: String, limit: ChatTemplate.Limit? = nil) {
        self.position = position; self.message = message; self.limit = limit
    }
}

/// What can unwind the evaluator: an error, `raise_exception`, or a loop control.
enum JThrow: Error { case fault(TemplateFault), raised(String), brk, cont }

typealias L = ChatTemplate.Limits
