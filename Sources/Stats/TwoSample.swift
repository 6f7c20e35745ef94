import Foundation

/// P(U ≤ k) for k = 0 … K under H₀ with sample sizes m and n and no ties: the coefficients of
/// the Gaussian binomial [m+n choose m]_q = Π_{i=1…m} (1 − q^{n+i}) / (1 − q^i), divided by
/// C(m+n, m). Each step multiplies by (1 − q^{n+i}) and divides by (1 − q^i) (a strided prefix
/// sum), so after step i the array holds [n+i choose i]_q, whose coefficients are positive.
/// Only degrees ≤ K are kept: every step is causal. O(m·K).
func mannWhitneyLowerCDF(m: Int, n: Int, upTo K: Int) -> [Double] {
    let m = min(m, n), n = max(m, n)
    var c = [Double](repeating: 0, count: K + 1)
    c[0] = 1
    if m > 0 {
        for i in 1...m {
            let shift = n + i
            if shift <= K { for k in stride(from: K, through: shift, by: -1) { c[k] -= c[k - shift] } }
            if i <= K { for k in i...K { c[k] += c[k - i] } }
        }
    }
    // C(m+n, m) in logs; then cumulative sums.
    let logTotal = lgamma(Double(m + n + 1)) - lgamma(Double(m + 1)) - lgamma(Double(n + 1))
    var cdf = [Double](repeating: 0, count: K + 1)
    var run = 0.0
    for k in 0...K { run += c[k]; cdf[k] = exp(log(run) - logTotal) }
    return cdf
}

/// Mann–Whitney U test (`scipy.stats.mannwhitneyu(x, y, use_continuity=True, method='auto')`).
/// U₁ = R₁ − n₁(n₁+1)/2 from average ranks of the pooled sample (the reported statistic).
/// 'auto' as SciPy: the exact null distribution when min(n₁, n₂) ≤ 8 and there are no ties,
/// otherwise the normal approximation with tie correction
/// σ = √(n₁n₂/12 · ((n+1) − Σ(t³−t)/(n(n−1)))) and continuity correction ½.
/// 'greater' uses U₁, 'less' U₂, two-sided max(U₁, U₂) with the survival function doubled.
public func mannWhitneyU(_ x: [Double], _ y: [Double], alternative: Alternative = .twoSided,
                         continuity: Bool = true) throws(StatsError) -> TestResult {
    try requireFinite(x, "mannWhitneyU", "x")
    try requireFinite(y, "mannWhitneyU", "y")
    let n1 = x.count, n2 = y.count
    let (ranks, tieTerm, hasTies) = averageRanks(x + y)
    var r1 = 0.0
    for i in 0..<n1 { r1 += ranks[i] }
    let u1 = r1 - Double(n1 * (n1 + 1)) / 2
    let u2 = Double(n1 * n2) - u1
    let u: Double, factor: Double
    switch alternative {
    case .greater: u = u1; factor = 1
    case .less: u = u2; factor = 1
    case .twoSided: u = max(u1, u2); factor = 2
    }
    let exact = !(n1 > 8 && n2 > 8) && !hasTies
    if exact {
        // SF(u) = P(U ≥ u) = 1 − P(U ≤ u − 1) = P(U ≤ n₁n₂ − u) by symmetry.
        let ui = Int(u.rounded())
        let kc = n1 * n2 - ui
        let sf: Double
        if ui <= kc {
            let cdf = mannWhitneyLowerCDF(m: n1, n: n2, upTo: kc)
            sf = ui >= 1 ? 1 - cdf[ui - 1] : 1
        } else {
            sf = mannWhitneyLowerCDF(m: n1, n: n2, upTo: kc)[kc]
        }
        return TestResult(statistic: u1, pValue: min(1, max(0, sf * factor)), method: .exact, n: n1 + n2)
    }
    let n = Double(n1 + n2)
    let mu = Double(n1 * n2) / 2
    let s = (Double(n1 * n2) / 12 * ((n + 1) - tieTerm / (n * (n - 1)))).squareRoot()
    var num = u - mu
    if continuity { num -= 0.5 }
    let z = s > 0 ? num / s : (num > 0 ? .infinity : num < 0 ? -.infinity : .nan)
    let p = z.isNaN ? 1 : min(1, max(0, normalSF(z) * factor))
    return TestResult(statistic: u1, pValue: p, method: .asymptotic, n: n1 + n2, z: z)
}

