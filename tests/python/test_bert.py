"""bert_embeddings, bert_embeddings_backward and posemb.nn.BertEmbeddings."""
from __future__ import annotations

import inspect
import os

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.library import opcheck

import posemb
from posemb import reference

from conftest import FLOAT_DTYPES, ulp_distance

os.environ.setdefault("HF_HUB_OFFLINE", "1")
OP = torch.ops.posemb.bert_embeddings.default


def tables(hidden=16, vocab=30, max_pos=40, types=3, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(vocab, hidden, generator=g), torch.randn(max_pos, hidden, generator=g),
          torch.randn(types, hidden, generator=g), 1 + 0.1 * torch.randn(hidden, generator=g),
          0.1 * torch.randn(hidden, generator=g)]
    return [t.to(device, dtype) for t in ts]


CASES = {
    "default": dict(shape=(2, 7), kw={}),
    "one-token": dict(shape=(1, 1), kw={}),
    "odd-hidden": dict(shape=(3, 5), kw={}, hidden=13),
    "wide": dict(shape=(2, 3), kw={}, hidden=300),
    "types-and-positions": dict(shape=(2, 6), kw=dict(token_type_ids=torch.tensor([[0, 0, 1, 1, 2, 2], [1] * 6]),
                                                       position_ids=torch.tensor([[5, 4, 3, 2, 1, 0]]))),
    "types-1d-stride0-positions": dict(shape=(3, 4), kw=dict(token_type_ids=torch.tensor([0, 1, 1, 0]),
                                                               position_ids=torch.tensor(7).expand(4))),
    "cache-length": dict(shape=(2, 3), kw=dict(cache_length=30)),
    "int32-ids": dict(shape=(2, 4), kw={}, ids_dtype=torch.int32),
    "empty": dict(shape=(0, 4), kw={}),
}


def case_inputs(name, device, dtype=torch.float32):
    c = CASES[name]
    w = tables(hidden=c.get("hidden", 16), dtype=dtype, device=device)
    ids = torch.randint(0, 30, c["shape"], generator=torch.Generator().manual_seed(1)).to(device, c.get("ids_dtype", torch.long))
    kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in c["kw"].items()}
    return ids, w, kw


def op_args(ids, w, kw, dropout_p=0.0, seed=None):
    return (ids, *w, kw.get("position_ids"), kw.get("token_type_ids"), kw.get("cache_length", 0), 1e-12,
            dropout_p, seed, None, None)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("name", CASES)
def test_matches_fp64_reference(name, dtype, device):
    ids, w, kw = case_inputs(name, device, dtype)
    out = posemb.bert_embeddings(ids, *w, **kw)
    ref = reference.bert_embeddings(ids, *w, **kw)
    assert out.shape == (*ids.shape, w[0].shape[1]) and out.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=2e-6)
    elif dtype == torch.float64:
        torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-12)
    else:  # fp32 statistics, one rounding at the end
        assert out.numel() == 0 or ulp_distance(out.cpu(), ref.to(dtype)).max().item() <= 1


def test_matches_hugging_face_bert_embeddings(device):
    pytest.importorskip("transformers")
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings as HFBertEmbeddings

    cfg = BertConfig(vocab_size=50, hidden_size=24, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0)
    hf = HFBertEmbeddings(cfg).to(device).eval()
    ours = posemb.nn.BertEmbeddings.from_config(cfg).to(device).eval()
    assert ours.load_state_dict(hf.state_dict(), strict=False).unexpected_keys == []
    assert set(ours.state_dict()) == {k for k in hf.state_dict() if "position_ids" not in k and "token_type_ids" not in k}
    ids = torch.randint(0, 50, (3, 11), device=device)
    types = torch.randint(0, 2, (3, 11), device=device)
    torch.testing.assert_close(ours(input_ids=ids, token_type_ids=types), hf(input_ids=ids, token_type_ids=types))
    # transformers renamed past_key_values_length to cache_length; ours takes both.
    cache_kw = "cache_length" if "cache_length" in inspect.signature(hf.forward).parameters else "past_key_values_length"
    torch.testing.assert_close(ours(input_ids=ids[:, :4], **{cache_kw: 5}), hf(input_ids=ids[:, :4], **{cache_kw: 5}))
    torch.testing.assert_close(ours(input_ids=ids[:, :4], past_key_values_length=5), ours(input_ids=ids[:, :4], cache_length=5))
    embeds = torch.randn(3, 11, 24, device=device)
    torch.testing.assert_close(ours(inputs_embeds=embeds), hf(inputs_embeds=embeds))


