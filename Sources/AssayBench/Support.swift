import Foundation
import Stats

// What the benchmarks share: the clock they time with, their median, and the generator of
// their data.

/// Seconds on the monotonic clock (`DispatchTime`).
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// The median of a benchmark's samples, as Stats defines it (NumPy's: the mean of the two middle
/// values of an even count). Every benchmark takes at least one sample.
func median(_ xs: [Double]) -> Double { (try? Stats.median(xs)) ?? .nan }

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
