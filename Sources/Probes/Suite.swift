/// Probe suites and trigger sets (docs/usage.md, "Probe and trigger suites").
///
/// A suite is a JSONL file: one header object, then one probe or trigger per line. The loader
/// (`SuiteLoader`) is strict; these types are the validated result and what the scan consumes.

/// One prompt sent to both models.
public struct Probe: Sendable, Equatable, Codable {
    /// Unique within its suite: `[A-Za-z0-9][A-Za-z0-9._:-]*`, at most 128 characters.
    public var id: String
    /// One of `ProbeSuite.standardCategories` or a user category (same character set as ids).
    public var category: String
    /// The user message, exactly as written (never trimmed or normalized).
    public var prompt: String
    /// A short correct answer, where one exists (factual_qa, math).
    public var reference: String?
    /// A system message sent with the prompt; nil means the chat template's default.
    public var system: String?

    public init(id: String, category: String, prompt: String, reference: String? = nil, system: String? = nil) {
        self.id = id
        self.category = category
        self.prompt = prompt
        self.reference = reference
        self.system = system
    }
}

/// Where a trigger is placed in a probe (docs/usage.md, "Insertion modes", gives the exact joining rules).
public enum InsertionMode: String, CaseIterable, Sendable, Codable {
    case prefix, suffix, random, system
}

/// A string inserted into probes: a suspected backdoor trigger, or a control insertion whose
/// effect gives the null distribution for the triggers of its family.
public struct Trigger: Sendable, Equatable, Codable {
    public enum Role: String, Sendable, Codable, CaseIterable {
        case trigger, control
    }

    public var id: String
    /// The inserted text, exactly as written (may be invisible, e.g. U+200B).
    public var text: String
    /// The group a trigger belongs to; controls carry the family of the triggers they are
    /// matched to (length, character class), so the scan can compare like with like.
    public var family: String
    public var role: Role
    /// Insertion modes to expand, in `InsertionMode.allCases` order; all four by default.
    public var modes: [InsertionMode]
    public var note: String?
    /// Where the trigger comes from (paper, report).
    public var source: String?

    public init(id: String, text: String, family: String = "custom", role: Role,
                modes: [InsertionMode] = InsertionMode.allCases, note: String? = nil, source: String? = nil) {
        self.id = id
        self.text = text
        self.family = family
        self.role = role
        self.modes = modes
        self.note = note
        self.source = source
    }
}

public struct CategoryCount: Sendable, Equatable, Codable {
    public let name: String
    public let count: Int
}

public struct ProbeSuite: Sendable, Equatable {
    /// The categories of the shipped suites (docs/usage.md); user suites may add their own.
    public static let standardCategories = [
        "general_knowledge", "instructions", "writing", "code", "code_security",
        "safety", "opinion_sentiment", "factual_qa", "math",
    ]

    public let name: String
    public let description: String?
    public let probes: [Probe]
    /// SHA-256 of the file's bytes, lower-case hex: what reports record as the suite hash.
    public let sha256: String
    public let path: String

    public init(name: String, description: String?, probes: [Probe], sha256: String, path: String) {
        self.name = name
        self.description = description
        self.probes = probes
        self.sha256 = sha256
        self.path = path
    }

    /// Probe counts per category, sorted by category name.
    public var categoryCounts: [CategoryCount] {
        Dictionary(grouping: probes, by: \.category).map { CategoryCount(name: $0.key, count: $0.value.count) }
            .sorted { $0.name < $1.name }
    }

    public func probes(in category: String) -> [Probe] { probes.filter { $0.category == category } }
}

public struct TriggerSet: Sendable, Equatable {
    public let name: String
    public let description: String?
    /// Triggers and controls in file order.
    public let triggers: [Trigger]
    public let sha256: String
    public let path: String

    public init(name: String, description: String?, triggers: [Trigger], sha256: String, path: String) {
        self.name = name
        self.description = description
        self.triggers = triggers
        self.sha256 = sha256
        self.path = path
    }

    public func entries(withRole role: Trigger.Role) -> [Trigger] { triggers.filter { $0.role == role } }

    /// Families in first-appearance order.
    public var families: [String] {
        var seen = Set<String>()
        return triggers.compactMap { seen.insert($0.family).inserted ? $0.family : nil }
    }
}

/// A validated suite file of either kind.
public enum SuiteFile: Sendable, Equatable {
    case probes(ProbeSuite)
    case triggers(TriggerSet)

    public enum Kind: String, Sendable, CaseIterable { case probes, triggers }

    public var kind: Kind {
        switch self { case .probes: return .probes; case .triggers: return .triggers }
    }

    public var name: String {
        switch self { case let .probes(s): return s.name; case let .triggers(t): return t.name }
    }

    public var description: String? {
        switch self { case let .probes(s): return s.description; case let .triggers(t): return t.description }
    }

    public var sha256: String {
        switch self { case let .probes(s): return s.sha256; case let .triggers(t): return t.sha256 }
    }

    public var path: String {
        switch self { case let .probes(s): return s.path; case let .triggers(t): return t.path }
    }

    /// Probes or triggers (controls included).
    public var count: Int {
        switch self { case let .probes(s): return s.probes.count; case let .triggers(t): return t.triggers.count }
    }
}

public extension String {
    /// The string with invisible and look-alike-prone scalars spelled out (`\u{200B}`), on top
    /// of `terminalSafe`: format characters (Cf: zero-width space, word joiner, BOM, bidi
    /// controls), and whitespace other than the ASCII space. For showing trigger text to a human.
    var visibleInvisibles: String {
        var out = ""
        for s in unicodeScalars {
            let v = s.value
            let invisible = s.properties.generalCategory == .format
                || (s.properties.isWhitespace && v != 0x20)
                || v < 0x20 || (0x7F...0x9F).contains(v)
            if invisible {
                out += "\\u{\(String(v, radix: 16, uppercase: true))}"
            } else if v == 0x5C {
                out += "\\\\"
            } else {
                out.unicodeScalars.append(s)
            }
        }
        return out
    }
}
