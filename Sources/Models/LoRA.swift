import Foundation
import AssayCommon
import SafeTensors
import TensorCore

/// A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`), merged into the base
/// weights at load: W ← W + s·B·A with s = lora_alpha / r (lora_alpha / √r with `use_rslora`),
/// per-module r and alpha from `rank_pattern` / `alpha_pattern`, and (B·A)ᵀ for GPT-2's Conv1D.
///
/// Adapter files are hostile input, and a scanner that merges another model than the one
/// `PeftModel.from_pretrained` deploys is worse than none. So this reader is exactly as strict as
/// PEFT 0.21 and, wherever PEFT is lenient in a way that lets the file say two things, stricter:
///
/// - The modules adapted are the ones PEFT's `check_target_module_exists` selects from the base
///   model's module tree (`target_modules` as a `re.fullmatch` regex, a list matched by full
///   name or `.`-suffix, `"all-linear"`, or PEFT's per-architecture default; `exclude_modules`;
///   `layers_to_transform` / `layers_pattern`). Selecting nothing, or a module PEFT cannot adapt
///   (a norm, a container, an activation), is an error as in PEFT.
/// - The file must hold exactly one `base_model.model.<module>.lora_A.weight` and one `lora_B`
///   for every selected module and nothing else. PEFT warns and ignores unexpected keys (an
///   unprefixed copy, a module not selected) and leaves missing ones at their random or zero
///   initialisation; Assay refuses both, and names both keys when two map to one matrix.
/// - Per-module r and alpha follow `get_pattern_key`: the first key, in file order, for which
///   `re.match(rf"(.*\.)?({key})$", module)` succeeds. Keys that match nothing (PEFT warns),
///   non-integer or non-positive ranks and non-finite alphas are errors naming the field.
/// - Non-finite adapter weights, or a merge that overflows float32, are errors naming the adapter
///   file and tensor. Only F32/F16/BF16 tensors are read (PEFT would cast integers).
/// - DoRA, trained biases, `modules_to_save`, embedding LoRA, initialisations that rewrite the base
///   (PiSSA, OLoRA, …), and config fields this PEFT version does not define are refused rather than
///   half-applied or ignored.
public struct LoRAAdapter: Sendable {
    public struct Module: Sendable {
        /// PEFT's name for the module, e.g. `model.layers.0.self_attn.q_proj`.
        public let name: String
        /// `name` + `.weight`, e.g. `model.layers.0.self_attn.q_proj.weight`: the base weight for
        /// every checkpoint but GPT-NeoX's, whose `lm_head` is stored as `embed_out` (`merge`
        /// returns the names actually changed).
        public let weight: String
        public let a: Tensor      // (r, in)
        public let b: Tensor      // (out, r)
        public let rank: Int
        public let alpha: Double
        public let scale: Float
        /// The tensors' keys in adapter_model.safetensors.
        public let keyA: String, keyB: String
    }

    public let directory: URL
    public let rank: Int
    public let alpha: Double
    /// The config's value. PEFT ignores it in favour of the layer type (true for Conv1D, false for
    /// nn.Linear, with a warning either way: `lora/layer.py` `dispatch_default`), and so does
    /// `merge`.
    public let fanInFanOut: Bool
    public let modules: [Module]
    let selection: TargetSelection
    let configFile: String
    let weightsFile: String
    /// Module → key and value of a `base_layer.weight` the file carries (`LoRAKeys.baseCopy`).
    let baseCopies: [String: String]
    let baseCopyValues: [String: Tensor]

