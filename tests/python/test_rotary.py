"""rotary, rotary_, rotary_backward and posemb.nn.RotaryEmbedding."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.library import opcheck

import posemb
from posemb import reference
from posemb.rope import frequency_plan

from conftest import FLOAT_DTYPES, ulp_distance

os.environ.setdefault("HF_HUB_OFFLINE", "1")
OP, OP_, BACKWARD = torch.ops.posemb.rotary.default, torch.ops.posemb.rotary_.default, torch.ops.posemb.rotary_backward.default


def inv_freq(rotary_dim, base=10000.0):
    return frequency_plan({"rope_theta": base}, rotary_dim).inv_freq


@dataclasses.dataclass
class Case:
    name: str
    q: torch.Tensor
    k: Optional[torch.Tensor]
    inv_freq: torch.Tensor
    kwargs: Dict[str, Any]

    def __repr__(self):
        return self.name


def cases():
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    qkv = r(2, 7, 3, 4, 32)  # a fused projection: q, k, v are views
    out = [
        Case("bshd", r(2, 5, 4, 16), r(2, 5, 4, 16), inv_freq(16), {}),
        Case("bhsd", r(2, 4, 5, 16), r(2, 2, 5, 16), inv_freq(16), dict(seq_dim=2)),
        Case("sbhd", r(5, 2, 4, 16), r(5, 2, 1, 16), inv_freq(16), dict(seq_dim=0)),
        Case("gqa-17-heads-odd-len", r(1, 9, 17, 8), r(1, 9, 1, 8), inv_freq(8), {}),
        Case("no-k", r(2, 3, 2, 8), None, inv_freq(8), {}),
        Case("partial", r(2, 5, 3, 80), r(2, 5, 3, 80), inv_freq(32), {}),
        Case("interleaved-partial", r(2, 5, 2, 96), r(2, 5, 2, 96), inv_freq(64), dict(interleaved=True)),
        Case("fused-qkv-views", qkv[:, :, 0], qkv[:, :, 1], inv_freq(32), dict(offset=11)),
        Case("storage-offset", r(3, 6, 2, 24)[1:, 1:], r(3, 6, 2, 24)[1:, 1:], inv_freq(24), {}),
        Case("offsets-per-seq", r(3, 1, 4, 64), r(3, 1, 2, 64), inv_freq(64), dict(offset=torch.tensor([5, 900, 70000]))),
        Case("positions-2d", r(2, 4, 2, 128), r(2, 4, 2, 128), inv_freq(128), dict(positions=torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]]))),
        Case("stride0-positions", r(2, 4, 2, 256), r(2, 4, 2, 256), inv_freq(256, 500000.0), dict(positions=torch.tensor(42).expand(4))),
        Case("head-dim-2", r(2, 3, 2, 2), r(2, 3, 2, 2), inv_freq(2), dict(attention_scaling=1.25)),
        Case("empty-seq", r(2, 0, 2, 8), r(2, 0, 2, 8), inv_freq(8), {}),
        # The CPU kernel's 32-token tiles: a partial last tile, heads swept
        # outer in (batch, heads, seq, head_dim), tokens outer otherwise.
        Case("bhsd-tiles-partial", r(1, 2, 40, 12), r(1, 1, 40, 12), inv_freq(8),
             dict(seq_dim=2, offset=torch.tensor([2**20]))),
        Case("bshd-tiles-positions", r(2, 70, 3, 32), r(2, 70, 1, 32), inv_freq(32),
             dict(positions=torch.arange(140).view(2, 70) * 37 % 101)),
    ]
    return out


CASES = cases()


def packed_case():
    q, k = torch.randn(12, 3, 16), torch.randn(12, 1, 16)
    cu = torch.tensor([0, 5, 5, 12], dtype=torch.int32)  # uneven, one empty sequence
    positions = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6])
    return q, k, cu, positions


def reference_rotary(case, x):
    kw = case.kwargs
    seq_dim = kw.get("seq_dim", 1)
    xb = x if seq_dim == 1 else (x.transpose(1, 2) if seq_dim == 2 else x.transpose(0, 1))
    pos = reference.token_positions(xb.shape[0], xb.shape[1], kw.get("positions"), kw.get("offset", 0))
    out = reference.rotary(xb, case.inv_freq, pos, attention_scaling=kw.get("attention_scaling", 1.0),
                           interleaved=kw.get("interleaved", False))
    return out if seq_dim == 1 else (out.transpose(1, 2) if seq_dim == 2 else out.transpose(0, 1))


def on(case, device, dtype):
    def move(t):
        return None if t is None else t.to(device=device, dtype=dtype)

    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in case.kwargs.items()}
    return move(case.q), move(case.k), case.inv_freq.to(device), kw


def check_close(out, ref, dtype):
    if dtype in (torch.float32, torch.float64):
        tol = 2e-6 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(out.cpu().double(), ref, rtol=tol, atol=tol)
    else:  # one rounding of an fp32 result: the reference rounded, or one ulp off (or fp32-level near 0)
        dist = ulp_distance(out.cpu(), ref.to(dtype))
        err = (out.cpu().double() - ref).abs()
        assert bool(((dist <= 1) | (err <= 4e-6)).all())


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_matches_fp64_reference(case, dtype, device):
    q, k, w, kw = on(case, device, dtype)
    out = posemb.rotary(q, k, w, **kw)
    q_out, k_out = (out, None) if k is None else out
    check_close(q_out, reference_rotary(case, q), dtype)
    if k is not None:
        check_close(k_out, reference_rotary(case, k), dtype)


def test_packed_sequences_restart_positions(device):
    q, k, cu, positions = packed_case()
    w = inv_freq(16)
    q_out, k_out = posemb.rotary(q.to(device), k.to(device), w.to(device), cu_seqlens=cu.to(device))
    ref_q = reference.rotary(q.unsqueeze(0), w, positions).squeeze(0)
    torch.testing.assert_close(q_out.cpu().double(), ref_q, rtol=2e-6, atol=2e-6)
    offsets = torch.tensor([10, 0, 100], device=device)
    q_off = posemb.rotary(q.to(device), None, w.to(device), offset=offsets, cu_seqlens=cu.to(device))
    shifted = positions + torch.tensor([10] * 5 + [100] * 7)
    torch.testing.assert_close(q_off.cpu().double(), reference.rotary(q.unsqueeze(0), w, shifted).squeeze(0),
                               rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("case", [c for c in CASES if c.k is not None], ids=repr)
def test_inplace_writes_q_and_k_only(case, device):
    q, k, w, kw = on(case, device, torch.float32)
    expected_q, expected_k = posemb.rotary(q, k, w, **kw)
    base = case.q._base if case.q._base is not None else None
    q2, k2 = q.clone(), k.clone()
    posemb.rotary(q2, k2, w, inplace=True, **kw)
    torch.testing.assert_close(q2, expected_q, rtol=0, atol=0)
    torch.testing.assert_close(k2, expected_k, rtol=0, atol=0)
    if case.name == "fused-qkv-views":  # v, the third view, is untouched
        qkv = case.q._base.clone().to(device)
        v_before = qkv[:, :, 2].clone()
        posemb.rotary(qkv[:, :, 0], qkv[:, :, 1], w, inplace=True, **kw)
        assert torch.equal(qkv[:, :, 2], v_before)
        torch.testing.assert_close(qkv[:, :, 0], expected_q, rtol=0, atol=0)
    del base


@pytest.mark.parametrize("case", [c for c in CASES if c.k is not None and c.q.numel()], ids=repr)
def test_opcheck(case, device):
    q, k, w, kw = on(case, device, torch.float32)
    positions, offsets, offset = posemb.ops._position_args(kw.get("positions"), kw.get("offset", 0), None, None)
    rest = (w, positions, offsets, offset, None, kw.get("attention_scaling", 1.0), kw.get("interleaved", False),
            kw.get("seq_dim", 1))
    opcheck(OP, (q.requires_grad_(), k.requires_grad_(), *rest))
    opcheck(OP_, (q.detach().clone(), k.detach().clone(), *rest))
    opcheck(BACKWARD, (q.detach(), k.detach(), *rest))


def test_opcheck_packed(device):
    q, k, cu, _ = packed_case()
    opcheck(OP, (q.to(device), k.to(device), inv_freq(16).to(device)), {"cu_seqlens": cu.to(device)})


@pytest.mark.parametrize("case", [c for c in CASES if c.k is not None and c.q.numel()][::2], ids=repr)
def test_gradcheck_fp64(case, device):
    q, k, w, kw = on(case, device, torch.float64)
    q, k = q.detach().requires_grad_(), k.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: posemb.rotary(a, b, w, **kw), (q, k))


def test_backward_is_the_inverse_rotation(device):
    """A rotation times attention_scaling: its gradient is the rotation by
    -theta of the incoming gradient, and rotating forward then back gives
    the input scaled by attention_scaling squared."""
    q, k = torch.randn(2, 6, 3, 32, device=device), torch.randn(2, 6, 1, 32, device=device)
    w = inv_freq(32).to(device)
    q_out, k_out = posemb.rotary(q, k, w, offset=123, attention_scaling=1.5)
    back_q, back_k = BACKWARD(q_out, k_out, w, offset=123, attention_scaling=1.5)
    torch.testing.assert_close(back_q, q * 2.25, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(back_k, k * 2.25, rtol=1e-5, atol=1e-5)


def test_long_context_fp32_contract(device):
    """Positions up to 2^20: max abs error <= 2e-6 against fp64, where
    transformers' fp32 angles drift by ~3e-2 (tests/python/test_rope.py)."""
    w = frequency_plan({"rope_type": "default", "rope_theta": 500000.0}, 128).inv_freq
    positions = torch.arange(2**20 - 512, 2**20 + 1)
    q = torch.randn(1, positions.numel(), 2, 128)
    out = posemb.rotary(q.to(device), None, w.to(device), positions.to(device))
    err = (out.cpu().double() - reference.rotary(q, w, positions)).abs().max().item()
    print(f"\nrotary fp32 at positions near 2^20: max abs error {err:.2e}")
    assert err <= 2e-6 * max(1.0, q.abs().max().item())


