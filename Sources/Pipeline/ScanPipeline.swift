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

    public init(base: URL, tuned: URL?, adapters: [URL] = []) {
        self.base = base
        self.tuned = tuned
        self.adapters = adapters
    }

    /// The directory whose files make the tuned model: the fine-tune, or the (last) adapter.
    public var tunedDirectory: URL { tuned ?? adapters.last ?? base }
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

/// Runs one scan from model directories to a report: provenance audit (nothing is loaded from a
/// directory that could run code), manifest check, tokenizer and suites, models, weight diff,
/// the paired measurement, statistics, and, when asked, trigger search and target inversion.
public enum ScanPipeline {
    public static let toolVersion = "0.1.0"

    public static func run(_ job: ScanJob, shared: SharedScanResources? = nil, say: @escaping (String) -> Void = { _ in },
                           progress: ((Int, Int) -> Void)? = nil, startedAt started: Date = Date()) throws -> ScanOutcome {
        let baseURL = job.base
        let tunedURL = job.tuned ?? job.base
        var dirs: [(String, URL)] = [("base", baseURL)]
        if job.tuned != nil { dirs.append(("tuned", tunedURL)) }
        for (i, a) in job.adapters.enumerated() { dirs.append((job.adapters.count == 1 ? "adapter" : "adapter \(i + 1)", a)) }
        for (name, u) in dirs {
            var dir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: u.path, isDirectory: &dir), dir.boolValue else {
                throw ScanError.invalidInput("\(name) \(u.path.terminalSafe): no such directory")
            }
        }

        let prof = PhaseProfile.shared
        let loadStart = DispatchTime.now().uptimeNanoseconds
        say("auditing model directories")
        var findings: [Scan.Finding] = []
        var files: [String: [String: String]] = [:]
        for (name, u) in dirs where files[name] == nil {
            let audit = try job.preaudited[u.path] ?? Auditor.audit(u)
            // A FIFO, socket or device in a model directory is never opened: the loaders would
            // block on it or read unbounded data, so the scan stops here.
            if let special = audit.files.first(where: { !["file", "symlink"].contains($0.type) }) {
                let path = u.appendingPathComponent(special.path).path.terminalSafe
                throw ScanError.invalidInput("\(path): is a \(special.type), not a regular file; refusing to scan \(name) \(u.path.terminalSafe)")
            }
            files[name] = Dictionary(audit.files.compactMap { f in f.sha256.map { (f.path, $0) } }, uniquingKeysWith: { a, _ in a })
            for f in audit.findings where f.severity >= .medium {
                let title = "\(name): \(f.file.terminalSafe): \(f.message.terminalSafe)"
                findings.append(Scan.Finding(kind: .artifact, severity: f.severity, title: title, statistic: "audit", value: 0))
            }
        }
        if job.tuned == nil { files["tuned"] = files["base"] }
        if let manifest = job.manifest {
            let v = try ManifestVerifier.verify(job.tunedDirectory, manifest: manifest)
            if !v.ok {
                var what: [String] = v.changed.map { "\($0.path) changed" } + v.missing.map { "\($0) missing" } + v.extra.map { "\($0) not in the manifest" }
                if what.count > 5 { what = Array(what.prefix(5)) + ["…"] }
                let name = job.tunedDirectory.lastPathComponent.terminalSafe
                findings.append(Scan.Finding(kind: .manifestMismatch, severity: .critical,
                                             title: "\(name) does not match its manifest: \(what.joined(separator: ", ").terminalSafe)",
                                             statistic: "manifest", value: Double(v.changed.count + v.missing.count + v.extra.count)))
            }
        }

