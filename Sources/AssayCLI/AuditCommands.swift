import ArgumentParser
import Foundation
import AssayCommon
import Provenance

extension Severity: ExpressibleByArgument {}

func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try enc.encode(value), as: UTF8.self)
}

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Audit a model directory or file without loading it: inventory, hashes, formats, pickle imports, red flags.",
        discussion: """
        Nothing is imported, unpickled or executed. Exit 0 clean, 1 a finding at or above --fail-on, \
        2 something could not be analysed (or invalid input), 3 nothing to audit.
        """
    )

    @Argument(help: "A model directory or a single file.")
    var path: String

    @Flag(help: "Print the report as JSON (schema in docs/provenance.md).")
    var json = false

    @Option(help: "Lowest severity that fails the audit: info, low, medium, high, critical.")
    var failOn: Severity = .high

    func run() throws {
        let report = try Auditor.audit(URL(fileURLWithPath: path), policy: AuditPolicy(failOn: failOn))
        emit(json ? try encodeJSON(report) : render(report))
        switch report.verdict {
        case .pass: return
        case .fail: throw ExitCode(ExitStatus.findings.rawValue)
        case .error: throw ExitCode(ExitStatus.invalidInput.rawValue)
        case .empty: throw ExitCode(ExitStatus.nothingScanned.rawValue)
        }
    }

    func render(_ r: AuditReport) -> String {
        var out = "\(r.path.terminalSafe): \(r.files.count) entries\n\nfiles:\n"
        for f in r.files {
            var desc = f.type == "file" ? (f.format?.rawValue ?? "?") : f.type
            if let d = f.formatDetail { desc += " (\(d.terminalSafe))" }
            if f.extensionMismatch { desc += " [extension mismatch]" }
            if !f.analysed { desc += " [not fully analysed]" }
            if let t = f.symlinkTarget { desc += " -> \(t.terminalSafe)" }
            let hash = f.sha256 ?? String(repeating: "-", count: 64)
            out += "  \(hash)  \(String(f.bytes ?? 0).leftPad(12))  \(f.path.terminalSafe)  \(desc)\n"
        }
        out += "\nfindings:\n"
        if r.findings.isEmpty { out += "  none\n" }
        for f in r.findings.sorted(by: { ($0.severity, $1.file) > ($1.severity, $0.file) }) {
            var loc = f.file.terminalSafe
            if let m = f.member { loc += "!" + m.terminalSafe }
            if let o = f.offset { loc += "@\(o)" }
            out += "  [\(f.severity.rawValue)] \(f.code) \(loc): \(f.message.terminalSafe)\n"
        }
        let c = Severity.allCases.reversed().map { "\($0.rawValue) \(r.counts[$0.rawValue] ?? 0)" }.joined(separator: ", ")
        out += "\n\(c)\nverdict: \(r.verdict.rawValue) (fail on \(r.policy.failOn.rawValue) and above)"
        return out
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

struct ManifestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manifest",
        abstract: "Write or verify per-file SHA-256 manifests (Assay's own, or OpenSSF model-signing v1.0).",
        subcommands: [ManifestCreate.self, ManifestVerify.self]
    )
}

struct ManifestCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Hash every file of a directory into a manifest (sorted JSON, written atomically)."
    )

    @Argument(help: "The model directory.")
    var dir: String

    @Option(help: "Write the manifest here instead of standard output.")
    var out: String?

    func run() throws {
        let dirURL = URL(fileURLWithPath: dir)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dirURL.path, isDirectory: &isDir), isDir.boolValue else {
            throw ManifestError.pathNotFound(dirURL.path)
        }
        var excluding: Set<String> = []
        let outURL = out.map { URL(fileURLWithPath: $0) }
        if let o = outURL {
            let d = dirURL.standardizedFileURL.path, f = o.standardizedFileURL.path
            if f.hasPrefix(d + "/") { excluding.insert(String(f.dropFirst(d.count + 1))) }
        }
        let manifest = try Manifest.create(dirURL, excluding: excluding)
        if manifest.files.isEmpty {
            printError("\(dirURL.path.terminalSafe): nothing to record")
            throw ExitCode(ExitStatus.nothingScanned.rawValue)
        }
        let bytes = manifest.encoded()
        if let o = outURL {
            try AtomicFileWriter.write(bytes, to: o)
        } else {
            FileHandle.standardOutput.write(Data(bytes))
        }
    }
}

struct ManifestVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a directory against a manifest: missing, extra and changed files; optionally the signature.",
        discussion: "Exit 0 when everything matches (and the signature verifies when --public-key is given), "
            + "1 otherwise, 2 when the manifest is invalid."
    )

    @Argument(help: "The model directory.")
    var dir: String

    @Argument(help: "An Assay manifest, or a model-signing Sigstore bundle / DSSE envelope / in-toto statement (JSON).")
    var manifest: String

    @Flag(help: "Print the result as JSON.")
    var json = false

    @Option(help: "PEM EC P-256 public key to verify a model-signing DSSE signature with.")
    var publicKey: String?

    func run() throws {
        let r = try ManifestVerifier.verify(URL(fileURLWithPath: dir), manifest: URL(fileURLWithPath: manifest),
                                            publicKeyPEM: publicKey.map { URL(fileURLWithPath: $0) })
        if json {
            emit(try encodeJSON(r))
        } else {
            var out = "\(r.manifestKind): \(r.checked) files listed\n"
            for m in r.missing { out += "  missing  \(m.terminalSafe)\n" }
            for e in r.extra { out += "  extra    \(e.terminalSafe)\n" }
            for c in r.changed {
                out += "  changed  \(c.path.terminalSafe) (expected \(c.expected.terminalSafe), found \(c.actual.terminalSafe))\n"
            }
            out += "signature: \(r.signature.status) — \(r.signature.detail.terminalSafe)\n"
            out += r.ok ? "OK" : "MISMATCH"
            emit(out)
        }
        if !r.ok { throw ExitCode(ExitStatus.findings.rawValue) }
    }
}