@pytest.mark.compile
def test_compile_equals_eager_without_recompiles(device):
    from torch._dynamo.testing import CompileCounterWithBackend

    from test_sinusoidal import compiled_graphs

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    rope = posemb.nn.RotaryEmbedding(32, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0,
                                                          "original_max_position_embeddings": 64}).to(device)

    def f(q, k, offset):
        q2, k2 = rope(q, k, offset=offset)
        return (q2 * 2).sum(-1), k2

    cf = torch.compile(f, backend=counter, fullgraph=True, dynamic=True)
    for seq in (5, 9, 17, 33):
        q = torch.randn(2, seq, 4, 32, device=device, requires_grad=True)
        k = torch.randn(2, seq, 2, 32, device=device, requires_grad=True)
        a, b = cf(q, k, seq)
        (a.sum() + b.pow(2).sum()).backward()
        gq, gk = q.grad.clone(), k.grad.clone()
        q.grad = k.grad = None
        ea, eb = f(q, k, seq)
        (ea.sum() + eb.pow(2).sum()).backward()
        torch.testing.assert_close(a, ea)
        torch.testing.assert_close(b, eb)
        torch.testing.assert_close(gq, q.grad)
        torch.testing.assert_close(gk, k.grad)
    assert compiled_graphs(counter) == 1



