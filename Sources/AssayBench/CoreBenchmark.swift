import Foundation
import CBLAS
import AssayCommon
import TensorCore
import SafeTensors

// `assay bench core`: GEMM GFLOP/s at transformer shapes (Assay's packed kernel against direct
// OpenBLAS sgemm calls) and the time to open and fully read a large safetensors checkpoint.

/// Micro-benchmarks of the foundation: GEMM through TensorCore against direct cblas calls, and
/// opening and fully reading a large checkpoint. Figures are medians over repeats measured in
/// one run; the machine is shared, so compare ratios, not absolute numbers across runs.
public struct CoreBenchmark: Sendable {
    public struct Options: Sendable {
        /// Repeats per measurement (the median is reported).
        public var repeats: Int
        /// OpenBLAS threads (nil: OpenBLAS's own choice).
        public var threads: Int?
        /// Size in MB of the F32 checkpoint written and read for the load benchmark (0 skips it).
        public var loadMb: Int
        /// An existing safetensors file or model directory to read instead of writing one.
        public var checkpoint: String?

        public init(repeats: Int = 25, threads: Int? = nil, loadMb: Int = 540, checkpoint: String? = nil) {
            self.repeats = repeats
            self.threads = threads
            self.loadMb = loadMb
            self.checkpoint = checkpoint
        }
    }

    public struct GemmResult: Codable, Sendable {
        public var shape: String
        public var m: Int, k: Int, n: Int
        public var directGflops: Double
        public var tensorCoreGflops: Double
        public var ratio: Double
    }

    public struct LoadResult: Codable, Sendable {
        public var path: String
        public var bytes: Int
        public var tensors: Int
        public var openSeconds: Double
        public var readSeconds: Double
        public var readGBPerSecond: Double
    }

    public struct Result: Codable, Sendable {
        public var threads: Int
        public var blas: String
        public var blasCore: String
        public var kernels: String
        public var repeats: Int
        public var gemm: [GemmResult]
        public var load: LoadResult?
    }

    public var options: Options

    public init(options: Options = Options()) { self.options = options }

    /// Runs the GEMM shapes, then the load benchmark; `log` receives diagnostic lines (for stderr).
    public func run(log: (String) -> Void = { _ in }) throws -> Result {
        if let threads = options.threads { Parallel.useBLASThreads(threads) }
        // (M, K, N): the MLP up-projection of SmolLM2-135M over 512 tokens, its down
        // projection, a square attention projection, and a single-row (decode) product.
        let shapes = [(512, 576, 1536), (512, 1536, 576), (512, 576, 576), (1, 576, 1536)]
        var gemm: [GemmResult] = []
        for (m, k, n) in shapes { gemm.append(benchGemm(m: m, k: k, n: n)) }
        var load: LoadResult?
        if let checkpoint = options.checkpoint {
            load = try benchLoad(URL(fileURLWithPath: checkpoint), bytes: nil, log: log)
        } else if options.loadMb > 0 {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-bench-\(getpid())")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let file = dir.appendingPathComponent("model.safetensors")
            let bytes = try writeCheckpoint(file, megabytes: options.loadMb)
            load = try benchLoad(file, bytes: bytes, log: log)
        }
        return Result(threads: BLAS.threads, blas: BLAS.configuration, blasCore: BLAS.coreName, kernels: ISA.active.description,
                      repeats: options.repeats, gemm: gemm, load: load)
    }

    /// Direct `cblas_sgemm` into a preallocated C against Assay's packed kernel (the weight packed
    /// once, as a model holds it), interleaved so both see the same machine state. Assay's split
    /// uses as many cores as OpenBLAS has threads.
    func benchGemm(m: Int, k: Int, n: Int) -> GemmResult {
        var rng = SplitMix64(seed: 42)
        let a = Tensor(shape: [m, k], data: (0..<(m * k)).map { _ in rng.nextFloat() })
        let b = Tensor(shape: [k, n], data: (0..<(k * n)).map { _ in rng.nextFloat() })
        var c = [Float](repeating: 0, count: m * n)
        let packed = PackedMatrix(stacking: [PackedMatrix.Rows(b.transposed)])
        let ways = BLAS.threads
        var direct: [Double] = [], wrapped: [Double] = []
        let flops = 2.0 * Double(m * k * n)
        // Enough inner iterations that one sample lasts ≳ 2 ms.
        let inner = max(1, Int(2e-3 * 5e10 / flops))
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    for r in 0..<(options.repeats + 2) {
                        var t0 = now()
                        for _ in 0..<inner {
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), 1,
                                        ap.baseAddress, Int32(k), bp.baseAddress, Int32(n), 0, cp.baseAddress, Int32(n))
                        }
                        let d = (now() - t0) / Double(inner)
                        t0 = now()
                        for _ in 0..<inner {
                            packed.multiply(m: m, a: ap.baseAddress!, lda: k, c: cp.baseAddress!, ldc: n, accumulate: false, ways: ways)
                        }
                        let w = (now() - t0) / Double(inner)
                        if r >= 2 { direct.append(d); wrapped.append(w) }  // two warm-up rounds
                    }
                }
            }
        }
        let dg = flops / median(direct) / 1e9, wg = flops / median(wrapped) / 1e9
        return GemmResult(shape: "\(m)x\(k) · \(k)x\(n)", m: m, k: k, n: n, directGflops: dg, tensorCoreGflops: wg, ratio: wg / dg)
    }

    /// Writes an F32 checkpoint of about `megabytes` MB shaped like a small LLaMA (576-wide rows).
    func writeCheckpoint(_ url: URL, megabytes: Int) throws -> Int {
        let rowFloats = 576
        let tensorFloats = 576 * 1536
        let totalFloats = megabytes * 1_000_000 / 4
        var entries: [SafeTensorsWriter.Entry] = []
        var written = 0
        var i = 0
        var rng = SplitMix64(seed: 7)
        while written < totalFloats {
            let n = min(tensorFloats, totalFloats - written) / rowFloats * rowFloats
            if n == 0 { break }
            let t = Tensor(shape: [n / rowFloats, rowFloats], data: (0..<n).map { _ in rng.nextFloat() })
            entries.append(.init(name: String(format: "model.layers.%04d.weight", i), tensor: t))
            written += n
            i += 1
        }
        try SafeTensorsWriter.write(entries, metadata: ["format": "pt"], to: url)
        return 8 + entries.reduce(0) { $0 + $1.bytes.count }
    }

    func benchLoad(_ url: URL, bytes: Int?, log: (String) -> Void) throws -> LoadResult {
        var opens: [Double] = [], reads: [Double] = []
        var size = 0, count = 0
        for _ in 0..<3 {
            let t0 = now()
            let ckpt = try Checkpoint.open(url)
            let t1 = now()
            var checksum: Float = 0
            for name in ckpt.tensorNames {
                let t = try ckpt.tensor(name)
                checksum += t.withUnsafeBufferPointer { $0.first ?? 0 }
            }
            let t2 = now()
            opens.append(t1 - t0); reads.append(t2 - t1)
            size = ckpt.files.reduce(0) { $0 + $1.fileSize }
            count = ckpt.tensorNames.count
            if checksum.isNaN { log("note: checksum is NaN") }
        }
        let r = median(reads)
        return LoadResult(path: url.lastPathComponent, bytes: bytes ?? size, tensors: count, openSeconds: median(opens),
                          readSeconds: r, readGBPerSecond: Double(size) / r / 1e9)
    }
}
