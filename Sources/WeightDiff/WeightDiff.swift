import Foundation
import AssayCommon
import Models
import SafeTensors
import TensorCore

/// How one tensor differs between base and tuned.
public struct TensorDelta: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable { case identical, changed, added, removed, reshaped }
    public var name: String
    public var status: Status
    public var shape: [Int]
    public var layer: Int?
    /// ‖ΔW‖_F / ‖W_base‖_F.
    public var relativeChange: Double?
    public var maxAbsChange: Double?
    /// cos(W_base, W_tuned) over all elements.
    public var cosine: Double?
    /// Largest singular values of ΔW (at most 16), for matrices.
    public var singularValues: [Double]?
    /// Numerical rank of ΔW: singular values above 1e-3 of the largest.
    public var rank: Int?
    /// exp(entropy) of the normalized singular-value energy (Roy & Vetterli 2007).
    public var effectiveRank: Double?
    /// Share of ‖ΔW‖²_F in the top 1, 4 and 16 singular directions.
    public var energyTop1: Double?
    public var energyTop4: Double?
    public var energyTop16: Double?

    enum CodingKeys: String, CodingKey {
        case name, status, shape, layer, relativeChange = "relative_change", maxAbsChange = "max_abs_change", cosine
        case singularValues = "singular_values", rank, effectiveRank = "effective_rank", energyTop1 = "energy_top1"
        case energyTop4 = "energy_top4", energyTop16 = "energy_top16"
    }
}

/// A vocabulary row (embedding or output head) that moved far more than rows typically did.
public struct RowShift: Codable, Sendable, Equatable {
    public var matrix: String
    public var token: Int
    public var text: String?
    /// ‖ΔE_token‖ / median over rows of ‖ΔE_row‖ (rows that did not move count as 0).
    public var shift: Double
    public var norm: Double
}

public struct LayerChange: Codable, Sendable, Equatable {
    public var layer: Int
    /// ‖ΔW‖_F / ‖W‖_F over all of the layer's tensors.
    public var relativeChange: Double
    public var changedTensors: Int
    enum CodingKeys: String, CodingKey { case layer, relativeChange = "relative_change", changedTensors = "changed_tensors" }
}

public struct WeightAnomaly: Codable, Sendable, Equatable {
    public var kind: FindingKind = .weightAnomaly
    public var severity: Severity
    public var title: String
    public var tensors: [String]
    public var tokens: [RowShift]
}

public struct WeightDiffReport: Codable, Sendable {
    public static let schemaVersion = 1
    public var schemaVersion: Int
    public var base: String
    public var tuned: String
    public var adapter: String?
    public var tensors: [TensorDelta]
    public var identical: Int
    public var changed: Int
    /// The first `identicalPrefixLayers` transformer blocks are bitwise identical in both models
    /// (frozen layers, adapters on upper layers): a scan can compute them once for both.
    public var identicalPrefixLayers: Int
    public var layers: [LayerChange]
    public var rowShifts: [RowShift]
    public var anomalies: [WeightAnomaly]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", base, tuned, adapter, tensors, identical, changed
        case identicalPrefixLayers = "identical_prefix_layers", layers, rowShifts = "row_shifts", anomalies
    }
}

public enum WeightDiffError: Error, CustomStringConvertible, Sendable {
    case safetensors(SafeTensorsError)
    case model(ModelError)
    case tensor(String)
    public var description: String {
        switch self {
        case let .safetensors(e): return e.description
        case let .model(e): return e.description
        case let .tensor(m): return m
        }
    }
}

public struct WeightDiffOptions: Sendable {
    /// Row shifts reported per vocabulary matrix.
    public var topRows = 20
    /// A row moving this many times the median row is a trigger/target candidate.
    public var rowShiftThreshold = 8.0
    /// Matrices larger than this many elements get no SVD (the vocabulary matrices).
    public var maxSVDElements = 8_000_000
    public init() {}
}

public enum WeightDiff {
    /// The layer index in a transformers weight name (`model.layers.12.…`, `transformer.h.3.…`).
    public static func layerIndex(_ name: String) -> Int? {
        let parts = name.split(separator: ".")
        for (i, p) in parts.enumerated() where (p == "layers" || p == "h" || p == "blocks") && i + 1 < parts.count {
            if let n = Int(parts[i + 1]) { return n }
        }
        return nil
    }

    static func isVocabularyMatrix(_ name: String) -> Bool {
        ["embed_tokens.weight", "wte.weight", "embed_in.weight", "lm_head.weight", "embed_out.weight"].contains { name.hasSuffix($0) }
    }

