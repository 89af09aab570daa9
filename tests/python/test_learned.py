"""learned_add and learned_add_backward."""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.library import opcheck

import posemb
from posemb import reference

from conftest import FLOAT_DTYPES, SAMPLES, ulp_distance

OP = torch.ops.posemb.learned_add.default
POSITION_KEYS = ("positions", "offset", "input_ids", "padding_idx", "seq_dim")


def learned_samples():
    """The shared samples with non-negative positions, each with a weight
    table just large enough (+3 spare rows) for its positions."""
    g = torch.Generator().manual_seed(3)
    out = []
    for s in SAMPLES:
        kw = {k: v for k, v in s.kwargs.items() if k in POSITION_KEYS}
        xb = s.x if s.x.dim() == 3 else s.x.unsqueeze(0)
        batch, seq = (xb.shape[1], xb.shape[0]) if kw.get("seq_dim") == 0 else (xb.shape[0], xb.shape[1])
        pos = reference.token_positions(max(batch, 1), seq, kw.get("positions"), kw.get("offset", 0),
                                        kw.get("input_ids"), kw.get("padding_idx"))
        if pos.numel() and pos.min() < 0:
            continue
        n = (int(pos.max()) + 1 if pos.numel() else 1) + 3
        weight = torch.randn(n, s.x.shape[-1], generator=g)
        out.append((s, weight, kw))
    return out


SAMPLES_L = learned_samples()
IDS = [s.name for s, _, _ in SAMPLES_L]


def on(device, dtype, sample, weight, kw):
    s = sample.to(device, dtype)
    kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return s.x, weight.to(device, dtype), kw


def op_args(x, weight, kw):
    from posemb.ops import _position_args

    kw = dict(kw)
    positions, offsets, offset = _position_args(kw.pop("positions", None), kw.pop("offset", 0),
                                                kw.pop("input_ids", None), kw.get("padding_idx"))
    return (x, weight, positions, offsets, offset, kw.get("seq_dim", -2), kw.get("padding_idx"))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("sample,weight,kw", SAMPLES_L, ids=IDS)
def test_matches_fp64_reference(sample, weight, kw, dtype, device):
    x, w, kw = on(device, dtype, sample, weight, kw)
    out = posemb.learned_add(x, w, **kw)
    ref = reference.learned_add(x, w, **kw)
    assert out.shape == x.shape and out.dtype == dtype
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(out.cpu().double(), ref, rtol=1.3e-6 if dtype == torch.float32 else 1e-15, atol=1e-7)
    else:  # x + w of two half-precision values, rounded once
        assert out.numel() == 0 or ulp_distance(out.cpu(), ref.to(dtype)).max().item() <= 1


@pytest.mark.parametrize("sample,weight,kw", SAMPLES_L, ids=IDS)
def test_opcheck(sample, weight, kw, device):
    x, w, kw = on(device, torch.float32, sample, weight, kw)
    opcheck(OP, op_args(x.requires_grad_(x.numel() > 0), w.requires_grad_(), kw))


# padding_idx withholds that row's gradient on purpose (nn.Embedding's rule),
# which finite differences can't know: those samples are left to the test below.
GRAD_CASES = [t for t in SAMPLES_L if t[0].x.numel() and "padding_idx" not in t[2]][::2]


@pytest.mark.parametrize("sample,weight,kw", GRAD_CASES, ids=[t[0].name for t in GRAD_CASES])
def test_gradcheck_fp64(sample, weight, kw, device):
    x, w, kw = on(device, torch.float64, sample, weight, kw)
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: posemb.learned_add(a, b, **kw), (x, w))


def test_weight_grad_matches_reference_and_zeroes_padding_row(device):
    ids = torch.tensor([[1, 1, 5, 6, 7, 8], [5, 6, 7, 1, 1, 1], [9, 9, 9, 9, 9, 9]], device=device)
    x = torch.randn(3, 6, 16, device=device, requires_grad=True)
    w = torch.randn(12, 16, device=device, requires_grad=True)
    g = torch.randn(3, 6, 16, device=device)
    posemb.learned_add(x, w, input_ids=ids, padding_idx=1).backward(g)
    pos = reference.make_positions(ids.cpu(), 1)
    torch.testing.assert_close(w.grad.cpu().double(), reference.learned_add_weight_grad(g, 12, pos, padding_idx=1),
                               rtol=1e-6, atol=1e-6)
    assert torch.equal(x.grad, g)
    assert w.grad[1].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_weight_grad_is_bitwise_deterministic_with_repeated_positions(dtype, device):
    """Heavily repeated positions: every token of 64 sequences at one of 3
    positions, so each row sums thousands of gradients; two runs agree bitwise."""
    g = torch.Generator().manual_seed(5)
    positions = torch.randint(0, 3, (64, 256), generator=g).to(device)
    x = torch.randn(64, 256, 32, generator=g).to(device, dtype).requires_grad_()
    w = torch.randn(8, 32, generator=g).to(device, dtype).requires_grad_()
    grad = torch.randn(64, 256, 32, generator=g).to(device, dtype)
    results = []
    for _ in range(3):
        w.grad = None
        posemb.learned_add(x, w, positions).backward(grad)
        results.append(w.grad.clone())
    assert all(torch.equal(results[0], r) for r in results[1:])
    ref = reference.learned_add_weight_grad(grad, 8, positions.cpu())
    torch.testing.assert_close(results[0].cpu().double(), ref, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)


