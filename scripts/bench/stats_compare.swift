// Timing harness for Stats.compare(logP:logQ:) — not a test, no assertions.
// Compiles the Stats sources together with this file into one optimized binary:
//
//   swiftc -O -wmo -target-cpu haswell -parse-as-library -module-name StatsBench \
//       Sources/Stats/*.swift scripts/bench/stats_compare.swift -o /tmp/stats-bench && /tmp/stats-bench
//
// Reports thread CPU time per call (robust on a shared machine) and wall time, for V = 49 152.
import Foundation

func cpuNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func logSoftmax(_ x: [Double]) -> [Float] {
    let m = x.max()!
    let l = m + log(x.reduce(0) { $0 + exp($1 - m) })
    return x.map { Float($0 - l) }
}

@main struct StatsCompareBench {
    static func main() {
        let v = 49_152, reps = 2000
        var rng = SeededRandom(seed: 7)
        let a = logSoftmax((0..<v).map { _ in rng.uniform() * 20 - 10 })
        let b = logSoftmax((0..<v).map { _ in rng.uniform() * 20 - 10 })
        var sink = 0.0
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                for _ in 0..<50 { sink += (try! compare(logP: pa, logQ: pb)).js }   // warm-up
                let c0 = cpuNanos(), w0 = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<reps { sink += (try! compare(logP: pa, logQ: pb)).js }
                let c1 = cpuNanos(), w1 = DispatchTime.now().uptimeNanoseconds
                print(String(format: "compare, V=%d: %.1f µs CPU, %.1f µs wall per call (checksum %.6f)",
                             v, Double(c1 - c0) / Double(reps) / 1000, Double(w1 - w0) / Double(reps) / 1000, sink))
            }
        }
    }
}