@pytest.mark.compile
@pytest.mark.parametrize("rope_type", ["dynamic", "longrope"])
def test_length_dependent_plans_compile_into_one_graph(rope_type, device):
    """dynamic and longrope choose their frequencies from the call's largest
    position on the device, with no host read: one fullgraph graph serves
    positions within and past the original context (other frequencies
    there), equal to eager, for positions and for per-sequence offsets."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from test_sinusoidal import compiled_graphs

    params = {"rope_type": rope_type, "rope_theta": 1e4, "factor": 2.0}
    if rope_type == "longrope":
        params = dict(params, short_factor=[1.0 + 0.01 * i for i in range(16)],
                      long_factor=[1.0 + 0.2 * i for i in range(16)], original_max_position_embeddings=64)
    rope = posemb.nn.RotaryEmbedding(32, rope_parameters=params, max_position_embeddings=64).to(device)
    assert not torch.equal(rope._inv_freq_for(torch.tensor(200)), rope.inv_freq)  # past the context: other ones
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    by_positions = torch.compile(lambda q, k, p: rope(q, k, p), backend=counter, fullgraph=True)
    by_offset = torch.compile(lambda q, k, o: rope(q, k, offset=o), backend=counter, fullgraph=True)
    try:
        q, k = torch.randn(2, 8, 4, 32, device=device), torch.randn(2, 8, 2, 32, device=device)
        for start in (0, 10, 100, 190):  # the largest position below 64, then past it
            positions = (torch.arange(8, device=device) + start).repeat(2, 1)
            offsets = torch.tensor([start, start // 2], device=device)
            for got, want in ((by_positions(q, k, positions), rope(q, k, positions)),
                              (by_offset(q, k, offsets), rope(q, k, offset=offsets))):
                torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
                torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)
    finally:
        torch._dynamo.reset()
    assert compiled_graphs(counter) == 2  # one each, no recompiles


ERRORS = [
    (lambda t, w: OP(t(2, 3, 2, 8).long(), t(2, 3, 2, 8).long(), w), "q must be float32"),
    (lambda t, w: OP(t(2, 3, 8), t(2, 3, 8), w), r"q must be \(batch, seq, heads, head_dim\)"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8).double(), w), "k must have q's dtype, device and rank"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 4, 2, 8), w), "k must match q in every dimension but heads"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w.double()), "inv_freq must be a 1-D float32 tensor"),
    (lambda t, w: OP(t(2, 3, 2, 6), t(2, 3, 2, 6), w), r"rotary_dim = 2 \* len\(inv_freq\) = 8 must be in \[2, head_dim = 6\]"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, seq_dim=3), "seq_dim must be 0, 1 or 2"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, t(4).long()), r"positions must be \(seq,\) or broadcastable"),
    (lambda t, w: OP(t(6, 2, 8), t(6, 2, 8), w, cu_seqlens=t(3)), "cu_seqlens must be a 1-D integer tensor"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, cu_seqlens=t(3).long()), r"with cu_seqlens, q must be packed"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, offset=2**63 - 2), r"offset \+ seq - 1 must fit in int64"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, t(3)), "positions must be an integer tensor"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, t(3).long(), offset=2), "offset must be 0 when positions are given"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, None, t(3).long()), r"offsets must be a scalar or \(batch,\)"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, None, t(2)), "offsets must be an integer tensor"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w, t(3).long(), t(2).long()), "pass positions or offsets, not both"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), w.view(2, 2)), "inv_freq must be a 1-D float32 tensor"),
    (lambda t, w: OP(t(2, 3, 2, 8), t(2, 3, 2, 8), t(0)), r"rotary_dim = 2 \* len\(inv_freq\) = 0 must be in \[2, head_dim = 8\]"),
    (lambda t, w: OP(t(6, 2, 8), t(6, 2, 8), w, cu_seqlens=t(3, 1).long()), "cu_seqlens must be a 1-D integer tensor"),
    (lambda t, w: OP(t(6, 2, 8), t(6, 2, 8), w, cu_seqlens=t(1).long()), r"cu_seqlens must hold at least \[0, tokens\]"),
]


@pytest.mark.parametrize("fake", [False, True], ids=["real", "fake"])
@pytest.mark.parametrize("call,message", ERRORS, ids=[m for _, m in ERRORS])
def test_errors_name_op_and_argument(call, message, fake):
    with FakeTensorMode() if fake else torch.no_grad():
        w = torch.ones(4)
        with pytest.raises(RuntimeError, match=r"posemb.rotary: " + message):
            call(lambda *shape: torch.zeros(*shape), w)


@pytest.mark.parametrize("inplace", [False, True])
def test_bad_cu_seqlens_are_an_error_with_no_tokens(inplace):
    """An empty packed batch still gets its cu_seqlens checked."""
    q, k = torch.randn(0, 2, 8), torch.randn(0, 1, 8)
    for bad in ([0, 5], [3, 1, 0], [0, 0, -1]):
        with pytest.raises(RuntimeError, match=r"cu_seqlens must start at 0, never decrease and end at the number of tokens \(0\)"):
            posemb.rotary(q, k, torch.ones(4), cu_seqlens=torch.tensor(bad), inplace=inplace)
    posemb.rotary(q, k, torch.ones(4), cu_seqlens=torch.tensor([0, 0, 0]), inplace=inplace)


def test_offsets_past_int64_are_an_error():
    q = torch.randn(2, 3, 2, 8)
    with pytest.raises(RuntimeError, match="posemb.rotary: offsets \\+ seq - 1 must fit in int64, got an offset of 9223372036854775806 and seq=3"):
        posemb.rotary(q, None, torch.ones(4), offset=torch.tensor([0, 2**63 - 2]))
    posemb.rotary(q, None, torch.ones(4), offset=torch.tensor([0, 2**63 - 3]))  # the last position fits
    # Packed: each sequence's own length counts (the second holds 4 tokens).
    packed, cu = torch.randn(6, 2, 8), torch.tensor([0, 2, 6])
    for inplace in (False, True):
        with pytest.raises(RuntimeError, match=r"posemb.rotary_?: offsets \+ each sequence's length - 1 must fit in int64"):
            posemb.rotary(packed, None, torch.ones(4), cu_seqlens=cu, offset=torch.tensor([0, 2**63 - 3]),
                          inplace=inplace)
    posemb.rotary(packed, None, torch.ones(4), cu_seqlens=cu, offset=torch.tensor([2**63 - 2, 2**63 - 4]))


def test_bad_cu_seqlens_values_are_an_error():
    q = torch.randn(6, 2, 8)
    with pytest.raises(RuntimeError, match="cu_seqlens must start at 0, never decrease and end at the number of tokens"):
        posemb.rotary(q, None, torch.ones(4), cu_seqlens=torch.tensor([0, 4, 3, 6]))
    with pytest.raises(RuntimeError, match="end at the number of tokens \\(6\\)"):
        posemb.rotary(q, None, torch.ones(4), cu_seqlens=torch.tensor([0, 4, 5]))
    # The values are shown as a list, the first 16 of a long one.
    with pytest.raises(RuntimeError, match=r"\(6\), got \[0, 4, 3, 6\]$"):
        posemb.rotary(q, None, torch.ones(4), cu_seqlens=torch.tensor([0, 4, 3, 6]))
    with pytest.raises(RuntimeError, match=r"got \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15\] \.\.\.$"):
        posemb.rotary(q, None, torch.ones(4), cu_seqlens=torch.arange(20))


def test_module_errors_and_repr():
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        posemb.nn.RotaryEmbedding(64, rotary_dim=31)
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        posemb.nn.RotaryEmbedding(64, rotary_dim=96)
    m = posemb.nn.RotaryEmbedding(64, rotary_dim=32, interleaved=True)
    assert repr(m) == "RotaryEmbedding(head_dim=64, rotary_dim=32, rope_type='default', interleaved=True)"
    assert m.state_dict() == {}


@pytest.mark.parametrize("rope_type", ["default", "linear", "dynamic", "yarn", "llama3", "longrope"])
def test_module_matches_transformers_llama_rotary(rope_type):
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    from test_rope import CASES as PLANS

    params = next(p for p, _ in PLANS.values() if p["rope_type"] == rope_type)
    config = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=2048, rope_parameters=dict(params))
    hf = LlamaRotaryEmbedding(config)
    ours = posemb.nn.RotaryEmbedding.from_config(config, seq_dim=2)
    q, k = torch.randn(2, 4, 50, 64), torch.randn(2, 2, 50, 64)  # (batch, heads, seq, head_dim), as Llama
    positions = torch.arange(50).expand(2, 50)
    cos, sin = hf(q, positions)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    q_ours, k_ours = ours(q, k, positions)
    torch.testing.assert_close(q_ours, q_hf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_ours, k_hf, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rot_dim", [32, 64])
@pytest.mark.parametrize("offset", [0, 10])
def test_agrees_with_rotary_embedding_torch(rot_dim, offset):
    """rotary-embedding-torch pairs channels (2i, 2i+1) over its first `dim`
    channels: posemb's interleaved pairing with a partial rotary_dim."""
    ret = pytest.importorskip("rotary_embedding_torch")
    theirs = ret.RotaryEmbedding(dim=rot_dim)
    q = torch.randn(2, 3, 40, 64)  # (batch, heads, seq, head_dim), their default layout
    expected = theirs.rotate_queries_or_keys(q, offset=offset)
    ours = posemb.rotary(q, None, theirs.freqs.detach().float(), offset=offset, interleaved=True, seq_dim=2)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_module_rejects_a_bad_base(bad):
    with pytest.raises(ValueError, match="rope_theta must be a finite number > 0"):
        posemb.nn.RotaryEmbedding(64, base=bad)
    with pytest.raises(ValueError, match="factor must be a finite number > 0"):
        posemb.nn.RotaryEmbedding(64, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": bad})


def test_module_rejects_a_bad_seq_dim():
    with pytest.raises(ValueError, match="seq_dim must be 0, 1 or 2"):
        posemb.nn.RotaryEmbedding(64, seq_dim=3)


@pytest.mark.parametrize("cast", ["half", "bfloat16", "double", "to_bf16"])
def test_module_frequencies_stay_fp32_through_casts(cast):
    params = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 512}
    m = posemb.nn.RotaryEmbedding(64, rope_parameters=params, max_position_embeddings=2048)
    exact = m.inv_freq.clone()
    m = m.to(torch.bfloat16) if cast == "to_bf16" else getattr(m, cast)()
    assert m.inv_freq.dtype == torch.float32 and torch.equal(m.inv_freq, exact)
    dtype = {"half": torch.float16, "double": torch.float64}.get(cast, torch.bfloat16)
    q = torch.randn(2, 5, 4, 64, dtype=dtype)
    assert m(q).dtype == dtype


