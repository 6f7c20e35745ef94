import Foundation
import Probes
import Scan
import WeightDiff

/// A self-contained report.html: inline CSS and SVG, no scripts, no external resources.
public enum HTML {
    public static func render(_ r: ScanReport) -> String {
        var h = """
        <!doctype html><html lang="en"><head><meta charset="utf-8"><title>Assay scan: \(e(r.verdict.rawValue))</title>
        <style>
        body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330;padding:0 1em}
        h1 .v{padding:.1em .5em;border-radius:.3em;color:#fff}\
        .pass{background:#2f8f46}.warn{background:#c98a12}.fail{background:#c0392b}
        table{border-collapse:collapse;margin:1em 0;width:100%}\
        td,th{border:1px solid #d6dae3;padding:.35em .5em;text-align:left;vertical-align:top}
        th{background:#f2f4f8}.sev-critical,.sev-high{color:#c0392b;font-weight:600}.sev-medium{color:#b07a00}\
        .mono{font-family:ui-monospace,monospace;white-space:pre-wrap}
        .muted{color:#667}
        </style></head><body>
        <h1>Assay scan <span class="v \(e(r.verdict.rawValue))">\(e(r.verdict.rawValue.uppercased()))</span></h1>
        <p>Base <code>\(e(r.fingerprint.base.path))</code> vs tuned \
        <code>\(e(r.fingerprint.tuned.path))</code>\(r.fingerprint.adapter.map { " (adapter <code>\(e($0.path))</code>)" } ?? "").
        \(r.summary.probes) probes, \(r.summary.variants) prompt variants, seed \(r.fingerprint.seed). \
        Median clean divergence \(fmt(r.summary.medianCleanDivergence)) nats (Jensen–Shannon).</p>
        """
        if let line = r.noEffectLine { h += "<p><strong>\(e(line))</strong></p>" }
        h += "<h2>Findings</h2>"
        if r.findings.isEmpty {
            h += "<p>No findings.</p>"
        } else {
            h += "<table><tr><th>severity</th><th>kind</th><th>finding</th><th>statistic</th><th>q</th><th>effect</th>"
                + "<th>attack success</th></tr>"
            for f in r.findings {
                h += "<tr><td class=\"sev-\(f.severity.rawValue)\">\(f.severity.rawValue)</td><td>\(e(f.kind.rawValue))</td>"
                h += "<td>\(e(f.title))</td>"
                h += "<td>\(e(f.statistic)) = \(fmt(f.value))</td><td>\(fmtP(f.qValue))</td>"
                    + "<td>\(f.effectSize.map { fmt($0, 2) } ?? "–")</td>"
                h += "<td>\(f.attackSuccess.map { "\(Int(($0 * 100).rounded()))%" } ?? "–")</td></tr>"
            }
            h += "</table>"
        }
        h += "<h2>Divergence by category (mean, 95% bootstrap CI)</h2>" + categoryChart(r.categories)
        if !r.triggers.isEmpty {
            h += "<h2>Trigger × insertion mode (robust z of the paired change vs controls)</h2>" + heatMap(r.triggers)
        }
        if !r.triggerCategories.isEmpty {
            h += "<h2>Trigger × category (median paired change in divergence, nats)</h2>" + categoryHeatMap(r.triggerCategories)
        }
        if let w = r.weights { h += weightSection(w) }
        if let t = r.triggerSearch { h += searchSection(t, findings: r.findings.filter { $0.kind == .discoveredTrigger }) }
        if let t = r.targetInversion { h += inversionSection(t, findings: r.findings.filter { $0.kind == .invertedTarget }) }
        h += evidenceSections(r)
        h += "<p class=\"muted\">assay \(e(r.fingerprint.toolVersion)) · report schema \(r.schemaVersion) · \(e(r.createdAt))"
            + "</p></body></html>\n"
        return h
    }