    public static func load(_ dir: URL) throws(ModelError) -> LoRAAdapter {
        let cfgURL = dir.appendingPathComponent("adapter_config.json")
        let c = try readConfig(cfgURL, directory: dir)
        let settings = try AdapterSettings(c)
        let weightsURL = dir.appendingPathComponent("adapter_model.safetensors")
        try requireRegularFile(weightsURL, missing: "no adapter_model.safetensors (pickled adapter_model.bin is never loaded)",
                               directory: dir)
        let file: SafeTensorsFile
        do { file = try SafeTensorsFile(url: weightsURL) } catch { throw .safetensors(error) }
        let (pairs, copies) = try LoRAKeys.pairs(in: file)
        var baseCopies: [String: Tensor] = [:]
        for (m, key) in copies { baseCopies[m] = try decode(file, key) }
        let patterns = try ModulePatterns(c, settings: settings, modules: pairs.map(\.module))
        var modules: [Module] = []
        for p in pairs {
            let a = try decode(file, p.keyA), b = try decode(file, p.keyB)
            let (r, alpha, alphaField) = patterns.rankAndAlpha(for: p.module)
            guard a.rank == 2, b.rank == 2, a.shape[0] == r, b.shape[1] == r else {
                throw .adapter(file: weightsURL.path,
                               reason: "module '\(p.module.terminalSafe)': lora_A \(a.shape) and lora_B \(b.shape) do not have rank r = "
                                   + "\(r) (from \(patterns.rankField(for: p.module)))")
            }
            // PEFT: `lora_alpha / math.sqrt(r)` with use_rslora, else `lora_alpha / r`, then a
            // float32 multiply.
            let s = settings.useRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r)
            guard Float(s).isFinite else {
                throw .invalidConfig(file: c.file, field: alphaField,
                                     reason: "scale \(alpha) / \(settings.useRSLoRA ? "√" : "")\(r) does not fit a float32")
            }
            modules.append(Module(name: p.module, weight: p.module + ".weight", a: a, b: b, rank: r, alpha: alpha,
                                  scale: Float(s), keyA: p.keyA, keyB: p.keyB))
        }
        return LoRAAdapter(directory: dir, rank: settings.rank, alpha: settings.alpha, fanInFanOut: settings.fanInFanOut,
                           modules: modules, selection: settings.selection, configFile: c.file, weightsFile: weightsURL.path,
                           baseCopies: copies, baseCopyValues: baseCopies)
    }

    /// Merges into the base weights. `modelType` is the base's config.json `model_type` and
    /// `tiedOutputHead` its `tie_word_embeddings` (inferred from the weight names when nil). The
    /// adapted modules must be exactly those PEFT would select in this base, each with the shape
    /// B·A implies. Returns the base weight names changed (GPT-NeoX's `lm_head` is `embed_out`).
    @discardableResult
    public func merge(into w: WeightStore, modelType: String? = nil, tiedOutputHead: Bool? = nil) throws(ModelError) -> [String] {
        let base = try BaseModules(w, modelType: modelType, tiedOutputHead: tiedOutputHead, adapter: directory.path)
        let selected = try selection.select(in: base, configFile: configFile)
        let inFile = Dictionary(modules.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for m in modules where !selected.contains(m.name) {
            throw .adapter(file: weightsFile,
                           reason: "tensor '\(m.keyA.terminalSafe)' adapts '\(m.name.terminalSafe)', which target_modules in "
                               + "adapter_config.json does not select (PEFT would ignore it)")
        }
        for name in selected.sorted() where inFile[name] == nil {
            throw .adapter(file: weightsFile,
                           reason: "'\(name.terminalSafe)' is selected by target_modules but has no lora_A/lora_B (PEFT would leave it "
                               + "at its initialisation)")
        }
        for m in modules {
            try merge(m, kind: base.kinds[m.name]!, weight: base.weightName[m.name]!, into: w)
        }
        return modules.map { base.weightName[$0.name]! }
    }

    private func merge(_ m: Module, kind: BaseModules.Kind, weight: String, into w: WeightStore) throws(ModelError) {
        guard let shape = w.shape(weight) else {
            throw .adapter(file: weightsFile, reason: "adapts '\(weight.terminalSafe)', which the base model does not have")
        }
        let (out, inF) = (m.b.shape[0], m.a.shape[1])
        let conv1D = kind == .conv1D  // weight stored (in, out)
        let expected = conv1D ? [inF, out] : [out, inF]
        guard shape == expected else {
            throw .adapter(file: weightsFile,
                           reason: "'\(weight.terminalSafe)' is \(shape) in the base but the adapter's B·A is \(expected) (lora_B "
                               + "\(m.b.shape) · lora_A \(m.a.shape))")
        }
        var merged = try w.take(weight, shape, field: "adapter base")
        if let copy = baseCopyValues[m.name] {
            // PEFT loads this tensor over the base weight before merging; the same bits are a
            // no-op, anything else is a second, hidden change to the base.
            guard copy.shape == merged.shape, copy.array == merged.array else {
                throw .adapter(file: weightsFile,
                               reason: "tensor '\(baseCopies[m.name]!.terminalSafe)' differs from the base model's "
                                   + "'\(weight.terminalSafe)': PEFT would replace the base weight with it")
            }
        }
        do {
            var delta = try m.b.matmul(m.a)                          // (out, r) × (r, in) → (out, in)
            if conv1D { delta = delta.transposed.materialized() }    // → (in, out), as Conv1D stores it
            delta = delta.scaled(by: m.scale)
            try merged.add(delta)
        } catch let e as TensorError { throw ModelError(e) } catch { throw .tensor("\(error)") }
        var bad = 0
        merged.withUnsafeBufferPointer { p in for v in p where !v.isFinite { bad += 1 } }
        if bad > 0 {
            throw .adapter(file: weightsFile,
                           reason: "merging '\(m.keyB.terminalSafe)' · '\(m.keyA.terminalSafe)' × \(m.scale) (lora_alpha \(m.alpha), r "
                               + "\(m.rank)) into '\(weight.terminalSafe)' gives \(bad) non-finite values")
        }
        w.set(weight, merged)
    }

    // MARK: - Files

    /// Config files are small; 16 MiB is far above any real adapter_config.json.
    static let maxConfigBytes = 16 << 20

    static func readConfig(_ url: URL, directory: URL) throws(ModelError) -> ConfigReader {
        let bytes: [UInt8]
        do { bytes = try SafeFile.read(url, maxBytes: maxConfigBytes) } catch {
            if case .notFound = error {
                throw .adapter(file: directory.path, reason: "no adapter_config.json (expected a PEFT LoRA adapter directory)")
            }
            throw .adapter(file: url.path, reason: reason(error))
        }
        let json: JSONValue
        do { json = try JSONParser.parse(bytes) } catch {
            let (field, token) = nearestField(bytes, error.offset)
            if let token {
                throw .invalidConfig(file: url.path, field: field ?? "(file)",
                                     reason: "'\(token)' is not JSON (Python's json writes it for a non-finite float; PEFT "
                                         + "would compute with it)")
            }
            throw .invalidConfig(file: url.path, field: "(file)", reason: "not valid JSON: \(error.description)")
        }
        guard json.members != nil else {
            throw .invalidConfig(file: url.path, field: "(file)", reason: "must be a JSON object, found \(json.typeName)")
        }
        // Python's json keeps the last of two equal keys; refusing them leaves nothing to disagree on.
        if let dup = json.firstDuplicateKeyPath { throw .invalidConfig(file: url.path, field: dup, reason: "appears more than once") }
        return ConfigReader(file: url.path, json: json)
    }

    /// For a parse error at `offset`: the key whose value was being read and, when the value is
    /// one of Python's non-JSON float literals, that literal.
    static func nearestField(_ bytes: [UInt8], _ offset: Int) -> (String?, String?) {
        let o = min(max(offset, 0), bytes.count)
        var token: String?
        for t in ["-Infinity", "Infinity", "NaN"] where bytes[o...].starts(with: Array(t.utf8)) { token = t; break }
        // Walk back over `"key" :` to the key.
        var i = o - 1
        while i >= 0, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i -= 1 }
        guard i >= 0, bytes[i] == UInt8(ascii: ":") else { return (nil, token) }
        i -= 1
        while i >= 0, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i -= 1 }
        guard i >= 1, bytes[i] == UInt8(ascii: "\"") else { return (nil, token) }
        let end = i
        i -= 1
        while i >= 0, bytes[i] != UInt8(ascii: "\"") { i -= 1 }
        guard i >= 0, end - i - 1 <= 200 else { return (nil, token) }
        return (String(decoding: bytes[(i + 1)..<end], as: UTF8.self), token)
    }

    static func reason(_ e: SafeFileError) -> String {
        switch e {
        case .notFound: return "no such file"
        case let .notRegular(_, kind): return "is \(kind), not a regular file; refusing to read it"
        case let .tooLarge(_, size, limit): return "\(size) bytes, over the \(limit)-byte limit"
        case let .unreadable(_, r): return "cannot read: \(r)"
        }
    }

    /// Checks without blocking (a FIFO named like the weights must not hang the scan) that `url`
    /// is a regular file before the safetensors reader maps it.
    static func requireRegularFile(_ url: URL, missing: String, directory: URL) throws(ModelError) {
        if SafeFile.isRegularFile(url) { return }
        guard SafeFile.exists(url) else { throw .adapter(file: directory.path, reason: missing) }
        do {
            let (fd, _) = try SafeFile.open(url.path, maxBytes: Int.max)
            close(fd)
        } catch { throw .adapter(file: url.path, reason: reason(error)) }
        throw .adapter(file: url.path, reason: "is not a regular file; refusing to read it")
    }

    static func decode(_ file: SafeTensorsFile, _ key: String) throws(ModelError) -> Tensor {
        let info = file.info(key)!
        guard info.dtype.isComputable else {
            throw .adapter(file: file.path,
                           reason: "tensor '\(key.terminalSafe)' is \(info.dtype.rawValue); LoRA matrices must be F32, F16 or BF16 "
                               + "(PyTorch would cast it silently)")
        }
        let t: Tensor
        do { t = try file.tensor(key) } catch { throw .safetensors(error) }
        var nan = 0, inf = 0
        t.withUnsafeBufferPointer { p in
            for v in p where !v.isFinite { if v.isNaN { nan += 1 } else { inf += 1 } }
        }
        if nan + inf > 0 { throw .nonFiniteWeights(file: file.path, tensor: key, nan: nan, inf: inf) }
        return t
    }
}

