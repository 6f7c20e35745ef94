import Foundation

// MARK: operators

/// A binary operator of the expression grammar, as spelled in a template (`rawValue`), from the
/// loosest binding: `or`, `and`, comparisons and `in`, `+ -`, `~`, `* / // %`.
enum JBinaryOperator: String, Sendable, CustomStringConvertible {
    case or, and
    case equal = "==", notEqual = "!=", less = "<", greater = ">", lessOrEqual = "<=", greaterOrEqual = ">=", contains = "in"
    case add = "+", subtract = "-"
    case concat = "~"
    case multiply = "*", divide = "/", floorDivide = "//", modulo = "%"

    var description: String { rawValue }
    static let comparisons: Set<JBinaryOperator> = [.equal, .notEqual, .less, .greater, .lessOrEqual, .greaterOrEqual]
    static let additive: Set<JBinaryOperator> = [.add, .subtract]
    static let multiplicative: Set<JBinaryOperator> = [.multiply, .divide, .floorDivide, .modulo]
}

/// A prefix operator: `not x`, `-x` (`+x` is `x`).
enum JUnaryOperator: String, Sendable, CustomStringConvertible {
    case not, negate = "-"
    var description: String { rawValue }
}

extension JEvaluator {
    func binary(_ op: JBinaryOperator, _ a: JValue, _ b: JValue, _ at: Int) throws(JThrow) -> JValue {
        switch op {
        case .equal: return .bool(try equals(a, b, at))
        case .notEqual: return .bool(try !equals(a, b, at))
        case .concat:
            let x = try stringify(a, at), y = try stringify(b, at)
            try checkString(x.utf8.count + y.utf8.count, "'~'", at)
            try charge(0, bytes: x.utf8.count + y.utf8.count, at)
            return .string(x + y)
        case .contains:
            switch b {
            case let .string(s):
                guard case let .string(x) = a else { throw err("'in <string>' requires a string", at) }
                try chargeSearch(s, x, at)
                return .bool(x.isEmpty || !Self.occurrences(of: Array(x.utf8), in: Array(s.utf8), limit: 1).isEmpty)
            case let .list(l, _):
                for x in l where try equals(x, a, at) { return .bool(true) }
                return .bool(false)
            case let .dict(d, _):
                for (k, _) in d where try equals(.string(k), a, at) { return .bool(true) }
                return .bool(false)
            case .undefined(let n): throw err("'\(n)' is undefined", at)
            default: throw err("argument of type \(b.typeName) is not iterable", at)
            }
        default: break
        }
        if case let .undefined(n) = a { throw err("'\(n)' is undefined", at) }
        if case let .undefined(n) = b { throw err("'\(n)' is undefined", at) }
        switch (op, a, b) {
        case let (.add, .string(x), .string(y)):
            try checkString(x.utf8.count + y.utf8.count, "'+'", at)
            try charge(0, bytes: x.utf8.count + y.utf8.count, at)
            return .string(x + y)
        case let (.add, .list(x, _), .list(y, _)):
            try checkItems(x.count + y.count, "'+'", at)
            try charge(x.count + y.count, at)
            return .list(x + y)
        case let (.multiply, .string(x), .int(n)), let (.multiply, .int(n), .string(x)):
            return .string(try repeatString(x, n, at))
        case let (.modulo, .string(_), x): throw err("string formatting with % is not supported (\(x.typeName))", at)
        default: break
        }
        if let x = intValue(a), let y = intValue(b) { return try intArithmetic(op, x, y, at) }
        if let x = numValue(a), let y = numValue(b) {
            switch op {
            case .add: return .double(x + y)
            case .subtract: return .double(x - y)
            case .multiply: return .double(x * y)
            case .divide:
                guard y != 0 else { throw err("float division by zero", at) }
                return .double(x / y)
            case .less: return .bool(x < y)
            case .greater: return .bool(x > y)
            case .lessOrEqual: return .bool(x <= y)
            case .greaterOrEqual: return .bool(x >= y)
            default: break
            }
        }
        if case let .string(x) = a, case let .string(y) = b {
            try charge(0, bytes: min(x.utf8.count, y.utf8.count), at)
            switch op {
            case .less: return .bool(x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars))
            case .greater: return .bool(y.unicodeScalars.lexicographicallyPrecedes(x.unicodeScalars))
            case .lessOrEqual: return .bool(!y.unicodeScalars.lexicographicallyPrecedes(x.unicodeScalars))
            case .greaterOrEqual: return .bool(!x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars))
            default: break
            }
        }
        throw err("unsupported operand types for \(op): \(a.typeName) and \(b.typeName)", at)
    }

    func intValue(_ v: JValue) -> Int? {
        switch v { case let .int(i): return i; case let .bool(b): return b ? 1 : 0; default: return nil }
    }
    func numValue(_ v: JValue) -> Double? {
        switch v {
        case let .int(i): return Double(i); case let .double(d): return d; case let .bool(b): return b ? 1 : 0; default: return nil
        }
    }

    /// Python integer arithmetic on 64 bits: a result Python would make a big integer is an error.
    func intArithmetic(_ op: JBinaryOperator, _ x: Int, _ y: Int, _ at: Int) throws(JThrow) -> JValue {
        func checked(_ r: (partialValue: Int, overflow: Bool)) throws(JThrow) -> JValue {
            guard !r.overflow else { throw err("integer overflow in \(x) \(op) \(y)", at) }
            return .int(r.partialValue)
        }
        switch op {
        case .add: return try checked(x.addingReportingOverflow(y))
        case .subtract: return try checked(x.subtractingReportingOverflow(y))
        case .multiply: return try checked(x.multipliedReportingOverflow(by: y))
        case .divide: guard y != 0 else { throw err("division by zero", at) }; return .double(Double(x) / Double(y))
        case .floorDivide:
            guard y != 0 else { throw err("integer division by zero", at) }
            let (q, o) = x.dividedReportingOverflow(by: y)
            guard !o else { throw err("integer overflow in \(x) // \(y)", at) }
            // Python floors; Swift truncates toward zero.
            return .int(x % y != 0 && (x < 0) != (y < 0) ? q - 1 : q)
        case .modulo:
            guard y != 0 else { throw err("integer modulo by zero", at) }
            let (r, o) = x.remainderReportingOverflow(dividingBy: y)
            guard !o else { return .int(0) }  // Int.min % -1 == 0
            // Python's result takes the divisor's sign; r and y differ in sign, so r + y cannot overflow.
            return .int(r != 0 && (r < 0) != (y < 0) ? r + y : r)
        case .less: return .bool(x < y)
        case .greater: return .bool(x > y)
        case .lessOrEqual: return .bool(x <= y)
        case .greaterOrEqual: return .bool(x >= y)
        default: throw err("unsupported operand types for \(op): int and int", at)
        }
    }

    /// `'ab' * n`, sized before it allocates.
    func repeatString(_ x: String, _ n: Int, _ at: Int) throws(JThrow) -> String {
        guard n > 0, !x.isEmpty else { return "" }
        let (bytes, o) = x.utf8.count.multipliedReportingOverflow(by: n)
        try checkString(o ? Int.max : bytes, "string repeat '*'", at)
        try charge(0, bytes: bytes, at)
        return String(repeating: x, count: n)
    }
}