@pytest.mark.parametrize("sample,weight,kw", SAMPLES_L, ids=IDS)
def test_inputs_are_not_written(sample, weight, kw, device):
    x, w, kw = on(device, torch.float32, sample, weight, kw)
    tensors = [x, w, *[v for v in kw.values() if isinstance(v, torch.Tensor)]]
    before = [t.clone() for t in tensors]
    posemb.learned_add(x, w, **kw)
    assert all(torch.equal(a, b) for a, b in zip(before, tensors))


@pytest.mark.compile
def test_compile_equals_eager_without_recompiles(device):
    from torch._dynamo.testing import CompileCounterWithBackend

    from test_sinusoidal import compiled_graphs

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    m = posemb.nn.LearnedPositionalEmbedding(64, 16, padding_idx=1).to(device)

    def f(x, ids, offsets):
        return m(x, input_ids=ids) + m(x, offset=offsets) * 2

    cf = torch.compile(f, backend=counter, fullgraph=True, dynamic=True)
    for seq in (5, 9, 17, 33):
        x = torch.randn(2, seq, 16, device=device, requires_grad=True)
        ids = torch.randint(0, 5, (2, seq), device=device)
        offsets = torch.tensor([0, 20], device=device)
        m.zero_grad()
        out = cf(x, ids, offsets)
        out.sum().backward()
        w_grad = m.weight.grad.clone()
        m.zero_grad()
        expected = f(x, ids, offsets)
        expected.sum().backward()
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(w_grad, m.weight.grad)
    assert compiled_graphs(counter) == 1


ERRORS = [
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4).double()), r"weight must have x's dtype"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(20)), r"weight must be \(num_embeddings, dim\)"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 6)), "weight must have x's embedding dim"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), padding_idx=5), r"padding_idx must be in \[0, num_embeddings=5\)"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), offset=3), r"positions offset .. offset \+ seq - 1 = 3 .. 5 must be in"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), offset=-1), r"positions offset .. offset \+ seq - 1 = -1 .. 1 must be in"),
    (lambda t: posemb.learned_add(t(2, 3, 4).int(), t(5, 4).int()), "x must be float32"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), t(3)), "positions must be an integer tensor"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), t(7).long()), r"positions must be \(seq,\) or broadcastable"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), offset=2**63 - 2), r"offset \+ seq - 1 must fit in int64"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4).double()), r"weight must have x's dtype \(Float\), got Double"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), padding_idx=-1), r"padding_idx must be in \[0, num_embeddings=5\)"),
    (lambda t: posemb.learned_add(t(4), t(5, 4)), r"x must be \(batch, seq, dim\)"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), seq_dim=2), "seq_dim must name a dimension"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), t(3).long(), offset=1), "offset must be 0 when positions are given"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), offset=t(3).long()), r"offsets must be a scalar or \(batch,\)"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), offset=t(2)), "offsets must be an integer tensor"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4), t(3, 3).long()), r"positions must be \(seq,\) or broadcastable"),
    (lambda t: posemb.learned_add(t(2, 3, 4), t(5, 4, 1)), r"weight must be \(num_embeddings, dim\)"),
    (lambda t: posemb.learned_add(t(2, 3, 4).half(), t(5, 4)), r"weight must have x's dtype \(Half\)"),
]


@pytest.mark.parametrize("fake", [False, True], ids=["real", "fake"])
@pytest.mark.parametrize("call,message", ERRORS, ids=[m for _, m in ERRORS])
def test_errors_name_op_and_argument(call, message, fake):
    with FakeTensorMode() if fake else torch.no_grad():
        with pytest.raises(RuntimeError, match=r"posemb.learned_add: " + message):
            call(lambda *shape: torch.randn(*shape))


