import Foundation
import Crypto
import AssayCommon
import SafeTensors

public enum ManifestError: Error, Equatable, Sendable, CustomStringConvertible {
    case pathNotFound(String)
    case io(file: String, reason: String)
    /// The manifest (or signature bundle) is not what it claims: names the file and the field.
    case invalid(file: String, field: String, reason: String)
    case publicKey(file: String, reason: String)

    public var description: String {
        switch self {
        case let .pathNotFound(p): return "\(p.terminalSafe): no such file or directory"
        case let .io(f, r): return "\(f.terminalSafe): \(r)"
        case let .invalid(f, field, r): return "\(f.terminalSafe): '\(field.terminalSafe)': \(r)"
        case let .publicKey(f, r): return "\(f.terminalSafe): \(r)"
        }
    }
}

/// Assay's own manifest: every regular file's SHA-256 and size, symlinks by target, sorted.
public struct Manifest: Codable, Sendable, Equatable {
    public static let schemaVersion = 1

    public struct Entry: Codable, Sendable, Equatable {
        public var path: String
        public var bytes: Int?
        public var sha256: String?
        /// For symlinks: the link text (never followed).
        public var symlink: String?
    }

    public var schemaVersion: Int
    public var algorithm: String
    public var files: [Entry]

    enum CodingKeys: String, CodingKey { case schemaVersion = "schema_version", algorithm, files }

    /// Hashes every regular file below `dir` (symlinks recorded, not followed; `excluding`
    /// paths relative to `dir` are left out, e.g. the manifest itself).
    public static func create(_ dir: URL, excluding: Set<String> = []) throws(ManifestError) -> Manifest {
        let entries = try DirectoryListing.list(dir)
        var files: [Entry] = []
        for e in entries where !excluding.contains(e.path) {
            switch e.type {
            case "file":
                let map: MappedFile
                do { map = try MappedFile(path: dir.appendingPathComponent(e.path).path) } catch {
                    throw .io(file: dir.appendingPathComponent(e.path).path, reason: error.description)
                }
                files.append(Entry(path: e.path, bytes: map.size, sha256: Inspector.sha256Hex(map.bytes), symlink: nil))
            case "symlink":
                files.append(Entry(path: e.path, bytes: nil, sha256: nil, symlink: e.target ?? ""))
            default:
                throw .invalid(file: dir.appendingPathComponent(e.path).path, field: "type",
                               reason: "\(e.type) cannot be recorded in a manifest")
            }
        }
        return Manifest(schemaVersion: schemaVersion, algorithm: "sha256", files: files.sorted { $0.path < $1.path })
    }

    /// Canonical JSON: sorted keys, two-space indentation, trailing newline.
    public func encoded() -> [UInt8] {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return Array((try? enc.encode(self)) ?? Data()) + [0x0A]
    }
}

/// The outcome of checking a directory against a manifest.
public struct ManifestVerification: Codable, Sendable, Equatable {
    public struct Changed: Codable, Sendable, Equatable {
        public var path: String
        public var expected: String
        public var actual: String
    }
    public struct SignatureCheck: Codable, Sendable, Equatable {
        /// "verified", "invalid", "not-checked" (signed, no key given) or "unsigned".
        public var status: String
        public var detail: String
    }

    public var schemaVersion = 1
    /// "assay" or "model-signing-v1.0".
    public var manifestKind: String
    public var modelName: String?
    public var checked: Int
    public var missing: [String]
    public var extra: [String]
    public var changed: [Changed]
    public var signature: SignatureCheck
    /// No missing, extra or changed file, and the signature verified when a key was given.
    public var ok: Bool

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", manifestKind = "manifest_kind", modelName = "model_name", checked, missing, extra
        case changed, signature, ok
    }
}

