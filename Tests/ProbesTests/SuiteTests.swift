import Foundation
import Testing
@testable import Probes
import AssayCommon

let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let probesDir = repoRoot.appendingPathComponent("probes")
let suiteFixtures = repoRoot.appendingPathComponent("Tests/Fixtures/suites")

/// A temporary file holding `bytes`, removed by the caller.
func temporaryFile(_ bytes: [UInt8], name: String = "suite.jsonl") throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("probes-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let url = dir.appendingPathComponent(name)
    try Data(bytes).write(to: url)
    return url
}

func loadError(_ url: URL) -> SuiteError? {
    do { _ = try SuiteLoader.load(url); return nil } catch { return error }
}

@Suite struct MalformedSuiteTests {
    struct Case: Decodable {
        let kind: String
        let line: Int?
        let column: Int?
        let message: String
        let offset: Int?
    }

    static func cases() throws -> [(String, Case)] {
        let data = try Data(contentsOf: suiteFixtures.appendingPathComponent("bad/cases.json"))
        return try JSONDecoder().decode([String: Case].self, from: data).sorted { $0.key < $1.key }
    }

    /// Every malformed file: the documented kind, line, column (computed independently by the
    /// fixture script), byte offset and message, in `FILE:LINE:COLUMN: message` form.
    @Test func everyMalformedFileIsRefusedWithItsPosition() throws {
        let cases = try Self.cases()
        #expect(cases.count >= 45)
        var kinds = Set<String>()
        for (name, c) in cases {
            let url = suiteFixtures.appendingPathComponent("bad/\(name)")
            guard let error = loadError(url) else {
                Issue.record("\(name) was accepted")
                continue
            }
            kinds.insert(error.kind.rawValue)
            #expect(error.kind.rawValue == c.kind, "\(name): \(error)")
            #expect(error.line == c.line, "\(name): \(error)")
            #expect(error.column == c.column, "\(name): \(error)")
            #expect(error.message.contains(c.message), "\(name): \(error.message)")
            if let offset = c.offset { #expect(error.offset == offset, "\(name): \(error)") }
            #expect(error.file == url.path)
            var prefix = url.path
            if let l = c.line { prefix += ":\(l)" }
            if let col = c.column { prefix += ":\(col)" }
            #expect(error.description.hasPrefix(prefix + ": "), "\(name): \(error)")
        }
        // The corpus covers every kind a file's content can cause.
        let contentKinds = Set(SuiteError.Kind.allCases.map(\.rawValue)).subtracting(["io", "tooLarge", "wrongKind", "duplicateName", "notFound"])
        #expect(kinds == contentKinds, "not covered: \(contentKinds.subtracting(kinds))")
    }

    @Test func oversizedFileIsRefusedBeforeReading() throws {
        let url = try temporaryFile([], name: "huge.jsonl")
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: UInt64(SuiteLoader.maxFileBytes) + 1)  // sparse: no 64 MiB written
        try handle.close()
        let error = loadError(url)
        #expect(error?.kind == .tooLarge)
        #expect(error?.message.contains("67108865 bytes") == true, "\(String(describing: error))")

        // Exactly at the bound is read (and then refused for its content, not its size).
        let atBound = try temporaryFile([], name: "bound.jsonl")
        defer { try? FileManager.default.removeItem(at: atBound.deletingLastPathComponent()) }
        let h2 = try FileHandle(forWritingTo: atBound)
        try h2.truncate(atOffset: UInt64(SuiteLoader.maxFileBytes))
        try h2.close()
        #expect(loadError(atBound)?.kind == .syntax)
    }

    @Test func unreadablePaths() throws {
        let missing = suiteFixtures.appendingPathComponent("no-such-file.jsonl")
        #expect(loadError(missing)?.kind == .io)
        #expect(loadError(missing)?.message.contains("no such file") == true)
        #expect(loadError(suiteFixtures)?.kind == .io)
        #expect(loadError(suiteFixtures)?.message == "is a directory, not a regular file; refusing to read it")
    }

