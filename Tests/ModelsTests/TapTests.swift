import Foundation
import Testing
import AssayCommon
import Models
import TensorCore

/// A model's named points (`tap`): the forward reports each op it finishes, per layer, in order,
/// and watching changes no number.
@Suite struct TapTests {
    final class Recorder: Tap, @unchecked Sendable {
        var points: [String] = []
        var counts: [String: Int] = [:]
        func reached(_ point: String, layer: Int?, seconds: Double) {
            precondition(seconds >= 0)
            points.append(layer.map { "\(point)@\($0)" } ?? point)
        }
        func count(_ name: String, _ n: Int) { counts[name, default: 0] += n }
    }

    static let block = ["norm", "gemm.qkv", "rope+cache", "attention", "gemm.o", "residual", "norm", "gemm.gate_up", "silu_gate",
                        "gemm.down", "residual"]

    @Test func llamaReportsEveryOpOfEveryLayerAndChangesNoBits() throws {
        let model = try ModelLoader.load(modelFixtures.appendingPathComponent("llama-gqa"))
        let input = { [SequenceInput(tokens: [1, 5, 9, 14], logitPositions: [3]), SequenceInput(tokens: [3, 2], logitPositions: [0, 1])] }
        let unwatched = try model.forward(input())
        let recorder = Recorder()
        model.tap = recorder
        let watched = try model.forward(input())
        model.tap = nil
        #expect(watched.map { $0.withUnsafeBufferPointer(Array.init) } == unwatched.map { $0.withUnsafeBufferPointer(Array.init) })
        let layers = model.layerCount
        let expected = (0..<layers).flatMap { l in Self.block.map { "\($0)@\(l)" } } + ["norm", "gemm.lm_head"]
        #expect(recorder.points == expected)
        #expect(recorder.counts == ["rows.blocks": 6 * layers, "rows.lm_head": 3])
    }

    @Test func aProfilerSumsPointsOverLayersAndADisabledOneRecordsNothing() throws {
        let model = try ModelLoader.load(modelFixtures.appendingPathComponent("llama-gqa"))
        let on = Profiler(enabled: true), off = Profiler(enabled: false)
        #expect(off.tap == nil)
        model.tap = on.tap
        _ = try model.forward([SequenceInput(tokens: [1, 5, 9], logitPositions: [2])])
        let (seconds, counts) = on.snapshot()
        #expect(Set(seconds.keys) == Set(Self.block + ["gemm.lm_head"]))
        #expect(counts["rows.lm_head"] == 1)
        off.reached("norm", layer: 0, seconds: 1)
        off.count("rows", 1)
        #expect(off.snapshot().seconds.isEmpty && off.snapshot().counts.isEmpty)
    }
}