// MARK: - Tensor names

/// How PEFT 0.21 maps a saved key to a parameter (`BaseTuner._remap_adapter_state_dict_for_load`):
/// the model's key for a LoRA matrix is `base_model.model.<module>.lora_A.default.weight`, and a
/// saved `base_model.model.<module>.lora_A.weight` is renamed to it. A key already in the
/// in-memory form is loaded as is, and any other key (no prefix, not a LoRA matrix) is an
/// "unexpected key" that `load_state_dict(strict=False)` drops with a warning.
enum LoRAKeys {
    static let prefix = "base_model.model."

    enum Matrix: String { case a = "lora_A", b = "lora_B" }

    struct Pair { let module: String; let keyA: String; let keyB: String }

    /// `base_model.model.<module>.base_layer.weight`: PEFT's `save_embedding_layers` writes the
    /// base weight of an adapted output head or embedding beside its LoRA matrices, and
    /// `load_state_dict` loads it over the base model's. Assay accepts it only when it is the
    /// base weight, bit for bit (see `merge`).
    static func baseCopy(_ key: String) -> String? {
        let suffix = ".base_layer.weight"
        guard key.hasPrefix(prefix), key.hasSuffix(suffix), key.count > prefix.count + suffix.count else { return nil }
        return String(key.dropFirst(prefix.count).dropLast(suffix.count))
    }