@pytest.mark.parametrize("rope_type", ["default", "yarn", "llama3"])
def test_module_built_on_meta_then_to_empty_computes_its_frequencies(rope_type):
    from test_rope import CASES as PLANS

    params = next(p for p, _ in PLANS.values() if p["rope_type"] == rope_type)
    normal = posemb.nn.RotaryEmbedding(64, rope_parameters=params, max_position_embeddings=2048)
    with torch.device("meta"):
        lazy = posemb.nn.RotaryEmbedding(64, rope_parameters=params, max_position_embeddings=2048)
    assert lazy.inv_freq.is_meta
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(normal.state_dict())
    q = torch.randn(2, 7, 4, 64)
    assert torch.equal(lazy(q), normal(q))
    lazy.inv_freq.fill_(float("nan"))
    lazy.reset_parameters()
    assert torch.equal(lazy.inv_freq, normal.inv_freq)


@pytest.mark.parametrize("rope_type", ["dynamic", "longrope"])
def test_module_packed_sequences_choose_frequencies_by_their_own_positions(rope_type):
    """dynamic and longrope depend on the largest position: on packed input
    that is the longest sequence's, not the total token count."""
    from test_rope import CASES as PLANS

    params = next(p for p, _ in PLANS.values() if p["rope_type"] == rope_type)
    params = dict(params, original_max_position_embeddings=64) if rope_type == "longrope" else params
    m = posemb.nn.RotaryEmbedding(64, rope_parameters=params, max_position_embeddings=64)
    lengths = [40, 50]  # each within the context, together past it
    packed = torch.randn(sum(lengths), 2, 64)
    cu = torch.tensor([0, 40, 90], dtype=torch.int32)
    out = m(packed, cu_seqlens=cu)
    for start, n in zip((0, 40), lengths):  # each sequence alone, batch-first
        alone = m(packed[start:start + n].unsqueeze(0))[0]
        torch.testing.assert_close(out[start:start + n], alone, rtol=0, atol=0)


