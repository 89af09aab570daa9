"""sinusoidal_add, sinusoidal_add_, sinusoidal_table, make_positions."""
from __future__ import annotations

import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.library import opcheck

import posemb
from posemb import reference

from conftest import FLOAT_DTYPES, SAMPLES, op_args, ulp_distance

OP = torch.ops.posemb.sinusoidal_add.default
OP_ = torch.ops.posemb.sinusoidal_add_.default


# ---------------------------------------------------------------- correctness


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_matches_fp64_reference(sample, dtype, device):
    s = sample.to(device, dtype)
    out = posemb.sinusoidal_add(s.x, **s.kwargs)
    ref = reference.sinusoidal_add(s.x, **s.kwargs)
    assert out.shape == s.x.shape and out.dtype == dtype and out.device == s.x.device
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(out.cpu().double(), ref, rtol=1.3e-6 if dtype == torch.float32 else 1e-12,
                                   atol=2e-6 if dtype == torch.float32 else 1e-12)
    else:
        # One rounding at the end: the reference rounded to dtype, or one ulp
        # from it; where x*scale and PE cancel, the fp32 budget of the encoding
        # (2e-6, doubled for the add) is what one ulp of a tiny result can't hold.
        dist = ulp_distance(out.cpu(), ref.to(dtype))
        err = (out.cpu().double() - ref).abs()
        assert bool(((dist <= 1) | (err <= 4e-6)).all())


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("freqs", ["vaswani", "fairseq"])
def test_long_positions_fp32_contract(layout, freqs, device):
    """The numerical contract: fp32 max abs error <= 2e-6 up to position 2^20, where naive
    fp32 angles (arange(T).float() * inv_freq) are off by ~3e-2."""
    dim, n = 256, 4096
    g = torch.Generator().manual_seed(1)
    positions = torch.cat([torch.arange(2**20 - n // 2, 2**20 + 1), torch.randint(0, 2**20, (n // 2,), generator=g)])
    x = torch.zeros(1, positions.numel(), dim, device=device)
    out = posemb.sinusoidal_add(x, positions.to(device), layout=layout, freqs=freqs)
    ref = reference.sinusoidal_encoding(positions, dim, layout, freqs)
    posemb_err = (out.cpu().double()[0] - ref).abs().max().item()

    w32 = reference.sinusoidal_frequencies(dim, freqs).float()
    theta32 = positions.float()[:, None] * w32  # what eager code does
    naive = torch.zeros_like(ref)
    half = dim // 2
    sin_cols = slice(0, 2 * half, 2) if layout == "interleaved" else slice(0, half)
    cos_cols = slice(1, 2 * half, 2) if layout == "interleaved" else slice(half, 2 * half)
    naive[:, sin_cols], naive[:, cos_cols] = torch.sin(theta32).double(), torch.cos(theta32).double()
    naive_err = (naive - ref).abs().max().item()

    print(f"\n{layout}/{freqs}: posemb max abs err {posemb_err:.2e}, naive fp32 {naive_err:.2e}")
    assert posemb_err <= 2e-6
    assert naive_err > 1e-2  # the failure posemb exists to avoid, measured in the same test


def test_table_matches_reference_and_fairseq_padding():
    table = posemb.sinusoidal_table(40, 11, layout="half", freqs="fairseq", padding_idx=1, dtype=torch.float64)
    ref = reference.sinusoidal_encoding(torch.arange(40), 11, "half", "fairseq", padding_idx=1)
    torch.testing.assert_close(table, ref, rtol=1e-12, atol=1e-12)
    assert table[1].abs().sum() == 0
    # fairseq's own formula (float32, small positions): the same table.
    half = 5
    emb = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    emb = torch.arange(40, dtype=torch.float).unsqueeze(1) * emb.unsqueeze(0)
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    emb = torch.cat([emb, torch.zeros(40, 1)], dim=1)
    emb[1] = 0
    torch.testing.assert_close(table.float(), emb, rtol=1e-5, atol=1e-5)


def test_table_matches_pytorch_tutorial_encoding():
    d, n = 16, 50
    position = torch.arange(n).unsqueeze(1).double()
    div_term = torch.exp(torch.arange(0, d, 2).double() * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    torch.testing.assert_close(posemb.sinusoidal_table(n, d, dtype=torch.float64), pe, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_table_is_within_one_ulp(dtype, device):
    """The numerical contract: bf16/fp16 equal the fp64 reference rounded, or one ulp off,
    at positions up to 2^20."""
    positions = torch.cat([torch.arange(0, 300), torch.arange(2**20 - 300, 2**20)])
    t = posemb.sinusoidal_add(torch.zeros(1, positions.numel(), 128, dtype=dtype, device=device), positions.to(device))
    ref = reference.sinusoidal_encoding(positions, 128)
    assert ulp_distance(t[0].cpu(), ref.to(dtype)).max().item() <= 1


def test_table_offset_and_device(device):
    t = posemb.sinusoidal_table(5, 8, offset=100, device=device, dtype=torch.bfloat16)
    assert t.device.type == device and t.dtype == torch.bfloat16 and t.shape == (5, 8)
    ref = reference.sinusoidal_encoding(torch.arange(100, 105), 8)
    assert ulp_distance(t.cpu(), ref.to(torch.bfloat16)).max().item() <= 1


def test_make_positions_matches_fairseq_rule(device):
    ids = torch.tensor([[1, 1, 4, 5, 6], [4, 5, 1, 6, 1], [1, 1, 1, 1, 1]], device=device)
    out = posemb.make_positions(ids, 1)
    assert out.dtype == torch.int64
    torch.testing.assert_close(out.cpu(), reference.make_positions(ids.cpu(), 1), rtol=0, atol=0)
    assert out.cpu().tolist()[0] == [1, 1, 2, 3, 4]


def test_make_positions_compares_padding_idx_as_int64():
    """A padding_idx outside the ids' dtype matches no id (in uint8, 257
    would wrap to 1); positions that would pass int64 are an error."""
    for dtype, pad in ((torch.uint8, 257), (torch.int32, 2**32 + 1)):
        ids = torch.tensor([[1, 1, 5]], dtype=dtype)
        assert posemb.make_positions(ids, pad).tolist() == [[pad + 1, pad + 2, pad + 3]]
        assert posemb.sinusoidal_add(torch.zeros(1, 3, 8), input_ids=ids, padding_idx=pad)[0, 0].abs().sum() > 0
    with pytest.raises(RuntimeError, match="posemb.make_positions: padding_idx \\+ the sequence length must fit in int64"):
        posemb.make_positions(torch.tensor([[5, 6]]), 2**63 - 2)
    assert posemb.make_positions(torch.tensor([[5, 6]]), 2**63 - 3).tolist() == [[2**63 - 2, 2**63 - 1]]


def test_in_place_on_x_overlapping_itself_is_an_error():
    """An as_strided x whose rows overlap, not only an expanded one."""
    x = torch.randn(100).as_strided((2, 3, 8), (24, 4, 1))
    with pytest.raises(RuntimeError, match="posemb.sinusoidal_add_: x has overlapping memory"):
        posemb.sinusoidal_add_(x)
    rows = torch.randn(2, 3, 16)[..., :8]  # apart: written in place as out of place
    want = posemb.sinusoidal_add(rows)
    assert torch.equal(posemb.sinusoidal_add_(rows), want)


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_inplace_equals_out_of_place(sample, device):
    s = sample.to(device, torch.float32)
    expected = posemb.sinusoidal_add(s.x, **s.kwargs)
    y = s.x.clone()
    assert posemb.sinusoidal_add_(y, **s.kwargs) is y
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_threads_split_rows_and_batch_groups_exactly(dtype):
    """The CPU kernel's threads take (row, batch group) items: a chunk may
    start inside a shared row (2 threads: 15 rows of 5 groups split at item
    38) or inside a sequence (offsets: 200 rows split at row 100). Every
    thread count gives the one-thread bits, and the reference's values."""
    shared = ((torch.arange(20 * 15 * 200) * 7919 % 2001 - 1000) / 97.0).view(20, 15, 200).to(dtype)
    per_seq = shared[:5].repeat(1, 3, 1)[:, :40]
    calls = [
        (shared, {}),
        (shared, {"positions": torch.arange(15) * 977 - 5000, "layout": "half"}),
        (per_seq, {"offset": torch.tensor([0, 2**31 - 43, 7, 2**30 + 11, 1])}),
    ]
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append([posemb.sinusoidal_add(x, **kw) for x, kw in calls])
            y = [x.clone() for x, _ in calls]
            for yi, (_, kw) in zip(y, calls):
                posemb.sinusoidal_add_(yi, **kw)
            outs.append(y)
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    for (x, kw), out in zip(calls, outs[0]):
        ref = reference.sinusoidal_add(x, **kw)
        if dtype == torch.bfloat16:
            assert bool(((ulp_distance(out, ref.to(dtype)) <= 1) | ((out.double() - ref).abs() <= 4e-6)).all())
        else:
            torch.testing.assert_close(out.double(), ref, rtol=1.3e-6, atol=2e-6)


def test_inplace_rejects_overlapping_memory():
    x = torch.randn(1, 4, 8).expand(3, 4, 8)
    with pytest.raises(RuntimeError, match="posemb.sinusoidal_add_: x has overlapping memory"):
        posemb.sinusoidal_add_(x)


# --------------------------------------------------------- op registration


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_opcheck(sample, device):
    s = sample.to(device, torch.float32)
    args, kwargs = op_args(s.x.requires_grad_(s.x.numel() > 0), s.kwargs)
    opcheck(OP, args, kwargs)
    args_, _ = op_args(s.x.detach().clone(), s.kwargs)
    opcheck(OP_, args_, kwargs)


def test_opcheck_other_ops(device):
    opcheck(torch.ops.posemb.sinusoidal_add_backward.default, (torch.randn(2, 3, 4, device=device), 2.0))
    opcheck(torch.ops.posemb.sinusoidal_table.default, (7, 6, 3, "half", "fairseq", 100.0, 1),
            {"dtype": torch.float64, "device": torch.device(device)})
    opcheck(torch.ops.posemb.make_positions.default, (torch.tensor([[1, 3, 4, 1]], device=device), 1))


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.x.numel() > 0][::3], ids=repr)
def test_gradcheck_fp64(sample, device):
    s = sample.to(device, torch.float64)
    x = s.x.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: posemb.sinusoidal_add(t, **s.kwargs), (x,))


def test_grad_of_inplace_and_version_counter(device):
    x = torch.randn(2, 3, 8, device=device, requires_grad=True)
    y = x * 1.0
    v = y._version
    posemb.sinusoidal_add_(y, scale=3.0)
    assert y._version > v
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))


