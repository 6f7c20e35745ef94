import Foundation
import Testing
@testable import Stats

// Every expected number below comes from Tests/Fixtures/stats/goldens.json, written by
// scripts/fixtures/make_stats_fixtures.py with NumPy 2.4.6 / SciPy 1.17.1 in float64.
// Tolerances are relative unless noted and are stated at each check.

@Suite struct RandomTests {
    @Test func streamMatchesReferenceImplementation() {
        let g = G.c("rng")
        var r = SeededRandom(seed: 42)
        #expect((0..<8).map { _ in r.next() } == g["strings"]["next"].uint64s)
        #expect((0..<4).map { _ in r.uniform() } == g["expected"]["uniform"].doubles)
        #expect((0..<20).map { _ in r.int(below: 10) } == g["expected"]["int_below_10"].ints)
        #expect((0..<5).map { _ in r.int(below: 3_000_000_007) } == g["expected"]["int_below_3e9"].ints)
        var a = Array(0..<10)
        r.shuffle(&a)
        #expect(a == g["expected"]["shuffle_10"].ints)
        #expect(SeededRandom.fnv1a64("") == UInt64(g["strings"]["fnv_empty"].string)!)
        #expect(SeededRandom.fnv1a64("probe/17") == UInt64(g["strings"]["fnv_probe"].string)!)
    }

    @Test func deriveIsKeyedBySeedAndLabelOnly() {
        let g = G.c("rng")
        var parent = SeededRandom(seed: 42)
        var child = parent.derive("probe/17")
        #expect((0..<4).map { _ in child.next() } == g["strings"]["derived_next"].uint64s)
        // Advancing the parent does not change the child: order and batch size do not matter.
        for _ in 0..<1000 { _ = parent.next() }
        var again = parent.derive("probe/17")
        var fresh = SeededRandom(seed: 42).derive("probe/17")
        #expect(again.next() == fresh.next())
        var grand = SeededRandom(seed: 42).derive("probe/17").derive("bootstrap")
        #expect((0..<2).map { _ in grand.next() } == g["strings"]["grandchild_next"].uint64s)
        var other = SeededRandom(seed: 42).derive("probe/18")
        var same = SeededRandom(seed: 42).derive("probe/17")
        #expect(other.next() != same.next())
    }

    @Test func uniformAndBoundedIntegersAreInRange() {
        var r = SeededRandom(seed: 1)
        var counts = [Int](repeating: 0, count: 7)
        for _ in 0..<70_000 {
            let u = r.uniform()
            #expect(u >= 0 && u < 1)
            counts[r.int(below: 7)] += 1
        }
        // Each bin expects 10 000 (sd ≈ 93): 6 sd bounds.
        #expect(counts.allSatisfy { abs($0 - 10_000) < 560 })
        #expect(r.int(below: 1) == 0)
    }
}

@Suite struct DistributionTests {
    let e = G.c("distributions")["expected"]

    @Test func normalCDFMatchesNdtr() {
        // 1e-14 relative in the body, 1e-13 in the far tail (glibc's erfc and Cephes' differ
        // there; the true Φ(−20) = 2.75362411860623e-89 lies between them). SciPy flushes
        // Φ(−38) ≈ 2.9e-316 to 0; this returns the subnormal, hence the absolute 1e-300.
        for (x, want) in zip(e["x"].doubles, e["ndtr"].doubles) {
            #expect(close(normalCDF(x), want, rel: abs(x) > 8 ? 1e-13 : 1e-14, abs: 1e-300), "ndtr(\(x)) = \(normalCDF(x)), want \(want)")
        }
        #expect(normalCDF(.nan).isNaN)
        #expect(normalSF(40) == normalCDF(-40))
    }

    @Test func normalQuantileMatchesNdtri() {
        // AS 241 is accurate to ~1e-16; 1e-13 leaves room for libm differences in log.
        for (p, want) in zip(e["p"].doubles, e["ndtri"].doubles) {
            #expect(close(normalQuantile(p), want, rel: 1e-13), "ndtri(\(p)) = \(normalQuantile(p)), want \(want)")
        }
        #expect(normalQuantile(0) == -.infinity && normalQuantile(1) == .infinity)
        #expect(normalQuantile(-0.1).isNaN && normalQuantile(1.5).isNaN && normalQuantile(.nan).isNaN)
    }