def test_out_of_range_position_values_are_an_error_not_a_read(device):
    x, w = torch.randn(2, 3, 4, device=device), torch.randn(5, 4, device=device)
    with pytest.raises(RuntimeError, match=r"posemb.learned_add: positions must be in \[0, num_embeddings=5\), got values in \[0, 5\]"):
        posemb.learned_add(x, w, torch.tensor([0, 5, 1], device=device))
    with pytest.raises(RuntimeError, match=r"got values in \[-2, 3\]"):
        posemb.learned_add(x, w, offset=torch.tensor([-2, 1], device=device))
    posemb.learned_add(x, w, torch.tensor([0, 4, 1], device=device))  # the device still works
    if device == "cpu":  # offsets whose last position passes int64: named as such, not a wrapped range
        with pytest.raises(RuntimeError, match=r"posemb.learned_add: offsets \+ seq - 1 must fit in int64"):
            posemb.learned_add(x, w, offset=torch.tensor([2**63 - 1, 0]))


def test_backward_op_called_directly_checks_positions(device):
    """learned_add_backward would drop the gradient of a position outside the
    table: an error instead, for tensor positions, offsets and an offset."""
    backward = torch.ops.posemb.learned_add_backward
    g = torch.randn(2, 3, 4, device=device)
    with pytest.raises(RuntimeError, match=r"posemb.learned_add_backward: positions must be in \[0, num_embeddings=5\), got values in \[0, 9\]"):
        backward(g, torch.tensor([[0, 1, 9], [0, 1, 2]], device=device), None, 0, 1, 5, None)
    with pytest.raises(RuntimeError, match=r"posemb.learned_add_backward: positions must be in \[0, num_embeddings=5\), got values in \[0, 5\]"):
        backward(g, None, torch.tensor([0, 3], device=device), 0, 1, 5, None)
    with pytest.raises(RuntimeError, match=r"posemb.learned_add_backward: positions offset .. offset \+ seq - 1 = 4 .. 6 must be in \[0, num_embeddings=5\)"):
        backward(g, None, None, 4, 1, 5, None)
    for padding_idx in (5, -3):
        with pytest.raises(RuntimeError, match=r"posemb.learned_add_backward: padding_idx must be in \[0, num_embeddings=5\)"):
            backward(g, None, None, 0, 1, 5, padding_idx)
    ok = backward(g, None, torch.tensor([0, 2], device=device), 0, 1, 5, None)  # positions 0-2 and 2-4
    expected = torch.zeros(5, 4).index_add_(0, torch.tensor([0, 1, 2, 2, 3, 4]), g.cpu().reshape(6, 4))
    torch.testing.assert_close(ok.cpu(), expected)


def test_offset_past_int64_is_an_error_not_a_wrapped_read():
    """offset + t beyond int64 used to wrap to a negative position and pass
    the table bounds check, reading outside the weight."""
    x, w = torch.randn(1, 3, 4), torch.randn(10, 4)
    with pytest.raises(RuntimeError, match=r"posemb.learned_add: offset \+ seq - 1 must fit in int64"):
        posemb.learned_add(x, w, offset=2**63 - 2)


def test_module_loads_embedding_state_dict_and_matches_nn_embedding(device):
    table = torch.nn.Embedding(40, 16, padding_idx=1).to(device)
    m = posemb.nn.LearnedPositionalEmbedding(40, 16, padding_idx=1).to(device)
    m.load_state_dict(table.state_dict())
    assert list(m.state_dict()) == ["weight"]
    assert repr(m) == "LearnedPositionalEmbedding(40, 16, padding_idx=1)"
    fresh = posemb.nn.LearnedPositionalEmbedding(40, 16, padding_idx=1)
    assert fresh.weight[1].abs().sum() == 0 and fresh.weight.std() > 0.5
    ids = torch.tensor([[1, 1, 7, 8], [7, 8, 9, 1]], device=device)
    x = torch.randn(2, 4, 16, device=device)
    positions = posemb.make_positions(ids, 1)
    torch.testing.assert_close(m(x, input_ids=ids), x + table(positions))
    torch.testing.assert_close(m(x, offset=2), x + table.weight[2:6])


@pytest.mark.parametrize("layout,freqs", [("interleaved", "vaswani"), ("half", "fairseq")])
def test_table_initialised_from_the_sinusoidal_encoding_trains(layout, freqs):
    m = posemb.nn.LearnedPositionalEmbedding.from_sinusoidal(64, 16, layout=layout, freqs=freqs)
    table = posemb.sinusoidal_table(64, 16, layout=layout, freqs=freqs, dtype=torch.float64).float()
    assert torch.equal(m.weight.detach(), table)  # the exact encoding, rounded once
    assert m.weight.requires_grad and list(m.state_dict()) == ["weight"]
    x = torch.randn(2, 10, 16)
    torch.testing.assert_close(m(x), posemb.sinusoidal_add(x, layout=layout, freqs=freqs), rtol=0, atol=1e-6)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(x).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(m.weight.detach()[:10], table[:10]) and torch.equal(m.weight.detach()[10:], table[10:])


