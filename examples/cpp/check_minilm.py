"""Checks what examples/cpp/bert_embed.cpp wrote against Python, on the same
weights and token ids: the hidden states against posemb.nn.BertEmbeddings
and Hugging Face's BertEmbeddings, the rotary q/k and the causal attention
against posemb.nn.RotaryEmbedding (and Hugging Face's apply_rotary_pos_emb),
and the C++ training step against the same step in Python.

    python examples/cpp/check_minilm.py minilm.pt bert_out.pt
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import torch
import torch.jit._pickle

import posemb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_minilm import NAMES, model_dir  # noqa: E402

TOLERANCE = 1e-6
HEADS = 12  # as bert_embed.cpp


def _mean_pool(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1)


def differences(export_path, out_path) -> dict:
    """The largest absolute difference of each C++ output from Python's, and the losses."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings as HFBertEmbeddings
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    data = torch.load(export_path)
    # torch::pickle_save tags the dict with its C++ type (str -> Any): a
    # weights-only load allows that one function, nothing else.
    with torch.serialization.safe_globals([torch.jit._pickle.restore_type_tag]):
        out = torch.load(out_path)
    config = BertConfig.from_pretrained(str(model_dir()))
    weights = {name: data[name] for name in NAMES}
    ids, types, mask = data["input_ids"], data["token_type_ids"], data["attention_mask"]
    diff = {}

    ours = posemb.nn.BertEmbeddings.from_config(config).eval()
    ours.load_state_dict(weights)
    hf = HFBertEmbeddings(config).eval()
    hf.load_state_dict(weights, strict=False)  # HF's position_ids buffer stays its own
    with torch.no_grad():
        hidden = ours(ids, token_type_ids=types)
        diff["hidden vs posemb.nn.BertEmbeddings"] = (out["hidden"] - hidden).abs().max().item()
        diff["hidden vs transformers BertEmbeddings"] = (out["hidden"] - hf(ids, token_type_ids=types)).abs().max().item()

        batch, seq, width = hidden.shape
        head_dim = width // HEADS
        q = hidden.view(batch, seq, HEADS, head_dim)
        k = hidden.roll(1, -1).view(batch, seq, HEADS, head_dim)
        rope = posemb.nn.RotaryEmbedding(head_dim, base=10000.0)
        q_rot, k_rot = rope(q, k)
        diff["q_rot vs posemb.nn.RotaryEmbedding"] = (out["q_rot"] - q_rot).abs().max().item()
        diff["k_rot vs posemb.nn.RotaryEmbedding"] = (out["k_rot"] - k_rot).abs().max().item()
        angles = torch.arange(seq, dtype=torch.float32)[:, None] * rope.inv_freq[None, :]
        emb = torch.cat([angles, angles], -1)[None]  # Llama's (batch, seq, head_dim) cos/sin
        q_hf, k_hf = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin(), unsqueeze_dim=2)
        diff["q_rot vs transformers apply_rotary_pos_emb"] = (out["q_rot"] - q_hf).abs().max().item()
        scores = torch.einsum("bqhd,bkhd->bhqk", q_rot, k_rot) / math.sqrt(head_dim)
        causal = torch.ones(seq, seq, dtype=torch.bool).triu(1)
        attention = scores.masked_fill(causal, float("-inf")).softmax(-1)
        diff["causal attention"] = (out["attention"] - attention).abs().max().item()

    # The same SGD step in Python, from the same head.
    head = torch.nn.Linear(width, 2)
    with torch.no_grad():
        head.weight.copy_(out["head.weight"])
        head.bias.copy_(out["head.bias"])
    sgd = torch.optim.SGD([*ours.parameters(), *head.parameters()], lr=out["lr"])

    def loss_of():
        return torch.nn.functional.cross_entropy(head(_mean_pool(ours(ids, token_type_ids=types), mask)),
                                                 data["labels"])

    loss = loss_of()
    loss_before = loss.item()
    loss.backward()
    sgd.step()
    with torch.no_grad():
        loss_after = loss_of().item()
        diff["loss before"] = abs(out["loss_before"] - loss_before)
        diff["loss after"] = abs(out["loss_after"] - loss_after)
        diff["trained parameters"] = max((out["trained." + name] - p).abs().max().item()
                                         for name, p in ours.named_parameters() if "trained." + name in out)
    # transformers' BertEmbeddings is another fp32 LayerNorm, its sums in
    # another order: each lands about 2 ulp of the largest output from the
    # fp64 value (transformers itself 1.0e-6 at |y| = 7.15 on these weights),
    # so the two may differ by 4 ulp of it. Everything else: 1e-6.
    tolerance = {name: TOLERANCE for name in diff}
    tolerance["hidden vs transformers BertEmbeddings"] = max(
        TOLERANCE, 4 * torch.finfo(torch.float32).eps * out["hidden"].abs().max().item())
    return {"differences": diff, "tolerances": tolerance, "loss_before": out["loss_before"],
            "loss_after": out["loss_after"]}


def main(argv) -> int:
    export_path, out_path = (argv + ["minilm.pt", "bert_out.pt"][len(argv):])[:2]
    result = differences(export_path, out_path)
    within = True
    for name, value in result["differences"].items():
        limit = result["tolerances"][name]
        print(f"max abs difference, {name}: {value:.3g} (at most {limit:.2g})")
        within = within and value <= limit
    print(f"loss before: {result['loss_before']:.6f}, after one C++ SGD step: {result['loss_after']:.6f}")
    ok = within and result["loss_after"] < result["loss_before"]
    print("OK" if ok else "FAILED (a difference above its tolerance, or the loss did not go down)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
