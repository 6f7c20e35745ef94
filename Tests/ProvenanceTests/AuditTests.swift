import Foundation
import Testing
import AssayCommon
import Provenance
import SafeTensors

let corpus = fixtureRoot.appendingPathComponent("provenance")

struct CorpusCase: Decodable { let exit: Int32; let codes: [String]; let callables: [String] }
struct OpcodeTraces: Decodable { let canary: String; let traces: [String: [[Int]]] }

func exitCode(_ v: AuditReport.Verdict) -> Int32 {
    switch v { case .pass: 0; case .fail: 1; case .error: 2; case .empty: 3 }
}

func bytes(of url: URL) throws -> [UInt8] { [UInt8](try Data(contentsOf: url)) }

func tempDir(_ tag: String) throws -> URL {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("assay-\(tag)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
    return d
}

@Suite struct PickleReaderTests {
    /// Every opcode offset and byte matches what CPython's pickletools.genops decodes.
    @Test func opcodeTracesMatchPickletools() throws {
        let ref = try JSONDecoder().decode(OpcodeTraces.self, from: Data(contentsOf: corpus.appendingPathComponent("opcodes.json")))
        #expect(ref.traces.count >= 20)
        for (key, want) in ref.traces.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: "!", maxSplits: 1).map(String.init)
            var data = try bytes(of: corpus.appendingPathComponent(parts[0]))
            if parts.count == 2 {
                let member: [UInt8]? = data.withUnsafeBytes { b in
                    guard let z = try? ZipReader.read(b), let e = z.entries.first(where: { $0.name == parts[1] }), let r = e.dataRange else { return nil }
                    return Array(b[r])
                }
                data = try #require(member, "\(key)")
            }
            let a = data.withUnsafeBytes { PickleScanner.scan($0, recordOps: true) }
            let got = a.ops.map { [$0.offset, Int($0.code)] }
            if a.error == nil {
                #expect(got == want, "\(key)")
            } else {
                // The reader records the opcode it failed on; genops stops before it.
                #expect(Array(got.prefix(want.count)) == want && got.count - want.count <= 1, "\(key): \(a.error!)")
            }
        }
    }

    @Test func opcodeTableIsComplete() {
        #expect(PickleScanner.opcodeNames.count == 68)
    }

    @Test func stackGlobalResolvesThroughTheMemo() throws {
        let data = try bytes(of: corpus.appendingPathComponent("malicious/exec_stack_global.pkl"))
        let a = data.withUnsafeBytes { PickleScanner.scan($0) }
        #expect(a.complete)
        #expect(a.protocolVersion == 4)
        let imp = try #require(a.imports.first)
        #expect(imp.qualifiedName == "builtins.exec")
        #expect(imp.opcode == "STACK_GLOBAL")
        #expect(imp.firstCallOffset != nil)
        #expect(imp.firstCallArguments?.contains("print") == true)
    }

    @Test func extensionCodesAndDynamicNamesAreCritical() {
        // EXT1 5, EMPTY_TUPLE, REDUCE, STOP
        let ext: [UInt8] = [0x80, 0x02, 0x82, 0x05, 0x29, 0x52, 0x2E]
        let a = ext.withUnsafeBytes { PickleScanner.scan($0) }
        #expect(a.imports.map(\.qualifiedName) == ["copyreg._extension_registry[5]"])
        guard case .denied(.critical, _) = CallablePolicy.classify(a.imports[0].qualifiedName) else { Issue.record("EXT not critical"); return }
        // STACK_GLOBAL on names that are not literal strings (an int and a str).
        let dyn: [UInt8] = [0x80, 0x04, 0x4B, 0x01, 0x8C, 0x01, 0x78, 0x93, 0x2E]
        let b = dyn.withUnsafeBytes { PickleScanner.scan($0) }
        #expect(b.events.contains { $0.kind == .dynamicImport && $0.severity == .critical })
    }

    @Test func policyIsAnAllowlist() {
        #expect(CallablePolicy.classify("torch._utils._rebuild_tensor_v2") == .allowed)
        #expect(CallablePolicy.classify("torch.BFloat16Storage") == .allowed)
        #expect(CallablePolicy.classify("collections.OrderedDict") == .allowed)
        #expect(CallablePolicy.classify("numpy._core.multiarray._reconstruct") == .allowed)
        for bad in ["os.system", "posix.system", "nt.system", "subprocess.Popen", "builtins.getattr", "builtins.__import__", "socket.socket",
                    "runpy._run_code", "pip.main", "marshal.loads", "functools.partial", "operator.attrgetter", "torch.load",
                    "torch.hub.load", "pickle.loads", "_pickle.loads", "dill.loads", "webbrowser.open", "torch.os.system",
                    "shutil.rmtree", "sys.exit", "code.interact", "pty.spawn", "importlib.import_module", "pkgutil.resolve_name"] {
            guard case .denied(.critical, _) = CallablePolicy.classify(bad) else { Issue.record("\(bad) is not critical"); continue }
        }
        guard case .denied(.high, _) = CallablePolicy.classify("transformers.models.llama.LlamaConfig") else {
            Issue.record("unlisted callable is not high"); return
        }
    }

    @Test func limitsAndMalformedStreamsNeverCrash() {
        // Deep nesting: a million MARKs hits the stack bound, not memory.
        var limits = PickleLimits()
        limits.maxStackDepth = 1000
        let marks = [UInt8](repeating: 0x28, count: 5000)
        let a = marks.withUnsafeBytes { PickleScanner.scan($0, limits: limits) }
        #expect(a.error?.message.contains("too many marks") == true)
        // A FRAME larger than the data, a BINBYTES8 declaring 2^63 bytes, an unknown opcode, an empty stream.
        for bad: [UInt8] in [[0x80, 0x04, 0x95, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0], [0x80, 0x04, 0x8E, 0, 0, 0, 0, 0, 0, 0, 0x80],
                             [0x80, 0x02, 0xFF], [], [0x2E], [0x30], [0x31], [0x68, 0x07], [0x4A, 0x01]] {
            let r = bad.withUnsafeBytes { PickleScanner.scan($0) }
            #expect(r.error != nil, "\(bad)")
        }
        // Random bytes: always terminates.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let junk = (0..<512).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = junk.withUnsafeBytes { PickleScanner.scan($0) }
        }
    }
}

