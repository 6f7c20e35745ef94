import Foundation
import Testing
import TensorCore

/// Golden values from scripts/fixtures/make_foundation_fixtures.py (NumPy/SciPy in float64).
struct Goldens: Decodable {
    struct T: Decodable {
        let shape: [Int]
        let data: [Float]
        var tensor: Tensor { Tensor(shape: shape, data: data) }
    }
    struct Case: Decodable {
        let inputs: [String: T]
        let expected: [String: T]
        let params: [String: Double]?
        let ints: [String: [Int]]?
    }
    let cases: [String: Case]

    static let shared: Goldens = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tensorcore/goldens.json")
        return try! JSONDecoder().decode(Goldens.self, from: Data(contentsOf: url))
    }()

    static func c(_ name: String) -> Case {
        guard let c = shared.cases[name] else { fatalError("no golden case \(name)") }
        return c
    }
}

/// Max |a − b| / (1 + |b|): absolute near zero, relative for large values.
func assertClose(_ got: Tensor, _ want: Goldens.T, tol: Float = 2e-5, _ what: String = "",
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.shape == want.shape, "\(what) shape", sourceLocation: sourceLocation)
    guard got.shape == want.shape else { return }
    var worst: Float = 0, at = 0
    for (i, (a, b)) in zip(got.array, want.data).enumerated() {
        let e = abs(a - b) / (1 + abs(b))
        if !(e <= worst) { worst = e; at = i }
    }
    #expect(worst <= tol, "\(what): max scaled error \(worst) at \(at)", sourceLocation: sourceLocation)
}

@Suite struct MatmulTests {
    @Test func plain() throws {
        let c = Goldens.c("matmul")
        assertClose(try c.inputs["a"]!.tensor.matmul(c.inputs["b"]!.tensor), c.expected["out"]!)
    }

    @Test func transposedOperandsAreViews() throws {
        let c = Goldens.c("matmul_transposed_b")
        let bt = c.inputs["bt"]!.tensor
        let view = bt.transposed
        #expect(view.storage === bt.storage, "transpose must not copy")
        #expect(!view.isContiguous)
        assertClose(try c.inputs["a"]!.tensor.matmul(view), c.expected["out"]!)
        let ca = Goldens.c("matmul_transposed_a")
        assertClose(try ca.inputs["at"]!.tensor.transposed.matmul(ca.inputs["b"]!.tensor), ca.expected["out"]!)
    }

    @Test func singleRowUsesGemvPaths() throws {
        let c = Goldens.c("matmul_row")
        assertClose(try c.inputs["a"]!.tensor.matmul(c.inputs["b"]!.tensor), c.expected["out"]!)
        let ct = Goldens.c("matmul_row_transposed")
        assertClose(try ct.inputs["a"]!.tensor.matmul(ct.inputs["bt"]!.tensor.transposed), ct.expected["out"]!)
        let cc = Goldens.c("matmul_column")
        assertClose(try cc.inputs["a"]!.tensor.matmul(cc.inputs["b"]!.tensor), cc.expected["out"]!)
    }

    @Test func batched() throws {
        let c = Goldens.c("matmul_batched")
        assertClose(try c.inputs["a"]!.tensor.matmul(c.inputs["b"]!.tensor), c.expected["out"]!)
        let s = Goldens.c("matmul_batched_shared")
        assertClose(try s.inputs["a"]!.tensor.matmul(s.inputs["b"]!.tensor), s.expected["out"]!)
    }

    @Test func linear() throws {
        let c = Goldens.c("linear")
        let x = c.inputs["x"]!.tensor, w = c.inputs["w"]!.tensor, b = c.inputs["b"]!.tensor
        assertClose(try x.linear(weight: w, bias: b), c.expected["out"]!)
        assertClose(try x.linear(weight: w), c.expected["out_nobias"]!)
        let r = Goldens.c("linear_row")
        assertClose(try r.inputs["x"]!.tensor.linear(weight: w, bias: b), r.expected["out"]!)
    }

    @Test func shapeMismatchThrows() {
        #expect(throws: TensorError.self) { try Tensor(zeros: [2, 3]).matmul(Tensor(zeros: [4, 2])) }
        #expect(throws: TensorError.self) { try Tensor(zeros: [2, 3]).linear(weight: Tensor(zeros: [4, 2])) }
    }
}

@Suite struct ElementwiseTests {
    @Test func softmaxFamilyIsStable() {
        let c = Goldens.c("softmax")
        let x = c.inputs["x"]!.tensor
        assertClose(x.softmax(), c.expected["softmax"]!)
        assertClose(x.logSoftmax(), c.expected["log_softmax"]!, tol: 1e-5)
        assertClose(x.logSumExp(), c.expected["logsumexp"]!, tol: 1e-6)
    }

    @Test func activations() {
        let c = Goldens.c("activations")
        let x = c.inputs["x"]!.tensor
        assertClose(x.gelu(), c.expected["gelu"]!, tol: 1e-6)
        assertClose(x.geluTanh(), c.expected["gelu_tanh"]!, tol: 1e-6)
        assertClose(x.silu(), c.expected["silu"]!, tol: 1e-6)
        let gate = try! Tensor.siluGate(x, Tensor(shape: x.shape, repeating: 2))
        assertClose(gate.scaled(by: 0.5), c.expected["silu"]!, tol: 1e-6, "siluGate")
    }

