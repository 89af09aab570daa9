"""posemb.hf.patch on Llama 4 (issue 14): its complex-number rotary
(freqs_cis and its own apply_rotary_emb, interleaved pairs) on the layers
with rope only (iRoPE: no_rope_layers skip it). A tiny seeded random model
with llama3 scaling, MoE and chunked attention is compared with the
unpatched one: logits, every gradient, greedy generation with the KV cache."""
from __future__ import annotations

import copy
import os

import pytest
import torch

import posemb
import posemb.hf

from conftest import Counter, assert_same_gradients

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from transformers.models.llama4 import modeling_llama4  # noqa: E402


def build(seed=0):
    torch.manual_seed(seed)
    config = transformers.Llama4TextConfig(
        vocab_size=80, hidden_size=64, intermediate_size=96, intermediate_size_mlp=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        num_local_experts=2, num_experts_per_tok=1, interleave_moe_layer_step=2, no_rope_layer_interval=2,
        attention_chunk_size=16, initializer_range=0.25, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    return transformers.Llama4ForCausalLM(config).eval()


def rope_layers(model):
    return sum(bool(flag) for flag in model.config.no_rope_layers)


def test_logits_gradients_and_only_the_rope_layers_fused(monkeypatch):
    model = build()
    assert 0 < rope_layers(model) < model.config.num_hidden_layers  # some layers without rope
    ours = copy.deepcopy(model)
    replaced = posemb.hf.patch(ours)
    assert list(replaced) == ["model.rotary_emb"]
    assert type(replaced["model.rotary_emb"]).__name__ in posemb.hf.TESTED_ROTARY
    ids = torch.randint(3, 80, (2, 40), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(40).expand(2, 40)
    ref = model(ids, position_ids=positions).logits
    stretched = model(ids, position_ids=positions * 3).logits
    assert (stretched - ref).abs().max() > 1e-2 * ref.abs().max()  # positions matter to this model

    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    eager = Counter(monkeypatch, torch, "view_as_complex")  # the eager apply_rotary_emb's first step
    out = ours(ids, position_ids=positions).logits
    assert kernel.calls == 1 + rope_layers(model) and eager.calls == 0
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())

    assert_same_gradients(model, ref, ours, out)


def test_freqs_cis_is_llama4s():
    model = build()
    hf = copy.deepcopy(model.model.rotary_emb)
    posemb.hf.patch(model)
    x = torch.randn(1)
    for length in (10, 300):
        positions = torch.arange(length).expand(2, length)
        got, want = model.model.rotary_emb(x, positions), hf(x, positions)
        assert type(got) is torch.Tensor and got.dtype == want.dtype == torch.complex64 and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6 + length * 2.0**-24 * 4)


def test_greedy_generation_with_a_kv_cache(monkeypatch):
    model = build()
    ours = copy.deepcopy(model)
    posemb.hf.patch(ours)
    ids = torch.randint(3, 80, (2, 7), generator=torch.Generator().manual_seed(4))
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    ref = model.generate(ids, **kw)
    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    assert torch.equal(ours.generate(ids, **kw), ref)
    assert kernel.calls == 8 * (1 + rope_layers(model))


def test_other_freqs_cis_run_llama4s_code():
    """A freqs_cis posemb did not make (or one changed since) takes the model's own path."""
    model = build()
    posemb.hf.patch(model)
    apply = modeling_llama4.apply_rotary_emb
    assert hasattr(apply, "posemb_original")
    q, k = torch.randn(1, 5, 4, 16), torch.randn(1, 5, 2, 16)
    freqs_cis = model.model.rotary_emb(torch.randn(1), torch.arange(5)[None])
    fused = apply(q, k, freqs_cis)
    plain = freqs_cis.clone()  # a copy carries no mark
    torch.testing.assert_close(apply(q, k, plain), fused, rtol=0, atol=1e-5)
    freqs_cis.mul_(2)  # written in place: the mark no longer describes it
    torch.testing.assert_close(apply(q, k, freqs_cis), apply.posemb_original(q, k, freqs_cis), rtol=0, atol=0)


def test_unpatch_restores_apply_rotary_emb():
    original = getattr(modeling_llama4.apply_rotary_emb, "posemb_original", modeling_llama4.apply_rotary_emb)
    model = build()
    ref = model(torch.arange(3, 20)[None]).logits
    replaced = posemb.hf.patch(model)
    posemb.hf.unpatch(model, replaced)
    assert modeling_llama4.apply_rotary_emb is original
    torch.testing.assert_close(model(torch.arange(3, 20)[None]).logits, ref, rtol=0, atol=0)
