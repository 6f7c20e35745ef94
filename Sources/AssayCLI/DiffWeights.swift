import ArgumentParser
import Foundation
import AssayCommon
import Tokenizers
import WeightDiff

struct DiffWeights: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff-weights",
        abstract: "Weight-space diff of a fine-tune against its base: per-tensor change, ΔW spectra, moved vocabulary rows.",
        discussion: "Exit 0 when no weight anomaly of severity high or above, 1 otherwise, 2 on invalid input."
    )

    @Option(help: "Base model directory or safetensors file.") var base: String
    @Option(help: "Fine-tuned model directory or safetensors file.") var tuned: String?
    @Option(help: "PEFT LoRA adapter applied to the base (instead of --tuned).") var adapter: String?
    @Option(help: "Vocabulary rows reported per matrix.") var top = 20
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard (tuned == nil) != (adapter == nil) else { throw ValidationError("give exactly one of --tuned and --adapter") }
        guard (1...10_000).contains(top) else { throw ValidationError("--top must be between 1 and 10000") }
    }

    func run() throws {
        var options = WeightDiffOptions()
        options.topRows = top
        // Moved vocabulary rows are labelled with their text when the base directory has a tokenizer.
        let baseURL = URL(fileURLWithPath: base)
        let tokenizer = FileManager.default.fileExists(atPath: baseURL.appendingPathComponent("tokenizer.json").path)
            ? try? Tokenizer.load(model: baseURL) : nil
        let r = try WeightDiff.compare(base: baseURL, tuned: tuned.map { URL(fileURLWithPath: $0) },
                                       adapter: adapter.map { URL(fileURLWithPath: $0) }, options: options,
                                       tokenText: tokenizer.map { t in { t.decode([$0]) } })
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            emit(String(decoding: try enc.encode(r), as: UTF8.self))
        } else {
            var s = "\(r.changed) changed, \(r.identical) identical tensors; first \(r.identicalPrefixLayers) blocks bitwise identical\n\n"
            s += "tensor                                              rel.change   max|Δ|   rank  eff.rank  top1   top4   top16\n"
            for t in r.tensors where t.status != .identical {
                s += t.name.terminalSafe.padding(toLength: 50, withPad: " ", startingAt: 0)
                if t.status != .changed { s += "  \(t.status.rawValue)\n"; continue }
                s += String(format: "  %9.2e  %8.2e", t.relativeChange ?? 0, t.maxAbsChange ?? 0)
                if let rank = t.rank {
                    s += String(format: "  %5d  %8.2f  %5.3f  %5.3f  %5.3f", rank, t.effectiveRank ?? 0, t.energyTop1 ?? 0,
                                t.energyTop4 ?? 0, t.energyTop16 ?? 0)
                }
                s += "\n"
            }
            if !r.layers.isEmpty {
                s += "\nchange by layer: " + r.layers.map { String(format: "%d:%.2e", $0.layer, $0.relativeChange) }
                    .joined(separator: " ") + "\n"
            }
            for a in r.anomalies { s += "\n\(a.severity.rawValue): \(a.title)" }
            emit(s)
        }
        if r.anomalies.contains(where: { $0.severity >= .high }) { throw ExitCode(ExitStatus.findings.rawValue) }
    }
}
