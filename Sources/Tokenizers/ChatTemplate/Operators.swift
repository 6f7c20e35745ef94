import Foundation

// MARK: operators

extension JEvaluator {
    func binary(_ op: String, _ a: JValue, _ b: JValue, _ at: Int) throws(JThrow) -> JValue {
        switch op {
        case "==": return .bool(try equals(a, b, at))
        case "!=": return .bool(try !equals(a, b, at))
        case "~":
            let x = try stringify(a, at), y = try stringify(b, at)
            try checkString(x.utf8.count + y.utf8.count, "'~'", at)
            try charge(0, bytes: x.utf8.count + y.utf8.count, at)
            return .string(x + y)
        case "in":
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
        case let ("+", .string(x), .string(y)):
            try checkString(x.utf8.count + y.utf8.count, "'+'", at)
            try charge(0, bytes: x.utf8.count + y.utf8.count, at)
            return .string(x + y)
        case let ("+", .list(x, _), .list(y, _)):
            try checkItems(x.count + y.count, "'+'", at)
            try charge(x.count + y.count, at)
            return .list(x + y)
        case let ("*", .string(x), .int(n)), let ("*", .int(n), .string(x)):
            return .string(try repeatString(x, n, at))
        case let ("%", .string(_), x): throw err("string formatting with % is not supported (\(x.typeName))", at)
        default: break
        }
        if let x = intValue(a), let y = intValue(b) { return try intArithmetic(op, x, y, at) }
        if let x = numValue(a), let y = numValue(b) {
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw err("float division by zero", at) }
                return .double(x / y)
            case "<": return .bool(x < y)
            case ">": return .bool(x > y)
            case "<=": return .bool(x <= y)
            case ">=": return .bool(x >= y)
            default: break
            }
        }
        if case let .string(x) = a, case let .string(y) = b {
            try charge(0, bytes: min(x.utf8.count, y.utf8.count), at)
            switch op {
            case "<": return .bool(x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars))
            case ">": return .bool(y.unicodeScalars.lexicographicallyPrecedes(x.unicodeScalars))
            case "<=": return .bool(!y.unicodeScalars.lexicographicallyPrecedes(x.unicodeScalars))
            case ">=": return .bool(!x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars))
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
    func intArithmetic(_ op: String, _ x: Int, _ y: Int, _ at: Int) throws(JThrow) -> JValue {
        func checked(_ r: (partialValue: Int, overflow: Bool)) throws(JThrow) -> JValue {
            guard !r.overflow else { throw err("integer overflow in \(x) \(op) \(y)", at) }
            return .int(r.partialValue)
        }
        switch op {
        case "+": return try checked(x.addingReportingOverflow(y))
        case "-": return try checked(x.subtractingReportingOverflow(y))
        case "*": return try checked(x.multipliedReportingOverflow(by: y))
        case "/": guard y != 0 else { throw err("division by zero", at) }; return .double(Double(x) / Double(y))
        case "//":
            guard y != 0 else { throw err("integer division by zero", at) }
            let (q, o) = x.dividedReportingOverflow(by: y)
            guard !o else { throw err("integer overflow in \(x) // \(y)", at) }
            // Python floors; Swift truncates toward zero.
            return .int(x % y != 0 && (x < 0) != (y < 0) ? q - 1 : q)
        case "%":
            guard y != 0 else { throw err("integer modulo by zero", at) }
            let (r, o) = x.remainderReportingOverflow(dividingBy: y)
            guard !o else { return .int(0) }  // Int.min % -1 == 0
            // Python's result takes the divisor's sign; r and y differ in sign, so r + y cannot overflow.
            return .int(r != 0 && (r < 0) != (y < 0) ? r + y : r)
        case "<": return .bool(x < y)
        case ">": return .bool(x > y)
        case "<=": return .bool(x <= y)
        case ">=": return .bool(x >= y)
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
