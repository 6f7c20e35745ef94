import Foundation
import Testing
@testable import Provenance

/// `assay audit` of GGUF metadata: the chat template a serving stack executes, and sizes that
/// contradict the tensors.
@Suite struct GGUFAuditTests {
    static func u32(_ x: UInt32) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func u64(_ x: UInt64) -> [UInt8] { withUnsafeBytes(of: x.littleEndian, Array.init) }
    static func str(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }
    enum V { case s(String), u(UInt32) }

    /// Metadata, then one F32 tensor per (name, dims).
    static func file(_ kv: [(String, V)], tensors: [(String, [Int])] = []) throws -> URL {
        var out: [UInt8] = Array("GGUF".utf8) + u32(3) + u64(UInt64(tensors.count)) + u64(UInt64(kv.count))
        for (k, v) in kv {
            out += str(k)
            switch v {
            case let .s(x): out += u32(8) + str(x)
            case let .u(x): out += u32(4) + u32(x)
            }
        }
        var offset = 0
        for (name, dims) in tensors {
            out += str(name) + u32(UInt32(dims.count)) + dims.flatMap { u64(UInt64($0)) } + u32(0) + u64(UInt64(offset))
            offset += (dims.reduce(4, *) + 31) / 32 * 32
        }
        out += [UInt8](repeating: 0, count: (32 - out.count % 32) % 32 + offset)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("assay-gguf-audit-\(UUID().uuidString).gguf")
        try Data(out).write(to: url)
        return url
    }

    static let base: [(String, V)] = [("general.architecture", .s("llama")), ("llama.block_count", .u(1)),
                                      ("llama.embedding_length", .u(4))]
    static let tensors: [(String, [Int])] = [("token_embd.weight", [4, 3]), ("blk.0.attn_norm.weight", [4])]

    func audit(_ kv: [(String, V)], _ tensors: [(String, [Int])] = tensors) throws -> [Finding] {
        let url = try Self.file(kv, tensors: tensors)
        defer { try? FileManager.default.removeItem(at: url) }
        return try Auditor.audit(url).findings
    }

    @Test func aPlainChatMLTemplatePasses() throws {
        let t = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            + "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        #expect(try audit(Self.base + [("tokenizer.chat_template", .s(t))]).isEmpty)
    }

    /// The CVE-2024-34359 payload shape: from a string literal to os.popen through __class__.
    @Test func templateInjectionIsCritical() throws {
        let t = "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
            + "{{ x()._module.__builtins__['__import__']('os').popen('touch /tmp/pwned') }}{% endif %}{% endfor %}"
        let f = try audit(Self.base + [("tokenizer.chat_template", .s(t))])
        #expect(f.map(\.code) == ["gguf_template_injection"] && f[0].severity == .critical, "\(f)")
        let named = try audit(Self.base + [("tokenizer.chat_template.tool_use", .s("{{ cycler.__init__.__globals__ }}"))])
        #expect(named.map(\.code) == ["gguf_template_injection"], "\(named)")
    }

    @Test func constructsChatTemplatesDoNotNeedAreFlagged() throws {
        let f = try audit(Self.base + [("tokenizer.chat_template", .s("{% macro m() %}x{% endmacro %}{{ m() }}"))])
        #expect(f.map(\.code) == ["gguf_template_unsupported"] && f[0].severity == .medium, "\(f)")
    }

    @Test func metadataThatContradictsTheTensors() throws {
        let blocks = try audit(Self.base.map { $0.0 == "llama.block_count" ? ($0.0, .u(2)) : $0 })
        #expect(blocks.map(\.code) == ["gguf_metadata_mismatch"] && blocks[0].message.contains("block_count is 2"), "\(blocks)")
        let width = try audit(Self.base.map { $0.0 == "llama.embedding_length" ? ($0.0, .u(8)) : $0 })
        #expect(width.map(\.code) == ["gguf_metadata_mismatch"] && width[0].message.contains("embedding_length is 8"), "\(width)")
        let foreign = try audit(Self.base + [("qwen2.block_count", .u(1))])
        #expect(foreign.map(\.code) == ["gguf_metadata_mismatch"] && foreign[0].message.contains("'qwen2'"), "\(foreign)")
    }

    @Test func aBrokenGGUFIsAnAnalysisFailure() throws {
        let url = try Self.file(Self.base, tensors: Self.tensors)
        defer { try? FileManager.default.removeItem(at: url) }
        let bytes = try Data(contentsOf: url)
        try bytes.prefix(bytes.count - 40).write(to: url)
        let r = try Auditor.audit(url)
        #expect(r.findings.map(\.code) == ["invalid_gguf"] && r.findings[0].analysisFailure == true, "\(r.findings)")
    }
}
