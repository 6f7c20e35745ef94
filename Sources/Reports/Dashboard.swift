import Foundation
import AssayCommon
import History

/// `assay sweep report`: one self-contained HTML page (no script, no external file): per entry,
/// its verdict over the recorded runs and an SVG chart of its mean divergence per probe category
/// with the 95% intervals as bands.
public enum Dashboard {
    static func esc(_ s: String) -> String { HTML.escape(s) }

    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    /// An entry's cell: its verdict, or ERROR, and the cell's colour.
    static func cell(_ r: EntryResult) -> (label: String, colour: String) {
        if r.status == .error { return (EntryStatus.error.rawValue.uppercased(), "#6a1b9a") }
        switch r.verdict {
        case .pass: return ("PASS", "#2e7d32")
        case .warn: return ("WARN", "#f9a825")
        case .fail: return ("FAIL", "#c62828")
        case nil: return ("?", "#999")
        }
    }

    public static func render(_ store: HistoryStore) throws(HistoryError) -> String {
        let runs = try store.runs()
        var runStart: [String: String] = [:]
        for r in runs where runStart[r.id] == nil || r.startedAt < runStart[r.id]! { runStart[r.id] = r.startedAt }
        let runIDs = try store.runIDs()
        let latest = runIDs.last
        let latestResults = try latest.map { id throws(HistoryError) in try store.results(run: id) } ?? []
        var entryIDs = latestResults.map(\.entryID)
        // Entries seen only in earlier runs come after, so nothing recorded is hidden.
        var all = Set(entryIDs)
        for id in runIDs.reversed() {
            let rs = try store.results(run: id)
            for r in rs where !all.contains(r.entryID) { all.insert(r.entryID); entryIDs.append(r.entryID) }
        }
        var s = header(runs: runIDs.count, entries: entryIDs.count, latest: latest, path: store.path)
        s += overview(latestResults)
        for id in entryIDs { s += entrySection(id, history: try store.history(entry: id), runStart: runStart) }
        s += "<p class=\"meta\">· = unchanged since an earlier run (not rescanned). "
            + "Bands: 95% bootstrap intervals of each category's mean divergence (Jensen–Shannon, nats).</p>\n</body></html>\n"
        return s
    }

