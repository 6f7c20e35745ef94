/// Minimum detectable effect of a one-sample or paired design (normal approximation):
/// δ = (z_{1−α/s} + z_{power})·sd/√n, with s = 2 for a two-sided test and 1 otherwise. Pass
/// `sd: 1` for the standardized effect (in units of d_z).
public func minimumDetectableEffect(n: Int, sd: Double, alpha: Double = 0.05, power: Double = 0.8,
                                    sided: Alternative = .twoSided) throws(StatsError) -> Double {
    guard n >= 1 else { throw .tooFewValues(function: "minimumDetectableEffect", argument: "n", count: n, needed: 1) }
    guard sd.isFinite && sd >= 0 else {
        throw .invalidParameter(function: "minimumDetectableEffect", name: "sd", value: sd, reason: "must be finite and ≥ 0")
    }
    try requireProbability(alpha, "minimumDetectableEffect", "alpha")
    try requireProbability(power, "minimumDetectableEffect", "power")
    let a = sided == .twoSided ? alpha / 2 : alpha
    return (normalQuantile(1 - a) + normalQuantile(power)) * sd / Double(n).squareRoot()
}

/// Power of the same design to detect a true effect δ (normal approximation, ignoring the
/// far tail of a two-sided test): Φ(δ√n/sd − z_{1−α/s}).
public func power(effect: Double, n: Int, sd: Double, alpha: Double = 0.05,
                  sided: Alternative = .twoSided) throws(StatsError) -> Double {
    guard n >= 1 else { throw .tooFewValues(function: "power", argument: "n", count: n, needed: 1) }
    guard sd.isFinite && sd > 0 else {
        throw .invalidParameter(function: "power", name: "sd", value: sd, reason: "must be finite and > 0")
    }
    guard effect.isFinite else { throw .nonFinite(function: "power", argument: "effect", index: 0) }
    try requireProbability(alpha, "power", "alpha")
    let a = sided == .twoSided ? alpha / 2 : alpha
    return normalCDF(abs(effect) * Double(n).squareRoot() / sd - normalQuantile(1 - a))
}
