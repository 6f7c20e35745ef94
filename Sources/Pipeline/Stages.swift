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

/// The audit's view of a scan's directories: each file's hash by role, and the findings so far.
struct Audited {
    /// Relative path → SHA-256 for every regular file, by directory role (base, tuned, adapters).
    var files: [FileRole: [String: String]] = [:]
    var findings: [Scan.Finding] = []
}

/// The scan's inputs besides the models, validated.
struct ScanInputs {
    var tokenizer: Tokenizer
    var policy: ScanPolicy
    /// The policy file's bytes, hashed into the report (`{}` without one).
    var policyBytes: [UInt8]
    var suites: [ProbeSuite]
    var triggers: TriggerSet
    var probes: [Probe]
}

/// Both models, loaded and checked against each other and the tokenizer.
struct ModelPair {
    var base: any CausalLanguageModel
    var tuned: any CausalLanguageModel
    /// The base's file hashes in one key (shared base models and outputs are keyed by it).
    var baseKey: String
}

/// The paired measurement and its statistics.
struct Measured {
    var variants: [ProbeVariant]
    var measurements: [VariantMeasurement]
    var analysis: Analysis
}

/// What trigger search and target inversion found.
struct Discovered {
    var findings: [Scan.Finding] = []
    var search: TriggerSearchSummary?
    var inversion: TargetInversionSummary?
}

extension ScanPipeline {
    /// The model directories of a job by role: base, tuned (a fine-tune), adapters in order.
    static func directories(_ job: ScanJob) -> [(role: FileRole, url: URL)] {
        var dirs: [(role: FileRole, url: URL)] = [(.base, job.base)]
        if let t = job.tuned { dirs.append((.tuned, t)) }
        return dirs + zip(FileRole.adapters(job.adapters.count), job.adapters).map { (role: $0, url: $1) }
    }

    static func checkDirectories(_ job: ScanJob) throws {
        for (role, u) in directories(job) { if let missing = missingModel(role, u) { throw missing } }
    }