def test_in_place_q_and_k_that_share_memory_are_an_error():
    inv_freq = torch.ones(4)
    q = torch.randn(2, 5, 4, 8)
    with pytest.raises(RuntimeError, match="posemb.rotary_: q and k share memory"):
        posemb.rotary(q, q, inv_freq, inplace=True)
    qkv = torch.randn(2, 5, 12, 8)
    with pytest.raises(RuntimeError, match="q and k share memory"):
        posemb.rotary(qkv[:, :, 0:6], qkv[:, :, 4:8], inv_freq, inplace=True)  # heads 4, 5 in both
    hf = torch.randn(2, 12, 5, 8).transpose(1, 2)  # (batch, seq, heads, dim) over a (b, h, s, d) buffer
    with pytest.raises(RuntimeError, match="q and k share memory"):
        posemb.rotary(hf[:, :, 0:6], hf[:, :, 5:9], inv_freq, inplace=True)
    # Strides that meet across the batch and sequence dimensions: q's (1, 0)
    # is k's (0, 1).
    buf = torch.randn(64)
    q = buf.as_strided((2, 2, 1, 2), (12, 10, 2, 1), 0)
    k = buf.as_strided((2, 2, 1, 2), (12, 10, 2, 1), 2)
    assert q[1, 0, 0].data_ptr() == k[0, 1, 0].data_ptr()
    with pytest.raises(RuntimeError, match="q and k share memory"):
        posemb.rotary(q, k, torch.ones(1), inplace=True)


