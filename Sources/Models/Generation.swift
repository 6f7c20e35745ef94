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

    /// Greedy decoding that keeps what each step chose from: from every cache and the token that
    /// comes next, `steps` forwards of one token per sequence, each choosing its argmax. Returns,
    /// per sequence, the `steps` tokens chosen and the (1, V) log-probability rows they were chosen
    /// from (row i is the distribution after the first i tokens fed). The scan's continuations
    /// and target inversion's second round both decode this way.
    func greedyLogProbabilities(caches: [KVCache], next first: [Int], steps: Int) throws -> (tokens: [[Int]], rows: [[Tensor]]) {
        precondition(caches.count == first.count)
        var tokens = first.map { _ in [Int]() }, rows = first.map { _ in [Tensor]() }
        var next = first
        for _ in 0..<max(steps, 0) {
            let logits = try forward(next.indices.map { SequenceInput(tokens: [next[$0]], cache: caches[$0], logitPositions: [0]) })
            var lps = [Tensor?](repeating: nil, count: logits.count), picked = [Int](repeating: 0, count: logits.count)
            // Each row's softmax and argmax are independent: split over the cores.
            lps.withUnsafeMutableBufferPointer { l in
                picked.withUnsafeMutableBufferPointer { p in
                    parallelRows(logits.count, cost: vocabularySize * 8, ways: elementwiseWays) { range in
                        for j in range {
                            let lp = logits[j].logSoftmax()
                            l[j] = lp
                            p[j] = lp.argmaxLastAxis()[0]
                        }
                    }
                }
            }
            for j in logits.indices {
                rows[j].append(lps[j]!)
                tokens[j].append(picked[j])
            }
            next = picked
        }
        return (tokens, rows)
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
