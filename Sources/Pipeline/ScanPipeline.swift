import Foundation
import AssayCommon
import Models
import Probes
import Provenance
import Reports
import Scan
import Stats
import TensorCore
import Tokenizers
import WeightDiff

/// The chat encoder the scan uses: the model's chat template, then the tokenizer without added
/// special tokens (what transformers' apply_chat_template(tokenize=True) does).
public struct TemplateEncoder: ChatEncoder {
    public let tokenizer: Tokenizer
    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }
    public func encode(system: String?, user: String) throws -> [Int] {
        var messages: [ChatMessage] = []
        if let system { messages.append(ChatMessage(role: "system", content: system)) }
        messages.append(ChatMessage(role: "user", content: user))
        let text = try tokenizer.applyChatTemplate(messages, addGenerationPrompt: true)
        return tokenizer.encode(text, addSpecialTokens: false)
    }
    public func decode(_ ids: [Int]) -> String { tokenizer.decode(ids, skipSpecialTokens: true) }
}

/// One scan's inputs: what `assay scan` takes on its command line and a sweep entry in its inventory.
public struct ScanJob: Sendable {
    public var base: URL
    /// A fine-tuned model directory, or nil with `adapters` (applied to the base in order).
    public var tuned: URL?
    public var adapters: [URL] = []
    /// Probe suites (empty: the built-in probes/default.jsonl).
    public var suites: [URL] = []
    /// Trigger file (nil: the built-in probes/triggers.jsonl).
    public var triggers: URL?
    public var policy: URL?
    /// Pinned hashes of the tuned model (or the single adapter) to verify first.
    public var manifest: URL?
    public var options = ScanOptions()
    public var searchTriggers = false
    public var invertTargets = false
    public var discovery = DiscoveryOptions()
    /// Test the known trigger list (false: `trigger-search`, whose list only seeds the search).
    public var knownTriggers = true
    public var allowTokenizerMismatch = false
    /// Audits already made of these directories (by path), so a sweep hashes each file once.
    public var preaudited: [String: AuditReport] = [:]
    /// Checks run after discovery on the loaded models (a sweep's baseline drift); their findings
    /// join the scan's before the verdict.
    public var checks: [ScanCheck] = []

    public init(base: URL, tuned: URL?, adapters: [URL] = []) {
        self.base = base
        self.tuned = tuned
        self.adapters = adapters
    }

    /// The directory whose files make the tuned model: the fine-tune, or the (last) adapter.
    public var tunedDirectory: URL { tuned ?? adapters.last ?? base }
}

/// A stage a caller adds to the scan (`ScanJob.checks`): it sees the models as loaded and the
/// inputs as read, and returns findings. `name` is its profile phase.
public struct ScanCheck: Sendable {
    public struct Context {
        public let tuned: any CausalLanguageModel
        public let encoder: TemplateEncoder
        public let probes: [Probe]
        public let policy: ScanPolicy
    }
    public var name: String
    public var run: @Sendable (Context) throws -> [Scan.Finding]
    public init(name: String, run: @escaping @Sendable (Context) throws -> [Scan.Finding]) {
        self.name = name
        self.run = run
    }
}

/// State a run of many scans shares: base models loaded once, and each base's outputs on every
/// prompt variant already measured (keyed by the base's file hashes).
public final class SharedScanResources: @unchecked Sendable {
    var models: [String: any CausalLanguageModel] = [:]
    public private(set) var baseOutputs: [String: BaseOutputCache] = [:]
    public let byteBudget: Int

    public init(byteBudget: Int = 4 << 30) { self.byteBudget = byteBudget }

    func model(_ key: String, load: () throws -> any CausalLanguageModel) rethrows -> any CausalLanguageModel {
        if let m = models[key] { return m }
        let m = try load()
        models[key] = m
        return m
    }

    func outputs(_ key: String) -> BaseOutputCache {
        if let c = baseOutputs[key] { return c }
        let c = BaseOutputCache(byteBudget: byteBudget)
        baseOutputs[key] = c
        return c
    }

    /// Variants whose base side was reused / computed, over all bases.
    public var reuse: (hits: Int, misses: Int) {
        baseOutputs.values.reduce((0, 0)) { ($0.0 + $1.hits, $0.1 + $1.misses) }
    }
}

/// What a scan produced.
public struct ScanOutcome {
    public var report: ScanReport
    public var measurements: [VariantMeasurement]
    /// The base's files (path → sha256), the tuned model's and the adapters'.
    public var baseFiles: [String: String]
    public var tunedFiles: [String: String]
    public var adapterFiles: [[String: String]]
}

/// Runs one scan from model directories to a report, as named stages (`ScanPipeline+Stages`):
/// audit → provenance checks → tokenizer identity → inputs → weight diff → load → measure →
/// analyse → discover → the caller's checks (a sweep's baseline drift) → verdict and report.
/// Nothing is loaded from a directory the audit did not pass; a pair byte-identical in everything
/// that decides behaviour is reported without measuring.
public enum ScanPipeline {
    public static let toolVersion = "0.1.0"

