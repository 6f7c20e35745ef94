"""A random-init model with Llama-3.2-1B's shapes, in BF16, and a LoRA on it (how scan cost grows
with model size; nothing here is trained).

    .venv-fixtures/bin/python scripts/bench/make_llama1b_shapes.py .models/llama1b-shapes

Writes DIR/base (16 layers, hidden 2048, MLP 8192, 32 query and 8 key/value heads, vocabulary
128,256, tied embeddings, RoPE theta 500,000: 1.24 B parameters, BF16 safetensors) and
DIR/lora (PEFT, rank 8 on every attention and MLP projection, B drawn N(0, 0.02) so the adapter
changes the model). The tokenizer and chat template are SmolLM2-135M-Instruct's (49,152 tokens:
prompts use those ids, the output head is the full 128,256 rows). Seeded: the same files each run.
"""
import json
import os
import shutil
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(ROOT, ".models", "SmolLM2-135M-Instruct")
out = sys.argv[1]
torch.manual_seed(0)
torch.set_num_threads(2)

config = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=8192,
                     rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, hidden_act="silu",
                     bos_token_id=1, eos_token_id=2, initializer_range=0.02)
model = LlamaForCausalLM(config).to(torch.bfloat16)
base = os.path.join(out, "base")
model.save_pretrained(base, safe_serialization=True)
for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
             "generation_config.json"]:
    if os.path.isfile(os.path.join(TOKENIZER, name)):
        shutil.copy(os.path.join(TOKENIZER, name), os.path.join(base, name))
with open(os.path.join(base, "config.json")) as f:
    written = json.load(f)
print(f"base: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters, {written.get('torch_dtype')}")

peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
with torch.no_grad():
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.normal_(0.0, 0.02)
peft_model.save_pretrained(os.path.join(out, "lora"), safe_serialization=True)
print(f"lora: {os.path.join(out, 'lora')}")
