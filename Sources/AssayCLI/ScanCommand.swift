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
    @Flag(help: "Scan even when base and tuned tokenizer files differ.") var allowTokenizerMismatch = false
    @Flag(help: "Print report.json to stdout as well.") var json = false

    func validate() throws {
        guard (tuned == nil) != (adapter == nil) else { throw ValidationError("give exactly one of --tuned and --adapter") }
        guard (1...64).contains(responseTokens) else { throw ValidationError("--response-tokens must be between 1 and 64") }
        guard (1...10_000).contains(probesPerTrigger) else { throw ValidationError("--probes-per-trigger must be between 1 and 10000") }
        guard (1...4096).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 4096") }
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be between 1 and 256") }
    }

    func run() throws {
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
        let variants = Self.variants(probes: probes, triggers: triggerSet.triggers, options: options)
        log.say("measuring \(variants.count) prompt variants (\(probes.count) probes, \(triggerSet.triggers.count) triggers and controls)")
        let engine = ScanEngine(base: baseModel, tuned: tunedModel, encoder: TemplateEncoder(tokenizer: tokenizer), options: options)
        engine.progress = { done, total in log.progress(done, total, since: started) }
        let measurements = try engine.measure(variants)
        if PhaseProfile.shared.enabled { printError("profile (ASSAY_PROFILE=1):\n" + PhaseProfile.shared.report()) }
        // Evidence shows the prompt as the model saw it: a trigger in the system message is shown too.
        let users = Dictionary(zip(variants, measurements).map { v, m in
            ("\(m.probeID)\u{0}\(m.triggerID ?? "")\u{0}\(m.mode?.rawValue ?? "")",
             (v.system != v.probe.system ? v.system.map { "[system: \($0)] " } ?? "" : "") + v.user)
        },
                               uniquingKeysWith: { a, _ in a })
        let analysis = try Analyzer.analyze(measurements, triggers: triggerSet.triggers, policy: policyValue, seed: seed,
                                            decode: { tokenizer.decode($0, skipSpecialTokens: true) },
                                            userText: { users["\($0.probeID)\u{0}\($0.triggerID ?? "")\u{0}\($0.mode?.rawValue ?? "")"] ?? "" })
        findings += analysis.findings
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
                               policySHA256: policyBytes.withUnsafeBytes { Inspector.sha256Hex($0) }, seed: seed, options: options, toolVersion: Assay.version),
            policy: policyValue,
            summary: .init(probes: probes.count, variants: variants.count, medianCleanDivergence: try median(cleanDivergences),
                           findingsBySeverity: bySeverity, minimumDetectableEffect: analysis.minimumDetectableEffect),
            categories: analysis.categories, triggers: analysis.triggers, triggerCategories: analysis.triggerCategories, findings: findings)
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
