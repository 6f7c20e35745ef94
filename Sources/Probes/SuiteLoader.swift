import AssayCommon
import Foundation

/// Reads and validates suite files (format: docs/usage.md, "File format (version 1)").
///
/// Strict by design: a typo in a field name would otherwise drop a prompt or a trigger without a
/// word, and the scan's statistics would silently change. Every refusal is a `SuiteError` that
/// names the file, line and column.
public enum SuiteLoader {
    /// The only `assay_suite` version this reader accepts.
    public static let formatVersion = 1
    /// Files larger than this are refused before they are read (the shipped suites are ~60 KB).
    public static let maxFileBytes = 64 << 20
    /// ids, categories, families and suite names: `[A-Za-z0-9][A-Za-z0-9._:-]*`.
    public static let maxIdentifierLength = 128

    static let headerFields: Set<String> = ["assay_suite", "kind", "name", "description"]
    static let probeFields: Set<String> = ["id", "category", "prompt", "reference", "system"]
    static let triggerFields: Set<String> = ["id", "text", "family", "role", "modes", "note", "source"]

    // MARK: - Entry points

    public static func load(_ url: URL) throws(SuiteError) -> SuiteFile {
        let path = url.path
        let bytes = try readBounded(path)
        return try parse(bytes, path: path)
    }

    public static func loadProbes(_ url: URL) throws(SuiteError) -> ProbeSuite {
        switch try load(url) {
        case let .probes(s): return s
        case .triggers:
            throw SuiteError(.wrongKind, file: url.path, line: 1, column: 1,
                             message: "this is a trigger file (kind \"triggers\"); a probe suite (kind \"probes\") was expected")
        }
    }

    public static func loadTriggers(_ url: URL) throws(SuiteError) -> TriggerSet {
        switch try load(url) {
        case let .triggers(t): return t
        case .probes:
            throw SuiteError(.wrongKind, file: url.path, line: 1, column: 1,
                             message: "this is a probe suite (kind \"probes\"); a trigger file (kind \"triggers\") was expected")
        }
    }