public enum ManifestVerifier {
    /// Verifies `dir` against an Assay manifest, an OpenSSF model-signing in-toto statement,
    /// a DSSE envelope holding one, or a Sigstore bundle holding such an envelope. With a PEM
    /// public key, the envelope's ECDSA P-256/SHA-256 signature is verified too.
    public static func verify(_ dir: URL, manifest manifestURL: URL,
                              publicKeyPEM: URL? = nil) throws(ManifestError) -> ManifestVerification {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else { throw .pathNotFound(dir.path) }
        let mp = manifestURL.path
        let data: [UInt8]
        do { data = try SafeFile.read(manifestURL, maxBytes: 256 << 20) } catch {
            if case .notFound = error { throw .pathNotFound(mp) }
            throw .invalid(file: mp, field: "", reason: error.reasonOnly)
        }
        let json: JSONValue
        do { json = try JSONParser.parse(data) } catch {
            throw .invalid(file: mp, field: "", reason: "not valid JSON: \(error.description)")
        }
        if let dup = json.firstDuplicateKeyPath { throw .invalid(file: mp, field: dup, reason: "key appears more than once") }

        // The manifest itself is never a file of the model.
        var selfExclusions: Set<String> = []
        if let rel = relative(manifestURL, to: dir) { selfExclusions.insert(rel) }

        let expected: [String: String]   // path → sha256 (symlinks: "symlink:" + target)
        let kind: String
        var modelName: String?
        var ignore: [String] = []
        var signature = ManifestVerification.SignatureCheck(status: "unsigned", detail: "Assay manifests are not signed")
        if json["files"] != nil, json["schema_version"] != nil {
            kind = "assay"
            expected = try assayEntries(json, file: mp)
            if publicKeyPEM != nil {
                signature = .init(status: "invalid", detail: "a public key was given but an Assay manifest carries no signature")
            }
        } else {
            let doc = try ModelSigning.read(json, file: mp)
            kind = "model-signing-v1.0"
            modelName = doc.statement.modelName
            ignore = doc.statement.ignorePaths
            var e: [String: String] = [:]
            for r in doc.statement.resources {
                guard e[r.name] == nil else {
                    throw .invalid(file: mp, field: "predicate.resources", reason: "'\(r.name)' is listed twice")
                }
                e[r.name] = r.digest
            }
            expected = e
            if let env = doc.envelope {
                if let key = publicKeyPEM {
                    let ok = try ModelSigning.verifySignature(env, publicKeyPEM: key)
                    signature = ok ? .init(status: "verified",
                                           detail: "ECDSA P-256 SHA-256 signature over the DSSE envelope verified with "
                                               + "\(key.lastPathComponent)")
                        : .init(status: "invalid", detail: "no signature in the DSSE envelope verifies with \(key.lastPathComponent)")
                } else {
                    signature = .init(status: "not-checked", detail: "signed DSSE envelope; pass --public-key to verify its signature")
                }
            } else {
                signature = .init(status: publicKeyPEM == nil ? "unsigned" : "invalid",
                                  detail: "a bare in-toto statement carries no signature")
            }
        }

        let listing = try DirectoryListing.list(dir)
        var actual: [String: String] = [:]
        for e in listing where !selfExclusions.contains(e.path) && !ignored(e.path, ignore) {
            switch e.type {
            case "file":
                let map: MappedFile
                do { map = try MappedFile(path: dir.appendingPathComponent(e.path).path) } catch {
                    throw .io(file: dir.appendingPathComponent(e.path).path, reason: error.description)
                }
                actual[e.path] = Inspector.sha256Hex(map.bytes)
            case "symlink": actual[e.path] = "symlink:" + (e.target ?? "")
            default: actual[e.path] = e.type
            }
        }
        let missing = expected.keys.filter { actual[$0] == nil }.sorted()
        let extra = actual.keys.filter { expected[$0] == nil }.sorted()
        let changed = expected.keys.sorted().compactMap { k -> ManifestVerification.Changed? in
            guard let a = actual[k], let x = expected[k], a != x else { return nil }
            return .init(path: k, expected: x, actual: a)
        }
        let sigOK = signature.status == "verified" || (publicKeyPEM == nil && signature.status != "invalid")
        return ManifestVerification(manifestKind: kind, modelName: modelName, checked: expected.count, missing: missing, extra: extra,
                                    changed: changed, signature: signature,
                                    ok: missing.isEmpty && extra.isEmpty && changed.isEmpty && sigOK)
    }

