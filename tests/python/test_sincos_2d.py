"""posemb.sincos_2d_add / sincos_2d_table and posemb.nn.SinCos2dPositionalEmbedding:
the 2-D sin-cos grid of MAE, DiT, PixArt and SD3 (diffusers'
get_2d_sincos_pos_embed), added to patch embeddings in one kernel; with pos_t
and posemb.nn.SinCos3dPositionalEmbedding the 3-D grid of video patches
(diffusers' get_3d_sincos_pos_embed, CogVideoX)."""
from __future__ import annotations

import math

import pytest
import torch

import posemb
from posemb import reference

from conftest import DEVICES, FLOAT_DTYPES, ulp_distance

try:  # the peer, for the comparisons; the GPU machine has no diffusers
    import diffusers.models.embeddings as diffusers_embeddings
except ImportError:
    diffusers_embeddings = None
needs_diffusers = pytest.mark.skipif(diffusers_embeddings is None, reason="diffusers is not installed")

GRIDS = [  # (H, W, dim, base_size, interpolation_scale)
    (4, 4, 16, 4, 1.0),
    (3, 5, 8, 8, 2.0),      # not square: the w-then-h order matters
    (16, 16, 64, 16, 1.0),  # DiT-like
    (12, 7, 24, 32, 0.5),
    (1, 1, 4, None, 1.0),   # MAE's integer grid
    (6, 9, 32, None, 1.0),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def positions(h, w, base_size, scale, device="cpu"):
    return (posemb.sincos_2d_positions(h, base_size, scale, device=device),
            posemb.sincos_2d_positions(w, base_size, scale, device=device))


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: "-".join(map(str, g)))
def test_table_matches_reference_and_diffusers(grid, device):
    h, w, dim, base_size, scale = grid
    pos_h, pos_w = positions(h, w, base_size, scale, device)
    got = posemb.sincos_2d_table(pos_h, pos_w, dim)
    assert got.dtype == torch.float32 and got.shape == (h * w, dim)
    expected = reference.sincos_2d_table(pos_h.cpu(), pos_w.cpu(), dim)
    err = (got.cpu().double() - expected).abs().max().item()
    assert err <= 2.5e-7
    if base_size is not None and diffusers_embeddings is not None:
        # diffusers computes the angles in fp64 from the same fp32 positions.
        theirs = diffusers_embeddings.get_2d_sincos_pos_embed(dim, (h, w), base_size=base_size,
                                                              interpolation_scale=scale, output_type="pt")
        their_err = (theirs.double() - expected).abs().max().item()
        print(f"sincos_2d {grid}: posemb {err:.2e}, diffusers {their_err:.2e}")
        torch.testing.assert_close(got.cpu(), theirs.float(), rtol=0, atol=2.5e-7)


def test_large_positions_are_exact():
    """Float positions far from the origin: exact for the float given."""
    pos_h = torch.tensor([0.0, 1e4 + 0.25, 3.3e6, 2.0**24 + 2])
    pos_w = torch.tensor([-7.5, 123.456])
    got = posemb.sincos_2d_table(pos_h, pos_w, 32)
    err = (got.double() - reference.sincos_2d_table(pos_h, pos_w, 32)).abs().max().item()
    assert err <= 2.5e-7


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_add_matches_reference(dtype, device):
    torch.manual_seed(0)
    h, w, dim = 3, 5, 16
    pos_h, pos_w = positions(h, w, 8, 1.0, device)
    x = torch.randn(2, h * w, dim, device=device).to(dtype)
    x0 = x.clone()
    y = posemb.sincos_2d_add(x, pos_h, pos_w)
    assert torch.equal(x, x0) and y.dtype == dtype
    expected = x.cpu().double() + reference.sincos_2d_table(pos_h.cpu(), pos_w.cpu(), dim)
    if dtype in (torch.float16, torch.bfloat16):
        assert ulp_distance(y.cpu(), expected.to(dtype)).max() <= 1
    else:
        torch.testing.assert_close(y.cpu().double(), expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 3e-7)


