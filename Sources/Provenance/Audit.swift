import Foundation
import Crypto
import AssayCommon
import SafeTensors

/// What makes an audit fail. `failOn` is the lowest severity that fails the run.
public struct AuditPolicy: Codable, Sendable, Equatable {
    public var failOn: Severity
    /// Archives declaring more members than this are reported and read only this far.
    public var maxZipMembers: Int

    public init(failOn: Severity = .high, maxZipMembers: Int = ZipReader.defaultMaxEntries) {
        self.failOn = failOn
        self.maxZipMembers = maxZipMembers
    }

    public static let `default` = AuditPolicy()

    enum CodingKeys: String, CodingKey { case failOn = "fail_on", maxZipMembers = "max_zip_members" }
}

/// One finding. Scans reuse this type with kind "artifact" for everything the audit reports.
public struct Finding: Codable, Sendable, Equatable {
    public var kind: String
    /// Stable machine-readable identifier (`pickle_dangerous_callable`, `zip_path_traversal`, …; docs/provenance.md).
    public var code: String
    public var severity: Severity
    /// Path relative to the audited directory (the file name for a single file).
    public var file: String
    /// Archive member, for findings inside a ZIP.
    public var member: String?
    /// Byte offset in the file (for stored archive members: in the archive file).
    public var offset: Int?
    /// `module.name` of an imported callable.
    public var callable: String?
    public var message: String
    /// Set when the finding means the file could not be fully analysed (malformed pickle,
    /// unreadable archive, …). Such findings make the verdict `error` (exit 2) unless another
    /// finding already fails the run.
    public var analysisFailure: Bool?

    public init(kind: String = "artifact", code: String, severity: Severity, file: String, member: String? = nil, offset: Int? = nil,
                callable: String? = nil, message: String, analysisFailure: Bool? = nil) {
        self.kind = kind; self.code = code; self.severity = severity; self.file = file; self.member = member
        self.offset = offset; self.callable = callable; self.message = message; self.analysisFailure = analysisFailure
    }

    enum CodingKeys: String, CodingKey {
        case kind, code, severity, file, member, offset, callable, message, analysisFailure = "analysis_failure"
    }
}

/// One entry of the audited tree.
public struct AuditedFile: Codable, Sendable, Equatable {
    public struct PickleSummary: Codable, Sendable, Equatable {
        /// Pickles read (a legacy PyTorch file holds five; a ZIP archive one per .pkl member).
        public var pickles: Int
        public var opcodes: Int
        /// Every imported callable, sorted.
        public var imports: [String]
    }

    public var path: String
    /// "file", "symlink", "fifo", "socket", "character-device", "block-device".
    public var type: String
    public var bytes: Int?
    public var sha256: String?
    public var format: FileFormat?
    public var formatDetail: String?
    public var extensionMismatch: Bool
    /// False when some of the file could not be analysed.
    public var analysed: Bool
    public var symlinkTarget: String?
    public var pickle: PickleSummary?

    enum CodingKeys: String, CodingKey {
        case path, type, bytes, sha256, format, formatDetail = "format_detail", extensionMismatch = "extension_mismatch"
        case analysed, symlinkTarget = "symlink_target", pickle
    }
}

/// What `assay audit` reports (JSON schema in docs/provenance.md).
public struct AuditReport: Codable, Sendable, Equatable {
    public static let schemaVersion = 1

    public enum Verdict: String, Codable, Sendable {
        /// No finding at or above the failing severity and every file analysed (exit 0).
        case pass
        /// A finding at or above the failing severity (exit 1).
        case fail
        /// Something could not be analysed and nothing else failed the run (exit 2).
        case error
        /// Nothing to audit (exit 3).
        case empty
    }

    public var schemaVersion: Int
    public var path: String
    public var policy: AuditPolicy
    public var files: [AuditedFile]
    public var findings: [Finding]
    /// Findings per severity (every severity present, zero included).
    public var counts: [String: Int]
    public var verdict: Verdict

    enum CodingKeys: String, CodingKey { case schemaVersion = "schema_version", path, policy, files, findings, counts, verdict }
}

