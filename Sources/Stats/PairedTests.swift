import Foundation

/// How a rank test computes its p-value.
public enum RankTestMethod: String, Sendable, Codable {
    /// SciPy's `method='auto'` choice (exact or enumerated where SciPy does so).
    case auto
    /// Always the normal approximation (SciPy's `method='asymptotic'`).
    case asymptotic
}

/// Null distribution of the Wilcoxon signed-rank statistic T⁺ for n untied, non-zero
/// differences: P(T⁺ = k), k = 0 … n(n+1)/2, built by adding one rank at a time (each rank is
/// positive or negative with probability ½), as SciPy's `_get_wilcoxon_distr`. Counts stay exact
/// in Double up to n = 50 (2⁵⁰ < 2⁵³).
func wilcoxonNullDistribution(_ n: Int) -> [Double] {
    var c = [1.0]
    if n == 0 { return c }
    for k in 1...n {
        var next = [Double](repeating: 0, count: k * (k + 1) / 2 + 1)
        for (i, v) in c.enumerated() {
            next[i] += v * 0.5
            next[i + k] += v * 0.5
        }
        c = next
    }
    return c
}

/// Wilcoxon signed-rank test of the paired differences `d` (H₀: symmetric about 0), matching
/// `scipy.stats.wilcoxon(d, zero_method='wilcox', correction=False, method='auto')` in SciPy
/// 1.17:
/// - zeros are dropped ('wilcox'); ranks are average ranks of |d|;
/// - no ties and no zeros, and n ≤ 50: the exact null distribution of T⁺
///   (p = 2·min(P(T⁺ ≤ t), P(T⁺ ≥ t)) for two-sided);
/// - ties or zeros with len(d) ≤ 13: SciPy runs `permutation_test` over all 2ⁿ sign flips,
///   which is exact; this does the same enumeration;
/// - otherwise the normal approximation z = (T⁺ − n(n+1)/4)/σ with
///   σ² = [n(n+1)(2n+1) − ½Σ(t³ − t)]/24 (tie correction); with `continuity` (SciPy's
///   `correction=True`) z is moved ½/σ towards 0.
///
/// The statistic is min(T⁺, T⁻) for two-sided and T⁺ otherwise, as SciPy reports it.
/// Deliberate difference: when every difference is 0 SciPy returns p = NaN for n > 13; this
/// returns statistic 0, p = 1 (no evidence of a shift).
public func wilcoxonSignedRank(_ d: [Double], alternative: Alternative = .twoSided,
                               method: RankTestMethod = .auto,
                               continuity: Bool = false) throws(StatsError) -> TestResult {
    try requireFinite(d, "wilcoxonSignedRank", "d")
    let nz = d.filter { $0 != 0 }
    let n = nz.count
    if n == 0 {
        return TestResult(statistic: 0, pValue: 1, method: .exact, n: 0)
    }
    let (ranks, tieTerm, hasTies) = averageRanks(nz.map { abs($0) })
    var rPlus = 0.0, rMinus = 0.0
    for i in 0..<n { if nz[i] > 0 { rPlus += ranks[i] } else { rMinus += ranks[i] } }
    let reported = alternative == .twoSided ? min(rPlus, rMinus) : rPlus
    let hasZeros = n < d.count
    let nn = Double(n)

    if method == .auto && !hasTies && !hasZeros && d.count <= 50 {
        let pmf = wilcoxonNullDistribution(n)
        let k = Int(rPlus.rounded())
        // SciPy sums the smaller side of the distribution and complements (symmetric pmf).
        func cdf(_ k: Int) -> Double { k < 0 ? 0 : pmf[0...min(k, pmf.count - 1)].reduce(0, +) }
        func sf(_ k: Int) -> Double { k >= pmf.count ? 0 : pmf[max(k, 0)...].reduce(0, +) }
        let p: Double
        switch alternative {
        case .less: p = cdf(k)
        case .greater: p = sf(k)
        case .twoSided: p = min(1, 2 * min(sf(k), cdf(k)))
        }
        return TestResult(statistic: reported, pValue: p, method: .exact, n: n)
    }
    if method == .auto && (hasTies || hasZeros) && d.count <= 13 {
        // All 2ⁿ sign assignments of the non-zero |d| ranks (zeros flip to themselves).
        let total = 1 << n
        var less = 0, greater = 0
        let gamma = abs(rPlus) * 100 * Double.ulpOfOne
        for mask in 0..<total {
            var s = 0.0
            for i in 0..<n where mask & (1 << i) != 0 { s += ranks[i] }
            if s <= rPlus + gamma { less += 1 }
            if s >= rPlus - gamma { greater += 1 }
        }
        let pl = Double(less) / Double(total), pg = Double(greater) / Double(total)
        let p: Double
        switch alternative {
        case .less: p = pl
        case .greater: p = pg
        case .twoSided: p = min(1, 2 * min(pl, pg))
        }
        return TestResult(statistic: reported, pValue: p, method: .permutationExact, n: n)
    }
    let mn = nn * (nn + 1) / 4
    let se = ((nn * (nn + 1) * (2 * nn + 1) - tieTerm / 2) / 24).squareRoot()
    var z = (rPlus - mn) / se
    if continuity {
        let sign: Double = alternative == .greater ? 1 : alternative == .less ? -1 : (z > 0 ? 1 : z < 0 ? -1 : 0)
        z -= sign * 0.5 / se
    }
    let p: Double
    switch alternative {
    case .less: p = normalCDF(z)
    case .greater: p = normalSF(z)
    case .twoSided: p = min(1, 2 * normalSF(abs(z)))
    }
    return TestResult(statistic: reported, pValue: p, method: .asymptotic, n: n, z: z)
}