def test_in_place_q_or_k_overlapping_itself_is_an_error():
    """Not only expanded views: an as_strided q whose sequence and head
    strides are equal addresses one element twice."""
    inv_freq = torch.ones(8)
    q = torch.randn(2000).as_strided((1, 5, 4, 16), (320, 16, 16, 1))
    with pytest.raises(RuntimeError, match="posemb.rotary_: q has overlapping memory"):
        posemb.rotary(q, None, inv_freq, inplace=True)
    k = torch.randn(2000).as_strided((1, 5, 4, 16), (320, 64, 8, 1))  # heads 8 apart, 16 wide
    with pytest.raises(RuntimeError, match="posemb.rotary_: k has overlapping memory"):
        posemb.rotary(torch.randn(1, 5, 4, 16), k, inv_freq, inplace=True)
    q = torch.randn(1, 5, 16).unsqueeze(2).expand(1, 5, 4, 16)
    with pytest.raises(RuntimeError, match="posemb.rotary_: q has overlapping memory"):
        posemb.rotary(q, None, inv_freq, inplace=True)


def test_in_place_overlap_checks_agree_with_counting_elements():
    """Random as_strided q and k over one small buffer: rotary_ refuses them
    exactly when an element is addressed twice (by q, by k, or by both), as
    counting the addressed offsets says, and otherwise equals the
    out-of-place op."""
    import itertools
    import random

    rng = random.Random(0)
    inv = torch.tensor([0.5, 0.25])  # head_dim 4, contiguous as the kernel needs
    refused = accepted = 0
    for _ in range(400):
        def view(batch, seq):
            sizes = [batch, seq, rng.randint(1, 3), 4]
            strides = [rng.choice([0, 2, 4, 5, 6, 8, 12, 16, 24]) for _ in range(3)] + [1]
            extent = sum((n - 1) * st for n, st in zip(sizes, strides)) + 1
            return sizes, strides, rng.randint(0, 160 - extent)

        batch, seq = rng.randint(1, 3), rng.randint(1, 3)
        (qs, qst, qo), (ks, kst, ko) = view(batch, seq), view(batch, seq)

        def offsets(sizes, strides, start):
            return [start + sum(i * st for i, st in zip(index, strides))
                    for index in itertools.product(*(range(n) for n in sizes))]

        oq, ok = offsets(qs, qst, qo), offsets(ks, kst, ko)
        shared = len(set(oq)) < len(oq) or len(set(ok)) < len(ok) or bool(set(oq) & set(ok))
        buf = torch.randn(160)
        q, k = buf.as_strided(qs, qst, qo), buf.as_strided(ks, kst, ko)
        if shared:
            with pytest.raises(RuntimeError, match="posemb.rotary_: (q|k) has overlapping memory|q and k share memory"):
                posemb.rotary(q, k, inv, offset=2, inplace=True)
            refused += 1
        else:
            want_q, want_k = posemb.rotary(q, k, inv, offset=2)
            posemb.rotary(q, k, inv, offset=2, inplace=True)
            assert torch.equal(q, want_q) and torch.equal(k, want_k)
            accepted += 1
    assert refused > 50 and accepted > 50, (refused, accepted)