    static func header(runs: Int, entries: Int, latest: String?, path: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>Assay sweep history</title>
        <style>
        body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1100px}
        h1{font-size:22px} h2{font-size:17px;margin:28px 0 6px} table{border-collapse:collapse;font-size:13px}
        td,th{border:1px solid #ddd;padding:3px 7px;text-align:left} .v{color:#fff;font-weight:600;text-align:center;min-width:38px}
        .meta{color:#666;font-size:12px} .legend span{display:inline-block;margin-right:12px;font-size:12px}
        .sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
        </style></head><body>
        <h1>Assay sweep history</h1>
        <p class="meta">\(runs) run(s), \(entries) entr\(entries == 1 ? "y" : "ies"); \
        latest run \(esc(latest ?? "none")) · \(esc(path))</p>

        """
    }

    /// Overview of the latest run.
    static func overview(_ latestResults: [EntryResult]) -> String {
        var s = "<table><tr><th>entry</th><th>latest verdict</th><th>findings</th><th>top finding</th></tr>\n"
        for r in latestResults {
            let v = cell(r)
            let top = r.status == .error ? (r.message ?? "") : (r.findings.first.map { "\($0.severity): \($0.title)" } ?? "")
            s += "<tr><td><a href=\"#e-\(esc(r.entryID))\">\(esc(r.entryID))</a></td>"
            s += "<td class=\"v\" style=\"background:\(v.colour)\">\(esc(v.label))</td>"
            s += "<td>\(r.findings.count)</td><td>\(esc(top))</td></tr>\n"
        }
        return s + "</table>\n"
    }

    /// One entry: owner and tags, its verdict in every run (one cell per run), the divergence chart.
    static func entrySection(_ id: String, history hist: [(run: String, result: EntryResult)], runStart: [String: String]) -> String {
        var s = "<h2 id=\"e-\(esc(id))\">\(esc(id))</h2>\n"
        if let last = hist.last?.result, let owner = last.owner {
            s += "<p class=\"meta\">owner \(esc(owner))"
                + "\(last.tags.isEmpty ? "" : " · tags \(esc(last.tags.joined(separator: ", ")))")</p>\n"
        }
        s += "<table><tr><th>run</th>"
        for (run, _) in hist { s += "<th title=\"\(esc(run))\">\(esc(shortTime(runStart[run] ?? run)))</th>" }
        s += "</tr><tr><th>verdict</th>"
        for (_, r) in hist {
            let v = cell(r)
            let tip = switch r.status {
            case .error: r.message ?? ""
            case .skipped: "unchanged since \(r.reusedFrom ?? "")"
            case .scanned: "\(r.findings.count) finding(s)"
            }
            s += "<td class=\"v\" style=\"background:\(v.colour)\" title=\"\(esc(tip))\">\(esc(v.label))"
            s += "\(r.status == .skipped ? "·" : "")</td>"
        }
        s += "</tr></table>\n"
        return s + chart(hist.map { (runStart[$0.run] ?? $0.run, $0.result.divergences) })
    }

    /// "2026-11-23T12:52:07Z" → "11-23 12:52" (a run id when no time is known).
    static func shortTime(_ iso: String) -> String {
        let c = Array(iso)
        guard c.count >= 16, c[10] == "T" else { return String(iso.prefix(12)) }
        return String(c[5..<10]) + " " + String(c[11..<16])
    }

    /// Mean divergence per category over runs: a line and an interval band per category.
    static func chart(_ points: [(label: String, divergences: [StoredDivergence])]) -> String {
        let categories = Array(Set(points.flatMap { $0.divergences.map(\.category) })).sorted()
        guard !categories.isEmpty else { return "<p class=\"meta\">no divergence recorded</p>\n" }
        let (w, h, left, right, top, bottom) = (720.0, 220.0, 74.0, 40.0, 10.0, 34.0)
        let maxY = max(points.flatMap { $0.divergences.map(\.ciHigh) }.max() ?? 0, 1e-4) * 1.1
        let n = points.count
        func x(_ i: Int) -> Double { n == 1 ? left + (w - left - right) / 2 : left + Double(i) * (w - left - right) / Double(n - 1) }
        func y(_ v: Double) -> Double { top + (h - top - bottom) * (1 - v / maxY) }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" "
            + "role=\"img\" aria-label=\"divergence per category over runs\">\n"
        s += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(w - left - right)\" height=\"\(h - top - bottom)\" "
            + "fill=\"#fafafa\" stroke=\"#ccc\"/>\n"
        for t in 0...4 {
            let v = maxY * Double(t) / 4
            s += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>"
                            + "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.3g</text>\n",
                        left, w - right, y(v), y(v), left - 4, y(v) + 3, v)
        }
        for i in 0..<n where n <= 12 || i % max(1, n / 8) == 0 || i == n - 1 {
            s += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\">%@</text>\n",
                        x(i), h - bottom + 14, esc(shortTime(points[i].label)))
        }
        s += String(format: "<text x=\"14\" y=\"%.1f\" font-size=\"10\" transform=\"rotate(-90 14 %.1f)\" "
                        + "text-anchor=\"middle\">mean JS (nats)</text>\n",
                    (h - bottom) / 2, (h - bottom) / 2)
        var legend = "<div class=\"legend\">"
        for (ci, cat) in categories.enumerated() {
            let colour = palette[ci % palette.count]
            let pts: [(Int, StoredDivergence)] = points.enumerated()
                .compactMap { i, p in p.divergences.first { $0.category == cat }.map { (i, $0) } }
            guard !pts.isEmpty else { continue }
            let upper = pts.map { String(format: "%.1f,%.1f", x($0.0), y($0.1.ciHigh)) }
            let lower = pts.reversed().map { String(format: "%.1f,%.1f", x($0.0), y($0.1.ciLow)) }
            s += "<polygon points=\"\((upper + lower).joined(separator: " "))\" fill=\"\(colour)\" "
                + "fill-opacity=\"0.15\" stroke=\"none\"/>\n"
            s += "<polyline points=\"\(pts.map { String(format: "%.1f,%.1f", x($0.0), y($0.1.mean)) }.joined(separator: " "))\" "
                + "fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"/>\n"
            for (i, d) in pts {
                s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"><title>%@: %.4f [%.4f, %.4f]</title></circle>\n",
                            x(i), y(d.mean), colour, esc(cat), d.mean, d.ciLow, d.ciHigh)
            }
            legend += "<span><i class=\"sw\" style=\"background:\(colour)\"></i>\(esc(cat))</span>"
        }
        s += "</svg>\n"
        return s + legend + "</div>\n"
    }
}
