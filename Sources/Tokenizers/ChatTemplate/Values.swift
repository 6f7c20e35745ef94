import Foundation

// MARK: values

final class JNamespace: @unchecked Sendable { var attrs: [String: JValue] = [:] }

/// Nesting facts kept on every container so the bounds are O(1) to check: `depth` (a scalar is
/// 0) bounds every recursive walk and the recursive free of the value; `hasNamespace` lets
/// `set ns.x = …` refuse to put a namespace inside a namespace, which would build chains the
/// depth cannot see (a namespace is mutable, so the depth stored on its holders goes stale).
struct JMeta: Sendable {
    var depth: Int
    var hasNamespace: Bool
    init<S: Sequence>(_ items: S) where S.Element == JValue {
        var d = 0, ns = false
        for v in items { d = max(d, v.depth); ns = ns || v.hasNamespace }
        depth = d + 1; hasNamespace = ns
    }
}

enum JValue: Sendable {
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JValue], JMeta)
    case dict([(String, JValue)], JMeta)
    case namespace(JNamespace)
    case loop([String: JValue], JMeta)

    static func list(_ items: [JValue]) -> JValue { .list(items, JMeta(items)) }
    static func dict(_ items: [(String, JValue)]) -> JValue { .dict(items, JMeta(items.lazy.map(\.1))) }
    static func loop(_ items: [String: JValue]) -> JValue { .loop(items, JMeta(items.values)) }

    var depth: Int {
        switch self {
        case let .list(_, m), let .dict(_, m), let .loop(_, m): return m.depth
        case .namespace: return 1
        default: return 0
        }
    }
    var hasNamespace: Bool {
        switch self {
        case let .list(_, m), let .dict(_, m), let .loop(_, m): return m.hasNamespace
        case .namespace: return true
        default: return false
        }
    }

    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(l, _): return !l.isEmpty
        case let .dict(d, _): return !d.isEmpty
        case .namespace, .loop: return true
        }
    }
    /// Python `str()` of a scalar (containers go through `JEvaluator.stringify`, which is bounded).
    var scalarStr: String? {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return d == d.rounded() && abs(d) < 1e16 ? String(format: "%.1f", d) : String(d)
        case let .string(s): return s
        case .namespace: return "<Namespace>"
        case .loop: return "<LoopContext>"
        case .list, .dict: return nil
        }
    }
    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "none"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "string"
        case .list: return "list"
        case .dict: return "dict"
        case .namespace: return "namespace"
        case .loop: return "loop"
        }
    }
}

extension JValue {
    var isNone: Bool { if case .none = self { return true }; return false }
}
