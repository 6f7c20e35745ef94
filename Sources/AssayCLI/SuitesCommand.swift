import ArgumentParser
import Foundation
import AssayCommon
import Probes

/// `assay suites`: the probe suites and trigger sets that ship, and validation of user files
/// (format: docs/usage.md, "Probe and trigger suites").
struct Suites: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, show and validate probe suites and trigger sets.",
        discussion: """
        Suites are looked up in --dir, else $ASSAY_PROBES_DIR, else the probes/ directory beside \
        the assay executable (or one of its parent directories), else ./probes.
        """,
        subcommands: [List.self, Show.self, Validate.self],
        defaultSubcommand: List.self
    )
}

struct SuitesDirectoryOptions: ParsableArguments {
    @Option(name: .customLong("dir"), help: "The directory of suite files (default: the shipped probes/).")
    var dir: String?

    func resolve() throws -> URL {
        if let dir { return URL(fileURLWithPath: dir) }
        guard let found = SuiteLoader.builtinDirectory() else {
            throw SuitesCommandError.noDirectory
        }
        return found
    }
}

enum SuitesCommandError: Error, CustomStringConvertible {
    case noDirectory
    case invalidFiles(Int)

    var description: String {
        switch self {
        case .noDirectory: return "no probes directory found: set ASSAY_PROBES_DIR or pass --dir"
        case let .invalidFiles(n): return "\(n) suite file\(n == 1 ? " is" : "s are") invalid"
        }
    }
}

/// What `assay suites --json` prints for one file (docs/usage.md gives the schema).
struct SuiteSummary: Encodable {
    let name: String
    let kind: String
    let file: String
    let description: String?
    let sha256: String
    let count: Int
    /// Probe suites: probes per category.
    let categories: [String: Int]?
    /// Trigger sets: entries per role and per family.
    let roles: [String: Int]?
    let families: [String: Int]?

    init(_ s: SuiteFile) {
        name = s.name
        kind = s.kind.rawValue
        file = s.path
        description = s.description
        sha256 = s.sha256
        count = s.count
        switch s {
        case let .probes(p):
            categories = Dictionary(uniqueKeysWithValues: p.categoryCounts.map { ($0.name, $0.count) })
            roles = nil
            families = nil
        case let .triggers(t):
            categories = nil
            roles = Dictionary(uniqueKeysWithValues: Trigger.Role.allCases.map { r in (r.rawValue, t.entries(withRole: r).count) })
            families = Dictionary(grouping: t.triggers, by: \.family).mapValues(\.count)
        }
    }

    func encode(to encoder: Encoder) throws {
        // Absent rather than null, so each kind has exactly its own keys.
        enum K: String, CodingKey { case name, kind, file, description, sha256, count, categories, roles, families }
        var c = encoder.container(keyedBy: K.self)
        try c.encode(name, forKey: .name)
        try c.encode(kind, forKey: .kind)
        try c.encode(file, forKey: .file)
        try c.encodeIfPresent(description, forKey: .description)
        try c.encode(sha256, forKey: .sha256)
        try c.encode(count, forKey: .count)
        try c.encodeIfPresent(categories, forKey: .categories)
        try c.encodeIfPresent(roles, forKey: .roles)
        try c.encodeIfPresent(families, forKey: .families)
    }
}

private func encodeSuiteJSON<T: Encodable>(_ value: T) throws -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try enc.encode(value), as: UTF8.self)
}

private func pad(_ s: String, _ n: Int, right: Bool = false, zero: Bool = false) -> String {
    if s.count >= n { return s }
    if zero { return String(repeating: "0", count: n - s.count) + s }
    return right ? String(repeating: " ", count: n - s.count) + s : s + String(repeating: " ", count: n - s.count)
}