    /// Each module's A and B keys, sorted by module. Refuses two keys for one matrix (naming both),
    /// keys PEFT would drop or read in another form, and modules with only one of the two.
    static func pairs(in file: SafeTensorsFile) throws(ModelError) -> (pairs: [Pair], baseCopies: [String: String]) {
        struct Slot: Hashable { let module: String; let matrix: Matrix }
        var owner: [Slot: String] = [:]
        var canonical: [String: Bool] = [:]
        // Every key that could be read as a LoRA matrix, first: a duplicate is the most telling error.
        for key in file.tensorNames {
            guard let (module, matrix, isCanonical) = classify(key) else { continue }
            let slot = Slot(module: module, matrix: matrix)
            if let other = owner[slot] {
                let (first, second) = other < key ? (other, key) : (key, other)
                throw .adapter(file: file.path,
                               reason: "tensors '\(first.terminalSafe)' and '\(second.terminalSafe)' are both \(matrix.rawValue) of "
                                   + "'\(module.terminalSafe)'; a reader could merge either (PEFT loads the base_model.model. one)")
            }
            owner[slot] = key
            canonical[key] = isCanonical
        }
        var baseCopies: [String: String] = [:]
        for key in file.tensorNames {
            guard let isCanonical = canonical[key] else {
                if let m = baseCopy(key) { baseCopies[m] = key; continue }
                if key.contains(".lora_embedding_A") || key.contains(".lora_embedding_B") {
                    throw .adapter(file: file.path,
                                   reason: "tensor '\(key.terminalSafe)' is an embedding LoRA matrix (lora_embedding_A/lora_embedding_B), "
                                       + "which Assay does not merge")
                }
                throw .adapter(file: file.path,
                               reason: "tensor '\(key.terminalSafe)' is not a LoRA A or B matrix (PEFT would ignore it, or load it over "
                                   + "the base weight of that name)")
            }
            if !isCanonical {
                if !key.hasPrefix(prefix) {
                    throw .adapter(file: file.path,
                                   reason: "tensor '\(key.terminalSafe)' lacks the base_model.model. prefix: PEFT does not load it and "
                                       + "keeps its initialisation instead")
                }
                throw .adapter(file: file.path,
                               reason: "tensor '\(key.terminalSafe)' uses PEFT's in-memory name (adapter name 'default'), not the saved "
                                   + "form '….\(key.contains(".lora_A.") ? "lora_A" : "lora_B").weight'")
            }
        }
        var modules = Set<String>()
        for slot in owner.keys { modules.insert(slot.module) }
        var out: [Pair] = []
        for m in modules.sorted() {
            let a = owner[Slot(module: m, matrix: .a)], b = owner[Slot(module: m, matrix: .b)]
            guard let a, let b else {
                let (has, lacks) = a == nil ? ("lora_B", "lora_A") : ("lora_A", "lora_B")
                throw .adapter(file: file.path,
                               reason: "module '\(m.terminalSafe)' has \(has) but no \(lacks) (PEFT would leave \(lacks) "
                                   + "at its initialisation)")
            }
            out.append(Pair(module: m, keyA: a, keyB: b))
        }
        guard !out.isEmpty else { throw .adapter(file: file.path, reason: "no LoRA tensors") }
        for (m, key) in baseCopies where !modules.contains(m) {
            throw .adapter(file: file.path,
                           reason: "tensor '\(key.terminalSafe)' is a base weight of '\(m.terminalSafe)', which has no LoRA matrices here "
                               + "(PEFT would load it over the base model's)")
        }
        return (out, baseCopies)
    }

    /// (module, matrix, is the form PEFT saves) for anything that names a LoRA matrix of a module,
    /// with or without the prefix, with or without the adapter name.
    static func classify(_ key: String) -> (String, Matrix, Bool)? {
        var rest = Substring(key)
        let prefixed = rest.hasPrefix(prefix)
        if prefixed { rest = rest.dropFirst(prefix.count) }
        for matrix in [Matrix.a, .b] {
            for (suffix, saved) in [(".\(matrix.rawValue).weight", true), (".\(matrix.rawValue).default.weight", false)] {
                if rest.hasSuffix(suffix), rest.count > suffix.count {
                    return (String(rest.dropLast(suffix.count)), matrix, prefixed && saved)
                }
            }
        }
        return nil
    }
}

// MARK: - Config

/// adapter_config.json, read as `LoraConfig` (PEFT 0.21) reads it, refusing what Assay does not
/// implement.
struct AdapterSettings {
    let rank: Int
    let alpha: Double
    let useRSLoRA: Bool
    let fanInFanOut: Bool
    let selection: TargetSelection

    /// Every field `LoraConfig` 0.21 saves (plus two from old PEFT versions), with the values Assay
    /// accepts. PEFT drops unknown fields with a warning; a field from a newer PEFT may change
    /// what the adapter means, so Assay refuses it.
    static let known: Set<String> = [
        "peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora", "use_dora",
        "modules_to_save", "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern",
        "target_modules", "exclude_modules", "megatron_config", "megatron_core", "trainable_token_indices", "loftq_config",
        "eva_config", "corda_config", "lora_ga_config", "velora_config", "monteclora_config", "arrow_config", "kasa_config",
        "use_bdlora", "alora_invocation_tokens", "use_qalora", "qalora_group_size", "layer_replication", "lora_bias",
        "target_parameters", "ensure_weight_tying", "base_model_name_or_path", "revision", "inference_mode",
        "auto_mapping", "peft_version",
        "enable_lora", "merge_weights",  // PEFT ≤ 0.3
    ]

    /// Fields that must be absent, null, false or empty: each is a feature Assay does not merge
    /// (or, for the sub-configs, an initialisation that needs data or rewrites the base).
    static let mustBeOff = ["use_dora", "lora_bias", "use_qalora", "ensure_weight_tying", "modules_to_save", "target_parameters",
                            "trainable_token_indices", "megatron_config", "layer_replication", "alora_invocation_tokens",
                            "loftq_config", "eva_config", "corda_config", "lora_ga_config", "velora_config", "monteclora_config",
                            "arrow_config", "kasa_config", "use_bdlora", "enable_lora", "merge_weights"]

