import Foundation
import AssayCommon

// A static reader for Python pickles, protocols 0–5. It never executes anything: it decodes
// every opcode and simulates the unpickler's stack, mark stack and memo just far enough to know
// which callables a real `pickle.load` would import (GLOBAL, STACK_GLOBAL, INST, EXT*) and call
// (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX, and BUILD/APPEND/SETITEM on an imported object).
//
// Opcodes, argument encodings and error conditions follow CPython's Lib/pickletools.py (the
// opcode table and argument descriptors) and Modules/_pickle.c (what the C unpickler accepts and
// where it stops). Where the two differ the reader is the more permissive one: it keeps reading
// where a real unpickler might already have failed, so it can over-report but never miss a
// callable that would run.

/// One opcode as decoded (recorded only when asked, for tests against `pickletools.genops`).
public struct PickleOp: Sendable, Equatable {
    public let offset: Int
    public let code: UInt8
}

/// A callable the pickle imports, with where and how.
public struct PickleImport: Sendable, Equatable {
    /// `module.name`, after Python 2 → 3 module renames (`__builtin__` → `builtins`).
    public let qualifiedName: String
    /// Byte offset (from the start of the scanned buffer) of the first opcode that imports it.
    public let offset: Int
    /// GLOBAL, STACK_GLOBAL, INST or EXT1/EXT2/EXT4.
    public let opcode: String
    /// How many times it is imported.
    public var count: Int
    /// Offset of the first opcode that calls it (REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX), if any.
    public var firstCallOffset: Int?
    /// A short rendering of the first call's arguments (`(builtins.eval)`), when known.
    public var firstCallArguments: String?
}

/// Something the simulation saw that is not an import but still matters (a call whose target
/// cannot be resolved statically, attributes set on an imported object, an embedded pickle).
public struct PickleEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case unresolvedCall = "unresolved_call", mutatesImported = "mutates_imported", dynamicImport = "dynamic_import"
        case persistentID = "persistent_id", embeddedPickle = "embedded_pickle"
    }
    public let kind: Kind
    public let offset: Int
    public let detail: String
    public let severity: Severity
}

/// Why a pickle could not be read to its STOP opcode.
public struct PickleError: Error, Sendable, Equatable, CustomStringConvertible {
    public let offset: Int
    public let message: String
    public var description: String { "\(message) at byte \(offset)" }
}

/// The result of statically reading one pickle.
public struct PickleAnalysis: Sendable {
    /// Where the pickle starts in the scanned buffer.
    public var start: Int
    /// Offset just past STOP, when the pickle is complete.
    public var end: Int?
    /// The PROTO opcode's argument; nil for protocol 0/1 pickles (which have none).
    public var protocolVersion: Int?
    public var opcodeCount = 0
    public var imports: [PickleImport] = []
    public var events: [PickleEvent] = []
    public var persistentIDs = 0
    /// Set when the stream is truncated or malformed; everything above was seen before it.
    public var error: PickleError?
    /// The decoded opcodes, when `recordOps` was set.
    public var ops: [PickleOp] = []
    /// True when the top-level object a real unpickler would return is the legacy PyTorch magic number.
    public var isTorchLegacyMagic = false

    public var complete: Bool { error == nil && end != nil }
}

public struct PickleLimits: Sendable {
    public var maxOpcodes = 50_000_000
    public var maxStackDepth = 1_000_000
    public var maxMemoEntries = 10_000_000
    /// Strings longer than this are kept as lengths, not decoded (names are short).
    public var maxDecodedString = 64 * 1024
    /// Embedded pickles (bytes arguments that are themselves pickles) are read this deep.
    public var maxNesting = 3
    public init() {}
}

public enum PickleScanner {
    /// The opcode table: byte → name (68 opcodes, protocols 0–5; pickletools.opcodes).
    public static let opcodeNames: [UInt8: String] = [
        0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT",
        0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE", 0x50: "PERSID",
        0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING",
        0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT",
        0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET",
        0x6C: "LIST", 0x5D: "EMPTY_LIST", 0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT",
        0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT",
        // protocol 2
        0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2",
        0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4",
        // protocol 3
        0x42: "BINBYTES", 0x43: "SHORT_BINBYTES",
        // protocol 4
        0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8", 0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS",
        0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME",
        // protocol 5
        0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
    ]

