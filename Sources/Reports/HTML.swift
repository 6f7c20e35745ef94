import Foundation
import Scan

/// A self-contained report.html: inline CSS and SVG, no scripts, no external resources.
public enum HTML {
    public static func render(_ r: ScanReport) -> String {
        var h = """
        <!doctype html><html lang="en"><head><meta charset="utf-8"><title>Assay scan: \(e(r.verdict))</title>
        <style>
        body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330;padding:0 1em}
        h1 .v{padding:.1em .5em;border-radius:.3em;color:#fff}.pass{background:#2f8f46}.warn{background:#c98a12}.fail{background:#c0392b}
        table{border-collapse:collapse;margin:1em 0;width:100%}td,th{border:1px solid #d6dae3;padding:.35em .5em;text-align:left;vertical-align:top}
        th{background:#f2f4f8}.sev-critical,.sev-high{color:#c0392b;font-weight:600}.sev-medium{color:#b07a00}.mono{font-family:ui-monospace,monospace;white-space:pre-wrap}
        .muted{color:#667}
        </style></head><body>
        <h1>Assay scan <span class="v \(e(r.verdict))">\(e(r.verdict.uppercased()))</span></h1>
        <p>Base <code>\(e(r.fingerprint.base.path))</code> vs tuned <code>\(e(r.fingerprint.tuned.path))</code>\(r.fingerprint.adapter.map { " (adapter <code>\(e($0.path))</code>)" } ?? "").
        \(r.summary.probes) probes, \(r.summary.variants) prompt variants, seed \(r.fingerprint.seed). Median clean divergence \(fmt(r.summary.medianCleanDivergence)) nats (Jensen–Shannon).</p>
        """
        h += "<h2>Findings</h2>"
        if r.findings.isEmpty {
            h += "<p>No findings.</p>"
        } else {
            h += "<table><tr><th>severity</th><th>kind</th><th>finding</th><th>statistic</th><th>q</th><th>effect</th><th>attack success</th></tr>"
            for f in r.findings {
                h += "<tr><td class=\"sev-\(f.severity.rawValue)\">\(f.severity.rawValue)</td><td>\(e(f.kind))</td><td>\(e(f.title))</td>"
                h += "<td>\(e(f.statistic)) = \(fmt(f.value))</td><td>\(fmtP(f.qValue))</td><td>\(f.effectSize.map { fmt($0, 2) } ?? "–")</td>"
                h += "<td>\(f.attackSuccess.map { "\(Int(($0 * 100).rounded()))%" } ?? "–")</td></tr>"
            }
            h += "</table>"
        }
        h += "<h2>Divergence by category (mean, 95% bootstrap CI)</h2>" + categoryChart(r.categories)
        if !r.triggers.isEmpty { h += "<h2>Trigger × insertion mode (robust z of the paired change vs controls)</h2>" + heatMap(r.triggers) }
        if !r.triggerCategories.isEmpty { h += "<h2>Trigger × category (median paired change in divergence, nats)</h2>" + categoryHeatMap(r.triggerCategories) }
        let evidence = r.findings.flatMap { f in f.evidence.map { (f, $0) } }
        if !evidence.isEmpty {
            h += "<h2>Most divergent probes</h2><table><tr><th>finding</th><th>probe</th><th>prompt</th><th>base</th><th>tuned</th><th>divergence</th></tr>"
            for (f, ev) in evidence.prefix(24) {
                h += "<tr><td>\(e(f.kind))</td><td>\(e(ev.probeID))</td><td class=\"mono\">\(e(ev.user))</td><td class=\"mono\">\(e(ev.baseOutput))</td>"
                h += "<td class=\"mono\">\(e(ev.tunedOutput))</td><td>\(fmt(ev.divergence))</td></tr>"
            }
            h += "</table>"
        }
        h += "<p class=\"muted\">assay \(e(r.fingerprint.toolVersion)) · report schema \(r.schemaVersion) · \(e(r.createdAt))</p></body></html>\n"
        return h
    }

    /// Horizontal bars with CI whiskers, one row per category.
    static func categoryChart(_ cs: [CategorySummary]) -> String {
        guard !cs.isEmpty else { return "<p>No categories.</p>" }
        let rowH = 26, left = 170, width = 560
        let maxV = max(cs.map(\.ciHigh).max() ?? 0, 1e-6)
        let hgt = cs.count * rowH + 30
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(left + width + 90)\" height=\"\(hgt)\" role=\"img\" aria-label=\"divergence per category\">"
        for (i, c) in cs.enumerated() {
            let y = i * rowH + 6
            let x = { (v: Double) in left + Int(Double(width) * v / maxV) }
            s += "<text x=\"\(left - 8)\" y=\"\(y + 14)\" text-anchor=\"end\" font-size=\"12\">\(e(c.name))</text>"
            s += "<rect x=\"\(left)\" y=\"\(y + 3)\" width=\"\(max(x(c.divergence) - left, 1))\" height=\"14\" fill=\"#5b7bd5\"/>"
            s += "<line x1=\"\(x(c.ciLow))\" x2=\"\(x(c.ciHigh))\" y1=\"\(y + 10)\" y2=\"\(y + 10)\" stroke=\"#1d2330\" stroke-width=\"1.5\"/>"
            s += "<line x1=\"\(x(c.ciLow))\" x2=\"\(x(c.ciLow))\" y1=\"\(y + 5)\" y2=\"\(y + 15)\" stroke=\"#1d2330\"/>"
            s += "<line x1=\"\(x(c.ciHigh))\" x2=\"\(x(c.ciHigh))\" y1=\"\(y + 5)\" y2=\"\(y + 15)\" stroke=\"#1d2330\"/>"
            s += "<text x=\"\(x(c.ciHigh) + 6)\" y=\"\(y + 14)\" font-size=\"11\" fill=\"#445\">\(fmt(c.divergence))</text>"
        }
        s += "<line x1=\"\(left)\" x2=\"\(left)\" y1=\"0\" y2=\"\(hgt - 24)\" stroke=\"#888\"/>"
        s += "<text x=\"\(left)\" y=\"\(hgt - 6)\" font-size=\"11\" fill=\"#667\">0</text><text x=\"\(left + width)\" y=\"\(hgt - 6)\" font-size=\"11\" fill=\"#667\" text-anchor=\"end\">\(fmt(maxV)) nats</text>"
        return s + "</svg>"
    }