public enum AuditError: Error, Equatable, Sendable, CustomStringConvertible {
    case pathNotFound(String)
    case io(file: String, reason: String)

    public var description: String {
        switch self {
        case let .pathNotFound(p): return "\(p.terminalSafe): no such file or directory"
        case let .io(f, r): return "\(f.terminalSafe): \(r)"
        }
    }
}

public enum Auditor {
    /// Directory entries visited at most (a bound on hostile trees).
    public static let maxEntries = 1_000_000
    public static let maxDepth = 64

    /// Audits a model directory or a single file. Nothing is imported, unpickled or executed;
    /// symlinks are never followed out of the directory; special files are never opened.
    public static func audit(_ url: URL, policy: AuditPolicy = .default) throws(AuditError) -> AuditReport {
        var st = stat()
        guard stat(url.path, &st) == 0 else { throw .pathNotFound(url.path) }
        var files: [AuditedFile] = []
        var findings: [Finding] = []
        let isDir = (st.st_mode & S_IFMT) == S_IFDIR
        let root = isDir ? url : url.deletingLastPathComponent()
        let rootReal = realPath(root.path) ?? root.standardizedFileURL.path
        if isDir {
            var visited = 0
            try walk(root, rel: "", rootReal: rootReal, depth: 0, visited: &visited, policy: policy, files: &files, findings: &findings)
        } else {
            let (f, fs) = auditEntry(url, rel: url.lastPathComponent, rootReal: rootReal, policy: policy)
            files.append(f)
            findings += fs
        }
        files.sort { $0.path < $1.path }
        findings += RedFlags.check(root: root, files: files, singleFile: !isDir)
        findings.sort { ($0.file, $0.offset ?? -1, $0.code) < ($1.file, $1.offset ?? -1, $1.code) }

        var counts: [String: Int] = [:]
        for s in Severity.allCases { counts[s.rawValue] = findings.filter { $0.severity == s }.count }
        let verdict: AuditReport.Verdict
        if findings.contains(where: { $0.analysisFailure != true && $0.severity >= policy.failOn }) {
            verdict = .fail
        } else if findings.contains(where: { $0.analysisFailure == true }) || files.contains(where: { !$0.analysed }) {
            verdict = .error
        } else if files.isEmpty {
            verdict = .empty
        } else {
            verdict = .pass
        }
        return AuditReport(schemaVersion: AuditReport.schemaVersion, path: url.path, policy: policy, files: files,
                           findings: findings, counts: counts, verdict: verdict)
    }

