import ArgumentParser
import CBLAS
import Foundation
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

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
    func median(_ body: () throws -> Void) rethrows -> Double {
        var ts: [Double] = []
        try body()  // warm-up
        for _ in 0..<repeats { let t0 = now(); try body(); ts.append(now() - t0) }
        return ts.sorted()[ts.count / 2]
    }

    func run() throws {
        var out = "kernels: \(ISA.active) (CPU supports \(ISA.detected)), OpenBLAS core \(BLAS.coreName), median of \(repeats)\n"
        let variants = Array(ISA.allCases.filter { $0 >= .avx2 && $0 <= ISA.detected }.reversed())
        var rng = SplitMix64(seed: 1)
        let bandwidth = readBandwidth(&out)
        gemmTable(&out, variants, &rng)
        singleRowTable(&out, variants, bandwidth, &rng)
        try elementwise(&out, &rng)
        emit(out)
    }

    /// Read bandwidth: one pass over a buffer larger than the last-level cache, split by cores.
    func readBandwidth(_ out: inout String) -> [Int: Double] {
        let floats = streamMib << 18
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        defer { buffer.deallocate() }
        for i in stride(from: 0, to: floats, by: 1024) { buffer[i] = 1 }  // fault the pages in
        var bandwidth: [Int: Double] = [:]
        for ways in [1, threads] {
            nonisolated(unsafe) let p = buffer
            let t = median {
                DispatchQueue.concurrentPerform(iterations: ways) { w in
                    let lo = floats * w / ways, hi = floats * (w + 1) / ways
                    if streamingRead(p + lo, count: hi - lo).isNaN { print("") }
                }
            }
            bandwidth[ways] = Double(floats * 4) / t / 1e9
            out += String(format: "read bandwidth, %d MiB, %d thread(s): %.1f GB/s\n", streamMib, ways, bandwidth[ways]!)
        }
        return bandwidth
    }

    /// Prefill-shaped products (M × K) · (K × N) at the model's shapes, against OpenBLAS sgemm.
    func gemmTable(_ out: inout String, _ variants: [ISA], _ rng: inout SplitMix64) {
        let m = rows
        let shapes: [(String, Int, Int)] = [("qkv", 576, 960), ("o_proj", 576, 576), ("gate_up", 576, 3072), ("down", 1536, 576),
                                             ("lm_head/16", 576, 3072)]
        out += "\nGEMM (\(m) rows), GFLOP/s          "
            + variants.map { "assay \($0)".padding(toLength: 14, withPad: " ", startingAt: 0) }.joined()
            + "OpenBLAS    ratio\n"
        for ways in [1, threads] {
            for (name, k, n) in shapes {
                let a = (0..<(m * k)).map { _ in rng.nextFloat() - 0.5 }, w = (0..<(n * k)).map { _ in rng.nextFloat() - 0.5 }
                let packed = PackedMatrix(Tensor(shape: [n, k], data: w))
                var c = [Float](repeating: 0, count: m * n)
                let flops = 2.0 * Double(m * n * k)
                var line = "  \(name) \(k)→\(n), \(ways) core(s)".padding(toLength: 33, withPad: " ", startingAt: 0)
                var best = 0.0
                for isa in variants {
                    let t = a.withUnsafeBufferPointer { ap in
                        c.withUnsafeMutableBufferPointer { cp in
                            median {
                                packed.multiply(m: m, a: ap.baseAddress!, lda: k, c: cp.baseAddress!, ldc: n, accumulate: false,
                                                ways: ways, isa: isa)
                            }
                        }
                    }
                    best = max(best, flops / t / 1e9)
                    line += String(format: "%-14.1f", flops / t / 1e9)
                }
                Parallel.useBLASThreads(ways)
                let tb = a.withUnsafeBufferPointer { ap in
                    w.withUnsafeBufferPointer { wp in
                        c.withUnsafeMutableBufferPointer { cp in
                            median {
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1,
                                            ap.baseAddress, Int32(k),
                                            wp.baseAddress, Int32(k), 0, cp.baseAddress, Int32(n))
                            }
                        }
                    }
                }
                Parallel.configure(threads: threads)
                line += String(format: "%-12.1f%.2f\n", flops / tb / 1e9, best / (flops / tb / 1e9))
                out += line
            }
        }
    }

    /// Single-row products (decode): a weight matrix of --stream-mib MiB as F32 and as BF16.
    func singleRowTable(_ out: inout String, _ variants: [ISA], _ bandwidth: [Int: Double], _ rng: inout SplitMix64) {
        out += "\nsingle-row product x·Wᵀ, W (N×576) from DRAM: GB/s of weights read (fraction of read bandwidth)\n"
        let k = 576
        let n = max(16, (streamMib << 20) / (k * 4) / 16 * 16)
        let wBig = UnsafeMutablePointer<Float>.allocate(capacity: n * k)
        defer { wBig.deallocate() }
        for i in 0..<(n * k) { wBig[i] = Float(i % 251) / 251 - 0.5 }
        let bf = UnsafeMutablePointer<UInt16>.allocate(capacity: n * k)
        defer { bf.deallocate() }
        for i in 0..<(n * k) { bf[i] = UInt16(truncatingIfNeeded: wBig[i].bitPattern >> 16) }
        let x = (0..<k).map { _ in rng.nextFloat() - 0.5 }
        var y = [Float](repeating: 0, count: n)
        for (dtype, raw) in [(PackedDType.f32, UnsafeRawPointer(wBig)), (.bf16, UnsafeRawPointer(bf))] {
            let packed = PackedMatrix(stacking: [.init(raw: raw, dtype: dtype, rows: n, cols: k)])
            for ways in [1, threads] {
                var line = "  \(dtype) \(packed.byteCount >> 20) MiB, \(ways) core(s): ".padding(toLength: 30, withPad: " ", startingAt: 0)
                for isa in variants {
                    let t = x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { yp in
                            median {
                                packed.multiply(m: 1, a: xp.baseAddress!, lda: k, c: yp.baseAddress!, ldc: n, accumulate: false,
                                                ways: ways, isa: isa)
                            }
                        }
                    }
                    let gbs = Double(packed.byteCount) / t / 1e9
                    line += String(format: "%@ %.1f GB/s (%.0f%%)   ", isa.description, gbs, 100 * gbs / bandwidth[ways]!)
                }
                out += line + "\n"
            }
        }
    }

    /// Element-wise kernels of the forward pass.
    func elementwise(_ out: inout String, _ rng: inout SplitMix64) throws {
        let m = rows
        let gu = Tensor(shape: [m, 3072], data: (0..<(m * 3072)).map { _ in rng.nextFloat() * 8 })
        out += "\n"
        for ways in [1, threads] {
            Parallel.configure(threads: ways)
            let s = try median { _ = try gu.siluGateFused() }
            out += String(format: "siluGateFused (%d, 3072), %d core(s): %.2f ms\n", m, ways, s * 1e3)
            let r = median { _ = gu.logSoftmax() }
            out += String(format: "logSoftmax (%d, 3072), %d core(s): %.2f ms\n", m, ways, r * 1e3)
        }
    }
}