    public static func run(_ job: ScanJob, shared: SharedScanResources? = nil, profiler prof: Profiler = Profiler(enabled: false),
                           say: @escaping (String) -> Void = { _ in }, progress: ((Int, Int) -> Void)? = nil,
                           startedAt started: Date = Date()) throws -> ScanOutcome {
        let loadStart = DispatchTime.now().uptimeNanoseconds
        try checkDirectories(job)
        say("auditing model directories")
        var audited = try audit(job)
        audited.findings += try checkManifest(job)
        try checkTokenizerIdentity(job, files: audited.files)
        let inputs = try loadInputs(job)
        try checkTokenizerContent(job, base: inputs.tokenizer)
        say("comparing weights")
        let weights = try prof.measure("weights") { try compareWeights(job, tokenizer: inputs.tokenizer) }
        audited.findings += weightFindings(weights)
        say("loading models")
        let pair = try loadModels(job, inputs: inputs, files: audited.files, shared: shared, profiler: prof)
        prof.add("load", since: loadStart)

        // Without the known-trigger scan (trigger-search), the clean probes still give the baseline.
        let variants = job.knownTriggers ? variantsFor(probes: inputs.probes, triggers: inputs.triggers.triggers, options: job.options)
            : inputs.probes.map { Expansion.clean($0) }
        let encoder = TemplateEncoder(tokenizer: inputs.tokenizer)
        if isIdenticalPair(job, weights: weights, files: audited.files) {
            // Every input is still validated as a measured scan would: ids against the embeddings
            // (loadModels), and here every prompt through the chat template.
            for v in variants { _ = try encoder.encode(system: v.system, user: v.user) }
            say("the tuned model's tensors, config and tokenizer are byte-identical to the base's: nothing to measure")
            let checked = try runChecks(job, inputs: inputs, pair: pair, encoder: encoder, profiler: prof)
            return try outcome(job, files: audited.files, findings: audited.findings + checked, inputs: inputs, weights: weights,
                               measured: nil, started: started)
        }
        let measured = try measure(job, variants: variants, inputs: inputs, pair: pair, encoder: encoder, shared: shared,
                                   profiler: prof, say: say, progress: progress)
        let discovered = job.searchTriggers || job.invertTargets
            ? try discover(job, inputs: inputs, pair: pair, encoder: encoder, weights: weights, profiler: prof, say: say) : Discovered()
        let checked = try runChecks(job, inputs: inputs, pair: pair, encoder: encoder, profiler: prof)
        return try outcome(job, files: audited.files,
                           findings: audited.findings + measured.analysis.findings + discovered.findings + checked,
                           inputs: inputs, weights: weights, measured: (measured, discovered), started: started)
    }

    /// The policy file (JSON) and its bytes (hashed into the report); defaults without one.
    public static func loadPolicy(_ url: URL?) throws -> (ScanPolicy, [UInt8]) {
        guard let url else { return (ScanPolicy(), Array("{}".utf8)) }
        let data: [UInt8]
        do { data = try SafeFile.read(url, maxBytes: 1 << 20) } catch {
            throw ScanError.invalidInput("policy \(error.description)")
        }
        // The strict reader first: Foundation's decoder would keep one of two equal keys silently.
        let json: JSONValue
        do { json = try JSONParser.parse(data) } catch {
            throw ScanError.invalidInput("\(url.path.terminalSafe): invalid policy: not valid JSON: \(error.description)")
        }
        if let dup = json.firstDuplicateKeyPath {
            throw ScanError.invalidInput("\(url.path.terminalSafe): invalid policy: field '\(dup.terminalSafe)' appears more than once")
        }
        // 1e999 is valid JSON text but no threshold: name the field instead of Foundation's
        // "not valid JSON".
        for m in json.members ?? [] {
            if case .number = m.value, let d = m.value.double, !d.isFinite {
                throw ScanError.invalidInput(
                    "\(url.path.terminalSafe): invalid policy: field '\(m.key.terminalSafe)': \(d) is not a finite number")
            }
        }
        do { return (try JSONDecoder().decode(ScanPolicy.self, from: Data(data)), data) } catch {
            throw ScanError.invalidInput("\(url.path.terminalSafe): invalid policy: \(describe(error))")
        }
    }

    /// One hash for a directory's files (sorted path → sha256 pairs).
    public static func fingerprintKey(_ files: [String: String]) -> String {
        let text = files.keys.sorted().map { "\($0)\u{0}\(files[$0]!)\n" }.joined()
        return Array(text.utf8).withUnsafeBytes { Inspector.sha256Hex($0) }
    }

    /// Clean variants of every probe, then each trigger and control in each of its insertion
    /// modes inserted into a seeded, category-stratified subset of the probes.
    public static func variantsFor(probes: [Probe], triggers: [Trigger], options: ScanOptions) -> [ProbeVariant] {
        var out = probes.map { Expansion.clean($0) }
        var rng = SeededRandom(seed: options.seed).derive("probe-subset")
        let subset = categoryStratifiedOrder(probes, using: &rng).prefix(max(options.probesPerTrigger, 0))
        for t in triggers {
            for mode in options.modes where t.modes.contains(mode) {
                for p in subset { out.append(Expansion.variants(probe: p, trigger: t, mode: mode, seed: options.seed)) }
            }
        }
        return out
    }

    /// One line for a decoding error: the field's path and what is wrong with it.
    public static func describe(_ error: Error) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : "field '\(p)': "
        }
        switch error as? DecodingError {
        case let .typeMismatch(t, c)?: return "\(path(c))expected \(t)".terminalSafe
        case let .valueNotFound(t, c)?: return "\(path(c))missing \(t)".terminalSafe
        case let .keyNotFound(k, c)?: return "\(path(c))missing key '\(k.stringValue)'".terminalSafe
        case let .dataCorrupted(c)?: return "\(path(c))\(c.debugDescription)".terminalSafe
        default: return "\(error)".terminalSafe
        }
    }
}