    /// SHA-256 of a file through 4 MiB reads (nil when it cannot be read).
    static func sha256(path: String) -> String? {
        guard let fd = try? SafeFile.open(path, maxBytes: Int.max).fd else { return nil }
        defer { close(fd) }
        var h = SHA256()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buf.deallocate() }
        while true {
            let n = read(fd, buf.baseAddress, buf.count)
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            h.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    static func realPath(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    /// Lists `dir` with lstat, never following symlinks.
    static func walk(_ dir: URL, rel: String, rootReal: String, depth: Int, visited: inout Int, policy: AuditPolicy,
                     files: inout [AuditedFile], findings: inout [Finding]) throws(AuditError) {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path) } catch {
            if rel.isEmpty { throw .io(file: dir.path, reason: "cannot list directory: \(error.localizedDescription)") }
            findings.append(Finding(code: "unreadable", severity: .high, file: rel, message: "directory cannot be listed",
                                    analysisFailure: true))
            return
        }
        for name in names.sorted() {
            visited += 1
            let childRel = rel.isEmpty ? name : rel + "/" + name
            guard visited <= maxEntries else {
                findings.append(Finding(code: "entry_limit", severity: .high, file: childRel,
                                        message: "more than \(maxEntries) directory entries; the rest were not audited",
                                        analysisFailure: true))
                return
            }
            let url = dir.appendingPathComponent(name)
            var st = stat()
            guard lstat(url.path, &st) == 0 else {
                findings.append(Finding(code: "unreadable", severity: .high, file: childRel,
                                        message: "cannot stat: \(String(cString: strerror(errno)))",
                                        analysisFailure: true))
                continue
            }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                guard depth < maxDepth else {
                    findings.append(Finding(code: "depth_limit", severity: .high, file: childRel,
                                            message: "directory nesting deeper than \(maxDepth); not audited", analysisFailure: true))
                    continue
                }
                try walk(url, rel: childRel, rootReal: rootReal, depth: depth + 1, visited: &visited, policy: policy,
                         files: &files, findings: &findings)
            } else {
                let (f, fs) = auditEntry(url, rel: childRel, rootReal: rootReal, policy: policy)
                files.append(f)
                findings += fs
            }
        }
    }

    /// One non-directory entry: symlinks and special files are classified without being opened.
    static func auditEntry(_ url: URL, rel: String, rootReal: String, policy: AuditPolicy) -> (AuditedFile, [Finding]) {
        var st = stat()
        let ext = url.pathExtension.lowercased()
        var entry = AuditedFile(path: rel, type: "file", bytes: nil, sha256: nil, format: nil, formatDetail: nil,
                                extensionMismatch: false, analysed: true, symlinkTarget: nil, pickle: nil)
        guard lstat(url.path, &st) == 0 else {
            entry.analysed = false
            return (entry, [Finding(code: "unreadable", severity: .high, file: rel, message: "cannot stat", analysisFailure: true)])
        }
        switch st.st_mode & S_IFMT {
        case S_IFLNK:
            entry.type = "symlink"
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: url.path)) ?? "?"
            entry.symlinkTarget = target
            guard let real = realPath(url.path) else {
                return (entry, [Finding(code: "symlink_dangling", severity: .medium, file: rel,
                                        message: "symlink to '\(target.terminalSafe)' points at nothing")])
            }
            if real.hasPrefix(rootReal + "/") {
                // The target is inside the directory and is audited as its own entry.
                return (entry, [])
            }
            entry.analysed = false
            return (entry, [Finding(code: "symlink_escapes", severity: .high, file: rel,
                                    message: "symlink to '\(target.terminalSafe)' resolves to \(real.terminalSafe), outside the audited "
                                        + "directory; a loader would read it but it was not audited")])
        case S_IFREG:
            break
        default:
            let kind: String
            switch st.st_mode & S_IFMT {
            case S_IFIFO: kind = "fifo"
            case S_IFSOCK: kind = "socket"
            case S_IFCHR: kind = "character-device"
            case S_IFBLK: kind = "block-device"
            default: kind = "special"
            }
            entry.type = kind
            return (entry, [Finding(code: "special_file", severity: .high, file: rel,
                                    message: "\(kind) in a model directory: reading it can block or return unbounded "
                                        + "data; it was not opened")])
        }

        let map: MappedFile
        do { map = try MappedFile(path: url.path) } catch {
            entry.analysed = false
            return (entry, [Finding(code: "unreadable", severity: .high, file: rel, message: error.description, analysisFailure: true)])
        }
        entry.bytes = map.size
        // Hash with buffered reads so a large file does not stay resident through the mapping;
        // the mapping is only touched where formats are sniffed and pickles read.
        entry.sha256 = Auditor.sha256(path: url.path) ?? Inspector.sha256Hex(map.bytes)
        let (format, detail) = FormatDetector.detect(map.bytes, url: url, fileExtension: ext)
        entry.format = format
        entry.formatDetail = detail
        var findings: [Finding] = []

        var analysis = ContentAnalysis(file: rel, policy: policy)
        switch format {
        case .pickle:
            analysis.pickleStream(map.bytes, base: 0, member: nil)
            if let d = analysis.streamDetail { entry.formatDetail = d }
        case .zip:
            if analysis.zip(map.bytes) { entry.format = .pytorchZip }
        case .numpy:
            analysis.numpy(map.bytes, base: 0, member: nil)
        case .safetensors:
            if let d = detail, d.hasPrefix("invalid") {
                analysis.findings.append(Finding(code: "invalid_safetensors", severity: .high, file: rel,
                                                 message: "not a valid safetensors file: \(d.dropFirst(9))", analysisFailure: true))
            }
            // A safetensors file that is also a complete pickle is a polyglot aimed at loaders that sniff.
            if map.size >= 2, map.bytes[0] == 0x80, map.bytes[1] <= 5 {
                let a = PickleScanner.scan(map.bytes)
                if a.complete {
                    analysis.findings.append(Finding(code: "polyglot", severity: .critical, file: rel,
                                                     message: "file is both a valid safetensors file and a complete pickle"))
                    analysis.pickle(a, base: 0, member: nil)
                }
            }
        case .tar:
            analysis.incomplete = true
            analysis.findings.append(Finding(code: "unanalysable", severity: .high, file: rel,
                                             message: "tar archive: torch.load reads PyTorch's oldest (tar) format and unpickles its "
                                                 + "members; tar archives are not analysed",
                                             analysisFailure: true))
        case .gguf:
            analysis.findings += GGUFAudit.findings(map, url: url, file: rel)
        case .gzip:
            analysis.findings.append(Finding(code: "compressed_file", severity: .medium, file: rel,
                                             message: "gzip-compressed file: its contents were not analysed (no model "
                                                 + "loader reads it directly)"))
        case .unknown:
            if FormatDetector.pickleExtensions.contains(ext) {
                analysis.findings.append(Finding(code: "unrecognised_content", severity: .medium, file: rel,
                                                 message: "content is not any known weights format (a pickle loader would reject it "
                                                     + "before importing anything)"))
            }
        default:
            break
        }
        findings += analysis.findings
        if analysis.incomplete { entry.analysed = false }
        if analysis.pickles > 0 {
            entry.pickle = .init(pickles: analysis.pickles, opcodes: analysis.opcodes, imports: analysis.imports.sorted())
        }

        if let expected = FormatDetector.expectedFormats[ext], let f = entry.format, !expected.contains(f) {
            entry.extensionMismatch = true
            let disguised = f.canRunCode && FormatDetector.dataOnlyExtensions.contains(ext)
            findings.append(Finding(code: "extension_mismatch", severity: disguised ? .high : .medium, file: rel,
                                    message: "extension .\(ext.terminalSafe) promises "
                                        + "\(expected.map(\.rawValue).sorted().joined(separator: " or ")) but the content is \(f.rawValue)"
                                        + (disguised ? ": code-capable content disguised as a data-only format" : "")))
        }
        return (entry, findings)
    }
}

