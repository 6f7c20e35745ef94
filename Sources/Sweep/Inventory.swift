import Foundation
import AssayCommon
import History
import Provenance
import Yams

/// A team's models and adapters, read from `inventory.yaml` (docs/sweeps.md has the schema).
///
/// ```yaml
/// defaults:                 # optional; every entry inherits these unless it sets its own
///   suites: [probes/default.jsonl]
///   triggers: probes/triggers.jsonl
///   policy: policy.json
/// entries:
///   - id: support-bot
///     base: models/smollm2
///     adapters: [adapters/support]   # or `tuned: models/support-ft`, never both
///     manifest: manifests/support.json
///     owner: ml-platform
///     tags: [prod]
/// ```
/// Relative paths resolve against the inventory file's directory.
public struct Inventory: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var id: String
        public var base: URL
        public var tuned: URL?
        public var adapters: [URL]
        public var manifest: URL?
        public var policy: URL?
        public var suites: [URL]
        public var triggers: URL?
        public var owner: String?
        public var tags: [String]
        /// Line of the entry in the inventory file (for messages).
        public var line: Int
    }

    public var file: URL
    public var entries: [Entry]
    /// sha256 of the file's bytes.
    public var sha256: String

    public static let maxBytes = 16 << 20

    public static func load(_ url: URL) throws(SweepError) -> Inventory {
        let path = url.path
        let data: [UInt8]
        do { data = try SafeFile.read(url, maxBytes: maxBytes) } catch {
            throw .invalidInventory(file: path, line: nil, message: error.reasonOnly)
        }
        let root = try compose(data, file: path)
        guard let root, let top = root.mapping else {
            throw .invalidInventory(file: path, line: root?.mark?.line, message: "the top level must be a mapping with an `entries:` list")
        }
        let p = InventoryFields(file: path, directory: url.deletingLastPathComponent())
        for (k, _) in top where !["entries", "defaults"].contains(k.scalar?.string ?? "") {
            throw p.fail(k, "unknown top-level key `\((k.scalar?.string ?? "?").terminalSafe)` (expected entries, defaults)")
        }
        let defaults = try top["defaults"].map { d throws(SweepError) in try p.defaults(d) } ?? InventoryFields.Defaults()
        guard let list = top["entries"] else { throw p.fail(root, "missing `entries:`") }
        guard let seq = list.sequence else { throw p.fail(list, "`entries` must be a list") }
        var entries: [Entry] = []
        var seen: [String: Int] = [:]
        for node in seq { entries.append(try p.entry(node, defaults: defaults, seen: &seen)) }
        let sha = data.withUnsafeBytes { Inspector.sha256Hex($0) }
        return Inventory(file: url.standardizedFileURL, entries: entries, sha256: sha)
    }

    /// The YAML tree of an inventory's bytes, after the checks that must see the text: UTF-8,
    /// nesting depth, no anchors, aliases or merge keys; then the tree's own (duplicate keys, size).
    static func compose(_ data: [UInt8], file path: String) throws(SweepError) -> Node? {
        if let bad = SafeFile.firstInvalidUTF8(data) {
            throw .invalidInventory(file: path, line: nil, message: "not UTF-8 text (byte \(bad))")
        }
        let text = String(decoding: data, as: UTF8.self)
        // Yams composes recursively: bound the nesting before it sees the text.
        if let (depth, line) = Self.nestingEstimate(text, limit: maxNesting) {
            throw .invalidInventory(file: path, line: line,
                                    message: "nesting deeper than \(maxNesting) levels (\(depth) counting indentation and brackets)")
        }
        // Anchors, aliases and merge keys: a few bytes that expand into an exponential tree (the
        // "billion laughs"), or fields an entry inherits from elsewhere. Yams keeps no trace of
        // them once composed (its nodes hold anchors weakly), so they are refused in the text.
        if let (what, line, column) = Self.firstAnchorOrAlias(text) {
            throw .invalidInventory(file: path, line: line,
                                    message: "column \(column): YAML \(what) are not allowed in an inventory "
                                        + "(anchors, aliases and merge keys)")
        }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch let e as YamlError {
            throw .invalidInventory(file: path, line: nil, message: Self.describe(e))
        } catch {
            throw .invalidInventory(file: path, line: nil, message: "\(error)")
        }
        if let root { try Self.checkStructure(root, file: path) }
        return root
    }

    /// Deepest nesting an inventory may have. Real ones nest four levels; the bound keeps Yams'
    /// recursive composer far from the stack's end.
    public static let maxNesting = 200

    /// A conservative upper bound on the YAML nesting depth of any line: its indentation, plus
    /// the block indicators (`- `, `? `) and open flow brackets on it, plus brackets still open
    /// from earlier lines. Quoted text is not parsed, so brackets inside strings count too (which
    /// only over-estimates). Returns the first (depth, line) over `limit`.
    static func nestingEstimate(_ text: String, limit: Int) -> (Int, Int)? {
        var flow = 0
        var line = 1
        var column = 0, indent = 0, inIndent = true, inline = 0
        var prev: UInt8 = 0x20
        var inComment = false
        for b in text.utf8 {
            if b == 0x0A {
                line += 1; column = 0; indent = 0; inIndent = true; inline = 0; prev = 0x20; inComment = false
                continue
            }
            if inComment { continue }
            if inIndent {
                if b == 0x20 || b == 0x09 { indent += 1; continue }
                inIndent = false
            }
            column += 1
            switch b {
            case UInt8(ascii: "#") where prev == 0x20 || prev == 0x09: inComment = true
            case UInt8(ascii: "["), UInt8(ascii: "{"): flow += 1
            case UInt8(ascii: "]"), UInt8(ascii: "}"): flow = max(0, flow - 1)
            case UInt8(ascii: " ") where prev == UInt8(ascii: "-") || prev == UInt8(ascii: "?") || prev == UInt8(ascii: ":"): inline += 1
            default: break
            }
            prev = b
            let depth = indent + inline + flow
            if depth > limit { return (depth, line) }
        }
        return nil
    }

    /// The first anchor (`&a`), alias (`*a`) or merge key (`<<:`) outside quoted scalars and
    /// comments, as (kind, line, column). `&` and `*` cannot start a plain scalar, so at the start
    /// of a token they are always these indicators; inside a block scalar's text they would be
    /// refused too (an over-estimate no real inventory meets).
    static func firstAnchorOrAlias(_ text: String) -> (String, Int, Int)? {
        let b = Array(text.utf8)
        var line = 1, column = 0
        var quote: UInt8 = 0          // 0, '"' or '\''
        var tokenStart = true
        var i = 0
        while i < b.count {
            let c = b[i]
            column += 1
            if c == 0x0A { line += 1; column = 0; tokenStart = true; i += 1; continue }
            if quote != 0 {
                if quote == UInt8(ascii: "\"") && c == UInt8(ascii: "\\") { i += 2; column += 1; continue }
                if c == quote {
                    if quote == UInt8(ascii: "'") && i + 1 < b.count && b[i + 1] == quote { i += 2; column += 1; continue }
                    quote = 0
                }
                i += 1; continue
            }
            if tokenStart {
                let next: UInt8 = i + 1 < b.count ? b[i + 1] : 0x0A
                let spaceNext = next == 0x20 || next == 0x09 || next == 0x0A || next == 0x0D
                switch c {
                case UInt8(ascii: "#"):
                    while i < b.count && b[i] != 0x0A { i += 1 }
                    continue
                case UInt8(ascii: "\""), UInt8(ascii: "'"): quote = c
                case UInt8(ascii: "&") where !spaceNext: return ("anchors", line, column)
                case UInt8(ascii: "*") where !spaceNext: return ("aliases", line, column)
                case UInt8(ascii: "<") where next == UInt8(ascii: "<") && i + 2 < b.count
                                             && (b[i + 2] == UInt8(ascii: ":") || b[i + 2] == 0x20):
                    return ("merge keys", line, column)
                default: break
                }
            }
            tokenStart = c == 0x20 || c == 0x09 || c == UInt8(ascii: "[") || c == UInt8(ascii: "{") || c == UInt8(ascii: ",")
                || (c == UInt8(ascii: "-") && tokenStart) || (c == UInt8(ascii: "?") && tokenStart)
            i += 1
        }
        return nil
    }

    /// Refuses what two YAML readers could read differently: a key twice in one mapping (Yams
    /// refuses it while composing, PyYAML keeps the last; checked here too so the guarantee does
    /// not rest on one library version), and bounds the tree walked (aliases, refused in the
    /// text, would otherwise make it exponential).
    static func checkStructure(_ root: Node, file: String) throws(SweepError) {
        var stack: [Node] = [root]
        var visited = 0
        while let n = stack.popLast() {
            visited += 1
            guard visited <= 1_000_000 else {
                throw .invalidInventory(file: file, line: n.mark?.line, message: "more than 1,000,000 YAML nodes")
            }
            if case .alias = n {
                throw .invalidInventory(file: file, line: n.mark?.line, message: "YAML aliases are not allowed in an inventory")
            }
            if let m = n.mapping {
                var seen = Set<String>()
                for (k, v) in m {
                    let key = k.scalar?.string ?? "\(k)"
                    if !seen.insert(key).inserted {
                        throw .invalidInventory(file: file, line: k.mark?.line,
                                                message: "key `\(key.terminalSafe)` appears twice in one mapping")
                    }
                    stack.append(k); stack.append(v)
                }
            } else if let s = n.sequence {
                stack.append(contentsOf: s)
            }
        }
    }

    /// Yams' message without its multi-line snippet: "line L, column C: problem".
    static func describe(_ e: YamlError) -> String {
        switch e {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            return "line \(mark.line), column \(mark.column): \((context.map { "\($0.text) " } ?? "") + problem)"
        default:
            return "\(e)".split(separator: "\n").first.map(String.init) ?? "YAML error"
        }
    }

    /// Entries grouped by base directory (groups in order of first appearance).
    public var byBase: [[Entry]] {
        var order: [URL] = []
        var groups: [URL: [Entry]] = [:]
        for e in entries {
            if groups[e.base] == nil { order.append(e.base) }
            groups[e.base, default: []].append(e)
        }
        return order.map { groups[$0]! }
    }

    /// Shard `index` of `count`: whole base groups, assigned largest first to the shard with the
    /// fewest entries so far (ties: lowest shard); deterministic for a given inventory.
    public func shard(_ index: Int, of count: Int) -> [Entry] {
        precondition(count >= 1 && (0..<count).contains(index))
        let groups = byBase.enumerated().sorted { a, b in
            a.element.count != b.element.count ? a.element.count > b.element.count : a.offset < b.offset
        }
        var load = [Int](repeating: 0, count: count)
        var mine = Set<String>()
        for (_, g) in groups {
            let target = load.indices.min { load[$0] != load[$1] ? load[$0] < load[$1] : $0 < $1 }!
            load[target] += g.count
            if target == index { mine.formUnion(g.map(\.id)) }
        }
        // Keep inventory order within the shard (groups stay together: they share a base).
        return byBase.flatMap { $0 }.filter { mine.contains($0.id) }
    }
}

