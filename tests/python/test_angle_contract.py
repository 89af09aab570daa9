"""The numerical contract of every op that forms angles (README: "Numerical
contract"): fp32 results within 2.5e-7 of the exact value at every position
in [0, 2^31), bf16/fp16 within one ulp of the exact value rounded, for
sinusoidal encodings (both layouts, both formulas, any base) and rotary
embeddings (every Hugging Face rope plan).

The reference is exact: mpmath at 200 bits, with sinusoidal frequencies
taken from their formula and rotary frequencies as the given fp32 values.
Each test prints transformers' or naive fp32's error at the same positions
beside posemb's (pytest -s)."""
from __future__ import annotations

import math
from typing import List

import pytest
import torch

import posemb
from posemb.rope import frequency_plan

from conftest import DEVICES, ulp_distance

mpmath = pytest.importorskip("mpmath")
mpmath.mp.prec = 200

TOL = 2.5e-7
# Near 0, near powers of two, and up to the end of the contract's range.
POSITIONS = sorted({p for c in (0, 1, 2**10, 2**16, 2**20, 2**24, 2**30, 2**31 - 1) for p in range(c - 3, c + 4)
                    if 0 <= p < 2**31} | {123456789, 1987654321})


def exact_sincos(positions: List[int], freqs) -> torch.Tensor:
    """(len(positions), len(freqs), 2) float64 of sin, cos of p·w, exactly."""
    out = torch.empty(len(positions), len(freqs), 2, dtype=torch.float64)
    for i, p in enumerate(positions):
        for j, w in enumerate(freqs):
            theta = mpmath.mpf(p) * w
            out[i, j, 0], out[i, j, 1] = float(mpmath.sin(theta)), float(mpmath.cos(theta))
    return out


def formula_frequencies(dim: int, freqs: str, base: float):
    half = dim // 2
    if freqs == "vaswani":
        return [mpmath.power(mpmath.mpf(base), mpmath.mpf(-2 * i) / dim) for i in range(half)]
    return [mpmath.exp(-i * mpmath.log(mpmath.mpf(base)) / (half - 1)) for i in range(half)]


def split_layout(table: torch.Tensor, layout: str):
    half = table.shape[-1] // 2
    if layout == "interleaved":
        return table[..., 0 : 2 * half : 2], table[..., 1 : 2 * half : 2]
    return table[..., :half], table[..., half : 2 * half]


def positions_table(op_positions: List[int], dim: int, device, dtype, **kw) -> torch.Tensor:
    """sinusoidal_add of zeros at these positions: the encoding itself."""
    x = torch.zeros(1, len(op_positions), dim, device=device, dtype=dtype)
    return posemb.sinusoidal_add(x, torch.tensor(op_positions, device=device), **kw)[0].cpu()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout,freqs,base,dim", [
    ("interleaved", "vaswani", 10000.0, 128),
    ("half", "fairseq", 10000.0, 96),
    ("half", "vaswani", 500000.0, 64),
    ("interleaved", "fairseq", 1234.5, 34),
])
def test_sinusoidal_fp32_exact_to_2_31(layout, freqs, base, dim, device):
    exact = exact_sincos(POSITIONS, formula_frequencies(dim, freqs, base))
    out = positions_table(POSITIONS, dim, device, torch.float32, layout=layout, freqs=freqs, base=base)
    s, c = split_layout(out.double(), layout)
    err = max((s - exact[..., 0]).abs().max().item(), (c - exact[..., 1]).abs().max().item())

    w32 = torch.tensor([float(w) for w in formula_frequencies(dim, freqs, base)], dtype=torch.float32)
    theta32 = torch.tensor(POSITIONS, dtype=torch.float32)[:, None] * w32  # what eager code does
    naive = max((torch.sin(theta32).double() - exact[..., 0]).abs().max().item(),
                (torch.cos(theta32).double() - exact[..., 1]).abs().max().item())
    print(f"\nsinusoidal {layout}/{freqs} base {base} dim {dim}, positions to 2^31-1: "
          f"posemb {err:.2e}, naive fp32 {naive:.2e}")
    assert err <= TOL
    assert naive > 1e-2  # the failure the contract exists to avoid, in the same test


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sinusoidal_half_precision_within_one_ulp(dtype, device):
    dim = 64
    exact = exact_sincos(POSITIONS, formula_frequencies(dim, "vaswani", 10000.0))
    out = positions_table(POSITIONS, dim, device, dtype)
    s, c = split_layout(out, "interleaved")
    assert ulp_distance(s, exact[..., 0].to(dtype)).max().item() <= 1
    assert ulp_distance(c, exact[..., 1].to(dtype)).max().item() <= 1


