import Foundation
import Crypto
import AssayCommon

/// OpenSSF model signing (sigstore/model-transparency, predicate v1.0): an in-toto Statement v1
/// whose predicate lists every model file ("resources": name, algorithm, digest) and whose single
/// subject digest is the SHA-256 of the concatenated resource digests, in order. The statement
/// travels as the base64 payload of a DSSE envelope, usually inside a Sigstore bundle
/// ("dsseEnvelope"). Supported here: the "files" serialization with sha256 digests; bare
/// statements, bare DSSE envelopes and Sigstore bundles (JSON); signatures made with an EC
/// P-256 key over the DSSE pre-authentication encoding with SHA-256 (model_signing's
/// `sign_ec_key`), given the PEM public key. Not supported: Sigstore keyless (certificate chain,
/// Rekor transparency log), P-384/P-521 keys, the "shards" serialization, digests other than sha256.
public enum ModelSigning {
    public static let statementType = "https://in-toto.io/Statement/v1"
    public static let predicateType = "https://model_signing/signature/v1.0"
    public static let payloadType = "application/vnd.in-toto+json"

    public struct Resource: Sendable, Equatable {
        public let name: String
        public let digest: String
    }

    public struct Statement: Sendable, Equatable {
        public let modelName: String
        public let subjectDigest: String
        public let method: String
        public let ignorePaths: [String]
        public let resources: [Resource]
    }

    public struct Envelope: Sendable, Equatable {
        public let payloadType: String
        public let payload: [UInt8]
        public let signatures: [[UInt8]]
    }

    public struct Document: Sendable, Equatable {
        public let statement: Statement
        public let envelope: Envelope?
    }