    /// Reads one pickle starting at `start`. Never throws: a malformed stream is reported in
    /// `error`, with everything found before the break kept.
    public static func scan(_ bytes: UnsafeRawBufferPointer, start: Int = 0, limits: PickleLimits = PickleLimits(),
                            recordOps: Bool = false, nesting: Int = 0) -> PickleAnalysis {
        var m = Machine(bytes: bytes, pos: start, limits: limits, recordOps: recordOps, nesting: nesting)
        m.result.start = start
        do {
            try m.run()
        } catch {
            m.result.error = error
        }
        return m.result
    }

    /// Python 2 module names that Python 3's unpickler maps to their new homes
    /// (Lib/_compat_pickle.py IMPORT_MAPPING, the entries relevant to classification).
    static let moduleRenames: [String: String] = [
        "__builtin__": "builtins", "copy_reg": "copyreg", "cPickle": "pickle", "exceptions": "builtins",
        "commands": "subprocess", "UserDict": "collections", "UserList": "collections", "UserString": "collections",
        "urllib2": "urllib.request", "httplib": "http.client", "SocketServer": "socketserver",
        "cStringIO": "io", "StringIO": "io", "thread": "_thread", "dummy_thread": "_dummy_thread",
        "Tkinter": "tkinter", "BaseHTTPServer": "http.server", "SimpleHTTPServer": "http.server",
        "CGIHTTPServer": "http.server", "webbrowser": "webbrowser", "__main__": "__main__",
    ]

    public static func qualify(module: String, name: String) -> String {
        let m = moduleRenames[module] ?? module
        return m + "." + name
    }
}

/// The little of Python's object model the simulation needs.
indirect enum PV {
    case none, bool, int(Int64?), float
    case str(String)
    /// A string or bytes value not decoded (too long), by length.
    case longText(Int)
    case bytes(start: Int, count: Int)
    case global(String)
    case tuple([PV])
    case list, dict, set, frozenset, buffer
    /// The result of calling or instantiating a callable (named when resolved).
    case object(String)
    case unknown

    func render(depth: Int = 0) -> String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case let .int(v): return v.map(String.init) ?? "int"
        case .float: return "float"
        case let .str(s): return "'" + (s.count > 40 ? String(s.prefix(40)) + "…" : s) + "'"
        case let .longText(n): return "<\(n)-byte string>"
        case let .bytes(_, n): return "<\(n) bytes>"
        case let .global(g): return g
        case let .tuple(items):
            if depth > 2 { return "(…)" }
            let shown = items.prefix(6).map { $0.render(depth: depth + 1) }
            return "(" + shown.joined(separator: ", ") + (items.count > 6 ? ", …" : "") + (items.count == 1 ? ",)" : ")")
        case .list: return "list"
        case .dict: return "dict"
        case .set: return "set"
        case .frozenset: return "frozenset"
        case .buffer: return "buffer"
        case let .object(c): return "\(c)(…)"
        case .unknown: return "?"
        }
    }

    var globalsInside: [String] {
        switch self {
        case let .global(g): return [g]
        case let .tuple(items): return items.flatMap(\.globalsInside)
        default: return []
        }
    }
}

private struct Machine {
    let bytes: UnsafeRawBufferPointer
    var pos: Int
    let limits: PickleLimits
    let recordOps: Bool
    let nesting: Int
    var result = PickleAnalysis(start: 0)
    var stack: [PV] = []
    var marks: [Int] = []
    var memo: [UInt64: PV] = [:]
    var importIndex: [String: Int] = [:]
    var opOffset = 0
    var sawTorchMagic = false
    static let torchMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    init(bytes: UnsafeRawBufferPointer, pos: Int, limits: PickleLimits, recordOps: Bool, nesting: Int) {
        self.bytes = bytes
        self.pos = pos
        self.limits = limits
        self.recordOps = recordOps
        self.nesting = nesting
    }

