import Foundation
import AssayCommon
import History
import Scan

/// What changed between two runs of a sweep.
public struct SweepChange: Sendable, Equatable, Codable {
    /// The kinds of change; raw values are the JSON spelling (`assay sweep diff --json`).
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case entryAdded = "entry_added", entryRemoved = "entry_removed"
        case fileAdded = "file_added", fileRemoved = "file_removed", fileRehashed = "file_rehashed"
        case verdict, status
        case findingNew = "finding_new", findingResolved = "finding_resolved"
        case divergenceMoved = "divergence_moved"
    }
    public var kind: Kind
    public var entry: String
    public var detail: String
}

public enum SweepDiff {
    /// A category's mean must also move by this much (nats of JS) to be reported: with
    /// deterministic models the intervals are narrow enough that 1e-4 would otherwise count.
    public static let minimumMove = 0.005

    /// Changes from run `from` to run `to` (every shard of each).
    public static func changes(_ store: HistoryStore, from: String, to: String) throws(HistoryError) -> [SweepChange] {
        let a = Dictionary(try store.results(run: from).map { ($0.entryID, $0) }, uniquingKeysWith: { x, _ in x })
        let b = Dictionary(try store.results(run: to).map { ($0.entryID, $0) }, uniquingKeysWith: { x, _ in x })
        var out: [SweepChange] = []
        for id in Set(a.keys).union(b.keys).sorted() {
            guard let old = a[id] else {
                let new = b[id]!
                out.append(.init(kind: .entryAdded, entry: id, detail: "new entry (\(new.verdict?.rawValue ?? new.status.rawValue))"))
                continue
            }
            guard let new = b[id] else { out.append(.init(kind: .entryRemoved, entry: id, detail: "no longer in the sweep")); continue }
            out += changes(entry: id, old, new)
        }
        return out
    }

    static func changes(entry id: String, _ old: EntryResult, _ new: EntryResult) -> [SweepChange] {
        var out: [SweepChange] = []
        // Files: matched by role and path. Errors know only what they could hash.
        if old.status != .error && new.status != .error {
            struct Place: Hashable, Comparable {
                var role: FileRole, path: String
                static func < (a: Place, b: Place) -> Bool { (a.role, a.path) < (b.role, b.path) }
            }
            let of = Dictionary(old.files.map { (Place(role: $0.role, path: $0.path), $0) }, uniquingKeysWith: { a, _ in a })
            let nf = Dictionary(new.files.map { (Place(role: $0.role, path: $0.path), $0) }, uniquingKeysWith: { a, _ in a })
            for k in Set(of.keys).union(nf.keys).sorted() {
                switch (of[k], nf[k]) {
                case let (nil, n?):
                    out.append(.init(kind: .fileAdded, entry: id, detail: "\(n.role) \(n.path) added (sha256 \(n.sha256.prefix(12)))"))
                case let (o?, nil): out.append(.init(kind: .fileRemoved, entry: id, detail: "\(o.role) \(o.path) removed"))
                case let (o?, n?) where o.sha256 != n.sha256:
                    out.append(.init(kind: .fileRehashed, entry: id,
                                     detail: "\(n.role) \(n.path) changed: \(o.sha256.prefix(12)) → \(n.sha256.prefix(12))"))
                default: break
                }
            }
        }
        if old.status != new.status && (old.status == .error || new.status == .error) {
            let detail = new.status == .error ? "now an error: \(new.message ?? "")" : "no longer an error"
            out.append(.init(kind: .status, entry: id, detail: detail))
        }
        if old.verdict != new.verdict, old.verdict != nil || new.verdict != nil {
            let detail = "verdict \(old.verdict?.rawValue ?? "none") → \(new.verdict?.rawValue ?? "none")"
            out.append(.init(kind: .verdict, entry: id, detail: detail))
        }
        if old.status != .error && new.status != .error {
            let oi = Set(old.findings.map(\.identity)), ni = Set(new.findings.map(\.identity))
            for f in new.findings where !oi.contains(f.identity) {
                out.append(.init(kind: .findingNew, entry: id, detail: "new \(f.severity) \(f.kind): \(f.title)"))
            }
            for f in old.findings where !ni.contains(f.identity) {
                out.append(.init(kind: .findingResolved, entry: id, detail: "resolved \(f.severity) \(f.kind): \(f.title)"))
            }
            let od = Dictionary(old.divergences.map { ($0.category, $0) }, uniquingKeysWith: { a, _ in a })
            for d in new.divergences {
                guard let o = od[d.category] else { continue }
                // Moved beyond its interval: each night's mean lies outside the other's 95% CI.
                if (d.mean < o.ciLow || d.mean > o.ciHigh) && (o.mean < d.ciLow || o.mean > d.ciHigh)
                    && abs(d.mean - o.mean) >= minimumMove {
                    out.append(.init(kind: .divergenceMoved, entry: id, detail: String(
                        format: "%@ divergence %.4f [%.4f, %.4f] → %.4f [%.4f, %.4f]",
                        d.category, o.mean, o.ciLow, o.ciHigh, d.mean, d.ciLow, d.ciHigh)))
                }
            }
        }
        return out
    }

    public static func render(_ changes: [SweepChange], from: String, to: String) -> String {
        guard !changes.isEmpty else { return "no changes from \(from) to \(to)\n" }
        var s = "changes from \(from) to \(to):\n"
        for c in changes { s += "  \(c.entry.terminalSafe): \(c.detail.terminalSafe)\n" }
        return s
    }
}