/// Wilcoxon signed-rank test of x − y.
public func wilcoxonSignedRank(_ x: [Double], _ y: [Double], alternative: Alternative = .twoSided,
                               method: RankTestMethod = .auto,
                               continuity: Bool = false) throws(StatsError) -> TestResult {
    guard x.count == y.count else { throw .lengthMismatch(function: "wilcoxonSignedRank", expected: x.count, got: y.count) }
    try requireFinite(x, "wilcoxonSignedRank", "x")
    try requireFinite(y, "wilcoxonSignedRank", "y")
    return try wilcoxonSignedRank(zip(x, y).map { $0 - $1 }, alternative: alternative, method: method, continuity: continuity)
}

/// One-sample t test of the differences `d` against 0 — the paired t test
/// (`scipy.stats.ttest_rel(x, y)` with d = x − y, or `ttest_1samp(d, 0)`):
/// t = d̄ / (s_d/√n), df = n − 1, p from Student's t.
///
/// Deliberate difference at zero variance: SciPy gives NaN when all differences are 0; this
/// returns t = 0, p = 1. A non-zero constant difference gives t = ±∞, p = 0, as SciPy.
public func pairedTTest(_ d: [Double], alternative: Alternative = .twoSided) throws(StatsError) -> TestResult {
    try requireFinite(d, "pairedTTest", "d", minCount: 2)
    let n = Double(d.count)
    let m = meanUnchecked(d)
    let sd = varianceUnchecked(d).squareRoot()
    let df = n - 1
    if sd == 0 {
        if m == 0 { return TestResult(statistic: 0, pValue: 1, method: .studentT, n: d.count, df: df) }
        let t = m > 0 ? Double.infinity : -.infinity
        let p: Double
        switch alternative {
        case .twoSided: p = 0
        case .greater: p = m > 0 ? 0 : 1
        case .less: p = m < 0 ? 0 : 1
        }
        return TestResult(statistic: t, pValue: p, method: .studentT, n: d.count, df: df)
    }
    let t = m / (sd / n.squareRoot())
    let p: Double
    switch alternative {
    case .less: p = studentTCDF(t, df: df)
    case .greater: p = studentTSF(t, df: df)
    case .twoSided: p = min(1, 2 * studentTSF(abs(t), df: df))
    }
    return TestResult(statistic: t, pValue: p, method: .studentT, n: d.count, df: df)
}