@pytest.mark.parametrize("name", [n for n in CASES if n != "wide"])
def test_opcheck(name, device):
    ids, w, kw = case_inputs(name, device)
    w = [t.requires_grad_() for t in w]
    opcheck(OP, op_args(ids, w, kw))
    opcheck(OP, op_args(ids, w, kw, dropout_p=0.25, seed=torch.tensor(7)))


@pytest.mark.parametrize("dropout", [False, True], ids=["eval", "dropout"])
def test_gradcheck_fp64(dropout, device):
    ids, w, kw = case_inputs("types-and-positions", device, torch.float64)
    w = [t.detach().requires_grad_() for t in w]
    seed = torch.tensor(11) if dropout else None

    def f(*weights):  # a fixed seed makes dropout a fixed function
        return OP(*op_args(ids, weights, kw, dropout_p=0.3 if dropout else 0.0, seed=seed))[0]

    assert torch.autograd.gradcheck(f, tuple(w))


def test_gradients_match_eager_and_skip_padding_rows(device):
    ids, w, kw = case_inputs("types-and-positions", device)
    ids[0, :2] = 0  # padding tokens
    w = [t.requires_grad_() for t in w]
    grad = torch.randn(*ids.shape, 16, device=device)
    out = torch.ops.posemb.bert_embeddings(*op_args(ids, w, kw)[:12], 0, None)[0]
    out.backward(grad)
    ours = [t.grad.clone() for t in w]
    for t in w:
        t.grad = None
    pos, types = kw["position_ids"].expand(ids.shape), kw["token_type_ids"]
    x = torch.nn.functional.embedding(ids, w[0], padding_idx=0) + w[1][pos] + w[2][types]
    torch.nn.functional.layer_norm(x, (16,), w[3], w[4], 1e-12).backward(grad)
    for a, t in zip(ours, w):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-5)
    assert ours[0][0].abs().sum() == 0  # word_padding_idx=0 row


def test_backward_is_bitwise_deterministic_with_repeated_ids(device):
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 3, (32, 128), generator=g).to(device)  # thousands of tokens per row
    w = [t.requires_grad_() for t in tables(hidden=64, max_pos=128, device=device)]
    grad = torch.randn(32, 128, 64, generator=g).to(device)
    runs = []
    for _ in range(3):
        for t in w:
            t.grad = None
        posemb.bert_embeddings(ids, *w).backward(grad)
        runs.append([t.grad.clone() for t in w])
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


def test_dropout_is_reproducible_and_drops_p(device):
    w = tables(max_pos=64, device=device)
    ids = torch.randint(0, 30, (16, 64), device=device)
    torch.manual_seed(3)
    a = posemb.bert_embeddings(ids, *w, dropout_p=0.25, training=True)
    b = posemb.bert_embeddings(ids, *w, dropout_p=0.25, training=True)
    torch.manual_seed(3)
    a2 = posemb.bert_embeddings(ids, *w, dropout_p=0.25, training=True)
    assert torch.equal(a, a2) and not torch.equal(a, b)
    dropped = (a == 0).double().mean().item()
    assert abs(dropped - 0.25) < 0.02
    full = posemb.bert_embeddings(ids, *w)
    kept = a != 0
    torch.testing.assert_close(a[kept], full[kept] / 0.75)
    assert torch.equal(posemb.bert_embeddings(ids, *w, dropout_p=0.25, training=False), full)


@pytest.mark.compile
def test_compile_equals_eager_without_recompiles(device):
    from torch._dynamo.testing import CompileCounterWithBackend

    from test_sinusoidal import compiled_graphs

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    m = posemb.nn.BertEmbeddings(40, 16, max_position_embeddings=64).to(device).eval()
    cf = torch.compile(m, backend=counter, fullgraph=True, dynamic=True)
    for seq in (5, 9, 17):
        ids = torch.randint(0, 40, (2, seq), device=device)
        types = torch.randint(0, 2, (2, seq), device=device)
        m.zero_grad()
        out = cf(input_ids=ids, token_type_ids=types)
        out.pow(2).sum().backward()
        grads = [p.grad.clone() for p in m.parameters()]
        m.zero_grad()
        expected = m(input_ids=ids, token_type_ids=types)
        expected.pow(2).sum().backward()
        torch.testing.assert_close(out, expected)
        for a, p in zip(grads, m.parameters()):
            torch.testing.assert_close(a, p.grad)
    assert compiled_graphs(counter) == 1


