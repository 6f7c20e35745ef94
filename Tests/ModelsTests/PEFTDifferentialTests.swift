import Foundation
import Testing
import AssayCommon
@testable import Models
import SafeTensors
import TensorCore

let fixturesRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")
let peftFixtures = fixturesRoot.appendingPathComponent("peft")

/// Tests/Fixtures/peft/cases.json, written by scripts/fixtures/make_peft_differential.py.
struct PEFTCorpus: Decodable {
    struct Case: Decodable {
        let base: String
        let why: String
        let peft: String
        let peft_error: String?
        let assay: String
        let assay_error: [String]?
        let reason: String?
        let logits: [[Float]]?
    }
    let ids: [Int]
    let tolerance: Float
    let cases: [String: Case]
}

struct PatternFile: Decodable {
    let patterns: [PatternCase]
    let layers: [LayerCase]
}

struct LayerCase: Decodable {
    /// null, a string or a list of strings, as in adapter_config.json.
    let layers_pattern: [String]?
    let index: [String: Int?]

    enum CodingKeys: String, CodingKey { case layers_pattern, index }
    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let s = try? c.decode(String.self, forKey: .layers_pattern) { layers_pattern = [s] }
        else { layers_pattern = try c.decodeIfPresent([String].self, forKey: .layers_pattern) }
        index = try c.decode([String: Int?].self, forKey: .index)
    }
}

struct PatternCase: Decodable {
    let pattern: String
    /// Python's verdict per name: true/false, or nil when `re` rejects the pattern.
    let fullmatch: [String: Bool]?
    let patternKey: [String: Bool]?
}

let peftCorpus: PEFTCorpus = try! JSONDecoder().decode(PEFTCorpus.self,
    from: Data(contentsOf: peftFixtures.appendingPathComponent("cases.json")))

/// Assay against PEFT 0.21.2 (`PeftModel.from_pretrained` + `merge_and_unload`) on a corpus of
/// valid and hostile adapters: every adapter PEFT refuses Assay refuses, with an error naming
/// adapter_config.json or adapter_model.safetensors and the field or key; every adapter both
/// load gives the same logits within the corpus tolerance (1e-4 absolute, F32); where PEFT loads
/// an adapter Assay refuses, cases.json says why.
@Suite struct PEFTDifferential {
    static let names = peftCorpus.cases.keys.sorted()

