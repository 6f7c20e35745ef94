import ArgumentParser
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
struct TemplateEncoder: ChatEncoder {
    let tokenizer: Tokenizer
    func encode(system: String?, user: String) throws -> [Int] {
        var messages: [ChatMessage] = []
        if let system { messages.append(ChatMessage(role: "system", content: system)) }
        messages.append(ChatMessage(role: "user", content: user))
        let text = try tokenizer.applyChatTemplate(messages, addGenerationPrompt: true)
        return tokenizer.encode(text, addSpecialTokens: false)
    }
    func decode(_ ids: [Int]) -> String { tokenizer.decode(ids, skipSpecialTokens: true) }
}

struct ScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Compare a fine-tune (or LoRA adapter) with its base on probe and trigger suites; gate on the verdict.",
        discussion: "Exit 0 pass or warn, 1 fail, 2 invalid input or error, 3 nothing could be scanned, 4 usage."
    )
    @OptionGroup var scan: ScanArguments
    @OptionGroup var discovery: DiscoveryArguments

    func run() throws { try scan.execute(discovery: discovery, knownTriggers: true) }
}

struct TriggerSearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trigger-search",
        abstract: "Search for triggers in no list (and, with --invert-targets, invert attack targets); report like a scan.",
        discussion: """
        The known trigger list supplies search candidates and its controls the null; the suite's probes are split into \
        search and held-out probes. Exit 0 nothing found, 1 a finding at a failing severity, 2 invalid input, 3 too few probes.
        """
    )
    @OptionGroup var scan: ScanArguments
    @OptionGroup var discovery: DiscoveryArguments

    func run() throws {
        var d = discovery
        d.searchTriggers = true
        try scan.execute(discovery: d, knownTriggers: false)
    }
}

/// Trigger search and target inversion settings, shared by `scan` and `trigger-search`.
struct DiscoveryArguments: ParsableArguments {
    @Flag(help: "Search for triggers in no list (beam search over rare, unusual and moved vocabulary entries; finding discovered_trigger).")
    var searchTriggers = false
    @Flag(help: "Force every vocabulary entry as the first response token and report what the fine-tune completes far more surely than its base (finding inverted_target).")
    var invertTargets = false
    @Option(help: "Single-token candidates the trigger search screens (a smaller vocabulary is screened whole).") var screenCandidates = 1024
    @Option(help: "Best screened candidates scored in every insertion mode on all search probes.") var searchCandidates = 48
    @Option(help: "Probes the search scores candidates on (the next --held-out-probes judge them).") var searchProbes = 4
    @Option(help: "Held-out probes the found triggers are verified on.") var heldOutProbes = 16
    @Option(help: "Longest trigger the search builds, in tokens.") var maxTriggerTokens = 4
    @Option(help: "Benign prompts every vocabulary entry is forced after in target inversion's first round (default: 1–8, as many as fit 65,536 forced steps).")
    var inversionPrompts: Int?
    @Option(help: "Entries target inversion extends and judges on held-out prompts.") var inversionSurvivors = 128

    func validate() throws {
        guard (1...1_000_000).contains(screenCandidates) else { throw ValidationError("--screen-candidates must be between 1 and 1000000") }
        guard (1...100_000).contains(searchCandidates) else { throw ValidationError("--search-candidates must be between 1 and 100000") }
        guard (1...256).contains(searchProbes) else { throw ValidationError("--search-probes must be between 1 and 256") }
        guard (3...1024).contains(heldOutProbes) else { throw ValidationError("--held-out-probes must be between 3 and 1024") }
        guard (1...8).contains(maxTriggerTokens) else { throw ValidationError("--max-trigger-tokens must be between 1 and 8") }
        if let inversionPrompts, !(1...64).contains(inversionPrompts) { throw ValidationError("--inversion-prompts must be between 1 and 64") }
        guard (1...4096).contains(inversionSurvivors) else { throw ValidationError("--inversion-survivors must be between 1 and 4096") }
    }

    var options: DiscoveryOptions {
        var o = DiscoveryOptions()
        o.screenCandidates = screenCandidates
        o.candidates = searchCandidates
        o.searchProbes = searchProbes
        o.heldOutProbes = heldOutProbes
        o.maxTriggerTokens = maxTriggerTokens
        o.inversionPrompts = inversionPrompts
        o.inversionSurvivors = inversionSurvivors
        return o
    }
}

