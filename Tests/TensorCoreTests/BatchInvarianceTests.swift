import Foundation
import Testing
import TensorCore

/// Every linear layer runs through `PackedMatrix`, whose contract is that output (i, j) is one
/// fused multiply-add chain over k in order, started from the bias (or 0). So a row's output is
/// bitwise the same whatever else shares its GEMM (row count, position), however many ways the
/// work is split, and whichever ISA variant runs it; the scan's reports rest on this. Checked
/// against a chain written here in Swift, for F32, BF16 and F16 weights.
@Suite(.serialized) struct BatchInvariance {
    static func values(_ n: Int, seed: UInt64) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: s >> 11) % 2_000_001 - 1_000_000) / 1_000_000
        }
    }

    /// The contract, element by element.
    static func chain(_ x: [Float], _ w: [Float], _ b: [Float]?, rows: Int, inF: Int, outF: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * outF)
        for i in 0..<rows {
            for j in 0..<outF {
                var acc = b?[j] ?? 0
                for k in 0..<inF { acc = acc.addingProduct(x[i * inF + k], w[j * inF + k]) }
                out[i * outF + j] = acc
            }
        }
        return out
    }

    /// Rounds weights to what a BF16 or F16 checkpoint holds, and returns those stored bits.
    static func stored(_ w: [Float], _ dtype: PackedDType) -> (values: [Float], bits: [UInt16]) {
        switch dtype {
        case .bf16:
            let bits = w.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
            return (bits.map { Float(bitPattern: UInt32($0) << 16) }, bits)
        case .f16:
            let bits = w.map { Float16($0).bitPattern }
            return (bits.map { Float(Float16(bitPattern: $0)) }, bits)
        case .f32:
            return (w, [])
        }
    }

    @Test(arguments: [(96, 200, true), (576, 1536, false), (64, 49, true), (7, 17, false)])
    func rowsDoNotDependOnTheirBatchOrISA(_ inF: Int, _ outF: Int, _ withBias: Bool) throws {
        defer { Parallel.configure(threads: 1) }
        let total = 70
        let x = Tensor(shape: [total, inF], data: Self.values(total * inF, seed: 1))
        let wValues = Self.values(outF * inF, seed: 2)
        let b = withBias ? Tensor(shape: [outF], data: Self.values(outF, seed: 3)) : nil
        var mismatches: [String] = []
        for dtype in [PackedDType.f32, .bf16, .f16] {
            let (w, bits) = Self.stored(wValues, dtype)
            let packed = dtype == .f32
                ? PackedMatrix(Tensor(shape: [outF, inF], data: w))
                : bits.withUnsafeBytes { PackedMatrix(stacking: [.init(raw: $0.baseAddress!, dtype: dtype, rows: outF, cols: inF)]) }
            #expect(packed.dtype == dtype)
            #expect(packed.unpacked().array == w, "\(dtype): unpacking is not exact")
            let reference = Self.chain(x.array, w, b?.array, rows: total, inF: inF, outF: outF)
            for isa in ISA.allCases where isa <= ISA.detected {
                for ways in [1, 2, 3] {
                    for m in [1, 2, 5, 6, 7, 15, 16, 17, 31, 33, 64, 70] {
                        for start in Set([0, 1, 7, total - m].filter { $0 >= 0 && $0 + m <= total }) {
                            let rows = x.slice(axis: 0, start..<(start + m)).contiguous()
                            var out = Tensor(shape: [m, outF]) { dst in
                                if let b { b.withUnsafeBufferPointer { bp in for r in 0..<m { (dst.baseAddress! + r * outF).update(from: bp.baseAddress!, count: outF) } } }
                            }
                            rows.withUnsafeBufferPointer { xp in
                                out.withUnsafeMutableBufferPointer { cp in
                                    packed.multiply(m: m, a: xp.baseAddress!, lda: inF, c: cp.baseAddress!, ldc: outF,
                                                    accumulate: b != nil, ways: ways, isa: isa)
                                }
                            }
                            if out.array != Array(reference[(start * outF)..<((start + m) * outF)]) {
                                mismatches.append("\(dtype) \(isa), ways \(ways), rows \(start)..<\(start + m)")
                            }
                        }
                    }
                }
            }
        }
        #expect(mismatches.isEmpty, "outputs left the FMA chain: \(mismatches.prefix(5))")
        // And the chain is the right product (float64 reference).
        let r = try x.linear(weight: Tensor(shape: [outF, inF], data: wValues), bias: b).array
        let (xa, ba) = (x.array, b?.array)
        for j in 0..<outF {
            let r0 = (0..<inF).reduce(Double(ba?[j] ?? 0)) { $0 + Double(xa[$1]) * Double(wValues[j * inF + $1]) }
            #expect(abs(Double(r[j]) - r0) < 1e-4 * max(1, abs(r0)))
        }
    }

    @Test func isaRequestsAreChecked() throws {
        #expect(try ISA.requested(nil).get() == nil)
        #expect(try ISA.requested("scalar").get() == .scalar)
        if ISA.detected >= .avx2 { #expect(try ISA.requested("AVX2").get() == .avx2) }
        guard case let .failure(e) = ISA.requested("avx-512") else { Issue.record("a misspelt ISA was accepted"); return }
        #expect(e.message.contains("not one of scalar, avx2, avx512"))
    }

    @Test func genericOpenBLASCoresAreReplaced() {
        #expect(BLAS.preferredCoreType(current: "Prescott", isa: .avx512, explicit: nil) == "SkylakeX")
        #expect(BLAS.preferredCoreType(current: "Prescott", isa: .avx2, explicit: nil) == "Haswell")
        #expect(BLAS.preferredCoreType(current: "SkylakeX", isa: .avx512, explicit: nil) == nil)
        #expect(BLAS.preferredCoreType(current: "Haswell", isa: .avx512, explicit: nil) == "SkylakeX")
        #expect(BLAS.preferredCoreType(current: "Zen", isa: .avx2, explicit: nil) == nil)
        #expect(BLAS.preferredCoreType(current: "Prescott", isa: .avx512, explicit: "Prescott") == nil)
        #expect(BLAS.preferredCoreType(current: "Prescott", isa: .scalar, explicit: nil) == nil)
    }
}

