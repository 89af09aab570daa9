"""rotary with positions that have axes: multimodal rope (Qwen2-VL's
contiguous (t, h, w) sections, Qwen3-VL's interleaved ones) and axial 2-D
rotary, through mrope_section / mrope_interleaved."""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.library import opcheck

import posemb
from posemb import reference
from posemb.rope import frequency_plan

from conftest import FLOAT_DTYPES, ulp_distance

OP, OP_, BACKWARD = torch.ops.posemb.rotary.default, torch.ops.posemb.rotary_.default, torch.ops.posemb.rotary_backward.default


def inv_freq(rotary_dim, base=10000.0):
    return frequency_plan({"rope_theta": base}, rotary_dim).inv_freq


def g():
    return torch.Generator().manual_seed(0)


# (name, q shape, k shape, rotary_dim, positions shape, kwargs)
CASES = [
    ("qwen2-vl-thw", (2, 7, 4, 32), (2, 7, 2, 32), 32, (3, 2, 7), dict(mrope_section=[4, 6, 6])),
    ("qwen3-vl-interleaved", (2, 7, 4, 32), (2, 7, 2, 32), 32, (3, 2, 7),
     dict(mrope_section=[8, 4, 4], mrope_interleaved=True)),
    ("axial-2d-hw", (1, 16, 2, 64), (1, 16, 2, 64), 64, (2, 1, 16), dict(mrope_section=[16, 16])),
    ("video-3d-bhsd", (2, 3, 5, 48), (2, 1, 5, 48), 48, (3, 2, 5), dict(mrope_section=[8, 8, 8], seq_dim=2)),
    ("shared-batch-positions", (3, 5, 2, 16), (3, 5, 2, 16), 16, (3, 5), dict(mrope_section=[2, 3, 3])),
    ("one-axis-broadcast", (2, 5, 2, 16), (2, 5, 2, 16), 16, (1, 2, 5), dict(mrope_section=[2, 3, 3])),
    ("empty-section", (2, 5, 2, 16), (2, 5, 2, 16), 16, (3, 2, 5), dict(mrope_section=[3, 0, 5])),
    ("partial", (2, 5, 2, 40), (2, 5, 2, 40), 24, (3, 2, 5), dict(mrope_section=[4, 4, 4])),
    ("gptj-pairs", (2, 5, 2, 16), (2, 5, 2, 16), 16, (3, 2, 5), dict(mrope_section=[2, 3, 3], interleaved=True)),
    ("four-axes", (2, 5, 2, 16), (2, 5, 2, 16), 16, (4, 2, 5), dict(mrope_section=[2, 2, 2, 2])),
]
IDS = [c[0] for c in CASES]


def make(case, device="cpu", dtype=torch.float32, high=1 << 20):
    _, qs, ks, rotary_dim, ps, kw = case
    gen = g()
    q = torch.randn(*qs, generator=gen).to(device, dtype)
    k = torch.randn(*ks, generator=gen).to(device, dtype)
    positions = torch.randint(0, high, ps, generator=gen).to(device)
    return q, k, inv_freq(rotary_dim).to(device), positions, kw


def ref(x, w, positions, kw):
    seq_dim = kw.get("seq_dim", 1)
    xb = x.transpose(1, 2) if seq_dim == 2 else x
    out = reference.rotary(xb, w, positions, interleaved=kw.get("interleaved", False),
                           mrope_section=kw["mrope_section"], mrope_interleaved=kw.get("mrope_interleaved", False))
    return out.transpose(1, 2) if seq_dim == 2 else out


def check_close(out, expected, dtype):
    if dtype in (torch.float32, torch.float64):
        tol = 2.5e-7 * 8 if dtype == torch.float32 else 1e-12  # |x| up to ~4: 2.5e-7 per unit of |x|
        torch.testing.assert_close(out.cpu().double(), expected, rtol=0, atol=tol)
    else:
        dist = ulp_distance(out.cpu(), expected.to(dtype))
        err = (out.cpu().double() - expected).abs()
        assert bool(((dist <= 1) | (err <= 4e-6)).all())


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_fp64_reference(case, dtype, device):
    q, k, w, positions, kw = make(case, device, dtype)
    q_out, k_out = posemb.rotary(q, k, w, positions, **kw)
    check_close(q_out, ref(q, w, positions, kw), dtype)
    check_close(k_out, ref(k, w, positions, kw), dtype)