    /// Nil when `url` can be the model of `role`: base and tuned are model directories or GGUF
    /// files, adapters directories. Reads nothing but the first bytes of a file.
    public static func missingModel(_ role: FileRole, _ url: URL) -> ScanError? {
        if role == .base || role == .tuned, ModelLoader.isGGUF(url) { return nil }
        var dir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &dir), dir.boolValue else {
            let what = role == .base || role == .tuned ? "no such directory or GGUF file" : "no such directory"
            return ScanError.invalidInput("\(role) \(url.path.terminalSafe): \(what)")
        }
        return nil
    }

    /// Whether either model is a GGUF file (tokenizers and configs then come from its metadata).
    static func involvesGGUF(_ job: ScanJob) -> Bool {
        ModelLoader.isGGUF(job.base) || job.tuned.map(ModelLoader.isGGUF) == true
    }

    /// Stage 1, audit: every directory as `assay audit` sees it. A FIFO, socket or device is never
    /// opened (the loaders would block on it or read unbounded data), so the scan stops here;
    /// findings of medium or higher become `artifact` findings.
    static func audit(_ job: ScanJob) throws -> Audited {
        var out = Audited()
        for (role, u) in directories(job) where out.files[role] == nil {
            let audit = try job.preaudited[u.path] ?? Auditor.audit(u)
            if let special = audit.files.first(where: { !["file", "symlink"].contains($0.type) }) {
                let path = u.appendingPathComponent(special.path).path.terminalSafe
                throw ScanError.invalidInput(
                    "\(path): is a \(special.type), not a regular file; refusing to scan \(role) \(u.path.terminalSafe)")
            }
            out.files[role] = Dictionary(audit.files.compactMap { f in f.sha256.map { (f.path, $0) } }, uniquingKeysWith: { a, _ in a })
            for f in audit.findings where f.severity >= .medium {
                let title = "\(role): \(f.file.terminalSafe): \(f.message.terminalSafe)"
                out.findings.append(Scan.Finding(kind: .artifact, severity: f.severity, title: title, statistic: "audit", value: 0))
            }
        }
        if job.tuned == nil { out.files[.tuned] = out.files[.base] }
        return out
    }

    /// Stage 2, provenance: the tuned model (or the last adapter) against its pinned manifest.
    static func checkManifest(_ job: ScanJob) throws -> [Scan.Finding] {
        guard let manifest = job.manifest else { return [] }
        let v = try ManifestVerifier.verify(job.tunedDirectory, manifest: manifest)
        guard !v.ok else { return [] }
        var what: [String] = v.changed.map { "\($0.path) changed" } + v.missing.map { "\($0) missing" }
            + v.extra.map { "\($0) not in the manifest" }
        if what.count > 5 { what = Array(what.prefix(5)) + ["…"] }
        let name = job.tunedDirectory.lastPathComponent.terminalSafe
        return [Scan.Finding(kind: .manifestMismatch, severity: .critical,
                             title: "\(name) does not match its manifest: \(what.joined(separator: ", ").terminalSafe)",
                             statistic: "manifest", value: Double(v.changed.count + v.missing.count + v.extra.count))]
    }

    /// Stage 3, tokenizer identity: both models must read identical token ids.
    /// Between a directory and a GGUF file, the tokenizers are compared by content instead
    /// (`checkTokenizerContent`, once the base's is loaded).
    static func checkTokenizerIdentity(_ job: ScanJob, files: [FileRole: [String: String]]) throws {
        guard job.tuned != nil, !job.allowTokenizerMismatch, !involvesGGUF(job) else { return }
        for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] where files[.base]![file] != files[.tuned]![file] {
            throw ScanError.mismatch("\(file) differs between base and tuned (or is missing from one); both models must see identical "
                                     + "token ids (--allow-tokenizer-mismatch to scan anyway)")
        }
    }

    /// Stage 3 for a GGUF file: the tuned model's tokenizer, built from its own files, must read
    /// text exactly as the base's does.
    static func checkTokenizerContent(_ job: ScanJob, base: Tokenizer) throws {
        guard let tuned = job.tuned, !job.allowTokenizerMismatch, involvesGGUF(job) else { return }
        if let difference = base.contentDifference(from: try Tokenizer.load(model: tuned)) {
            throw ScanError.mismatch("the tokenizers of base and tuned differ: \(difference); both models must see identical token ids "
                                     + "(--allow-tokenizer-mismatch to scan anyway)")
        }
    }

    /// Stage 4, inputs: the base's tokenizer and chat template, the policy, the suites and triggers.
    static func loadInputs(_ job: ScanJob) throws -> ScanInputs {
        let tokenizer = try Tokenizer.load(model: job.base)
        guard tokenizer.hasChatTemplate else {
            throw ScanError.invalidInput("\(job.base.path.terminalSafe): the tokenizer has no chat template")
        }
        let (policy, policyBytes) = try loadPolicy(job.policy)
        let suiteURLs = SuiteLoader.suitesOrBuiltin(job.suites)
        guard !suiteURLs.isEmpty else {
            throw ScanError.invalidInput("no probe suite given and the built-in probes/ directory was not found")
        }
        let suites = try suiteURLs.map { try SuiteLoader.loadProbes($0) }
        guard let triggerURL = SuiteLoader.triggersOrBuiltin(job.triggers) else {
            throw ScanError.invalidInput("no trigger file given and the built-in probes/ directory was not found")
        }
        let triggers = try SuiteLoader.loadTriggers(triggerURL)
        let probes = suites.flatMap(\.probes)
        guard !probes.isEmpty else { throw ScanError.invalidInput("the probe suites hold no probes") }
        for t in triggers.triggers where tokenizer.encode(t.text, addSpecialTokens: false).isEmpty {
            throw ScanError.invalidInput("\(triggerURL.path.terminalSafe): trigger '\(t.id.terminalSafe)' tokenizes to nothing")
        }
        return ScanInputs(tokenizer: tokenizer, policy: policy, policyBytes: policyBytes, suites: suites, triggers: triggers,
                          probes: probes)
    }

    /// Stage 5, weight space (seconds, bitwise from the maps): its moved vocabulary rows seed the
    /// trigger search, and a pair whose tensors are all byte-identical needs no measuring.
    static func compareWeights(_ job: ScanJob, tokenizer: Tokenizer) throws -> WeightDiffReport {
        try WeightDiff.compare(base: job.base, tuned: job.tuned, adapters: job.adapters, options: WeightDiffOptions(),
                               tokenText: { tokenizer.decode([$0]) })
    }

    static func weightFindings(_ weights: WeightDiffReport) -> [Scan.Finding] {
        weights.anomalies.filter { $0.severity >= .medium }.map { a in
            Scan.Finding(kind: .weightAnomaly, severity: a.severity, title: a.title.terminalSafe, statistic: "weight diff",
                         value: a.tokens.map(\.shift).max() ?? 0, tokenIDs: a.tokens.isEmpty ? nil : a.tokens.map(\.token))
        }
    }

    /// Stage 6, load: a shared base is loaded once per run of scans; vocabularies and every
    /// tokenizer id are checked against the embeddings.
    static func loadModels(_ job: ScanJob, inputs: ScanInputs, files: [FileRole: [String: String]],
                           shared: SharedScanResources?, profiler: Profiler) throws -> ModelPair {
        let baseKey = fingerprintKey(files[.base]!)
        let base = try shared.map { try $0.model(baseKey) { try ModelLoader.load(job.base) } } ?? ModelLoader.load(job.base)
        let tuned = try ModelLoader.load(job.tuned ?? job.base, adapters: job.adapters)
        base.tap = profiler.tap
        tuned.tap = profiler.tap
        guard base.vocabularySize == tuned.vocabularySize else {
            throw ScanError.mismatch("vocabularies differ: base \(base.vocabularySize), tuned \(tuned.vocabularySize)")
        }
        let tokenizer = inputs.tokenizer
        let configFile = ModelLoader.isGGUF(job.base) ? job.base.path : job.base.appendingPathComponent("config.json").path
        try tokenizer.checkIDs(embeddingRows: base.vocabularySize, configFile: configFile)
        guard tokenizer.vocabularySize <= base.vocabularySize else {
            throw ScanError.mismatch(
                "the tokenizer has \(tokenizer.vocabularySize) tokens but the model's vocabulary is \(base.vocabularySize)")
        }
        return ModelPair(base: base, tuned: tuned, baseKey: baseKey)
    }

    /// The files besides the weights that decide behaviour: architecture and numerics, generation
    /// defaults, and every tokenizer file (present in both with the same hash, or in neither).
    static let behaviourFiles = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                 "chat_template.jinja", "special_tokens_map.json", "vocab.txt", "merges.txt", "vocab.json"]

    /// A fine-tune byte-identical to its base in tensors and in every behaviour file behaves as the
    /// base does: nothing to measure.
    static func isIdenticalPair(_ job: ScanJob, weights: WeightDiffReport, files: [FileRole: [String: String]]) -> Bool {
        guard job.tuned != nil, job.adapters.isEmpty, weights.changed == 0 else { return false }
        if involvesGGUF(job) {
            // A GGUF file holds its config and tokenizer: identical only as the same bytes.
            return Set(files[.base]!.values) == Set(files[.tuned]!.values) && files[.base]!.count == 1
        }
        return behaviourFiles.allSatisfy { files[.base]![$0] == files[.tuned]![$0] }
    }

    /// Stages 7 and 8, measure and analyse: both models on every prompt variant, then the statistics.
    static func measure(_ job: ScanJob, variants: [ProbeVariant], inputs: ScanInputs, pair: ModelPair, encoder: TemplateEncoder,
                        shared: SharedScanResources?, profiler: Profiler, say: (String) -> Void,
                        progress: ((Int, Int) -> Void)?) throws -> Measured {
        let triggers = job.knownTriggers ? ", \(inputs.triggers.triggers.count) triggers and controls" : ""
        say("measuring \(variants.count) prompt variants (\(inputs.probes.count) probes\(triggers))")
        let engine = ScanEngine(base: pair.base, tuned: pair.tuned, encoder: encoder, options: job.options)
        engine.baseOutputs = shared?.outputs(pair.baseKey)
        engine.progress = progress
        engine.profiler = profiler
        let measurements = try engine.measure(variants)
        let tokenizer = inputs.tokenizer
        let analysis = try profiler.measure("statistics") {
            try Analyzer.analyze(measurements, triggers: job.knownTriggers ? inputs.triggers.triggers : [], policy: inputs.policy,
                                 seed: job.options.seed, decode: { tokenizer.decode($0, skipSpecialTokens: true) },
                                 userText: Analyzer.promptTexts(variants, measurements))
        }
        return Measured(variants: variants, measurements: measurements, analysis: analysis)
    }

    /// Stage 9, discover: triggers in no list (`--search-triggers`) and attack targets
    /// (`--invert-targets`). In a scan the known list is tested as such, so the search reports
    /// only what it does not name.
    static func discover(_ job: ScanJob, inputs: ScanInputs, pair: ModelPair, encoder: TemplateEncoder, weights: WeightDiffReport,
                         profiler: Profiler, say: @escaping (String) -> Void) throws -> Discovered {
        let tokenizer = inputs.tokenizer
        let vocabulary = Vocabulary(size: min(tokenizer.vocabularySize, pair.base.vocabularySize), special: tokenizer.specialTokenIDs,
                                    text: { tokenizer.decode([$0]) }, encode: { tokenizer.encode($0, addSpecialTokens: false) })
        let finder = Discovery(base: pair.base, tuned: pair.tuned, encoder: encoder, vocabulary: vocabulary, options: job.discovery,
                               scanOptions: job.options)
        finder.progress = say
        finder.profiler = profiler
        var out = Discovered()
        if job.searchTriggers {
            let moved = weights.rowShifts.sorted { $0.shift != $1.shift ? $0.shift > $1.shift : $0.token < $1.token }.map(\.token)
            let r = try finder.searchTriggers(probes: inputs.probes, known: inputs.triggers.triggers, rowShiftTokens: moved,
                                              policy: inputs.policy, skipKnown: job.knownTriggers)
            out.search = r.summary
            out.findings += r.findings
        }
        if job.invertTargets {
            let r = try finder.invertTargets(probes: inputs.probes, policy: inputs.policy)
            out.inversion = r.summary
            out.findings += r.findings
        }
        return out
    }

    /// Stage 10, the caller's checks (`ScanJob.checks`: a sweep's baseline drift), each timed as
    /// its own phase.
    static func runChecks(_ job: ScanJob, inputs: ScanInputs, pair: ModelPair, encoder: TemplateEncoder,
                          profiler: Profiler) throws -> [Scan.Finding] {
        let context = ScanCheck.Context(tuned: pair.tuned, encoder: encoder, probes: inputs.probes, policy: inputs.policy)
        return try job.checks.flatMap { check in try profiler.measure(check.name) { try check.run(context) } }
    }

    /// A GGUF file's quantisation types, for the fingerprint.
    static func quantization(_ location: URL) throws -> [String: Int]? {
        ModelLoader.isGGUF(location) ? try GGUFCheckpoint.open(location).quantizationTypes : nil
    }

    /// Stage 11, verdict and report: the findings in report order, the verdict, the fingerprint of
    /// every input. `measured` is nil for a pair reported identical without measuring.
    static func outcome(_ job: ScanJob, files: [FileRole: [String: String]], findings: [Scan.Finding], inputs: ScanInputs,
                        weights: WeightDiffReport, measured: (Measured, Discovered)?, started: Date) throws -> ScanOutcome {
        let findings = findings.sorted { ($0.severity, $0.kind, $0.value) > ($1.severity, $1.kind, $1.value) }
        var bySeverity: [String: Int] = [:]
        for f in findings { bySeverity[f.severity.rawValue, default: 0] += 1 }
        let adapterRoles = FileRole.adapters(job.adapters.count)
        let adapterPrint: ScanReport.ModelFingerprint? = job.adapters.isEmpty ? nil
            : .init(path: job.adapters.map(\.path).joined(separator: ", "),
                    files: job.adapters.count == 1 ? files[.adapter(nil)]! : Dictionary(uniqueKeysWithValues: job.adapters.indices.flatMap {
                        i in files[.adapter(i + 1)]!.map { ("\(i + 1)/\($0.key)", $0.value) }
                    }))
        let suites = inputs.suites.map { ($0.name, $0.sha256) } + [(inputs.triggers.name, inputs.triggers.sha256)]
        let fingerprint = ScanReport.Fingerprint(
            base: .init(path: job.base.path, files: files[.base] ?? [:], quantization: try quantization(job.base)),
            tuned: .init(path: (job.tuned ?? job.base).path, files: files[.tuned] ?? [:],
                         quantization: try quantization(job.tuned ?? job.base)),
            adapter: adapterPrint,
            suites: Dictionary(suites, uniquingKeysWith: { a, _ in a }),
            policySHA256: inputs.policyBytes.withUnsafeBytes { Inspector.sha256Hex($0) }, seed: job.options.seed, options: job.options,
            toolVersion: toolVersion, discovery: job.searchTriggers || job.invertTargets ? job.discovery : nil)
        let m = measured?.0, d = measured?.1
        let clean = m?.measurements.filter { $0.triggerID == nil }.map(\.divergence)
        let summary = ScanReport.Summary(probes: inputs.probes.count, variants: m?.variants.count ?? 0,
                                         medianCleanDivergence: try clean.map { try median($0) } ?? 0, findingsBySeverity: bySeverity,
                                         minimumDetectableEffect: m?.analysis.minimumDetectableEffect,
                                         identicalToBase: measured == nil ? true : nil,
                                         noEffect: m?.analysis.maxDivergence == 0 ? true : nil,
                                         mostDivergent: m?.analysis.mostDivergent)
        let report = ScanReport(
            schemaVersion: ScanReport.schemaVersion, createdAt: ISO8601DateFormatter().string(from: started),
            verdict: Verdict(findings: findings, policy: inputs.policy), fingerprint: fingerprint, policy: inputs.policy, summary: summary,
            categories: m?.analysis.categories ?? [], triggers: m?.analysis.triggers ?? [],
            triggerCategories: m?.analysis.triggerCategories ?? [], findings: findings, weights: .init(weights),
            triggerSearch: d?.search, targetInversion: d?.inversion)
        return ScanOutcome(report: report, measurements: m?.measurements ?? [], baseFiles: files[.base]!, tunedFiles: files[.tuned]!,
                           adapterFiles: adapterRoles.map { files[$0]! })
    }
}