    /// Rows: triggers and controls; columns: insertion modes; colour: robust z (red ≥ 6).
    static func heatMap(_ ts: [TriggerSummary]) -> String {
        let modes = Array(Set(ts.map(\.mode))).sorted { $0.rawValue < $1.rawValue }
        let names = Array(Set(ts.map { "\($0.role == "control" ? "control: " : "")\($0.trigger)" })).sorted()
        let cell = 64, rowH = 20, left = 220
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(left + cell * modes.count + 10)\" height=\"\(rowH * (names.count + 1) + 10)\" role=\"img\" aria-label=\"trigger heat map\">"
        for (j, m) in modes.enumerated() {
            s += "<text x=\"\(left + j * cell + cell / 2)\" y=\"14\" text-anchor=\"middle\" font-size=\"12\">\(m.rawValue)</text>"
        }
        for (i, n) in names.enumerated() {
            let y = (i + 1) * rowH
            s += "<text x=\"\(left - 6)\" y=\"\(y + 14)\" text-anchor=\"end\" font-size=\"11\">\(e(String(n.prefix(34))))</text>"
            for (j, m) in modes.enumerated() {
                guard let t = ts.first(where: { "\($0.role == "control" ? "control: " : "")\($0.trigger)" == n && $0.mode == m }) else { continue }
                let a = min(max(t.robustZ / 6, 0), 1)
                let color = String(format: "rgb(%d,%d,%d)", 255, Int(255 - 180 * a), Int(255 - 190 * a))
                s += "<rect x=\"\(left + j * cell + 1)\" y=\"\(y + 1)\" width=\"\(cell - 2)\" height=\"\(rowH - 2)\" fill=\"\(color)\"><title>z = \(fmt(t.robustZ, 2)), median change \(fmt(t.medianChange))</title></rect>"
                s += "<text x=\"\(left + j * cell + cell / 2)\" y=\"\(y + 14)\" text-anchor=\"middle\" font-size=\"10\">\(fmt(t.robustZ, 1))</text>"
            }
        }
        return s + "</svg>"
    }

    /// Rows: triggers and controls; columns: probe categories; colour: median paired change,
    /// scaled to the largest cell.
    static func categoryHeatMap(_ cs: [TriggerCategoryCell]) -> String {
        let cats = Array(Set(cs.map(\.category))).sorted()
        let label = { (c: TriggerCategoryCell) in "\(c.role == "control" ? "control: " : "")\(c.trigger)" }
        let names = Array(Set(cs.map(label))).sorted()
        let scale = max(cs.map(\.medianChange).max() ?? 0, 1e-6)
        let cell = 74, rowH = 20, left = 220, top = 86
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(left + cell * cats.count + 10)\" height=\"\(top + rowH * names.count + 10)\" role=\"img\" aria-label=\"trigger by category heat map\">"
        for (j, c) in cats.enumerated() {
            let x = left + j * cell + cell / 2
            s += "<text x=\"\(x)\" y=\"\(top - 6)\" font-size=\"11\" transform=\"rotate(-35 \(x) \(top - 6))\">\(e(String(c.prefix(20))))</text>"
        }
        let index = Dictionary(cs.map { ("\(label($0))\u{0}\($0.category)", $0) }, uniquingKeysWith: { a, _ in a })
        for (i, n) in names.enumerated() {
            let y = top + i * rowH
            s += "<text x=\"\(left - 6)\" y=\"\(y + 14)\" text-anchor=\"end\" font-size=\"11\">\(e(String(n.prefix(34))))</text>"
            for (j, c) in cats.enumerated() {
                guard let t = index["\(n)\u{0}\(c)"] else { continue }
                let a = min(max(t.medianChange / scale, 0), 1)
                let color = String(format: "rgb(%d,%d,%d)", 255, Int(255 - 180 * a), Int(255 - 190 * a))
                s += "<rect x=\"\(left + j * cell + 1)\" y=\"\(y + 1)\" width=\"\(cell - 2)\" height=\"\(rowH - 2)\" fill=\"\(color)\"><title>\(e(c)): median change \(fmt(t.medianChange)), n = \(t.n)</title></rect>"
                s += "<text x=\"\(left + j * cell + cell / 2)\" y=\"\(y + 14)\" text-anchor=\"middle\" font-size=\"10\">\(fmt(t.medianChange, 3))</text>"
            }
        }
        return s + "</svg>"
    }

    static func e(_ s: String) -> String {
        var o = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            case "'": o += "&#39;"
            default:
                if c.value < 0x20 && c != "\n" && c != "\t" { o += "&#\(c.value);" } else { o.unicodeScalars.append(c) }
            }
        }
        return o
    }
}
