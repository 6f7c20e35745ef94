import ArgumentParser
import Foundation
import AssayCommon
import Provenance

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the tensors, parameter count, file hashes and config of a safetensors file or model directory.",
        discussion: "Exit 0 when clean, 1 when a tensor holds NaN or Inf, 2 when the input is invalid."
    )

    @Argument(help: "A .safetensors file or a model directory.")
    var path: String

    @Flag(help: "Print the report as JSON (schema in docs/usage.md).")
    var json = false

    func run() throws {
        let report = try Inspector.inspect(URL(fileURLWithPath: path))
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            emit(String(decoding: try enc.encode(report), as: UTF8.self))
        } else {
            emit(render(report))
        }
        if report.nonFiniteTensors > 0 { throw ExitCode(ExitStatus.findings.rawValue) }
    }

    func render(_ r: InspectionReport) -> String {
        var out = "\(r.path.terminalSafe) (\(r.kind))\n"
        if let c = r.config {
            var parts: [String] = []
            if let v = c.modelType { parts.append("model_type=\(v.terminalSafe)") }
            if let v = c.architectures { parts.append("architectures=\(v.map(\.terminalSafe).joined(separator: ","))") }
            if let v = c.hiddenSize { parts.append("hidden=\(v)") }
            if let v = c.numHiddenLayers { parts.append("layers=\(v)") }
            if let v = c.numAttentionHeads { parts.append("heads=\(v)") }
            if let v = c.numKeyValueHeads { parts.append("kv_heads=\(v)") }
            if let v = c.vocabSize { parts.append("vocab=\(v)") }
            if let v = c.torchDtype { parts.append("dtype=\(v.terminalSafe)") }
            out += "config: \(parts.joined(separator: " "))\n"
        }
        out += "\nfiles:\n"
        for f in r.files { out += "  \(f.sha256)  \(pad(String(f.bytes), 12, right: true))  \(f.path.terminalSafe)\n" }
        let multiFile = Set(r.tensors.map(\.file)).count > 1
        let nameWidth = min(max(r.tensors.map { $0.name.terminalSafe.count }.max() ?? 4, 4), 72)
        out += "\ntensors:\n  \(pad("name", nameWidth))  \(pad("dtype", 7))  "
            + "\(pad("shape", 18))  \(pad("bytes", 12, right: true))  nan/inf\n"
        for t in r.tensors {
            let name = (multiFile ? "\(t.file):" : "") + t.name.terminalSafe
            let nf = t.nan.map { "\($0)/\(t.inf ?? 0)" } ?? "-"
            out += "  \(pad(name, nameWidth))  \(pad(t.dtype, 7))  "
                + "\(pad("[" + t.shape.map(String.init).joined(separator: ", ") + "]", 18))  "
                + "\(pad(String(t.bytes), 12, right: true))  \(nf)\n"
        }
        out += "\n\(r.tensorCount) tensors, \(r.parameterCount) parameters"
        out += r.nonFiniteTensors > 0 ? ", \(r.nonFiniteTensors) tensors with NaN or Inf" : ", no NaN or Inf"
        return out
    }

    func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
        s.count >= n ? s : (right ? String(repeating: " ", count: n - s.count) + s : s + String(repeating: " ", count: n - s.count))
    }
}
