/// Decoders (tokenizers/src/decoders): each maps the token strings to new strings
/// (`decode_chain`); the results are concatenated at the end.
indirect enum Decoder: Sendable {
    case byteLevel
    case metaspace(replacement: Unicode.Scalar, prependScheme: String)
    case byteFallback
    case fuse
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case replace(Pattern, String)
    case wordPiece(prefix: String, cleanup: Bool)
    case bpe(suffix: String)
    case sequence([Decoder])

    static func load(_ n: Node, depth: Int = 0) throws(TokenizerError) -> Decoder {
        let type = try n.string("type")
        switch type {
        case "ByteLevel": return .byteLevel
        case "Metaspace":
            let rep = try n.string("replacement", default: "▁")
            guard let r = rep.unicodeScalars.first, rep.unicodeScalars.count == 1 else {
                throw try n.require("replacement").fail("expected one character")
            }
            var scheme = try n.string("prepend_scheme", default: "")
            if scheme.isEmpty { scheme = try n.bool("add_prefix_space", default: true) ? "always" : "never" }
            return .metaspace(replacement: r, prependScheme: scheme)
        case "ByteFallback": return .byteFallback
        case "Fuse": return .fuse
        case "Strip":
            let c = try n.string("content")
            guard let s = c.unicodeScalars.first, c.unicodeScalars.count == 1 else {
                throw try n.require("content").fail("expected one character")
            }
            return .strip(content: s, start: try n.int("start", default: 0), stop: try n.int("stop", default: 0))
        case "Replace": return .replace(try Pattern.load(try n.require("pattern")), try n.string("content"))
        case "WordPiece": return .wordPiece(prefix: try n.string("prefix", default: "##"), cleanup: try n.bool("cleanup", default: true))
        case "BPEDecoder": return .bpe(suffix: try n.string("suffix", default: "</w>"))
        case "Sequence":
            try checkSequenceDepth(n, depth, "decoder")
            return .sequence(try n.require("decoders").items().map { (x) throws(TokenizerError) in try Decoder.load(x, depth: depth + 1) })
        default:
            throw TokenizerError.unsupportedComponent(file: n.file, path: n.path + ".type", kind: "decoder", type: type)
        }
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            var bytes: [UInt8] = []
            for t in tokens {
                var tb: [UInt8] = []
                var ok = true
                for c in t.unicodeScalars {
                    guard let b = ByteLevelMap.scalarToByte[c.value] else { ok = false; break }
                    tb.append(b)
                }
                bytes.append(contentsOf: ok ? tb : Array(t.utf8))
            }
            return [String(decoding: bytes, as: UTF8.self)]
        case let .metaspace(rep, scheme):
            return tokens.enumerated().map { i, t in
                String(scalars: t.unicodeScalars.compactMap { c -> Unicode.Scalar? in
                    c == rep ? (i == 0 && scheme != "never" ? nil : " ") : c
                })
            }
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = String(validating: pending, as: UTF8.self) { out.append(s) }
                else { out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count)) }
                pending.removeAll()
            }
            for t in tokens {
                let u = Array(t.utf8)
                if u.count == 6, t.hasPrefix("<0x"), u[5] == UInt8(ascii: ">"),
                   let b = UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16) {
                    pending.append(b)
                } else {
                    flush()
                    out.append(t)
                }
            }
            flush()
            return out
        case .fuse: return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { t in
                let c = Array(t.unicodeScalars)
                var a = 0
                while a < min(start, c.count), c[a] == content { a += 1 }
                var b = c.count
                var k = 0
                while k < stop, b > a, c[b - 1] == content { b -= 1; k += 1 }
                return String(scalars: c[a..<max(a, b)])
            }
        case let .replace(p, content): return tokens.map { p.replaceAll(in: $0, with: content) }
        case let .wordPiece(prefix, cleanup):
            return tokens.enumerated().map { i, t0 in
                var t = t0
                if i != 0 { t = t.hasPrefix(prefix) ? String(t.dropFirst(prefix.count)) : " " + t }
                if cleanup { t = Self.cleanup(t) }
                return t
            }
        case let .bpe(suffix):
            return tokens.enumerated().map { i, t in
                t.replacingAll(suffix, with: i == tokens.count - 1 ? "" : " ")
            }
        case let .sequence(ds):
            var t = tokens
            for d in ds { t = d.decodeChain(t) }
            return t
        }
    }

    /// `decoders::wordpiece::cleanup`.
    static func cleanup(_ s: String) -> String {
        var t = s
        for (a, b) in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                       (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")] {
            t = t.replacingAll(a, with: b)
        }
        return t
    }
}

