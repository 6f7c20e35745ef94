import Foundation

/// An observer of a computation's named points, after llama.cpp's `cb(cur, "attn_norm", il)`:
/// the computation reports each point it reaches (the op that just finished, and the layer) and
/// the observer decides what to do with it. A model holds one as a value (`tap`, nil by default:
/// then a point costs one nil check). `Profiler` is the observer Assay ships.
public protocol Tap: AnyObject, Sendable {
    /// The op `point` of block `layer` (nil outside the blocks) finished `seconds` after the
    /// previous point of the same computation.
    func reached(_ point: String, layer: Int?, seconds: Double)
    /// Adds to a named count (rows processed by a phase).
    func count(_ name: String, _ n: Int)
}

/// The clock one computation keeps between its taps: `mark` charges the time since the previous
/// point (or since the clock started) to the point just reached. Local to one call, so two
/// computations on two threads never share it.
public struct TapClock {
    public let tap: (any Tap)?
    private var last: UInt64

    @inline(__always)
    public init(_ tap: (any Tap)?) {
        self.tap = tap
        last = tap == nil ? 0 : DispatchTime.now().uptimeNanoseconds
    }

    @inline(__always)
    public mutating func mark(_ point: String, layer: Int? = nil) {
        guard let tap else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        tap.reached(point, layer: layer, seconds: Double(now - last) / 1e9)
        last = now
    }

    @inline(__always)
    public func count(_ name: String, _ n: Int) { tap?.count(name, n) }
}

/// Wall-clock seconds per named phase and counts, for benchmarks and `ASSAY_PROFILE=1`. Passed as
/// a value to whatever it measures (a model's `tap`, a scan, a sweep worker); a disabled profiler
/// records nothing. Phases of a model's forward are summed over layers; the stages around them
/// (`measure`) nest, so their seconds overlap the ops inside.
public final class Profiler: Tap, @unchecked Sendable {
    public let enabled: Bool
    private var totals: [String: Double] = [:]
    private var counters: [String: Int] = [:]
    private let lock = NSLock()

    public init(enabled: Bool) { self.enabled = enabled }

    /// On when the environment has `ASSAY_PROFILE=1`.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Profiler {
        Profiler(enabled: environment["ASSAY_PROFILE"] == "1")
    }

    /// What a model should hold as its tap: this profiler when it records, else nothing.
    public var tap: (any Tap)? { enabled ? self : nil }

    public func reached(_ point: String, layer: Int?, seconds: Double) {
        guard enabled else { return }
        lock.lock(); totals[point, default: 0] += seconds; lock.unlock()
    }

    public func count(_ name: String, _ n: Int) {
        guard enabled else { return }
        lock.lock(); counters[name, default: 0] += n; lock.unlock()
    }

    /// Times `body` as the phase `name`.
    @inline(__always)
    public func measure<R>(_ name: String, _ body: () throws -> R) rethrows -> R {
        guard enabled else { return try body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { add(name, since: t0) }
        return try body()
    }

    /// Adds the time since `start` (`DispatchTime` nanoseconds) to the phase `name` (a stage
    /// spanning several statements).
    public func add(_ name: String, since start: UInt64) {
        guard enabled else { return }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        lock.lock(); totals[name, default: 0] += dt; lock.unlock()
    }

    /// Seconds per phase and counts so far.
    public func snapshot() -> (seconds: [String: Double], counts: [String: Int]) {
        lock.lock(); defer { lock.unlock() }
        return (totals, counters)
    }

    /// One line per phase (largest first: seconds, share of the sum), then the counts.
    public func report() -> String {
        lock.lock(); defer { lock.unlock() }
        let total = totals.values.reduce(0, +)
        let width = max(14, totals.keys.map(\.count).max() ?? 0)
        let phases = totals.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map {
            $0.key.padding(toLength: width, withPad: " ", startingAt: 0)
                + String(format: " %8.3f s  %5.1f%%", $0.value, 100 * $0.value / max(total, 1e-9))
        }
        return (phases + counters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }).joined(separator: "\n")
    }

    public func reset() { lock.lock(); totals = [:]; counters = [:]; lock.unlock() }
}