@Suite struct AuditCorpusTests {
    /// Every corpus case gives its findings and verdict.
    @Test func corpusCasesGiveTheirFindingsAndExitCodes() throws {
        let cases = try JSONDecoder().decode([String: CorpusCase].self, from: Data(contentsOf: corpus.appendingPathComponent("expected.json")))
        #expect(cases.count >= 35)
        for (rel, c) in cases.sorted(by: { $0.key < $1.key }) {
            let r = try Auditor.audit(corpus.appendingPathComponent(rel))
            let codes = Set(r.findings.map(\.code)), callables = Set(r.findings.compactMap(\.callable))
            #expect(exitCode(r.verdict) == c.exit, "\(rel): verdict \(r.verdict), findings \(r.findings.map { "\($0.severity) \($0.code)" })")
            #expect(Set(c.codes).isSubset(of: codes), "\(rel): \(codes.sorted())")
            #expect(Set(c.callables).isSubset(of: callables), "\(rel): \(callables.sorted())")
            for f in r.findings { #expect(f.kind == "artifact") }
        }
    }

    @Test func dangerousFindingsNameCallableOffsetAndSeverity() throws {
        let r = try Auditor.audit(corpus.appendingPathComponent("malicious/os_system.pkl"))
        let f = try #require(r.findings.first { $0.callable == "os.system" })
        #expect(f.severity == .critical)
        #expect(f.offset == 2)
        #expect(f.message.contains("called at byte"))
        #expect(r.files[0].format == .pickle)
        #expect(r.files[0].pickle?.imports == ["os.system"])
    }

    @Test func truncatedPayloadReportsWhatCameBeforeTheBreak() throws {
        let r = try Auditor.audit(corpus.appendingPathComponent("malicious/payload_then_truncated.pkl"))
        #expect(r.findings.contains { $0.callable == "os.system" && $0.severity == .critical })
        let m = try #require(r.findings.first { $0.code == "malformed_pickle" })
        #expect(m.analysisFailure == true)
        #expect(m.message.contains("before the break"))
        #expect(r.files[0].analysed == false)
        // Even with the most lenient policy, an unanalysable file is never clean.
        let lenient = try Auditor.audit(corpus.appendingPathComponent("malicious/truncated_benign.pkl"), policy: AuditPolicy(failOn: .critical))
        #expect(lenient.verdict == .error)
    }

    @Test func formatsAreDecidedByContent() throws {
        let want: [String: FileFormat] = [
            "benign/state_dict_zip.pt": .pytorchZip, "benign/state_dict_legacy.pt": .pickle, "benign/array.npy": .numpy,
            "benign/plain_p0.pkl": .pickle, "benign/plain_p1.pkl": .pickle, "disguised/model.bin": .safetensors,
            "disguised/model.safetensors": .pickle, "malicious/config.p": .pickle,
        ]
        for (rel, f) in want {
            let r = try Auditor.audit(corpus.appendingPathComponent(rel))
            #expect(r.files.first?.format == f, "\(rel): \(String(describing: r.files.first?.format))")
        }
        let legacy = try Auditor.audit(corpus.appendingPathComponent("benign/state_dict_legacy.pt"))
        #expect(legacy.files[0].pickle?.pickles == 5)
        #expect(legacy.files[0].formatDetail?.contains("legacy") == true)
        let mismatch = try Auditor.audit(corpus.appendingPathComponent("disguised/model.safetensors"))
        #expect(mismatch.files[0].extensionMismatch)
        #expect(mismatch.findings.contains { $0.code == "extension_mismatch" && $0.severity == .high })
    }

    /// The canaries would create a file if anything in them ran.
    @Test func canaryPayloadsNeverRun() throws {
        let ref = try JSONDecoder().decode(OpcodeTraces.self, from: Data(contentsOf: corpus.appendingPathComponent("opcodes.json")))
        try? FileManager.default.removeItem(atPath: ref.canary)
        for name in ["canary_open.pkl", "canary_system.pkl"] {
            let r = try Auditor.audit(corpus.appendingPathComponent("malicious/" + name))
            #expect(r.verdict == .fail)
            #expect(r.findings.contains { $0.severity == .critical && $0.code == "pickle_dangerous_callable" })
        }
        let dir = try tempDir("canary")
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["canary_open.pkl", "canary_system.pkl"] {
            try FileManager.default.copyItem(at: corpus.appendingPathComponent("malicious/" + name), to: dir.appendingPathComponent("pytorch_model-\(name).bin"))
        }
        let r = try Auditor.audit(dir)
        #expect(r.findings.filter { $0.severity == .critical }.count >= 2)
        #expect(!FileManager.default.fileExists(atPath: ref.canary), "a canary payload ran")
    }

    @Test func symlinksAndSpecialFiles() throws {
        let outside = try tempDir("outside")
        let dir = try tempDir("links")
        defer { try? FileManager.default.removeItem(at: dir); try? FileManager.default.removeItem(at: outside) }
        try Data("secret".utf8).write(to: outside.appendingPathComponent("x.bin"))
        try FileManager.default.copyItem(at: fixtureRoot.appendingPathComponent("tiny-model/model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("escape.bin").path, withDestinationPath: outside.appendingPathComponent("x.bin").path)
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("inside.safetensors").path, withDestinationPath: "model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("up").path, withDestinationPath: "..")
        #expect(mkfifo(dir.appendingPathComponent("pipe.bin").path, 0o600) == 0)
        let r = try Auditor.audit(dir)
        #expect(r.verdict == .fail)
        let esc = r.findings.filter { $0.code == "symlink_escapes" }.map(\.file).sorted()
        #expect(esc == ["escape.bin", "up"])
        #expect(r.findings.contains { $0.code == "special_file" && $0.file == "pipe.bin" })
        #expect(!r.findings.contains { $0.file == "inside.safetensors" })
        #expect(r.files.first { $0.path == "pipe.bin" }?.type == "fifo")
    }

    /// A real archive with 100,000 members (written here, ~6 MB): bounded, reported, fast.
    @Test func hundredThousandMembers() throws {
        let dir = try tempDir("members")
        defer { try? FileManager.default.removeItem(at: dir) }
        var local: [UInt8] = [], cd: [UInt8] = []
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF)] }
        func le32(_ v: Int) -> [UInt8] { le16(v & 0xFFFF) + le16(v >> 16 & 0xFFFF) }
        func le64(_ v: Int) -> [UInt8] { le32(v & 0xFFFF_FFFF) + le32(v >> 32) }
        let n = 100_000
        for i in 0..<n {
            let name = Array("archive/data/\(i)".utf8)
            let off = local.count
            local += le32(0x0403_4B50) + le16(20) + le16(0) + le16(0) + le32(0) + le32(0) + le32(0) + le32(0) + le16(name.count) + le16(0) + name
            cd += le32(0x0201_4B50) + le16(45) + le16(20) + le16(0) + le16(0) + le32(0) + le32(0) + le32(0) + le32(0)
                + le16(name.count) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(off) + name
        }
        let z64 = local.count + cd.count
        var file = local + cd
        file += le32(0x0606_4B50) + le64(44) + le16(45) + le16(45) + le32(0) + le32(0) + le64(n) + le64(n) + le64(cd.count) + le64(local.count)
        file += le32(0x0706_4B50) + le32(0) + le64(z64) + le32(1)
        file += le32(0x0605_4B50) + le16(0) + le16(0) + le16(0xFFFF) + le16(0xFFFF) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(0)
        let url = dir.appendingPathComponent("many.pt")
        try Data(file).write(to: url)
        let t0 = Date()
        let r = try Auditor.audit(url)
        #expect(Date().timeIntervalSince(t0) < 20)
        #expect(r.verdict == .fail)
        #expect(r.findings.contains { $0.code == "zip_member_limit" && $0.message.contains("100000") })
        #expect(r.files[0].analysed == false)
    }

