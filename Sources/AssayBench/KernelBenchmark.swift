import CBLAS
import Foundation
import TensorCore

// `assay bench kernels`: the streaming read bandwidth; Assay's GEMM at SmolLM2-135M's shapes,
// per kernel variant, against OpenBLAS sgemm; single-row (decode) products against the read
// bandwidth; and two element-wise kernels of the forward pass.

/// Assay's kernels at SmolLM2-135M's shapes against the machine's limits measured in the same
/// run: GEMM against OpenBLAS sgemm (the yardstick: its best core type on this CPU), single-row
/// products against the streaming read bandwidth, for each kernel variant the CPU has.
public struct KernelBenchmark: Sendable {
    public struct Options: Sendable {
        /// Repeats (median reported), each measurement after one warm-up run.
        public var repeats: Int
        /// Cores for the two-core figures.
        public var threads: Int
        /// MiB read by the bandwidth probe and by the single-row products (more than the last-level cache).
        public var streamMib: Int
        /// Rows M of the prefill-shaped products.
        public var rows: Int

        public init(repeats: Int = 5, threads: Int = 2, streamMib: Int = 2048, rows: Int = 2048) {
            self.repeats = repeats
            self.threads = threads
            self.streamMib = streamMib
            self.rows = rows
        }
    }

    /// One pass of the bandwidth probe.
    public struct Bandwidth: Sendable {
        public var threads: Int
        public var gbPerSecond: Double
    }

    /// One prefill-shaped product (`rows` × K) · (K × N) on `threads` cores.
    public struct GemmRow: Sendable {
        public var name: String
        public var k: Int, n: Int
        public var threads: Int
        /// Assay's GFLOP/s for each of `Result.variants`, in that order.
        public var gflops: [Double]
        public var openBLASGflops: Double
        /// The best variant's GFLOP/s over OpenBLAS's.
        public var ratio: Double
    }

    /// One variant's single-row product.
    public struct SingleRowFigure: Sendable {
        public var isa: ISA
        /// GB/s of weights read.
        public var gbPerSecond: Double
        /// That rate in percent of the read bandwidth on as many cores.
        public var percentOfBandwidth: Double
    }

    /// Single-row products over one weight matrix on `threads` cores.
    public struct SingleRowRow: Sendable {
        /// The weights' dtype as printed (`F32`, `BF16`).
        public var dtype: String
        /// The packed weights' size in MiB (rounded down).
        public var mebibytes: Int
        public var threads: Int
        public var figures: [SingleRowFigure]
    }

    /// The element-wise kernels on (`rows`, 3072) on `threads` cores.
    public struct ElementwiseRow: Sendable {
        public var threads: Int
        public var siluGateFusedSeconds: Double
        public var logSoftmaxSeconds: Double
    }

    public struct Result: Sendable {
        /// The variant the kernels use, and the best one the CPU supports.
        public var active: ISA
        public var detected: ISA
        public var blasCore: String
        /// The variants measured, best first.
        public var variants: [ISA]
        public var bandwidth: [Bandwidth]
        public var gemm: [GemmRow]
        public var singleRow: [SingleRowRow]
        public var elementwise: [ElementwiseRow]
    }

    public var options: Options

    public init(options: Options = Options()) { self.options = options }

    /// Median time of `options.repeats` runs of `body` after one warm-up run.
    func medianTime(_ body: () throws -> Void) rethrows -> Double {
        var ts: [Double] = []
        try body()  // warm-up
        for _ in 0..<options.repeats { let t0 = now(); try body(); ts.append(now() - t0) }
        return median(ts)
    }

    public func run() throws -> Result {
        var result = Result(active: ISA.active, detected: ISA.detected, blasCore: BLAS.coreName,
                            variants: Array(ISA.allCases.filter { $0 >= .avx2 && $0 <= ISA.detected }.reversed()),
                            bandwidth: [], gemm: [], singleRow: [], elementwise: [])
        var rng = SplitMix64(seed: 1)
        let bandwidth = readBandwidth(&result)
        gemmTable(&result, &rng)
        singleRowTable(&result, bandwidth, &rng)
        try elementwise(&result, &rng)
        return result
    }