/// `assay logits` selects its top K without sorting the vocabulary; it must give exactly what
/// sorting gave (ties to the lower id) and the log-softmax's own bits.
@Suite struct TopK {
    @Test(arguments: [1, 5, 40])
    func sameAsSortingTheRow(_ k: Int) {
        let (rows, d) = (7, 1003)
        // Coarse values so that ties are common.
        let values = BatchInvariance.values(rows * d, seed: 9).map { ($0 * 50).rounded() / 7 }
        let logits = Tensor(shape: [rows, d], data: values)
        let lp = logits.logSoftmax().array, lse = logits.logSumExp().array
        let got = logits.topLogProbabilities(k)
        for r in 0..<rows {
            let row = Array(values[(r * d)..<((r + 1) * d)])
            let expected = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k)
            #expect(got[r].top.map(\.id) == Array(expected), "row \(r)")
            #expect(got[r].top.map(\.logprob) == expected.map { lp[r * d + $0] }, "row \(r): log-probabilities differ from logSoftmax")
            #expect(got[r].logsumexp == lse[r])
        }
    }
}

/// The fork-join pool (`Parallel.run`, `assay_parallel` in kernels.c): every part runs exactly
/// once per region and the region returns only when all have, over many back-to-back regions (the
/// spinning workers' hand-off), with a region nested in a part and regions from two threads at
/// once (those run their parts in turn on the caller).
@Suite(.serialized) struct ForkJoinPool {
    @Test func everyPartRunsOnceAndTheRegionWaitsForAll() {
        for parts in [2, 3, 8] {
            var counts = [Int](repeating: 0, count: parts)
            counts.withUnsafeMutableBufferPointer { c in
                nonisolated(unsafe) let p = c.baseAddress!
                for _ in 0..<20_000 { Parallel.run(parts) { i in p[i] += 1 } }
            }
            #expect(counts == [Int](repeating: 20_000, count: parts), "\(parts) parts")
        }
    }

    @Test func nestedAndConcurrentRegionsComplete() {
        var inner = [Int](repeating: 0, count: 4 * 3)
        inner.withUnsafeMutableBufferPointer { c in
            nonisolated(unsafe) let p = c.baseAddress!
            Parallel.run(4) { i in Parallel.run(3) { j in p[i * 3 + j] += 1 } }
        }
        #expect(inner == [Int](repeating: 1, count: 12))
        // Two threads starting regions at once: every part of every region still runs once.
        var totals = [Int](repeating: 0, count: 2 * 2)
        totals.withUnsafeMutableBufferPointer { c in
            nonisolated(unsafe) let p = c.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 2) { t in
                for _ in 0..<5_000 { Parallel.run(2) { i in p[t * 2 + i] += 1 } }
            }
        }
        #expect(totals == [Int](repeating: 5_000, count: 4))
    }
}