def test_reference_follows_hugging_face_recomposition():
    """reference.mrope_axes lays frequencies out as transformers' Qwen2-VL and
    Qwen3-VL rotary modules do (their recomposition code, run on the axis index)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

    section = [16, 24, 24]
    axis_index = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 1, 64).clone()
    qwen2 = Qwen2VLRotaryEmbedding.recomposition_frequencies(type("M", (), {"mrope_section": section})(), axis_index)
    assert qwen2[0, 0, :64].tolist() == reference.mrope_axes(section)
    section3 = [24, 20, 20]
    qwen3 = Qwen3VLTextRotaryEmbedding.recomposition_frequencies(type("M", (), {"mrope_section": section3})(),
                                                                 axis_index.clone())
    assert qwen3[0, 0, :64].tolist() == reference.mrope_axes(section3, interleaved=True)


def test_each_axis_turns_its_own_frequencies(device):
    """Moving one axis' positions changes exactly the channels of that axis'
    frequencies (halves pairing: channels i and i + rotary_dim/2)."""
    case = CASES[1]  # interleaved sections: every axis owns scattered frequencies
    q, k, w, positions, kw = make(case, device)
    base, _ = posemb.rotary(q, k, w, positions, **kw)
    owner = torch.tensor(reference.mrope_axes(kw["mrope_section"], kw["mrope_interleaved"]))
    for axis in range(3):
        moved = positions.clone()
        moved[axis] += 1
        out, _ = posemb.rotary(q, k, w, moved, **kw)
        changed = (out != base).any(0).any(0).any(0).cpu()
        assert torch.equal(changed, torch.cat([owner == axis, owner == axis]))


def test_one_axis_equals_plain_rotary(device):
    """Positions shared by every axis are ordinary rotary, bit for bit."""
    q, k, w, positions, kw = make(CASES[0], device)
    mixed = posemb.rotary(q, k, w, positions[:1], **kw)
    plain = posemb.rotary(q, k, w, positions[0])
    assert torch.equal(mixed[0], plain[0]) and torch.equal(mixed[1], plain[1])


def test_packed_sequences(device):
    q, k = torch.randn(9, 3, 32, generator=g()).to(device), torch.randn(9, 1, 32, generator=g()).to(device)
    positions = torch.randint(0, 5000, (3, 9), generator=g()).to(device)
    cu = torch.tensor([0, 4, 9], dtype=torch.int32, device=device)
    w = inv_freq(32).to(device)
    q_out, k_out = posemb.rotary(q, k, w, positions, cu_seqlens=cu, mrope_section=[4, 6, 6])
    batched = posemb.rotary(q[None], k[None], w, positions[:, None], mrope_section=[4, 6, 6])
    assert torch.equal(q_out, batched[0][0]) and torch.equal(k_out, batched[1][0])


def test_inplace_equals_out_of_place(device):
    q, k, w, positions, kw = make(CASES[1], device)
    expected = posemb.rotary(q, k, w, positions, **kw)
    posemb.rotary(q, k, w, positions, inplace=True, **kw)
    assert torch.equal(q, expected[0]) and torch.equal(k, expected[1])


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_opcheck(case, device):
    q, k, w, positions, kw = make(case, device)
    kw = dict(kw, mrope_interleaved=kw.get("mrope_interleaved", False))
    opcheck(OP, (q.requires_grad_(), k.requires_grad_(), w, positions), kw)
    opcheck(OP_, (q.detach().clone(), k.detach().clone(), w, positions), kw)
    opcheck(BACKWARD, (q.detach(), k.detach(), w, positions), kw)


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_gradcheck_fp64(case, device):
    q, k, w, positions, kw = make(case, device, torch.float64, high=1000)
    q, k = q[:1, :3].clone().requires_grad_(), k[:1, :3].clone().requires_grad_()
    positions = positions[:, :1, :3]
    assert torch.autograd.gradcheck(lambda a, b: posemb.rotary(a, b, w, positions, **kw), (q, k))
    assert torch.autograd.gradgradcheck(lambda a, b: posemb.rotary(a, b, w, positions, **kw), (q, k))


@pytest.mark.compile
def test_compile_fullgraph(device):
    q, k, w, positions, kw = make(CASES[1], device)
    torch._dynamo.reset()

    def f(q, k, positions):
        return posemb.rotary(q, k, w, positions, **kw)

    compiled = torch.compile(f, fullgraph=True)
    out = compiled(q, k, positions)
    expected = f(q, k, positions)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


def test_module_takes_sections_from_the_rope_parameters():
    rope = posemb.nn.RotaryEmbedding(32, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                          "mrope_section": [8, 4, 4], "mrope_interleaved": True})
    q, k, w, positions, kw = make(CASES[1])
    out = rope(q, k, positions)
    expected = posemb.rotary(q, k, w, positions, **kw)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    assert "mrope_section=[8, 4, 4]" in repr(rope)


def _t(*shape):
    return torch.zeros(*shape)


def _p(*shape):
    return torch.zeros(*shape, dtype=torch.long)


ERRORS = [
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), mrope_section=[1, 1]),
     r"mrope_section must add up to len\(inv_freq\) = rotary_dim / 2 = 4, got \[1, 1\] \(sum 2\)"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), mrope_section=[]),
     r"mrope_section must hold 1 to 4 section sizes"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(5, 2, 3), mrope_section=[1, 1, 1, 1, 0]),
     r"mrope_section must hold 1 to 4 section sizes"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), mrope_section=[5, -1, 0]),
     r"mrope_section sizes must not be negative"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), mrope_section=[0, 1, 3], mrope_interleaved=True),
     r"interleaved mrope_section \[0, 1, 3\]: axis 2's frequencies \(2, 5, ...\) reach index 8, past the last, 3"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, mrope_section=[2, 1, 1]),
     r"mrope_section needs positions, one row per axis: \(3, batch, seq\)"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, None, _p(2), mrope_section=[2, 1, 1]),
     r"mrope_section needs positions"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), _p(2), mrope_section=[2, 1, 1]),
     r"with mrope_section, pass positions \(one row per axis\), not offsets"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(2, 2, 3), mrope_section=[2, 1, 1]),
     r"with mrope_section, positions must be \(axes, batch, seq\) or \(axes, seq\) with axes = len\(mrope_section\) = 3"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3), mrope_section=[2, 1, 1]),
     r"with mrope_section, positions must be \(axes, batch, seq\)"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 4), mrope_section=[2, 1, 1]),
     r"positions must be \(seq,\) or broadcastable to \(batch, seq\)"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _t(3, 2, 3), mrope_section=[2, 1, 1]),
     r"positions must be an integer tensor"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), mrope_interleaved=True),
     r"mrope_interleaved needs mrope_section"),
    (lambda w: OP(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), offset=1, mrope_section=[2, 1, 1]),
     r"offset must be 0 when positions are given"),
    (lambda w: OP_(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), mrope_section=[2, 1]),
     r"mrope_section must add up to"),
    (lambda w: BACKWARD(_t(2, 3, 2, 8), _t(2, 3, 2, 8), w, _p(3, 2, 3), mrope_section=[9, 1, 1]),
     r"mrope_section must add up to"),
    (lambda w: OP(_t(6, 2, 8), _t(6, 2, 8), w, _p(3, 7), cu_seqlens=_p(2), mrope_section=[2, 1, 1]),
     r"positions must be \(seq,\) or broadcastable"),
]


@pytest.mark.parametrize("fake", [False, True], ids=["real", "fake"])
@pytest.mark.parametrize("call,message", ERRORS, ids=[m for _, m in ERRORS])
def test_errors_name_op_and_argument(call, message, fake):
    with FakeTensorMode() if fake else torch.no_grad():
        with pytest.raises(RuntimeError, match=r"posemb.rotary(_|_backward)?: " + message):
            call(torch.ones(4))


@pytest.mark.parametrize("interleaved", [False, True], ids=["qwen2-vl", "qwen3-vl"])
def test_fp32_contract_up_to_2_31_and_transformers_error_beside_it(interleaved):
    """The angle of every (token, frequency) is exact for its own axis'
    position: fp32 cos and sin within 2.5e-7 at positions up to 2^31 - 1.
    Printed beside it: the same cos formed as transformers does (fp32
    position * fp32 inv_freq)."""
    section = [8, 4, 4] if interleaved else [4, 6, 6]
    w = inv_freq(32, 1e6)
    g = torch.Generator().manual_seed(9)
    positions = torch.cat([torch.randint(0, 2**31, (3, 1, 40), generator=g),
                           torch.tensor([0, 1, 2**31 - 1, 2**24 + 1]).expand(3, 1, 4)], dim=-1)
    unit = (torch.arange(32) < 16).float().expand(1, 44, 1, 32)  # turned: (cos, sin) of each angle
    out = posemb.rotary(unit, None, w, positions, mrope_section=section, mrope_interleaved=interleaved)[0, :, 0]
    axes = torch.tensor(reference.mrope_axes(section, interleaved))
    theta = positions[:, 0].double().T[:, axes] * w.double()
    err = max((out[:, :16].double() - torch.cos(theta)).abs().max().item(),
              (out[:, 16:].double() - torch.sin(theta)).abs().max().item())
    naive = positions[:, 0].T[:, axes].float() * w
    naive_err = (torch.cos(naive).double() - torch.cos(theta)).abs().max().item()
    print(f"mrope {section} interleaved={interleaved}: posemb {err:.2e}, transformers' fp32 angles {naive_err:.2e}")
    assert err <= 2.5e-7
