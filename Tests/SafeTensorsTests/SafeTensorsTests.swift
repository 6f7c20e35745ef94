import Foundation
import Testing
import AssayCommon
import SafeTensors
import TensorCore

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/safetensors")

struct Expected: Decodable {
    let dtype: String?
    let shape: [Int]?
    let data: [Float]?
    let nan: Int?
    let inf: Int?
}

func loadJSON<T: Decodable>(_ type: T.Type, _ path: String) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(contentsOf: fixtures.appendingPathComponent(path)))
}

@Suite struct ReferenceFiles {
    static let expected = try! loadJSON([String: [String: Expected]].self, "expected.json")

    /// Files written by the reference library decode to exactly the values NumPy wrote.
    @Test(arguments: ["f32.safetensors", "f16.safetensors", "bf16.safetensors"])
    func decodesExactly(_ name: String) throws {
        let file = try SafeTensorsFile.open(fixtures.appendingPathComponent(name))
        let want = Self.expected[name]!
        #expect(Set(file.tensorNames) == Set(want.keys))
        for (tensor, e) in want {
            let info = try #require(file.info(tensor))
            #expect(info.dtype.rawValue == e.dtype)
            #expect(info.shape == e.shape)
            if info.dtype.isComputable {
                let t = try file.tensor(tensor)
                #expect(t.shape == e.shape!)
                #expect(t.array == e.data!, "\(name):\(tensor) decoded values")
            } else {
                #expect(throws: SafeTensorsError.self) { try file.tensor(tensor) }
            }
        }
        if name == "f32.safetensors" { #expect(file.metadata == ["format": "pt", "note": "fixture"]) }
    }

    @Test func nonFiniteCounts() throws {
        let file = try SafeTensorsFile.open(fixtures.appendingPathComponent("nonfinite.safetensors"))
        for (tensor, e) in Self.expected["nonfinite.safetensors"]! {
            let c = try #require(file.nonFiniteCounts(file.info(tensor)!))
            #expect(c.nan == e.nan && c.inf == e.inf, "\(tensor)")
        }
    }

    @Test func shardedCheckpoint() throws {
        let ckpt = try Checkpoint.open(fixtures.appendingPathComponent("sharded"))
        #expect(ckpt.files.count == 2)
        let want = Self.expected["sharded"]!
        #expect(ckpt.tensorNames == want.keys.sorted())
        for (name, e) in want { #expect(try ckpt.tensor(name).array == e.data!) }
    }

    @Test func writerRoundTripsEveryComputeDType() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let values: [Float] = [0, 1, -2.5, 3.140625, 65504, -1e-3, 7, 8, 9, 10, 11, 12]
        let t = Tensor(shape: [3, 4], data: values)
        let url = dir.appendingPathComponent("w.safetensors")
        try SafeTensorsWriter.write([.init(name: "f32", tensor: t), .init(name: "f16", tensor: t, dtype: .f16),
                                     .init(name: "bf16", tensor: t, dtype: .bf16), .init(name: "s", tensor: Tensor(scalar: 1))],
                                    metadata: ["k": "v"], to: url)
        let f = try SafeTensorsFile.open(url)
        #expect(f.headerLength % 8 == 0)
        #expect(try f.tensor("f32").array == values)
        #expect(try f.tensor("f16").array == values.map { Float(Float16($0)) })
        #expect(try f.tensor("bf16").array == [0, 1, -2.5, 3.140625, 65536, -0.00099945068359375, 7, 8, 9, 10, 11, 12],
                "BF16 rounds to nearest even (values from NumPy)")
        #expect(try f.tensor("s").shape == [])
        #expect(f.metadata == ["k": "v"])
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["w.safetensors"])
    }
}

@Suite struct MalformedCorpus {
    struct Case: Decodable { let kind: String; let message: String }
    static let cases = try! loadJSON([String: Case].self, "malformed/cases.json")