@pytest.mark.parametrize("layout", ["neox-qkv", "vllm-query-slice", "qkv-heads", "q-before-k-per-token"])
def test_in_place_on_views_that_do_not_meet(layout):
    """Views that share a storage but no element turn in place exactly as
    out of place: q and k split from GPT-NeoX's (b, s, heads, 3 * d) qkv on
    the last dimension (interleaved per head), vLLM's query sliced from a
    qkv buffer beside a separate key, Llama's qkv split on heads, and
    (tokens, 3, heads, d) split on the middle dimension."""
    d, h = 16, 4
    w = inv_freq(d)
    if layout == "neox-qkv":
        qkv = torch.randn(2, 5, h, 3 * d)
        q, k = qkv[..., :d], qkv[..., d:2 * d]
    elif layout == "vllm-query-slice":
        q, k = torch.randn(2, 5, 3 * h, d)[:, :, :h], torch.randn(2, 5, 2, d)
    elif layout == "qkv-heads":
        qkv = torch.randn(2, 5, 3 * h, d)
        q, k = qkv[:, :, :h], qkv[:, :, h:2 * h]
    else:
        qkv = torch.randn(2, 5, 3, h, d)
        q, k = qkv[:, :, 0], qkv[:, :, 1]
    want_q, want_k = posemb.rotary(q, k, w, offset=3)
    posemb.rotary(q, k, w, offset=3, inplace=True)
    assert torch.equal(q, want_q) and torch.equal(k, want_k)


