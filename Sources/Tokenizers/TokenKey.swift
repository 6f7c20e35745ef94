/// A dictionary key comparing strings by their exact UTF-8 bytes.
///
/// Swift `String` equality and hashing follow canonical equivalence ("é" == "e\u{301}"), but a
/// vocabulary may hold both forms as different tokens, and `tokenizers` compares bytes.
struct TokenKey: Hashable, Sendable {
    let s: String
    init(_ s: String) { self.s = s }
    static func == (a: TokenKey, b: TokenKey) -> Bool {
        a.s.utf8.count == b.s.utf8.count && a.s.utf8.elementsEqual(b.s.utf8)
    }
    func hash(into h: inout Hasher) {
        var copy = s
        copy.withUTF8 { h.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}