    /// Every `*.jsonl` file directly in `directory`, in file-name order; each must be valid and
    /// suite names must be unique.
    public static func loadDirectory(_ directory: URL) throws(SuiteError) -> [SuiteFile] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDir) else {
            throw SuiteError(.io, file: directory.path, message: "no such suites directory")
        }
        guard isDir.boolValue else { throw SuiteError(.io, file: directory.path, message: "not a directory") }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw SuiteError(.io, file: directory.path, message: "cannot list the suites directory: \(error.localizedDescription)")
        }
        var suites: [SuiteFile] = []
        var byName: [String: String] = [:]
        for name in names.sorted() where name.hasSuffix(".jsonl") && !name.hasPrefix(".") {
            let suite = try load(directory.appendingPathComponent(name))
            if let other = byName[suite.name] {
                throw SuiteError(.duplicateName, file: suite.path, line: 1,
                                 message: "suite name '\(suite.name.terminalSafe)' is also declared by \(other.terminalSafe)")
            }
            byName[suite.name] = suite.path
            suites.append(suite)
        }
        return suites
    }

    /// The suite called `name` in `directory` (by header name); a `name` containing '/' or
    /// ending in `.jsonl` is read as a file path instead.
    public static func find(_ name: String, in directory: URL?) throws(SuiteError) -> SuiteFile {
        if name.hasSuffix(".jsonl") || name.contains("/") {
            return try load(URL(fileURLWithPath: name))
        }
        guard let directory else {
            throw SuiteError(.notFound, file: name, message: "no suites directory to look in (set ASSAY_PROBES_DIR or pass --dir)")
        }
        let suites = try loadDirectory(directory)
        if let s = suites.first(where: { $0.name == name }) { return s }
        let known = suites.map(\.name).joined(separator: ", ")
        throw SuiteError(.notFound, file: directory.path,
                         message: "no suite named '\(name.terminalSafe)' (available: \(known.isEmpty ? "none" : known))")
    }

    /// `find`, for a probe suite (what a scan's `--suite NAME|PATH` resolves through).
    public static func findProbes(_ name: String, in directory: URL?) throws(SuiteError) -> ProbeSuite {
        let found = try find(name, in: directory)
        guard case let .probes(s) = found else {
            throw SuiteError(.wrongKind, file: found.path, line: 1, column: 1,
                             message: "'\(found.name.terminalSafe)' is a trigger set; a probe suite was expected")
        }
        return s
    }

    /// `find`, for a trigger set (a scan's `--triggers NAME|PATH`).
    public static func findTriggers(_ name: String, in directory: URL?) throws(SuiteError) -> TriggerSet {
        let found = try find(name, in: directory)
        guard case let .triggers(t) = found else {
            throw SuiteError(.wrongKind, file: found.path, line: 1, column: 1,
                             message: "'\(found.name.terminalSafe)' is a probe suite; a trigger set was expected")
        }
        return t
    }

    /// The probe suites a scan reads: those given, else the built-in `default.jsonl` (empty when
    /// none is given and no built-in directory exists).
    public static func suitesOrBuiltin(_ given: [URL]) -> [URL] {
        given.isEmpty ? [builtinDirectory()?.appendingPathComponent("default.jsonl")].compactMap { $0 } : given
    }

    /// The trigger file a scan reads: the one given, else the built-in `triggers.jsonl`.
    public static func triggersOrBuiltin(_ given: URL?) -> URL? {
        given ?? builtinDirectory()?.appendingPathComponent("triggers.jsonl")
    }

    /// The directory of shipped suites: `$ASSAY_PROBES_DIR`; else the first `probes/` (or
    /// `share/assay/probes/`) holding a `.jsonl` file in the executable's directory or one of its
    /// ancestors (a build in `.build/debug/assay` finds the repository's `probes/`); else
    /// `./probes`. Nil when none exists.
    public static func builtinDirectory(environment: [String: String] = ProcessInfo.processInfo.environment,
                                        executable: URL? = Bundle.main.executableURL,
                                        currentDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)) -> URL? {
        if let env = environment["ASSAY_PROBES_DIR"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        func holdsSuites(_ dir: URL) -> Bool {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return false }
            return names.contains { $0.hasSuffix(".jsonl") }
        }
        if let executable {
            var dir = executable.resolvingSymlinksInPath().deletingLastPathComponent()
            for _ in 0..<8 {
                for candidate in [dir.appendingPathComponent("probes"), dir.appendingPathComponent("share/assay/probes")]
                where holdsSuites(candidate) {
                    return candidate
                }
                let parent = dir.deletingLastPathComponent()
                if parent.path == dir.path { break }
                dir = parent
            }
        }
        let cwd = currentDirectory.appendingPathComponent("probes")
        return holdsSuites(cwd) ? cwd : nil
    }

    // MARK: - Reading

    static func readBounded(_ path: String) throws(SuiteError) -> [UInt8] {
        // Non-blocking open, fstat on the descriptor: a FIFO named like a suite is refused, not waited on.
        let opened: (fd: Int32, size: Int)
        do { opened = try SafeFile.open(path, maxBytes: Int.max) } catch { throw SuiteError(.io, file: path, message: error.reasonOnly) }
        let fd = opened.fd
        defer { close(fd) }
        guard opened.size <= maxFileBytes else {
            throw SuiteError(.tooLarge, file: path,
                             message: "file is \(opened.size) bytes; suite files are limited to \(maxFileBytes) bytes (64 MiB)")
        }
        var bytes = [UInt8](repeating: 0, count: opened.size + 1)
        var done = 0
        while true {
            if done == bytes.count {
                // The file grew past its stat size: keep reading, within the bound.
                guard bytes.count <= maxFileBytes else {
                    throw SuiteError(.tooLarge, file: path,
                                     message: "file is larger than \(maxFileBytes) bytes (64 MiB), the limit for suite files")
                }
                bytes.append(contentsOf: [UInt8](repeating: 0, count: min(bytes.count, maxFileBytes + 1 - bytes.count)))
            }
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SuiteError(.io, file: path, message: "read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            done += n
        }
        bytes.removeSubrange(done...)
        return bytes
    }


    // MARK: - Parsing

    /// One non-blank line: its number and its parsed object, with file offsets for messages.
    struct Line {
        let number: Int
        let members: [JSONMember]
        /// File offset of each top-level key, parallel to `members`.
        let keyOffsets: [Int]
        /// File offset of the opening brace.
        let objectOffset: Int
    }

    static func parse(_ bytes: [UInt8], path: String) throws(SuiteError) -> SuiteFile {
        if let bad = SafeFile.firstInvalidUTF8(bytes) {
            let (line, column) = position(of: bad, in: bytes)
            throw SuiteError(.notUTF8, file: path, line: line, column: column, offset: bad,
                             message: "not valid UTF-8 at byte \(bad) (0x\(String(bytes[bad], radix: 16, uppercase: true)))")
        }
        // A UTF-8 byte-order mark (some Windows editors write one) is skipped.
        let bodyStart = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0

        var lines: [Line] = []
        var lineNumber = 0
        var s = bodyStart
        while s <= bytes.count {
            lineNumber += 1
            var e = s
            while e < bytes.count && bytes[e] != 0x0A { e += 1 }
            let next = e + 1
            if e > s && bytes[e - 1] == 0x0D { e -= 1 }
            let slice = bytes[s..<e]
            if !slice.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) {
                lines.append(try parseLine(slice, number: lineNumber, start: s, file: bytes, path: path))
            }
            s = next
        }

        guard let header = lines.first else {
            throw SuiteError(.header, file: path,
                             message: "empty file: expected a header line {\"assay_suite\": 1, \"kind\": \"probes\" | \"triggers\", ...}")
        }
        let (kind, name, description) = try parseHeader(header, bytes: bytes, path: path)
        let entries = lines.dropFirst()
        // Hashed last, so that a refused file costs no hashing.
        var sha: String { SuiteDigest.sha256Hex(bytes) }
        switch kind {
        case .probes:
            var probes: [Probe] = []
            var seen: [String: Int] = [:]
            for line in entries {
                let p = try parseProbe(line, bytes: bytes, path: path)
                try checkUnique(id: p.id, line: line, seen: &seen, bytes: bytes, path: path)
                probes.append(p)
            }
            guard !probes.isEmpty else {
                throw SuiteError(.emptySuite, file: path, line: header.number, message: "the suite has no probes after its header")
            }
            return .probes(ProbeSuite(name: name, description: description, probes: probes, sha256: sha, path: path))
        case .triggers:
            var triggers: [Trigger] = []
            var seen: [String: Int] = [:]
            var texts: [[UInt32]: (id: String, line: Int)] = [:]
            for line in entries {
                let t = try parseTrigger(line, bytes: bytes, path: path)
                try checkUnique(id: t.id, line: line, seen: &seen, bytes: bytes, path: path)
                // Compare by exact scalars: Swift's String == would equate canonically
                // equivalent spellings, which tokenize differently.
                let key = t.text.unicodeScalars.map(\.value)
                if let first = texts[key] {
                    let (l, c) = keyPosition("text", in: line, bytes: bytes)
                    throw SuiteError(.duplicateText, file: path, line: l, column: c,
                                     message: "trigger '\(t.id.terminalSafe)' has the same text as "
                                         + "'\(first.id.terminalSafe)' on line \(first.line)")
                }
                texts[key] = (t.id, line.number)
                triggers.append(t)
            }
            guard !triggers.isEmpty else {
                throw SuiteError(.emptySuite, file: path, line: header.number, message: "the trigger file has no triggers after its header")
            }
            return .triggers(TriggerSet(name: name, description: description, triggers: triggers, sha256: sha, path: path))
        }
    }

    static func parseLine(_ slice: ArraySlice<UInt8>, number: Int, start: Int, file: [UInt8], path: String) throws(SuiteError) -> Line {
        let value: JSONValue
        do {
            value = try JSONParser.parse(Array(slice))
        } catch {
            let (_, column) = position(of: start + error.offset, in: file)
            throw SuiteError(.syntax, file: path, line: number, column: column, offset: start + error.offset,
                             message: "invalid JSON: \(error.message)")
        }
        let objectOffset = start + (slice.firstIndex(where: { $0 != 0x20 && $0 != 0x09 }) ?? slice.startIndex) - slice.startIndex
        guard let members = value.members else {
            throw SuiteError(.invalidField, file: path, line: number, column: position(of: objectOffset, in: file).column,
                             offset: objectOffset, message: "each line must be a JSON object, found \(value.typeName)")
        }
        var offsets = topLevelKeyOffsets(slice).map { $0 + start }
        // Only positions for messages: should the scan ever disagree, point at the object.
        if offsets.count != members.count { offsets = Array(repeating: objectOffset, count: members.count) }
        let line = Line(number: number, members: members, keyOffsets: offsets, objectOffset: objectOffset)
        if let dup = value.firstDuplicateKey {
            let second = members.indices.filter { members[$0].key == dup }[1]
            let (_, c) = position(of: offsets[second], in: file)
            throw SuiteError(.duplicateKey, file: path, line: number, column: c, offset: offsets[second],
                             message: "key \"\(dup.terminalSafe)\" appears more than once")
        }
        return line
    }

    /// Offsets (within the slice's base array indices, rebased to 0) of the opening quote of
    /// every key of the top-level object. The line already parsed, so a string at depth 1
    /// followed by ':' is a key.
    static func topLevelKeyOffsets(_ slice: ArraySlice<UInt8>) -> [Int] {
        var out: [Int] = []
        var depth = 0
        var i = slice.startIndex
        while i < slice.endIndex {
            let c = slice[i]
            if c == UInt8(ascii: "\"") {
                let open = i
                i += 1
                while slice[i] != UInt8(ascii: "\"") { i += slice[i] == UInt8(ascii: "\\") ? 2 : 1 }
                if depth == 1 {
                    var j = i + 1
                    while j < slice.endIndex, slice[j] == 0x20 || slice[j] == 0x09 || slice[j] == 0x0D { j += 1 }
                    if j < slice.endIndex, slice[j] == UInt8(ascii: ":") { out.append(open - slice.startIndex) }
                }
            } else if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
                depth += 1
            } else if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                depth -= 1
            }
            i += 1
        }
        return out
    }

    /// 1-based line and column (in Unicode scalars) of a byte offset.
    static func position(of offset: Int, in bytes: [UInt8]) -> (line: Int, column: Int) {
        var line = 1, lineStart = 0
        let end = min(offset, bytes.count)
        for i in 0..<end where bytes[i] == 0x0A {
            line += 1
            lineStart = i + 1
        }
        var column = 1
        var i = lineStart
        if line == 1 && bytes.starts(with: [0xEF, 0xBB, 0xBF]) && end >= 3 { i = 3 }
        while i < end {
            if bytes[i] & 0xC0 != 0x80 { column += 1 }
            i += 1
        }
        return (line, column)
    }

    static func keyPosition(_ key: String, in line: Line, bytes: [UInt8]) -> (line: Int, column: Int) {
        let offset = line.members.firstIndex(where: { $0.key == key }).map { line.keyOffsets[$0] } ?? line.objectOffset
        return (line.number, position(of: offset, in: bytes).column)
    }

    static func fail(_ kind: SuiteError.Kind, _ message: String, key: String?, line: Line, bytes: [UInt8], path: String) -> SuiteError {
        let offset = key.flatMap { k in line.members.firstIndex(where: { $0.key == k }).map { line.keyOffsets[$0] } } ?? line.objectOffset
        return SuiteError(kind, file: path, line: line.number, column: position(of: offset, in: bytes).column, offset: offset,
                          message: message)
    }

    /// Refuses fields outside `allowed`; names starting with `x_` are reserved for the user's
    /// own annotations and ignored.
    static func checkFields(_ line: Line, allowed: Set<String>, what: String, bytes: [UInt8], path: String) throws(SuiteError) {
        for m in line.members where !allowed.contains(m.key) && !m.key.hasPrefix("x_") {
            throw fail(.unknownField, "unknown field \"\(m.key.terminalSafe)\" in \(what) (allowed: "
                           + "\(allowed.sorted().joined(separator: ", ")); names starting with x_ are ignored)",
                       key: m.key, line: line, bytes: bytes, path: path)
        }
    }

    static func value(_ key: String, _ line: Line) -> JSONValue? {
        line.members.first(where: { $0.key == key })?.value
    }

    /// A required non-empty string.
    static func requiredString(_ key: String, _ line: Line, what: String, bytes: [UInt8], path: String) throws(SuiteError) -> String {
        guard let v = value(key, line), v != .null else {
            throw fail(.missingField, "\(what) has no \"\(key)\"", key: nil, line: line, bytes: bytes, path: path)
        }
        guard let s = v.string else {
            throw fail(.invalidField, "\"\(key)\" must be a string, found \(v.typeName)", key: key, line: line, bytes: bytes, path: path)
        }
        guard !isBlank(s) else {
            throw fail(.emptyField, "\"\(key)\" is empty", key: key, line: line, bytes: bytes, path: path)
        }
        return s
    }

    /// An optional string: absent or null means nil; an empty string is refused (omit the field).
    static func optionalString(_ key: String, _ line: Line, bytes: [UInt8], path: String) throws(SuiteError) -> String? {
        guard let v = value(key, line), v != .null else { return nil }
        guard let s = v.string else {
            throw fail(.invalidField, "\"\(key)\" must be a string, found \(v.typeName)", key: key, line: line, bytes: bytes, path: path)
        }
        guard !isBlank(s) else {
            throw fail(.emptyField, "\"\(key)\" is empty (omit the field instead)", key: key, line: line, bytes: bytes, path: path)
        }
        return s
    }

    static func identifier(_ key: String, _ s: String, _ line: Line, bytes: [UInt8], path: String) throws(SuiteError) -> String {
        guard isIdentifier(s) else {
            throw fail(.invalidField, "\"\(key)\" '\(s.terminalSafe)' must match [A-Za-z0-9][A-Za-z0-9._:-]* and be at most "
                           + "\(maxIdentifierLength) characters",
                       key: key, line: line, bytes: bytes, path: path)
        }
        return s
    }

    public static func isIdentifier(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= maxIdentifierLength else { return false }
        func alnum(_ c: UInt8) -> Bool { (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) }
        guard alnum(u[0]) else { return false }
        return u.allSatisfy {
            alnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "-")
        }
    }

    /// Empty, or nothing but Unicode White_Space. Zero-width characters (U+200B, U+2060) are
    /// not White_Space, so they are valid trigger text.
    static func isBlank(_ s: String) -> Bool {
        s.unicodeScalars.allSatisfy { $0.properties.isWhitespace }
    }

    static func parseHeader(_ line: Line, bytes: [UInt8], path: String) throws(SuiteError) -> (SuiteFile.Kind, String, String?) {
        guard let version = value("assay_suite", line) else {
            throw fail(.header, "the first line must be a suite header {\"assay_suite\": 1, \"kind\": \"probes\" | \"triggers\", ...}; "
                           + "it has no \"assay_suite\"",
                       key: nil, line: line, bytes: bytes, path: path)
        }
        guard let v = version.exactInt else {
            throw fail(.version, "\"assay_suite\" must be an integer version, found \(version.typeName)",
                       key: "assay_suite", line: line, bytes: bytes, path: path)
        }
        guard v == formatVersion else {
            throw fail(.version, "unsupported suite format version \(v) (this Assay reads version \(formatVersion))",
                       key: "assay_suite", line: line, bytes: bytes, path: path)
        }
        try checkFields(line, allowed: headerFields, what: "the header", bytes: bytes, path: path)
        guard let kindValue = value("kind", line), kindValue != .null else {
            throw fail(.header, "the header has no \"kind\" (\"probes\" or \"triggers\")", key: nil, line: line, bytes: bytes, path: path)
        }
        guard let k = kindValue.string, let kind = SuiteFile.Kind(rawValue: k) else {
            let shown = kindValue.string.map { "'\($0.terminalSafe)'" } ?? kindValue.typeName
            throw fail(.unknownKind, "unknown suite kind \(shown) (expected \"probes\" or \"triggers\")",
                       key: "kind", line: line, bytes: bytes, path: path)
        }
        let stem = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        var name = stem
        if let n = try optionalString("name", line, bytes: bytes, path: path) {
            name = try identifier("name", n, line, bytes: bytes, path: path)
        } else if !isIdentifier(stem) {
            throw fail(.header, "the header has no \"name\" and the file name '\(stem.terminalSafe)' is not a valid suite name",
                       key: nil, line: line, bytes: bytes, path: path)
        }
        let description = try optionalString("description", line, bytes: bytes, path: path)
        return (kind, name, description)
    }

    static func parseProbe(_ line: Line, bytes: [UInt8], path: String) throws(SuiteError) -> Probe {
        if value("assay_suite", line) != nil {
            throw fail(.header, "a second header (only the first line is a header)",
                       key: "assay_suite", line: line, bytes: bytes, path: path)
        }
        try checkFields(line, allowed: probeFields, what: "a probe", bytes: bytes, path: path)
        let id = try identifier("id", try requiredString("id", line, what: "the probe", bytes: bytes, path: path),
                                line, bytes: bytes, path: path)
        let what = "probe '\(id)'"
        let category = try identifier("category", try requiredString("category", line, what: what, bytes: bytes, path: path),
                                      line, bytes: bytes, path: path)
        let prompt = try requiredString("prompt", line, what: what, bytes: bytes, path: path)
        let reference = try optionalString("reference", line, bytes: bytes, path: path)
        let system = try optionalString("system", line, bytes: bytes, path: path)
        return Probe(id: id, category: category, prompt: prompt, reference: reference, system: system)
    }

    static func parseTrigger(_ line: Line, bytes: [UInt8], path: String) throws(SuiteError) -> Trigger {
        if value("assay_suite", line) != nil {
            throw fail(.header, "a second header (only the first line is a header)",
                       key: "assay_suite", line: line, bytes: bytes, path: path)
        }
        try checkFields(line, allowed: triggerFields, what: "a trigger", bytes: bytes, path: path)
        let id = try identifier("id", try requiredString("id", line, what: "the trigger", bytes: bytes, path: path),
                                line, bytes: bytes, path: path)
        let what = "trigger '\(id)'"
        let text = try requiredString("text", line, what: what, bytes: bytes, path: path)
        var family = "custom"
        if let f = try optionalString("family", line, bytes: bytes, path: path) {
            family = try identifier("family", f, line, bytes: bytes, path: path)
        }
        let roleText = try requiredString("role", line, what: what, bytes: bytes, path: path)
        guard let role = Trigger.Role(rawValue: roleText) else {
            throw fail(.invalidField, "\"role\" must be \"trigger\" or \"control\", found '\(roleText.terminalSafe)'",
                       key: "role", line: line, bytes: bytes, path: path)
        }
        var modes = InsertionMode.allCases
        if let m = value("modes", line), m != .null {
            guard let items = m.array else {
                throw fail(.invalidField, "\"modes\" must be an array of strings, found \(m.typeName)",
                           key: "modes", line: line, bytes: bytes, path: path)
            }
            guard !items.isEmpty else {
                throw fail(.emptyField, "\"modes\" is empty (omit it for all four modes)",
                           key: "modes", line: line, bytes: bytes, path: path)
            }
            var chosen = Set<InsertionMode>()
            for item in items {
                guard let s = item.string else {
                    throw fail(.invalidField, "\"modes\" must hold strings, found \(item.typeName)",
                               key: "modes", line: line, bytes: bytes, path: path)
                }
                guard let mode = InsertionMode(rawValue: s) else {
                    throw fail(.unknownMode, "unknown insertion mode '\(s.terminalSafe)' (expected prefix, suffix, random or system)",
                               key: "modes", line: line, bytes: bytes, path: path)
                }
                guard chosen.insert(mode).inserted else {
                    throw fail(.invalidField, "insertion mode '\(s)' is listed twice", key: "modes", line: line, bytes: bytes, path: path)
                }
            }
            modes = InsertionMode.allCases.filter(chosen.contains)
        }
        let note = try optionalString("note", line, bytes: bytes, path: path)
        let source = try optionalString("source", line, bytes: bytes, path: path)
        return Trigger(id: id, text: text, family: family, role: role, modes: modes, note: note, source: source)
    }

    static func checkUnique(id: String, line: Line, seen: inout [String: Int], bytes: [UInt8], path: String) throws(SuiteError) {
        if let first = seen[id] {
            throw fail(.duplicateID, "duplicate id '\(id)': line \(line.number) repeats the id first used on line \(first)",
                       key: "id", line: line, bytes: bytes, path: path)
        }
        seen[id] = line.number
    }
}