    @Test func studentTMatchesStdtr() {
        for ((t, df), want) in zip(zip(e["t"].doubles, e["t_df"].doubles), e["stdtr"].doubles) {
            #expect(close(studentTCDF(t, df: df), want, rel: 1e-11), "stdtr(\(df), \(t)) = \(studentTCDF(t, df: df)), want \(want)")
        }
        for ((p, df), want) in zip(zip(e["tq_p"].doubles, e["tq_df"].doubles), e["stdtrit"].doubles) {
            #expect(close(studentTQuantile(p, df: df), want, rel: 1e-10), "t.ppf(\(p), \(df)) = \(studentTQuantile(p, df: df)), want \(want)")
        }
        #expect(studentTQuantile(0, df: 3) == -.infinity && studentTQuantile(0.5, df: 3) == 0)
        #expect(studentTCDF(1, df: 0).isNaN)
    }

    @Test func incompleteBetaMatchesBetainc() {
        let a = e["beta_a"].doubles, b = e["beta_b"].doubles, x = e["beta_x"].doubles, want = e["betainc"].doubles
        for i in a.indices {
            #expect(close(regularizedIncompleteBeta(a[i], b[i], x[i]), want[i], rel: 1e-12),
                    "betainc(\(a[i]), \(b[i]), \(x[i])) = \(regularizedIncompleteBeta(a[i], b[i], x[i])), want \(want[i])")
        }
    }
}

@Suite struct DivergenceTests {
    static let names = ["div_random", "div_close", "div_identical", "div_tiny_probabilities",
                        "div_zero_probabilities_in_p", "div_zero_probabilities_in_q", "div_peaked"]

    /// KL and TV: 1e-12 relative + 1e-15 absolute. JS: the same against the rel_entr formula,
    /// 1e-9 against SciPy's jensenshannon(p, q)², which renormalizes p and q (the float32
    /// log-softmax sums differ from 1 by ~1e-7) — hence the looser bound there.
    @Test(arguments: names) func matchesRelEntr(_ name: String) throws {
        let c = G.c(name), e = c["expected"]
        let r = try compare(logP: c["lp"].floats, logQ: c["lq"].floats)
        #expect(close(r.klPQ, e["kl_pq"].double, rel: 1e-12, abs: 1e-15), "\(name) KL(P‖Q) \(r.klPQ) vs \(e["kl_pq"].double)")
        #expect(close(r.klQP, e["kl_qp"].double, rel: 1e-12, abs: 1e-15), "\(name) KL(Q‖P) \(r.klQP) vs \(e["kl_qp"].double)")
        #expect(close(r.js, e["js"].double, rel: 1e-12, abs: 1e-15), "\(name) JS \(r.js) vs \(e["js"].double)")
        #expect(close(r.js, e["js_scipy_distance_squared"].double, rel: 1e-6, abs: 1e-9), "\(name) JS vs scipy")
        #expect(close(r.tv, e["tv"].double, rel: 1e-12, abs: 1e-15), "\(name) TV \(r.tv) vs \(e["tv"].double)")
        #expect(r.top1P == e["top1_p"].int && r.top1Q == e["top1_q"].int)
        #expect(r.top1Agree == (r.top1P == r.top1Q))
        // Bounds hold up to the float32 normalization error of the inputs (~1e-7).
        #expect(r.js >= 0 && r.js <= log(2) + 1e-6 && r.tv >= 0 && r.tv <= 1 + 1e-6, "\(r)")
    }

    @Test func identicalInputsGiveExactlyZero() throws {
        let c = G.c("div_identical")
        let r = try compare(logP: c["lp"].floats, logQ: c["lp"].floats)
        #expect(r.klPQ == 0 && r.klQP == 0 && r.js == 0 && r.tv == 0 && r.top1Agree)
        // Also on the exact scalar path (an entry of −∞ forces it).
        var lp = G.c("div_zero_probabilities_in_p")["lp"].floats
        lp[0] = -.infinity
        let s = try compare(logP: lp, logQ: lp)
        #expect(s.klPQ == 0 && s.klQP == 0 && s.js == 0 && s.tv == 0)
    }