/// Findings about one file's content (pickles, archives, NumPy object arrays).
struct ContentAnalysis {
    let file: String
    let policy: AuditPolicy
    var findings: [Finding] = []
    var incomplete = false
    var pickles = 0
    var opcodes = 0
    var imports: Set<String> = []
    var streamDetail: String?

    init(file: String, policy: AuditPolicy) { self.file = file; self.policy = policy }

    /// Findings for one scanned pickle; `base` maps offsets into the file.
    mutating func pickle(_ a: PickleAnalysis, base: Int, member: String?) {
        pickles += 1
        opcodes += a.opcodeCount
        for imp in a.imports {
            imports.insert(imp.qualifiedName)
            let how: String
            if let c = imp.firstCallOffset {
                how = "called at byte \(base + c)" + (imp.firstCallArguments.map { " with \($0.terminalSafe)" } ?? "")
            } else {
                how = "imported (importing runs the module's top-level code) but not called"
            }
            let where_ = "\(imp.opcode) at byte \(base + imp.offset)"
            let times = imp.count > 1 ? " (\(imp.count) imports)" : ""
            switch CallablePolicy.classify(imp.qualifiedName) {
            case .allowed:
                continue
            case let .noted(sev, note):
                findings.append(Finding(code: "pickle_noted_callable", severity: sev, file: file, member: member, offset: base + imp.offset,
                                        callable: imp.qualifiedName, message: "\(where_): \(note)\(times)"))
            case let .denied(sev, reason):
                findings.append(Finding(code: sev == .critical ? "pickle_dangerous_callable" : "pickle_unlisted_callable", severity: sev,
                                        file: file, member: member, offset: base + imp.offset, callable: imp.qualifiedName,
                                        message: "\(where_) imports \(imp.qualifiedName.terminalSafe), \(how)\(times): "
                                            + "\(reason.terminalSafe)"))
            }
        }
        for e in a.events {
            findings.append(Finding(code: "pickle_" + e.kind.rawValue, severity: e.severity, file: file, member: member,
                                    offset: base + e.offset, message: e.detail.terminalSafe))
        }
        if let err = a.error {
            incomplete = true
            let seen = a.imports.isEmpty ? "no imports before the break"
                : "\(a.imports.count) imported callable(s) before the break, which a real unpickler would already have run"
            findings.append(Finding(code: "malformed_pickle", severity: .high, file: file, member: member, offset: base + err.offset,
                                    message: "pickle is truncated or malformed: \(err.message.terminalSafe) (\(seen))",
                                    analysisFailure: true))
        }
    }