def test_strided_views_and_empty(device):
    pos_h, pos_w = positions(4, 3, 4, 1.0, device)
    base = torch.randn(12, 3, 8, device=device)
    x = base.transpose(0, 1)  # (3, 12, 8), not contiguous
    torch.testing.assert_close(posemb.sincos_2d_add(x, pos_h, pos_w), posemb.sincos_2d_add(x.contiguous(), pos_h, pos_w),
                               rtol=0, atol=0)
    wide = torch.randn(2, 12, 16, device=device)[..., ::2]  # channel stride 2
    torch.testing.assert_close(posemb.sincos_2d_add(wide, pos_h, pos_w),
                               posemb.sincos_2d_add(wide.contiguous(), pos_h, pos_w), rtol=0, atol=0)
    assert posemb.sincos_2d_add(torch.zeros(0, 12, 8, device=device), pos_h, pos_w).shape == (0, 12, 8)


def test_gradients(device):
    pos_h, pos_w = positions(2, 3, 2, 1.0, device)
    x = torch.randn(2, 6, 8, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: posemb.sincos_2d_add(x, pos_h, pos_w), (x,))
    with pytest.raises(RuntimeError, match="posemb.sincos_2d_add: pos_h, pos_w and pos_t take no gradient"):
        posemb.sincos_2d_add(x, pos_h.requires_grad_(), pos_w)


def test_opcheck(device):
    pos_h, pos_w = positions(2, 3, 2, 1.0, device)
    x = torch.randn(2, 6, 8, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.posemb.sincos_2d_add.default, (x, pos_h, pos_w, 100.0))
    torch.library.opcheck(torch.ops.posemb.sincos_2d_table.default, (pos_h, pos_w, 8), {"dtype": torch.float64})


def test_compile_fullgraph_no_graph_break(device):
    m = posemb.nn.SinCos2dPositionalEmbedding(32, base_size=4)
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    for h, w in ((4, 4), (3, 6)):
        x = torch.randn(2, h * w, 32, device=device)
        torch.testing.assert_close(compiled(x, h, w), m(x, h, w), rtol=0, atol=0)


@needs_diffusers
def test_module_matches_diffusers_table(device):
    m = posemb.nn.SinCos2dPositionalEmbedding(48, base_size=8, interpolation_scale=2.0)
    x = torch.randn(1, 6 * 10, 48, device=device)
    theirs = diffusers_embeddings.get_2d_sincos_pos_embed(48, (6, 10), base_size=8, interpolation_scale=2.0,
                                                          output_type="pt", device=device)
    torch.testing.assert_close(m(x, 6, 10), x + theirs.float(), rtol=0, atol=1e-6)
    assert m.state_dict() == {} and "base_size=8" in repr(m)


def _errors():
    p3, p4 = torch.arange(3.0), torch.arange(4.0)
    return [  # (args, message): each names the op and the argument
        ((torch.zeros(1, 12, 8, dtype=torch.int32), p3, p4), "x must be float32"),
        ((torch.zeros(12, 8), p3, p4), "x must be \\(batch, H\\*W, dim\\)"),
        ((torch.zeros(1, 12, 8), p3.double(), p4), "pos_h must be a 1-D float32 tensor"),
        ((torch.zeros(1, 12, 8), p3, p4[None]), "pos_w must be a 1-D float32 tensor"),
        ((torch.zeros(1, 11, 8), p3, p4), "x must have H\\*W = 12 tokens"),
        ((torch.zeros(1, 12, 6), p3, p4), "the embedding dim must be a multiple of 4"),
        ((torch.zeros(1, 12, 8), p3, p4, 0.0), "base must be a positive finite number"),
        ((torch.zeros(1, 12, 8), p3, p4, math.nan), "base must be a positive finite number"),
    ]


