"""posemb.fourier_features and posemb.nn.FourierPositionalEmbedding: the
article's E(p) = sin(αp) W1 + cos(αp) W2 with trainable W and α."""
from __future__ import annotations

import pytest
import torch

import posemb
from posemb.nn import FourierPositionalEmbedding

from conftest import DEVICES


def reference_features(positions: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """fp64, independent of the kernels (fp64 angles are good to ~1e-16 * |α p|)."""
    angle = frequencies.detach().double() * positions.double().unsqueeze(-1)
    return torch.cat((angle.sin(), angle.cos()), dim=-1)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def test_features_are_exact_up_to_2_31(device):
    positions = torch.tensor([[0, 1, 2, 1000, 2**20 + 3, 2**31 - 1]], device=device)
    frequencies = torch.tensor([1.0, 0.37, 1e-2, 1e-4, 1e-8], device=device)
    got = posemb.fourier_features(positions, frequencies)
    assert got.dtype == torch.float32 and got.shape == (1, 6, 10)
    torch.testing.assert_close(got.double().cpu(), reference_features(positions, frequencies).cpu(), rtol=0, atol=2.5e-7)
    # Naive fp32 angles are off by radians there: the contract is worth having.
    naive = torch.sin(frequencies[0] * positions[0, -1].float())
    assert (naive.double().cpu() - reference_features(positions, frequencies)[0, -1, 0].cpu()).abs() > 1e-3


def test_frequency_gradient_is_exact_at_large_positions(device):
    positions = torch.tensor([[3, 2**24 + 1, 2**30 + 7], [5, 6, 2**31 - 1]], device=device)
    frequencies = torch.tensor([1.0, 0.01, 3e-5], device=device, requires_grad=True)
    grad = torch.randn(2, 3, 6, device=device, generator=None)
    posemb.fourier_features(positions, frequencies).backward(grad)
    alpha = frequencies.detach().double().requires_grad_()
    angle = alpha * positions.double().unsqueeze(-1)
    torch.cat((angle.sin(), angle.cos()), -1).backward(grad.double())
    torch.testing.assert_close(frequencies.grad.double(), alpha.grad, rtol=2e-6, atol=0)


def test_module_starts_as_the_half_layout_sinusoidal_encoding(device):
    """Equal up to α rounded to fp32: |p δα| <= p 2^-24 (the sinusoidal op
    keeps its frequencies in more than double precision)."""
    m = FourierPositionalEmbedding(64, device=device)
    x = torch.zeros(2, 9, 64, device=device)
    for offset in (0, 100):
        table = posemb.sinusoidal_table(9, 64, offset=offset, layout="half", device=device)
        bound = 2.5e-7 + (offset + 8) * 2**-24
        torch.testing.assert_close(m(x, offset=offset), table.expand(2, 9, 64), rtol=0, atol=bound)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("scheme", ["shared", "per-sequence", "positions", "seq-first"])
def test_module_matches_fp64_reference(scheme, bias, device):
    torch.manual_seed(0)
    m = FourierPositionalEmbedding(24, 5, bias=bias, seq_dim=0 if scheme == "seq-first" else -2).to(device)
    with torch.no_grad():
        m.weight.normal_()
        if bias:
            m.bias.normal_()
    x = torch.randn(3, 7, 24, device=device)
    if scheme == "shared":
        y, pos = m(x, offset=11), (torch.arange(7, device=device) + 11).expand(3, 7)
    elif scheme == "per-sequence":
        offsets = torch.tensor([0, 5, 70000], device=device)
        y, pos = m(x, offset=offsets), offsets[:, None] + torch.arange(7, device=device)
    elif scheme == "positions":
        pos = torch.randint(0, 2**31, (3, 7), device=device)
        y = m(x, pos)
    else:
        y = m(x.transpose(0, 1)).transpose(0, 1)
        pos = torch.arange(7, device=device).expand(3, 7)
    expected = x.double() + reference_features(pos, m.frequencies) @ m.weight.double()
    if bias:
        expected = expected + m.bias.double()
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


def test_every_gradient(device):
    """x and W by gradcheck in fp64; α against the fp64 formula."""
    m = FourierPositionalEmbedding(8, 3, bias=True, dtype=torch.float64).to(device)
    assert m.frequencies.dtype == torch.float32 and m.weight.dtype == torch.float64
    x = torch.randn(2, 4, 8, dtype=torch.float64, device=device, requires_grad=True)
    offsets = torch.tensor([2, 900], device=device)

    def f(x, weight, bias):
        features = posemb.fourier_features(offsets[:, None] + torch.arange(4, device=device), m.frequencies)
        return torch.baddbmm(x, features.double(), weight.expand(2, 6, 8)) + bias

    assert torch.autograd.gradcheck(f, (x, m.weight, m.bias))
    y = m(x, offset=offsets)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, g)
    pos = offsets[:, None] + torch.arange(4, device=device)
    feats = reference_features(pos, m.frequencies)
    torch.testing.assert_close(m.weight.grad, torch.einsum("bsf,bsd->fd", feats, g), rtol=1e-6, atol=1e-6)
    # dα_i = Σ p (g·W_sin_i cos - g·W_cos_i sin)
    gf = g @ m.weight.detach().T
    angle = m.frequencies.detach().double() * pos.double().unsqueeze(-1)
    expected = (pos.double().unsqueeze(-1) * (gf[..., :3] * angle.cos() - gf[..., 3:] * angle.sin())).sum((0, 1))
    torch.testing.assert_close(m.frequencies.grad.double(), expected, rtol=1e-5, atol=1e-5)


