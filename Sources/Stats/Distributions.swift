import Foundation

// Distribution functions in Double: the standard normal (CDF, survival, quantile), the
// regularized incomplete beta (Lentz continued fraction), Student's t and the binomial.

private let sqrtHalf = 0.70710678118654752440   // 1/√2

/// Standard normal CDF Φ(x), as `scipy.special.ndtr`: ½·(1 + erf(x/√2)) near the centre and
/// ½·erfc(|x|/√2) in the tails (the Cephes `ndtr` split), so tail values keep full relative
/// precision.
public func normalCDF(_ x: Double) -> Double {
    if x.isNaN { return .nan }
    let t = x * sqrtHalf
    let z = abs(t)
    if z < sqrtHalf { return 0.5 + 0.5 * erf(t) }
    let y = 0.5 * erfc(z)
    return t > 0 ? 1 - y : y
}

/// Standard normal survival function 1 − Φ(x) = Φ(−x), precise in the upper tail.
public func normalSF(_ x: Double) -> Double { normalCDF(-x) }

/// Standard normal density.
public func normalPDF(_ x: Double) -> Double { exp(-0.5 * x * x) * 0.39894228040143267794 }

/// Standard normal quantile Φ⁻¹(p), Wichura's algorithm AS 241 (PPND16, Applied Statistics
/// 37(3), 1988): rational approximations accurate to about 1 part in 10¹⁶; matches
/// `scipy.special.ndtri` to ~1e-15 relative. Returns −∞ at 0, +∞ at 1, NaN outside [0, 1].
public func normalQuantile(_ p: Double) -> Double {
    if p.isNaN || p < 0 || p > 1 { return .nan }
    if p == 0 { return -.infinity }
    if p == 1 { return .infinity }
    let q = p - 0.5
    if abs(q) <= 0.425 {
        let r = 0.180625 - q * q
        let num = (((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r
            + 6.7265770927008700853e4) * r + 4.5921953931549871457e4) * r
            + 1.3731693765509461125e4) * r + 1.9715909503065514427e3) * r
            + 1.3314166789178437745e2) * r + 3.3871328727963666080e0)
        let den = (((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r
            + 3.9307895800092710610e4) * r + 2.1213794301586595867e4) * r
            + 5.3941960214247511077e3) * r + 6.8718700749205790830e2) * r
            + 4.2313330701600911252e1) * r + 1)
        return q * num / den
    }
    var r = q < 0 ? p : 1 - p
    r = (-log(r)).squareRoot()
    var x: Double
    if r <= 5 {
        r -= 1.6
        let num = (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
            + 2.41780725177450611770e-1) * r + 1.27045825245236838258e0) * r
            + 3.64784832476320460504e0) * r + 5.76949722146069140550e0) * r
            + 4.63033784615654529590e0) * r + 1.42343711074968357734e0)
        let den = (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
            + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
            + 6.89767334985100004550e-1) * r + 1.67638483018380384940e0) * r
            + 2.05319162663775882187e0) * r + 1)
        x = num / den
    } else {
        r -= 5
        let num = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
            + 1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r
            + 2.96560571828504891230e-1) * r + 1.78482653991729133580e0) * r
            + 5.46378491116411436990e0) * r + 6.65790464350110377720e0)
        let den = (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r
            + 1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r
            + 1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r
            + 5.99832206555887937690e-1) * r + 1)
        x = num / den
    }
    return q < 0 ? -x : x
}

/// ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b).
func logBeta(_ a: Double, _ b: Double) -> Double {
    lgamma(a) + lgamma(b) - lgamma(a + b)
}

/// Continued fraction for I_x(a, b) by the modified Lentz method (Numerical Recipes §6.4,
/// `betacf`; Lentz 1976). Converges quickly for x < (a + 1)/(a + b + 2).
private func betaContinuedFraction(_ a: Double, _ b: Double, _ x: Double) -> Double {
    let tiny = 1e-300, eps = 1e-16
    let qab = a + b, qap = a + 1, qam = a - 1
    var c = 1.0
    var d = 1 - qab * x / qap
    if abs(d) < tiny { d = tiny }
    d = 1 / d
    var h = d
    for m in 1...100_000 {
        let m = Double(m), m2 = 2 * m
        var aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d; if abs(d) < tiny { d = tiny }
        c = 1 + aa / c; if abs(c) < tiny { c = tiny }
        d = 1 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d; if abs(d) < tiny { d = tiny }
        c = 1 + aa / c; if abs(c) < tiny { c = tiny }
        d = 1 / d
        let del = d * c
        h *= del
        if abs(del - 1) < eps { break }
    }
    return h
}

