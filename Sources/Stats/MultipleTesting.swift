/// Benjamini–Hochberg adjusted p-values (q-values) controlling the false discovery rate
/// (`scipy.stats.false_discovery_control(p, method='bh')`): sort ascending,
/// q₍ᵢ₎ = min_{j ≥ i} p₍ⱼ₎·m/j, clipped to 1, returned in the input order.
/// `dependent: true` gives Benjamini–Yekutieli (`method='by'`: an extra factor Σ_{k≤m} 1/k).
public func benjaminiHochberg(_ p: [Double], dependent: Bool = false) throws(StatsError) -> [Double] {
    try validatePValues(p, "benjaminiHochberg")
    let m = p.count
    if m == 0 { return [] }
    let order = (0..<m).sorted { p[$0] < p[$1] || (p[$0] == p[$1] && $0 < $1) }
    var c = 1.0
    if dependent { c = 0; for k in 1...m { c += 1 / Double(k) } }
    var q = [Double](repeating: 0, count: m)
    var running = Double.infinity
    for rank in stride(from: m, through: 1, by: -1) {
        let i = order[rank - 1]
        running = min(running, p[i] * Double(m) / Double(rank) * c)
        q[i] = min(1, running)
    }
    return q
}

/// Holm's step-down adjusted p-values (family-wise error rate; Holm 1979, as
/// `statsmodels.stats.multitest.multipletests(method='holm')`): sort ascending,
/// adj₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1)·p₍ⱼ₎), in the input order.
public func holm(_ p: [Double]) throws(StatsError) -> [Double] {
    try validatePValues(p, "holm")
    let m = p.count
    let order = (0..<m).sorted { p[$0] < p[$1] || (p[$0] == p[$1] && $0 < $1) }
    var adj = [Double](repeating: 0, count: m)
    var running = 0.0
    for (rank, i) in order.enumerated() {
        running = max(running, min(1, Double(m - rank) * p[i]))
        adj[i] = running
    }
    return adj
}

private func validatePValues(_ p: [Double], _ function: String) throws(StatsError) {
    for (i, v) in p.enumerated() {
        if v.isNaN { throw .nonFinite(function: function, argument: "p", index: i) }
        if v < 0 || v > 1 {
            throw .invalidParameter(function: function, name: "p[\(i)]", value: v, reason: "a p-value must lie in [0, 1]")
        }
    }
}
