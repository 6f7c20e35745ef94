import Foundation

/// Arithmetic mean (`numpy.mean`).
public func mean(_ x: [Double]) throws(StatsError) -> Double {
    try requireFinite(x, "mean", "x")
    return meanUnchecked(x)
}

@inline(__always)
func meanUnchecked(_ x: [Double]) -> Double {
    var s = 0.0
    for v in x { s += v }
    return s / Double(x.count)
}

/// Sample variance with `ddof` delta degrees of freedom (`numpy.var(x, ddof=1)` by default):
/// Σ(x − x̄)² / (n − ddof), two-pass for accuracy.
public func variance(_ x: [Double], ddof: Int = 1) throws(StatsError) -> Double {
    try requireFinite(x, "variance", "x", minCount: ddof + 1)
    return varianceUnchecked(x, ddof: ddof)
}

@inline(__always)
func varianceUnchecked(_ x: [Double], ddof: Int = 1) -> Double {
    let m = meanUnchecked(x)
    var s = 0.0
    for v in x { let d = v - m; s += d * d }
    return s / Double(x.count - ddof)
}

/// Sample standard deviation, √variance (`numpy.std(x, ddof=1)` by default).
public func standardDeviation(_ x: [Double], ddof: Int = 1) throws(StatsError) -> Double {
    try variance(x, ddof: ddof).squareRoot()
}

/// Median (`numpy.median`): the middle order statistic, or the mean of the two middle ones.
public func median(_ x: [Double]) throws(StatsError) -> Double {
    try requireFinite(x, "median", "x")
    return medianSorted(x.sorted())
}

@inline(__always)
func medianSorted(_ s: [Double]) -> Double {
    let n = s.count
    if n % 2 == 1 { return s[n / 2] }
    return (s[n / 2 - 1] + s[n / 2]) / 2
}

/// The q-quantile (0 ≤ q ≤ 1) with NumPy's default `method='linear'` (Hyndman & Fan type 7):
/// h = (n − 1)·q, x₍⌊h⌋₎ + (h − ⌊h⌋)·(x₍⌊h⌋+1₎ − x₍⌊h⌋₎).
public func quantile(_ x: [Double], _ q: Double) throws(StatsError) -> Double {
    try requireFinite(x, "quantile", "x")
    try requireProbability(q, "quantile", "q", open: false)
    return quantileSorted(x.sorted(), q)
}

/// Several quantiles of one sample, sorting once.
public func quantiles(_ x: [Double], _ qs: [Double]) throws(StatsError) -> [Double] {
    try requireFinite(x, "quantiles", "x")
    for q in qs { try requireProbability(q, "quantiles", "q", open: false) }
    let s = x.sorted()
    return qs.map { quantileSorted(s, $0) }
}

/// Linear interpolation as NumPy's `_lerp`: a + (b − a)·t, but b − (b − a)·(1 − t) when t ≥ ½,
/// which keeps the result exact at the endpoints and monotone.
@inline(__always)
func quantileSorted(_ s: [Double], _ q: Double) -> Double {
    let n = s.count
    if n == 1 { return s[0] }
    let h = Double(n - 1) * q
    let lo = min(Int(h.rounded(.down)), n - 1)
    let hi = min(lo + 1, n - 1)
    let t = h - Double(lo)
    let a = s[lo], b = s[hi]
    let diff = b - a
    let r = t >= 0.5 ? b - diff * (1 - t) : a + diff * t
    return a == b ? a : r
}

/// The consistency constant of the normal-scaled MAD: 1/Φ⁻¹(¾) ≈ 1.482602218505602, as
/// `scipy.stats.median_abs_deviation(scale='normal')`.
public let madNormalScale = 1.482602218505602

/// Median absolute deviation median(|x − median(x)|), multiplied by `scale`; the default makes
/// it a consistent estimator of σ for normal data (`scipy.stats.median_abs_deviation(x,
/// scale='normal')`). Pass `scale: 1` for the raw MAD.
public func medianAbsoluteDeviation(_ x: [Double], scale: Double = madNormalScale) throws(StatsError) -> Double {
    try requireFinite(x, "medianAbsoluteDeviation", "x")
    let m = medianSorted(x.sorted())
    return medianSorted(x.map { abs($0 - m) }.sorted()) * scale
}

/// Average ranks (1-based; ties get the mean of the ranks they span, `scipy.stats.rankdata`
/// method 'average'), with the tie term Σ(t³ − t) over tie groups used by rank tests.
func averageRanks(_ x: [Double]) -> (ranks: [Double], tieTerm: Double, hasTies: Bool) {
    let n = x.count
    let order = (0..<n).sorted { x[$0] < x[$1] || (x[$0] == x[$1] && $0 < $1) }
    var ranks = [Double](repeating: 0, count: n)
    var tieTerm = 0.0
    var hasTies = false
    var i = 0
    while i < n {
        var j = i + 1
        while j < n && x[order[j]] == x[order[i]] { j += 1 }
        let r = Double(i + 1 + j) / 2          // mean of ranks i+1 … j
        for k in i..<j { ranks[order[k]] = r }
        let t = Double(j - i)
        if j - i > 1 { hasTies = true; tieTerm += t * t * t - t }
        i = j
    }
    return (ranks, tieTerm, hasTies)
}
