import ArgumentParser
import Foundation
import TensorCore

/// Kernel timings at SmolLM2-135M prefill shapes (2048 rows), to see where a forward pass goes.
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kernels", abstract: "Element-wise kernels and split GEMMs at model shapes.")

    @Option(help: "Repeats (median reported).") var repeats = 5
    @Option(help: "Cores for Assay's own split.") var threads = 2

    func run() throws {
        func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
        func time(_ body: () throws -> Void) rethrows -> Double {
            var ts: [Double] = []
            for _ in 0..<repeats { let t0 = now(); try body(); ts.append(now() - t0) }
            return ts.sorted()[ts.count / 2]
        }
        var rng = SplitMix64(seed: 1)
        let gu = Tensor(shape: [2048, 3072], data: (0..<(2048 * 3072)).map { _ in rng.nextFloat() * 8 })
        let x = Tensor(shape: [2048, 576], data: (0..<(2048 * 576)).map { _ in rng.nextFloat() })
        let w = Tensor(shape: [3072, 576], data: (0..<(3072 * 576)).map { _ in rng.nextFloat() })
        let x1 = Tensor(shape: [1, 576], data: (0..<576).map { _ in rng.nextFloat() })
        var out = ""
        for ways in [1, threads] {
            Parallel.configure(threads: ways)
            let s = try time { _ = try gu.siluGateFused() }
            out += String(format: "siluGateFused (2048, 3072), %d way(s): %.2f ms, %.2f ns/output\n", ways, s * 1e3, s * 1e9 / Double(2048 * 1536))
            let r = time { _ = gu.logSoftmax() }
            out += String(format: "logSoftmax (2048, 3072), %d way(s): %.2f ms\n", ways, r * 1e3)
            let g = try time { _ = try x.linear(weight: w) }
            out += String(format: "linear (2048,576)·(576,3072), Assay split %d way(s), BLAS 1 thread: %.2f ms, %.1f GFLOP/s\n", ways, g * 1e3, 2.0 * 2048 * 576 * 3072 / g / 1e9)
            Parallel.batchInvariant = true
            let gi = try time { _ = try x.linear(weight: w) }
            out += String(format: "linear (2048,576)·(576,3072), batch-invariant kernel, %d way(s): %.2f ms, %.1f GFLOP/s (%.2f× the BLAS split)\n", ways, gi * 1e3, 2.0 * 2048 * 576 * 3072 / gi / 1e9, gi / g)
            let x16 = x.slice(axis: 0, 0..<16).contiguous()
            let g16 = try time { for _ in 0..<20 { _ = try x16.linear(weight: w) } }
            Parallel.batchInvariant = false
            let b16 = try time { for _ in 0..<20 { _ = try x16.linear(weight: w) } }
            out += String(format: "linear (16,576)·(576,3072) ×20, %d way(s): batch-invariant %.3f ms, BLAS %.3f ms each (%.2f×)\n", ways, g16 * 50, b16 * 50, g16 / b16)
            let d = try time { for _ in 0..<100 { _ = try x1.linear(weight: w) } }
            out += String(format: "linear (1,576)·(576,3072) ×100, Assay split %d way(s): %.3f ms each, %.1f GB/s\n", ways, d * 10, 3072.0 * 576 * 4 * 100 / d / 1e9)
        }
        // Weight stored (in, out) so BLAS sees NoTrans B; and a gemv over a matrix larger than L3.
        let wt = w.transposed.materialized()
        let big = Tensor(shape: [49152, 576], data: (0..<(49152 * 576)).map { _ in rng.nextFloat() })
        for ways in [1, threads] {
            Parallel.configure(threads: ways)
            let g = try time { _ = try x.matmul(wt) }
            out += String(format: "matmul NoTrans (2048,576)·(576,3072), BLAS 1 thread: %.2f ms, %.1f GFLOP/s\n", g * 1e3, 2.0 * 2048 * 576 * 3072 / g / 1e9)
            let b = try time { for _ in 0..<10 { _ = try x1.linear(weight: big) } }
            out += String(format: "gemv (1,576)·(576,49152) from DRAM ×10, Assay split %d way(s): %.2f ms each, %.1f GB/s\n", ways, b * 100, 49152.0 * 576 * 4 * 10 / b / 1e9)
        }
        Parallel.useBLASThreads(threads)
        let b = try time { for _ in 0..<10 { _ = try x1.linear(weight: big) } }
        out += String(format: "gemv (1,576)·(576,49152) from DRAM ×10, OpenBLAS %d threads: %.2f ms each, %.1f GB/s\n", threads, b * 100, 49152.0 * 576 * 4 * 10 / b / 1e9)
        let g = try time { _ = try x.linear(weight: w) }
        out += String(format: "linear (2048,576)·(576,3072), OpenBLAS %d threads: %.2f ms, %.1f GFLOP/s\n", threads, g * 1e3, 2.0 * 2048 * 576 * 3072 / g / 1e9)
        let d = try time { for _ in 0..<100 { _ = try x1.linear(weight: w) } }
        out += String(format: "linear (1,576)·(576,3072) ×100, OpenBLAS %d threads: %.3f ms each, %.1f GB/s\n", threads, d * 10, 3072.0 * 576 * 4 * 100 / d / 1e9)
        emit(out)
    }
}
