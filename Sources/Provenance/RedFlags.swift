import Foundation
import AssayCommon
import SafeTensors

/// Directory-level red flags: code that loaders would import (`auto_map`, `trust_remote_code`,
/// `*.py`, code hooks in configs), shard indexes that escape or disagree with the directory,
/// and tensor shapes that contradict config.json.
enum RedFlags {
    static let configNames: Set<String> = [
        "config.json", "tokenizer_config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
        "feature_extractor_config.json", "image_processor_config.json", "adapter_config.json", "special_tokens_map.json",
        "sentence_bert_config.json", "config_sentence_transformers.json", "modules.json", "video_preprocessor_config.json",
    ]
    /// Config keys whose value names code to import.
    static let codeHookKeys: Set<String> = ["auto_map", "model_file", "code_file", "custom_pipelines", "custom_code", "module_file",
                                            "modeling_file"]

    static func check(root: URL, files: [AuditedFile], singleFile: Bool) -> [Finding] {
        var out: [Finding] = []
        for f in files where f.type == "file" {
            let name = (f.path as NSString).lastPathComponent
            if f.path.lowercased().hasSuffix(".py") {
                out.append(Finding(code: "code_file", severity: .high, file: f.path,
                                   message: "Python source in a model directory: loaders run it when asked to trust remote code"))
            }
            guard f.format == .json || (f.format == .text && name.hasSuffix(".json")) else { continue }
            let url = root.appendingPathComponent(f.path)
            if configNames.contains(name) || name.hasSuffix("_config.json") {
                out += configFlags(url, rel: f.path, name: name)
            }
            if name.hasSuffix(".index.json") {
                out += indexFlags(url, rel: f.path, name: name)
            }
        }
        if !singleFile, files.contains(where: { $0.path == "config.json" && $0.format == .json }) {
            out += shapeFlags(root: root, files: files)
        }
        return out
    }

    enum Parsed { case success(JSONValue), failure(Finding) }

    static func parse(_ url: URL, rel: String) -> Parsed {
        let data: [UInt8]
        do { data = try SafeFile.read(url, maxBytes: 64 << 20) } catch {
            return .failure(Finding(code: "invalid_config", severity: .medium, file: rel, message: error.reasonOnly))
        }
        do { return .success(try JSONParser.parse(data)) } catch {
            return .failure(Finding(code: "invalid_config", severity: .medium, file: rel, message: "not valid JSON: \(error.description)"))
        }
    }

    static func configFlags(_ url: URL, rel: String, name: String) -> [Finding] {
        let json: JSONValue
        switch parse(url, rel: rel) {
        case let .success(v): json = v
        case let .failure(f): return [f]
        }
        var out: [Finding] = []
        if let dup = json.firstDuplicateKey {
            out.append(Finding(code: "config_duplicate_key", severity: .medium, file: rel,
                               message: "key '\(dup.terminalSafe)' appears more than once; loaders keep the last value"))
        }
        func visit(_ v: JSONValue, path: String, depth: Int) {
            guard depth < 32 else { return }
            if let members = v.members {
                for m in members {
                    let p = path.isEmpty ? m.key : path + "." + m.key
                    if m.key == "trust_remote_code", m.value.bool == true {
                        out.append(Finding(code: "trust_remote_code", severity: .high, file: rel,
                                           message: "'\(p.terminalSafe)' is true: loaders would import and run Python code "
                                               + "shipped with the model"))
                    } else if codeHookKeys.contains(m.key), m.value != .null {
                        let refs = strings(m.value).prefix(8).map { $0.terminalSafe }.joined(separator: ", ")
                        out.append(Finding(code: m.key == "auto_map" ? "auto_map" : "code_hook", severity: .high, file: rel,
                                           message: "'\(p.terminalSafe)' names code to import when loading "
                                               + "(\(refs.isEmpty ? "non-string value" : refs)); with trust_remote_code it runs"))
                        continue
                    }
                    visit(m.value, path: p, depth: depth + 1)
                }
            } else if let items = v.array {
                for (i, x) in items.enumerated() { visit(x, path: "\(path)[\(i)]", depth: depth + 1) }
            } else if let s = v.string, s.hasSuffix(".py") || s.contains(".py:") || s.contains(".py::") {
                out.append(Finding(code: "code_hook", severity: .high, file: rel,
                                   message: "'\(path.terminalSafe)' refers to Python source '\(s.terminalSafe)'"))
            }
        }
        visit(json, path: "", depth: 0)
        // sentence-transformers imports each module's "type" by name.
        if name == "modules.json", let items = json.array {
            for (i, m) in items.enumerated() {
                if let t = m["type"]?.string, !t.hasPrefix("sentence_transformers.") {
                    out.append(Finding(code: "code_hook", severity: .high, file: rel,
                                       message: "module \(i) has type '\(t.terminalSafe)': sentence-transformers imports it by name, and "
                                           + "it is not one of its own modules"))
                }
            }
        }
        return out
    }

    static func strings(_ v: JSONValue) -> [String] {
        if let s = v.string { return [s] }
        if let a = v.array { return a.flatMap(strings) }
        if let m = v.members { return m.flatMap { strings($0.value) } }
        return []
    }

