import ArgumentParser
import Foundation
import AssayBench

/// Micro-benchmarks of the foundation: GEMM through TensorCore against direct cblas calls, and
/// opening and fully reading a large checkpoint. Figures are medians over repeats measured in
/// one run; the machine is shared, so compare ratios, not absolute numbers across runs.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark the tensor core and the safetensors loader.",
        subcommands: [BenchCore.self, BenchModel.self, BenchKernels.self, BenchTokenizer.self, BenchScan.self],
        defaultSubcommand: BenchCore.self
    )
}

struct BenchCore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "core",
        abstract: "GEMM GFLOP/s at transformer shapes (Assay's packed kernel vs OpenBLAS sgemm) and checkpoint load time."
    )

    @Option(help: "Repeats per measurement (the median is reported).")
    var repeats = 25

    @Option(help: "OpenBLAS threads (default: OpenBLAS's own choice).")
    var threads: Int?

    @Option(help: "Size in MB of the F32 checkpoint written and read for the load benchmark (0 skips it).")
    var loadMb = 540

    @Option(help: "Read this existing safetensors file or model directory instead of writing one.")
    var checkpoint: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        guard repeats >= 1 && repeats <= 10_000 else { throw ValidationError("--repeats must be between 1 and 10000") }
        guard loadMb >= 0 && loadMb <= 65_536 else { throw ValidationError("--load-mb must be between 0 and 65536") }
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
    }

    func run() throws {
        let options = CoreBenchmark.Options(repeats: repeats, threads: threads, loadMb: loadMb, checkpoint: checkpoint)
        let result = try CoreBenchmark(options: options).run(log: printError)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try enc.encode(result), as: UTF8.self))
        } else {
            var out = "kernels: \(result.kernels); BLAS: \(result.blas), core \(result.blasCore), "
                + "threads: \(result.threads), median of \(repeats)\n\n"
            out += "GEMM                       OpenBLAS GFLOP/s    Assay GFLOP/s    ratio\n"
            for g in result.gemm {
                out += "  \(g.shape.padding(toLength: 24, withPad: " ", startingAt: 0))"
                out += String(format: "  %14.1f   %18.1f   %5.3f\n", g.directGflops, g.tensorCoreGflops, g.ratio)
            }
            if let l = result.load {
                out += String(format: "\nload %@: %.0f MB, %d tensors: open+validate %.2f ms, full read to Float32 %.3f s (%.2f GB/s)\n",
                              l.path, Double(l.bytes) / 1e6, l.tensors, l.openSeconds * 1e3, l.readSeconds, l.readGBPerSecond)
            }
            emit(out)
        }
    }
}
