import ArgumentParser
import Foundation
import AssayBench

/// Scan throughput as a user-facing benchmark: the scan pipeline on a pair (default: the demo
/// pair), repeated; medians of tokens/s, probes/s and time per phase; recorded in the history
/// store and, with --compare, set beside the last run recorded on this machine.
struct BenchScan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Scan throughput on a pair: tokens/s, probes/s, time per phase, peak RSS; "
            + "recorded in the history, --compare to gate on regressions.",
        discussion: "Exit 0, or 1 with --compare when a figure regressed beyond --threshold against the last recorded run on this machine."
    )
    @Option(help: "Base model directory (default: .models/SmolLM2-135M-Instruct).") var base = ".models/SmolLM2-135M-Instruct"
    @Option(help: "Fine-tuned model directory.") var tuned: String?
    @Option(help: "LoRA adapter directory (default with neither: demo/backdoor-lora).") var adapter: String?
    @Option(help: "Probe suite (default: probes/default.jsonl).") var suite: [String] = []
    @Option(help: "Trigger file (default: probes/triggers.jsonl).") var triggers: String?
    @Option(help: "Use the first N probes of the suites (0: all).") var maxProbes = 32
    @Option(help: "Probes each trigger × insertion mode is inserted into.") var probesPerTrigger = 2
    @Option(help: "Repeats (medians reported).") var repeats = 3
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Option(help: "History for the figures: an SQLite file or a postgres:// URL (default: $ASSAY_DB, else .assay/history.sqlite).")
    var db: String?
    @Flag(help: "Compare with the last recorded run of this pair on this machine; exit 1 on a regression.") var compare = false
    @Option(help: "Regression threshold in percent for --compare.") var threshold = 10.0
    @Flag(help: "Do not record the figures.") var noRecord = false
    @Option(help: "Python with torch and transformers for a reference run of the base model's prefill/decode ('none' to skip).")
    var reference: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (0...100_000).contains(maxProbes), (1...10_000).contains(probesPerTrigger), (1...100).contains(repeats) else {
            throw ValidationError("--max-probes, --probes-per-trigger or --repeats out of range")
        }
        guard threshold > 0 && threshold < 1000 else { throw ValidationError("--threshold must be a percentage above 0") }
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be between 1 and 256") }
        guard tuned == nil || adapter == nil else { throw ValidationError("give at most one of --tuned and --adapter") }
    }

    func run() throws {
        let history = HistoryArguments.resolve(db ?? HistoryArguments.environmentDB ?? ".assay/history.sqlite")
        let options = ScanBenchmark.Options(base: base, tuned: tuned, adapter: adapter, suite: suite, triggers: triggers,
                                            maxProbes: maxProbes, probesPerTrigger: probesPerTrigger, repeats: repeats,
                                            threads: threads, history: history, compare: compare, threshold: threshold,
                                            noRecord: noRecord, reference: reference)
        let result = try ScanBenchmark(options: options).run(log: { if !json { printError($0) } })
        emit(try render(result.output, historyPath: result.historyPath))
        if !result.output.regressions.isEmpty { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    func render(_ out: ScanBenchmark.Output, historyPath: String) throws -> String {
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            return String(decoding: try enc.encode(out), as: UTF8.self)
        }
        let machine = out.machine
        var s = "scan benchmark: \(out.pair)\nmachine: \(machine.cpu), \(machine.cores) cores, "
            + "\(machine.threads) threads, BLAS \(machine.blas)\n"
        s += "median of \(repeats)\(out.previous != nil ? "; previous run on this machine beside it" : "")\n\n"
        for (k, v) in out.figures.sorted(by: { $0.key < $1.key }) {
            s += "  \(k.padding(toLength: 22, withPad: " ", startingAt: 0)) \(String(format: "%12.3f", v))"
            if let p = out.previous?[k] { s += String(format: "   was %12.3f  (%+.1f%%)", p, (v - p) / max(p, 1e-12) * 100) }
            s += "\n"
        }
        if let note = out.referenceNote { s += "\n\(note)\n" }
        if compare && out.previous == nil { s += "\nno earlier run of this pair on this machine in \(historyPath): nothing to compare\n" }
        for r in out.regressions { s += "REGRESSION: \(r)\n" }
        return s
    }
}