def test_backward_is_bitwise_repeatable(device):
    x = torch.randn(4, 33, 96, device=device, requires_grad=True)
    g = torch.randn(4, 33, 96, device=device)
    grads = []
    for _ in range(2):
        x.grad = None
        posemb.sinusoidal_add(x, scale=0.37, offset=5).backward(g)
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("sample", SAMPLES, ids=repr)
def test_inputs_are_not_written(sample, device):
    s = sample.to(device, torch.float32)
    before = [t.clone() for t in [s.x, *s.kwargs.values()] if isinstance(t, torch.Tensor)]
    posemb.sinusoidal_add(s.x, **s.kwargs)
    after = [t for t in [s.x, *s.kwargs.values()] if isinstance(t, torch.Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


# ------------------------------------------------------------------ compile


def compiled_graphs(counter) -> int:
    """Graphs the backend compiled that call anything (dynamo may also hand it
    an empty graph for a frame with no tensor work)."""
    return sum(any(n.op == "call_function" for n in g.graph.nodes) for g in counter.graphs)


@pytest.mark.compile
def test_compile_equals_eager_without_recompiles(device):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")

    def f(x, offsets, positions):
        a = posemb.sinusoidal_add(x, offset=offsets, scale=2.0)
        b = posemb.sinusoidal_add(x, positions, layout="half", freqs="fairseq")
        return a + b

    cf = torch.compile(f, backend=counter, fullgraph=True, dynamic=True)
    for seq in (5, 9, 17, 33):
        x = torch.randn(3, seq, 16, device=device, requires_grad=True)
        offsets = torch.tensor([0, seq, 2 * seq], device=device)
        positions = torch.arange(seq, device=device) * 2
        out = cf(x, offsets, positions)
        torch.testing.assert_close(out, f(x, offsets, positions))
        out.sum().backward()
        torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))
    assert compiled_graphs(counter) == 1


