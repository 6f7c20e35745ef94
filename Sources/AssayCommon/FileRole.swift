/// What a file is to a scan or a sweep entry. Stored, hashed into result keys and printed by its
/// name (`base`, `tuned`, `adapter`, `adapter 2`, `suite`, `triggers`, `policy`, `manifest`), and
/// ordered by it.
public enum FileRole: RawRepresentable, Codable, Hashable, Comparable, Sendable, CustomStringConvertible {
    case base, tuned
    /// An adapter: its 1-based position when the entry stacks several, nil when it has one.
    case adapter(Int?)
    case suite, triggers, policy, manifest

    public init?(rawValue: String) {
        switch rawValue {
        case "base": self = .base
        case "tuned": self = .tuned
        case "adapter": self = .adapter(nil)
        case "suite": self = .suite
        case "triggers": self = .triggers
        case "policy": self = .policy
        case "manifest": self = .manifest
        default:
            guard rawValue.hasPrefix("adapter "), let n = Int(rawValue.dropFirst("adapter ".count)), n >= 1,
                  "adapter \(n)" == rawValue else { return nil }
            self = .adapter(n)
        }
    }

    public var rawValue: String {
        switch self {
        case .base: return "base"
        case .tuned: return "tuned"
        case .adapter(nil): return "adapter"
        case .adapter(let n?): return "adapter \(n)"
        case .suite: return "suite"
        case .triggers: return "triggers"
        case .policy: return "policy"
        case .manifest: return "manifest"
        }
    }

    public var description: String { rawValue }

    /// The roles of a stack of `count` adapters: `adapter` alone, else `adapter 1`, `adapter 2`, ….
    public static func adapters(_ count: Int) -> [FileRole] {
        count == 1 ? [.adapter(nil)] : (0..<count).map { .adapter($0 + 1) }
    }
    public static func < (a: FileRole, b: FileRole) -> Bool { a.rawValue < b.rawValue }

    /// A model directory's file (weights, config, tokenizer): what a baseline approves.
    public var isModel: Bool {
        switch self {
        case .base, .tuned, .adapter: return true
        case .suite, .triggers, .policy, .manifest: return false
        }
    }
}