    init(_ c: ConfigReader) throws(ModelError) {
        try Self.refuseUnsupported(c)
        _ = try c.bool("inference_mode", default: true)
        _ = try c.optionalInt("qalora_group_size", 1...(1 << 30))
        // PEFT's defaults when a field is absent: r = 8, lora_alpha = 8 (not r).
        rank = try c.int("r", 1...65_536, default: 8)
        if let v = c.json["lora_alpha"], case .bool = v {
            throw .invalidConfig(file: c.file, field: "lora_alpha", reason: "must be a number, found a boolean")
        }
        alpha = try c.double("lora_alpha", default: 8, positive: false)
        let dropout = try c.double("lora_dropout", default: 0, positive: false)
        guard (0...1).contains(dropout) else {  // nn.Dropout raises outside [0, 1]
            throw .invalidConfig(file: c.file, field: "lora_dropout", reason: "\(dropout) is outside 0…1")
        }
        useRSLoRA = try c.bool("use_rslora", default: false)
        fanInFanOut = try c.bool("fan_in_fan_out", default: false)
        let bias = try c.string("bias", default: "none")
        guard bias == "none" else {
            throw .unsupportedOption(file: c.file, field: "bias", value: "\"\(bias.terminalSafe)\" (only \"none\")")
        }
        // Initialisations only shape the A and B that the file then overwrites, except those that
        // rewrite the base weights at load (PiSSA, OLoRA, CorDA, MiCA, LoRA-GA) or need data.
        if let v = c.json["init_lora_weights"], v != .null {
            switch v {
            case .bool, .string("gaussian"): break
            default: throw .unsupportedOption(file: c.file, field: "init_lora_weights",
                                              value: "\(ConfigReader.show(v)) (only true, false or \"gaussian\": other initialisations "
                                                  + "change the base weights PEFT deploys)")
            }
        }
        selection = try TargetSelection(c)
    }

    /// Fields PEFT does not define, other PEFT types and tasks, features Assay does not merge, and
    /// metadata of the wrong type.
    static func refuseUnsupported(_ c: ConfigReader) throws(ModelError) {
        for m in c.json.members ?? [] where !Self.known.contains(m.key) {
            throw .unsupportedOption(file: c.file, field: m.key,
                                     value: "\(ConfigReader.show(m.value)) (a field PEFT 0.21's LoraConfig does not "
                                         + "define; PEFT would ignore it)")
        }
        let type = try c.string("peft_type")
        guard type == "LORA" else {
            throw .unsupportedOption(file: c.file, field: "peft_type", value: "\"\(type.terminalSafe)\" (only LORA)")
        }
        if let t = c.json["task_type"], t != .null, t != .string("CAUSAL_LM") {
            throw .unsupportedOption(file: c.file, field: "task_type", value: "\(ConfigReader.show(t)) (only CAUSAL_LM or null)")
        }
        for key in Self.mustBeOff {
            guard let v = c.json[key] else { continue }
            switch v {
            case .null, .bool(false): continue
            case let .array(a) where a.isEmpty: continue
            case let .object(o) where o.isEmpty: continue
            default: throw .unsupportedOption(file: c.file, field: key, value: ConfigReader.show(v))
            }
        }
        for key in ["base_model_name_or_path", "revision", "peft_version", "megatron_core"] {
            if let v = c.json[key], v != .null, v.string == nil {
                throw .invalidConfig(file: c.file, field: key, reason: "must be a string or null, found \(v.typeName)")
            }
        }
        if let v = c.json["auto_mapping"], v != .null, v.members == nil {
            throw .invalidConfig(file: c.file, field: "auto_mapping", reason: "must be an object or null, found \(v.typeName)")
        }
    }
}

/// `rank_pattern` / `alpha_pattern`, resolved per module as PEFT's `get_pattern_key` does.
struct ModulePatterns {
    let file: String
    let rank: Int
    let alpha: Double
    let ranks: [(key: String, pattern: PEFTPattern, value: Int)]
    let alphas: [(key: String, pattern: PEFTPattern, value: Double)]

    init(_ c: ConfigReader, settings: AdapterSettings, modules: [String]) throws(ModelError) {
        file = c.file
        rank = settings.rank
        alpha = settings.alpha
        var ranks: [(String, PEFTPattern, Int)] = []
        for m in try Self.members(c, "rank_pattern") {
            let p = try Self.pattern(c, "rank_pattern", m.key)
            guard let r = m.value.exactInt, (1...65_536).contains(r) else {
                throw .invalidConfig(file: c.file, field: "rank_pattern.\(m.key)",
                                     reason: "must be a positive integer rank, found \(ConfigReader.show(m.value))")
            }
            ranks.append((m.key, p, r))
        }
        var alphas: [(String, PEFTPattern, Double)] = []
        for m in try Self.members(c, "alpha_pattern") {
            let p = try Self.pattern(c, "alpha_pattern", m.key)
            guard case .number = m.value, let a = m.value.double, a.isFinite else {
                throw .invalidConfig(file: c.file, field: "alpha_pattern.\(m.key)",
                                     reason: "must be a finite number, found \(ConfigReader.show(m.value))")
            }
            alphas.append((m.key, p, a))
        }
        self.ranks = ranks.map { (key: $0.0, pattern: $0.1, value: $0.2) }
        self.alphas = alphas.map { (key: $0.0, pattern: $0.1, value: $0.2) }
        // PEFT 0.21 only warns about a key that matches no adapted module; it is a typo at best
        // and a decoy at worst.
        for (field, keys) in [("rank_pattern", self.ranks.map { ($0.key, $0.pattern) }),
                              ("alpha_pattern", self.alphas.map { ($0.key, $0.pattern) })] {
            for (key, p) in keys where !modules.contains(where: { p.prefixMatch($0) }) {
                throw .invalidConfig(file: c.file, field: "\(field).\(key)",
                                     reason: "matches none of the adapted modules (PEFT would ignore it)")
            }
        }
    }

