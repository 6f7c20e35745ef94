import Foundation
import Testing
import Tokenizers

let tokFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

struct FallbackGolden: Decodable { let text: String; let ids: [Int]; let decoded: String; let decoded_skip: String }
struct FallbackChatGolden: Decodable { struct M: Decodable { let role: String; let content: String }; let messages: [M]; let gen: Bool; let text: String }

@Suite struct ByteLevelParity {
    @Test(arguments: [("smollm2", "../../.models/SmolLM2-135M-Instruct"), ("scan-fixture", "scan/base")])
    func encodeDecodeAndChat(_ name: String, _ dir: String) throws {
        let url = tokFixtures.appendingPathComponent(dir)
        guard FileManager.default.fileExists(atPath: url.appendingPathComponent("tokenizer.json").path) else { return }
        let tok = try Tokenizer.load(directory: url)
        let lines = try String(contentsOf: tokFixtures.appendingPathComponent("tokenizers/\(name).jsonl"), encoding: .utf8).split(separator: "\n")
        var bad = 0
        for l in lines {
            let g = try JSONDecoder().decode(FallbackGolden.self, from: Data(l.utf8))
            let ids = tok.encode(g.text)
            if ids != g.ids { bad += 1; if bad < 4 { Issue.record("\(name): \(g.text.debugDescription): \(ids) != \(g.ids)") } }
            #expect(tok.decode(g.ids) == g.decoded)
            #expect(tok.decode(g.ids, skipSpecialTokens: true) == g.decoded_skip)
        }
        #expect(bad == 0, "\(bad) of \(lines.count) strings differ")
        let chats = try JSONDecoder().decode([FallbackChatGolden].self, from: Data(contentsOf: tokFixtures.appendingPathComponent("tokenizers/\(name)-chat.json")))
        for c in chats {
            #expect(try tok.applyChatTemplate(c.messages.map { ChatMessage(role: $0.role, content: $0.content) }, addGenerationPrompt: c.gen) == c.text)
        }
    }
}