    /// Compares two checkpoints tensor by tensor; with `adapter`, the tuned weights are the base
    /// with the LoRA merged. `tokenText` labels row shifts with token strings when given.
    public static func compare(base: URL, tuned: URL?, adapter: URL? = nil, options: WeightDiffOptions = .init(),
                               tokenText: ((Int) -> String?)? = nil) throws -> WeightDiffReport {
        try compare(base: base, tuned: tuned, adapters: adapter.map { [$0] } ?? [], options: options, tokenText: tokenText)
    }

    /// With several adapters, the tuned weights are the base with each merged in turn.
    public static func compare(base: URL, tuned: URL?, adapters: [URL], options: WeightDiffOptions = .init(),
                               tokenText: ((Int) -> String?)? = nil) throws -> WeightDiffReport {
        let adapter: URL? = adapters.first
        let b: WeightSource, t: WeightSource
        do {
            b = try WeightSource.open(base)
            t = try WeightSource.open(tuned ?? base)
        } catch { throw WeightDiffError.model(error) }
        var merged: [String: Tensor] = [:]
        // Each merged weight's change as LoRA factors, ΔW = Σ scale·B·A over the adapters.
        var factors: [String: [LoRAAdapter.Module]] = [:]
        if !adapters.isEmpty {
            let store = WeightStore(b, source: base.path)
            // The module tree PEFT selects from depends on the architecture (GPT-NeoX's lm_head
            // is stored as embed_out): tell the merge what the base's config says it is.
            var modelType: String?, tied: Bool?
            do {
                if let c = try ModelLoader.config(at: base) {
                    modelType = try c.string("model_type", default: "")
                    if modelType == "" { modelType = nil }
                    if c.has("tie_word_embeddings") { tied = try c.bool("tie_word_embeddings", default: false) }
                }
            } catch { throw WeightDiffError.model(error) }
            var names = Set<String>()
            for a in adapters {
                let lora: LoRAAdapter
                do { lora = try LoRAAdapter.load(a) } catch { throw WeightDiffError.model(error) }
                let changed: [String]
                do { changed = try lora.merge(into: store, modelType: modelType, tiedOutputHead: tied) } catch {
                    throw WeightDiffError.model(error)
                }
                names.formUnion(changed)
                for (module, weight) in zip(lora.modules, changed) { factors[weight, default: []].append(module) }
            }
            for n in names { merged[n] = try? store.take(n, store.shape(n)!, field: "adapter") }
        }
        let names = Set(b.tensorNames).union(t.tensorNames).sorted()
        var deltas: [TensorDelta] = []
        var layerNorms: [Int: (delta: Double, base: Double, changed: Int)] = [:]
        var firstChangedLayer = Int.max
        var rowShifts: [RowShift] = []
        for name in names {
            let layer = layerIndex(name)
            guard let baseShape = b.shape(name) else {
                deltas.append(TensorDelta(name: name, status: .added, shape: t.shape(name)!, layer: layer))
                if let layer { firstChangedLayer = min(firstChangedLayer, layer) }
                continue
            }
            let tunedShape: [Int]? = adapter == nil ? t.shape(name) : baseShape
            guard let tunedShape else {
                deltas.append(TensorDelta(name: name, status: .removed, shape: baseShape, layer: layer))
                if let layer { firstChangedLayer = min(firstChangedLayer, layer) }
                continue
            }
            guard baseShape == tunedShape else {
                deltas.append(TensorDelta(name: name, status: .reshaped, shape: tunedShape, layer: layer))
                if let layer { firstChangedLayer = min(firstChangedLayer, layer) }
                continue
            }
            // Bitwise comparison straight from the maps, before decoding anything; across formats
            // (safetensors against GGUF) the decoded values are compared instead.
            var same: Bool
            var decoded: (Tensor, Tensor)? = nil
            if adapter != nil {
                same = merged[name] == nil
            } else if let s = b.storedBytesEqual(name, t) {
                same = s
            } else {
                guard b.isComputable(name), t.isComputable(name) else {
                    throw WeightDiffError.tensor("\(name): stored as numbers in one model and not in the other")
                }
                do { decoded = (try b.tensor(name), try t.tensor(name)) } catch { throw WeightDiffError.model(error) }
                same = decoded!.0.array == decoded!.1.array
            }
            if same {
                deltas.append(TensorDelta(name: name, status: .identical, shape: baseShape, layer: layer,
                                          relativeChange: 0, maxAbsChange: 0, cosine: 1))
                continue
            }
            if let layer { firstChangedLayer = min(firstChangedLayer, layer) }
            guard b.isComputable(name), t.isComputable(name) else {
                deltas.append(TensorDelta(name: name, status: .changed, shape: baseShape, layer: layer))
                continue
            }
            let wb: Tensor, wt: Tensor
            do throws(ModelError) {
                if let d = decoded { wb = d.0 } else { wb = try b.tensor(name) }
                if let m = merged[name] { wt = m } else if let d = decoded { wt = d.1 } else { wt = try t.tensor(name) }
            } catch { throw WeightDiffError.model(error) }
            var d = TensorDelta(name: name, status: .changed, shape: baseShape, layer: layer)
            let delta: Tensor
            do { delta = try wt.subtracting(wb) } catch { throw WeightDiffError.tensor("\(error)") }
            let (nb, nt, nd, dot, maxAbs) = norms(wb, wt, delta)
            d.relativeChange = nd / max(nb, 1e-30)
            d.maxAbsChange = maxAbs
            d.cosine = dot / max(nb * nt, 1e-30)
            if let layer {
                var acc = layerNorms[layer] ?? (0, 0, 0)
                acc.delta += nd * nd; acc.base += nb * nb; acc.changed += 1
                layerNorms[layer] = acc
            }
            if baseShape.count == 2 && min(baseShape[0], baseShape[1]) > 1 {
                do {
                    if let f = factors[name], let s = try lowRankSpectrum(f, shape: baseShape) {
                        spectrum(&d, s)
                    } else if baseShape[0] * baseShape[1] <= options.maxSVDElements {
                        spectrum(&d, try delta.svd(vectors: false).s.map(Double.init))
                    }
                } catch { throw WeightDiffError.tensor("\(name): \(error)") }
            }
            if isVocabularyMatrix(name) && baseShape.count == 2 {
                rowShifts += rows(of: delta, matrix: name, options: options, tokenText: tokenText)
            }
            deltas.append(d)
        }
        let layers = layerNorms.keys.sorted().map { l in
            LayerChange(layer: l, relativeChange: (layerNorms[l]!.delta / max(layerNorms[l]!.base, 1e-30)).squareRoot(),
                        changedTensors: layerNorms[l]!.changed)
        }
        let layerCount = (names.compactMap(layerIndex).max() ?? -1) + 1
        // Input embeddings feed block 0: if they changed, no block sees identical inputs.
        let inputNames = ["embed_tokens.weight", "wte.weight", "wpe.weight", "embed_in.weight"]
        if deltas.contains(where: { d in d.status != .identical && inputNames.contains { d.name.hasSuffix($0) } }) {
            firstChangedLayer = 0
        }
        var report = WeightDiffReport(
            schemaVersion: WeightDiffReport.schemaVersion, base: base.path, tuned: (tuned ?? base).path,
            adapter: adapters.isEmpty ? nil : adapters.map(\.path).joined(separator: ", "),
            tensors: deltas, identical: deltas.filter { $0.status == .identical }.count,
            changed: deltas.filter { $0.status != .identical }.count,
            identicalPrefixLayers: min(firstChangedLayer, layerCount), layers: layers,
            rowShifts: rowShifts, anomalies: [])
        report.anomalies = anomalies(report, options: options)
        return report
    }