    static func members(_ c: ConfigReader, _ field: String) throws(ModelError) -> [JSONMember] {
        guard let v = c.json[field], v != .null else { return [] }
        guard let m = v.members else { throw .invalidConfig(file: c.file, field: field, reason: "must be an object, found \(v.typeName)") }
        return m
    }

    static func pattern(_ c: ConfigReader, _ field: String, _ key: String) throws(ModelError) -> PEFTPattern {
        do { return try PEFTPattern.patternKey(key) } catch {
            throw .invalidConfig(file: c.file, field: "\(field).\(key)",
                                 reason: "not a pattern Assay reads as Python's re does: \(error.reason) at character \(error.offset)")
        }
    }

    /// The first matching key wins, in file order (`get_pattern_key`), else `r` / `lora_alpha`.
    func rankAndAlpha(for module: String) -> (Int, Double, String) {
        let r = ranks.first { $0.pattern.prefixMatch(module) }?.value ?? rank
        if let a = alphas.first(where: { $0.pattern.prefixMatch(module) }) { return (r, a.value, "alpha_pattern.\(a.key)") }
        return (r, alpha, "lora_alpha")
    }

    func rankField(for module: String) -> String {
        ranks.first { $0.pattern.prefixMatch(module) }
            .map { "adapter_config.json rank_pattern.\($0.key.terminalSafe)" } ?? "adapter_config.json r"
    }
}

/// `target_modules`, `exclude_modules`, `layers_to_transform` and `layers_pattern`, applied as
/// PEFT's `check_target_module_exists` and `BaseTuner.inject_adapter` apply them.
struct TargetSelection: Sendable {
    enum Targets: Sendable {
        case defaults                // null: TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
        case allLinear               // "all-linear", case-insensitive
        case regex(PEFTPattern)      // any other string: re.fullmatch
        case names(Set<String>)      // list: full name or `.`-suffix
    }
    enum Exclude: Sendable { case none, regex(PEFTPattern), names(Set<String>) }
    enum Layers: Sendable { case all, only(Set<Int>) }

    let targets: Targets
    let targetsText: String
    let exclude: Exclude
    let layers: Layers
    /// Names that must be the segment before the layer index (empty: any segment).
    let layersPattern: [String]

    init(_ c: ConfigReader) throws(ModelError) {
        let f = c.file
        let t = c.json["target_modules"] ?? .null
        (targets, targetsText) = try Self.targets(t, f)
        exclude = try Self.exclude(c.json["exclude_modules"] ?? .null, f)
        let l = c.json["layers_to_transform"] ?? .null
        layers = try Self.layers(l, f)
        let p = c.json["layers_pattern"] ?? .null
        layersPattern = try Self.layersPattern(p, f)
        // LoraConfig.__post_init__.
        if case .string = t, l != .null {
            throw .invalidConfig(file: f, field: "layers_to_transform",
                                 reason: "cannot be used when target_modules is a string (PEFT raises ValueError)")
        }
        if case .string = t, p != .null {
            throw .invalidConfig(file: f, field: "layers_pattern",
                                 reason: "cannot be used when target_modules is a string (PEFT raises ValueError)")
        }
        if !layersPattern.isEmpty && l == .null {
            throw .invalidConfig(file: f, field: "layers_pattern", reason: "needs layers_to_transform (PEFT raises ValueError)")
        }
    }

    static func strings(_ field: String, _ v: JSONValue, _ f: String) throws(ModelError) -> [String] {
        var out: [String] = []
        for x in v.array ?? [] {
            guard let s = x.string else { throw .invalidConfig(file: f, field: field, reason: "must hold strings, found \(x.typeName)") }
            out.append(s)
        }
        return out
    }

    static func regex(_ field: String, _ s: String, _ f: String) throws(ModelError) -> PEFTPattern {
        do { return try PEFTPattern(s) } catch {
            throw .invalidConfig(file: f, field: field,
                                 reason: "\"\(s.terminalSafe)\" is not a pattern Assay reads as Python's re does: \(error.reason) at "
                                     + "character \(error.offset)")
        }
    }

    static func targets(_ t: JSONValue, _ f: String) throws(ModelError) -> (Targets, String) {
        switch t {
        case .null: return (.defaults, "null")
        case let .string(s) where s.lowercased() == "all-linear": return (.allLinear, "\"\(s)\"")
        case let .string(s): return (.regex(try regex("target_modules", s, f)), "\"\(s)\"")
        case .array:
            let n = Set(try strings("target_modules", t, f))  // LoraConfig keeps a set
            return (.names(n), "[" + n.sorted().joined(separator: ", ") + "]")
        default: throw .invalidConfig(file: f, field: "target_modules",
                                      reason: "must be a string, a list of strings or null, found \(t.typeName)")
        }
    }

    static func exclude(_ e: JSONValue, _ f: String) throws(ModelError) -> Exclude {
        switch e {
        case .null: return .none
        case let .string(s): return s.isEmpty ? .none : .regex(try regex("exclude_modules", s, f))
        case .array: let n = Set(try strings("exclude_modules", e, f)); return n.isEmpty ? .none : .names(n)
        default: throw .invalidConfig(file: f, field: "exclude_modules",
                                      reason: "must be a string, a list of strings or null, found \(e.typeName)")
        }
    }

