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

    /// Greedy decoding, the one loop every caller uses. Each sequence continues its cache from
    /// `prompts[i]` (the whole prompt into a fresh cache, or the next token into a prefilled
    /// one), one token per forward, choosing the argmax of the logits as transformers' greedy
    /// `generate` does (ties: the lowest id). It stops after `maxNewTokens` tokens or at a stop
    /// token, which is kept, and drops out of the packed batch. `step` sees every step's (1, V)
    /// logits rows, `rows[k]` belonging to sequence `active[k]`, before the next forward.
    func greedyDecode(prompts: [[Int]], caches: [KVCache], maxNewTokens: Int, stopTokens: Set<Int>,
                      step: ((_ active: [Int], _ rows: [Tensor]) -> Void)? = nil) throws -> [[Int]] {
        precondition(caches.count == prompts.count)
        guard maxNewTokens > 0 else { return prompts.map { _ in [] } }
        if let empty = prompts.firstIndex(where: \.isEmpty) { throw ModelError.invalidInput("prompt \(empty) is empty") }
        var outputs = prompts.map { _ in [Int]() }
        var active = Array(prompts.indices)
        var next = prompts
        while !active.isEmpty {
            let logits = try forward(active.map {
                SequenceInput(tokens: next[$0], cache: caches[$0], logitPositions: [next[$0].count - 1])
            })
            step?(active, logits)
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

    /// Greedy decoding that keeps what each step chose from: from every cache and the token that
    /// comes next, `steps` tokens per sequence (no stop token). Returns, per sequence, the tokens
    /// chosen and the (1, V) log-probability rows they were chosen from (row i is the
    /// distribution after the first i tokens fed). The scan's continuations and target
    /// inversion's second round decode this way.
    func greedyLogProbabilities(caches: [KVCache], next first: [Int], steps: Int) throws -> (tokens: [[Int]], rows: [[Tensor]]) {
        var rows = first.map { _ in [Tensor]() }
        let tokens = try greedyDecode(prompts: first.map { [$0] }, caches: caches, maxNewTokens: steps, stopTokens: []) { active, logits in
            var lps = [Tensor?](repeating: nil, count: logits.count)
            // Each row's softmax is independent: split over the cores.
            lps.withUnsafeMutableBufferPointer { l in
                parallelRows(logits.count, cost: self.vocabularySize * 8, ways: elementwiseWays) { range in
                    for j in range { l[j] = logits[j].logSoftmax() }
                }
            }
            for (j, i) in active.enumerated() { rows[i].append(lps[j]!) }
        }
        return (tokens, rows)
    }

    /// Batched greedy decoding of whole prompts (`greedyDecode`), each in its own cache (or a
    /// fresh one).
    func greedy(prompts: [[Int]], maxNewTokens: Int, stopTokens: Set<Int>, caches: [KVCache]? = nil) throws -> [[Int]] {
        precondition(caches == nil || caches!.count == prompts.count)
        return try greedyDecode(prompts: prompts, caches: caches ?? prompts.map { _ in makeCache() }, maxNewTokens: maxNewTokens,
                                stopTokens: stopTokens)
    }
}