@pytest.mark.parametrize("fake", [False, True])
@pytest.mark.parametrize("case", range(len(_errors())))
def test_errors_name_the_op_and_argument(case, fake):
    args, message = _errors()[case]
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode
        with FakeTensorMode() as mode:
            args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
            with pytest.raises(RuntimeError, match="posemb.sincos_2d_add: " + message):
                torch.ops.posemb.sincos_2d_add(*args)
    else:
        with pytest.raises(RuntimeError, match="posemb.sincos_2d_add: " + message):
            torch.ops.posemb.sincos_2d_add(*args)


def test_table_and_module_argument_errors():
    with pytest.raises(RuntimeError, match="posemb.sincos_2d_table: dtype must be float32"):
        posemb.sincos_2d_table(torch.arange(2.0), torch.arange(2.0), 8, dtype=torch.int64)
    with pytest.raises(ValueError, match="posemb.nn.SinCos2dPositionalEmbedding: embed_dim must be a multiple of 4"):
        posemb.nn.SinCos2dPositionalEmbedding(10)


# ---- the 3-D grid of video patches (pos_t) ----

GRIDS_3D = [  # (T, H, W, dim, spatial_interpolation_scale, temporal_interpolation_scale)
    (2, 3, 4, 16, 1.0, 1.0),
    (3, 2, 5, 32, 1.875, 1.0),   # CogVideoX's spatial scale; not square: the order of h and w matters
    (13, 6, 9, 64, 1.875, 1.0),  # CogVideoX-like latent grid, small
    (4, 4, 4, 48, 0.5, 2.0),
    (1, 1, 1, 16, 1.0, 1.0),
]


def positions_3d(t, h, w, spatial, temporal, device="cpu"):
    return (posemb.sincos_2d_positions(t, None, temporal, device=device),
            posemb.sincos_2d_positions(h, None, spatial, device=device),
            posemb.sincos_2d_positions(w, None, spatial, device=device))


@pytest.mark.parametrize("grid", GRIDS_3D, ids=lambda g: "-".join(map(str, g)))
def test_3d_table_matches_reference_and_diffusers(grid, device):
    t, h, w, dim, spatial, temporal = grid
    pos_t, pos_h, pos_w = positions_3d(t, h, w, spatial, temporal, device)
    got = posemb.sincos_2d_table(pos_h, pos_w, dim, pos_t=pos_t)
    assert got.dtype == torch.float32 and got.shape == (t * h * w, dim)
    expected = reference.sincos_2d_table(pos_h.cpu(), pos_w.cpu(), dim, pos_t=pos_t.cpu())
    err = (got.cpu().double() - expected).abs().max().item()
    assert err <= 2.5e-7  # the 2-D op's contract
    if diffusers_embeddings is not None:
        # spatial_size is (width, height) in diffusers; (T, H*W, dim) in fp64, flattened as CogVideoX does.
        theirs = diffusers_embeddings.get_3d_sincos_pos_embed(dim, (w, h), t, spatial, temporal,
                                                              output_type="pt").flatten(0, 1)
        assert theirs.dtype == torch.float64
        their_err = (theirs - expected).abs().max().item()
        print(f"sincos_3d {grid}: posemb {err:.2e}, diffusers {their_err:.2e}")
        assert their_err <= 1e-12  # the reference is diffusers' layout, not just close to it
        torch.testing.assert_close(got.cpu(), theirs.float(), rtol=0, atol=2.5e-7)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_3d_add_matches_reference(dtype, device):
    torch.manual_seed(0)
    t, h, w, dim = 3, 2, 5, 32
    pos_t, pos_h, pos_w = positions_3d(t, h, w, 1.875, 1.0, device)
    x = torch.randn(2, t * h * w, dim, device=device).to(dtype)
    x0 = x.clone()
    y = posemb.sincos_2d_add(x, pos_h, pos_w, pos_t=pos_t)
    assert torch.equal(x, x0) and y.dtype == dtype
    expected = x.cpu().double() + reference.sincos_2d_table(pos_h.cpu(), pos_w.cpu(), dim, pos_t=pos_t.cpu())
    if dtype in (torch.float16, torch.bfloat16):
        # The fp32 sum rounded once; where x and the grid nearly cancel, the
        # grid's fp32 error (2.5e-7) is more than an ulp of the result, so
        # the ulp bound is held where |y| > 1e-2.
        table = posemb.sincos_2d_table(pos_h, pos_w, dim, pos_t=pos_t)
        assert torch.equal(y, (x.float() + table).to(dtype))
        away = expected.abs() > 1e-2
        assert ulp_distance(y.cpu()[away], expected.to(dtype)[away]).max() <= 1
    else:
        torch.testing.assert_close(y.cpu().double(), expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 3e-7)
    if dtype in (torch.float32, torch.float64):  # the add is x + the table, bitwise
        table = posemb.sincos_2d_table(pos_h, pos_w, dim, pos_t=pos_t, dtype=dtype)
        torch.testing.assert_close(y, x + table, rtol=0, atol=0)