/// The default permutation statistic: mean(x) − mean(y).
public func meanDifference(_ x: [Double], _ y: [Double]) -> Double {
    meanUnchecked(x) - meanUnchecked(y)
}

/// Two-sample permutation test of `statistic` under random relabeling of the pooled sample
/// (`scipy.stats.permutation_test((x, y), statistic, permutation_type='independent',
/// n_resamples=permutations)`):
/// - when C(n₁+n₂, n₁) ≤ `permutations`, every relabeling is enumerated and
///   p = #{null ≥ observed}/C (exact, no +1), as SciPy;
/// - otherwise `permutations` random relabelings from `rng`, p = (k + 1)/(B + 1).
/// Ties with the observed value count with SciPy's relative slack 100·ε·|observed|; two-sided
/// is 2·min(p_less, p_greater), clipped to 1.
public func permutationTest(_ x: [Double], _ y: [Double],
                            statistic: ([Double], [Double]) -> Double = meanDifference,
                            permutations: Int = 9999, alternative: Alternative = .twoSided,
                            rng: inout SeededRandom) throws(StatsError) -> TestResult {
    try requireFinite(x, "permutationTest", "x")
    try requireFinite(y, "permutationTest", "y")
    guard permutations >= 1 else {
        throw .invalidParameter(function: "permutationTest", name: "permutations", value: Double(permutations), reason: "must be ≥ 1")
    }
    let n1 = x.count, n = x.count + y.count
    let pooled = x + y
    let observed = statistic(x, y)
    let gamma = abs(observed) * 100 * Double.ulpOfOne
    var less = 0, greater = 0, total = 0
    var a = [Double](repeating: 0, count: n1), b = [Double](repeating: 0, count: n - n1)
    func tally() {
        let s = statistic(a, b)
        if s <= observed + gamma { less += 1 }
        if s >= observed - gamma { greater += 1 }
        total += 1
    }
    // Number of distinct relabelings, capped to avoid overflow.
    var combos = 1.0
    for i in 0..<min(n1, n - n1) { combos = combos * Double(n - i) / Double(i + 1) }
    let exact = combos.rounded() <= Double(permutations)
    if exact {
        // Enumerate n1-subsets of 0..<n in lexicographic order.
        var idx = Array(0..<n1)
        var inA = [Bool](repeating: false, count: n)
        while true {
            for i in 0..<n { inA[i] = false }
            for i in idx { inA[i] = true }
            var ia = 0, ib = 0
            for i in 0..<n { if inA[i] { a[ia] = pooled[i]; ia += 1 } else { b[ib] = pooled[i]; ib += 1 } }
            tally()
            var k = n1 - 1
            while k >= 0 && idx[k] == n - n1 + k { k -= 1 }
            if k < 0 { break }
            idx[k] += 1
            for j in (k + 1)..<max(k + 1, n1) { idx[j] = idx[j - 1] + 1 }
        }
    } else {
        var perm = pooled
        for _ in 0..<permutations {
            // Partial Fisher–Yates: the first n1 positions become a uniform random subset.
            perm = pooled
            for i in 0..<n1 {
                let j = i + rng.int(below: n - i)
                perm.swapAt(i, j)
            }
            for i in 0..<n1 { a[i] = perm[i] }
            for i in n1..<n { b[i - n1] = perm[i] }
            tally()
        }
    }
    let adj = exact ? 0.0 : 1.0
    let pl = (Double(less) + adj) / (Double(total) + adj)
    let pg = (Double(greater) + adj) / (Double(total) + adj)
    let p: Double
    switch alternative {
    case .less: p = pl
    case .greater: p = pg
    case .twoSided: p = min(1, 2 * min(pl, pg))
    }
    return TestResult(statistic: observed, pValue: p, method: exact ? .permutationExact : .permutationMonteCarlo, n: n)
}
