/// A deterministic, portable random number generator: xoshiro256** (Blackman & Vigna 2018)
/// seeded through SplitMix64, so one `UInt64` seed gives the same stream on every machine and
/// Swift version (unlike `SystemRandomNumberGenerator` or the stdlib's `shuffle(using:)`, whose
/// algorithm is not specified).
///
/// `derive(_:)` gives an independent child stream keyed by a string and the *root seed*, not by
/// the parent's current state, so a probe's resamples do not depend on how many other probes
/// ran before it, in what order, or in what batch size.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    /// The seed this stream was created from (the key for `derive`).
    public let seed: UInt64
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        var sm = seed
        s0 = SeededRandom.splitMix64(&sm)
        s1 = SeededRandom.splitMix64(&sm)
        s2 = SeededRandom.splitMix64(&sm)
        s3 = SeededRandom.splitMix64(&sm)
    }

    /// SplitMix64 (Steele, Lea & Flood 2014): the seeding generator recommended for xoshiro.
    @inline(__always)
    static func splitMix64(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 &- k)) }

    /// The next 64 random bits (xoshiro256**).
    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = SeededRandom.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = SeededRandom.rotl(s3, 45)
        return result
    }

    /// A double uniform on [0, 1) with 53 random bits: `(next() >> 11) · 2⁻⁵³`.
    @inline(__always)
    public mutating func uniform() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// An integer uniform on 0..<n without modulo bias (Lemire 2019, "Fast random integer
    /// generation in an interval": multiply-shift with rejection). `n` must be positive.
    @inline(__always)
    public mutating func int(below n: Int) -> Int {
        precondition(n > 0, "int(below:) needs a positive bound")
        let bound = UInt64(n)
        var m = next().multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold {
                m = next().multipliedFullWidth(by: bound)
            }
        }
        return Int(m.high)
    }

    /// Fisher–Yates shuffle from the last element down (Knuth, TAOCP vol. 2, Algorithm P), with
    /// `int(below:)` as the source, so the order is fixed by the seed.
    public mutating func shuffle<T>(_ a: inout [T]) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            let j = int(below: i + 1)
            if i != j { a.swapAt(i, j) }
        }
    }

    /// A child stream keyed by `label` and this stream's seed: the child's seed is
    /// SplitMix64(seed ⊕ FNV-1a-64(label)). The parent's state is neither read nor advanced.
    public func derive(_ label: String) -> SeededRandom {
        var state = seed ^ SeededRandom.fnv1a64(label)
        return SeededRandom(seed: SeededRandom.splitMix64(&state))
    }

    /// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3), over UTF-8 bytes.
    public static func fnv1a64(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01B3
        }
        return h
    }
}