ROPE_PLANS = {
    "default": {"rope_type": "default", "rope_theta": 500000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 512},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "longrope": {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 4096,
                 "long_factor": [1.0 + 0.05 * i for i in range(32)], "short_factor": [1.0] * 32},
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rope", list(ROPE_PLANS))
def test_rotary_fp32_exact_to_2_31(rope, device):
    """q made of pairs (1, 0): the rotated q is (cos, sin) times the scaling."""
    head_dim = 64
    plan = frequency_plan(ROPE_PLANS[rope], head_dim, max_position_embeddings=4096, seq_len=8192)
    half = head_dim // 2
    q = torch.zeros(1, len(POSITIONS), 1, head_dim, device=device)
    q[..., :half] = 1.0
    out = posemb.rotary(q, None, plan.inv_freq.to(device), positions=torch.tensor(POSITIONS, device=device),
                        attention_scaling=plan.attention_scaling)[0, :, 0].cpu().double()
    scale = plan.attention_scaling
    exact = exact_sincos(POSITIONS, [mpmath.mpf(float(w)) for w in plan.inv_freq])  # fp32 values, exactly
    err = max((out[:, :half] - scale * exact[..., 1]).abs().max().item(),
              (out[:, half:] - scale * exact[..., 0]).abs().max().item())

    theta32 = torch.tensor(POSITIONS, dtype=torch.float32)[:, None] * plan.inv_freq  # transformers' angles
    hf = (torch.cos(theta32).double() * scale - scale * exact[..., 1]).abs().max().item()
    print(f"\nrotary {rope}: positions to 2^31-1, posemb {err:.2e}, transformers' fp32 angles {hf:.2e}")
    assert err <= TOL * max(1.0, scale)
    assert hf > 1e-2


def test_positions_wrap_nowhere_below_2_31():
    """Positions are int64 through the op: 2^31 - 1 and its neighbours are
    not wrapped to negative values on the way."""
    a = posemb.sinusoidal_table(3, 8, offset=2**31 - 2)
    b = positions_table([2**31 - 2, 2**31 - 1, 2**31], 8, "cpu", torch.float32)
    assert torch.equal(a, b)
    assert math.isfinite(a.abs().max().item())


def test_cpu_vector_and_portable_loops_agree_bitwise(tmp_path):
    """The AVX-512 and AVX2 loops (where this CPU has them: ATen's own
    capability, then ATEN_CPU_CAPABILITY=avx2) and the portable loops
    (ATEN_CPU_CAPABILITY=default) compute the same bits: one angle core."""
    import os
    import subprocess
    import sys

    # Positions below and above 2^32 (the vector loop's two angle paths).
    code = ("import torch, posemb, sys; q = torch.ones(1, 40, 1, 64); "
            "t = posemb.sinusoidal_table(40, 128, offset=2**31 - 40); "
            "w = posemb.sinusoidal_table(40, 130, offset=2**32 - 20); "
            "r = posemb.rotary(q, None, posemb.rope.frequency_plan({'rope_theta': 5e5}, 64).inv_freq, offset=2**30); "
            # Rotary with position axes (one vector run per axis), integral
            # timesteps (the vector row) beside fractional ones, the 2-D grid.
            "m = posemb.rotary(q, None, posemb.rope.frequency_plan({'rope_theta': 1e6}, 64).inv_freq, "
            "torch.arange(120).view(3, 40) * 7919, mrope_section=[8, 12, 12]); "
            "s = torch.tensor([0., 1., 999., -3., 2.**40, 0.5, 123.25]); "
            "e = (posemb.timestep_embedding(s, 321), posemb.timestep_embedding(s, 64, flip_sin_to_cos=True, "
            "dtype=torch.bfloat16)); "
            "g = posemb.sincos_2d_add(torch.zeros(2, 12, 32), posemb.sincos_2d_positions(3, 16.0), "
            "posemb.sincos_2d_positions(4, 16.0)); "
            # The fused bf16 add: 16-, 8- and 1-wide steps, a NaN and an inf
            # in some 16-channel blocks (the rounding with and without its NaN
            # select). Inputs from integers: torch's own randn differs between
            # the two capabilities.
            "x = ((torch.arange(3 * 7 * 203) * 7919 % 2001 - 1000) / 97.0).view(3, 7, 203).bfloat16(); "
            "x[0, 0, 5] = float('nan'); x[1, 2, 17] = float('inf'); x[2, 3, 201] = float('nan'); "
            "b = (posemb.sinusoidal_add(x, scale=3.5), posemb.sinusoidal_add_(x.clone(), offset=7, layout='half')); "
            # bf16 0x7FFF, a NaN that rounding without the NaN select would keep
            # (0x7FC0 is the same either way), in whole vector steps.
            "nan_7fff = torch.tensor([0x7FFF], dtype=torch.int16).view(torch.bfloat16)[0]; "
            "xn = x.clone(); xn[1, 4, 40] = nan_7fff; xn[2, 6, 100] = nan_7fff; "
            "b += (posemb.sinusoidal_add(xn, scale=3.5), posemb.sinusoidal_add_(xn.clone(), offset=7, layout='half')); "
            # x * scale + PE rounded once (one FMA) on every path, an inexact scale.
            "f = x.float(); b += tuple(posemb.sinusoidal_add(f.to(d), scale=384 ** 0.5) "
            "for d in (torch.float32, torch.float64, torch.float16)); "
            # The next row's encoding computed inside the fused sweep: more
            # batch entries than one sweep group, padding rows (two in a row)
            # between computed ones, positions past 2^32 and negative ones,
            # per-sequence offsets.
            "pos = torch.tensor([[0, 1, 2, 1, 1, 5, 2**32 + 3], [-7, -2**40, 3, -1, 2**33, -2**33, 0]]); "
            "b += tuple(posemb.sinusoidal_add(f[:, :, :200].repeat(4, 1, 1), pos[i:i + 1], padding_idx=1, layout=l) "
            "for l in ('interleaved', 'half') for i in (0, 1)); "
            # Rows whose last frequencies fill 9-15 of 16 lanes (half 29 and 45),
            # an odd dim: the 16-wide loop's masked tails.
            "b += tuple(posemb.sinusoidal_add(f[:, :, :k].to(d), offset=3, layout=l) for k in (58, 91) "
            "for l in ('interleaved', 'half') for d in (torch.float32, torch.bfloat16, torch.float16)); "
            "b += (posemb.sinusoidal_add(f, offset=torch.tensor([0, 2**32, 5]), layout='half'), "
            "posemb.sinusoidal_add(f.bfloat16(), offset=torch.tensor([9, 2**31, 4]))); "
            # Rotary of non-trivial q and k: 8-wide and scalar steps (half 12),
            # channels past rotary_dim, bf16 and fp16, in place.
            "v = ((torch.arange(2 * 9 * 3 * 28) * 7919 % 2001 - 1000) / 97.0).view(2, 9, 3, 28); "
            # Frequencies by division, exact on every capability (exp may differ in the last bit).
            "inv = 1 / (1 + torch.arange(12.)); "
            "o = [y for d in (torch.float32, torch.bfloat16, torch.float16) "
            "for y in posemb.rotary(v.to(d), v[:, :, :1].to(d) * 2, inv, offset=5, attention_scaling=1.3)]; "
            "o.append(posemb.rotary(v.clone(), None, inv, offset=7, inplace=True)); "
            # 16-, 8- and 1-wide bf16 steps (half 28), (batch, heads, seq) storage,
            # NaNs in 16-wide steps whose payload the NaN select changes.
            "wr = ((torch.arange(2 * 3 * 35 * 56) * 7919 % 2001 - 1000) / 97.0).view(2, 3, 35, 56).bfloat16(); "
            "wr[1, 2, 30, 5] = nan_7fff; wr[0, 1, 3, 40] = nan_7fff; "
            "o += list(posemb.rotary(wr, wr[:, :1] * 2, 1 / (1 + torch.arange(28.)), offset=3, seq_dim=2)); "
            # The 2-D and 3-D grids' fused adds in every storage type: segments
            # of 16-, 8- and 1-wide steps (dim 88: 44 channels per 2-D axis,
            # and dim 96 in 3-D: 36 per spatial axis, 24 for frames), a NaN,
            # integral and fractional positions.
            "gx = ((torch.arange(2 * 24 * 88) * 7919 % 2001 - 1000) / 97.0).view(2, 24, 88); "
            "gx[1, 3, 50] = float('nan'); "
            "o += [posemb.sincos_2d_add(gx.to(d), torch.tensor([0., 1., 2.]), posemb.sincos_2d_positions(8, 3.0)) "
            "for d in (torch.float32, torch.bfloat16, torch.float16)]; "
            "g3 = ((torch.arange(24 * 96) * 7919 % 2001 - 1000) / 97.0).view(1, 24, 96); "
            "o.append(posemb.sincos_2d_add(g3.bfloat16(), torch.tensor([0., 1.5]), torch.tensor([0., 2., 4.]), "
            "pos_t=torch.tensor([0., 1., 2., 3.]))); "
            "torch.save(((t, w, r, m, *e, g, *b, *o), torch.backends.cpu.get_cpu_capability()), sys.argv[1])")
    results, capabilities = [], []
    for capability in (None, "avx2", "default"):
        env = dict(os.environ)
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        path = str(tmp_path / f"angles-{capability}.pt")
        subprocess.run([sys.executable, "-c", code, path], env=env, check=True)
        outputs, used = torch.load(path)
        results.append(outputs)
        capabilities.append(used)
    # The capability each run had (the first is the CPU's own: AVX512 where
    # posemb's AVX-512 loops run, else the AVX2 run again).
    assert capabilities[1] in ("AVX2", "DEFAULT") and capabilities[2] == "DEFAULT", capabilities
    for *vector, portable in zip(*results):  # bitwise, NaNs included
        for v in vector:
            assert torch.equal(v.contiguous().view(torch.uint8), portable.contiguous().view(torch.uint8))