    /// A pickle file, as `pickle.load` and PyTorch's legacy loader read it: one pickle, or for
    /// the legacy format the magic number, protocol version, system info, the object and the
    /// storage keys (torch/serialization.py `_legacy_load`), followed by raw storage bytes.
    mutating func pickleStream(_ b: UnsafeRawBufferPointer, base: Int, member: String?) {
        let first = PickleScanner.scan(b)
        pickle(first, base: base, member: member)
        guard first.complete, var pos = first.end else { return }
        if first.isTorchLegacyMagic {
            streamDetail = "PyTorch legacy serialization (protocol \(first.protocolVersion.map(String.init) ?? "0/1"))"
            for _ in 1...4 {
                let a = PickleScanner.scan(b, start: pos)
                pickle(a, base: base, member: member)
                guard a.complete, let e = a.end else { return }
                pos = e
            }
            return
        }
        // pickle.load stops at STOP; a further complete pickle is analysed too (loaders that call
        // load repeatedly would run it), other trailing bytes are noted.
        var extra = 0
        while pos < b.count, extra < 16 {
            let a = PickleScanner.scan(b, start: pos)
            if a.complete, a.opcodeCount >= 2, let e = a.end {
                pickle(a, base: base, member: member)
                pos = e
                extra += 1
                continue
            }
            if !a.imports.isEmpty {
                var partial = a
                partial.error = nil
                pickle(partial, base: base, member: member)
            }
            findings.append(Finding(code: "pickle_trailing_data", severity: a.imports.isEmpty ? .low : .high, file: file, member: member,
                                    offset: base + pos,
                                    message: "\(b.count - pos) bytes after the pickle's STOP are not a complete pickle; "
                                        + "pickle.load ignores them"))
            break
        }
    }

    /// NumPy .npy: an object array (`'descr': '|O'`) stores a pickle after the header, which
    /// `numpy.load(allow_pickle=True)` unpickles.
    mutating func numpy(_ b: UnsafeRawBufferPointer, base: Int, member: String?) {
        guard b.count >= 10 else {
            findings.append(Finding(code: "invalid_numpy", severity: .high, file: file, member: member, message: "truncated .npy header",
                                    analysisFailure: true))
            incomplete = true
            return
        }
        let major = b[6]
        let headerLen: Int, start: Int
        if major == 1 { headerLen = Int(b[8]) | Int(b[9]) << 8; start = 10 } else if b.count >= 12 {
            headerLen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; start = 12
        } else { headerLen = Int.max; start = 12 }
        guard headerLen <= b.count - start else {
            findings.append(Finding(code: "invalid_numpy", severity: .high, file: file, member: member,
                                    message: ".npy header length \(headerLen) runs past the end of the data", analysisFailure: true))
            incomplete = true
            return
        }
        let header = String(decoding: UnsafeRawBufferPointer(rebasing: b[start..<(start + headerLen)]), as: UTF8.self)
        if header.contains("'|O'") || header.contains("'O'") || header.contains("\"|O\"") || header.contains(", 'O')") {
            findings.append(Finding(code: "numpy_object_array", severity: .medium, file: file, member: member,
                                    message: ".npy holds an object array: its data is a pickle (numpy.load needs allow_pickle=True)"))
            let data = UnsafeRawBufferPointer(rebasing: b[(start + headerLen)...])
            pickleStream(data, base: base + start + headerLen, member: member)
        }
    }