    /// The findings' evidence, then the clean probes that diverge most (shown in every report, a PASS too).
    static func evidenceSections(_ r: ScanReport) -> String {
        var h = ""
        func row(_ first: String?, _ ev: Evidence) -> String {
            (first.map { "<tr><td>\(e($0))</td>" } ?? "<tr>") + "<td>\(e(ev.probeID))</td><td class=\"mono\">\(e(ev.user))</td>"
                + "<td class=\"mono\">\(e(ev.baseOutput))</td><td class=\"mono\">\(e(ev.tunedOutput))</td>"
                + "<td>\(fmt(ev.divergence))</td></tr>"
        }
        let evidence = r.findings.flatMap { f in f.evidence.map { (f, $0) } }
        if !evidence.isEmpty {
            h += "<h2>Evidence of the findings</h2><table><tr><th>finding</th><th>probe</th><th>prompt</th><th>base</th><th>tuned</th>"
                + "<th>divergence</th></tr>"
            for (f, ev) in evidence.prefix(24) { h += row(f.kind.rawValue, ev) }
            h += "</table>"
        }
        if let top = r.summary.mostDivergent, !top.isEmpty {
            h += "<h2>Where the fine-tune diverges most</h2><p class=\"muted\">The clean probes with the largest divergence, "
                + "whatever the verdict.</p><table><tr><th>probe</th><th>prompt</th><th>base</th><th>tuned</th><th>divergence</th></tr>"
            for ev in top { h += row(nil, ev) }
            h += "</table>"
        }
        return h
    }

    /// Horizontal bars with CI whiskers, one row per category.
    static func categoryChart(_ cs: [CategorySummary]) -> String {
        guard !cs.isEmpty else { return "<p>No categories.</p>" }
        let rowH = 26, left = 170, width = 560
        let maxV = max(cs.map(\.ciHigh).max() ?? 0, 1e-6)
        let hgt = cs.count * rowH + 30
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(left + width + 90)\" height=\"\(hgt)\" role=\"img\" "
            + "aria-label=\"divergence per category\">"
        for (i, c) in cs.enumerated() {
            let y = i * rowH + 6
            let x = { (v: Double) in left + Int(Double(width) * v / maxV) }
            s += "<text x=\"\(left - 8)\" y=\"\(y + 14)\" text-anchor=\"end\" font-size=\"12\">\(e(c.name))</text>"
            s += "<rect x=\"\(left)\" y=\"\(y + 3)\" width=\"\(max(x(c.divergence) - left, 1))\" height=\"14\" fill=\"#5b7bd5\"/>"
            s += "<line x1=\"\(x(c.ciLow))\" x2=\"\(x(c.ciHigh))\" y1=\"\(y + 10)\" y2=\"\(y + 10)\" stroke=\"#1d2330\" "
                + "stroke-width=\"1.5\"/>"
            s += "<line x1=\"\(x(c.ciLow))\" x2=\"\(x(c.ciLow))\" y1=\"\(y + 5)\" y2=\"\(y + 15)\" stroke=\"#1d2330\"/>"
            s += "<line x1=\"\(x(c.ciHigh))\" x2=\"\(x(c.ciHigh))\" y1=\"\(y + 5)\" y2=\"\(y + 15)\" stroke=\"#1d2330\"/>"
            s += "<text x=\"\(x(c.ciHigh) + 6)\" y=\"\(y + 14)\" font-size=\"11\" fill=\"#445\">\(fmt(c.divergence))</text>"
        }
        s += "<line x1=\"\(left)\" x2=\"\(left)\" y1=\"0\" y2=\"\(hgt - 24)\" stroke=\"#888\"/>"
        s += "<text x=\"\(left)\" y=\"\(hgt - 6)\" font-size=\"11\" fill=\"#667\">0</text><text x=\"\(left + width)\" y=\"\(hgt - 6)\" "
            + "font-size=\"11\" fill=\"#667\" text-anchor=\"end\">\(fmt(maxV)) nats</text>"
        return s + "</svg>"
    }

    /// A heat map's row: the trigger's id, or "control: " and the control's.
    static func rowLabel(_ role: Trigger.Role, _ id: String) -> String { (role == .control ? "control: " : "") + id }

