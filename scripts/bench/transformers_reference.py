#!/usr/bin/env python3
"""The `assay bench model` workload through Hugging Face transformers (PyTorch eager, fp32).

Prints one JSON object with the same keys as `assay bench model --json`'s figures. Token ids
follow the same formula as the Swift benchmark, so both run identical batches.
"""
import argparse
import json
import resource
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def ids(seq, length, vocab):
    return [(seq * 7919 + t * 104729 + 12345) % vocab for t in range(length)]


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probes", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    loads = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
        loads.append(time.perf_counter() - t0)
    vocab = model.config.vocab_size
    batch = torch.tensor([ids(i, a.tokens, vocab) for i in range(a.probes)])

    def prefill(all_positions):
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            # logits_to_keep=1 computes the output projection at the last position only.
            model(batch, logits_to_keep=0 if all_positions else 1)
            ts.append(time.perf_counter() - t0)
        return a.probes * a.tokens / statistics.median(ts)

    def decode(b):
        ts = []
        prompts = torch.tensor([ids(1000 + i, 16, vocab) for i in range(b)])
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=a.new_tokens,
                           min_new_tokens=a.new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
            ts.append(time.perf_counter() - t0)
        return b * a.new_tokens / statistics.median(ts)

    out = {"load_seconds": statistics.median(loads), "prefill_last_tok_s": prefill(False),
           "prefill_all_tok_s": prefill(True), "decode_b1_tok_s": decode(1), "decode_b8_tok_s": decode(8),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
