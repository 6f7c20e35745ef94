import Foundation
import Testing
@testable import Tokenizers

struct ChatGoldens: Decodable {
    struct Message: Decodable { let role: String; let content: String }
    struct Case: Decodable {
        let template: String
        let messages: [Message]
        let add_generation_prompt: Bool
        let output: String?
        let error: String?
    }
    let templates: [String: String]
    let special_tokens: [String: [String?]]
    let cases: [Case]
}

@Suite struct ChatTemplates {
    static let goldens = try! JSONDecoder().decode(ChatGoldens.self,
        from: Data(contentsOf: tokenizerFixtures.appendingPathComponent("chat_templates.json")))

    /// Every family's template renders exactly as transformers' apply_chat_template(tokenize=False),
    /// and raises where the template raises.
    @Test func matchesTransformers() throws {
        let g = Self.goldens
        #expect(g.cases.count >= 150)
        #expect(Set(g.cases.map(\.template)).isSuperset(of: ["chatml-smollm2", "qwen2", "llama2", "llama3", "mistral-v0.1", "mistral-v0.3", "zephyr", "gemma"]))
        for c in g.cases {
            let t = try ChatTemplate(g.templates[c.template]!)
            let sp = g.special_tokens[c.template]!
            let msgs = c.messages.map { ChatMessage(role: $0.role, content: $0.content) }
            let label = "\(c.template) \(c.messages.map(\.role)) gen=\(c.add_generation_prompt)"
            let result = Result { () throws(TokenizerError) -> String in
                try t.render(messages: msgs, addGenerationPrompt: c.add_generation_prompt, bosToken: sp[0], eosToken: sp[1])
            }
            switch result {
            case let .success(out):
                #expect(c.error == nil, "\(label): expected error \(c.error ?? "")")
                #expect(out == c.output, "\(label)\n got \(out.debugDescription)\nwant \((c.output ?? "").debugDescription)")
            case let .failure(e):
                #expect(e == .templateRaised(file: "chat template", message: c.error ?? ""), "\(label): \(e)")
            }
        }
    }

    @Test func tokenizerUsesItsOwnTemplate() throws {
        let tok = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("smollm2"))
        #expect(tok.hasChatTemplate)
        let out = try tok.applyChatTemplate([ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
        #expect(out == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        let llama = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("llama-trained"))
        #expect(try llama.applyChatTemplate([ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "U")],
                                            addGenerationPrompt: false) == "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]")
        let minilm = try Tokenizer.load(directory: tokenizerFixtures.appendingPathComponent("minilm"))
        #expect(!minilm.hasChatTemplate)
        #expect(throws: TokenizerError.self) { try minilm.applyChatTemplate([], addGenerationPrompt: true) }
    }

    @Test func jinjaFeatures() throws {
        func r(_ s: String, _ msgs: [ChatMessage] = [ChatMessage(role: "user", content: "hi")]) throws -> String {
            try ChatTemplate(s).render(messages: msgs, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
        }
        #expect(try r("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}") == "1")
        #expect(try r("{{ messages[0].content | upper }}-{{ 'a,b' .split(',') | join('+') }}") == "HI-a+b")
        #expect(try r("{{ 'x' if add_generation_prompt else 'y' }}{{ undefined_var }}{{ foo is defined }}") == "xFalse")
        #expect(try r("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}") == "012")
        #expect(try r("{{ {'a': [1, 'b']} | tojson }}") == "{\"a\": [1, \"b\"]}")
        #expect(try r("  {%- if true %}\n  yes\n{% endif %}") == "  yes\n")
        #expect(try r("{{ messages[-1]['role'] ~ 1 }}{{ (messages|length) * 2 }}") == "user12")
    }

    /// Unsupported constructs are typed errors naming the construct.
    @Test func unsupportedConstructs() throws {
        for (src, needle) in [("{% macro f() %}x{% endmacro %}", "macro"), ("{{ x | wordwrap }}", "wordwrap"),
                              ("{% include 'a' %}", "include"), ("{{ 'a' ", "unterminated"), ("{% if x %}", "endif"),
                              ("{{ strftime_now('%Y') }}", "strftime_now")] {
            do {
                _ = try ChatTemplate(src).render(messages: [], addGenerationPrompt: false, bosToken: nil, eosToken: nil)
                Issue.record("\(src) rendered")
            } catch {
                #expect(error.description.contains(needle), "\(src): \(error)")
            }
        }
    }
}