    /// Rows: triggers and controls; columns: insertion modes; colour: robust z (red ≥ 6).
    static func heatMap(_ ts: [TriggerSummary]) -> String {
        let modes = Array(Set(ts.map(\.mode))).sorted { $0.rawValue < $1.rawValue }
        let names = Array(Set(ts.map { rowLabel($0.role, $0.trigger) })).sorted()
        let cell = 64, rowH = 20, left = 220
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(left + cell * modes.count + 10)\" "
            + "height=\"\(rowH * (names.count + 1) + 10)\" role=\"img\" aria-label=\"trigger heat map\">"
        for (j, m) in modes.enumerated() {
            s += "<text x=\"\(left + j * cell + cell / 2)\" y=\"14\" text-anchor=\"middle\" font-size=\"12\">\(m.rawValue)</text>"
        }
        for (i, n) in names.enumerated() {
            let y = (i + 1) * rowH
            s += "<text x=\"\(left - 6)\" y=\"\(y + 14)\" text-anchor=\"end\" font-size=\"11\">\(e(String(n.prefix(34))))</text>"
            for (j, m) in modes.enumerated() {
                guard let t = ts.first(where: { rowLabel($0.role, $0.trigger) == n && $0.mode == m }) else { continue }
                let a = min(max(t.robustZ / 6, 0), 1)
                let color = String(format: "rgb(%d,%d,%d)", 255, Int(255 - 180 * a), Int(255 - 190 * a))
                s += "<rect x=\"\(left + j * cell + 1)\" y=\"\(y + 1)\" width=\"\(cell - 2)\" height=\"\(rowH - 2)\" fill=\"\(color)\">"
                    + "<title>z = \(fmt(t.robustZ, 2)), median change \(fmt(t.medianChange))</title></rect>"
                s += "<text x=\"\(left + j * cell + cell / 2)\" y=\"\(y + 14)\" text-anchor=\"middle\" font-size=\"10\">"
                    + "\(fmt(t.robustZ, 1))</text>"
            }
        }
        return s + "</svg>"
    }

    /// Rows: triggers and controls; columns: probe categories; colour: median paired change,
    /// scaled to the largest cell.
    static func categoryHeatMap(_ cs: [TriggerCategoryCell]) -> String {
        let cats = Array(Set(cs.map(\.category))).sorted()
        let label = { (c: TriggerCategoryCell) in rowLabel(c.role, c.trigger) }
        let names = Array(Set(cs.map(label))).sorted()
        let scale = max(cs.map(\.medianChange).max() ?? 0, 1e-6)
        let cell = 74, rowH = 20, left = 220, top = 86
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(left + cell * cats.count + 10)\" "
            + "height=\"\(top + rowH * names.count + 10)\" role=\"img\" aria-label=\"trigger by category heat map\">"
        for (j, c) in cats.enumerated() {
            let x = left + j * cell + cell / 2
            s += "<text x=\"\(x)\" y=\"\(top - 6)\" font-size=\"11\" transform=\"rotate(-35 \(x) \(top - 6))\">"
                + "\(e(String(c.prefix(20))))</text>"
        }
        struct Cell: Hashable { var row: String; var category: String }
        let index = Dictionary(cs.map { (Cell(row: label($0), category: $0.category), $0) }, uniquingKeysWith: { a, _ in a })
        for (i, n) in names.enumerated() {
            let y = top + i * rowH
            s += "<text x=\"\(left - 6)\" y=\"\(y + 14)\" text-anchor=\"end\" font-size=\"11\">\(e(String(n.prefix(34))))</text>"
            for (j, c) in cats.enumerated() {
                guard let t = index[Cell(row: n, category: c)] else { continue }
                let a = min(max(t.medianChange / scale, 0), 1)
                let color = String(format: "rgb(%d,%d,%d)", 255, Int(255 - 180 * a), Int(255 - 190 * a))
                s += "<rect x=\"\(left + j * cell + 1)\" y=\"\(y + 1)\" width=\"\(cell - 2)\" height=\"\(rowH - 2)\" fill=\"\(color)\">"
                    + "<title>\(e(c)): median change \(fmt(t.medianChange)), n = \(t.n)</title></rect>"
                s += "<text x=\"\(left + j * cell + cell / 2)\" y=\"\(y + 14)\" text-anchor=\"middle\" font-size=\"10\">"
                    + "\(fmt(t.medianChange, 3))</text>"
            }
        }
        return s + "</svg>"
    }