    @Test func vectorPathAgreesWithExactPath() throws {
        let c = G.c("div_random")
        let lp = c["lp"].floats, lq = c["lq"].floats
        let fast = try compare(logP: lp, logQ: lq)
        let exact = try lp.withUnsafeBufferPointer { p in try lq.withUnsafeBufferPointer { q in try exactTerms(p, q) } }
        #expect(close(fast.klPQ, exact.klpq, rel: 1e-13))
        #expect(close(fast.klQP, exact.klqp, rel: 1e-13))
        #expect(close(fast.js, 0.5 * exact.js, rel: 1e-13))
        #expect(close(fast.tv, 0.5 * exact.tv, rel: 1e-13))
    }

    @Test func vectorKernelsMatchLibm() {
        var worstExp = 0.0, worstLog = 0.0
        var x = -700.0
        while x <= 0 { worstExp = max(worstExp, abs(vexpScalar(x) / exp(x) - 1)); x += 0.0137 }
        var y = 1e-300
        while y < 1e300 { worstLog = max(worstLog, abs(vlogScalar(y) - log(y)) / max(1, abs(log(y)))); y *= 1.37 }
        for v in stride(from: 0.5, through: 2.0, by: 0.0013) { worstLog = max(worstLog, abs(vlogScalar(v) - log(v))) }
        #expect(worstExp < 1e-15, "vexp worst relative error \(worstExp)")
        #expect(worstLog < 1e-15, "vlog worst error \(worstLog)")
        #expect(vlogScalar(1) == 0)
    }

    @Test func refusesBadInput() throws {
        let ok: [Float] = [log(0.5), log(0.5)]
        #expect(throws: StatsError.self) { try compare(logP: ok, logQ: [0]) }
        #expect(throws: StatsError.self) { try compare(logP: [], logQ: []) }
        #expect(throws: StatsError.nonFinite(function: "compare", argument: "logQ", index: 1)) {
            try compare(logP: ok, logQ: [log(0.5), .nan])
        }
        // Logits instead of log-probabilities.
        #expect(throws: StatsError.self) { try compare(logP: [3, 1, 2, 0, 1], logQ: [3, 1, 2, 0, 1]) }
        #expect(throws: StatsError.self) { try compare(logP: [800, -900, -900, -900, -900], logQ: [0, -900, -900, -900, -900]) }
        #expect(throws: StatsError.self) { try compare(logP: [.infinity, 0], logQ: [0, -.infinity]) }
        // KL(P‖Q) is +∞ where Q has no mass.
        let r = try? compare(logP: ok, logQ: [0, -.infinity])
        #expect(r?.klPQ == .infinity && close(r?.klQP ?? 0, log(2), rel: 1e-7))
        #expect(try klDivergence(p: ok, q: ok) == 0)
        #expect(try top1Agree(p: ok, q: ok))
    }
}

@Suite struct DescriptiveTests {
    @Test(arguments: ["desc_normal", "desc_even", "desc_ties", "desc_single"])
    func matchesNumPy(_ name: String) throws {
        let c = G.c(name), x = c["x"].doubles, e = c["expected"]
        #expect(close(try mean(x), e["mean"].double, rel: 1e-14))
        if x.count > 1 { #expect(close(try variance(x), e["var"].double, rel: 1e-13)) }
        else { #expect(throws: StatsError.self) { try variance(x) } }
        #expect(try median(x) == e["median"].double)
        let qs = c["params"]["q"].doubles
        for (q, want) in zip(qs, e["quantile"].doubles) {
            #expect(close(try quantile(x, q), want, rel: 1e-15), "\(name) quantile \(q)")
        }
        #expect(try quantiles(x, qs) == qs.map { try! quantile(x, $0) })
        #expect(close(try medianAbsoluteDeviation(x), e["mad"].double, rel: 1e-15))
    }

    @Test func refusesEmptyAndNaN() {
        #expect(throws: StatsError.tooFewValues(function: "mean", argument: "x", count: 0, needed: 1)) { try mean([]) }
        #expect(throws: StatsError.nonFinite(function: "median", argument: "x", index: 1)) { try median([1, .nan]) }
        #expect(throws: StatsError.self) { try quantile([1, 2], 1.5) }
        #expect(throws: StatsError.self) { try medianAbsoluteDeviation([.infinity]) }
    }

    @Test func allTiesAndErrorMessages() throws {
        #expect(try medianAbsoluteDeviation([3, 3, 3]) == 0)
        #expect(try variance([2, 2, 2, 2]) == 0)
        let r = averageRanks([5, 5, 5, 5])
        #expect(r.ranks == [2.5, 2.5, 2.5, 2.5] && r.tieTerm == 60 && r.hasTies)
        #expect(StatsError.tooFewValues(function: "mean", argument: "x", count: 0, needed: 1).description
                == "mean: `x` has 0 values; at least 1 needed")
    }
}

@Suite struct PairedTestTests {
    static let names = ["paired_exact_n10", "paired_exact_n30", "paired_exact_n50", "paired_asymptotic_n60",
                        "paired_ties_n20", "paired_zeros_n10", "paired_ties_n8", "paired_zeros_ties_n40",
                        "paired_all_positive_n12"]

