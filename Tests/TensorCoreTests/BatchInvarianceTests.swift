import Foundation
import Testing
import TensorCore

/// `Parallel.batchInvariant`: a row's linear-layer output must be bitwise the same whatever
/// else shares its GEMM (row count, position) and however many ways the work is split. The
/// scan's reports rest on this (identical across batch sizes).
@Suite(.serialized) struct BatchInvariance {
    static func values(_ n: Int, seed: UInt64) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: s >> 11) % 2_000_001 - 1_000_000) / 1_000_000
        }
    }

    @Test(arguments: [(96, 200, true), (576, 1536, false), (64, 49, true)])
    func rowsDoNotDependOnTheirBatch(_ inF: Int, _ outF: Int, _ withBias: Bool) throws {
        Parallel.batchInvariant = true
        defer { Parallel.configure(threads: 1) }
        let total = 70
        let x = Tensor(shape: [total, inF], data: Self.values(total * inF, seed: 1))
        let w = Tensor(shape: [outF, inF], data: Self.values(outF * inF, seed: 2))
        let b = withBias ? Tensor(shape: [outF], data: Self.values(outF, seed: 3)) : nil
        Parallel.configure(threads: 1)
        let reference = try x.linear(weight: w, bias: b).array
        var mismatches: [String] = []
        for ways in [1, 2, 3] {
            Parallel.configure(threads: ways)
            for m in [1, 2, 5, 15, 16, 17, 31, 33, 64, 70] {
                for start in Set([0, 1, 7, total - m].filter { $0 >= 0 && $0 + m <= total }) {
                    let part = try x.slice(axis: 0, start..<(start + m)).linear(weight: w, bias: b).array
                    let expected = Array(reference[(start * outF)..<((start + m) * outF)])
                    if part != expected { mismatches.append("ways \(ways), rows \(start)..<\(start + m)") }
                }
            }
        }
        #expect(mismatches.isEmpty, "rows changed with their batch: \(mismatches.prefix(5))")
        // And the invariant kernel must still compute the right product (float64 reference).
        let (xa, wa, ba) = (x.array, w.array, b?.array)
        let r0 = (0..<outF).map { j in (0..<inF).reduce(Double(ba?[j] ?? 0)) { $0 + Double(xa[$1]) * Double(wa[j * inF + $1]) } }
        for j in 0..<outF { #expect(abs(Double(reference[j]) - r0[j]) < 1e-4 * max(1, abs(r0[j]))) }
    }
}