    static func layers(_ l: JSONValue, _ f: String) throws(ModelError) -> Layers {
        let field = "layers_to_transform"
        switch l {
        case .null: return .all
        case .number:
            guard let i = l.exactInt else {
                throw .invalidConfig(file: f, field: field,
                                     reason: "must be an integer or a list of integers, found \(ConfigReader.show(l))")
            }
            return .only([i])
        case let .array(items):
            var s = Set<Int>()
            for x in items {
                guard let i = x.exactInt else {
                    throw .invalidConfig(file: f, field: field, reason: "must hold integers, found \(ConfigReader.show(x))")
                }
                s.insert(i)
            }
            return s.isEmpty ? .all : .only(s)  // PEFT: an empty list selects every layer
        default: throw .invalidConfig(file: f, field: field, reason: "must be an integer or a list of integers, found \(l.typeName)")
        }
    }

    static func layersPattern(_ p: JSONValue, _ f: String) throws(ModelError) -> [String] {
        let names: [String]
        switch p {
        case .null: names = []
        case let .string(s): names = s.isEmpty ? [] : [s]
        case .array: names = try strings("layers_pattern", p, f)  // in order: PEFT tries them one by one
        default: throw .invalidConfig(file: f, field: "layers_pattern",
                                      reason: "must be a string, a list of strings or null, found \(p.typeName)")
        }
        // PEFT splices layers_pattern into a regex; only plain names read the same everywhere.
        for s in names where !s.unicodeScalars.allSatisfy(PEFTPattern.isWord) {
            throw .unsupportedOption(file: f, field: "layers_pattern", value: "\"\(s.terminalSafe)\" (only plain module names)")
        }
        return names
    }

    enum Verdict { case excluded, unmatched, targeted }

    /// `check_target_module_exists` for one module name.
    func check(_ key: String, names: Set<String>) -> Verdict {
        switch exclude {
        case .none: break
        case let .regex(p): if p.fullMatch(key) { return .excluded }
        case let .names(n): if n.contains(key) || n.contains(where: { key.hasSuffix("." + $0) }) { return .excluded }
        }
        switch targets {
        case let .regex(p): return p.fullMatch(key) ? .targeted : .unmatched
        case .defaults, .allLinear, .names:
            // A full name is taken as is, before any layer filter (PEFT's `key in target_modules`).
            if names.contains(key) { return .targeted }
            guard names.contains(where: { key.hasSuffix("." + $0) }) else { return .unmatched }
            guard case let .only(wanted) = layers else { return .targeted }
            guard let index = layerIndex(key) else { return .unmatched }
            return wanted.contains(index) ? .targeted : .unmatched
        }
    }

    /// The layer index PEFT reads from a module name: with no layers_pattern,
    /// `re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)` — the first all-digit segment after at least
    /// two others and before another; with one, `(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.` — the first
    /// all-digit segment right after a segment equal to a pattern, patterns tried in order.
    func layerIndex(_ key: String) -> Int? {
        let seg = key.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        func digits(_ s: String) -> Int? {
            guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            return Int(s) ?? Int.max
        }
        if layersPattern.isEmpty {
            for k in 2..<max(2, seg.count - 1) { if let i = digits(seg[k]) { return i } }
            return nil
        }
        for p in layersPattern {
            for j in 0..<max(0, seg.count - 2) where seg[j] == p { if let i = digits(seg[j + 1]) { return i } }
        }
        return nil
    }

    /// The modules PEFT adapts in `base`, or the error PEFT raises (`NoMatchingPeftModuleError`,
    /// "Target module … is not supported"), naming adapter_config.json.
    func select(in base: BaseModules, configFile f: String) throws(ModelError) -> Set<String> {
        let names: Set<String>
        switch targets {
        case .defaults:
            guard let d = BaseModules.defaultTargets[base.architecture] else {
                throw .invalidConfig(file: f, field: "target_modules", reason: "null, and PEFT has no default for this architecture")
            }
            names = d
        case .allLinear:
            // `_maybe_include_all_linear_layers`: every nn.Linear / Conv1D except the output head.
            names = Set(base.kinds.filter {
                ($0.value == .linear || $0.value == .conv1D || $0.value == .tiedLinear) && $0.key != "lm_head"
            }.keys)
        case let .names(n): names = n
        case .regex: names = []
        }
        var selected = Set<String>(), excluded = 0
        for key in base.kinds.keys.sorted() where !key.isEmpty {
            switch check(key, names: names) {
            case .excluded: excluded += 1
            case .unmatched: break
            case .targeted:
                switch base.kinds[key]! {
                case .linear, .conv1D: selected.insert(key)
                case .embedding:
                    throw .unsupportedOption(file: f, field: "target_modules",
                                             value: "\(targetsText.terminalSafe) (selects the embedding '\(key.terminalSafe)'; embedding "
                                                 + "LoRA is not supported)")
                case .tiedLinear:
                    throw .unsupportedOption(file: f, field: "target_modules",
                                             value: "\(targetsText.terminalSafe) (selects '\(key.terminalSafe)', which is tied to the "
                                                 + "input embedding: merging it would change both)")
                case .other:
                    throw .invalidConfig(file: f, field: "target_modules",
                                         reason: "\(targetsText.terminalSafe) selects '\(key.terminalSafe)', which LoRA cannot adapt (PEFT "
                                             + "raises: only Linear, Conv1D, Embedding, … are supported)")
                }
            }
        }
        if selected.isEmpty && excluded > 0 {
            throw .invalidConfig(file: f, field: "target_modules",
                                 reason: "\(targetsText.terminalSafe) selects nothing once exclude_modules removes \(excluded) module(s) "
                                     + "(PEFT raises NoMatchingPeftModuleError)")
        }
        if selected.isEmpty {
            throw .invalidConfig(file: f, field: "target_modules",
                                 reason: "\(targetsText.terminalSafe) matches no module of the base model: it names modules which the base "
                                     + "model does not have (PEFT raises NoMatchingPeftModuleError)")
        }
        return selected
    }
}

