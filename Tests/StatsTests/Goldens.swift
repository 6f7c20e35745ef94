import Foundation
@testable import Stats

/// The golden file written by scripts/fixtures/make_stats_fixtures.py (NumPy/SciPy, float64).
/// Non-finite numbers are stored as the strings "inf", "-inf", "nan".
enum G: Decodable {
    case number(Double), string(String), bool(Bool), array([G]), object([String: G]), null

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([G].self) { self = .array(a) }
        else { self = .object(try c.decode([String: G].self)) }
    }

    subscript(_ key: String) -> G {
        guard case let .object(o) = self, let v = o[key] else { fatalError("golden: no key \(key)") }
        return v
    }

    var double: Double {
        switch self {
        case let .number(d): return d
        case .string("inf"): return .infinity
        case .string("-inf"): return -.infinity
        case .string("nan"): return .nan
        default: fatalError("golden: not a number: \(self)")
        }
    }
    var int: Int { Int(double) }
    var bool: Bool { if case let .bool(b) = self { return b }; fatalError("not a bool") }
    var string: String { if case let .string(s) = self { return s }; fatalError("not a string") }
    var array: [G] { if case let .array(a) = self { return a }; fatalError("not an array") }
    var doubles: [Double] { array.map(\.double) }
    var floats: [Float] { array.map { Float($0.double) } }
    var ints: [Int] { array.map(\.int) }
    var uint64s: [UInt64] { array.map { UInt64($0.string)! } }

    static let shared: G = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/stats/goldens.json")
        return try! JSONDecoder().decode(G.self, from: Data(contentsOf: url))
    }()

    static func c(_ name: String) -> G { shared["cases"][name] }
}

/// |got − want| ≤ abs + rel·|want|; infinities must match exactly, NaN only NaN.
func close(_ got: Double, _ want: Double, rel: Double = 1e-12, abs absTol: Double = 0) -> Bool {
    if want.isNaN { return got.isNaN }
    if want.isInfinite { return got == want }
    return abs(got - want) <= absTol + rel * abs(want)
}