    static func assayEntries(_ json: JSONValue, file: String) throws(ManifestError) -> [String: String] {
        guard json["schema_version"]?.exactInt == Manifest.schemaVersion else {
            throw .invalid(file: file, field: "schema_version", reason: "expected \(Manifest.schemaVersion)")
        }
        guard json["algorithm"]?.string == "sha256" else {
            throw .invalid(file: file, field: "algorithm", reason: "only sha256 is supported")
        }
        guard let items = json["files"]?.array else { throw .invalid(file: file, field: "files", reason: "must be an array") }
        var out: [String: String] = [:]
        for (i, item) in items.enumerated() {
            guard let p = item["path"]?.string, !p.isEmpty else {
                throw .invalid(file: file, field: "files[\(i)].path", reason: "must be a non-empty string")
            }
            guard out[p] == nil else { throw .invalid(file: file, field: "files[\(i)].path", reason: "'\(p)' is listed twice") }
            if let target = item["symlink"]?.string {
                out[p] = "symlink:" + target
            } else {
                guard let h = item["sha256"]?.string, ModelSigning.isHexDigest(h) else {
                    throw .invalid(file: file, field: "files[\(i)].sha256", reason: "must be 64 lowercase hex digits")
                }
                out[p] = h
            }
        }
        return out
    }

    static func relative(_ url: URL, to dir: URL) -> String? {
        let d = dir.standardizedFileURL.path, f = url.standardizedFileURL.path
        guard f.hasPrefix(d + "/") else { return nil }
        return String(f.dropFirst(d.count + 1))
    }

    /// model_signing's ignore_paths: a path or any of its parent directories.
    static func ignored(_ path: String, _ ignore: [String]) -> Bool {
        ignore.contains { path == $0 || path.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }
    }
}

/// A directory's entries without following symlinks, sorted, bounded.
enum DirectoryListing {
    struct Entry { let path: String; let type: String; let target: String? }

    static func list(_ root: URL) throws(ManifestError) -> [Entry] {
        var out: [Entry] = []
        try visit(root, rel: "", depth: 0, into: &out)
        return out.sorted { $0.path < $1.path }
    }

    static func visit(_ dir: URL, rel: String, depth: Int, into out: inout [Entry]) throws(ManifestError) {
        guard depth <= Auditor.maxDepth else { throw .io(file: dir.path, reason: "directory nesting deeper than \(Auditor.maxDepth)") }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path) } catch {
            throw .io(file: dir.path, reason: "cannot list directory")
        }
        for name in names {
            guard out.count < Auditor.maxEntries else { throw .io(file: dir.path, reason: "more than \(Auditor.maxEntries) entries") }
            let url = dir.appendingPathComponent(name)
            let r = rel.isEmpty ? name : rel + "/" + name
            var st = stat()
            guard lstat(url.path, &st) == 0 else { throw .io(file: url.path, reason: String(cString: strerror(errno))) }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: try visit(url, rel: r, depth: depth + 1, into: &out)
            case S_IFREG: out.append(Entry(path: r, type: "file", target: nil))
            case S_IFLNK: out.append(Entry(path: r, type: "symlink",
                                           target: try? FileManager.default.destinationOfSymbolicLink(atPath: url.path)))
            case S_IFIFO: out.append(Entry(path: r, type: "fifo", target: nil))
            default: out.append(Entry(path: r, type: "special", target: nil))
            }
        }
    }
}
