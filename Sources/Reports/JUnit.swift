import Foundation
import AssayCommon
import History

/// JUnit XML: one test case per entry (fail → failure, error → error, skipped entries carry their
/// earlier verdict), for CI systems' test views.
public enum JUnit {
    public static func render(results: [EntryResult], runID: String, name: String) -> String {
        // XML 1.0, not HTML: control characters other than tab and newlines cannot appear even as
        // character references, so they become `?` (HTML.escape would write `&#N;`).
        func esc(_ s: String) -> String {
            var out = ""
            for u in s.unicodeScalars {
                switch u {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&quot;"
                case "\t", "\n", "\r": out.unicodeScalars.append(u)
                default: if u.value < 0x20 || u.value == 0xFFFE || u.value == 0xFFFF { out += "?" } else { out.unicodeScalars.append(u) }
                }
            }
            return out
        }
        let failures = results.filter { $0.verdict == .fail }.count
        let errors = results.filter { $0.status == .error }.count
        let total = results.reduce(0.0) { $0 + $1.seconds }
        var s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        s += "<testsuites name=\"assay sweep\" tests=\"\(results.count)\" failures=\"\(failures)\" errors=\"\(errors)\" "
            + "time=\"\(String(format: "%.3f", total))\">\n"
        s += "  <testsuite name=\"\(esc(name))\" id=\"\(esc(runID))\" tests=\"\(results.count)\" "
            + "failures=\"\(failures)\" errors=\"\(errors)\" skipped=\"0\" time=\"\(String(format: "%.3f", total))\">\n"
        for r in results {
            s += "    <testcase classname=\"assay.sweep\" name=\"\(esc(r.entryID))\" time=\"\(String(format: "%.3f", r.seconds))\">\n"
            let findings = r.findings.map { "\($0.severity) \($0.kind): \($0.title)" }.joined(separator: "\n")
            if r.status == .error {
                s += "      <error message=\"\(esc(r.message ?? "error"))\" type=\"error\"/>\n"
            } else if r.verdict == .fail {
                s += "      <failure message=\"\(esc(r.findings.first.map { "\($0.severity): \($0.title)" } ?? "fail"))\" type=\"fail\">"
                    + "\(esc(findings))</failure>\n"
            }
            let note = r.status == .skipped ? "unchanged since run \(r.reusedFrom ?? "?"); verdict \(r.verdict?.rawValue ?? "?")\n"
                : "verdict \(r.verdict?.rawValue ?? "none")\n"
            s += "      <system-out>\(esc(note + findings))</system-out>\n"
            s += "    </testcase>\n"
        }
        s += "  </testsuite>\n</testsuites>\n"
        return s
    }
}