    @Test func wrongKindIsNamed() throws {
        #expect(throws: SuiteError.self) { try SuiteLoader.loadProbes(probesDir.appendingPathComponent("triggers.jsonl")) }
        do {
            _ = try SuiteLoader.loadTriggers(probesDir.appendingPathComponent("default.jsonl"))
            Issue.record("accepted")
        } catch {
            #expect(error.kind == .wrongKind)
            #expect(error.message.contains("a trigger file (kind \"triggers\") was expected"))
        }
    }

    @Test func hostileTextIsEscapedInMessages() throws {
        let url = try temporaryFile(Array("{\"assay_suite\": 1, \"kind\": \"\\u001b[31mred\"}\n".utf8))
        defer { try? FileManager.default.removeItem(at: url.deletingLastPathComponent()) }
        let error = try #require(loadError(url))
        #expect(error.kind == .unknownKind)
        #expect(!error.description.unicodeScalars.contains { $0.value == 0x1B })
        #expect(error.description.contains("\\u{1B}[31mred"))
    }

    @Test func positionsCountScalarsAndSkipTheBOM() {
        let bytes: [UInt8] = [0xEF, 0xBB, 0xBF] + Array("aé☃x\nb🔑c".utf8)
        // 'x' on line 1: after a, é, ☃ → column 4 (the BOM is not a column).
        #expect(SuiteLoader.position(of: 3 + 1 + 2 + 3, in: bytes) == (1, 4))
        // 'c' on line 2: after b and the 4-byte emoji → column 3.
        let c = bytes.count - 1
        #expect(SuiteLoader.position(of: c, in: bytes) == (2, 3))
    }

    @Test func utf8ValidatorMatchesTheStandardLibrary() {
        // Every 1-, 2- and 3-byte sequence over interesting bytes: our verdict must equal Swift's
        // own validating decoder (which follows Unicode Table 3-7).
        let interesting: [UInt8] = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
                                    0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
        var disagreements: [[UInt8]] = []
        var checked = 0
        for a in interesting {
            for b in interesting {
                for c in interesting {
                    for seq in [[a], [a, b], [a, b, c], [a, b, c, 0x80], [a, b, c, 0xBF]] {
                        let ours = SafeFile.firstInvalidUTF8(seq) == nil
                        let std = String(validating: seq, as: UTF8.self) != nil
                        if ours != std { disagreements.append(seq) }
                        checked += 1
                    }
                }
            }
        }
        #expect(checked == 78_125)
        #expect(disagreements.isEmpty, "\(disagreements.prefix(5))")
    }
}

