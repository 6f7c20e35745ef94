/// Errors thrown by the statistics toolkit. Every case names the function and the problem, so
/// the scan can report which test could not be run and why.
public enum StatsError: Error, Equatable, CustomStringConvertible, Sendable {
    /// An input sample was empty (or too small for the statistic).
    case tooFewValues(function: String, argument: String, count: Int, needed: Int)
    /// An input held NaN or ±infinity.
    case nonFinite(function: String, argument: String, index: Int)
    /// Two inputs that must have the same length did not.
    case lengthMismatch(function: String, expected: Int, got: Int)
    /// A scalar parameter was out of its domain.
    case invalidParameter(function: String, name: String, value: Double, reason: String)
    /// The statistic is undefined for this input (for example zero variance in a t test).
    case undefined(function: String, reason: String)

    public var description: String {
        switch self {
        case let .tooFewValues(f, a, c, n):
            return "\(f): `\(a)` has \(c) value\(c == 1 ? "" : "s"); at least \(n) needed"
        case let .nonFinite(f, a, i):
            return "\(f): `\(a)` holds a NaN or infinite value at index \(i)"
        case let .lengthMismatch(f, e, g):
            return "\(f): inputs differ in length (\(e) vs \(g))"
        case let .invalidParameter(f, name, v, reason):
            return "\(f): parameter `\(name)` = \(v) is invalid: \(reason)"
        case let .undefined(f, reason):
            return "\(f): \(reason)"
        }
    }
}