extension Suites {
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the suites in the probes directory: name, kind, count, categories or roles, SHA-256."
        )

        @OptionGroup var location: SuitesDirectoryOptions

        @Flag(help: "Print the list as JSON (schema in docs/usage.md).")
        var json = false

        func run() throws {
            let dir = try location.resolve()
            let suites = try SuiteLoader.loadDirectory(dir)
            if json {
                struct Listing: Encodable { let schema_version = 1; let directory: String; let suites: [SuiteSummary] }
                emit(try encodeSuiteJSON(Listing(directory: dir.path, suites: suites.map(SuiteSummary.init))))
                return
            }
            var out = "suites in \(dir.path.terminalSafe)\n"
            if suites.isEmpty { out += "  (none)\n" }
            let width = max(suites.map(\.name.count).max() ?? 4, 4)
            for s in suites {
                out += "\n\(pad(s.name, width))  \(pad(s.kind.rawValue, 8))  \(pad(String(s.count), 4, right: true))  sha256 \(s.sha256)\n"
                if let d = s.description { out += "  \(d.terminalSafe)\n" }
                switch s {
                case let .probes(p):
                    out += "  categories: " + p.categoryCounts.map { "\($0.name) \($0.count)" }.joined(separator: ", ") + "\n"
                case let .triggers(t):
                    out += "  \(t.entries(withRole: .trigger).count) triggers, \(t.entries(withRole: .control).count) controls\n"
                    let counts = Dictionary(grouping: t.triggers, by: \.family)
                    out += "  families: " + t.families.map { f in
                        let members = counts[f] ?? []
                        return "\(f) \(members.filter { $0.role == .trigger }.count)+\(members.filter { $0.role == .control }.count)"
                    }.joined(separator: ", ") + " (triggers+controls)\n"
                }
            }
            emit(out)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the probes or triggers of one suite.",
            discussion: "NAME is a suite name from `assay suites`, or the path of a .jsonl file."
        )

        @Argument(help: "Suite name or file path.")
        var name: String

        @OptionGroup var location: SuitesDirectoryOptions

        @Flag(help: "Print the suite as JSON (schema in docs/usage.md).")
        var json = false

        func run() throws {
            let dir: URL? = location.dir != nil ? URL(fileURLWithPath: location.dir!) : SuiteLoader.builtinDirectory()
            let suite = try SuiteLoader.find(name, in: dir)
            if json {
                struct Shown: Encodable {
                    let schema_version = 1
                    let summary: SuiteSummary
                    let probes: [Probe]?
                    let triggers: [Trigger]?
                    func encode(to encoder: Encoder) throws {
                        enum K: String, CodingKey { case schema_version, probes, triggers }
                        try summary.encode(to: encoder)
                        var c = encoder.container(keyedBy: K.self)
                        try c.encode(schema_version, forKey: .schema_version)
                        try c.encodeIfPresent(probes, forKey: .probes)
                        try c.encodeIfPresent(triggers, forKey: .triggers)
                    }
                }
                switch suite {
                case let .probes(p): emit(try encodeSuiteJSON(Shown(summary: SuiteSummary(suite), probes: p.probes, triggers: nil)))
                case let .triggers(t): emit(try encodeSuiteJSON(Shown(summary: SuiteSummary(suite), probes: nil, triggers: t.triggers)))
                }
                return
            }
            var out = "\(suite.name.terminalSafe) (\(suite.kind.rawValue), \(suite.count) entries)  \(suite.path.terminalSafe)\n"
                + "sha256 \(suite.sha256)\n"
            if let d = suite.description { out += "\(d.terminalSafe)\n" }
            out += "\n"
            switch suite {
            case let .probes(p):
                let idWidth = min(p.probes.map(\.id.count).max() ?? 2, 32)
                let catWidth = min(p.probes.map(\.category.count).max() ?? 8, 32)
                for probe in p.probes {
                    out += "\(pad(probe.id, idWidth))  \(pad(probe.category, catWidth))  \(probe.prompt.terminalSafe)"
                    if let r = probe.reference { out += "  => \(r.terminalSafe)" }
                    if let s = probe.system { out += "  [system: \(s.terminalSafe)]" }
                    out += "\n"
                }
            case let .triggers(t):
                let idWidth = min(t.triggers.map(\.id.count).max() ?? 2, 32)
                let famWidth = min(t.triggers.map(\.family.count).max() ?? 6, 24)
                for trigger in t.triggers {
                    let modes = trigger.modes == InsertionMode.allCases ? "all modes" : trigger.modes.map(\.rawValue).joined(separator: ",")
                    out += "\(pad(trigger.id, idWidth))  \(pad(trigger.role.rawValue, 7))  \(pad(trigger.family, famWidth))  "
                        + "\"\(trigger.text.visibleInvisibles)\"  (\(modes))"
                    if !trigger.text.unicodeScalars.allSatisfy(\.isASCII) {
                        // Homoglyphs look like their Latin spelling: show the code points.
                        out += "  [" + trigger.text.unicodeScalars
                            .map { "U+" + pad(String($0.value, radix: 16, uppercase: true), 4, zero: true) }
                            .joined(separator: " ") + "]"
                    }
                    if let n = trigger.note { out += "  \(n.terminalSafe)" }
                    out += "\n"
                }
            }
            emit(out)
        }
    }

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate suite files: exit 0 when every file is valid, 2 otherwise.",
            discussion: "Each error names the file, line and column."
        )

        @Argument(help: "Suite files (.jsonl).")
        var files: [String]

        func validate() throws {
            guard !files.isEmpty else { throw ValidationError("give at least one suite file") }
        }

        func run() throws {
            var failures = 0
            for f in files {
                do {
                    let s = try SuiteLoader.load(URL(fileURLWithPath: f))
                    var what = "\(s.count) \(s.kind == .probes ? "probes" : "entries")"
                    if case let .probes(p) = s { what += " in \(p.categoryCounts.count) categories" }
                    if case let .triggers(t) = s {
                        what = "\(t.entries(withRole: .trigger).count) triggers, \(t.entries(withRole: .control).count) controls"
                    }
                    emit("ok  \(f.terminalSafe): \(s.kind.rawValue) '\(s.name.terminalSafe)', \(what), sha256 \(s.sha256)")
                } catch {
                    failures += 1
                    printError("error: \(error)")
                }
            }
            if failures > 0 { throw ExitCode(ExitStatus.invalidInput.rawValue) }
        }
    }
}