    @Test func emptyDirectoryIsNothingToAudit() throws {
        let dir = try tempDir("empty")
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try Auditor.audit(dir).verdict == .empty)
        #expect(throws: AuditError.self) { try Auditor.audit(dir.appendingPathComponent("missing")) }
    }

    @Test func reportIsDeterministicAndCodable() throws {
        let a = try Auditor.audit(corpus.appendingPathComponent("dirs/remote_code"))
        let b = try Auditor.audit(corpus.appendingPathComponent("dirs/remote_code"))
        #expect(a == b)
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let back = try JSONDecoder().decode(AuditReport.self, from: enc.encode(a))
        #expect(back == a)
    }

    @Test func realCheckpointsPass() throws {
        var dirs: [URL] = []
        if let m = miniLMDirectory() { dirs.append(m) }
        let smol = fixtureRoot.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".models/SmolLM2-135M-Instruct")
        if FileManager.default.fileExists(atPath: smol.appendingPathComponent("model.safetensors").path) { dirs.append(smol) }
        for d in dirs {
            let r = try Auditor.audit(d)
            #expect(r.verdict == .pass, "\(d.lastPathComponent): \(r.findings.map { "\($0.severity) \($0.code) \($0.message)" })")
            #expect(r.findings.filter { $0.severity >= .medium }.isEmpty, "\(d.lastPathComponent): \(r.findings)")
        }
    }
}

