import Foundation
import Testing
import Yams

/// The shipped Kubernetes manifests parse and wire the shard variables `assay sweep` reads.
@Suite struct DeployTests {
    static let deploy = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("deploy")

    /// An Indexed Job manifest's container and its env, after checking JOB_COMPLETIONS = spec.completions.
    func indexedJob(_ file: String) throws -> (container: [String: Any], env: [[String: Any]]) {
        let text = try String(contentsOf: Self.deploy.appendingPathComponent(file), encoding: .utf8)
        let job = try #require(try Yams.load(yaml: text) as? [String: Any])
        #expect(job["kind"] as? String == "Job")
        let spec = try #require(job["spec"] as? [String: Any])
        #expect(spec["completionMode"] as? String == "Indexed")
        let completions = try #require(spec["completions"] as? Int)
        let pod = try #require((spec["template"] as? [String: Any])?["spec"] as? [String: Any])
        let container = try #require((pod["containers"] as? [[String: Any]])?.first)
        let env = try #require(container["env"] as? [[String: Any]])
        #expect(env.first { $0["name"] as? String == "JOB_COMPLETIONS" }?["value"] as? String == String(completions))
        return (container, env)
    }

    @Test func indexedJobSetsCompletionsAndRunID() throws {
        let (container, env) = try indexedJob("kubernetes/sweep-job.yaml")
        #expect(env.contains { $0["name"] as? String == "ASSAY_RUN_ID" })
        let args = (container["args"] as? [String])?.joined() ?? ""
        #expect(args.contains("assay sweep /inventory/inventory.yaml") && args.contains("$(JOB_COMPLETION_INDEX)"))
        let merge = try #require(try Yams.load(yaml: String(contentsOf: Self.deploy.appendingPathComponent("kubernetes/merge-job.yaml"), encoding: .utf8)) as? [String: Any])
        #expect(merge["kind"] as? String == "Job")
    }

    @Test func postgresJobTakesTheHistoryFromASecretAndMergesNothing() throws {
        let (container, env) = try indexedJob("kubernetes/sweep-job-postgres.yaml")
        for name in ["ASSAY_DB", "PGPASSWORD"] {
            let ref = (env.first { $0["name"] as? String == name }?["valueFrom"] as? [String: Any])?["secretKeyRef"] as? [String: Any]
            #expect(ref?["name"] as? String == "assay-history", "\(name) comes from the secret")
        }
        let args = (container["args"] as? [String])?.joined() ?? ""
        #expect(args.contains("assay sweep /inventory/inventory.yaml") && !args.contains("--db"), "the history comes from $ASSAY_DB")
    }
}