/// Reads an inventory's fields: typed values with errors naming the line, paths resolved
/// against the inventory's directory.
struct InventoryFields {
    let file: String
    let directory: URL

    struct Defaults {
        var suites: [URL] = []
        var triggers: URL?
        var policy: URL?
    }

    static let entryFields = Set(["id", "base", "tuned", "adapters", "manifest", "policy", "suites", "triggers", "owner", "tags"])

    func fail(_ node: Node?, _ message: String) -> SweepError { .invalidInventory(file: file, line: node?.mark?.line, message: message) }

    func string(_ node: Node, _ field: String) throws(SweepError) -> String {
        guard let s = node.scalar?.string, !s.isEmpty else { throw fail(node, "`\(field)` must be a non-empty string") }
        guard !s.contains("\u{0}") else { throw fail(node, "`\(field)` contains a NUL byte") }
        return s
    }

    func strings(_ node: Node, _ field: String) throws(SweepError) -> [String] {
        if node.scalar != nil { return [try string(node, field)] }
        guard let seq = node.sequence else { throw fail(node, "`\(field)` must be a string or a list of strings") }
        var out: [String] = []
        for n in seq { out.append(try string(n, field)) }
        return out
    }

    func resolve(_ s: String) -> URL {
        s.hasPrefix("/") ? URL(fileURLWithPath: s).standardizedFileURL : directory.appendingPathComponent(s).standardizedFileURL
    }