ERRORS = [
    (lambda t, w: OP(t(2, 3), *w), "input_ids must be an integer tensor"),
    (lambda t, w: OP(t(6).long(), *w), r"input_ids must be \(batch, seq\)"),
    (lambda t, w: OP(t(2, 3).long(), w[0], w[1].double(), *w[2:]), "position_weight must have word_weight's dtype"),
    (lambda t, w: OP(t(2, 3).long(), w[0], t(40, 8), *w[2:]), "position_weight must have hidden size 16"),
    (lambda t, w: OP(t(2, 3).long(), *w[:3], t(8), w[4]), r"ln_weight must be \(hidden,\)"),
    (lambda t, w: OP(t(2, 3).long(), *w, cache_length=38), r"the positions cache_length .. cache_length \+ seq - 1 = 38 .. 40 must be in"),
    (lambda t, w: OP(t(2, 3).long(), *w, dropout_p=1.5), r"dropout_p must be in \[0, 1\]"),
    (lambda t, w: OP(t(2, 3).long(), *w, dropout_seed=t(2).long()), "dropout_seed must be one int64 on the CPU"),
    (lambda t, w: OP(t(2, 3).long(), *w, word_padding_idx=30), r"word_padding_idx must be in \[0, 30\)"),
    (lambda t, w: OP(t(2, 3).long(), *w, token_type_ids=t(2, 4).long()), "token_type_ids must be broadcastable"),
    (lambda t, w: OP(t(2, 3).long(), *w, cache_length=2**63 - 2), r"cache_length \+ seq - 1 must fit in int64"),
    (lambda t, w: OP(t(2, 3).long(), *w, cache_length=-1), r"the positions cache_length .. cache_length \+ seq - 1 = -1 .. 1 must be in"),
    (lambda t, w: OP(t(2, 3).long(), *w, position_ids=t(2, 3)), "position_ids must be an integer tensor"),
    (lambda t, w: OP(t(2, 3).long(), *w, position_ids=t(4).long()), r"position_ids must be \(seq,\) or broadcastable"),
    (lambda t, w: OP(t(2, 3).long(), *w, position_ids=t(3).long(), cache_length=1), "cache_length must be 0 when position_ids are given"),
    (lambda t, w: OP(t(2, 3).long(), w[0], w[1], w[2].double(), *w[3:]), "type_weight must have word_weight's dtype"),
    (lambda t, w: OP(t(2, 3).long(), w[0].long(), *w[1:]), "word_weight must be float32"),
    (lambda t, w: OP(t(2, 3).long(), *w[:4], t(8)), r"ln_bias must be \(hidden,\)"),
    (lambda t, w: OP(t(2, 3).long(), *w, dropout_p=-0.1), r"dropout_p must be in \[0, 1\]"),
    (lambda t, w: OP(t(2, 3).long(), *w, position_padding_idx=40), r"position_padding_idx must be in \[0, 40\)"),
    (lambda t, w: OP(t(2, 3).long(), *w, token_type_ids=t(2, 3)), "token_type_ids must be an integer tensor"),
]


@pytest.mark.parametrize("fake", [False, True], ids=["real", "fake"])
@pytest.mark.parametrize("call,message", ERRORS, ids=[m for _, m in ERRORS])
def test_errors_name_op_and_argument(call, message, fake):
    with FakeTensorMode() if fake else torch.no_grad():
        w = [torch.randn(30, 16), torch.randn(40, 16), torch.randn(3, 16), torch.randn(16), torch.randn(16)]
        with pytest.raises(RuntimeError, match=r"posemb.bert_embeddings: " + message):
            call(lambda *shape: torch.zeros(*shape), w)


def test_out_of_range_ids_are_an_error(device):
    ids, w, kw = case_inputs("default", device)
    ids[1, 2] = 30
    with pytest.raises(RuntimeError, match=r"input_ids must be in \[0, 30\), got values in \[\d+, 30\]"):
        posemb.bert_embeddings(ids, *w)
    with pytest.raises(RuntimeError, match=r"token_type_ids must be in \[0, 3\)"):
        posemb.bert_embeddings(ids.clamp(max=29), *w, token_type_ids=torch.full_like(ids, 3))


BACKWARD = torch.ops.posemb.bert_embeddings_backward.default