@Suite struct ManifestTests {
    @Test func createAndVerifyDetectMissingExtraAndChanged() throws {
        let dir = try tempDir("manifest")
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = dir.appendingPathComponent("model")
        try FileManager.default.copyItem(at: fixtureRoot.appendingPathComponent("tiny-model"), to: model)
        let m = try Manifest.create(model)
        #expect(m.files.map(\.path) == ["config.json", "model.safetensors"])
        #expect(m.files[1].sha256 == (try Inspector.sha256Hex(file: model.appendingPathComponent("model.safetensors"))))
        let murl = dir.appendingPathComponent("manifest.json")
        try AtomicFileWriter.write(m.encoded(), to: murl)
        #expect(m.encoded() == (try Manifest.create(model)).encoded())
        #expect(try ManifestVerifier.verify(model, manifest: murl).ok)

        try Data("{}".utf8).write(to: model.appendingPathComponent("config.json"))
        try Data("x".utf8).write(to: model.appendingPathComponent("extra.py"))
        try FileManager.default.removeItem(at: model.appendingPathComponent("model.safetensors"))
        let v = try ManifestVerifier.verify(model, manifest: murl)
        #expect(!v.ok)
        #expect(v.missing == ["model.safetensors"])
        #expect(v.extra == ["extra.py"])
        #expect(v.changed.map(\.path) == ["config.json"])
    }