/// Regularized incomplete beta I_x(a, b) (`scipy.special.betainc`), with `y = 1 − x` passed
/// separately so callers that know 1 − x exactly (the t CDF) avoid the cancellation.
func regularizedIncompleteBeta(_ a: Double, _ b: Double, x: Double, y: Double) -> Double {
    if x <= 0 { return 0 }
    if y <= 0 { return 1 }
    // x^a (1−x)^b / B(a, b), in logs.
    let front = exp(a * log(x) + b * log(y) - logBeta(a, b))
    if x < (a + 1) / (a + b + 2) {
        return front * betaContinuedFraction(a, b, x) / a
    }
    return 1 - front * betaContinuedFraction(b, a, y) / b
}

/// Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 ≤ x ≤ 1 (`scipy.special.betainc`).
public func regularizedIncompleteBeta(_ a: Double, _ b: Double, _ x: Double) -> Double {
    regularizedIncompleteBeta(a, b, x: x, y: 1 - x)
}

/// Student's t CDF with `df` degrees of freedom (`scipy.special.stdtr`, `scipy.stats.t.cdf`):
/// for t < 0, F(t) = ½·I_{ν/(ν+t²)}(ν/2, ½); the upper half by symmetry. 1 − x = t²/(ν+t²) is
/// formed directly so small |t| keeps precision.
public func studentTCDF(_ t: Double, df: Double) -> Double {
    if t.isNaN || !(df > 0) { return .nan }
    if t == .infinity { return 1 }
    if t == -.infinity { return 0 }
    if t == 0 { return 0.5 }
    if df.isInfinite { return normalCDF(t) }
    let t2 = t * t
    let x = df / (df + t2), y = t2 / (df + t2)
    let tail = 0.5 * regularizedIncompleteBeta(df / 2, 0.5, x: x, y: y)
    return t < 0 ? tail : 1 - tail
}

/// Student's t survival function 1 − F(t) = F(−t), precise in the upper tail.
public func studentTSF(_ t: Double, df: Double) -> Double { studentTCDF(-t, df: df) }

/// Student's t density.
public func studentTPDF(_ t: Double, df: Double) -> Double {
    exp(lgamma((df + 1) / 2) - lgamma(df / 2) - 0.5 * log(df * Double.pi)
        - (df + 1) / 2 * log1p(t * t / df))
}

/// Student's t quantile (`scipy.stats.t.ppf`, `scipy.special.stdtrit`). Closed forms for ν = 1
/// and ν = 2; otherwise safeguarded Newton iteration on the lower tail from the normal quantile,
/// to ~1e-14 relative.
public func studentTQuantile(_ p: Double, df: Double) -> Double {
    if p.isNaN || p < 0 || p > 1 || !(df > 0) { return .nan }
    if p == 0 { return -.infinity }
    if p == 1 { return .infinity }
    if p == 0.5 { return 0 }
    if df.isInfinite { return normalQuantile(p) }
    if p > 0.5 { return -studentTQuantile(1 - p, df: df) }
    if df == 1 { return tan(Double.pi * (p - 0.5)) }
    if df == 2 { return (2 * p - 1) / (2 * p * (1 - p)).squareRoot() }
    // Lower tail: the root lies in (lo, 0).
    var hi = 0.0
    var lo = min(normalQuantile(p), -1.0)
    var guard_ = 0
    while studentTCDF(lo, df: df) > p && guard_ < 2000 { hi = lo; lo *= 2; guard_ += 1 }
    var t = max(lo, min(hi, normalQuantile(p)))
    if !(t > lo && t < hi) { t = (lo + hi) / 2 }
    for _ in 0..<200 {
        let f = studentTCDF(t, df: df) - p
        if f == 0 { return t }
        if f > 0 { hi = t } else { lo = t }
        var next = t - f / studentTPDF(t, df: df)
        if !(next > lo && next < hi) { next = (lo + hi) / 2 }
        if abs(next - t) <= 1e-15 * abs(next) { return next }
        t = next
    }
    return t
}

/// Binomial CDF P(X ≤ k) for X ~ Bin(n, p), via P(X ≤ k) = I_{1−p}(n − k, k + 1)
/// (`scipy.stats.binom.cdf`).
public func binomialCDF(_ k: Int, n: Int, p: Double) -> Double {
    if k < 0 { return 0 }
    if k >= n { return 1 }
    return regularizedIncompleteBeta(Double(n - k), Double(k + 1), x: 1 - p, y: p)
}

/// Binomial survival P(X > k) = I_p(k + 1, n − k) (`scipy.stats.binom.sf`).
public func binomialSF(_ k: Int, n: Int, p: Double) -> Double {
    if k < 0 { return 1 }
    if k >= n { return 0 }
    return regularizedIncompleteBeta(Double(k + 1), Double(n - k), x: p, y: 1 - p)
}