@pytest.mark.parametrize("fake", [False, True], ids=["real", "fake"])
def test_backward_checks_its_own_tensors(fake):
    """A direct call of the public backward op with tensors the forward would
    never return is an error, not a read of the wrong memory."""
    with FakeTensorMode() if fake else torch.no_grad():
        ids = torch.zeros(2, 3, dtype=torch.long)
        w = [torch.randn(30, 16), torch.randn(40, 16), torch.randn(3, 16), torch.randn(16)]
        grad, stats = torch.randn(2, 3, 16), torch.randn(2, 3)

        def call(grad=grad, mean=stats, rstd=stats):
            return BACKWARD(grad, ids, *w, mean, rstd, None, None, 0, 0.0, None, None, None)

        with pytest.raises(RuntimeError, match="posemb.bert_embeddings_backward: grad must have word_weight's dtype"):
            call(grad=grad.double())
        with pytest.raises(RuntimeError, match=r"posemb.bert_embeddings_backward: grad must be \(batch, seq, hidden\)"):
            call(grad=torch.randn(2, 4, 16))
        with pytest.raises(RuntimeError, match="posemb.bert_embeddings_backward: mean must be Float"):
            call(mean=stats.double())
        with pytest.raises(RuntimeError, match="posemb.bert_embeddings_backward: rstd must have one value per token"):
            call(rstd=torch.randn(5))


def test_empty_type_table_without_token_types_is_an_error():
    w = [torch.randn(30, 16), torch.randn(40, 16), torch.randn(0, 16), torch.randn(16), torch.randn(16)]
    with pytest.raises(RuntimeError, match="posemb.bert_embeddings: type_weight must have a row for type 0"):
        OP(torch.zeros(2, 3, dtype=torch.long), *w)


def test_inputs_are_not_written(device):
    ids, w, kw = case_inputs("types-and-positions", device)
    inputs = [ids, *w, *kw.values()]
    before = [t.clone() for t in inputs]
    posemb.bert_embeddings(ids, *w, **kw, dropout_p=0.2, training=True)
    assert all(torch.equal(a, b) for a, b in zip(before, inputs))


def test_second_order_gradients_are_a_clear_error():
    tables = [torch.randn(20, 8, requires_grad=True), torch.randn(12, 8), torch.randn(2, 8),
              torch.ones(8), torch.zeros(8)]
    ids = torch.randint(0, 20, (2, 6))
    (g,) = torch.autograd.grad(posemb.bert_embeddings(ids, *tables).pow(3).sum(), tables[0], create_graph=True)
    with pytest.raises(RuntimeError, match="posemb.bert_embeddings: second-order gradients"):
        g.sum().backward()
    for allow_unused in (False, True):
        with pytest.raises(RuntimeError, match="posemb.bert_embeddings: second-order gradients"):
            torch.autograd.grad(g.sum(), tables[0], allow_unused=allow_unused)