    /// Wilcoxon: statistic exact; p within 1e-12 (exact and permutation p-values are ratios of
    /// counts) or 1e-12 relative for the normal approximation. t: 1e-10. Sign: 1e-10.
    @Test(arguments: names) func matchesSciPy(_ name: String) throws {
        let c = G.c(name), d = c["x"].doubles, e = c["expected"]
        for alt in Alternative.allCases {
            let w = try wilcoxonSignedRank(d, alternative: alt)
            #expect(w.statistic == e["wilcoxon_\(alt.rawValue)_stat"].double, "\(name) \(alt) statistic")
            #expect(close(w.pValue, e["wilcoxon_\(alt.rawValue)_p"].double, rel: 1e-12, abs: 1e-15),
                    "\(name) \(alt) wilcoxon p \(w.pValue) (\(w.method)) vs \(e["wilcoxon_\(alt.rawValue)_p"].double)")
            let cc = try wilcoxonSignedRank(d, alternative: alt, method: .asymptotic, continuity: true)
            #expect(close(cc.pValue, e["wilcoxon_asymptotic_cc_\(alt.rawValue)_p"].double, rel: 1e-12),
                    "\(name) \(alt) asymptotic+continuity p")
            let t = try pairedTTest(d, alternative: alt)
            #expect(close(t.statistic, e["t_\(alt.rawValue)_stat"].double, rel: 1e-12))
            #expect(close(t.pValue, e["t_\(alt.rawValue)_p"].double, rel: 1e-10),
                    "\(name) \(alt) t p \(t.pValue) vs \(e["t_\(alt.rawValue)_p"].double)")
            let s = try signTest(d, alternative: alt)
            #expect(close(s.pValue, e["sign_\(alt.rawValue)_p"].double, rel: 1e-10),
                    "\(name) \(alt) sign p \(s.pValue) vs \(e["sign_\(alt.rawValue)_p"].double)")
        }
    }

    @Test func methodSelectionFollowsSciPyAuto() throws {
        #expect(try wilcoxonSignedRank(G.c("paired_exact_n50")["x"].doubles).method == .exact)
        #expect(try wilcoxonSignedRank(G.c("paired_asymptotic_n60")["x"].doubles).method == .asymptotic)
        #expect(try wilcoxonSignedRank(G.c("paired_zeros_n10")["x"].doubles).method == .permutationExact)
        #expect(try wilcoxonSignedRank(G.c("paired_ties_n20")["x"].doubles).method == .asymptotic)
    }

    @Test func tTestRel() throws {
        let c = G.c("ttest_rel")
        let r = try pairedTTest(c["x"].doubles, c["y"].doubles)
        #expect(close(r.statistic, c["expected"]["stat"].double, rel: 1e-12))
        #expect(close(r.pValue, c["expected"]["p"].double, rel: 1e-10))
        #expect(r.df == 24)
    }

    @Test func binomialTestMatchesBinomtest() throws {
        let e = G.c("binomtest")["expected"]
        let k = e["k"].ints, n = e["n"].ints, p = e["p"].doubles
        for alt in Alternative.allCases {
            let want = e["p_\(alt.rawValue)"].doubles
            for i in k.indices {
                let got = try binomialTest(successes: k[i], trials: n[i], p: p[i], alternative: alt)
                #expect(close(got, want[i], rel: 1e-10, abs: 1e-300), "binomtest(\(k[i]), \(n[i]), \(p[i]), \(alt)) = \(got), want \(want[i])")
            }
        }
    }

    @Test func edgeCases() throws {
        // All differences zero: no evidence of a shift (SciPy: NaN for n > 13).
        for n in [1, 5, 20, 80] {
            let zeros = [Double](repeating: 0, count: n)
            #expect(try wilcoxonSignedRank(zeros).pValue == 1)
            #expect(try signTest(zeros).pValue == 1)
            if n > 1 { #expect(try pairedTTest(zeros).pValue == 1) }
        }
        #expect(try pairedTTest([1, 1, 1]).pValue == 0)
        #expect(try wilcoxonSignedRank([2.5]).pValue == 1)
        // All ties in |d|.
        let tied = try wilcoxonSignedRank([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        #expect(tied.method == .asymptotic && tied.pValue < 1e-4)
        #expect(throws: StatsError.self) { try wilcoxonSignedRank([]) }
        #expect(throws: StatsError.self) { try wilcoxonSignedRank([1, .nan]) }
        #expect(throws: StatsError.self) { try pairedTTest([1]) }
        #expect(throws: StatsError.self) { try pairedTTest([1, 2], [1]) }
        #expect(throws: StatsError.self) { try binomialTest(successes: 5, trials: 3) }
    }
}

@Suite struct TwoSampleTests {
    static let names = ["mwu_exact_5_7", "mwu_exact_8_40", "mwu_exact_3_200", "mwu_exact_1_1", "mwu_ties_small",
                        "mwu_asymptotic_20_25", "mwu_asymptotic_ties_30_30", "mwu_all_identical"]

    /// U exact; p within 1e-12 relative (+1e-15 absolute).
    @Test(arguments: names) func mannWhitneyMatchesSciPy(_ name: String) throws {
        let c = G.c(name), e = c["expected"]
        for alt in Alternative.allCases {
            let r = try mannWhitneyU(c["x"].doubles, c["y"].doubles, alternative: alt)
            #expect(r.statistic == e["\(alt.rawValue)_stat"].double)
            #expect(close(r.pValue, e["\(alt.rawValue)_p"].double, rel: 1e-12, abs: 1e-15),
                    "\(name) \(alt) p \(r.pValue) (\(r.method)) vs \(e["\(alt.rawValue)_p"].double)")
        }
    }

    /// Exact enumeration: identical p to SciPy (a ratio of the same counts).
    @Test(arguments: ["perm_exact_5_6", "perm_exact_ties_4_7"]) func permutationExact(_ name: String) throws {
        let c = G.c(name), e = c["expected"]
        var rng = SeededRandom(seed: 3)
        for alt in Alternative.allCases {
            let r = try permutationTest(c["x"].doubles, c["y"].doubles, alternative: alt, rng: &rng)
            #expect(r.method == .permutationExact)
            #expect(close(r.statistic, e["\(alt.rawValue)_stat"].double, rel: 1e-14))
            #expect(close(r.pValue, e["\(alt.rawValue)_p"].double, rel: 1e-14), "\(name) \(alt) \(r.pValue)")
        }
    }

    /// Monte Carlo: SciPy and Swift draw different permutations; both estimate the same p with
    /// standard error √(p(1−p)/9999) ≤ 0.005 each, so they must agree within 0.03 (≈ 4 SE of the
    /// difference). The same seed must give the same answer.
    @Test func permutationMonteCarlo() throws {
        let c = G.c("perm_mc_20_20"), e = c["expected"]
        for alt in Alternative.allCases {
            var rng = SeededRandom(seed: 99)
            let r = try permutationTest(c["x"].doubles, c["y"].doubles, alternative: alt, rng: &rng)
            #expect(r.method == .permutationMonteCarlo)
            #expect(abs(r.pValue - e["\(alt.rawValue)_p"].double) < 0.03, "\(alt): \(r.pValue) vs \(e["\(alt.rawValue)_p"].double)")
            var rng2 = SeededRandom(seed: 99)
            #expect(try permutationTest(c["x"].doubles, c["y"].doubles, alternative: alt, rng: &rng2) == r)
        }
    }

    @Test func edgeCases() throws {
        var rng = SeededRandom(seed: 1)
        let same = try permutationTest([1, 1, 1], [1, 1, 1, 1], rng: &rng)
        #expect(same.pValue == 1)
        #expect(throws: StatsError.self) { try mannWhitneyU([], [1]) }
        #expect(throws: StatsError.self) { try mannWhitneyU([1, .nan], [1]) }
        #expect(throws: StatsError.self) { try permutationTest([1], [], rng: &rng) }
        #expect(throws: StatsError.self) { try permutationTest([1], [2], permutations: 0, rng: &rng) }
        // The exact U distribution sums to 1.
        let cdf = mannWhitneyLowerCDF(m: 6, n: 9, upTo: 54)
        #expect(abs(cdf[54] - 1) < 1e-14)
    }
}

@Suite struct EffectSizeTests {
    @Test func matchesNumPy() throws {
        let c = G.c("effect_sizes"), e = c["expected"]
        let x = c["x"].doubles, y = c["y"].doubles, d = c["d"].doubles, ref = c["ref"].doubles
        #expect(close(try cohensD(x, y), e["cohens_d"].double, rel: 1e-12))
        #expect(close(try cohensDz(d), e["cohens_dz"].double, rel: 1e-12))
        #expect(close(try cliffsDelta(x, y), e["cliffs_delta"].double, rel: 1e-14))
        #expect(close(try hodgesLehmann(x, y), e["hl_two_sample"].double, rel: 1e-14))
        #expect(close(try hodgesLehmann(d), e["hl_one_sample"].double, rel: 1e-14))
        #expect(close(try robustZ(e["robust_z_probe"].double, reference: ref), e["robust_z"].double, rel: 1e-12))
        let t = G.c("cliffs_ties")
        #expect(close(try cliffsDelta(t["x"].doubles, t["y"].doubles), t["expected"]["cliffs_delta"].double, rel: 1e-14))
    }

    @Test func guardsZeroScale() throws {
        // MAD = 0 (most reference values equal): the floor, not a different estimator.
        let s = try RobustStandardizer(reference: [1, 1, 1, 1, 1, 3], minimumScale: 1e-3)
        #expect(s.scaleSource == .floor && s.scale == 1e-3 && s.z(1.5) == 500)
        // At or below the floor the floor is used; above it the normal-scaled MAD.
        let m = try RobustStandardizer(reference: [0, 1, 2, 3, 4], minimumScale: 1e-3)
        #expect(m.scaleSource == .mad && m.scale == madNormalScale && m.median == 2)
        // A constant reference uses the floor, so z stays finite.
        let k = try RobustStandardizer(reference: [2, 2, 2], minimumScale: 0.01)
        #expect(k.scaleSource == .floor && k.z(2.5) == 50 && k.z(2) == 0)
        #expect(try cohensD([1, 1], [1, 1]) == 0)
        #expect(try cohensD([2, 2], [1, 1]) == .infinity)
        #expect(try cohensDz([0, 0, 0]) == 0)
        #expect(throws: StatsError.self) { try robustZ(.nan, reference: [1, 2]) }
        #expect(throws: StatsError.self) { try RobustStandardizer(reference: []) }
        #expect(throws: StatsError.self) { try cohensD([1], [2]) }
    }
}

@Suite struct MultipleTestingTests {
    /// 1e-14 relative.
    @Test func matchesFalseDiscoveryControl() throws {
        let c = G.c("multiple_testing"), p = c["x"].doubles
        for (got, want) in zip(try benjaminiHochberg(p), c["expected"]["bh"].doubles) { #expect(close(got, want, rel: 1e-14)) }
        for (got, want) in zip(try benjaminiHochberg(p, dependent: true), c["expected"]["by"].doubles) { #expect(close(got, want, rel: 1e-14)) }
        for (got, want) in zip(try holm(p), c["expected"]["holm"].doubles) { #expect(close(got, want, rel: 1e-14)) }
    }

    @Test func edgeCases() throws {
        #expect(try benjaminiHochberg([]) == [])
        #expect(try benjaminiHochberg([0.2]) == [0.2])
        #expect(try holm([0.3, 0.3]) == [0.6, 0.6])
        #expect(throws: StatsError.self) { try benjaminiHochberg([0.1, .nan]) }
        #expect(throws: StatsError.self) { try holm([1.5]) }
    }
}

@Suite struct PowerTests {
    @Test func minimumDetectableEffectMatchesNdtri() throws {
        for row in G.c("power")["mde"].array {
            let got = try minimumDetectableEffect(n: row["n"].int, sd: row["sd"].double, alpha: row["alpha"].double,
                                                  power: row["power"].double, sided: row["two_sided"].bool ? .twoSided : .greater)
            #expect(close(got, row["mde"].double, rel: 1e-13))
        }
        // At the MDE the power is the requested power (one-sided, where the formula is exact).
        let m = try minimumDetectableEffect(n: 40, sd: 2, alpha: 0.05, power: 0.9, sided: .greater)
        #expect(close(try power(effect: m, n: 40, sd: 2, alpha: 0.05, sided: .greater), 0.9, rel: 1e-13))
        #expect(throws: StatsError.self) { try minimumDetectableEffect(n: 0, sd: 1) }
        #expect(throws: StatsError.self) { try minimumDetectableEffect(n: 10, sd: .nan) }
        #expect(throws: StatsError.self) { try minimumDetectableEffect(n: 10, sd: 1, alpha: 0) }
    }
}

@Suite struct BootstrapTests {
    /// SciPy's own interval code (stats.quantile and _bca_interval) run on the resamples this
    /// RNG draws: the intervals agree to 1e-12 relative.
    @Test(arguments: ["bootstrap_mean", "bootstrap_median"]) func matchesSciPyOnSameResamples(_ name: String) throws {
        let c = G.c(name), e = c["expected"], x = c["x"].doubles
        let seed = UInt64(c["params"]["seed"].int), b = c["params"]["resamples"].int
        let useMean = c["strings"]["statistic"].string == "mean"
        let stat: ([Double]) throws(StatsError) -> Double = { (v: [Double]) throws(StatsError) -> Double in
            useMean ? try mean(v) : try median(v)
        }
        for method in [BootstrapInterval.Method.percentile, .bca] {
            var rng = SeededRandom(seed: seed)
            let ci = try bootstrapCI(x, statistic: stat, level: 0.95, resamples: b, method: method, rng: &rng)
            let want = e[method == .percentile ? "percentile" : "bca"].doubles
            #expect(ci.method == method)
            #expect(close(ci.estimate, e["estimate"].double, rel: 1e-14))
            #expect(close(ci.low, want[0], rel: 1e-12) && close(ci.high, want[1], rel: 1e-12),
                    "\(name) \(method): [\(ci.low), \(ci.high)] vs \(want)")
        }
    }

    @Test func fixedSeedGivesFixedAnswer() throws {
        let x = G.c("bootstrap_mean")["x"].doubles
        var a = SeededRandom(seed: 5), b = SeededRandom(seed: 5), c = SeededRandom(seed: 6)
        let r1 = try bootstrapCI(x, rng: &a), r2 = try bootstrapCI(x, rng: &b), r3 = try bootstrapCI(x, rng: &c)
        #expect(r1 == r2)
        #expect(r1 != r3)
        #expect(r1.low < r1.estimate && r1.estimate < r1.high)
    }

    /// Coverage: 95% percentile intervals for the mean of N(0, 1) samples of 40 should cover 0
    /// in about 95% of 300 replications (binomial sd ≈ 1.3%; the percentile interval
    /// under-covers slightly at n = 40), so the count must lie in [0.89, 0.99].
    @Test func percentileIntervalCoverage() throws {
        var data = SeededRandom(seed: 2024)
        var covered = 0
        let reps = 300
        for r in 0..<reps {
            let x = (0..<40).map { _ in normalQuantile(data.uniform() * (1 - 2e-16) + 1e-16) }
            var rng = SeededRandom(seed: 1).derive("rep/\(r)")
            let ci = try bootstrapCI(x, resamples: 1000, rng: &rng)
            if ci.low <= 0 && 0 <= ci.high { covered += 1 }
        }
        let rate = Double(covered) / Double(reps)
        #expect(rate >= 0.89 && rate <= 0.99, "coverage \(rate)")
    }

    @Test func degenerateAndInvalidInput() throws {
        var rng = SeededRandom(seed: 1)
        let flat = try bootstrapCI([3, 3, 3, 3], method: .bca, rng: &rng)
        #expect(flat.low == 3 && flat.high == 3 && flat.method == .percentile)
        let one = try bootstrapCI([7], rng: &rng)
        #expect(one.low == 7 && one.high == 7)
        #expect(throws: StatsError.self) { try bootstrapCI([], rng: &rng) }
        #expect(throws: StatsError.self) { try bootstrapCI([1, .nan], rng: &rng) }
        #expect(throws: StatsError.self) { try bootstrapCI([1, 2], level: 1, rng: &rng) }
        #expect(throws: StatsError.self) { try bootstrapCI([1, 2], resamples: 1, rng: &rng) }
    }
}
