"""posemb.timestep_embedding and posemb.nn.Timesteps: diffusers'
get_timestep_embedding and DiT's TimestepEmbedder encoding, with float
timesteps whose angles are exact for the float given (README: "Timestep
embeddings and 2-D sin-cos grids")."""
from __future__ import annotations

import math

import pytest
import torch

import posemb
from posemb import reference

from conftest import DEVICES, ulp_distance

try:  # the peer, for the comparisons; the GPU machine has no diffusers
    import diffusers.models.embeddings as diffusers_embeddings
except ImportError:
    diffusers_embeddings = None
needs_diffusers = pytest.mark.skipif(diffusers_embeddings is None, reason="diffusers is not installed")

# Integers, fractions, a negative, values past 2^24 (integral in fp32) and
# diffusion's usual range.
TIMESTEPS = [0.0, 1.0, 0.5, 0.25, 1.0 / 3.0, 7.123, 499.5, 999.0, 999.999, -3.75, 12345.678, 2.0**24 + 2, 3.0e7]
CONFIGS = [  # (dim, flip_sin_to_cos, downscale_freq_shift, scale, max_period)
    (320, True, 0.0, 1.0, 10000.0),   # UNet2DConditionModel
    (256, True, 0.0, 1.0, 10000.0),   # DiT / PixArt / SD3
    (128, False, 1.0, 1.0, 10000.0),  # diffusers' defaults
    (9, False, 1.0, 1.0, 10000.0),    # odd: zero last column
    (64, True, 1.0, 1000.0, 10000.0), # a large scale
    (16, False, 0.5, 0.37, 100.0),
    (3, True, 0.0, 1.0, 10000.0),
    (1, False, 1.0, 1.0, 10000.0),    # no frequency at all: one zero column
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_matches_fp64_reference_and_beats_diffusers(config, device):
    dim, flip, shift, scale, max_period = config
    t = torch.tensor(TIMESTEPS, device=device)
    got = posemb.timestep_embedding(t, dim, flip, shift, scale, max_period)
    assert got.dtype == torch.float32 and got.shape == (len(TIMESTEPS), dim)
    expected = reference.timestep_embedding_mp(t.cpu(), dim, flip, shift, scale, max_period)
    err = (got.cpu().double() - expected).abs().max().item()
    if diffusers_embeddings is not None:
        theirs = diffusers_embeddings.get_timestep_embedding(t.cpu(), dim, flip, shift, scale, int(max_period))
        their_err = (theirs.double() - expected).abs().max().item()
        print(f"timestep_embedding {config}: posemb {err:.2e}, diffusers {their_err:.2e}")
    assert err <= 2.5e-7
    if dim % 2:
        assert torch.all(got[:, -1] == 0)


@needs_diffusers
def test_diffusion_range_error_table():
    """The numbers the README quotes: timesteps 0..999 and fractional ones."""
    t = torch.cat([torch.arange(1000.0), torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 1000])
    for dim, flip, shift in [(320, True, 0.0), (256, True, 0.0), (128, False, 1.0)]:
        expected = reference.timestep_embedding(t, dim, flip, shift)
        ours = (posemb.timestep_embedding(t, dim, flip, shift).double() - expected).abs().max().item()
        theirs = (diffusers_embeddings.get_timestep_embedding(t, dim, flip, shift).double() - expected).abs().max()
        print(f"t in [0, 1000), dim {dim}: posemb {ours:.2e}, diffusers {theirs.item():.2e}")
        assert ours <= 2.5e-7 and theirs > 10 * ours


def test_fp64_timesteps_are_exact_to_fp64(device):
    t = torch.tensor(TIMESTEPS, dtype=torch.float64, device=device) + 1e-9
    got = posemb.timestep_embedding(t, 64, True, 0.0, 3.0, dtype=torch.float64)
    assert got.dtype == torch.float64
    err = (got.cpu() - reference.timestep_embedding_mp(t.cpu(), 64, True, 0.0, 3.0)).abs().max().item()
    print(f"fp64 timesteps, fp64 output: posemb {err:.2e}")
    # The frequency's turns carry long double's 2^-64: 5e-12 rad at 3e7 * 3 rad.
    assert err <= 1e-11


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_outputs_are_the_rounded_reference(dtype, device):
    t = torch.tensor(TIMESTEPS, device=device)
    got = posemb.timestep_embedding(t, 32, dtype=dtype)
    expected = reference.timestep_embedding(t.cpu(), 32).to(dtype)
    assert ulp_distance(got.cpu(), expected).max() <= 1


def test_timestep_dtypes_and_shapes(device):
    """Integer timesteps (a UNet's usual input) and any shape; a timestep is the
    float32 it becomes (diffusers' .float())."""
    ints = torch.tensor([0, 10, 999], device=device)
    torch.testing.assert_close(posemb.timestep_embedding(ints, 32), posemb.timestep_embedding(ints.float(), 32),
                               rtol=0, atol=0)
    half = torch.tensor([0.1, 500.3], dtype=torch.float16, device=device)
    torch.testing.assert_close(posemb.timestep_embedding(half, 8), posemb.timestep_embedding(half.float(), 8),
                               rtol=0, atol=0)
    grid = torch.rand(2, 3, device=device) * 1000
    got = posemb.timestep_embedding(grid, 10)
    assert got.shape == (2, 3, 10)
    torch.testing.assert_close(got.reshape(6, 10), posemb.timestep_embedding(grid.reshape(6), 10), rtol=0, atol=0)
    assert posemb.timestep_embedding(torch.zeros(0, device=device), 8).shape == (0, 8)
    nan = posemb.timestep_embedding(torch.tensor([math.nan, math.inf], device=device), 4)
    assert torch.isnan(nan).all()
    strided = torch.arange(10.0, device=device)[::3]
    torch.testing.assert_close(posemb.timestep_embedding(strided, 8),
                               posemb.timestep_embedding(strided.contiguous(), 8), rtol=0, atol=0)


def test_gradient_of_timesteps(device):
    t = torch.tensor([0.3, 17.25, 999.0], dtype=torch.float64, device=device, requires_grad=True)
    for flip, dim in [(False, 8), (True, 7)]:
        assert torch.autograd.gradcheck(
            lambda t: posemb.timestep_embedding(t, dim, flip, 0.5, 2.0, 50.0, dtype=torch.float64), (t,))
    # fp32 timesteps, fp32 output: against the fp64 formula.
    t32 = torch.tensor([0.3, 17.25, 999.0], device=device, requires_grad=True)
    g = torch.randn(3, 16, device=device)
    posemb.timestep_embedding(t32, 16, True, 0.0).backward(g)
    t64 = t32.detach().double().cpu().requires_grad_()
    reference.timestep_embedding(t64, 16, True, 0.0).backward(g.double().cpu())
    torch.testing.assert_close(t32.grad.double().cpu(), t64.grad, rtol=1e-5, atol=1e-5)


def test_opcheck(device):
    t = torch.tensor([0.5, 3.0, 999.0], dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.posemb.timestep_embedding.default, (t, 9, True, 0.0, 2.0, 10000.0),
                          {"dtype": torch.float64})
    torch.library.opcheck(torch.ops.posemb.timestep_embedding.default,
                          (torch.tensor([1, 2], device=device), 16))


def test_compile_fullgraph_no_graph_break(device):
    m = posemb.nn.Timesteps(64, True, 0.0)
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    for n in (3, 5):
        t = torch.rand(n, device=device) * 1000
        torch.testing.assert_close(compiled(t), m(t), rtol=0, atol=0)


@needs_diffusers
def test_module_matches_diffusers_timesteps(device):
    ours = posemb.nn.Timesteps(320, True, 0.0)
    theirs = diffusers_embeddings.Timesteps(320, True, 0.0)
    t = torch.tensor([0, 250, 999], device=device)
    torch.testing.assert_close(ours(t), theirs(t), rtol=0, atol=2e-4)  # diffusers' own fp32 error
    assert ours.state_dict() == {} and "flip_sin_to_cos=True" in repr(ours)


ERRORS = [  # (args, kwargs, message): each names the op and the argument
    ((torch.tensor([True]), 8), {}, "timesteps must be an integer or floating"),
    ((torch.tensor([1.0]), 0), {}, "embedding_dim must be positive"),
    ((torch.tensor([1.0]), 8, False, 4.0), {}, "downscale_freq_shift must be finite and differ"),
    ((torch.tensor([1.0]), 8, False, math.nan), {}, "downscale_freq_shift must be finite"),
    ((torch.tensor([1.0]), 8, False, 1.0, math.inf), {}, "scale must be finite"),
    ((torch.tensor([1.0]), 8, False, 1.0, 1.0, 0.0), {}, "max_period must be a positive"),
    ((torch.tensor([1.0]), 8), {"dtype": torch.int32}, "dtype must be float32"),
]


@pytest.mark.parametrize("fake", [False, True])
@pytest.mark.parametrize("args,kwargs,message", ERRORS, ids=[e[2] for e in ERRORS])
def test_errors_name_the_op_and_argument(args, kwargs, message, fake):
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode
        with FakeTensorMode() as mode:
            args = (mode.from_tensor(args[0]),) + args[1:]
            with pytest.raises(RuntimeError, match="posemb.timestep_embedding: " + message):
                torch.ops.posemb.timestep_embedding(*args, **kwargs)
    else:
        with pytest.raises(RuntimeError, match="posemb.timestep_embedding: " + message):
            torch.ops.posemb.timestep_embedding(*args, **kwargs)


def test_module_argument_errors():
    with pytest.raises(ValueError, match="posemb.nn.Timesteps: num_channels"):
        posemb.nn.Timesteps(0, True, 0.0)
    with pytest.raises(ValueError, match="posemb.nn.Timesteps: max_period"):
        posemb.nn.Timesteps(8, True, 0.0, max_period=-1)