    func path(_ node: Node?, _ field: String) throws(SweepError) -> URL? {
        try node.map { n throws(SweepError) in resolve(try string(n, field)) }
    }

    func paths(_ node: Node?, _ field: String) throws(SweepError) -> [URL]? {
        try node.map { n throws(SweepError) in try strings(n, field).map(resolve) }
    }

    func defaults(_ d: Node) throws(SweepError) -> Defaults {
        guard let dm = d.mapping else { throw fail(d, "`defaults` must be a mapping") }
        var out = Defaults()
        for (k, v) in dm {
            switch k.scalar?.string {
            case "suites": out.suites = try strings(v, "defaults.suites").map(resolve)
            case "triggers": out.triggers = resolve(try string(v, "defaults.triggers"))
            case "policy": out.policy = resolve(try string(v, "defaults.policy"))
            default: throw fail(k,
                                "unknown key `\((k.scalar?.string ?? "?").terminalSafe)` in defaults (expected suites, triggers, policy)")
            }
        }
        return out
    }

    /// One entry; `seen` maps the ids read so far to their lines (a duplicate id is refused).
    func entry(_ node: Node, defaults: Defaults, seen: inout [String: Int]) throws(SweepError) -> Inventory.Entry {
        guard let m = node.mapping else { throw fail(node, "each entry must be a mapping") }
        for (k, _) in m {
            guard let key = k.scalar?.string, Self.entryFields.contains(key) else {
                throw fail(k, "unknown entry key `\((k.scalar?.string ?? "?").terminalSafe)` "
                                  + "(expected \(Self.entryFields.sorted().joined(separator: ", ")))")
            }
        }
        guard let idNode = m["id"] else { throw fail(node, "an entry has no `id`") }
        let id = try string(idNode, "id")
        guard id.count <= 200, id.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
            throw fail(idNode, "entry id `\(id.terminalSafe)` must be at most 200 printable characters")
        }
        if let first = seen[id] { throw fail(idNode, "duplicate entry id `\(id.terminalSafe)` (first at line \(first))") }
        seen[id] = node.mark?.line ?? 0
        guard let baseNode = m["base"] else { throw fail(node, "entry `\(id.terminalSafe)` has no `base`") }
        let base = resolve(try string(baseNode, "base"))
        let tuned = try path(m["tuned"], "tuned")
        let adapters = try paths(m["adapters"], "adapters") ?? []
        if tuned != nil && !adapters.isEmpty { throw fail(node, "entry `\(id.terminalSafe)` has both `tuned` and `adapters`; give one") }
        if tuned == nil && adapters.isEmpty { throw fail(node, "entry `\(id.terminalSafe)` needs `tuned` or `adapters`") }
        return Inventory.Entry(
            id: id, base: base, tuned: tuned, adapters: adapters, manifest: try path(m["manifest"], "manifest"),
            policy: try path(m["policy"], "policy") ?? defaults.policy, suites: try paths(m["suites"], "suites") ?? defaults.suites,
            triggers: try path(m["triggers"], "triggers") ?? defaults.triggers,
            owner: try m["owner"].map { n throws(SweepError) in try string(n, "owner") },
            tags: try m["tags"].map { n throws(SweepError) in try strings(n, "tags") } ?? [], line: node.mark?.line ?? 0)
    }
}