/// Paired t test of x − y (`scipy.stats.ttest_rel(x, y)`).
public func pairedTTest(_ x: [Double], _ y: [Double], alternative: Alternative = .twoSided) throws(StatsError) -> TestResult {
    guard x.count == y.count else { throw .lengthMismatch(function: "pairedTTest", expected: x.count, got: y.count) }
    try requireFinite(x, "pairedTTest", "x", minCount: 2)
    try requireFinite(y, "pairedTTest", "y", minCount: 2)
    return try pairedTTest(zip(x, y).map { $0 - $1 }, alternative: alternative)
}

/// Exact binomial test of k successes in n trials against probability `p`
/// (`scipy.stats.binomtest(k, n, p, alternative).pvalue`). Two-sided: the total probability of
/// outcomes no more likely than k (with SciPy's 1 + 1e-7 relative slack).
public func binomialTest(successes k: Int, trials n: Int, p: Double = 0.5,
                         alternative: Alternative = .twoSided) throws(StatsError) -> Double {
    guard n >= 1 else { throw .tooFewValues(function: "binomialTest", argument: "trials", count: n, needed: 1) }
    guard k >= 0 && k <= n else {
        throw .invalidParameter(function: "binomialTest", name: "successes", value: Double(k), reason: "must lie in 0…\(n)")
    }
    try requireProbability(p, "binomialTest", "p", open: false)
    switch alternative {
    case .less: return binomialCDF(k, n: n, p: p)
    case .greater: return binomialSF(k - 1, n: n, p: p)
    case .twoSided:
        let expected = p * Double(n)
        if Double(k) == expected { return 1 }
        func pmf(_ i: Int) -> Double {
            if p == 0 { return i == 0 ? 1 : 0 }
            if p == 1 { return i == n ? 1 : 0 }
            return exp(lgamma(Double(n + 1)) - lgamma(Double(i + 1)) - lgamma(Double(n - i + 1))
                       + Double(i) * log(p) + Double(n - i) * log1p(-p))
        }
        let d = pmf(k) * (1 + 1e-7)
        var pval: Double
        if Double(k) < expected {
            // Outcomes above the mode no more likely than k: the first index ≥ ⌈np⌉ with pmf ≤ d.
            var y = 0
            var i = Int(expected.rounded(.up))
            while i <= n { if pmf(i) <= d { break }; i += 1 }
            y = n - i + 1
            pval = binomialCDF(k, n: n, p: p) + binomialSF(n - y, n: n, p: p)
        } else {
            var i = Int(expected.rounded(.down))
            while i >= 0 { if pmf(i) <= d { break }; i -= 1 }
            let y = i + 1
            pval = binomialCDF(y - 1, n: n, p: p) + binomialSF(k - 1, n: n, p: p)
        }
        return min(1, pval)
    }
}

/// Sign test of the paired differences: zeros dropped, the number of positive differences
/// against Bin(n, ½) (`scipy.stats.binomtest(n₊, n₊ + n₋, 0.5, alternative)`). The statistic
/// is n₊. All-zero differences give p = 1.
public func signTest(_ d: [Double], alternative: Alternative = .twoSided) throws(StatsError) -> TestResult {
    try requireFinite(d, "signTest", "d")
    let pos = d.filter { $0 > 0 }.count, neg = d.filter { $0 < 0 }.count
    let n = pos + neg
    if n == 0 { return TestResult(statistic: 0, pValue: 1, method: .exact, n: 0) }
    let p = try binomialTest(successes: pos, trials: n, p: 0.5, alternative: alternative)
    return TestResult(statistic: Double(pos), pValue: p, method: .exact, n: n)
}