def test_a_meta_dropout_seed_beside_real_ids_is_an_error():
    """A meta seed would send the call to the fake kernel, which returns
    uninitialised memory for real tensors."""
    tables = [torch.randn(20, 8), torch.randn(12, 8), torch.randn(2, 8), torch.ones(8), torch.zeros(8)]
    ids = torch.randint(0, 20, (2, 5))
    seed = torch.tensor(5, device="meta")
    with pytest.raises(RuntimeError, match="posemb.bert_embeddings: dropout_seed must be one int64 on the CPU"):
        torch.ops.posemb.bert_embeddings(ids, *tables, None, None, 0, 1e-12, 0.5, seed, None, None)
    out, mean, rstd = torch.ops.posemb.bert_embeddings(ids, *tables, None, None, 0, 1e-12, 0.5, torch.tensor(5),
                                                       None, None)
    with pytest.raises(RuntimeError, match="posemb.bert_embeddings_backward: dropout_seed must be one int64"):
        torch.ops.posemb.bert_embeddings_backward(torch.ones_like(out), ids, *tables[:4], mean, rstd, None, None,
                                                  0, 0.5, seed, None, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dropout_keeps_elements_scaled_by_one_over_one_minus_p(dtype):
    """1/(1 - p) is worked out in double and rounded once, as torch's dropout
    scales (with p rounded to fp32 first it is 1000.0126 at p = 0.999)."""
    g = torch.Generator().manual_seed(0)
    tables = [torch.randn(30, 64, generator=g, dtype=dtype), torch.randn(12, 64, generator=g, dtype=dtype),
              torch.randn(2, 64, generator=g, dtype=dtype), torch.ones(64, dtype=dtype), torch.zeros(64, dtype=dtype)]
    ids = torch.randint(0, 30, (4, 12), generator=g)
    plain = posemb.bert_embeddings(ids, *tables)
    for p in (0.1, 0.999):
        torch.manual_seed(1)
        dropped = posemb.bert_embeddings(ids, *tables, dropout_p=p, training=True)
        kept = dropped != 0
        assert kept.any()
        ratio = (dropped[kept] / plain[kept]).to(torch.float64)
        torch.testing.assert_close(ratio, torch.full_like(ratio, 1 / (1 - p)), rtol=2e-7 if dtype == torch.float32 else 1e-13,
                                   atol=0)


def test_dropout_of_one_gives_zeros_as_nn_dropout():
    block = posemb.nn.BertEmbeddings(30, 8, max_position_embeddings=12, hidden_dropout_prob=1.0).train()
    out = block(input_ids=torch.randint(0, 30, (2, 5)))
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert block.word_embeddings.weight.grad.abs().sum() == 0


def test_cpu_vector_and_portable_loops_agree_bitwise(tmp_path):
    """The AVX2 row of the forward (where this CPU has it) and the portable
    loop (ATEN_CPU_CAPABILITY=default) give the same bits: output, mean and
    rstd, at hidden sizes with and without a tail past the 32-element steps,
    with and without dropout (rows that start inside a Philox counter);
    and so do the three table gradients of the backward. (The inputs are made
    here: torch's own randn draws other numbers under the default capability.)"""
    import subprocess
    import sys

    inputs = []
    for hidden in (13, 40, 300, 768):
        g = torch.Generator().manual_seed(hidden)
        w = [torch.randn(50, hidden, generator=g) + 5, torch.randn(40, hidden, generator=g) * 3,
             torch.randn(2, hidden, generator=g), 1 + 0.1 * torch.randn(hidden, generator=g),
             0.1 * torch.randn(hidden, generator=g)]
        ids, types = torch.randint(0, 50, (3, 37), generator=g), torch.randint(0, 2, (3, 37), generator=g)
        inputs.append((w, ids, types, torch.randn(3, 37, hidden, generator=g)))
    # Rows with a NaN, an infinity, and values near the fp32 limit (x - mean
    # overflows); a row whose squares overflow; an infinite gamma.
    w, ids, types, grad = [t.clone() if isinstance(t, torch.Tensor) else [u.clone() for u in t]
                           for t in inputs[1]]
    w[0][ids[0, 0], 3] = float("nan")
    w[0][ids[0, 1], 5] = float("inf")
    w[0][ids[0, 2]] = 3e38 * torch.tensor([1.0, -1.0]).repeat(20)
    w[0][ids[0, 3]] = 1e20
    w[0][ids[0, 3], ::3] = -1e20
    inputs.append((w, ids, types, grad))
    w = [t.clone() for t in w]
    w[3][7] = float("inf")
    inputs.append((w, ids, types, grad))
    # Converted here too: ATen's vector conversion writes another NaN than its scalar one.
    inputs = [([t.to(dtype) for t in w], ids, types, grad.to(dtype))
              for w, ids, types, grad in inputs for dtype in (torch.float32, torch.bfloat16, torch.float16)]
    torch.save(inputs, tmp_path / "inputs.pt")
    code = """
import sys, torch, posemb
results = []
for w, ids, types, grad in torch.load(sys.argv[1]):
    for dropout_p, seed in ((0.0, None), (0.3, torch.tensor(123))):
        w = [t.detach().requires_grad_() for t in w]
        out, mean, rstd = torch.ops.posemb.bert_embeddings(ids, *w, None, types, 0, 1e-12, dropout_p, seed, 1, None)
        out.backward(grad)
        results += [out, mean, rstd] + [t.grad for t in w[:3]]
torch.save(results, sys.argv[2])
"""
    results = []
    for capability in (None, "default"):
        env = dict(os.environ)
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        path = str(tmp_path / f"bert-{capability}.pt")
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "inputs.pt"), path], env=env, check=True)
        results.append(torch.load(path))
    assert len(results[0]) == len(results[1]) == 6 * 3 * 2 * 6

    def bits(t):
        return t.view(torch.int16 if t.element_size() == 2 else torch.int32) if t.dtype != torch.float64 else t

    for i, (vector, portable) in enumerate(zip(*results)):
        if i % 6 < 3:  # the forward: every bit, NaNs' too
            assert torch.equal(bits(vector), bits(portable)), i
        else:  # the gradients: which NaN a sum of two NaNs keeps is the compiler's choice
            nan = vector.isnan()
            assert torch.equal(nan, portable.isnan()), i
            assert torch.equal(bits(vector)[~nan], bits(portable)[~nan]), i