// MARK: - The base model as PEFT sees it

/// The module tree `named_modules()` gives for the transformers class of each architecture Assay
/// runs (checked against transformers 5.23 in Tests/Fixtures/peft/modules.json), derived from
/// the checkpoint's tensor names: every module with a weight, every container above one, and
/// the parameterless modules (activations, dropouts, rotary embeddings) a regex may also match.
public struct BaseModules: Sendable {
    public enum Kind: String, Sendable { case linear, conv1D = "conv1d", embedding, tiedLinear = "tied-linear", other }
    enum Architecture: Sendable { case llama, gpt2, gptNeoX }

    let architecture: Architecture
    /// PEFT module name → kind.
    public let kinds: [String: Kind]
    /// PEFT module name → the checkpoint's weight name, for modules with a weight.
    let weightName: [String: String]

    static let defaultTargets: [Architecture: Set<String>] = [
        .llama: ["q_proj", "v_proj"], .gpt2: ["c_attn"], .gptNeoX: ["query_key_value"],
    ]

    public init(_ w: WeightStore, modelType: String?, tiedOutputHead: Bool? = nil, adapter: String) throws(ModelError) {
        let names = w.names
        let has = Set(names)
        let arch: Architecture
        switch modelType {
        case "llama", "mistral", "qwen2": arch = .llama
        case "gpt2": arch = .gpt2
        case "gpt_neox": arch = .gptNeoX
        case nil:
            if has.contains("model.embed_tokens.weight") { arch = .llama }
            else if has.contains("transformer.wte.weight") || has.contains("wte.weight") { arch = .gpt2 }
            else if has.contains("gpt_neox.embed_in.weight") { arch = .gptNeoX }
            else { throw .adapter(file: adapter, reason: "cannot tell the base model's architecture from its weight names") }
        case let t?: throw .adapter(file: adapter, reason: "adapters on model_type '\(t.terminalSafe)' are not supported")
        }
        architecture = arch
        if arch == .gpt2 && !has.contains("transformer.wte.weight") {
            // transformers renames GPT2Model's keys into GPT2LMHeadModel's `transformer.` tree, so
            // PEFT's module names would not be the checkpoint's.
            throw .adapter(file: adapter,
                           reason: "the base checkpoint uses GPT2Model names without 'transformer.'; PEFT's module names would differ from "
                               + "the file's, so the adapter is refused")
        }
        var kinds: [String: Kind] = ["": .other]
        var weightName: [String: String] = [:]
        func addContainers(_ module: String) {
            var parts = module.split(separator: ".", omittingEmptySubsequences: false)
            while parts.count > 1 {
                parts.removeLast()
                let p = parts.joined(separator: ".")
                if kinds[p] == nil { kinds[p] = .other }
            }
        }
        for n in names {
            guard n.hasSuffix(".weight") || n.hasSuffix(".bias") else { continue }
            let stored = String(n[..<n.lastIndex(of: ".")!])
            // transformers 5 loads GPT-NeoX's `embed_out` as `lm_head`.
            let module = arch == .gptNeoX && stored == "embed_out" ? "lm_head" : stored
            addContainers(module)
            guard n.hasSuffix(".weight") else { if kinds[module] == nil { kinds[module] = .other }; continue }
            let last = module.split(separator: ".").last.map(String.init) ?? module
            let twoD = w.shape(n)?.count == 2
            let kind: Kind
            if !twoD { kind = .other }
            else if ["embed_tokens", "wte", "wpe", "embed_in"].contains(last) { kind = .embedding }
            else if arch == .gpt2 && ["c_attn", "c_proj", "c_fc"].contains(last) { kind = .conv1D }
            else { kind = .linear }
            kinds[module] = kind
            weightName[module] = n
        }
        // The output head tied to the input embedding has no tensor of its own (or a copy that
        // must equal the embedding): PEFT's merge would rewrite the shared tensor, both at once.
        if kinds["lm_head"] == nil || tiedOutputHead == true { kinds["lm_head"] = .tiedLinear; weightName["lm_head"] = nil }
        // Parameterless modules.
        let layerContainers = kinds.keys.filter {
            let p = $0.split(separator: ".", omittingEmptySubsequences: false)
            guard let last = p.last, !last.isEmpty, last.allSatisfy(\.isNumber) else { return false }
            switch arch {
            case .llama: return p.count == 3 && p[0] == "model" && p[1] == "layers"
            case .gpt2: return p.count == 3 && p[0] == "transformer" && p[1] == "h"
            case .gptNeoX: return p.count == 3 && p[0] == "gpt_neox" && p[1] == "layers"
            }
        }
        let (global, perLayer): ([String], [String])
        switch arch {
        case .llama: (global, perLayer) = (["model.rotary_emb"], ["mlp.act_fn"])
        case .gpt2: (global, perLayer) = (["transformer.drop"], ["attn.attn_dropout", "attn.resid_dropout", "mlp.act", "mlp.dropout"])
        case .gptNeoX: (global, perLayer) = (["gpt_neox.emb_dropout", "gpt_neox.rotary_emb"],
                                             ["mlp.act", "post_attention_dropout", "post_mlp_dropout"])
        }
        for g in global where kinds[g] == nil { kinds[g] = .other; addContainers(g) }
        for l in layerContainers {
            for s in perLayer where kinds["\(l).\(s)"] == nil { kinds["\(l).\(s)"] = .other; addContainers("\(l).\(s)") }
        }
        self.kinds = kinds
        self.weightName = weightName
    }
}