    @Test func norms() throws {
        let ln = Goldens.c("layer_norm")
        assertClose(try ln.inputs["x"]!.tensor.layerNorm(weight: ln.inputs["g"]!.tensor, bias: ln.inputs["b"]!.tensor,
                                                          eps: Float(ln.params!["eps"]!)), ln.expected["out"]!)
        let rms = Goldens.c("rms_norm")
        assertClose(try rms.inputs["x"]!.tensor.rmsNorm(weight: rms.inputs["g"]!.tensor, eps: Float(rms.params!["eps"]!)),
                    rms.expected["out"]!)
    }

    @Test func broadcastAndInPlace() throws {
        let a = Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])
        let v = Tensor(shape: [3], data: [10, 20, 30])
        #expect(try a.adding(v).array == [11, 22, 33, 14, 25, 36])
        #expect(try a.multiplying(a).array == [1, 4, 9, 16, 25, 36])
        var b = a
        try b.add(a)
        #expect(b.array == [2, 4, 6, 8, 10, 12])
        #expect(a.array == [1, 2, 3, 4, 5, 6], "value semantics: the copy changed, the original did not")
        #expect(throws: TensorError.self) { try a.adding(Tensor(zeros: [2])) }
    }
}

@Suite struct ViewTests {
    @Test func viewsShareStorageAndCopyOnWrite() {
        let t = Tensor(shape: [3, 4], data: (0..<12).map(Float.init))
        let row = t.row(1)
        #expect(row.storage === t.storage)
        #expect(row.array == [4, 5, 6, 7])
        let col = t.slice(axis: 1, 1..<3)
        #expect(col.array == [1, 2, 5, 6, 9, 10])
        var p = t.permuted([1, 0])
        #expect(p.array == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
        p[0, 0] = 100
        #expect(t[0, 0] == 0, "writing through a view copies first")
        #expect(p[0, 0] == 100)
        #expect(t.reshaped([2, -1]).shape == [2, 6])
        #expect(t.gatherRows([2, 0]).array == [8, 9, 10, 11, 0, 1, 2, 3])
        #expect(Tensor.concatenate([t.slice(axis: 0, 0..<1), t.slice(axis: 0, 2..<3)], axis: 0).array == [0, 1, 2, 3, 8, 9, 10, 11])
        #expect(t.argmaxLastAxis() == [3, 3, 3])
    }
}

@Suite struct RotaryAndAttentionTests {
    func positions(_ c: Goldens.Case, _ t: Tensor) -> [[Int]] {
        let flat = c.ints!["positions"]!
        return (0..<t.shape[0]).map { Array(flat[($0 * t.shape[1])..<(($0 + 1) * t.shape[1])]) }
    }

    @Test(arguments: ["rope", "rope_partial"])
    func rotary(_ name: String) throws {
        let c = Goldens.c(name)
        var x = c.inputs["x"]!.tensor
        let rope = RotaryEmbedding(headDim: x.shape[3], rotaryDim: Int(c.params!["rotary_dim"]!), base: Float(c.params!["base"]!))
        try rope.apply(&x, positions: positions(c, x))
        // Position 2047 · inv_freq is rounded to Float32 before cos/sin, as transformers does.
        assertClose(x, c.expected["out"]!, tol: 2e-5)
    }

    @Test(arguments: ["attention_causal_gqa", "attention_bidirectional", "attention_decode", "attention_left_pad_queries"])
    func attention(_ name: String) throws {
        let c = Goldens.c(name)
        let v = c.ints!["valid"]!
        let mask = AttentionMask(validKeys: stride(from: 0, to: v.count, by: 2).map { v[$0]..<v[$0 + 1] },
                                 queryOffset: c.ints!["offset"]![0], causal: c.ints!["causal"]![0] == 1)
        let out = try scaledDotProductAttention(q: c.inputs["q"]!.tensor, k: c.inputs["k"]!.tensor, v: c.inputs["v"]!.tensor, mask: mask)
        assertClose(out, c.expected["out"]!)
    }

    @Test func attentionRejectsBadShapes() {
        #expect(throws: TensorError.self) {
            try scaledDotProductAttention(q: Tensor(zeros: [1, 2, 3, 4]), k: Tensor(zeros: [1, 2, 2, 4]),
                                          v: Tensor(zeros: [1, 2, 2, 4]), mask: AttentionMask(validKeys: [0..<2]))
        }
    }
}

@Suite struct SVDTests {
    @Test func singularValuesAndReconstruction() throws {
        let c = Goldens.c("svd")
        let m = c.inputs["m"]!.tensor
        let full = try m.svd()
        assertClose(Tensor(shape: [full.s.count], data: full.s), c.expected["s"]!, tol: 1e-5)
        let valuesOnly = try m.svd(vectors: false)
        #expect(valuesOnly.u == nil)
        assertClose(Tensor(shape: [valuesOnly.s.count], data: valuesOnly.s), c.expected["s"]!, tol: 1e-5)
        // U · diag(S) · Vᵀ reproduces the matrix.
        var us = full.u!
        for i in 0..<us.shape[0] { for j in 0..<us.shape[1] { us[i, j] *= full.s[j] } }
        assertClose(try us.matmul(full.vt!), Goldens.T(shape: m.shape, data: m.array), tol: 1e-5, "reconstruction")
        let low = try c.inputs["low_rank"]!.tensor.svd(vectors: false)
        assertClose(Tensor(shape: [low.s.count], data: low.s), c.expected["s_low_rank"]!, tol: 1e-5)
        #expect(low.s[2] < 1e-5 * low.s[0], "a rank-2 matrix has two non-zero singular values")
    }
}
