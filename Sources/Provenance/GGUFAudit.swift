import Foundation
import AssayCommon
import GGUF
import SafeTensors
import Tokenizers

/// What `assay audit` checks in a GGUF file besides its structure (which the strict reader
/// checks): the chat templates a serving stack will execute, and metadata that contradicts the
/// tensors it describes.
enum GGUFAudit {
    /// Python attributes a Jinja sandbox escape reaches for (CVE-2024-34359 walked
    /// `__class__.__mro__` … `__subclasses__()` from a GGUF chat template to os.popen); no chat
    /// template needs any of them.
    static let escapeNames = ["__class__", "__mro__", "__subclasses__", "__globals__", "__builtins__", "__import__", "__init__",
                              "__base__", "__bases__", "__dict__", "__getattribute__", "__code__", "func_globals", "popen", "subprocess",
                              "os.system", "eval(", "exec(", "lipsum", "cycler", "joiner", "namespace.__"]

    static func findings(_ map: MappedFile, url: URL, file rel: String) -> [Finding] {
        let f: GGUFFile
        do { f = try GGUFFile(url: url) } catch {
            return [Finding(code: "invalid_gguf", severity: .high, file: rel, message: "not a valid GGUF file: \(error.description)",
                            analysisFailure: true)]
        }
        return templateFindings(f, file: rel) + metadataFindings(f, file: rel)
    }

    /// Every `tokenizer.chat_template*` string: sandbox-escape names are critical; a template
    /// Assay's interpreter of the chat-template subset refuses uses constructs chat templates do
    /// not need (macros, imports, …), which is medium.
    static func templateFindings(_ f: GGUFFile, file: String) -> [Finding] {
        var out: [Finding] = []
        for key in f.keys where key == "tokenizer.chat_template" || key.hasPrefix("tokenizer.chat_template.") {
            guard case let .string(source)? = f.metadata[key] else {
                out.append(Finding(code: "gguf_metadata_mismatch", severity: .medium, file: file,
                                   message: "\(key.terminalSafe) is a \(f.metadata[key]!.typeName), not a template string"))
                continue
            }
            let hits = escapeNames.filter { source.contains($0) }
            if !hits.isEmpty {
                out.append(Finding(code: "gguf_template_injection", severity: .critical, file: file,
                                   message: "\(key.terminalSafe) reaches for \(hits.prefix(4).joined(separator: ", ")): a Jinja "
                                       + "sandbox escape (template injection, as in CVE-2024-34359), not a chat template"))
                continue
            }
            do { _ = try ChatTemplate(source, file: "\(file): \(key)") } catch {
                out.append(Finding(code: "gguf_template_unsupported", severity: .medium, file: file,
                                   message: "\(key.terminalSafe) uses what a chat template does not need: \(error)"))
            }
        }
        return out
    }

    /// The architecture's sizes against the tensors: block count, embedding width and vocabulary,
    /// and keys under another architecture's prefix.
    static func metadataFindings(_ f: GGUFFile, file: String) -> [Finding] {
        func mismatch(_ m: String) -> Finding { Finding(code: "gguf_metadata_mismatch", severity: .high, file: file, message: m) }
        guard case let .string(arch)? = f.metadata["general.architecture"] else {
            return f.tensors.isEmpty ? [] : [mismatch("general.architecture is missing or not a string")]
        }
        var out: [Finding] = []
        let known = ["llama", "qwen2", "gpt2", "gptneox", "mistral", "phi3", "gemma", "gemma2", "falcon", "bert", "starcoder2"]
        for key in f.keys {
            let prefix = key.split(separator: ".").first.map(String.init) ?? ""
            if prefix != arch && known.contains(prefix) {
                out.append(mismatch("\(key.terminalSafe) belongs to architecture '\(prefix)' in a '\(arch.terminalSafe)' file"))
                break
            }
        }
        let blocks = Set(f.tensors.compactMap { t -> Int? in
            let p = t.name.split(separator: ".")
            return p.count > 2 && p[0] == "blk" ? Int(p[1]) : nil
        })
        if let n = f.metadata["\(arch).block_count"]?.integer, !blocks.isEmpty, blocks != Set(0..<n) {
            out.append(mismatch("\(arch).block_count is \(n) but the tensors hold blocks \(blocks.min()!)…\(blocks.max()!) "
                                + "(\(blocks.count) distinct)"))
        }
        if let embd = f.tensor("token_embd.weight"), embd.shape.count == 2 {
            if let width = f.metadata["\(arch).embedding_length"]?.integer, width != embd.shape[1] {
                out.append(mismatch("\(arch).embedding_length is \(width) but token_embd.weight is \(embd.shape)"))
            }
            if case let .array(_, tokens)? = f.metadata["tokenizer.ggml.tokens"], tokens.count > embd.shape[0] {
                out.append(mismatch("tokenizer.ggml.tokens lists \(tokens.count) tokens but token_embd.weight has \(embd.shape[0]) rows"))
            }
        }
        return out
    }
}
