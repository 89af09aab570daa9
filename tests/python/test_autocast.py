"""Autocast: every op has a rule (csrc/autocast.cpp). Tensors that are added
together are promoted to the widest dtype among them, as eager
`x + embedding(pos)` does; single-input ops run in their input's dtype."""
from __future__ import annotations

import pytest
import torch

import posemb

from conftest import DEVICES


def autocast(device):
    return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)


@pytest.mark.parametrize("device", DEVICES)
def test_learned_positions_after_a_linear_layer(device):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 16, device=device)
    pe = posemb.nn.LearnedPositionalEmbedding(10, 16, device=device)
    emb = torch.nn.Embedding(10, 16, device=device)
    with torch.no_grad():
        emb.weight.copy_(pe.weight)
    x = torch.randn(2, 5, 16, device=device)
    with autocast(device):
        h = lin(x)
        ours, eager = pe(h), h + emb(torch.arange(5, device=device))
    assert h.dtype != torch.float32 and ours.dtype == eager.dtype == torch.float32
    torch.testing.assert_close(ours, eager, rtol=0, atol=0)
    ours.sum().backward(retain_graph=True)  # h's graph serves both
    eager.sum().backward()
    torch.testing.assert_close(pe.weight.grad, emb.weight.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_bert_embeddings_with_tables_of_two_dtypes(device):
    torch.manual_seed(0)
    tables = [torch.randn(20, 8, device=device), torch.randn(12, 8, device=device).bfloat16(),
              torch.randn(2, 8, device=device), torch.ones(8, device=device), torch.zeros(8, device=device)]
    ids = torch.randint(0, 20, (2, 6), device=device)
    with autocast(device):
        out = posemb.bert_embeddings(ids, *tables)
    ref = posemb.bert_embeddings(ids, *[t.float() for t in tables])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_rotary_of_projections_keeps_their_dtype_and_fp32_frequencies(device):
    torch.manual_seed(0)
    proj = torch.nn.Linear(32, 32, device=device)
    h = torch.randn(2, 5, 32, device=device)
    inv_freq = posemb.rope.frequency_plan({"rope_theta": 1e4}, 8).inv_freq.to(device)
    with autocast(device):
        q = proj(h).view(2, 5, 4, 8)
        out = posemb.rotary(q, q.float(), inv_freq)  # mixed on purpose: promoted to fp32
        same = posemb.rotary(q, q, inv_freq)
    assert [t.dtype for t in out] == [torch.float32, torch.float32]
    assert [t.dtype for t in same] == [q.dtype, q.dtype]
    torch.testing.assert_close(out[0], posemb.rotary(q.float(), None, inv_freq), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_sinusoidal_runs_in_its_input_dtype(device):
    x = torch.randn(2, 5, 16, device=device)
    with autocast(device):
        h = torch.nn.Linear(16, 16, device=device)(x)
        y = posemb.sinusoidal_add(h)
    assert y.dtype == h.dtype
    torch.testing.assert_close(y, posemb.sinusoidal_add(h), rtol=0, atol=0)
