#!/usr/bin/env python3
"""Hugging Face tokenizers (Rust) throughput on the corpus `assay bench tokenizer` uses.

One thread: RAYON_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false are set before the import, and
every line is encoded with `Tokenizer.encode` (no batch parallelism). Prints tokens/s, the median
over repeats, per line and for the whole text as one string, as the Swift benchmark does.

    .build/release/assay bench tokenizer --write-corpus /tmp/assay-corpus.txt
    .venv-fixtures/bin/python scripts/bench/tokenizers_reference.py --corpus /tmp/assay-corpus.txt
(scripts/bench/compare_tokenizers.sh runs both.)
"""
import argparse, json, os, statistics, time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", default="Tests/Fixtures/tokenizers/smollm2/tokenizer.json")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    text = open(a.corpus, encoding="utf-8").read()
    lines = [l for l in text.split("\n") if l]
    t0 = time.perf_counter()
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_padding()
    tok.no_truncation()
    load = time.perf_counter() - t0
    per_line, whole = [], []
    tokens = 0
    for r in range(a.repeats + 1):
        s = time.perf_counter()
        n = 0
        for l in lines:
            n += len(tok.encode(l, add_special_tokens=False).ids)
        m = time.perf_counter()
        w = len(tok.encode(text, add_special_tokens=False).ids)
        e = time.perf_counter()
        tokens = n
        if r > 0:  # first round is warm-up, as in the Swift benchmark
            per_line.append(n / (m - s))
            whole.append(w / (e - m))
    res = {"tokenizer": a.tokenizer, "corpusBytes": len(text.encode()), "lines": len(lines), "tokens": tokens,
           "perLineTokensPerSecond": statistics.median(per_line), "wholeTextTokensPerSecond": statistics.median(whole),
           "loadSeconds": load, "repeats": a.repeats}
    if a.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(f"HF tokenizers (Rust, 1 thread): {res['corpusBytes']} bytes, {len(lines)} lines, {tokens} tokens\n"
              f"load: {load:.3f} s\nencode per line:   {res['perLineTokensPerSecond']:.0f} tokens/s (median of {a.repeats})\n"
              f"encode whole text: {res['wholeTextTokensPerSecond']:.0f} tokens/s (median of {a.repeats})")


if __name__ == "__main__":
    main()
