import Foundation
import Testing
@testable import Tokenizers

/// Chat templates come from the model directory: each case here crashed, hung or exhausted
/// memory before the interpreter was bounded, and must now be the specific typed error.
@Suite struct HostileTemplates {
    static let user = [ChatMessage(role: "user", content: "hi")]

    func render(_ src: String, file: String = "chat_template.jinja") throws(TokenizerError) -> String {
        try ChatTemplate(src, file: file).render(messages: Self.user, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    }

    /// The error a template gives, or nil when it renders.
    func failure(_ src: String) -> TokenizerError? {
        do { _ = try render(src); return nil } catch { return error }
    }

    func expectError(_ src: String, _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let e = failure(src) else { Issue.record("rendered: \(src.prefix(60))", sourceLocation: sourceLocation); return }
        guard case let .templateError(file, _, _, message) = e else {
            Issue.record("\(src.prefix(60)): expected a template error, got \(e)", sourceLocation: sourceLocation); return
        }
        #expect(file == "chat_template.jinja", sourceLocation: sourceLocation)
        #expect(message.contains(needle), "\(src.prefix(60)): \(message)", sourceLocation: sourceLocation)
    }

    func expectLimit(_ src: String, _ limit: ChatTemplate.Limit, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let e = failure(src) else { Issue.record("rendered: \(src.prefix(60))", sourceLocation: sourceLocation); return }
        guard case let .templateLimit(file, _, _, l, _) = e else {
            Issue.record("\(src.prefix(60)): expected the \(limit) limit, got \(e)", sourceLocation: sourceLocation); return
        }
        #expect(file == "chat_template.jinja", sourceLocation: sourceLocation)
        #expect(l == limit, "\(src.prefix(60)): \(e)", sourceLocation: sourceLocation)
        #expect(e.description.contains("chat_template.jinja"), sourceLocation: sourceLocation)
    }

    @Test func integerArithmeticIsChecked() throws {
        expectError("{{ 9223372036854775807 + 1 }}", "integer overflow")
        expectError("{{ 9223372036854775807 * 2 }}", "integer overflow")
        expectError("{{ -9223372036854775807 - 2 }}", "integer overflow")
        expectError("{{ -(-9223372036854775807 - 1) }}", "integer overflow in unary -")
        expectError("{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow")
        expectError("{{ 1 // 0 }}", "division by zero")
        expectError("{{ 1 % 0 }}", "modulo by zero")
        expectError("{{ 1 / 0 }}", "division by zero")
        expectError("{{ (1.0 / 0.0) | int }}", "division by zero")
        expectError("{{ 99999999999999999999 }}", "does not fit in 64 bits")
        let big = "1" + String(repeating: "0", count: 300) + ".0"
        expectError("{{ (\(big) * \(big)) | int }}", "cannot convert inf")
        expectError("{{ (\(big) * \(big) - \(big) * \(big)) | int }}", "cannot convert nan")
        expectError("{{ '99999999999999999999' | int }}", "does not fit")
        // Python semantics where they fit.
        #expect(try render("{{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ (-9223372036854775807 - 1) % -1 }}") == "-4 2 -2 0")
        #expect(try render("{{ 'a' * -5 }}|{{ 3 * 'ab' }}") == "|ababab")
    }

    @Test func argumentsAreValidated() throws {
        expectError("{{ [1] | tojson(indent=-1) }}", "indent")
        expectError("{{ [1] | tojson(indent=1000000) }}", "indent")
        expectError("{{ [1] | tojson(indent='x') }}", "indent")
        expectError("{{ [1] | tojson(2) }}", "positional")
        expectError("{{ [1] | tojson(sort_keys=true) }}", "sort_keys")
        expectError("{{ 'a' | upper(1) }}", "takes 0")
        expectError("{{ 'a'.split('') }}", "empty separator")
        expectError("{{ 'a'.replace('a') }}", "takes 2 to 3")
        expectError("{{ 'a'.startswith(1) }}", "needs a string")
        expectError("{{ range(1, 2, 0) }}", "step")
        expectError("{{ range('a') }}", "integers")
        expectError("{{ [1] | join(1, 2) }}", "takes 0 to 1")
        #expect(try render("{{ [1, 'a'] | tojson(indent=2) }}") == "[\n  1,\n  \"a\"\n]")
        #expect(try render("{{ 'aXbXc'.replace('X', '-', 1) }}") == "a-bXc")
    }

    @Test func sizesArePrecheckedBeforeAllocating() throws {
        expectLimit("{{ 'a' * 100000000000 }}", .valueSize)
        expectLimit("{{ 'abc' * 9223372036854775807 }}", .valueSize)
        expectLimit("{{ range(1000000000) | length }}", .valueSize)
        expectLimit("{{ range(-9223372036854775807 - 1, 9223372036854775807) | length }}", .valueSize)
        expectLimit("{{ (range(600000) + range(600000)) | length }}", .valueSize)
        expectLimit("{{ ['a' * 10000000, 'a' * 10000000] | join }}", .valueSize)
        expectLimit("{{ ('a' * 10000000) ~ ('a' * 10000000) }}", .valueSize)
        expectLimit("{{ ('a' * 1000000).replace('a', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa') }}", .valueSize)
        expectLimit("{{ ('a' * 4000000).replace('', 'xxxxx') }}", .valueSize)
        expectLimit("{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}", .outputSize)
        #expect(try render("{{ ('ab' * 3).replace('', '-') }}") == "-a-b-a-b-a-b-")
    }

    @Test func parserNestingIsBounded() {
        func rep(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }
        expectLimit("{{ " + rep("(", 100_000) + "1" + rep(")", 100_000) + " }}", .expressionDepth)
        expectLimit("{{ " + rep("-", 100_000) + "1 }}", .expressionDepth)
        expectLimit("{{ " + rep("not ", 100_000) + "1 }}", .expressionDepth)
        expectLimit("{{ " + rep("[", 100_000) + rep("]", 100_000) + " }}", .expressionDepth)
        expectLimit("{{ " + rep("{'a': ", 50_000) + "1" + rep("}", 50_000) + " }}", .expressionDepth)
        expectLimit("{{ 'a'" + rep(" | trim", 100_000) + " }}", .expressionDepth)
        expectLimit("{{ 1" + rep(" + 1", 100_000) + " }}", .expressionDepth)
        expectLimit("{{ x" + rep(".a", 100_000) + " }}", .expressionDepth)
        expectLimit("{{ x" + rep("[0]", 100_000) + " }}", .expressionDepth)
        expectLimit("{{ f" + rep("(", 100_000) + rep(")", 100_000) + " }}", .expressionDepth)
        expectLimit(rep("{%if 1%}", 50_000) + "x" + rep("{%endif%}", 50_000), .blockDepth)
        expectLimit(rep("{% for x in [1] %}", 20_000) + rep("{% endfor %}", 20_000), .blockDepth)
        // The same 50k blocks written out in full are over the source size limit first.
        expectLimit(rep("{% if true %}", 50_000) + "x" + rep("{% endif %}", 50_000), .sourceSize)
    }

    /// Just under the limits renders, on the test runner's thread (a smaller stack than main's).
    @Test func nestingJustUnderTheLimitsRenders() throws {
        let d = ChatTemplate.Limits.maxExpressionDepth - 4
        func rep(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }
        #expect(try render("{{ " + rep("(", d) + "1" + rep(")", d) + " }}") == "1")
        #expect(try render("{{ " + rep("-", d) + "1 }}") == (d % 2 == 0 ? "1" : "-1"))
        #expect(try render("{{ " + rep("[", d) + rep("]", d) + " | length }}") == "1")
        #expect(try render("{{ 1" + rep(" + 1", d) + " }}") == "\(d + 1)")
        let b = ChatTemplate.Limits.maxBlockDepth - 1
        #expect(try render(rep("{% if true %}", b) + "x" + rep("{% endif %}", b)) == "x")
        #expect(try render(rep("{% for x in [1] %}", b) + "y" + rep("{% endfor %}", b)) == "y")
    }

    @Test func runtimeValuesAreBounded() {
        // A value nested one level deeper on every iteration: freeing it (or printing it) recursed.
        expectLimit("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}", .valueDepth)
        // Namespaces chained through namespaces would hide that depth.
        expectError("{% set ns = namespace(p=none) %}{% for i in range(10) %}{% set ns.p = namespace() %}{% endfor %}", "namespace")
        expectError("{% set a = namespace() %}{% set b = namespace(x=[a]) %}", "namespace")
    }

    @Test func workIsBounded() throws {
        expectLimit("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", .work)
        expectLimit("{% set s = 'a' * 1000000 %}{% for i in range(100000) %}{% if 'b' in s %}{% endif %}{% endfor %}", .work)
        expectLimit("{% set s = 'a' * 1000000 %}{% for i in range(100000) %}{{ s[5] }}{% endfor %}", .work)
        // Every item made is charged, so the budget bounds memory too: 1000 million-item lists.
        expectLimit("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + [range(1000000)] %}{% endfor %}", .work)
        // Substring search is linear (memmem), so a long needle in a long haystack is no bomb.
        #expect(try render("{% set s = 'a' * 4000000 %}{{ ('a' * 3000000 ~ 'b') in s }}") == "False")
    }

    @Test func errorsNameFileLineAndColumn() throws {
        let e = failure("{{ 1 }}\n  {{ 1 // 0 }}")
        #expect(e == .templateError(file: "chat_template.jinja", line: 2, column: 8, message: "integer division by zero"))
        #expect(e?.description == "chat_template.jinja: chat template line 2, column 8: integer division by zero")
        // Through a tokenizer: the file is the one the template came from.
        let viaConfig = try Tokenizer.parse(tokenizerJSON: Self.tinyTokenizerJSON,
                                            configJSON: #"{"chat_template": "{{ range(10000000000) }}"}"#)
        do { _ = try viaConfig.applyChatTemplate(Self.user, addGenerationPrompt: true); Issue.record("rendered") } catch {
            #expect(error.description.hasPrefix("tokenizer_config.json: chat template line 1, column 4: value size limit"), "\(error)")
        }
        let viaJinja = try Tokenizer.parse(tokenizerJSON: Self.tinyTokenizerJSON, chatTemplate: "{% macro x() %}{% endmacro %}")
        do { _ = try viaJinja.applyChatTemplate(Self.user, addGenerationPrompt: true); Issue.record("rendered") } catch {
            #expect(error.description.hasPrefix("chat_template.jinja: chat template line 1, column 4: unsupported statement"), "\(error)")
        }
        // raise_exception keeps a one-line, bounded message.
        if case let .templateRaised(file, m)? = failure("{{ raise_exception('x' * 100000) }}") {
            #expect(file == "chat_template.jinja")
            #expect(m.unicodeScalars.count <= ChatTemplate.Limits.maxRaisedMessage + 1)
        } else { Issue.record("raise_exception did not raise") }
        expectLimit(String(repeating: "a", count: ChatTemplate.Limits.maxSourceBytes + 1), .sourceSize)
    }

    /// Semantics the bounded rewrite must keep Python's (outputs from jinja2 3.1 with transformers'
    /// environment): strings index by code point, floor division and modulo, replace counts,
    /// float literals with exponents.
    @Test func pythonSemantics() throws {
        let msgs = [ChatMessage(role: "user", content: "héllo wörld"), ChatMessage(role: "assistant", content: "a,b,,c")]
        func r(_ s: String) throws -> String { try ChatTemplate(s).render(messages: msgs, addGenerationPrompt: false, bosToken: nil, eosToken: nil) }
        #expect(try r("{{ messages[0].content[1] }}|{{ messages[0].content | length }}|{{ messages[0].content[1:4] }}|{{ messages[0].content[::-1] }}")
                == "é|11|éll|dlröw olléh")
        #expect(try r("{{ messages[1].content.split(',') }}|{{ messages[1].content.replace(',', ';', 2) }}|{{ 'ab'.replace('', '-', 2) }}")
                == "['a', 'b', '', 'c']|a;b;,c|-a-b")
        #expect(try r("{{ 1e3 }} {{ 2.5E-1 }} {{ 1e16 }} {{ 10 // 3 }}{{ -10 // 3 }}{{ 10 % -3 }}{{ -10 % -3 }}") == "1000.0 0.25 1e+16 3-4-2-1")
        expectError("{{ 1e400 }}", "out of range")
    }

    static let tinyTokenizerJSON = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}"#
}