@pytest.mark.compile
def test_compile_int_offset_is_not_specialised(device):
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    m = posemb.nn.SinusoidalPositionalEmbedding(8)
    cf = torch.compile(lambda x, step: m(x, offset=step), backend=counter, fullgraph=True, dynamic=True)
    for step in (3, 4, 5):
        x = torch.randn(2, 1, 8, device=device)
        torch.testing.assert_close(cf(x, step), m(x, offset=step))
    assert compiled_graphs(counter) == 1


# ------------------------------------------------------------------- errors

ERRORS = [
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4).long()), "x must be float32, float64, float16 or bfloat16"),
    (lambda t: posemb.sinusoidal_add(t(8)), r"x must be \(batch, seq, dim\)"),
    (lambda t: posemb.sinusoidal_add(t(1, 2, 3, 4)), r"x must be \(batch, seq, dim\)"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), seq_dim=2), "seq_dim must name a dimension"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), layout="sin-cos"), "layout must be 'interleaved' or 'half'"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), freqs="t5"), "freqs must be 'vaswani' or 'fairseq'"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 3), freqs="fairseq"), "freqs='fairseq' divides by dim/2 - 1 and needs an embedding dim of at least 4"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), base=0.0), "base must be a positive finite number"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), base=0.5), "base must be >= 1"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), padding_idx=-1), "padding_idx must be non-negative"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), t(3)), "positions must be an integer tensor"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), t(4).long()), r"positions must be \(seq,\) or broadcastable"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), t(3, 3).long()), r"positions must be \(seq,\) or broadcastable"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), t(3).long(), offset=2), "offset must be 0 when positions"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), offset=t(3).long()), r"offsets must be a scalar or \(batch,\)"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), offset=t(2)), "offsets must be an integer tensor"),
    (lambda t: OP(t(2, 3, 4), t(3).long(), t(2).long()), "pass positions or offsets, not both"),
    (lambda t: posemb.make_positions(t(2, 3), 1), "input_ids must be an integer tensor"),
    (lambda t: posemb.make_positions(t(2, 3).long(), -2), "padding_idx must be non-negative"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), offset=2**63 - 2), r"offset \+ seq - 1 must fit in int64, got offset=9223372036854775806 and seq=3"),
    (lambda t: posemb.sinusoidal_add_(t(2, 3, 4).int()), "x must be float32, float64, float16 or bfloat16"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), t(2, 3, 1).long()), r"positions must be \(seq,\) or broadcastable"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), offset=t(2, 1).long()), r"offsets must be a scalar or \(batch,\)"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), base=float("nan")), "base must be a positive finite number"),
    (lambda t: posemb.sinusoidal_add(t(2, 3, 4), base=0.5), "base must be >= 1"),
]