    @Test func corpusIsLarge() { #expect(Self.cases.count >= 25) }

    /// Each malformed file gives its own typed error naming the file, with the numbers involved.
    @Test(arguments: cases.keys.sorted())
    func rejected(_ name: String) throws {
        let c = Self.cases[name]!
        let url = fixtures.appendingPathComponent("malformed/\(name)")
        do {
            _ = try SafeTensorsFile.open(url)
            Issue.record("\(name) was accepted")
        } catch {
            #expect(error.kind == c.kind, "\(name): \(error)")
            #expect(error.description.contains(c.message), "\(name): '\(error.description)' lacks '\(c.message)'")
            #expect(error.description.contains(name), "the message names the file")
            #expect(!error.description.unicodeScalars.contains { $0.value < 0x20 }, "control characters are escaped")
        }
    }

    @Test func validEdgeCasesStayValid() throws {
        let want = try loadJSON([String: [String: [Int]]].self, "edge-valid/cases.json")
        #expect(want.count >= 5)
        for (name, tensors) in want {
            let f = try SafeTensorsFile.open(fixtures.appendingPathComponent("edge-valid/\(name)"))
            #expect(Dictionary(uniqueKeysWithValues: f.tensors.map { ($0.name, $0.shape) }) == tensors, "\(name)")
        }
        let rank0 = try SafeTensorsFile.open(fixtures.appendingPathComponent("edge-valid/rank-0.safetensors"))
        #expect(try rank0.tensor("s").array == [2.5])
    }
}

@Suite struct ShardIndexValidation {
    /// Builds a model directory with two shards and the given index text.
    func directory(index: String, extra: (URL) throws -> Void = { _ in }) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("assay-idx-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let one = Tensor(shape: [2], data: [1, 2])
        try SafeTensorsWriter.write([.init(name: "a", tensor: one)], to: dir.appendingPathComponent("s1.safetensors"))
        try SafeTensorsWriter.write([.init(name: "b", tensor: one)], to: dir.appendingPathComponent("s2.safetensors"))
        try extra(dir)
        try index.write(to: dir.appendingPathComponent(Checkpoint.indexName), atomically: true, encoding: .utf8)
        return dir
    }

    func expectKind(_ kind: String, index: String, extra: (URL) throws -> Void = { _ in }) throws {
        let dir = try directory(index: index, extra: extra)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect {
            _ = try Checkpoint.open(dir)
        } throws: { e in
            (e as? SafeTensorsError)?.kind == kind
        }
    }

    @Test func validIndexLoads() throws {
        let dir = try directory(index: #"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try Checkpoint.open(dir).tensorNames == ["a", "b"])
    }

    @Test func shardOutsideDirectory() throws {
        try expectKind("shardPathEscapes", index: #"{"weight_map":{"a":"../../x.safetensors","b":"s2.safetensors"}}"#)
        try expectKind("shardPathEscapes", index: #"{"weight_map":{"a":"/etc/passwd","b":"s2.safetensors"}}"#)
        // A symlink inside the directory that resolves outside it.
        try expectKind("shardPathEscapes", index: #"{"weight_map":{"a":"link.safetensors","b":"s2.safetensors"}}"#) { dir in
            let outside = FileManager.default.temporaryDirectory.appendingPathComponent("assay-outside-\(UUID().uuidString).safetensors")
            try SafeTensorsWriter.write([.init(name: "a", tensor: Tensor(scalar: 1))], to: outside)
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent("link.safetensors"), withDestinationURL: outside)
        }
    }

    @Test func inconsistentIndexes() throws {
        try expectKind("shardMissing", index: #"{"weight_map":{"a":"s1.safetensors","b":"s3.safetensors"}}"#)
        try expectKind("tensorNotInIndex", index: #"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#) { dir in
            try SafeTensorsWriter.write([.init(name: "a", tensor: Tensor(scalar: 1)), .init(name: "z", tensor: Tensor(scalar: 2))],
                                        to: dir.appendingPathComponent("s1.safetensors"))
        }
        try expectKind("tensorMissingFromShard", index: #"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s2.safetensors"}}"#)
        try expectKind("tensorInTwoShards", index: #"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}"#) { dir in
            try SafeTensorsWriter.write([.init(name: "a", tensor: Tensor(scalar: 1)), .init(name: "b", tensor: Tensor(scalar: 2))],
                                        to: dir.appendingPathComponent("s2.safetensors"))
        }
        try expectKind("invalidIndex", index: #"{"weight_map":{"a":"s1.safetensors","a":"s1.safetensors","b":"s2.safetensors"}}"#)
        try expectKind("invalidIndex", index: #"{"metadata":{}}"#)
        try expectKind("invalidIndex", index: #"{"weight_map":["#)
    }
}

@Suite struct StrictJSONTests {
    @Test func numbersKeepTheirText() throws {
        let v = try JSONParser.parse(#"{"a":[0,-5,1.5,1e3,18446744073709551616],"b":"\u00e9\ud83d\ude00\n"}"#)
        let a = v["a"]!.array!
        #expect(a.map(\.exactInt) == [0, -5, nil, nil, nil])
        #expect(v["b"]!.string == "é😀\n")
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "01", "\"\\ud800\"", "\"a\u{01}\"", "tru", "{}{}", "1.", "-", "\"\\x\""])
    func rejects(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
    }
}