extension String {
    /// Rust `str::replace`: non-overlapping, left to right, on UTF-8 bytes.
    func replacingAll(_ target: String, with replacement: String) -> String {
        let h = Array(utf8), n = Array(target.utf8)
        guard !n.isEmpty, h.count >= n.count else { return self }
        var out: [UInt8] = []
        var i = 0, changed = false
        while i < h.count {
            if i + n.count <= h.count && h[i] == n[0] && h[i..<(i + n.count)].elementsEqual(n) {
                out.append(contentsOf: replacement.utf8); i += n.count; changed = true
            } else { out.append(h[i]); i += 1 }
        }
        return changed ? String(decoding: out, as: UTF8.self) : self
    }
}

/// Post-processors (tokenizers/src/processors): only the ids matter here.
indirect enum PostProcessor: Sendable {
    /// `single` as a list of items: a special token's ids, or the sequence itself.
    case template(single: [TemplateItem])
    case byteLevel
    case sequence([PostProcessor])

    enum TemplateItem: Sendable { case special([Int]), sequence }

    /// `check(token, id, node)` vets every special id against the vocabulary.
    static func load(_ n: Node, depth: Int = 0,
                     check: (String, Int, Node) throws(TokenizerError) -> Void) throws(TokenizerError) -> PostProcessor {
        let type = try n.string("type")
        func pair(_ key: String) throws(TokenizerError) -> Int {
            let node = try n.require(key)
            let items = try node.items()
            guard items.count == 2 else { throw node.fail("expected [token, id]") }
            let id = try items[1].int()
            try check(try items[0].string(), id, items[1])
            return id
        }
        switch type {
        case "TemplateProcessing":
            var specials: [String: [Int]] = [:]
            if let st = n.child("special_tokens") {
                for (k, v) in try st.members() {
                    let tokens = try v.child("tokens")?.items() ?? []
                    var ids: [Int] = []
                    for (i, x) in try v.require("ids").items().enumerated() {
                        let id = try x.int()
                        try check(i < tokens.count ? try tokens[i].string() : k, id, x)
                        ids.append(id)
                    }
                    specials[k] = ids
                }
            }
            var items: [TemplateItem] = []
            for it in try n.require("single").items() {
                if let sp = it.child("SpecialToken") {
                    let id = try sp.string("id")
                    guard let ids = specials[id] else { throw sp.fail("special token '\(id)' is not in special_tokens") }
                    items.append(.special(ids))
                } else if it.child("Sequence") != nil {
                    items.append(.sequence)
                } else { throw it.fail("expected SpecialToken or Sequence") }
            }
            return .template(single: items)
        case "BertProcessing", "RobertaProcessing":
            return .template(single: [.special([try pair("cls")]), .sequence, .special([try pair("sep")])])
        case "ByteLevel": return .byteLevel
        case "Sequence":
            try checkSequenceDepth(n, depth, "post-processor")
            return .sequence(try n.require("processors").items().map { (x) throws(TokenizerError) in
                try PostProcessor.load(x, depth: depth + 1, check: check)
            })
        default:
            throw TokenizerError.unsupportedComponent(file: n.file, path: n.path + ".type", kind: "post-processor", type: type)
        }
    }

    func process(_ ids: [Int]) -> [Int] {
        switch self {
        case let .template(single):
            var out: [Int] = []
            out.reserveCapacity(ids.count + 4)
            for it in single {
                switch it {
                case let .special(s): out.append(contentsOf: s)
                case .sequence: out.append(contentsOf: ids)
                }
            }
            return out
        case .byteLevel: return ids
        case let .sequence(ps):
            var t = ids
            for p in ps { t = p.process(t) }
            return t
        }
    }
}