@pytest.mark.parametrize("fake", [False, True], ids=["real", "fake"])
@pytest.mark.parametrize("call,message", ERRORS, ids=[m for _, m in ERRORS])
def test_errors_name_op_and_argument(call, message, fake):
    with FakeTensorMode() if fake else torch.no_grad():
        with pytest.raises(RuntimeError, match="posemb." + r"\w+: " + message):
            call(lambda *shape: torch.randn(*shape))


def test_cpu_offsets_are_range_checked_where_they_lie():
    """CPU offsets are read in place (int32 and int64, strided, 0-d): only
    the offsets the view holds count, and every one of them does."""
    x, big = torch.randn(2, 3, 4), 2**63 - 2
    strided = torch.tensor([5, big, 2**31 - 1, big])[::2]  # holds 5 and 2^31 - 1
    expected = posemb.sinusoidal_add(x, offset=strided.contiguous())
    assert torch.equal(posemb.sinusoidal_add(x, offset=strided), expected)
    assert torch.equal(posemb.sinusoidal_add(x, offset=strided.int()), expected)
    message = r"posemb.sinusoidal_add: offsets \+ seq - 1 must fit in int64, got an offset of 9223372036854775806 and seq=3"
    for offsets in (torch.tensor([5, 0, 0, big])[1::2], torch.tensor(big), torch.tensor([big])):
        with pytest.raises(RuntimeError, match=message):
            posemb.sinusoidal_add(x, offset=offsets)


