import ArgumentParser
import Foundation
import CBLAS
import AssayCommon
import TensorCore
import SafeTensors

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

    struct GemmResult: Codable {
        var shape: String
        var m: Int, k: Int, n: Int
        var directGflops: Double
        var tensorCoreGflops: Double
        var ratio: Double
    }

    struct LoadResult: Codable {
        var path: String
        var bytes: Int
        var tensors: Int
        var openSeconds: Double
        var readSeconds: Double
        var readGBPerSecond: Double
    }

    struct Result: Codable {
        var threads: Int
        var blas: String
        var blasCore: String
        var kernels: String
        var repeats: Int
        var gemm: [GemmResult]
        var load: LoadResult?
    }

    func validate() throws {
        guard repeats >= 1 && repeats <= 10_000 else { throw ValidationError("--repeats must be between 1 and 10000") }
        guard loadMb >= 0 && loadMb <= 65_536 else { throw ValidationError("--load-mb must be between 0 and 65536") }
        if let threads, threads < 1 || threads > 256 { throw ValidationError("--threads must be between 1 and 256") }
    }

    func run() throws {
        if let threads { Parallel.useBLASThreads(threads) }
        // (M, K, N): the issue's MLP up-projection of SmolLM2-135M over 512 tokens, its down
        // projection, a square attention projection, and a single-row (decode) product.
        let shapes = [(512, 576, 1536), (512, 1536, 576), (512, 576, 576), (1, 576, 1536)]
        var gemm: [GemmResult] = []
        for (m, k, n) in shapes { gemm.append(benchGemm(m: m, k: k, n: n)) }
        var load: LoadResult?
        if let checkpoint {
            load = try benchLoad(URL(fileURLWithPath: checkpoint), bytes: nil)
        } else if loadMb > 0 {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-bench-\(getpid())")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let file = dir.appendingPathComponent("model.safetensors")
            let bytes = try writeCheckpoint(file, megabytes: loadMb)
            load = try benchLoad(file, bytes: bytes)
        }
        let result = Result(threads: BLAS.threads, blas: BLAS.configuration, blasCore: BLAS.coreName, kernels: ISA.active.description,
                            repeats: repeats, gemm: gemm, load: load)
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            emit(String(decoding: try enc.encode(result), as: UTF8.self))
        } else {
            var out = "kernels: \(result.kernels); BLAS: \(result.blas), core \(result.blasCore), "
                + "threads: \(result.threads), median of \(repeats)\n\n"
            out += "GEMM                       OpenBLAS GFLOP/s    Assay GFLOP/s    ratio\n"
            for g in gemm {
                out += "  \(g.shape.padding(toLength: 24, withPad: " ", startingAt: 0))"
                out += String(format: "  %14.1f   %18.1f   %5.3f\n", g.directGflops, g.tensorCoreGflops, g.ratio)
            }
            if let l = load {
                out += String(format: "\nload %@: %.0f MB, %d tensors: open+validate %.2f ms, full read to Float32 %.3f s (%.2f GB/s)\n",
                              l.path, Double(l.bytes) / 1e6, l.tensors, l.openSeconds * 1e3, l.readSeconds, l.readGBPerSecond)
            }
            emit(out)
        }
    }

    func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

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
                    for r in 0..<(repeats + 2) {
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

    func benchLoad(_ url: URL, bytes: Int?) throws -> LoadResult {
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
            if checksum.isNaN { printError("note: checksum is NaN") }
        }
        let r = median(reads)
        return LoadResult(path: url.lastPathComponent, bytes: bytes ?? size, tensors: count, openSeconds: median(opens),
                          readSeconds: r, readGBPerSecond: Double(size) / r / 1e9)
    }
}

/// Deterministic generator for benchmark data (SplitMix64, Steele et al. 2014).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func nextFloat() -> Float { Float(next() >> 40) / Float(1 << 24) - 0.5 }
}