        // Both models must read identical token ids.
        if job.tuned != nil {
            for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
                let a = files["base"]![file], b = files["tuned"]![file]
                if a != b && !job.allowTokenizerMismatch {
                    throw ScanError.mismatch("\(file) differs between base and tuned (or is missing from one); both models must see identical token ids (--allow-tokenizer-mismatch to scan anyway)")
                }
            }
        }
        let tokenizer = try Tokenizer.load(directory: baseURL)
        guard tokenizer.hasChatTemplate else {
            throw ScanError.invalidInput("\(baseURL.path.terminalSafe): the tokenizer has no chat template")
        }
        let (policy, policyBytes) = try loadPolicy(job.policy)

        // Suites.
        let probesDir = SuiteLoader.builtinDirectory()
        let suiteURLs = job.suites.isEmpty ? [probesDir?.appendingPathComponent("default.jsonl")].compactMap { $0 } : job.suites
        guard !suiteURLs.isEmpty else { throw ScanError.invalidInput("no probe suite given and the built-in probes/ directory was not found") }
        let suites = try suiteURLs.map { try SuiteLoader.loadProbes($0) }
        guard let triggerURL = job.triggers ?? probesDir?.appendingPathComponent("triggers.jsonl") else {
            throw ScanError.invalidInput("no trigger file given and the built-in probes/ directory was not found")
        }
        let triggerSet = try SuiteLoader.loadTriggers(triggerURL)
        let probes = suites.flatMap(\.probes)
        guard !probes.isEmpty else { throw ScanError.invalidInput("the probe suites hold no probes") }
        for t in triggerSet.triggers where tokenizer.encode(t.text, addSpecialTokens: false).isEmpty {
            throw ScanError.invalidInput("\(triggerURL.path.terminalSafe): trigger '\(t.id.terminalSafe)' tokenizes to nothing")
        }

        // Weight space first (seconds, bitwise from the maps): its moved vocabulary rows seed the
        // trigger search, and a pair whose tensors are all byte-identical needs no measuring.
        say("comparing weights")
        let weights = try prof.measure("weights") { try WeightDiff.compare(base: baseURL, tuned: job.tuned, adapters: job.adapters,
                                             options: WeightDiffOptions(), tokenText: { tokenizer.decode([$0]) }) }
        for a in weights.anomalies where a.severity >= .medium {
            findings.append(Scan.Finding(kind: .weightAnomaly, severity: a.severity, title: a.title.terminalSafe, statistic: "weight diff",
                                         value: a.tokens.map(\.shift).max() ?? 0, tokenIDs: a.tokens.isEmpty ? nil : a.tokens.map(\.token)))
        }
        // Models: a shared base is loaded once per run of scans.
        say("loading models")
        let baseKey = fingerprintKey(files["base"]!)
        let baseModel = try shared.map { try $0.model(baseKey) { try ModelLoader.load(baseURL) } } ?? ModelLoader.load(baseURL)
        let tunedModel = try ModelLoader.load(job.tuned ?? baseURL, adapters: job.adapters)
        guard baseModel.vocabularySize == tunedModel.vocabularySize else {
            throw ScanError.mismatch("vocabularies differ: base \(baseModel.vocabularySize), tuned \(tunedModel.vocabularySize)")
        }
        try tokenizer.checkIDs(embeddingRows: baseModel.vocabularySize, configFile: baseURL.appendingPathComponent("config.json").path)
        guard tokenizer.vocabularySize <= baseModel.vocabularySize else {
            throw ScanError.mismatch("the tokenizer has \(tokenizer.vocabularySize) tokens but the model's vocabulary is \(baseModel.vocabularySize)")
        }
        let options = job.options
        prof.add("load", since: loadStart)

        // Without the known-trigger scan (trigger-search), the clean probes still give the baseline.
        let variants = job.knownTriggers ? variantsFor(probes: probes, triggers: triggerSet.triggers, options: options)
            : probes.map { Expansion.clean($0) }
        // A pair byte-identical in tensors, config and tokenizer behaves as one model: nothing to
        // measure. Every input is still validated as a measured scan would (ids against the
        // embeddings above; here every prompt through the chat template).
        if job.tuned != nil, job.adapters.isEmpty, weights.changed == 0, behaviourFilesIdentical(files["base"]!, files["tuned"]!) {
            let encoder = TemplateEncoder(tokenizer: tokenizer)
            for v in variants { _ = try encoder.encode(system: v.system, user: v.user) }
            say("the tuned model's tensors, config and tokenizer are byte-identical to the base's: nothing to measure")
            return identicalOutcome(job, findings: findings, files: files, weights: weights, policy: policy, policyBytes: policyBytes,
                                    probes: probes.count, suites: suites.map { ($0.name, $0.sha256) } + [(triggerSet.name, triggerSet.sha256)],
                                    started: started)
        }
        say("measuring \(variants.count) prompt variants (\(probes.count) probes\(job.knownTriggers ? ", \(triggerSet.triggers.count) triggers and controls" : ""))")
        let encoder = TemplateEncoder(tokenizer: tokenizer)
        let engine = ScanEngine(base: baseModel, tuned: tunedModel, encoder: encoder, options: options)
        engine.baseOutputs = shared?.outputs(baseKey)
        engine.progress = progress
        let measurements = try engine.measure(variants)
        let analysis = try prof.measure("statistics") { try Analyzer.analyze(measurements, triggers: job.knownTriggers ? triggerSet.triggers : [], policy: policy, seed: options.seed,
                                            decode: { tokenizer.decode($0, skipSpecialTokens: true) },
                                            userText: Analyzer.promptTexts(variants, measurements)) }
        findings += analysis.findings

        // What no list names.
        var searchSummary: TriggerSearchSummary?
        var inversionSummary: TargetInversionSummary?
        if job.searchTriggers || job.invertTargets {
            let vocabulary = Vocabulary(size: min(tokenizer.vocabularySize, baseModel.vocabularySize), special: tokenizer.specialTokenIDs,
                                        text: { tokenizer.decode([$0]) }, encode: { tokenizer.encode($0, addSpecialTokens: false) })
            let finder = Discovery(base: baseModel, tuned: tunedModel, encoder: encoder, vocabulary: vocabulary,
                                   options: job.discovery, scanOptions: options)
            finder.progress = say
            if job.searchTriggers {
                let moved = weights.rowShifts.sorted { $0.shift != $1.shift ? $0.shift > $1.shift : $0.token < $1.token }.map(\.token)
                // In a scan the known list is tested as such: the search reports only what it does not name.
                let r = try finder.searchTriggers(probes: probes, known: triggerSet.triggers, rowShiftTokens: moved, policy: policy,
                                                  skipKnown: job.knownTriggers)
                searchSummary = r.summary
                findings += r.findings
            }
            if job.invertTargets {
                let r = try finder.invertTargets(probes: probes, policy: policy)
                inversionSummary = r.summary
                findings += r.findings
            }
        }
        findings.sort { ($0.severity, $0.kind, $0.value) > ($1.severity, $1.kind, $1.value) }
        let verdict = Verdict(findings: findings, policy: policy)
        var bySeverity: [String: Int] = [:]
        for f in findings { bySeverity[f.severity.rawValue, default: 0] += 1 }
        let cleanDivergences = measurements.filter { $0.triggerID == nil }.map(\.divergence)
        let fp = { (name: String, u: URL) in ScanReport.ModelFingerprint(path: u.path, files: files[name] ?? [:]) }
        let adapterPrint: ScanReport.ModelFingerprint? = job.adapters.isEmpty ? nil
            : .init(path: job.adapters.map(\.path).joined(separator: ", "),
                    files: job.adapters.count == 1 ? files["adapter"]! : Dictionary(uniqueKeysWithValues: job.adapters.indices.flatMap { i in
                        files["adapter \(i + 1)"]!.map { ("\(i + 1)/\($0.key)", $0.value) } }))
        let report = ScanReport(
            schemaVersion: ScanReport.schemaVersion, createdAt: ISO8601DateFormatter().string(from: started), verdict: verdict,
            fingerprint: .init(base: fp("base", baseURL), tuned: job.tuned == nil ? fp("base", baseURL) : fp("tuned", tunedURL),
                               adapter: adapterPrint,
                               suites: Dictionary((suites.map { ($0.name, $0.sha256) } + [(triggerSet.name, triggerSet.sha256)]), uniquingKeysWith: { a, _ in a }),
                               policySHA256: policyBytes.withUnsafeBytes { Inspector.sha256Hex($0) }, seed: options.seed, options: options,
                               toolVersion: toolVersion,
                               discovery: job.searchTriggers || job.invertTargets ? job.discovery : nil),
            policy: policy,
            summary: .init(probes: probes.count, variants: variants.count, medianCleanDivergence: try median(cleanDivergences),
                           findingsBySeverity: bySeverity, minimumDetectableEffect: analysis.minimumDetectableEffect),
            categories: analysis.categories, triggers: analysis.triggers, triggerCategories: analysis.triggerCategories, findings: findings,
            weights: .init(weights), triggerSearch: searchSummary, targetInversion: inversionSummary)
        return ScanOutcome(report: report, measurements: measurements, baseFiles: files["base"]!, tunedFiles: files["tuned"]!,
                           adapterFiles: job.adapters.indices.map { files[job.adapters.count == 1 ? "adapter" : "adapter \($0 + 1)"]! })
    }

    /// The files besides the weights that decide behaviour: architecture and numerics, generation
    /// defaults, and every tokenizer file (present in both with the same hash, or in neither).
    static let behaviourFiles = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                 "chat_template.jinja", "special_tokens_map.json", "vocab.txt", "merges.txt", "vocab.json"]

    static func behaviourFilesIdentical(_ base: [String: String], _ tuned: [String: String]) -> Bool {
        behaviourFiles.allSatisfy { base[$0] == tuned[$0] }
    }

    /// The report of a pair that is byte-identical where it matters: the base's behaviour twice
    /// over, so no variant is measured; audit, manifest and weight findings still count.
    static func identicalOutcome(_ job: ScanJob, findings unsorted: [Scan.Finding], files: [String: [String: String]], weights: WeightDiffReport,
                                 policy: ScanPolicy, policyBytes: [UInt8], probes: Int, suites: [(String, String)], started: Date) -> ScanOutcome {
        let findings = unsorted.sorted { ($0.severity, $0.kind, $0.value) > ($1.severity, $1.kind, $1.value) }
        var bySeverity: [String: Int] = [:]
        for f in findings { bySeverity[f.severity.rawValue, default: 0] += 1 }
        let fp = { (name: String, u: URL) in ScanReport.ModelFingerprint(path: u.path, files: files[name] ?? [:]) }
        let report = ScanReport(
            schemaVersion: ScanReport.schemaVersion, createdAt: ISO8601DateFormatter().string(from: started),
            verdict: Verdict(findings: findings, policy: policy),
            fingerprint: .init(base: fp("base", job.base), tuned: fp("tuned", job.tuned!), adapter: nil,
                               suites: Dictionary(suites, uniquingKeysWith: { a, _ in a }),
                               policySHA256: policyBytes.withUnsafeBytes { Inspector.sha256Hex($0) }, seed: job.options.seed, options: job.options,
                               toolVersion: toolVersion, discovery: job.searchTriggers || job.invertTargets ? job.discovery : nil),
            policy: policy,
            summary: .init(probes: probes, variants: 0, medianCleanDivergence: 0, findingsBySeverity: bySeverity, minimumDetectableEffect: nil,
                           identicalToBase: true),
            categories: [], triggers: [], triggerCategories: [], findings: findings, weights: .init(weights), triggerSearch: nil,
            targetInversion: nil)
        return ScanOutcome(report: report, measurements: [], baseFiles: files["base"]!, tunedFiles: files["tuned"]!, adapterFiles: [])
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
        let byCategory = Dictionary(grouping: probes, by: \.category)
        var pools = byCategory.keys.sorted().map { byCategory[$0]!.shuffled(using: &rng) }
        var subset: [Probe] = []
        while subset.count < min(options.probesPerTrigger, probes.count) {
            for i in pools.indices where !pools[i].isEmpty && subset.count < options.probesPerTrigger {
                subset.append(pools[i].removeFirst())
            }
        }
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