    /// Weight space: counts, change per layer (bars), the most changed tensors and their spectra,
    /// the vocabulary rows that moved most.
    static func weightSection(_ w: ScanReport.WeightSummary) -> String {
        var h = "<h2>Weight diff</h2><p>\(w.changed) tensors changed, \(w.identical) bitwise identical; the first "
            + "\(w.identicalPrefixLayers) blocks are identical in both models.</p>"
        if !w.layers.isEmpty {
            let maxV = max(w.layers.map(\.relativeChange).max() ?? 0, 1e-12)
            let bw = max(6, min(24, 700 / w.layers.count)), hgt = 120
            h += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(w.layers.count * bw + 60)\" height=\"\(hgt + 30)\" role=\"img\" "
                + "aria-label=\"relative change per layer\">"
            for (i, l) in w.layers.enumerated() {
                let bh = max(1, Int(Double(hgt) * l.relativeChange / maxV))
                h += "<rect x=\"\(40 + i * bw)\" y=\"\(hgt - bh)\" width=\"\(bw - 2)\" height=\"\(bh)\" fill=\"#5b7bd5\">"
                    + "<title>layer \(l.layer): ‖ΔW‖/‖W‖ = \(String(format: "%.3e", l.relativeChange)), "
                    + "\(l.changedTensors) tensors changed</title></rect>"
                if w.layers.count <= 32 || i % 4 == 0 {
                    h += "<text x=\"\(40 + i * bw + bw / 2)\" y=\"\(hgt + 14)\" font-size=\"10\" text-anchor=\"middle\">\(l.layer)</text>"
                }
            }
            h += "<text x=\"0\" y=\"12\" font-size=\"10\" fill=\"#667\">\(String(format: "%.1e", maxV))</text>"
                + "<text x=\"40\" y=\"\(hgt + 28)\" font-size=\"10\" fill=\"#667\">layer (relative Frobenius change of its tensors)</text>"
                + "</svg>"
        }
        if !w.topTensors.isEmpty {
            h += "<table><tr><th>tensor</th><th>status</th><th>relative change</th><th>max |Δ|</th><th>rank</th><th>effective rank</th>"
                + "<th>energy top 1 / 4 / 16</th></tr>"
            for t in w.topTensors {
                h += "<tr><td class=\"mono\">\(e(t.name))</td><td>\(t.status.rawValue)</td>"
                    + "<td>\(t.relativeChange.map { String(format: "%.2e", $0) } ?? "–")</td>"
                h += "<td>\(t.maxAbsChange.map { String(format: "%.2e", $0) } ?? "–")</td><td>\(t.rank.map(String.init) ?? "–")</td>"
                    + "<td>\(t.effectiveRank.map { fmt($0, 2) } ?? "–")</td>"
                let energies = [t.energyTop1, t.energyTop4, t.energyTop16].map { $0.map { fmt($0, 3) } ?? "–" }
                h += "<td>\(energies.joined(separator: " / "))</td>"
                    + "</tr>"
            }
            h += "</table>"
        }
        if !w.rowShifts.isEmpty {
            h += "<p>Vocabulary rows that moved most (× the median row): "
                + w.rowShifts.prefix(12).map { "<code>\(e($0.text ?? "#\($0.token)"))</code> \(fmt($0.shift, 1))×" }
                    .joined(separator: ", ")
                + "</p>"
        }
        return h
    }

    /// Trigger search: what was found and how well it reproduces the behaviour, the best search
    /// states, and the held-out verification.
    static func searchSection(_ t: TriggerSearchSummary, findings: [Finding]) -> String {
        var h = "<h2>Trigger search</h2><p>\(t.screened) candidates screened, \(t.candidates) searched in every insertion mode on "
            + "\(t.searchProbes.count) probes (\(t.sequencesScored) prompts scored); found triggers verified on \(t.heldOutProbes.count) "
            + "held-out probes against \(t.controls.count) control insertions.</p>"
        if findings.isEmpty {
            h += "<p>No discovered trigger passed the scan's tests.</p>"
        } else {
            h += "<table><tr><th>discovered trigger</th><th>token ids</th><th>insertion</th><th>attack success (held-out)</th>"
                + "<th>median change</th><th>q</th><th>robust z</th></tr>"
            for f in findings {
                h += "<tr><td class=\"mono sev-\(f.severity.rawValue)\">\(e(f.trigger ?? ""))</td>"
                    + "<td class=\"mono\">\(e((f.tokenIDs ?? []).map(String.init).joined(separator: " ")))</td>"
                let success = f.attackSuccess.map { "\(Int(($0 * 100).rounded()))%" } ?? "–"
                h += "<td>\(f.insertion?.rawValue ?? "–")</td><td>\(success)</td>"
                    + "<td>\(fmt(f.value))</td><td>\(fmtP(f.qValue))</td><td>\(f.effectSize.map { fmt($0, 1) } ?? "–")</td></tr>"
            }
            h += "</table>"
        }
        h += "<table><tr><th>best search states</th><th>insertion</th><th>score (Δ KL tuned‖base, nats)</th><th>from</th></tr>"
        for c in t.top {
            h += "<tr><td class=\"mono\">\(e(c.text))</td><td>\(c.mode.rawValue)</td><td>\(fmt(c.score, 3))</td>"
                + "<td>\(e(c.source))</td></tr>"
        }
        return h + "</table>"
    }

    /// Target inversion: the reported targets, then the best-scoring continuations against the threshold.
    static func inversionSection(_ t: TargetInversionSummary, findings: [Finding]) -> String {
        var h = "<h2>Target inversion</h2><p>Every one of \(t.vocabulary) vocabulary entries forced as the first response token after "
            + "\(t.prompts.count) benign prompt(s); the best \(t.top.count) shown, judged on \(t.evalPrompts.count) held-out prompts. "
            + "Reported when the mean log-probability gain is ≥ \(fmt(t.threshold, 1)) nats per token, the tuned model's mean "
            + "probability ≥ \(fmt(t.minConfidence, 2)) and the continuation the same on ≥ "
            + "\(Int(FindingRules.inversionMinConsistency * 100))% of prompts, at least \(FindingRules.inversionMinTokens - 1) tokens "
            + "after the forced one (those rows in red).</p>"
        if findings.isEmpty {
            h += "<p>No inverted target above the threshold.</p>"
        } else {
            h += "<ul>" + findings.map {
                "<li class=\"sev-\($0.severity.rawValue)\"><code>\(e($0.target ?? ""))</code> — gain \(fmt($0.value, 2)) nats/token</li>"
            }.joined() + "</ul>"
        }
        h += "<table><tr><th>continuation</th><th>gain (nats/token)</th><th>tuned confidence</th><th>consistency</th>"
            + "<th>first round KL</th><th>robust z</th></tr>"
        for c in t.top {
            let pass = FindingRules.invertedTargetPasses(c, minGain: t.threshold, minConfidence: t.minConfidence)
            h += "<tr><td class=\"mono\">\(e(c.text))</td><td\(pass ? " class=\"sev-high\"" : "")>\(fmt(c.score, 2))</td>"
                + "<td>\(fmt(c.tunedConfidence, 3))</td><td>\(fmt(c.consistency, 2))</td><td>\(fmt(c.firstRoundScore, 2))</td>"
                + "<td>\(fmt(c.robustZ, 1))</td></tr>"
        }
        return h + "</table>"
    }

    static func e(_ s: String) -> String { escape(s) }

    /// Text made safe inside HTML elements and quoted attributes (the sweep dashboard uses it too).
    public static func escape(_ s: String) -> String {
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
