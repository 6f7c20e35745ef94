import Foundation

/// Cohen's d with the pooled standard deviation:
/// (x̄ − ȳ) / √(((n₁−1)s₁² + (n₂−1)s₂²)/(n₁+n₂−2)). Zero pooled variance gives 0 when the means
/// are equal and ±∞ otherwise.
public func cohensD(_ x: [Double], _ y: [Double]) throws(StatsError) -> Double {
    try requireFinite(x, "cohensD", "x", minCount: 1)
    try requireFinite(y, "cohensD", "y", minCount: 1)
    guard x.count + y.count >= 3 else {
        throw .tooFewValues(function: "cohensD", argument: "x + y", count: x.count + y.count, needed: 3)
    }
    let n1 = Double(x.count), n2 = Double(y.count)
    let v1 = x.count > 1 ? varianceUnchecked(x) : 0, v2 = y.count > 1 ? varianceUnchecked(y) : 0
    let pooled = (((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)).squareRoot()
    let diff = meanUnchecked(x) - meanUnchecked(y)
    if pooled == 0 { return diff == 0 ? 0 : (diff > 0 ? .infinity : -.infinity) }
    return diff / pooled
}

/// Paired (repeated-measures) effect size d_z = d̄ / s_d (Cohen 1988, eq. 2.3.5). All-equal
/// differences give 0 when they are 0 and ±∞ otherwise.
public func cohensDz(_ d: [Double]) throws(StatsError) -> Double {
    try requireFinite(d, "cohensDz", "d", minCount: 2)
    let m = meanUnchecked(d), s = varianceUnchecked(d).squareRoot()
    if s == 0 { return m == 0 ? 0 : (m > 0 ? .infinity : -.infinity) }
    return m / s
}

/// Cliff's delta P(X > Y) − P(X < Y) = (2·U₁ − n₁n₂)/(n₁n₂), with U₁ the Mann–Whitney statistic
/// from average ranks (ties count ½). In [−1, 1].
public func cliffsDelta(_ x: [Double], _ y: [Double]) throws(StatsError) -> Double {
    try requireFinite(x, "cliffsDelta", "x")
    try requireFinite(y, "cliffsDelta", "y")
    let (ranks, _, _) = averageRanks(x + y)
    var r1 = 0.0
    for i in 0..<x.count { r1 += ranks[i] }
    let n1 = Double(x.count), n2 = Double(y.count)
    let u1 = r1 - n1 * (n1 + 1) / 2
    return (2 * u1 - n1 * n2) / (n1 * n2)
}

/// Two-sample Hodges–Lehmann shift estimate: the median of all n₁·n₂ differences xᵢ − yⱼ
/// (Hodges & Lehmann 1963).
public func hodgesLehmann(_ x: [Double], _ y: [Double]) throws(StatsError) -> Double {
    try requireFinite(x, "hodgesLehmann", "x")
    try requireFinite(y, "hodgesLehmann", "y")
    var diffs = [Double]()
    diffs.reserveCapacity(x.count * y.count)
    for a in x { for b in y { diffs.append(a - b) } }
    return medianSorted(diffs.sorted())
}

/// One-sample (paired) Hodges–Lehmann estimate: the median of the Walsh averages
/// (dᵢ + dⱼ)/2, i ≤ j — the location estimate that goes with the signed-rank test.
public func hodgesLehmann(_ d: [Double]) throws(StatsError) -> Double {
    try requireFinite(d, "hodgesLehmann", "d")
    var w = [Double]()
    w.reserveCapacity(d.count * (d.count + 1) / 2)
    for i in 0..<d.count { for j in i..<d.count { w.append((d[i] + d[j]) / 2) } }
    return medianSorted(w.sorted())
}

/// The one robust z of Assay's reports, fitted on a reference (null) sample, e.g. the control
/// insertions' median changes: z = (x − median) / max(1.4826·MAD, floor). The normal-scaled MAD
/// estimates σ for normal data; the floor (a caller's unit of "no spread", e.g. 1e-3 nats for the
/// trigger tests) keeps z finite and meaningful when most reference values are equal.
public struct RobustStandardizer: Sendable, Equatable, Codable {
    public enum ScaleSource: String, Sendable, Codable {
        /// The normal-scaled MAD (1.4826·MAD).
        case mad
        /// 1.4826·MAD was at most the floor: the floor.
        case floor
    }
    public let median: Double
    public let scale: Double
    public let scaleSource: ScaleSource

    /// Fits median and scale. The scale is never below `minimumScale` (> 0), so z is always
    /// finite.
    public init(reference: [Double], minimumScale: Double = 1e-12) throws(StatsError) {
        try requireFinite(reference, "RobustStandardizer", "reference")
        guard minimumScale > 0 && minimumScale.isFinite else {
            throw .invalidParameter(function: "RobustStandardizer", name: "minimumScale", value: minimumScale, reason: "must be positive")
        }
        let s = reference.sorted()
        let med = medianSorted(s)
        let mad = medianSorted(reference.map { abs($0 - med) }.sorted()) * madNormalScale
        median = med
        if mad > minimumScale { scale = mad; scaleSource = .mad } else { scale = minimumScale; scaleSource = .floor }
    }

    public func z(_ x: Double) -> Double { (x - median) / scale }
}

/// Robust z of `x` against a reference sample: (x − median(ref)) / max(1.4826·MAD(ref),
/// minimumScale) (`RobustStandardizer`).
public func robustZ(_ x: Double, reference: [Double], minimumScale: Double = 1e-12) throws(StatsError) -> Double {
    guard x.isFinite else { throw .nonFinite(function: "robustZ", argument: "x", index: 0) }
    return try RobustStandardizer(reference: reference, minimumScale: minimumScale).z(x)
}
