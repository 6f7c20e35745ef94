import Foundation
import TensorCore

public extension CausalLanguageModel {
    /// Runs `prefix` into a fresh cache; fork the result (`cache.fork()`) for every continuation
    /// that shares it, so the prefix is computed once.
    func prefill(_ prefix: [Int]) throws -> KVCache {
        let cache = makeCache()
        _ = try forward([SequenceInput(tokens: prefix, cache: cache, logitPositions: [])])
        return cache
    }

    /// Log-probabilities (positions, vocab) of each sequence's next tokens at the given positions.
    func logProbabilities(_ batch: [SequenceInput]) throws -> [Tensor] {
        try forward(batch).map { $0.logSoftmax() }
    }

    /// Batched greedy decoding. Each prompt continues its own cache (or a fresh one), stops at a
    /// stop token (which is kept, as transformers' `generate` keeps EOS) or after
    /// `maxNewTokens`. Sequences that finish drop out of the packed batch.
    func greedy(prompts: [[Int]], maxNewTokens: Int, stopTokens: Set<Int>, caches: [KVCache]? = nil) throws -> [[Int]] {
        precondition(caches == nil || caches!.count == prompts.count)
        guard maxNewTokens > 0 else { return prompts.map { _ in [] } }
        let cs = caches ?? prompts.map { _ in makeCache() }
        var outputs = prompts.map { _ in [Int]() }
        if let empty = prompts.firstIndex(where: \.isEmpty) { throw ModelError.invalidInput("prompt \(empty) is empty") }
        var active = Array(prompts.indices)
        var next: [Int: [Int]] = [:]
        for i in active { next[i] = prompts[i] }
        while !active.isEmpty {
            let batch = active.map { i -> SequenceInput in
                let toks = next[i]!
                return SequenceInput(tokens: toks, cache: cs[i], logitPositions: [toks.count - 1])
            }
            let logits = try forward(batch)
            var still: [Int] = []
            for (j, i) in active.enumerated() {
                let tok = logits[j].argmaxLastAxis()[0]
                outputs[i].append(tok)
                if !stopTokens.contains(tok) && outputs[i].count < maxNewTokens {
                    still.append(i)
                    next[i] = [tok]
                }
            }
            active = still
        }
        return outputs
    }
}
