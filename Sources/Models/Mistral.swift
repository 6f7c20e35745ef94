/// Mistral: the LLaMA decoder with a sliding attention window (transformers `modeling_mistral.py`:
/// a query at position i sees keys j with i − window < j ≤ i). Weight names are LLaMA's.
public enum Mistral {
    public static func config(_ c: ConfigReader) throws(ModelError) -> LlamaConfig {
        var cfg = try LlamaConfig(c)
        cfg.slidingWindow = try c.optionalInt("sliding_window", 1...(1 << 24))
        cfg.maxPositionEmbeddings = try c.int("max_position_embeddings", Limits.positions, default: 4096 * 32)
        return cfg
    }
}