def test_3d_large_positions_and_base():
    pos_t = torch.tensor([0.0, 1e4 + 0.25, 3.3e6])
    pos_h, pos_w = torch.tensor([-7.5, 123.456]), torch.tensor([2.0**24 + 2])
    got = posemb.sincos_2d_table(pos_h, pos_w, 48, base=500.0, pos_t=pos_t)
    err = (got.double() - reference.sincos_2d_table(pos_h, pos_w, 48, 500.0, pos_t=pos_t)).abs().max().item()
    assert err <= 2.5e-7


def test_3d_strided_views_and_empty(device):
    pos_t, pos_h, pos_w = positions_3d(2, 4, 3, 1.0, 1.0, device)
    base = torch.randn(24, 3, 16, device=device)
    x = base.transpose(0, 1)  # (3, 24, 16), not contiguous
    torch.testing.assert_close(posemb.sincos_2d_add(x, pos_h, pos_w, pos_t=pos_t),
                               posemb.sincos_2d_add(x.contiguous(), pos_h, pos_w, pos_t=pos_t), rtol=0, atol=0)
    wide = torch.randn(2, 24, 32, device=device)[..., ::2]  # channel stride 2: the kernel body's path on the CPU
    torch.testing.assert_close(posemb.sincos_2d_add(wide, pos_h, pos_w, pos_t=pos_t),
                               posemb.sincos_2d_add(wide.contiguous(), pos_h, pos_w, pos_t=pos_t), rtol=0, atol=0)
    assert posemb.sincos_2d_add(torch.zeros(0, 24, 16, device=device), pos_h, pos_w, pos_t=pos_t).shape == (0, 24, 16)
    none = posemb.sincos_2d_positions(0, device=device)
    assert posemb.sincos_2d_add(torch.zeros(2, 0, 16, device=device), pos_h, pos_w, pos_t=none).shape == (2, 0, 16)


def test_3d_gradients(device):
    pos_t, pos_h, pos_w = positions_3d(2, 2, 3, 1.0, 1.0, device)
    x = torch.randn(2, 12, 16, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: posemb.sincos_2d_add(x, pos_h, pos_w, pos_t=pos_t), (x,))
    with pytest.raises(RuntimeError, match="posemb.sincos_2d_add: pos_h, pos_w and pos_t take no gradient"):
        posemb.sincos_2d_add(x, pos_h, pos_w, pos_t=pos_t.clone().requires_grad_())


def test_3d_opcheck(device):
    pos_t, pos_h, pos_w = positions_3d(2, 2, 3, 1.0, 1.0, device)
    x = torch.randn(2, 12, 16, dtype=torch.float64, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.posemb.sincos_2d_add.default, (x, pos_h, pos_w, 100.0), {"pos_t": pos_t})
    torch.library.opcheck(torch.ops.posemb.sincos_2d_table.default, (pos_h, pos_w, 16),
                          {"dtype": torch.float64, "pos_t": pos_t})


