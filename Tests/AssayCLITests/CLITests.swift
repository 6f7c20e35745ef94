import Foundation
import Testing

let repoFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

/// The `assay` binary built beside this test bundle.
func assayBinary() -> URL {
    let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("assay")
    if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
    var dir = Bundle.main.bundleURL
    for _ in 0..<4 {
        let c = dir.appendingPathComponent("assay")
        if FileManager.default.isExecutableFile(atPath: c.path) { return c }
        dir = dir.deletingLastPathComponent()
    }
    return beside
}

struct RunResult { let status: Int32; let stdout: String; let stderr: String }

func assay(_ args: [String], environment: [String: String] = [:]) throws -> RunResult {
    let p = Process()
    p.executableURL = assayBinary()
    p.arguments = args
    if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return RunResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

@Suite struct InspectCLITests {
    struct Case: Decodable { let kind: String; let message: String }

    /// Every malformed file: exit code 2, a message naming the problem, no crash, nothing on stdout.
    @Test func malformedCorpusExitsTwo() throws {
        let cases = try JSONDecoder().decode([String: Case].self,
                                             from: Data(contentsOf: repoFixtures.appendingPathComponent("safetensors/malformed/cases.json")))
        #expect(cases.count >= 25)
        for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
            let r = try assay(["inspect", repoFixtures.appendingPathComponent("safetensors/malformed/\(name)").path])
            #expect(r.status == 2, "\(name): exit \(r.status), stderr \(r.stderr)")
            #expect(r.stderr.contains(c.message), "\(name): \(r.stderr)")
            #expect(r.stdout.isEmpty, "\(name) printed a partial report")
            #expect(!r.stderr.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0 }, "\(name): raw control characters")
        }
    }

    @Test func cleanModelExitsZeroAndJSONIsStable() throws {
        let dir = repoFixtures.appendingPathComponent("tiny-model").path
        let text = try assay(["inspect", dir])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("model.layers.1.mlp.down_proj.weight"))
        #expect(text.stdout.contains("no NaN or Inf"))
        let a = try assay(["inspect", dir, "--json"]), b = try assay(["inspect", dir, "--json"])
        #expect(a.status == 0 && a.stdout == b.stdout)
        let json = try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as! [String: Any]
        #expect(json["schema_version"] as? Int == 1)
        #expect(Set(json.keys) == ["schema_version", "path", "kind", "files", "tensors", "tensor_count", "parameter_count",
                                   "metadata", "config", "non_finite_tensors"])
        let tensor = (json["tensors"] as! [[String: Any]])[0]
        #expect(Set(tensor.keys) == ["file", "name", "dtype", "shape", "bytes", "parameters", "nan", "inf"])
    }

    @Test func nonFiniteValuesAreFindings() throws {
        let r = try assay(["inspect", repoFixtures.appendingPathComponent("safetensors/nonfinite.safetensors").path])
        #expect(r.status == 1)
        #expect(r.stdout.contains("1 tensors with NaN or Inf"))
    }

    @Test func usageAndMissingPaths() throws {
        #expect(try assay(["inspect"]).status == 4)
        #expect(try assay(["inspect", "--bogus", "x"]).status == 4)
        #expect(try assay(["frobnicate"]).status == 4)
        #expect(try assay(["--help"]).status == 0)
        #expect(try assay(["bench", "core", "--repeats", "0"]).status == 4)
        let missing = try assay(["inspect", "/nonexistent/model"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("/nonexistent/model"))
    }
}