def test_table_from_the_sinusoidal_encoding_with_noise():
    g = torch.Generator().manual_seed(0)
    m = posemb.nn.LearnedPositionalEmbedding.from_sinusoidal(32, 8, noise_std=0.1, generator=g, dtype=torch.float64)
    diff = m.weight.detach() - posemb.sinusoidal_table(32, 8, dtype=torch.float64)
    assert 0.05 < diff.std().item() < 0.2
    with pytest.raises(ValueError, match="noise_std must be >= 0"):
        posemb.nn.LearnedPositionalEmbedding.from_sinusoidal(32, 8, noise_std=-1.0)


def test_second_order_gradients_are_a_clear_error():
    """Never a silent None: differentiating the backward raises, naming the op;
    a create_graph=True backward that goes no further still works."""
    w = torch.randn(10, 8, requires_grad=True)
    x = torch.randn(2, 5, 8, requires_grad=True)
    (gw,) = torch.autograd.grad(posemb.learned_add(x, w).pow(2).sum(), w, create_graph=True)
    torch.testing.assert_close(gw, torch.autograd.grad((x + w[:5]).pow(2).sum(), w)[0])
    with pytest.raises(RuntimeError, match="posemb.learned_add: second-order gradients"):
        gw.sum().backward()
    # autograd.grad asking for x (a gradient penalty) reaches the error too,
    # with or without allow_unused: never a None.
    for allow_unused in (False, True):
        with pytest.raises(RuntimeError, match="posemb.learned_add: second-order gradients"):
            torch.autograd.grad(gw.sum(), x, allow_unused=allow_unused)


def test_cpu_vector_and_portable_loops_agree_bitwise(tmp_path):
    """The AVX2 loops (where this CPU has them) and the portable loops
    (ATEN_CPU_CAPABILITY=default) give the same bits: the forward add and the
    table gradient, with implicit positions (the batch-entry rounds), random
    repeated positions, a padding row, non-contiguous gradients, NaNs and
    infinities. (The
    inputs are made here: torch's randn draws other numbers under the default
    capability.)"""
    import os
    import subprocess
    import sys

    inputs = []
    for dim in (13, 40, 768):
        g = torch.Generator().manual_seed(dim)
        inputs.append((torch.randn(4, 70, dim, generator=g), torch.randn(90, dim, generator=g),
                       torch.randint(0, 90, (4, 70), generator=g), torch.randn(70, 4, dim, generator=g)))
    for _, _, positions, _ in inputs:
        positions[2] = 4  # a hot row: more tokens than one register pass takes
    x = inputs[1][0]  # NaN, infinities and an inf - inf in one sample
    x[0, 0, 3], x[0, 1, 5], x[1, 2, :16] = float("nan"), float("inf"), float("inf")
    inputs[1][1][:, :16] = float("-inf")
    # Converted here too: ATen's vector and scalar conversions may differ (NaNs).
    inputs = [(x.to(dtype), w.to(dtype), positions, grad.to(dtype)) for x, w, positions, grad in inputs
              for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64)]
    torch.save(inputs, tmp_path / "inputs.pt")
    code = """
import sys, torch, posemb
results = []
for x_, w_, positions, g_ in torch.load(sys.argv[1]):
    results.append(torch.ops.posemb.learned_add(x_, w_, None, None, 5, -2, None))
    results.append(torch.ops.posemb.learned_add(x_, w_, positions, None, 0, -2, None))
    results.append(torch.ops.posemb.learned_add_backward(g_.transpose(0, 1), None, None, 3, -2, 90, None))
    results.append(torch.ops.posemb.learned_add_backward(g_.transpose(0, 1), positions, None, 0, -2, 90, 7))
    results.append(torch.ops.posemb.learned_add_backward(g_.transpose(0, 1)[..., ::2], positions, None, 0, -2, 90, None))
torch.save(results, sys.argv[2])
"""
    results = []
    for capability in (None, "default"):
        env = dict(os.environ)
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        path = str(tmp_path / f"learned-{capability}.pt")
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "inputs.pt"), path], env=env, check=True)
        results.append(torch.load(path))
    assert len(results[0]) == len(results[1]) == 3 * 4 * 5

    def bits(t):
        return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])

    for i, (vector, portable) in enumerate(zip(*results)):
        if i % 5 < 2:  # the forward: every bit, NaNs' too
            assert torch.equal(bits(vector), bits(portable)), i
        else:  # the gradients: which NaN a sum of two NaNs keeps is the compiler's choice
            nan = vector.isnan()
            assert torch.equal(nan, portable.isnan()), i
            assert torch.equal(bits(vector)[~nan], bits(portable)[~nan]), i