def test_trains_its_frequencies_and_weight():
    """A few steps of Adam fit a target encoding made with other frequencies."""
    torch.manual_seed(0)
    target = FourierPositionalEmbedding(16, 8, base=300.0)
    m = FourierPositionalEmbedding(16, 8)
    x = torch.zeros(1, 32, 16)
    with torch.no_grad():
        goal = target(x)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (m(x) - goal).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert not torch.equal(m.frequencies, FourierPositionalEmbedding(16, 8).frequencies)


@pytest.mark.compile
def test_compile_without_graph_breaks():
    m = FourierPositionalEmbedding(16, 8, bias=True)
    x = torch.randn(2, 5, 16, requires_grad=True)
    offsets = torch.tensor([0, 40])
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    compiled = torch.compile(m, fullgraph=True, backend=counter)
    y = compiled(x, offset=offsets)
    torch.testing.assert_close(y, m(x, offset=offsets))
    y.sum().backward()
    assert counter.frame_count == 1
    assert m.frequencies.grad is not None and m.weight.grad is not None


def test_casts_keep_frequencies_fp32_and_state_dict_round_trips():
    m = FourierPositionalEmbedding(12, bias=True)
    m.frequencies.data.add_(1e-3)  # not a bf16 value: a cast and back would round it
    frequencies, exact = m.frequencies, m.frequencies.detach().clone()
    m.bfloat16()
    assert m.frequencies.dtype == torch.float32 and isinstance(m.frequencies, torch.nn.Parameter)
    assert m.frequencies is frequencies and torch.equal(m.frequencies, exact)
    assert m.weight.dtype == torch.bfloat16
    y = m(torch.randn(2, 3, 12).bfloat16())
    assert y.dtype == torch.bfloat16
    with torch.device("meta"):
        lazy = FourierPositionalEmbedding(12, bias=True)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(m.float().state_dict())
    x = torch.randn(2, 3, 12)
    torch.testing.assert_close(lazy(x), m(x), rtol=0, atol=0)
    fixed = FourierPositionalEmbedding(12, learn_frequencies=False)
    assert "frequencies" in dict(fixed.named_buffers()) and "frequencies" not in dict(fixed.named_parameters())


@pytest.mark.parametrize("kwargs,message", [
    (dict(embedding_dim=0), "embedding_dim must be an int >= 1"),
    (dict(embedding_dim=8, num_frequencies=0), "num_frequencies must be an int >= 1"),
    (dict(embedding_dim=8, base=0.0), "base must be a finite number > 0"),
    (dict(embedding_dim=8, base=float("nan")), "base must be a finite number > 0"),
    (dict(embedding_dim=8, seq_dim=1), "seq_dim must be one of"),
])
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match="FourierPositionalEmbedding: " + message):
        FourierPositionalEmbedding(**kwargs)


def test_call_errors_name_the_argument():
    m = FourierPositionalEmbedding(8)
    with pytest.raises(ValueError, match=r"x must be \(batch, seq, 8\)"):
        m(torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match=r"positions must be \(seq,\) or \(batch, seq\) = \(2, 3\)"):
        m(torch.randn(2, 3, 8), torch.arange(4))
    with pytest.raises(RuntimeError, match="posemb.fourier_features: positions must be an integer"):
        posemb.fourier_features(torch.zeros(1, 3), torch.ones(2))
    with pytest.raises(RuntimeError, match="posemb.fourier_features: frequencies must be a non-empty 1-D float32"):
        posemb.fourier_features(torch.zeros(1, 3, dtype=torch.long), torch.ones(2, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="posemb.fourier_features: frequencies must be a non-empty"):
        posemb.fourier_features(torch.zeros(1, 3, dtype=torch.long), torch.ones(0))


def test_opcheck():
    from torch.library import opcheck

    positions = torch.tensor([[0, 5, 2**30], [1, 2, 3]])
    opcheck(torch.ops.posemb.fourier_features.default, (positions, torch.tensor([1.0, 1e-3], requires_grad=True)))
    features = posemb.fourier_features(positions, torch.tensor([1.0, 1e-3]))
    opcheck(torch.ops.posemb.fourier_features_backward.default, (torch.randn(2, 3, 4), positions, features))


def test_an_optimizer_made_before_a_cast_still_trains_the_frequencies():
    """The usual order (build, make the optimizer, cast): the cast moves the
    frequencies in place, as nn.Module moves its parameters."""
    m = FourierPositionalEmbedding(16)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.double()
    assert any(p is m.frequencies for group in opt.param_groups for p in group["params"])
    before = m.frequencies.detach().clone()
    m(torch.randn(2, 5, 16, dtype=torch.float64), offset=3).pow(2).sum().backward()
    opt.step()
    assert m.frequencies.dtype == torch.float32 and not torch.equal(m.frequencies, before)