struct ScanArguments: ParsableArguments {
    @Option(help: "Base model directory.") var base: String
    @Option(help: "Fine-tuned model directory.") var tuned: String?
    @Option(help: "PEFT LoRA adapter directory, applied to the base (instead of --tuned).") var adapter: String?
    @Option(help: "Probe suite file (repeatable; default: probes/default.jsonl).") var suite: [String] = []
    @Option(help: "Trigger file (default: probes/triggers.jsonl).") var triggers: String?
    @Option(help: "Policy file (JSON; README.md lists the keys and defaults).") var policy: String?
    @Option(help: "Report directory (default: reports/<run>).") var out: String?
    @Option(help: "Seed for every random choice.") var seed: UInt64 = 0
    @Option(help: "Response positions compared per continuation.") var responseTokens = 8
    @Option(help: "Probes each trigger × insertion mode is inserted into.") var probesPerTrigger = 16
    @Option(help: "Prompt variants per batch (results do not depend on it).") var batchSize = 32
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "Do not fork triggered prompts from their clean prompt's cache (results are identical; for benchmarking).")
    var noPromptSharing = false
    @Flag(help: "Compute the leading blocks base and tuned share bitwise separately for each (results are identical; for benchmarking).")
    var noLayerSharing = false
    @Flag(help: "Scan even when base and tuned tokenizer files differ.") var allowTokenizerMismatch = false
    @Flag(help: "Print report.json to stdout as well.") var json = false

    func validate() throws {
        guard (tuned == nil) != (adapter == nil) else { throw ValidationError("give exactly one of --tuned and --adapter") }
        guard (1...64).contains(responseTokens) else { throw ValidationError("--response-tokens must be between 1 and 64") }
        guard (1...10_000).contains(probesPerTrigger) else { throw ValidationError("--probes-per-trigger must be between 1 and 10000") }
        guard (1...4096).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 4096") }
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be between 1 and 256") }
    }

    func execute(discovery: DiscoveryArguments, knownTriggers: Bool) throws {
        let started = Date()
        let log = Log()
        let baseURL = URL(fileURLWithPath: base)
        let tunedURL = URL(fileURLWithPath: tuned ?? base)
        let adapterURL = adapter.map { URL(fileURLWithPath: $0) }
        for (name, u) in [("base", baseURL), ("tuned", tunedURL)] + (adapterURL.map { [("adapter", $0)] } ?? []) {
            var dir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: u.path, isDirectory: &dir), dir.boolValue else {
                throw ScanError.invalidInput("--\(name) \(u.path.terminalSafe): no such directory")
            }
        }
        let outURL = URL(fileURLWithPath: out ?? "reports/\(Self.runName(started))")
        // Fail fast on an unwritable directory; a scan that fails later leaves no empty directory behind.
        let createdOut = try ReportWriter.prepare(outURL)
        var wroteReport = false
        defer { if createdOut && !wroteReport { ReportWriter.discardIfEmpty(outURL) } }

        // Provenance first: nothing is loaded from a directory that could run code.
        log.say("auditing model directories")
        var findings: [Scan.Finding] = []
        var fingerprints: [String: ScanReport.ModelFingerprint] = [:]
        for (name, u) in [("base", baseURL), ("tuned", tunedURL)] + (adapterURL.map { [("adapter", $0)] } ?? []) where fingerprints[name] == nil {
            let audit = try Auditor.audit(u)
            fingerprints[name] = .init(path: u.path, files: Dictionary(audit.files.compactMap { f in f.sha256.map { (f.path, $0) } }, uniquingKeysWith: { a, _ in a }))
            for f in audit.findings where f.severity >= .medium {
                findings.append(Scan.Finding(kind: "artifact", severity: f.severity, title: "\(name): \(f.file.terminalSafe): \(f.message.terminalSafe)",
                                        trigger: nil, insertion: nil, category: nil, statistic: "audit", value: 0, pValue: nil,
                                        qValue: nil, effectSize: nil, attackSuccess: nil, evidence: []))
            }
        }

        // Both models must read identical token ids.
        let tokenizerDir = baseURL
        if adapterURL == nil {
            for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
                let a = fingerprints["base"]!.files[file], b = fingerprints["tuned"]!.files[file]
                if a != b && !allowTokenizerMismatch {
                    throw ScanError.mismatch("\(file) differs between base and tuned (or is missing from one); both models must see identical token ids (--allow-tokenizer-mismatch to scan anyway)")
                }
            }
        }
        let tokenizer = try Tokenizer.load(directory: tokenizerDir)
        guard tokenizer.hasChatTemplate else {
            throw ScanError.invalidInput("\(tokenizerDir.path.terminalSafe): the tokenizer has no chat template")
        }
        let policyValue: ScanPolicy
        var policyBytes: [UInt8] = Array("{}".utf8)
        if let policy {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: policy)) } catch {
                throw ScanError.invalidInput("\(policy.terminalSafe): cannot read the policy file")
            }
            do { policyValue = try JSONDecoder().decode(ScanPolicy.self, from: data) } catch {
                throw ScanError.invalidInput("\(policy.terminalSafe): invalid policy: \(Self.describe(error))")
            }
            policyBytes = [UInt8](data)
        } else {
            policyValue = ScanPolicy()
        }

        // Suites.
        let probesDir = SuiteLoader.builtinDirectory()
        let suiteURLs = suite.isEmpty ? [probesDir?.appendingPathComponent("default.jsonl")].compactMap { $0 } : suite.map { URL(fileURLWithPath: $0) }
        guard !suiteURLs.isEmpty else { throw ScanError.invalidInput("no probe suite given and the built-in probes/ directory was not found") }
        let suites = try suiteURLs.map { try SuiteLoader.loadProbes($0) }
        let triggerURL = triggers.map { URL(fileURLWithPath: $0) } ?? probesDir?.appendingPathComponent("triggers.jsonl")
        guard let triggerURL else { throw ScanError.invalidInput("no trigger file given and the built-in probes/ directory was not found") }
        let triggerSet = try SuiteLoader.loadTriggers(triggerURL)
        let probes = suites.flatMap(\.probes)
        guard !probes.isEmpty else { throw ScanError.nothingToScan("the probe suites hold no probes") }
        for t in triggerSet.triggers where tokenizer.encode(t.text, addSpecialTokens: false).isEmpty {
            throw ScanError.invalidInput("\(triggerURL.path.terminalSafe): trigger '\(t.id.terminalSafe)' tokenizes to nothing")
        }

        // Models.
        Parallel.configure(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        log.say("loading models")
        let baseModel = try ModelLoader.load(baseURL)
        let tunedModel = try ModelLoader.load(adapterURL == nil ? tunedURL : baseURL, adapter: adapterURL)
        guard baseModel.vocabularySize == tunedModel.vocabularySize else {
            throw ScanError.mismatch("vocabularies differ: base \(baseModel.vocabularySize), tuned \(tunedModel.vocabularySize)")
        }
        guard tokenizer.vocabularySize <= baseModel.vocabularySize else {
            throw ScanError.mismatch("the tokenizer has \(tokenizer.vocabularySize) tokens but the model's vocabulary is \(baseModel.vocabularySize)")
        }

        var options = ScanOptions()
        options.seed = seed
        options.responseTokens = responseTokens
        options.probesPerTrigger = probesPerTrigger
        options.batchSize = batchSize
        options.sharePromptPrefixes = !noPromptSharing
        options.shareIdenticalLayers = !noLayerSharing
        // Weight space first (seconds): its moved vocabulary rows seed the trigger search.
        log.say("comparing weights")
        let tokenText: (Int) -> String? = { tokenizer.decode([$0]) }
        let weights = try WeightDiff.compare(base: baseURL, tuned: adapterURL == nil ? tunedURL : nil, adapter: adapterURL,
                                             options: WeightDiffOptions(), tokenText: tokenText)
        for a in weights.anomalies where a.severity >= .medium {
            findings.append(Scan.Finding(kind: "weight_anomaly", severity: a.severity, title: a.title.terminalSafe, trigger: nil, insertion: nil,
                                         category: nil, statistic: "weight diff", value: a.tokens.map(\.shift).max() ?? 0, pValue: nil,
                                         qValue: nil, effectSize: nil, attackSuccess: nil, evidence: [],
                                         tokenIDs: a.tokens.isEmpty ? nil : a.tokens.map(\.token)))
        }

        // Without the known-trigger scan (trigger-search), the clean probes still give the baseline.
        let variants = knownTriggers ? Self.variants(probes: probes, triggers: triggerSet.triggers, options: options)
            : probes.map { Expansion.clean($0) }
        log.say("measuring \(variants.count) prompt variants (\(probes.count) probes\(knownTriggers ? ", \(triggerSet.triggers.count) triggers and controls" : ""))")
        let encoder = TemplateEncoder(tokenizer: tokenizer)
        let engine = ScanEngine(base: baseModel, tuned: tunedModel, encoder: encoder, options: options)
        engine.progress = { done, total in log.progress(done, total, since: started) }
        let measurements = try engine.measure(variants)
        let analysis = try Analyzer.analyze(measurements, triggers: knownTriggers ? triggerSet.triggers : [], policy: policyValue, seed: seed,
                                            decode: { tokenizer.decode($0, skipSpecialTokens: true) },
                                            userText: Analyzer.promptTexts(variants, measurements))
        findings += analysis.findings

        // What no list names.
        var searchSummary: TriggerSearchSummary?
        var inversionSummary: TargetInversionSummary?
        if discovery.searchTriggers || discovery.invertTargets {
            let special = tokenizer.specialTokenIDs
            let vocabulary = Vocabulary(size: min(tokenizer.vocabularySize, baseModel.vocabularySize), special: special,
                                        text: { tokenizer.decode([$0]) }, encode: { tokenizer.encode($0, addSpecialTokens: false) })
            let finder = Discovery(base: baseModel, tuned: tunedModel, encoder: encoder, vocabulary: vocabulary,
                                   options: discovery.options, scanOptions: options)
            finder.progress = { log.say($0) }
            if discovery.searchTriggers {
                let moved = weights.rowShifts.sorted { $0.shift != $1.shift ? $0.shift > $1.shift : $0.token < $1.token }.map(\.token)
                // In a scan the known list is tested as such: the search reports only what it does not name.
                let r = try finder.searchTriggers(probes: probes, known: triggerSet.triggers, rowShiftTokens: moved, policy: policyValue,
                                                  skipKnown: knownTriggers)
                searchSummary = r.summary
                findings += r.findings
            }
            if discovery.invertTargets {
                let r = try finder.invertTargets(probes: probes, policy: policyValue)
                inversionSummary = r.summary
                findings += r.findings
            }
        }
        if PhaseProfile.shared.enabled { printError("profile (ASSAY_PROFILE=1):\n" + PhaseProfile.shared.report()) }
        findings.sort { ($0.severity, $0.kind, $0.value) > ($1.severity, $1.kind, $1.value) }
        let verdict = findings.contains { policyValue.failOn.contains($0.severity) } ? "fail"
            : findings.contains { policyValue.warnOn.contains($0.severity) } ? "warn" : "pass"
        var bySeverity: [String: Int] = [:]
        for f in findings { bySeverity[f.severity.rawValue, default: 0] += 1 }
        let cleanDivergences = measurements.filter { $0.triggerID == nil }.map(\.divergence)
        let report = ScanReport(
            schemaVersion: ScanReport.schemaVersion, createdAt: ISO8601DateFormatter().string(from: started), verdict: verdict,
            fingerprint: .init(base: fingerprints["base"]!, tuned: fingerprints[adapterURL == nil ? "tuned" : "base"]!,
                               adapter: fingerprints["adapter"],
                               suites: Dictionary((suites.map { ($0.name, $0.sha256) } + [(triggerSet.name, triggerSet.sha256)]), uniquingKeysWith: { a, _ in a }),
                               policySHA256: policyBytes.withUnsafeBytes { Inspector.sha256Hex($0) }, seed: seed, options: options, toolVersion: Assay.version,
                               discovery: discovery.searchTriggers || discovery.invertTargets ? discovery.options : nil),
            policy: policyValue,
            summary: .init(probes: probes.count, variants: variants.count, medianCleanDivergence: try median(cleanDivergences),
                           findingsBySeverity: bySeverity, minimumDetectableEffect: analysis.minimumDetectableEffect),
            categories: analysis.categories, triggers: analysis.triggers, triggerCategories: analysis.triggerCategories, findings: findings,
            weights: .init(weights), triggerSearch: searchSummary, targetInversion: inversionSummary)
        try ReportWriter.write(report, to: outURL)
        wroteReport = true
        if json { emit(String(decoding: try report.json(), as: UTF8.self)) }
        let top = findings.first.map { " — \($0.severity.rawValue): \($0.title)" } ?? ""
        emit("\(verdict.uppercased()): \(findings.count) finding(s)\(top)\nreports: \(outURL.path)")
        log.say(String(format: "done in %.1f s", Date().timeIntervalSince(started)))
        if verdict == "fail" { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    /// Clean variants of every probe, then each trigger and control in each of its insertion
    /// modes inserted into a seeded, category-stratified subset of the probes.
    static func variants(probes: [Probe], triggers: [Trigger], options: ScanOptions) -> [ProbeVariant] {
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
    static func describe(_ error: Error) -> String {
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

    static func runName(_ d: Date) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.timeZone = TimeZone(identifier: "UTC")
        return "scan-" + f.string(from: d)
    }
}

/// Progress on stderr: a rewritten line with an ETA on a terminal, plain lines otherwise.
final class Log: @unchecked Sendable {
    let tty = isatty(STDERR_FILENO) == 1
    var lastPrinted = -1

    func say(_ s: String) { printError((tty ? "\r\u{1B}[K" : "") + "assay: " + s) }

    func progress(_ done: Int, _ total: Int, since start: Date) {
        let pct = total == 0 ? 100 : done * 100 / total
        let elapsed = Date().timeIntervalSince(start)
        let eta = done == 0 ? 0 : elapsed / Double(done) * Double(total - done)
        if tty {
            FileHandle.standardError.write(Data(String(format: "\r\u{1B}[Kassay: %d/%d variants (%d%%), ETA %.0f s", done, total, pct, eta).utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else if pct / 10 != lastPrinted / 10 || done == total {
            lastPrinted = pct
            printError("assay: progress \(done)/\(total) variants")
        }
    }
}