@pytest.mark.parametrize("with_k", [True, False], ids=["q-and-k", "q-only"])
def test_in_place_in_training_on_views_of_a_projection(with_k, device):
    """In place on q, k sliced from proj(h).view(...), which require grad:
    the values and every gradient equal the out-of-place op's, and q, k
    sharing memory stays an error when autograd is recording."""
    w = inv_freq(16).to(device)

    def step(inplace):
        torch.manual_seed(0)
        proj = torch.nn.Linear(8, 3 * 2 * 16, dtype=torch.float64, device=device)
        h = torch.randn(2, 5, 8, dtype=torch.float64, device=device, requires_grad=True)
        qkv = proj(h).view(2, 5, 3, 2, 16)
        q, k = qkv[:, :, 0], (qkv[:, :, 1] if with_k else None)
        out = posemb.rotary(q, k, w, offset=7, inplace=inplace)
        if inplace:
            rotated = qkv
        else:
            q_out, k_out = out if with_k else (out, qkv[:, :, 1])
            rotated = torch.stack([q_out, k_out, qkv[:, :, 2]], dim=2)
        weights = torch.arange(rotated.numel(), dtype=rotated.dtype, device=device).view_as(rotated)
        (rotated * weights).sum().backward()
        return rotated.detach(), proj.weight.grad, proj.bias.grad, h.grad

    for a, b in zip(step(False), step(True)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    qkv = torch.randn(2, 5, 3, 2, 16, device=device, requires_grad=True).clone()
    with pytest.raises(RuntimeError, match="posemb.rotary_: q and k share memory"):
        posemb.rotary(qkv[:, :, 0], qkv[:, :, 0], w, inplace=True)


@pytest.mark.parametrize("seq_dim", [1, 2])
def test_in_place_on_slices_of_one_fused_qkv_tensor(seq_dim):
    """q, k (and v) sliced from one projection: disjoint, so in place works
    and equals out of place, and v is untouched."""
    inv_freq = posemb.rope.frequency_plan({"rope_theta": 1e4}, 8).inv_freq
    qkv = torch.randn(2, 5, (4 + 2 + 2) * 8)
    heads = qkv.view(2, 5, 8, 8)
    if seq_dim == 2:
        heads = heads.transpose(1, 2)  # (batch, heads, seq, dim), as Llama's attention has them
        q, k, v = heads[:, :4], heads[:, 4:6], heads[:, 6:]
    else:
        q, k, v = heads[:, :, :4], heads[:, :, 4:6], heads[:, :, 6:]
    expected_q, expected_k = posemb.rotary(q, k, inv_freq, seq_dim=seq_dim)
    v_before = v.clone()
    posemb.rotary(q, k, inv_freq, seq_dim=seq_dim, inplace=True)
    assert torch.equal(q, expected_q) and torch.equal(k, expected_k) and torch.equal(v, v_before)


def test_second_order_gradients():
    """rotary's backward is linear: its own gradient is rotary again."""
    torch.manual_seed(0)
    inv_freq = posemb.rope.frequency_plan({"rope_theta": 1e4}, 8).inv_freq
    q = torch.randn(2, 3, 2, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 1, 8, dtype=torch.float64, requires_grad=True)
    f = lambda q, k: posemb.rotary(q, k, inv_freq, offset=5, attention_scaling=1.5)  # noqa: E731
    assert torch.autograd.gradgradcheck(f, (q, k))
    (gq,) = torch.autograd.grad(f(q, k)[0].pow(2).sum(), q, create_graph=True)
    assert gq.requires_grad and gq.grad_fn is not None