    static func norms(_ a: Tensor, _ b: Tensor, _ d: Tensor) -> (Double, Double, Double, Double, Double) {
        a.withUnsafeBufferPointer { x in
            b.withUnsafeBufferPointer { y in
                d.withUnsafeBufferPointer { z in
                    var na = 0.0, nb = 0.0, nd = 0.0, dot = 0.0, m = 0.0
                    for i in 0..<x.count {
                        let (u, v, w) = (Double(x[i]), Double(y[i]), Double(z[i]))
                        na += u * u; nb += v * v; nd += w * w; dot += u * v; m = max(m, abs(w))
                    }
                    return (na.squareRoot(), nb.squareRoot(), nd.squareRoot(), dot, m)
                }
            }
        }
    }

    /// The singular values of a LoRA change ΔW = Σ scale·B·A taken from its factors (rank Σr, the
    /// rest exactly 0, as many as a full SVD would list up to 16), or nil when Σr is not below
    /// min(out, in) and the full SVD of the difference is as cheap. A Conv1D weight stores ΔWᵀ,
    /// which has the same singular values.
    static func lowRankSpectrum(_ modules: [LoRAAdapter.Module], shape: [Int]) throws -> [Double]? {
        let (m, n) = (modules[0].b.shape[0], modules[0].a.shape[1])
        let r = modules.reduce(0) { $0 + $1.b.shape[1] }
        guard r < min(m, n) else { return nil }
        var left = [Double](repeating: 0, count: m * r), right = [Double](repeating: 0, count: r * n)
        var offset = 0
        for module in modules {
            let (b, a, k) = (module.b.array, module.a.array, module.b.shape[1])
            for i in 0..<m { for j in 0..<k { left[i * r + offset + j] = Double(module.scale) * Double(b[i * k + j]) } }
            for i in 0..<k { for j in 0..<n { right[(offset + i) * n + j] = Double(a[i * n + j]) } }
            offset += k
        }
        let s = try LowRank.singularValues(left: left, m: m, right: right, n: n, r: r)
        return s + [Double](repeating: 0, count: max(0, min(16, min(shape[0], shape[1])) - s.count))
    }