@Suite struct ValidSuiteTests {
    /// BOM, CRLF, blank lines, x_ annotations, null optionals, a user category, no name.
    @Test func edgeCaseProbeFile() throws {
        let url = suiteFixtures.appendingPathComponent("valid-probes.jsonl")
        let s = try SuiteLoader.loadProbes(url)
        #expect(s.name == "valid-probes")
        #expect(s.description == nil)
        #expect(s.probes.map(\.id) == ["v1", "v2", "v3"])
        #expect(s.probes[0] == Probe(id: "v1", category: "finance", prompt: "Is a 4% mortgage rate good?"))
        #expect(s.probes[1].prompt == "Fix:\n\tprint(\"hi\"")
        #expect(s.probes[1].system == "You are terse.")
        #expect(s.probes[2].reference == "4")
        #expect(s.categoryCounts == [CategoryCount(name: "code", count: 1), CategoryCount(name: "finance", count: 1),
                                     CategoryCount(name: "math", count: 1)])
        #expect(s.sha256 == SuiteDigest.sha256Hex(Array(try Data(contentsOf: url))))
        #expect(s.path == url.path)
    }

    @Test func edgeCaseTriggerFile() throws {
        let t = try SuiteLoader.loadTriggers(suiteFixtures.appendingPathComponent("valid-triggers.jsonl"))
        #expect(t.name == "my-triggers")
        #expect(t.description == "edge cases")
        #expect(t.triggers.count == 5)
        #expect(t.triggers[0] == Trigger(id: "zw", text: "\u{200B}", family: "custom", role: .trigger))
        // Modes are kept in canonical order whatever order the file lists them in.
        #expect(t.triggers[1].modes == [.prefix, .system])
        #expect(t.triggers[2].modes == InsertionMode.allCases)
        #expect(t.triggers[2].note == "n" && t.triggers[2].source == "s")
        // é and e + U+0301 are canonically equivalent but different text to a tokenizer: both kept.
        #expect(t.triggers[3].text.unicodeScalars.count == 1 && t.triggers[4].text.unicodeScalars.count == 2)
        #expect(t.entries(withRole: .control).map(\.id) == ["ok", "e-acute", "e-combining"])
        #expect(t.families == ["custom", "sentence"])
    }

    @Test func directoryListingAndLookup() throws {
        let suites = try SuiteLoader.loadDirectory(probesDir)
        #expect(suites.map(\.name) == ["default", "smoke", "triggers-smoke", "triggers"])
        #expect(try SuiteLoader.find("smoke", in: probesDir).count == 12)
        #expect(try SuiteLoader.findProbes("default", in: probesDir).probes.count >= 240)
        #expect(try SuiteLoader.findTriggers("triggers-smoke", in: probesDir).triggers.count == 8)
        #expect(throws: SuiteError.self) { try SuiteLoader.findProbes("triggers", in: probesDir) }
        #expect(throws: SuiteError.self) { try SuiteLoader.findTriggers("smoke", in: probesDir) }
        #expect(try SuiteLoader.find(suiteFixtures.appendingPathComponent("valid-probes.jsonl").path, in: nil).name == "valid-probes")
        do {
            _ = try SuiteLoader.find("nope", in: probesDir)
            Issue.record("found")
        } catch {
            #expect(error.kind == .notFound)
            #expect(error.message.contains("available: default, smoke, triggers-smoke, triggers"))
        }
    }

    @Test func duplicateSuiteNamesInADirectory() throws {
        let a = try temporaryFile(Array("{\"assay_suite\": 1, \"kind\": \"probes\", \"name\": \"x\"}\n{\"id\": \"a\", \"category\": \"c\", \"prompt\": \"p\"}\n".utf8), name: "a.jsonl")
        let dir = a.deletingLastPathComponent()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data(contentsOf: a).write(to: dir.appendingPathComponent("b.jsonl"))
        try Data("not a suite".utf8).write(to: dir.appendingPathComponent("notes.txt"))
        do {
            _ = try SuiteLoader.loadDirectory(dir)
            Issue.record("accepted")
        } catch {
            #expect(error.kind == .duplicateName)
            #expect(error.file.hasSuffix("b.jsonl") && error.message.contains("a.jsonl"))
        }
    }

    @Test func builtinDirectoryLookupOrder() throws {
        let exe = repoRoot.appendingPathComponent(".build/debug/assay")
        let elsewhere = URL(fileURLWithPath: "/")
        #expect(SuiteLoader.builtinDirectory(environment: ["ASSAY_PROBES_DIR": "/x/y"], executable: exe, currentDirectory: elsewhere)?.path == "/x/y")
        #expect(SuiteLoader.builtinDirectory(environment: [:], executable: exe, currentDirectory: elsewhere)?.path == probesDir.path)
        #expect(SuiteLoader.builtinDirectory(environment: [:], executable: URL(fileURLWithPath: "/usr/bin/true"), currentDirectory: repoRoot)?.path
                == probesDir.path)
        #expect(SuiteLoader.builtinDirectory(environment: [:], executable: nil, currentDirectory: elsewhere) == nil)
    }

    @Test func identifiers() {
        for ok in ["a", "gk-001", "code_security", "A.b:c-d_e", String(repeating: "x", count: 128)] { #expect(SuiteLoader.isIdentifier(ok), "\(ok)") }
        for bad in ["", "-a", "_a", "a b", "é", "a/b", "a\u{200B}", String(repeating: "x", count: 129)] { #expect(!SuiteLoader.isIdentifier(bad), "\(bad)") }
    }

    @Test func invisiblesAreSpelledOut() {
        #expect("a\u{200B}b\u{2060}c\u{FEFF}".visibleInvisibles == "a\\u{200B}b\\u{2060}c\\u{FEFF}")
        #expect("x\u{00A0}y\u{3000}z\n\u{1B}".visibleInvisibles == "x\\u{A0}y\\u{3000}z\\u{A}\\u{1B}")
        #expect("James Bond 🔑 d\u{0430}ta \\".visibleInvisibles == "James Bond 🔑 d\u{0430}ta \\\\")
    }
}