    /// Read bandwidth: one pass over a buffer larger than the last-level cache, split by cores.
    func readBandwidth(_ result: inout Result) -> [Int: Double] {
        let floats = options.streamMib << 18
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        defer { buffer.deallocate() }
        for i in stride(from: 0, to: floats, by: 1024) { buffer[i] = 1 }  // fault the pages in
        var bandwidth: [Int: Double] = [:]
        for ways in [1, options.threads] {
            nonisolated(unsafe) let p = buffer
            let t = medianTime {
                DispatchQueue.concurrentPerform(iterations: ways) { w in
                    let lo = floats * w / ways, hi = floats * (w + 1) / ways
                    // A call into C (CKernels), opaque to the optimizer: it is not elided.
                    _ = streamingRead(p + lo, count: hi - lo)
                }
            }
            bandwidth[ways] = Double(floats * 4) / t / 1e9
            result.bandwidth.append(Bandwidth(threads: ways, gbPerSecond: bandwidth[ways]!))
        }
        return bandwidth
    }

    /// Prefill-shaped products (M × K) · (K × N) at the model's shapes, against OpenBLAS sgemm.
    func gemmTable(_ result: inout Result, _ rng: inout SplitMix64) {
        let m = options.rows
        let shapes: [(String, Int, Int)] = [("qkv", 576, 960), ("o_proj", 576, 576), ("gate_up", 576, 3072), ("down", 1536, 576),
                                             ("lm_head/16", 576, 3072)]
        for ways in [1, options.threads] {
            for (name, k, n) in shapes {
                let a = (0..<(m * k)).map { _ in rng.nextFloat() - 0.5 }, w = (0..<(n * k)).map { _ in rng.nextFloat() - 0.5 }
                let packed = PackedMatrix(Tensor(shape: [n, k], data: w))
                var c = [Float](repeating: 0, count: m * n)
                let flops = 2.0 * Double(m * n * k)
                var gflops: [Double] = []
                var best = 0.0
                for isa in result.variants {
                    let t = a.withUnsafeBufferPointer { ap in
                        c.withUnsafeMutableBufferPointer { cp in
                            medianTime {
                                packed.multiply(m: m, a: ap.baseAddress!, lda: k, c: cp.baseAddress!, ldc: n, accumulate: false,
                                                ways: ways, isa: isa)
                            }
                        }
                    }
                    best = max(best, flops / t / 1e9)
                    gflops.append(flops / t / 1e9)
                }
                Parallel.useBLASThreads(ways)
                let tb = a.withUnsafeBufferPointer { ap in
                    w.withUnsafeBufferPointer { wp in
                        c.withUnsafeMutableBufferPointer { cp in
                            medianTime {
                                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1,
                                            ap.baseAddress, Int32(k),
                                            wp.baseAddress, Int32(k), 0, cp.baseAddress, Int32(n))
                            }
                        }
                    }
                }
                Parallel.configure(threads: options.threads)
                result.gemm.append(GemmRow(name: name, k: k, n: n, threads: ways, gflops: gflops, openBLASGflops: flops / tb / 1e9,
                                           ratio: best / (flops / tb / 1e9)))
            }
        }
    }

    /// Single-row products (decode): a weight matrix of `streamMib` MiB as F32 and as BF16.
    func singleRowTable(_ result: inout Result, _ bandwidth: [Int: Double], _ rng: inout SplitMix64) {
        let k = 576
        let n = max(16, (options.streamMib << 20) / (k * 4) / 16 * 16)
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
            for ways in [1, options.threads] {
                var row = SingleRowRow(dtype: "\(dtype)", mebibytes: packed.byteCount >> 20, threads: ways, figures: [])
                for isa in result.variants {
                    let t = x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { yp in
                            medianTime {
                                packed.multiply(m: 1, a: xp.baseAddress!, lda: k, c: yp.baseAddress!, ldc: n, accumulate: false,
                                                ways: ways, isa: isa)
                            }
                        }
                    }
                    let gbs = Double(packed.byteCount) / t / 1e9
                    row.figures.append(SingleRowFigure(isa: isa, gbPerSecond: gbs, percentOfBandwidth: 100 * gbs / bandwidth[ways]!))
                }
                result.singleRow.append(row)
            }
        }
    }

    /// Element-wise kernels of the forward pass.
    func elementwise(_ result: inout Result, _ rng: inout SplitMix64) throws {
        let m = options.rows
        let gu = Tensor(shape: [m, 3072], data: (0..<(m * 3072)).map { _ in rng.nextFloat() * 8 })
        for ways in [1, options.threads] {
            Parallel.configure(threads: ways)
            let s = try medianTime { _ = try gu.siluGateFused() }
            let r = medianTime { _ = gu.logSoftmax() }
            result.elementwise.append(ElementwiseRow(threads: ways, siluGateFusedSeconds: s, logSoftmaxSeconds: r))
        }
    }
}
