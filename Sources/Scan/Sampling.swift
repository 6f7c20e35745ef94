import Probes
import Stats

/// The probes in a seeded order that takes each category in turn (categories by name, each one's
/// probes shuffled with `rng`), so any prefix spreads over the categories as evenly as its length
/// allows. The known-trigger scan inserts triggers into a prefix of it; discovery splits it into
/// search and held-out probes.
public func categoryStratifiedOrder(_ probes: [Probe], using rng: inout SeededRandom) -> [Probe] {
    let byCategory = Dictionary(grouping: probes, by: \.category)
    var pools = byCategory.keys.sorted().map { byCategory[$0]!.shuffled(using: &rng) }
    var order: [Probe] = []
    order.reserveCapacity(probes.count)
    while pools.contains(where: { !$0.isEmpty }) {
        for i in pools.indices where !pools[i].isEmpty { order.append(pools[i].removeFirst()) }
    }
    return order
}