    /// A shard index: entries must be plain names of files in the directory, listed once;
    /// safetensors indexes are validated as a whole by the strict reader.
    static func indexFlags(_ url: URL, rel: String, name: String) -> [Finding] {
        if name.contains("safetensors") {
            do { _ = try Checkpoint.openIndex(url) } catch {
                let code: String
                switch error {
                case .shardPathEscapes: code = "index_shard_escapes"
                case .shardMissing: code = "index_shard_missing"
                case .tensorInTwoShards, .tensorNotInIndex, .tensorMissingFromShard: code = "index_inconsistent"
                case .invalidIndex: code = "index_invalid"
                default: code = "index_shard_invalid"
                }
                return [Finding(code: code, severity: .high, file: rel, message: "\(error.kind): \(error.description)")]
            }
            return []
        }
        let json: JSONValue
        switch parse(url, rel: rel) {
        case let .success(v): json = v
        case let .failure(f): return [f]
        }
        guard let map = json["weight_map"], let entries = map.members else {
            return [Finding(code: "index_invalid", severity: .high, file: rel, message: "no 'weight_map' object")]
        }
        var out: [Finding] = []
        if let dup = map.firstDuplicateKey {
            out.append(Finding(code: "index_inconsistent", severity: .high, file: rel,
                               message: "tensor '\(dup.terminalSafe)' is listed more than once in 'weight_map'"))
        }
        let dir = url.deletingLastPathComponent()
        for shard in Set(entries.compactMap { $0.value.string }).sorted() {
            let parts = shard.split(separator: "/", omittingEmptySubsequences: false)
            if shard.isEmpty || shard.hasPrefix("/") || parts.contains("..") || shard.contains("\0") || shard.contains("\\") {
                out.append(Finding(code: "index_shard_escapes", severity: .high, file: rel,
                                   message: "shard path '\(shard.terminalSafe)' points outside the model directory"))
            } else if !FileManager.default.fileExists(atPath: dir.appendingPathComponent(shard).path) {
                out.append(Finding(code: "index_shard_missing", severity: .high, file: rel,
                                   message: "shard '\(shard.terminalSafe)' does not exist"))
            }
        }
        return out
    }

    /// Tensor shapes that contradict config.json: vocabulary rows, hidden width, layer count.
    static func shapeFlags(root: URL, files: [AuditedFile]) -> [Finding] {
        guard case let .success(cfg) = parse(root.appendingPathComponent("config.json"), rel: "config.json") else { return [] }
        func int(_ keys: String...) -> Int? { for k in keys { if let v = cfg[k]?.exactInt { return v } }; return nil }
        var shapes: [(file: String, name: String, shape: [Int])] = []
        for f in files where f.format == .safetensors && f.formatDetail == nil && f.type == "file" {
            guard let st = try? SafeTensorsFile(url: root.appendingPathComponent(f.path)) else { continue }
            for t in st.tensors { shapes.append((f.path, t.name, t.shape)) }
        }
        guard !shapes.isEmpty else { return [] }
        var out: [Finding] = []
        let embedSuffixes = ["embed_tokens.weight", "wte.weight", "word_embeddings.weight", "tok_embeddings.weight", "embed_in.weight",
                             "lm_head.weight", "embed_out.weight", "shared.weight"]
        let vocab = int("vocab_size"), hidden = int("hidden_size", "n_embd", "d_model", "dim")
        for t in shapes where embedSuffixes.contains(where: { t.name == $0 || t.name.hasSuffix("." + $0) }) && t.shape.count == 2 {
            if let v = vocab, t.shape[0] != v {
                out.append(Finding(code: "shape_contradicts_config", severity: .medium, file: t.file,
                                   message: "tensor '\(t.name.terminalSafe)' has \(t.shape[0]) rows but config.json vocab_size is \(v)"))
            }
            if let h = hidden, t.shape[1] != h {
                out.append(Finding(code: "shape_contradicts_config", severity: .medium, file: t.file,
                                   message: "tensor '\(t.name.terminalSafe)' is \(t.shape[1]) wide but config.json hidden_size is \(h)"))
            }
        }
        if let n = int("num_hidden_layers", "n_layer", "num_layers", "n_layers") {
            let containers: Set<Substring> = ["layers", "layer", "h", "blocks", "block"]
            var indices = Set<Int>()
            for t in shapes {
                let parts = t.name.split(separator: ".")
                for i in parts.indices.dropLast() where containers.contains(parts[i]) {
                    if let k = Int(parts[i + 1]) { indices.insert(k); break }
                }
            }
            if !indices.isEmpty, indices.count != n || (indices.max() ?? 0) + 1 != n {
                out.append(Finding(code: "shape_contradicts_config", severity: .medium, file: "config.json",
                                   message: "checkpoint holds \(indices.count) layers (indices \(indices.min()!)…\(indices.max()!)) but "
                                       + "num_hidden_layers is \(n): extra layers are never loaded, missing ones are left "
                                       + "at their initialisation"))
            }
        }
        return out
    }
}
