import Foundation

/// A bootstrap confidence interval.
public struct BootstrapInterval: Sendable, Equatable, Codable {
    public enum Method: String, Sendable, Codable { case percentile, bca }
    public let low: Double
    public let high: Double
    /// The statistic on the original sample.
    public let estimate: Double
    public let level: Double
    /// The method actually used (BCa falls back to percentile when its corrections are
    /// undefined, e.g. a degenerate bootstrap distribution).
    public let method: Method
}

/// Bootstrap confidence interval of `statistic` (default: the mean) from `resamples` resamples
/// drawn with `rng` (index i of resample b is `rng.int(below: n)`, drawn resample by resample).
///
/// - `.percentile`: the α/2 and 1 − α/2 quantiles (NumPy 'linear') of the bootstrap
///   distribution (`scipy.stats.bootstrap(method='percentile')`).
/// - `.bca`: bias-corrected and accelerated (Efron & Tibshirani 1993, §14.3, eq. 14.10–14.15;
///   `scipy.stats.bootstrap(method='BCa')`): z₀ = Φ⁻¹(percentile of the estimate in the
///   bootstrap distribution, SciPy's 'mean' kind), acceleration â from the jackknife,
///   α₁,₂ = Φ(z₀ + (z₀ + z_α)/(1 − â(z₀ + z_α))).
public func bootstrapCI(_ x: [Double], statistic: ([Double]) throws(StatsError) -> Double = mean,
                        level: Double = 0.95, resamples: Int = 2000,
                        method: BootstrapInterval.Method = .percentile,
                        rng: inout SeededRandom) throws(StatsError) -> BootstrapInterval {
    try requireFinite(x, "bootstrapCI", "x")
    try requireProbability(level, "bootstrapCI", "level")
    guard resamples >= 2 else {
        throw .invalidParameter(function: "bootstrapCI", name: "resamples", value: Double(resamples), reason: "must be ≥ 2")
    }
    let n = x.count
    let estimate = try statistic(x)
    var theta = [Double](repeating: 0, count: resamples)
    var buf = [Double](repeating: 0, count: n)
    for b in 0..<resamples {
        for i in 0..<n { buf[i] = x[rng.int(below: n)] }
        theta[b] = try statistic(buf)
    }
    return try bootstrapInterval(x, estimate: estimate, distribution: theta, statistic: statistic,
                                 level: level, method: method)
}

/// The interval from a given bootstrap distribution (exposed so the resampling and the
/// interval can be tested separately against SciPy).
func bootstrapInterval(_ x: [Double], estimate: Double, distribution theta: [Double],
                       statistic: ([Double]) throws(StatsError) -> Double,
                       level: Double, method: BootstrapInterval.Method) throws(StatsError) -> BootstrapInterval {
    let alpha = (1 - level) / 2
    let sorted = theta.sorted()
    for (i, v) in sorted.enumerated() where !v.isFinite {
        throw .nonFinite(function: "bootstrapCI", argument: "bootstrap distribution", index: i)
    }
    var lowQ = alpha, highQ = 1 - alpha
    var used = BootstrapInterval.Method.percentile
    if method == .bca {
        let bCount = Double(theta.count)
        var below = 0, atOrBelow = 0
        for v in theta { if v < estimate { below += 1 }; if v <= estimate { atOrBelow += 1 } }
        let z0 = normalQuantile(Double(below + atOrBelow) / (2 * bCount))
        // Jackknife: the statistic with each observation left out.
        let n = x.count
        var jack = [Double](repeating: 0, count: n)
        if n > 1 {
            var sub = [Double](repeating: 0, count: n - 1)
            for i in 0..<n {
                var k = 0
                for j in 0..<n where j != i { sub[k] = x[j]; k += 1 }
                jack[i] = try statistic(sub)
            }
        }
        let jm = meanUnchecked(jack)
        var num = 0.0, den = 0.0
        for v in jack { let u = (Double(n) - 1) * (jm - v); num += u * u * u; den += u * u }
        num /= pow(Double(n), 3); den /= pow(Double(n), 2)
        let a = num / (6 * pow(den, 1.5))
        let za = normalQuantile(alpha)
        let n1 = z0 + za, n2 = z0 - za
        let a1 = normalCDF(z0 + n1 / (1 - a * n1)), a2 = normalCDF(z0 + n2 / (1 - a * n2))
        if z0.isFinite && a.isFinite && a1.isFinite && a2.isFinite {
            lowQ = a1; highQ = a2; used = .bca
        }
    }
    return BootstrapInterval(low: quantileSorted(sorted, lowQ), high: quantileSorted(sorted, highQ),
                             estimate: estimate, level: level, method: used)
}
