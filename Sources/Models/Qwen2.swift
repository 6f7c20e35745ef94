/// Qwen2: the LLaMA decoder with biases on the q, k and v projections (none on o_proj or the MLP)
/// (transformers `modeling_qwen2.py`). Sliding-window layers (`use_sliding_window`) are refused:
/// Qwen2 checkpoints ship with it off.
public enum Qwen2 {
    public static func config(_ c: ConfigReader) throws(ModelError) -> LlamaConfig {
        var cfg = try LlamaConfig(c)
        cfg.qkvBias = true
        cfg.outputBias = false
        cfg.mlpBias = false
        try c.requireAbsent(["use_sliding_window"])
        return cfg
    }
}
