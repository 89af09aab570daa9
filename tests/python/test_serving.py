"""posemb.serving.rotary_embedding: vLLM's call shape, in place, against the
eager cos/sin-cache formula serving engines use (written out here)."""
from __future__ import annotations

import pytest
import torch

import posemb
from posemb.serving import rotary_embedding

from conftest import DEVICES


def cos_sin_cache(inv_freq: torch.Tensor, max_position: int) -> torch.Tensor:
    """vLLM's cache: (max_position, rotary_dim), cos half then sin half, fp32."""
    freqs = torch.outer(torch.arange(max_position, dtype=torch.float64), inv_freq.double())
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)


def eager_rotary(positions, x, head_size, cache, is_neox):
    """The serving engines' eager path: gather cos/sin rows, rotate the first rotary_dim channels."""
    tokens = positions.shape[0]
    x = x.view(tokens, -1, head_size).double()
    rotary_dim = cache.shape[1]
    cos, sin = cache[positions].chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if is_neox:
        a, b = rot.chunk(2, dim=-1)
        out = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    else:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    return torch.cat((out, rest), dim=-1).view(tokens, -1)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rotary_dim", [64, 32], ids=["full", "partial"])
def test_matches_the_cache_formula_in_place(is_neox, rotary_dim, device):
    g = torch.Generator().manual_seed(0)
    head_size, tokens = 64, 11
    inv_freq = posemb.rope.frequency_plan({"rope_theta": 1e6}, rotary_dim).inv_freq
    positions = torch.randint(0, 4096, (tokens,), generator=g)
    query = torch.randn(tokens, 8 * head_size, generator=g)
    key = torch.randn(tokens, 2 * head_size, generator=g)
    cache = cos_sin_cache(inv_freq, 4096)
    expected_q = eager_rotary(positions, query, head_size, cache, is_neox)
    expected_k = eager_rotary(positions, key, head_size, cache, is_neox)
    q, k = query.to(device), key.to(device)
    q_ptr = q.data_ptr()
    out_q, out_k = rotary_embedding(positions.to(device), q, k, head_size, cache.float().to(device), is_neox,
                                    inv_freq=inv_freq.to(device))
    assert out_q is q and out_k is k and q.data_ptr() == q_ptr  # in place
    torch.testing.assert_close(q.cpu().double(), expected_q, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(k.cpu().double(), expected_k, rtol=1e-5, atol=2e-6)


def test_three_dim_inputs_no_key_and_positions_past_any_cache():
    inv_freq = posemb.rope.frequency_plan({"rope_theta": 1e4}, 16).inv_freq
    positions = torch.tensor([0, 5, 2**31 - 1])
    q = torch.randn(3, 4, 16)
    expected = posemb.rotary(q.unsqueeze(0), None, inv_freq, positions.unsqueeze(0))[0]
    out, none = rotary_embedding(positions, q, None, 16, None, True, inv_freq=inv_freq)
    assert none is None and out is q
    torch.testing.assert_close(q, expected, rtol=0, atol=0)


def test_bad_shapes_name_the_argument():
    inv_freq = torch.ones(4)
    with pytest.raises(ValueError, match=r"query must be \(num_tokens, heads \* head_size\)"):
        rotary_embedding(torch.arange(3), torch.randn(3, 10), None, 8, inv_freq=inv_freq)
    with pytest.raises(ValueError, match=r"key must be \(num_tokens, heads \* head_size\)"):
        rotary_embedding(torch.arange(3), torch.randn(3, 16), torch.randn(4, 8), 8, inv_freq=inv_freq)
    with pytest.raises(ValueError, match="positions must be an integer"):
        rotary_embedding(torch.zeros(3), torch.randn(3, 16), None, 8, inv_freq=inv_freq)