    @Test func invalidManifestsAreTypedErrors() throws {
        let dir = try tempDir("badmanifest")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (text, field) in [("{\"schema_version\": 1, \"algorithm\": \"md5\", \"files\": []}", "algorithm"),
                              ("{\"schema_version\": 1, \"algorithm\": \"sha256\", \"files\": [{\"path\": \"a\", \"sha256\": \"xyz\"}]}", "files[0].sha256"),
                              ("[1]", "")] {
            let url = dir.appendingPathComponent("m.json")
            try Data(text.utf8).write(to: url)
            #expect { try ManifestVerifier.verify(fixtureRoot.appendingPathComponent("tiny-model"), manifest: url) } throws: { e in
                guard case let .invalid(_, f, _) = e as? ManifestError else { return false }
                return f == field
            }
        }
    }

    @Test func modelSigningBundles() throws {
        let s = corpus.appendingPathComponent("signing")
        let model = s.appendingPathComponent("model"), key = s.appendingPathComponent("key.pub.pem")
        let good = try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("model.sig"), publicKeyPEM: key)
        #expect(good.ok && good.signature.status == "verified" && good.checked == 3 && good.manifestKind == "model-signing-v1.0")
        #expect(try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("envelope.json"), publicKeyPEM: key).ok)
        let unchecked = try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("model.sig"))
        #expect(unchecked.ok && unchecked.signature.status == "not-checked")
        #expect(try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("statement.json")).ok)

        let tampered = try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("tampered_signature.sig"), publicKeyPEM: key)
        #expect(!tampered.ok && tampered.signature.status == "invalid")
        let wrongKey = try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("model.sig"), publicKeyPEM: s.appendingPathComponent("other.pub.pem"))
        #expect(!wrongKey.ok)
        let swapped = try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("swapped_payload.sig"), publicKeyPEM: key)
        #expect(!swapped.ok && swapped.signature.status == "invalid" && swapped.changed.map(\.path) == ["model.safetensors"])
        #expect { try ManifestVerifier.verify(model, manifest: s.appendingPathComponent("inconsistent_statement.json")) } throws: { e in
            guard case let .invalid(_, f, _) = e as? ManifestError else { return false }
            return f == "subject[0].digest.sha256"
        }
        // PAE, from the DSSE specification's example.
        #expect(ModelSigning.pae(type: "http://example.com/HelloWorld", body: Array("hello world".utf8))
            == Array("DSSEv1 29 http://example.com/HelloWorld 11 hello world".utf8))
    }
}
