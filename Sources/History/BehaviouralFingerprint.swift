import Foundation

/// What an approved model did on the entry's probes: per probe, its greedy continuation of K
/// tokens and, at each of those K response positions, the top-k log-probabilities (teacher
/// forced along that continuation). Enough to tell later whether a deployed model still behaves
/// like what was approved, without the base.
public struct BehaviouralFingerprint: Codable, Sendable, Equatable {
    public struct Position: Codable, Sendable, Equatable {
        public var ids: [Int]
        public var logProbs: [Float]
        public init(ids: [Int], logProbs: [Float]) { self.ids = ids; self.logProbs = logProbs }
    }
    public struct ProbePrint: Codable, Sendable, Equatable {
        public var id: String
        public var category: String
        public var continuation: [Int]
        public var positions: [Position]
        public init(id: String, category: String, continuation: [Int], positions: [Position]) {
            self.id = id; self.category = category; self.continuation = continuation; self.positions = positions
        }
    }
    public var responseTokens: Int
    public var topK: Int
    /// Suite name → sha256 the fingerprint was taken on.
    public var suites: [String: String]
    public var probes: [ProbePrint]

    public init(responseTokens: Int, topK: Int, suites: [String: String], probes: [ProbePrint]) {
        self.responseTokens = responseTokens; self.topK = topK; self.suites = suites; self.probes = probes
    }

    enum CodingKeys: String, CodingKey { case responseTokens = "response_tokens", topK = "top_k", suites, probes }
}