    static func spectrum(_ d: inout TensorDelta, _ s: [Double]) {
        let energy = s.map { $0 * $0 }
        let total = energy.reduce(0, +)
        d.singularValues = Array(s.prefix(16))
        guard total > 0 else { d.rank = 0; d.effectiveRank = 0; return }
        d.rank = s.filter { $0 > s[0] * 1e-3 }.count
        var h = 0.0
        for e in energy where e > 0 { let p = e / total; h -= p * log(p) }
        d.effectiveRank = exp(h)
        func top(_ k: Int) -> Double { energy.prefix(k).reduce(0, +) / total }
        d.energyTop1 = top(1); d.energyTop4 = top(4); d.energyTop16 = top(16)
    }

    /// Rows of a vocabulary matrix ranked by how far they moved relative to the median row.
    static func rows(of delta: Tensor, matrix: String, options: WeightDiffOptions, tokenText: ((Int) -> String?)?) -> [RowShift] {
        let (n, w) = (delta.shape[0], delta.shape[1])
        let norms: [Double] = delta.withUnsafeBufferPointer { p in
            (0..<n).map { r in var s = 0.0; for j in 0..<w { let v = Double(p[r * w + j]); s += v * v }; return s.squareRoot() }
        }
        let sorted = norms.sorted()
        // Typical movement: the median row, or the mean when most rows did not move at all (then
        // the few that did are exactly the candidates).
        let scale = max(sorted[n / 2], norms.reduce(0, +) / Double(max(n, 1)))
        return norms.indices.sorted { (norms[$0], -$0) > (norms[$1], -$1) }.prefix(options.topRows).filter { norms[$0] > 0 }.map {
            RowShift(matrix: matrix, token: $0, text: tokenText?($0), shift: norms[$0] / max(scale, 1e-30), norm: norms[$0])
        }
    }

    /// weight_anomaly rules (docs/usage.md, "Weight diff"): architecture changes; an edit confined to
    /// one tensor and concentrated in one direction (ROME/MEMIT-style); vocabulary rows that moved
    /// far more than the rest (trigger or target candidates).
    static func anomalies(_ r: WeightDiffReport, options: WeightDiffOptions) -> [WeightAnomaly] {
        var out: [WeightAnomaly] = []
        let structural = r.tensors.filter { [.added, .removed, .reshaped].contains($0.status) }
        if !structural.isEmpty {
            out.append(WeightAnomaly(severity: .high,
                                     title: "\(structural.count) tensor(s) added, removed or reshaped",
                                     tensors: structural.map(\.name), tokens: []))
        }
        let changed = r.tensors.filter { $0.status == .changed }
        let rankOne = changed.filter { ($0.energyTop1 ?? 0) > 0.99 && ($0.rank ?? 99) <= 1 }
        if !changed.isEmpty && !rankOne.isEmpty && changed.count <= 2 {
            out.append(WeightAnomaly(severity: .medium,
                                     title: "A rank-one edit confined to \(rankOne.map(\.name).joined(separator: ", ")) "
                                         + "(a ROME/MEMIT-style model edit)",
                                     tensors: rankOne.map(\.name), tokens: []))
        }
        let outliers = r.rowShifts.filter { $0.shift >= options.rowShiftThreshold }
        if !outliers.isEmpty {
            out.append(WeightAnomaly(severity: .medium,
                                     title: "\(outliers.count) vocabulary row(s) moved at least \(Int(options.rowShiftThreshold))× the "
                                         + "median row: trigger or target candidates",
                                     tensors: Array(Set(outliers.map(\.matrix))).sorted(), tokens: outliers))
        }
        return out
    }
}
