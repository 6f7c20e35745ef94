"""Writes a BF16 copy of a safetensors model directory (benchmarks of weights kept as stored).

    .venv-fixtures/bin/python scripts/bench/make_bf16.py .models/SmolLM2-135M-Instruct .models/SmolLM2-135M-Instruct-bf16

Every floating-point tensor is rounded to BF16 by torch (round to nearest even); config and
tokenizer files are copied, with config.json's torch_dtype set to bfloat16.
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in os.listdir(src):
    path = os.path.join(src, name)
    if name.endswith(".safetensors"):
        tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in load_file(path).items()}
        save_file(tensors, os.path.join(dst, name), metadata={"format": "pt"})
    elif name == "config.json":
        with open(path) as f:
            config = json.load(f)
        config["torch_dtype"] = "bfloat16"
        with open(os.path.join(dst, name), "w") as f:
            json.dump(config, f, indent=2)
    elif os.path.isfile(path):
        shutil.copy(path, os.path.join(dst, name))