    func fail(_ message: String) -> PickleError { PickleError(offset: opOffset, message: message) }

    // MARK: argument readers

    mutating func take(_ n: Int, _ what: String) throws(PickleError) -> Range<Int> {
        guard n >= 0, n <= bytes.count - pos else {
            throw fail("truncated: \(what) needs \(n) bytes but only \(bytes.count - pos) remain")
        }
        defer { pos += n }
        return pos..<(pos + n)
    }

    mutating func u8() throws(PickleError) -> Int { Int(bytes[try take(1, "argument").lowerBound]) }

    mutating func uint(_ n: Int) throws(PickleError) -> UInt64 {
        let r = try take(n, "argument")
        var v: UInt64 = 0
        for i in r.reversed() { v = v << 8 | UInt64(bytes[i]) }
        return v
    }

    mutating func int4() throws(PickleError) -> Int64 { Int64(Int32(bitPattern: UInt32(try uint(4)))) }

    /// A newline-terminated argument (without the newline).
    mutating func line() throws(PickleError) -> Range<Int> {
        var i = pos
        while i < bytes.count, bytes[i] != 0x0A { i += 1 }
        guard i < bytes.count else { throw fail("truncated: no newline after a text argument") }
        defer { pos = i + 1 }
        return pos..<i
    }