    static func isHexDigest(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// Reads a Sigstore bundle, DSSE envelope or bare statement.
    public static func read(_ json: JSONValue, file: String) throws(ManifestError) -> Document {
        if let env = json["dsseEnvelope"] {
            let e = try envelope(env, file: file, prefix: "dsseEnvelope.")
            return Document(statement: try statement(e, file: file), envelope: e)
        }
        if json["payload"] != nil, json["payloadType"] != nil {
            let e = try envelope(json, file: file, prefix: "")
            return Document(statement: try statement(e, file: file), envelope: e)
        }
        if json["_type"] != nil {
            return Document(statement: try parseStatement(json, file: file, prefix: ""), envelope: nil)
        }
        throw .invalid(file: file, field: "",
                       reason: "neither an Assay manifest, a Sigstore bundle, a DSSE envelope nor an in-toto statement")
    }

    static func envelope(_ v: JSONValue, file: String, prefix: String) throws(ManifestError) -> Envelope {
        guard let type = v["payloadType"]?.string else {
            throw .invalid(file: file, field: prefix + "payloadType", reason: "missing or not a string")
        }
        guard type == payloadType else {
            throw .invalid(file: file, field: prefix + "payloadType", reason: "expected \(payloadType), found \(type)")
        }
        guard let p = v["payload"]?.string, let payload = base64(p) else {
            throw .invalid(file: file, field: prefix + "payload", reason: "missing or not base64")
        }
        var sigs: [[UInt8]] = []
        for (i, s) in (v["signatures"]?.array ?? []).enumerated() {
            guard let t = s["sig"]?.string, let b = base64(t) else {
                throw .invalid(file: file, field: prefix + "signatures[\(i)].sig", reason: "missing or not base64")
            }
            sigs.append(b)
        }
        return Envelope(payloadType: type, payload: payload, signatures: sigs)
    }

    static func statement(_ e: Envelope, file: String) throws(ManifestError) -> Statement {
        let json: JSONValue
        do { json = try JSONParser.parse(e.payload) } catch {
            throw .invalid(file: file, field: "payload", reason: "decoded payload is not JSON: \(error.description)")
        }
        if let dup = json.firstDuplicateKey { throw .invalid(file: file, field: "payload." + dup, reason: "key appears more than once") }
        return try parseStatement(json, file: file, prefix: "payload.")
    }

    static func parseStatement(_ json: JSONValue, file: String, prefix: String) throws(ManifestError) -> Statement {
        guard json["_type"]?.string == statementType else {
            throw .invalid(file: file, field: prefix + "_type", reason: "expected \(statementType)")
        }
        guard let pt = json["predicateType"]?.string else { throw .invalid(file: file, field: prefix + "predicateType", reason: "missing") }
        guard pt == predicateType else {
            throw .invalid(file: file, field: prefix + "predicateType",
                           reason: "unsupported predicate type '\(pt)' (supported: \(predicateType))")
        }
        guard let subjects = json["subject"]?.array, subjects.count == 1 else {
            throw .invalid(file: file, field: prefix + "subject", reason: "expected exactly one subject")
        }
        guard let subjectDigest = subjects[0]["digest"]?["sha256"]?.string, isHexDigest(subjectDigest) else {
            throw .invalid(file: file, field: prefix + "subject[0].digest.sha256", reason: "missing or not 64 lowercase hex digits")
        }
        let name = subjects[0]["name"]?.string ?? ""
        guard let predicate = json["predicate"], predicate.members != nil else {
            throw .invalid(file: file, field: prefix + "predicate", reason: "missing")
        }
        let method = predicate["serialization"]?["method"]?.string ?? "files"
        guard method == "files" else {
            throw .invalid(file: file, field: prefix + "predicate.serialization.method",
                           reason: "'\(method)' serialization is not supported (only 'files')")
        }
        let ignore = (predicate["serialization"]?["ignore_paths"]?.array ?? []).compactMap(\.string)
        guard let items = predicate["resources"]?.array else {
            throw .invalid(file: file, field: prefix + "predicate.resources", reason: "missing or not an array")
        }
        var resources: [Resource] = []
        var h = SHA256()
        for (i, r) in items.enumerated() {
            let f = prefix + "predicate.resources[\(i)]"
            guard let n = r["name"]?.string, !n.isEmpty else { throw .invalid(file: file, field: f + ".name", reason: "missing") }
            guard r["algorithm"]?.string == "sha256" else {
                throw .invalid(file: file, field: f + ".algorithm",
                               reason: "only sha256 is supported, found \(r["algorithm"]?.string ?? "nothing")")
            }
            guard let d = r["digest"]?.string, isHexDigest(d) else {
                throw .invalid(file: file, field: f + ".digest", reason: "not 64 lowercase hex digits")
            }
            resources.append(Resource(name: n, digest: d))
            h.update(data: hexBytes(d))
        }
        let root = h.finalize().map { String(format: "%02x", $0) }.joined()
        guard root == subjectDigest else {
            throw .invalid(file: file, field: prefix + "subject[0].digest.sha256",
                           reason: "is \(subjectDigest) but the resources hash to \(root): the statement is inconsistent")
        }
        return Statement(modelName: name, subjectDigest: subjectDigest, method: method, ignorePaths: ignore, resources: resources)
    }

    /// DSSE pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body.
    public static func pae(type: String, body: [UInt8]) -> [UInt8] {
        Array("DSSEv1 \(type.utf8.count) \(type) \(body.count) ".utf8) + body
    }

    /// True when some signature in the envelope verifies with the P-256 key in `publicKeyPEM`
    /// (DER or raw r‖s ECDSA signatures, SHA-256 digest of the PAE).
    public static func verifySignature(_ e: Envelope, publicKeyPEM: URL) throws(ManifestError) -> Bool {
        let pem: String
        do { pem = try SafeFile.readText(publicKeyPEM, maxBytes: 1 << 20) } catch {
            throw .publicKey(file: publicKeyPEM.path, reason: "cannot read the public key: \(error.reasonOnly)")
        }
        let key: P256.Signing.PublicKey
        do { key = try P256.Signing.PublicKey(pemRepresentation: pem) } catch {
            throw .publicKey(file: publicKeyPEM.path, reason: "not a PEM EC P-256 public key (\(error))")
        }
        let message = pae(type: e.payloadType, body: e.payload)
        for s in e.signatures {
            if let sig = try? P256.Signing.ECDSASignature(derRepresentation: s), key.isValidSignature(sig, for: message) { return true }
            if s.count == 64, let sig = try? P256.Signing.ECDSASignature(rawRepresentation: s), key.isValidSignature(sig, for: message) {
                return true
            }
        }
        return false
    }

    static func base64(_ s: String) -> [UInt8]? {
        var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while t.utf8.count % 4 != 0 { t += "=" }
        return Data(base64Encoded: t).map { [UInt8]($0) }
    }

    static func hexBytes(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = s.utf8.makeIterator()
        func v(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : c - 87 }
        while let a = it.next(), let b = it.next() { out.append(v(a) << 4 | v(b)) }
        return out
    }
}
