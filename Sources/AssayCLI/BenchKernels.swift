import ArgumentParser
import Foundation
import AssayBench
import TensorCore

/// Assay's kernels at SmolLM2-135M's shapes against the machine's limits measured in the same
/// run: GEMM against OpenBLAS sgemm (the yardstick: its best core type on this CPU), single-row
/// products against the streaming read bandwidth, for each kernel variant the CPU has.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "GEMM and single-row kernels against OpenBLAS and the read bandwidth, per ISA variant.")

    @Option(help: "Repeats (median reported).") var repeats = 5
    @Option(help: "Cores for the two-core figures.") var threads = 2
    @Option(help: "MiB read by the bandwidth probe and by the single-row products (more than the last-level cache).")
    var streamMib = 2048
    @Option(help: "Rows M of the prefill-shaped products.") var rows = 2048

    func validate() throws {
        guard (1...1000).contains(repeats) else { throw ValidationError("--repeats must be between 1 and 1000") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be between 1 and 64") }
        guard (64...65_536).contains(streamMib) else { throw ValidationError("--stream-mib must be between 64 and 65536") }
        guard (1...16_384).contains(rows) else { throw ValidationError("--rows must be between 1 and 16384") }
    }

    func run() throws {
        let options = KernelBenchmark.Options(repeats: repeats, threads: threads, streamMib: streamMib, rows: rows)
        let result = try KernelBenchmark(options: options).run()
        var out = "kernels: \(result.active) (CPU supports \(result.detected)), OpenBLAS core \(result.blasCore), median of \(repeats)\n"
        for b in result.bandwidth {
            out += String(format: "read bandwidth, %d MiB, %d thread(s): %.1f GB/s\n", streamMib, b.threads, b.gbPerSecond)
        }
        out += "\nGEMM (\(rows) rows), GFLOP/s          "
            + result.variants.map { "assay \($0)".padding(toLength: 14, withPad: " ", startingAt: 0) }.joined()
            + "OpenBLAS    ratio\n"
        for g in result.gemm {
            var line = "  \(g.name) \(g.k)→\(g.n), \(g.threads) core(s)".padding(toLength: 33, withPad: " ", startingAt: 0)
            for gflops in g.gflops { line += String(format: "%-14.1f", gflops) }
            line += String(format: "%-12.1f%.2f\n", g.openBLASGflops, g.ratio)
            out += line
        }
        out += "\nsingle-row product x·Wᵀ, W (N×576) from DRAM: GB/s of weights read (fraction of read bandwidth)\n"
        for r in result.singleRow {
            var line = "  \(r.dtype) \(r.mebibytes) MiB, \(r.threads) core(s): ".padding(toLength: 30, withPad: " ", startingAt: 0)
            for f in r.figures {
                line += String(format: "%@ %.1f GB/s (%.0f%%)   ", f.isa.description, f.gbPerSecond, f.percentOfBandwidth)
            }
            out += line + "\n"
        }
        out += "\n"
        for e in result.elementwise {
            out += String(format: "siluGateFused (%d, 3072), %d core(s): %.2f ms\n", rows, e.threads, e.siluGateFusedSeconds * 1e3)
            out += String(format: "logSoftmax (%d, 3072), %d core(s): %.2f ms\n", rows, e.threads, e.logSoftmaxSeconds * 1e3)
        }
        emit(out)
    }
}
