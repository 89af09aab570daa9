"""The autograd kernels build a graph node only when one is needed (README:
Performance, per-call cost). Without one (torch.no_grad, inference_mode,
inputs that need no gradient) every op must give the same bits, outputs that
need no gradient, and in-place ops must still bump the versions; with one,
the gradients flow as before. Forward-mode AD keeps its clear error."""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import posemb

G = torch.Generator().manual_seed(0)


def _x(*shape):
    return torch.randn(*shape, generator=G)


def _sinusoidal(x):
    return posemb.sinusoidal_add(x, offset=torch.tensor([3, 70]))


def _learned(x):
    return posemb.learned_add(x, WEIGHT, offset=2)


def _rotary(x):
    q, k = posemb.rotary(x, x[:, :, :1] * 2, INV_FREQ, offset=5)
    return torch.cat([q, k], dim=2)


def _bert(table):
    return posemb.bert_embeddings(IDS, table, table[:6] * 0.5, table[:2], torch.ones(8), torch.zeros(8))


def _timestep(t):
    return posemb.timestep_embedding(t, 16)


def _sincos_2d(x):
    return posemb.sincos_2d_add(x, posemb.sincos_2d_positions(2, 8.0), posemb.sincos_2d_positions(3, 8.0),
                                pos_t=torch.tensor([0.0, 1.0]))


def _fourier(freqs):
    return posemb.fourier_features(torch.tensor([[0, 5, 1 << 20]]), freqs)


WEIGHT = _x(12, 8)
INV_FREQ = 1.0 / 10000 ** (torch.arange(0, 8, 2) / 8)
IDS = torch.tensor([[1, 4, 9, 2], [3, 3, 0, 11]])

# (op, a differentiable input of it)
OPS = {
    "sinusoidal_add": (_sinusoidal, lambda: _x(2, 5, 8)),
    "learned_add": (_learned, lambda: _x(2, 5, 8)),
    "rotary": (_rotary, lambda: _x(2, 5, 3, 8)),
    "bert_embeddings": (_bert, lambda: _x(12, 8)),
    "timestep_embedding": (_timestep, lambda: torch.tensor([0.5, 999.0, 17.25])),
    "sincos_2d_add": (_sincos_2d, lambda: _x(2, 12, 16)),
    "fourier_features": (_fourier, lambda: torch.tensor([0.25, 1e-3, 3.0])),
}


@pytest.mark.parametrize("name", OPS)
def test_no_graph_gives_the_same_bits_and_no_grad(name):
    op, make = OPS[name]
    leaf = make().requires_grad_()
    tracked = op(leaf)
    assert tracked.requires_grad and tracked.grad_fn is not None, name
    tracked.sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0, name
    with torch.no_grad():
        untracked = op(leaf)
    assert not untracked.requires_grad and untracked.grad_fn is None, name
    with torch.inference_mode():
        inference = op(leaf.detach())
    plain = op(leaf.detach())
    assert not plain.requires_grad, name
    for got in (untracked, inference, plain):
        torch.testing.assert_close(got, tracked.detach(), rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("name", OPS)
def test_forward_ad_still_reports_itself(name):
    op, make = OPS[name]
    with fwAD.dual_level():
        dual = fwAD.make_dual(make(), torch.ones_like(make()))
        with pytest.raises(RuntimeError, match="jvp is not implemented"):
            op(dual)


def test_inplace_ops_bump_versions_without_a_graph():
    x = _x(2, 5, 8)
    expected = posemb.sinusoidal_add(x)
    before = x._version
    with torch.no_grad():
        posemb.sinusoidal_add_(x)
    assert x._version == before + 1
    torch.testing.assert_close(x, expected, rtol=0, atol=0)

    q, k = _x(2, 5, 3, 8), _x(2, 5, 1, 8)
    want_q, want_k = posemb.rotary(q, k, INV_FREQ)
    versions = q._version, k._version
    posemb.rotary(q, k, INV_FREQ, inplace=True)  # needs no gradient: the no-graph path
    assert (q._version, k._version) == (versions[0] + 1, versions[1] + 1)
    torch.testing.assert_close(q, want_q, rtol=0, atol=0)
    torch.testing.assert_close(k, want_k, rtol=0, atol=0)


def test_saved_tensor_modified_in_place_without_a_graph_is_caught():
    """An in-place op outside autograd's view still bumps the version, so a
    graph that saved the tensor refuses the stale value."""
    x = _x(2, 5, 8).requires_grad_()
    y = x * 1.0
    z = y.pow(2)  # saves y
    with torch.no_grad():
        posemb.sinusoidal_add_(y)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()