    /// A ZIP archive, read as PyTorch reads it. Returns whether it is a PyTorch archive.
    mutating func zip(_ b: UnsafeRawBufferPointer) -> Bool {
        let archive: ZipArchive
        do { archive = try ZipReader.read(b, maxEntries: policy.maxZipMembers) } catch {
            incomplete = true
            findings.append(Finding(code: "zip_malformed", severity: .high, file: file, offset: error.offset,
                                    message: "unreadable ZIP archive: \(error.message)", analysisFailure: true))
            return false
        }
        for issue in archive.issues {
            if issue.incomplete { incomplete = true }
            findings.append(Finding(code: issue.code, severity: issue.severity, file: file, member: issue.member, offset: issue.offset,
                                    message: issue.message))
        }
        let isTorch = archive.entries.contains { $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") }
        var crcNotes = 0
        for e in archive.entries {
            let isPkl = e.name.hasSuffix(".pkl")
            guard let r = e.dataRange else {
                if isPkl {
                    incomplete = true
                    findings.append(Finding(code: "unanalysable", severity: .high, file: file, member: e.name,
                                            message: "pickle member '\(e.name.terminalSafe)' cannot be read (its declared "
                                                + "bytes are not in the file)",
                                            analysisFailure: true))
                }
                continue
            }
            if e.method != 0 {
                // PyTorch writes every member STORED; a compressed member is not what torch.save produces.
                incomplete = incomplete || isPkl || e.compressedSize > 0
                findings.append(Finding(code: "zip_compressed_member", severity: isPkl ? .high : .medium, file: file, member: e.name,
                                        offset: r.lowerBound,
                                        message: "member '\(e.name.terminalSafe)' is compressed (method \(e.method)); PyTorch writes "
                                            + "members stored, and compressed members are not analysed",
                                        analysisFailure: isPkl ? true : nil))
                continue
            }
            let data = UnsafeRawBufferPointer(rebasing: b[r])
            if isPkl {
                if ZipReader.crc32(data) != e.crc32, crcNotes < 10 {
                    crcNotes += 1
                    findings.append(Finding(code: "zip_crc_mismatch", severity: .low, file: file, member: e.name, offset: r.lowerBound,
                                            message: "member '\(e.name.terminalSafe)' fails its CRC-32 check; PyTorch does not check CRCs "
                                                + "and loads it anyway, so it was analysed"))
                }
                pickleStream(data, base: r.lowerBound, member: e.name)
                continue
            }
            guard !data.isEmpty else { continue }
            let (f, _) = FormatDetector.detect(data, url: nil, fileExtension: "")
            switch f {
            case .zip, .tar, .gzip:
                findings.append(Finding(code: "zip_nested_archive", severity: .medium, file: file, member: e.name, offset: r.lowerBound,
                                        message: "member '\(e.name.terminalSafe)' is itself a \(f.rawValue) archive; nested "
                                            + "archives are not opened"))
            case .pickle:
                // Not named .pkl, but a pickle by content: analyse it (a loader may be pointed at it).
                let a = PickleScanner.scan(data)
                if a.complete, a.opcodeCount >= 2 {
                    findings.append(Finding(code: "zip_hidden_pickle", severity: .medium, file: file, member: e.name, offset: r.lowerBound,
                                            message: "member '\(e.name.terminalSafe)' is a pickle by content although "
                                                + "it is not a .pkl record"))
                    pickleStream(data, base: r.lowerBound, member: e.name)
                }
            case .numpy:
                numpy(data, base: r.lowerBound, member: e.name)
            default:
                break
            }
        }
        if archive.entries.isEmpty, archive.declaredEntries == 0 {
            findings.append(Finding(code: "zip_empty", severity: .low, file: file, message: "empty ZIP archive"))
        }
        return isTorch
    }
}
