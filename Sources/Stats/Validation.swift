/// Input checks shared by every public function: they throw `StatsError` instead of trapping.
@inline(__always)
func requireFinite(_ x: [Double], _ function: String, _ argument: String, minCount: Int = 1) throws(StatsError) {
    if x.count < minCount {
        throw .tooFewValues(function: function, argument: argument, count: x.count, needed: minCount)
    }
    for (i, v) in x.enumerated() where !v.isFinite {
        throw .nonFinite(function: function, argument: argument, index: i)
    }
}

@inline(__always)
func requireProbability(_ p: Double, _ function: String, _ name: String, open: Bool = true) throws(StatsError) {
    let ok = open ? (p > 0 && p < 1) : (p >= 0 && p <= 1)
    if !ok {
        throw .invalidParameter(function: function, name: name, value: p,
                                reason: open ? "must lie strictly between 0 and 1" : "must lie in [0, 1]")
    }
}

/// Which side of the null distribution counts as evidence, as SciPy's `alternative`.
public enum Alternative: String, Sendable, Codable, CaseIterable {
    /// The location differs from the null in either direction.
    case twoSided = "two-sided"
    /// The first sample (or the differences) tends to be larger.
    case greater
    /// The first sample (or the differences) tends to be smaller.
    case less
}

/// How a p-value was computed.
public enum PValueMethod: String, Sendable, Codable {
    /// The exact null distribution of the statistic.
    case exact
    /// Complete enumeration of all sign flips or relabelings (an exact permutation test).
    case permutationExact = "permutation-exact"
    /// Random permutations, p = (k + 1)/(B + 1).
    case permutationMonteCarlo = "permutation-monte-carlo"
    /// Normal approximation (with tie and continuity corrections where the test has them).
    case asymptotic
    /// Student's t distribution.
    case studentT = "student-t"
}

/// The outcome of a hypothesis test.
public struct TestResult: Sendable, Equatable, Codable {
    /// The test statistic, defined as SciPy reports it for the same test.
    public let statistic: Double
    public let pValue: Double
    public let method: PValueMethod
    /// Number of observations that entered the test (after dropping zero differences, where the
    /// test does so).
    public let n: Int
    /// Degrees of freedom (t tests only).
    public let df: Double?
    /// The standardized statistic for normal approximations.
    public let z: Double?

    public init(statistic: Double, pValue: Double, method: PValueMethod, n: Int, df: Double? = nil, z: Double? = nil) {
        self.statistic = statistic
        self.pValue = pValue
        self.method = method
        self.n = n
        self.df = df
        self.z = z
    }
}