    @Test(arguments: names)
    func sameReadingAsPEFT(_ name: String) throws {
        let c = try #require(peftCorpus.cases[name])
        let base = fixturesRoot.appendingPathComponent(c.base)
        let adapter = peftFixtures.appendingPathComponent(name)
        switch c.assay {
        case "loads":
            #expect(c.peft == "loads", "\(name): Assay is expected to load what PEFT refuses")
            let rows = try #require(c.logits)
            let model = try ModelLoader.load(base, adapter: adapter)
            let ids = peftCorpus.ids
            let out = try model.forward([SequenceInput(tokens: ids, logitPositions: Array(ids.indices))])[0]
            let d = maxAbsDiff(out, rows)
            #expect(d < peftCorpus.tolerance, "\(name): max |Δ logit| = \(d) against PEFT")
        case "refuses":
            if c.peft == "loads" { #expect(c.reason != nil, "\(name): PEFT loads it, so cases.json must say why Assay refuses") }
            guard let text = Self.refusal(base, adapter) else {
                Issue.record("\(name): loaded an adapter Assay must refuse (\(c.why))")
                return
            }
            #expect(text.contains("adapter_config.json") || text.contains("adapter_model.safetensors"), "\(name): \(text)")
            for s in c.assay_error ?? [] { #expect(text.contains(s), "\(name): '\(s)' missing from: \(text)") }
        default:
            Issue.record("\(name): unknown expectation '\(c.assay)'")
        }
    }

    /// The error's text, or nil when the adapter loads.
    static func refusal(_ base: URL, _ adapter: URL) -> String? {
        let r: Result<any CausalLanguageModel, ModelError> = Result { () throws(ModelError) in try ModelLoader.load(base, adapter: adapter) }
        if case let .failure(e) = r { return e.description }
        return nil
    }

    @Test func corpusCoversBothSides() {
        let cases = peftCorpus.cases.values
        #expect(cases.count >= 30)
        #expect(cases.filter { $0.assay == "loads" }.count >= 15)
        #expect(cases.filter { $0.peft == "refuses" }.count >= 10)
        // Assay never loads what PEFT refuses.
        #expect(cases.allSatisfy { $0.peft == "loads" || $0.assay == "refuses" })
    }

    /// Assay's view of each base's modules (what target_modules can select) is transformers'
    /// `named_modules()` exactly, with the same layer types.
    @Test(arguments: ["llama-gqa", "llama-tied-bias", "mistral", "qwen2", "gpt2", "gpt-neox"])
    func moduleTreeIsTransformers(_ name: String) throws {
        let all = try JSONDecoder().decode([String: [String: String]].self,
                                           from: Data(contentsOf: peftFixtures.appendingPathComponent("modules.json")))
        let expected = try #require(all[name])
        let dir = modelFixtures.appendingPathComponent(name)
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as! [String: Any]
        let store = WeightStore(checkpoint: try Checkpoint.open(dir), source: dir.path)
        let tree = try BaseModules(store, modelType: cfg["model_type"] as? String, adapter: "")
        let got = tree.kinds.mapValues { k -> String in
            switch k {
            case .linear, .tiedLinear: return "linear"
            case .conv1D: return "conv1d"
            case .embedding: return "embedding"
            case .other: return "other"
            }
        }
        #expect(Set(got.keys).symmetricDifference(expected.keys).sorted() == [])
        for (k, v) in expected where got[k] != nil { #expect(got[k] == v, "\(name): \(k)") }
    }

    /// A merged weight is handed to the model that binds it and dropped from the store (a merged
    /// model would otherwise hold every adapted weight twice while packing); binding it again is
    /// an error, never a read of the unmerged checkpoint bytes.
    @Test func mergedWeightIsHandedOverOnce() throws {
        let dir = modelFixtures.appendingPathComponent("llama-gqa")
        let store = WeightStore(checkpoint: try Checkpoint.open(dir), source: dir.path)
        let name = "model.layers.0.self_attn.q_proj.weight"
        let shape = try #require(store.shape(name))
        var merged = try store.take(name, shape, field: "test")
        merged.withUnsafeMutableBufferPointer { $0[0] += 1 }
        store.set(name, merged)
        #expect(try store.take(name, shape, field: "test").array == merged.array)
        #expect(throws: ModelError.self) { try store.take(name, shape, field: "test") }
        #expect(throws: ModelError.self) { try store.takeRows(name, shape, field: "test") }
        // Merged again (a second adapter), it is there once more.
        store.set(name, merged)
        #expect(try store.take(name, shape, field: "test").array == merged.array)
    }

    /// PEFTPattern against Python's `re` on PEFT's two uses: `re.fullmatch(pattern, name)` and
    /// `re.match(rf"(.*\.)?({key})$", name)`. A pattern Python rejects Assay rejects; one Python
    /// accepts Assay either reads identically or refuses.
    @Test func patternsMatchPythonRe() throws {
        let cases = try JSONDecoder().decode(PatternFile.self,
                                             from: Data(contentsOf: peftFixtures.appendingPathComponent("patterns.json"))).patterns
        #expect(cases.count >= 40)
        var refusedValid: [String] = []
        for c in cases {
            let full = try? PEFTPattern(c.pattern)
            if let expected = c.fullmatch {
                if let full {
                    for (name, m) in expected { #expect(full.fullMatch(name) == m, "fullmatch(\(c.pattern), \(name))") }
                } else { refusedValid.append(c.pattern) }
            } else {
                #expect(full == nil, "Python's re rejects \(c.pattern) but Assay accepts it")
            }
            let key = try? PEFTPattern.patternKey(c.pattern)
            if let expected = c.patternKey, let key {
                for (name, m) in expected { #expect(key.prefixMatch(name) == m, "get_pattern_key(\(c.pattern), \(name))") }
            } else if c.patternKey == nil {
                #expect(key == nil, "Python rejects the pattern key \(c.pattern) but Assay accepts it")
            }
        }
        // Only the constructs documented as unsupported are refused.
        for p in refusedValid {
            #expect(p.contains("(?=") || p.contains("(?!") || p.contains("(?<") || p.contains("\\b") || p.contains("(?i")
                    || p.contains("\\1") || p.contains("{") || p.contains("[[") || p.contains("*+"), "refused a supported pattern: \(p)")
        }
    }

    /// The layer index read from a module name for `layers_to_transform`, against PEFT's
    /// `re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)` and `(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.`.
    @Test func layerIndexMatchesPython() throws {
        let cases = try JSONDecoder().decode(PatternFile.self,
                                             from: Data(contentsOf: peftFixtures.appendingPathComponent("patterns.json"))).layers
        #expect(cases.count >= 4)
        for c in cases {
            let pattern = c.layers_pattern.map { "[" + $0.map { "\"\($0)\"" }.joined(separator: ",") + "]" } ?? "null"
            let json = try JSONParser.parse(#"{"target_modules": ["q"], "layers_to_transform": [0], "layers_pattern": "# + pattern + "}")
            let selection = try TargetSelection(ConfigReader(file: "adapter_config.json", json: json))
            for (name, expected) in c.index {
                #expect(selection.layerIndex(name) == expected, "\(pattern) \(name)")
            }
        }
    }

    /// Linear-time matching: a pattern that backtracks exponentially in Python returns at once.
    @Test func noCatastrophicBacktracking() throws {
        let p = try PEFTPattern("(a*)*b")
        let s = String(repeating: "a", count: 5_000)
        let start = Date()
        #expect(!p.fullMatch(s))
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(throws: PEFTPattern.Refusal.self) { try PEFTPattern(String(repeating: "(", count: 100_000)) }
        #expect(throws: PEFTPattern.Refusal.self) { try PEFTPattern("(a{250}){250}") }
    }
}
