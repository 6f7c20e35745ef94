import Foundation
import Testing
import Models
import TensorCore
@testable import Scan

/// The scan engine reuses rows it has already computed: a model's rows along another
/// continuation that starts with its own continuation's first L tokens are its own rows 0…L plus
/// one forward from the decode cache cut back after those L tokens. These tests check that the
/// reuse gives the bits a full teacher-forced pass over the whole continuation gives.
@Suite struct EngineTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/scan")

    /// Token ids stand in for a chat template: the test drives the engine's internals directly.
    struct IdentityEncoder: ChatEncoder {
        func encode(system: String?, user: String) throws -> [Int] { user.split(separator: " ").map { Int($0)! } }
        func decode(_ ids: [Int]) -> String { ids.map(String.init).joined(separator: " ") }
    }

    /// The reference: rows 1…K−1 from one forward of the continuation's first K−1 tokens on the
    /// prompt cache, after the prompt's last row.
    static func fullPass(_ model: any CausalLanguageModel, prompt: KVCache, first: Tensor, continuation: [Int]) throws -> Tensor {
        let k = continuation.count
        let rest = try model.forward([SequenceInput(tokens: Array(continuation.prefix(k - 1)), cache: prompt.fork(),
                                                    logitPositions: Array(0..<(k - 1)))])
        return Tensor.concatenate([first, rest[0].logSoftmax()], axis: 0)
    }

    @Test func crossRowsReuseTheCommonPrefixBitForBit() throws {
        let base = try ModelLoader.load(Self.fixtures.appendingPathComponent("base"))
        let tuned = try ModelLoader.load(Self.fixtures.appendingPathComponent("trigger-token"))
        var options = ScanOptions()
        options.responseTokens = 6
        let engine = ScanEngine(base: base, tuned: tuned, encoder: IdentityEncoder(), options: options)
        let v = base.vocabularySize
        let prompts: [[Int]] = [[1, 5, 9, 14, 3], [2, 7, 7, 30, 11, 4, 8], [3, 12]]
        let caches = prompts.map { _ in base.makeCache() }
        let first = try base.forward(prompts.enumerated().map {
            SequenceInput(tokens: $1, cache: caches[$0], logitPositions: [$1.count - 1])
        })
        let own = try engine.run(model: base, prompts: caches, first: first)
        let k = options.responseTokens
        // For every split point L = 0…K−1: the first L tokens the model's own, then another token,
        // then tokens of no relation to either (L = K−1 differs only where no row depends on it).
        for l in 0..<k {
            let along = own.continuations.map { mine -> [Int] in
                Array(mine.prefix(l)) + [(mine[l] + 1) % v] + (0..<(k - l - 1)).map { (7 * $0 + 3) % v }
            }
            let reused = try engine.score(own: own, along: along, model: base)
            for j in prompts.indices {
                let full = try Self.fullPass(base, prompt: own.promptCaches[j], first: own.firstRows[j], continuation: along[j])
                #expect(reused[j].shape == [k, v])
                #expect(reused[j].array == full.array, "prompt \(j), common prefix \(l)")
            }
        }
        // A model scored along its own continuation is its own rows, unchanged.
        let same = try engine.score(own: own, along: own.continuations, model: base)
        for j in prompts.indices { #expect(same[j].array == own.rows[j].array) }
    }
}