def test_error_on_device_mix():
    with pytest.raises(RuntimeError, match="posemb.sinusoidal_add: positions must be on x's device"):
        posemb.sinusoidal_add(torch.randn(1, 3, 4), torch.arange(3, device="meta"))


def test_table_rejects_negative_sizes():
    with pytest.raises(RuntimeError, match="posemb.sinusoidal_table: num_positions must be non-negative"):
        posemb.sinusoidal_table(-1, 4)
    with pytest.raises(RuntimeError, match="posemb.sinusoidal_table: a table of num_positions x dim = "
                                           "1099511627776 x 1099511627776 elements is too large"):
        posemb.sinusoidal_table(2**40, 2**40)


def test_python_argument_errors():
    with pytest.raises(ValueError, match="posemb: input_ids needs padding_idx"):
        posemb.sinusoidal_add(torch.randn(1, 2, 4), input_ids=torch.tensor([[3, 4]]))
    with pytest.raises(ValueError, match="not both"):
        posemb.sinusoidal_add(torch.randn(1, 2, 4), torch.arange(2), input_ids=torch.tensor([[3, 4]]), padding_idx=1)


# ------------------------------------------------------------------- module


def test_module_has_no_state_and_matches_functional(device):
    m = posemb.nn.SinusoidalPositionalEmbedding(16, layout="half", freqs="fairseq", padding_idx=1, scale=4.0)
    assert m.state_dict() == {} and list(m.buffers()) == [] and list(m.parameters()) == []
    assert repr(m) == "SinusoidalPositionalEmbedding(16, layout='half', freqs='fairseq', base=10000, padding_idx=1, scale=4)"
    x = torch.randn(2, 5, 16, device=device)
    ids = torch.tensor([[1, 7, 8, 9, 1], [7, 8, 9, 10, 11]], device=device)
    torch.testing.assert_close(
        m(x, input_ids=ids),
        posemb.sinusoidal_add(x, input_ids=ids, padding_idx=1, layout="half", freqs="fairseq", scale=4.0),
    )
    torch.testing.assert_close(m(x, offset=3), reference.sinusoidal_add(x, offset=3, layout="half", freqs="fairseq",
                                                                        scale=4.0, padding_idx=1).float().to(device))
    with pytest.raises(ValueError, match="embedding_dim=16"):
        m(torch.randn(2, 5, 8, device=device))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_table_of_a_non_float_dtype_names_the_table_op(dtype):
    with pytest.raises(RuntimeError, match="posemb.sinusoidal_table: dtype must be float32"):
        posemb.sinusoidal_table(4, 8, dtype=dtype)