    func text(_ r: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[r]), as: UTF8.self)
    }

    func textIfShort(_ r: Range<Int>, valid: Bool = false) -> PV {
        guard r.count <= limits.maxDecodedString else { return .longText(r.count) }
        let raw = UnsafeRawBufferPointer(rebasing: bytes[r])
        if valid {
            guard let s = String(validating: raw, as: UTF8.self) else { return .bytes(start: r.lowerBound, count: r.count) }
            return .str(s)
        }
        return .str(String(decoding: raw, as: UTF8.self))
    }

    // MARK: stack

    var fence: Int { marks.last ?? 0 }

    mutating func push(_ v: PV) throws(PickleError) {
        guard stack.count < limits.maxStackDepth else { throw fail("stack deeper than \(limits.maxStackDepth)") }
        stack.append(v)
    }

    mutating func pop() throws(PickleError) -> PV {
        guard stack.count > fence else { throw fail("unpickling stack underflow") }
        return stack.removeLast()
    }

    func top() throws(PickleError) -> PV {
        guard stack.count > fence, let v = stack.last else { throw fail("unpickling stack underflow") }
        return v
    }

    mutating func popMark() throws(PickleError) -> [PV] {
        guard let k = marks.popLast() else { throw fail("could not find MARK") }
        let items = Array(stack[k...])
        stack.removeSubrange(k...)
        return items
    }

    mutating func memoPut(_ index: UInt64) throws(PickleError) {
        let v = try top()
        if memo[index] == nil, memo.count >= limits.maxMemoEntries { throw fail("memo larger than \(limits.maxMemoEntries) entries") }
        memo[index] = v
    }

    mutating func memoGet(_ index: UInt64) throws(PickleError) {
        guard let v = memo[index] else { throw fail("memo value not found at index \(index)") }
        try push(v)
    }

    /// Decimal argument of GET/PUT (protocol 0).
    mutating func decimalLine() throws(PickleError) -> UInt64 {
        let s = text(try line()).trimmingCharacters(in: .whitespaces)
        guard let v = UInt64(s) else { throw fail("invalid decimal memo index '\(s.terminalSafe)'") }
        return v
    }

    // MARK: findings

    mutating func imported(_ module: String, _ name: String, opcode: String) -> PV {
        let q = PickleScanner.qualify(module: module, name: name)
        if let i = importIndex[q] {
            result.imports[i].count += 1
        } else {
            importIndex[q] = result.imports.count
            result.imports.append(PickleImport(qualifiedName: q, offset: opOffset, opcode: opcode, count: 1))
        }
        return .global(q)
    }

    mutating func called(_ callable: PV, args: PV?, opcode: String) -> PV {
        switch callable {
        case let .global(q):
            if let i = importIndex[q], result.imports[i].firstCallOffset == nil {
                result.imports[i].firstCallOffset = opOffset
                result.imports[i].firstCallArguments = args?.render()
            }
            if let args { checkEmbedded(args) }
            return .object(q)
        default:
            result.events.append(PickleEvent(kind: .unresolvedCall, offset: opOffset,
                                             detail: "\(opcode) calls \(callable.render()), a value computed at load time, "
                                                 + "not an imported callable",
                                             severity: .high))
            return .object("?")
        }
    }

    /// BUILD, APPEND(S), SETITEM(S) and ADDITEMS on an imported object (not an instance) call
    /// its setattr/__setstate__/append/extend/__setitem__/add: a known way to patch a module.
    mutating func mutates(_ target: PV, opcode: String) {
        if case let .global(q) = target {
            result.events.append(PickleEvent(kind: .mutatesImported, offset: opOffset,
                                             detail: "\(opcode) modifies the imported object \(q) itself (sets "
                                                 + "attributes or calls its methods)",
                                             severity: .critical))
        }
    }

    /// Bytes arguments of a call that are themselves complete pickles are read too (a nested
    /// `pickle.loads(b'…')` payload), up to `maxNesting` levels.
    mutating func checkEmbedded(_ v: PV) {
        guard nesting < limits.maxNesting else { return }
        switch v {
        case let .tuple(items): for i in items { checkEmbedded(i) }
        case let .bytes(start, count) where count >= 4 && bytes[start] == 0x80 && bytes[start + 1] <= 5:
            let sub = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)])
            let inner = PickleScanner.scan(sub, start: 0, limits: limits, recordOps: false, nesting: nesting + 1)
            guard inner.complete || !inner.imports.isEmpty else { return }
            let names = inner.imports.map(\.qualifiedName)
            result.events.append(PickleEvent(kind: .embeddedPickle, offset: start,
                                             detail: "a call argument is itself a pickle (\(count) bytes) importing "
                                                 + "\(names.isEmpty ? "nothing" : names.joined(separator: ", "))",
                                             severity: .high))
            for imp in inner.imports {
                let q = imp.qualifiedName
                if let i = importIndex[q] { result.imports[i].count += imp.count } else {
                    importIndex[q] = result.imports.count
                    result.imports.append(PickleImport(qualifiedName: q, offset: start + imp.offset,
                                                       opcode: "\(imp.opcode) (embedded pickle)",
                                                       count: imp.count, firstCallOffset: imp.firstCallOffset.map { start + $0 },
                                                       firstCallArguments: imp.firstCallArguments))
                }
            }
            for e in inner.events {
                result.events.append(PickleEvent(kind: e.kind, offset: start + e.offset, detail: "embedded pickle: " + e.detail,
                                                 severity: e.severity))
            }
        default: return
        }
    }

    // MARK: the loop

    mutating func run() throws(PickleError) {
        while true {
            opOffset = pos
            guard pos < bytes.count else { throw fail("truncated: pickle ends without STOP") }
            let op = bytes[pos]
            pos += 1
            result.opcodeCount += 1
            guard result.opcodeCount <= limits.maxOpcodes else { throw fail("more than \(limits.maxOpcodes) opcodes") }
            if recordOps { result.ops.append(PickleOp(offset: opOffset, code: op)) }
            switch op {
            case 0x28: // MARK
                guard marks.count < limits.maxStackDepth else { throw fail("too many marks") }
                marks.append(stack.count)
            case 0x2E: // STOP
                _ = try pop()
                // PyTorch's legacy format starts with a pickle of exactly this number (torch/serialization.py MAGIC_NUMBER).
                if sawTorchMagic, result.opcodeCount <= 3 { result.isTorchLegacyMagic = true }
                result.end = pos
                return
            case 0x30: // POP: an empty slice above a mark pops the mark (_pickle.c load_pop)
                if stack.count > fence { stack.removeLast() } else if !marks.isEmpty { marks.removeLast() } else {
                    throw fail("unpickling stack underflow")
                }
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: try push(try top()) // DUP
            case 0x46: _ = try line(); try push(.float) // FLOAT
            case 0x49: // INT (decimalnl_short; "00"/"01" are False/True)
                let s = text(try line()).trimmingCharacters(in: .whitespaces)
                guard let f = s.unicodeScalars.first, f == "-" || f == "+" || ("0"..."9").contains(f) else {
                    throw fail("invalid literal for INT")
                }
                try push(s == "00" || s == "01" ? .bool : .int(Int64(s)))
            case 0x4A: try push(.int(try int4())) // BININT
            case 0x4B: try push(.int(Int64(try u8()))) // BININT1
            case 0x4C: // LONG (decimalnl_long)
                var s = text(try line()).trimmingCharacters(in: .whitespaces)
                if s.hasSuffix("L") { s.removeLast() }
                guard let f = s.unicodeScalars.first, f == "-" || f == "+" || ("0"..."9").contains(f) else {
                    throw fail("invalid literal for LONG")
                }
                try push(.int(Int64(s)))
            case 0x4D: try push(.int(Int64(try uint(2)))) // BININT2
            case 0x4E: try push(.none) // NONE
            case 0x50: // PERSID
                let r = try line()
                result.persistentIDs += 1
                noteUnexpectedPersistentID(textIfShort(r))
                try push(.object("persistent_load"))
            case 0x51: // BINPERSID
                let pid = try pop()
                result.persistentIDs += 1
                noteUnexpectedPersistentID(pid)
                try push(.object("persistent_load"))
            case 0x52: // REDUCE
                let args = try pop()
                let callable = try pop()
                try push(called(callable, args: args, opcode: "REDUCE"))
            case 0x53: // STRING: quoted, backslash-escaped; decoded to str (encoding='ASCII'/'utf-8')
                let r = try line()
                guard r.count >= 2, bytes[r.lowerBound] == bytes[r.upperBound - 1],
                      bytes[r.lowerBound] == 0x27 || bytes[r.lowerBound] == 0x22 else {
                    throw fail("the STRING opcode argument must be quoted")
                }
                try push(.str(unescape(r.lowerBound + 1..<(r.upperBound - 1))))
            case 0x54: // BINSTRING (int4, negative refused)
                let n = try int4()
                guard n >= 0 else { throw fail("BINSTRING pickle has negative byte count") }
                try push(textIfShort(try take(Int(n), "BINSTRING"), valid: true))
            case 0x55: try push(textIfShort(try take(try u8(), "SHORT_BINSTRING"), valid: true)) // SHORT_BINSTRING
            case 0x56: try push(.str(rawUnicodeEscape(try line()))) // UNICODE
            case 0x58: try push(textIfShort(try take(Int(try uint(4)), "BINUNICODE"))) // BINUNICODE
            case 0x61: // APPEND
                _ = try pop()
                mutates(try top(), opcode: "APPEND")
            case 0x62: // BUILD
                _ = try pop()
                mutates(try top(), opcode: "BUILD")
            case 0x63: // GLOBAL: "module\nname\n"
                let mod = text(try line()), name = text(try line())
                try push(imported(mod, name, opcode: "GLOBAL"))
            case 0x64: _ = try popMark(); try push(.dict) // DICT
            case 0x7D: try push(.dict) // EMPTY_DICT
            case 0x65: // APPENDS
                _ = try popMark()
                mutates(try top(), opcode: "APPENDS")
            case 0x67: try memoGet(try decimalLine()) // GET
            case 0x68: try memoGet(UInt64(try u8())) // BINGET
            case 0x69: // INST: "module\nname\n", arguments from the mark; calls module.name(*args)
                let mod = text(try line()), name = text(try line())
                let args = try popMark()
                let g = imported(mod, name, opcode: "INST")
                try push(called(g, args: .tuple(args), opcode: "INST"))
            case 0x6A: try memoGet(try uint(4)) // LONG_BINGET
            case 0x6C: _ = try popMark(); try push(.list) // LIST
            case 0x5D: try push(.list) // EMPTY_LIST
            case 0x6F: // OBJ: mark, cls, args… → cls(*args)
                var items = try popMark()
                guard !items.isEmpty else { throw fail("OBJ without a class after MARK") }
                let cls = items.removeFirst()
                try push(called(cls, args: .tuple(items), opcode: "OBJ"))
            case 0x70: try memoPut(try decimalLine()) // PUT
            case 0x71: try memoPut(UInt64(try u8())) // BINPUT
            case 0x72: try memoPut(try uint(4)) // LONG_BINPUT
            case 0x73: // SETITEM
                _ = try pop(); _ = try pop()
                mutates(try top(), opcode: "SETITEM")
            case 0x74: try push(.tuple(bounded(try popMark()))) // TUPLE
            case 0x29: try push(.tuple([])) // EMPTY_TUPLE
            case 0x75: // SETITEMS
                _ = try popMark()
                mutates(try top(), opcode: "SETITEMS")
            case 0x47: _ = try take(8, "BINFLOAT"); try push(.float) // BINFLOAT
            case 0x80: // PROTO
                let v = try u8()
                guard v <= 5 else { throw fail("unsupported pickle protocol: \(v)") }
                if result.protocolVersion == nil { result.protocolVersion = v }
            case 0x81: // NEWOBJ: cls.__new__(cls, *args)
                let args = try pop()
                let cls = try pop()
                try push(called(cls, args: args, opcode: "NEWOBJ"))
            case 0x82, 0x83, 0x84: // EXT1, EXT2, EXT4: copyreg's extension registry
                let code: Int64 = op == 0x82 ? Int64(try u8()) : op == 0x83 ? Int64(try uint(2)) : try int4()
                guard code > 0 else { throw fail("EXT specifies code <= 0") }
                try push(imported("copyreg", "_extension_registry[\(code)]", opcode: PickleScanner.opcodeNames[op]!))
            case 0x85: try push(.tuple([try pop()])) // TUPLE1
            case 0x86: let b = try pop(), a = try pop(); try push(.tuple([a, b])) // TUPLE2
            case 0x87: let c = try pop(), b = try pop(), a = try pop(); try push(.tuple([a, b, c])) // TUPLE3
            case 0x88, 0x89: try push(.bool) // NEWTRUE, NEWFALSE
            case 0x8A: // LONG1
                let r = try take(try u8(), "LONG1")
                if r.count == 10, Array(UnsafeRawBufferPointer(rebasing: bytes[r])) == Machine.torchMagic { sawTorchMagic = true }
                try push(.int(littleEndianSigned(r)))
            case 0x8B: // LONG4 (int4 length, negative refused)
                let n = try int4()
                guard n >= 0 else { throw fail("LONG pickle has negative byte count") }
                let r = try take(Int(n), "LONG4")
                try push(.int(littleEndianSigned(r)))
            case 0x42: let r = try take(Int(try uint(4)), "BINBYTES"); try push(.bytes(start: r.lowerBound, count: r.count))
            case 0x43: let r = try take(try u8(), "SHORT_BINBYTES"); try push(.bytes(start: r.lowerBound, count: r.count))
            case 0x8C: try push(textIfShort(try take(try u8(), "SHORT_BINUNICODE"))) // SHORT_BINUNICODE
            case 0x8D: // BINUNICODE8
                let n = try uint(8)
                guard n <= UInt64(bytes.count - pos) else { throw fail("truncated: BINUNICODE8 declares \(n) bytes") }
                try push(textIfShort(try take(Int(n), "BINUNICODE8")))
            case 0x8E, 0x96: // BINBYTES8, BYTEARRAY8
                let n = try uint(8)
                guard n <= UInt64(bytes.count - pos) else { throw fail("truncated: \(PickleScanner.opcodeNames[op]!) declares \(n) bytes") }
                let r = try take(Int(n), "bytes")
                try push(.bytes(start: r.lowerBound, count: r.count))
            case 0x8F: try push(.set) // EMPTY_SET
            case 0x90: // ADDITEMS
                _ = try popMark()
                mutates(try top(), opcode: "ADDITEMS")
            case 0x91: _ = try popMark(); try push(.frozenset) // FROZENSET
            case 0x92: // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
                _ = try pop()
                let args = try pop()
                let cls = try pop()
                try push(called(cls, args: args, opcode: "NEWOBJ_EX"))
            case 0x93: // STACK_GLOBAL: module and name are the two str values on the stack
                let name = try pop(), mod = try pop()
                if case let .str(m) = mod, case let .str(n) = name {
                    try push(imported(m, n, opcode: "STACK_GLOBAL"))
                } else {
                    result.events.append(PickleEvent(kind: .dynamicImport, offset: opOffset,
                                                     detail: "STACK_GLOBAL imports \(mod.render()).\(name.render()): names not given as "
                                                         + "literal strings cannot be resolved statically",
                                                     severity: .critical))
                    try push(.global("?"))
                }
            case 0x94: try memoPut(UInt64(memo.count)) // MEMOIZE: index = len(memo)
            case 0x95: // FRAME: the next n bytes are one frame; the opcodes inside are read as usual
                let n = try uint(8)
                guard n <= UInt64(bytes.count - pos) else {
                    throw fail("truncated: FRAME declares \(n) bytes but only \(bytes.count - pos) remain")
                }
            case 0x97: try push(.buffer) // NEXT_BUFFER
            case 0x98: _ = try top() // READONLY_BUFFER
            default:
                throw fail("invalid opcode 0x\(String(op, radix: 16))")
            }
        }
    }

    func bounded(_ items: [PV]) -> [PV] { items.count <= 64 ? items : Array(items.prefix(64)) }

    func littleEndianSigned(_ r: Range<Int>) -> Int64? {
        guard !r.isEmpty else { return 0 }
        guard r.count <= 8 else { return nil }
        var v: UInt64 = 0
        for i in r.reversed() { v = v << 8 | UInt64(bytes[i]) }
        let shift = UInt64(64 - 8 * r.count)
        return Int64(bitPattern: v << shift) >> Int64(shift)
    }

    /// PyTorch's persistent ids are tuples starting with 'storage'; anything else is noted.
    mutating func noteUnexpectedPersistentID(_ pid: PV) {
        if case let .tuple(items) = pid, case let .str(tag)? = items.first, tag == "storage" { return }
        result.events.append(PickleEvent(kind: .persistentID, offset: opOffset,
                                         detail: "persistent id \(pid.render()) is not a PyTorch storage reference; the loading program's "
                                             + "persistent_load decides what it does",
                                         severity: .medium))
    }

    /// Python's bytes escape decoding for STRING arguments (\\, \', \", \n, \xhh, octal, …).
    func unescape(_ r: Range<Int>) -> String {
        var out: [UInt8] = []
        var i = r.lowerBound
        while i < r.upperBound {
            let c = bytes[i]
            if c != 0x5C || i + 1 >= r.upperBound { out.append(c); i += 1; continue }
            let e = bytes[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var v = Int(e - 48), k = 0
                while k < 2, i < r.upperBound, (48...55).contains(bytes[i]) { v = v * 8 + Int(bytes[i] - 48); i += 1; k += 1 }
                out.append(UInt8(truncatingIfNeeded: v))
            case UInt8(ascii: "x") where i + 1 < r.upperBound:
                if let v = UInt8(text(i..<(i + 2)), radix: 16) { out.append(v); i += 2 } else { out += [0x5C, e] }
            case 0x5C, 0x27, 0x22: out.append(e)
            case 0x0A: break
            default: out += [0x5C, e]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// raw-unicode-escape decoding for UNICODE arguments: \uXXXX and \UXXXXXXXX; other bytes are Latin-1.
    func rawUnicodeEscape(_ r: Range<Int>) -> String {
        var out = String.UnicodeScalarView()
        var i = r.lowerBound
        while i < r.upperBound {
            let c = bytes[i]
            if c == 0x5C, i + 1 < r.upperBound, bytes[i + 1] == UInt8(ascii: "u") || bytes[i + 1] == UInt8(ascii: "U") {
                let n = bytes[i + 1] == UInt8(ascii: "u") ? 4 : 8
                if i + 2 + n <= r.upperBound, let v = UInt32(text((i + 2)..<(i + 2 + n)), radix: 16), let s = Unicode.Scalar(v) {
                    out.append(s); i += 2 + n; continue
                }
            }
            out.append(Unicode.Scalar(c))
            i += 1
        }
        return String(out)
    }
}