def test_3d_compile_fullgraph_no_graph_break(device):
    m = posemb.nn.SinCos3dPositionalEmbedding(32, spatial_interpolation_scale=1.875)
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    for t, h, w in ((2, 4, 4), (3, 3, 6)):
        x = torch.randn(2, t * h * w, 32, device=device)
        torch.testing.assert_close(compiled(x, t, h, w), m(x, t, h, w), rtol=0, atol=0)


@needs_diffusers
def test_3d_module_matches_diffusers_table(device):
    m = posemb.nn.SinCos3dPositionalEmbedding(48, spatial_interpolation_scale=1.875, temporal_interpolation_scale=2.0)
    x = torch.randn(1, 3 * 6 * 10, 48, device=device)
    theirs = diffusers_embeddings.get_3d_sincos_pos_embed(48, (10, 6), 3, 1.875, 2.0, device=device,
                                                          output_type="pt").flatten(0, 1)
    torch.testing.assert_close(m(x, 3, 6, 10), x + theirs.float(), rtol=0, atol=1e-6)
    assert m.state_dict() == {} and "spatial_interpolation_scale=1.875" in repr(m)


def _errors_3d():
    p2, p3, p4 = torch.arange(2.0), torch.arange(3.0), torch.arange(4.0)
    x = torch.zeros(1, 24, 16)
    return [  # (args, kwargs, message)
        ((x, p3, p4), {"pos_t": p2.double()}, "pos_t must be a 1-D float32 tensor"),
        ((x, p3, p4), {"pos_t": p2[None]}, "pos_t must be a 1-D float32 tensor"),
        ((x, p3, p4), {"pos_t": p2.to("meta")}, "pos_t must be on x's device"),
        ((torch.zeros(1, 23, 16), p3, p4), {"pos_t": p2}, "x must have T\\*H\\*W = 24 tokens \\(pos_t, pos_h and pos_w "
                                                           "have 2, 3 and 4\\), got 23"),
        ((torch.zeros(1, 24, 8), p3, p4), {"pos_t": p2}, "with pos_t, the embedding dim must be a multiple of 16"),
        ((torch.zeros(1, 24, 20), p3, p4), {"pos_t": p2}, "with pos_t, the embedding dim must be a multiple of 16"),
        ((torch.zeros(24, 16), p3, p4), {"pos_t": p2}, "x must be \\(batch, T\\*H\\*W, dim\\)"),
        ((x, p3, p4, -1.0), {"pos_t": p2}, "base must be a positive finite number"),
    ]


@pytest.mark.parametrize("fake", [False, True])
@pytest.mark.parametrize("case", range(len(_errors_3d())))
def test_3d_errors_name_the_op_and_argument(case, fake):
    args, kwargs, message = _errors_3d()[case]
    if fake and "device" in message:
        pytest.skip("FakeTensorMode raises its own device-mismatch error before the op's fake kernel runs")
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode
        with FakeTensorMode() as mode:
            args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
            kwargs = {k: mode.from_tensor(v) for k, v in kwargs.items()}
            with pytest.raises(RuntimeError, match="posemb.sincos_2d_add: " + message):
                torch.ops.posemb.sincos_2d_add(*args, **kwargs)
    else:
        with pytest.raises(RuntimeError, match="posemb.sincos_2d_add: " + message):
            torch.ops.posemb.sincos_2d_add(*args, **kwargs)


def test_3d_module_argument_errors():
    with pytest.raises(ValueError, match="posemb.nn.SinCos3dPositionalEmbedding: embed_dim must be a multiple of 16"):
        posemb.nn.SinCos3dPositionalEmbedding(40)
    with pytest.raises(ValueError, match="spatial_interpolation_scale must be a finite number > 0"):
        posemb.nn.SinCos3dPositionalEmbedding(32, spatial_interpolation_scale=0.0)
