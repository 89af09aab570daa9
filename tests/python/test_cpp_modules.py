"""posemb.cpp: the C++ modules (posemb::nn) bound to Python through
torch::python::bind_module, each held against its Python twin in posemb.nn
in one process, on the same inputs and weights, forward and backward."""
from __future__ import annotations

import math

import pytest
import torch

import posemb
import posemb.nn

# Built by setup.py (CMake's POSEMB_PYTHON=ON); a library built by CMake
# alone (the sanitizer and CUDA check builds) has no bindings, and
# test_cpp_package.py checks that the package has them.
pytest.importorskip("posemb.cpp", reason="posemb/lib/_cpp*.so is not built")

DTYPES = [torch.float32, torch.float64]


def same(a, b):
    """The C++ module and the Python twin run the same ops of the same
    library: the results are bitwise equal."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b), (a - b).abs().max()


def leaf(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()


def grads_of(module):
    return {name: p.grad for name, p in module.named_parameters()}


def test_the_bound_classes_are_torch_modules_driving_the_cpp_objects():
    for name in ("SinusoidalPositionalEmbedding", "LearnedPositionalEmbedding", "BertEmbeddings",
                 "RotaryEmbedding", "FourierPositionalEmbedding", "Timesteps", "SinCos2dPositionalEmbedding",
                 "SinCos3dPositionalEmbedding"):
        cls = getattr(posemb.cpp, name)
        assert issubclass(cls, torch.nn.Module) and issubclass(cls, torch.nn.cpp.ModuleWrapper)
        assert cls.__module__ == "posemb.cpp"
    pe = posemb.cpp.SinusoidalPositionalEmbedding(16, layout="half", freqs="fairseq", padding_idx=1, scale=4.0)
    assert repr(pe) == ("posemb::nn::SinusoidalPositionalEmbedding(16, layout=half, freqs=fairseq, "
                        "base=10000, padding_idx=1, scale=4)")
    bert = posemb.cpp.BertEmbeddings(50, 8, 16)
    assert repr(bert).startswith("posemb::nn::BertEmbeddings(vocab_size=50, hidden_size=8")
    assert bert.training and bert.cpp_module.training
    assert bert.eval() is bert  # as torch.nn.Module's; so are to(), double(), ...
    assert not bert.training and not bert.cpp_module.training  # the C++ module's own flag
    assert bert.double() is bert and bert.cpp_module.parameters()[0].dtype == torch.float64


def test_one_copy_of_the_library_and_its_registrations():
    maps = open("/proc/self/maps").read()
    libraries = {line.split()[-1] for line in maps.splitlines() if line.endswith(".so") and "posemb" in line}
    names = sorted(path.rsplit("/", 1)[-1] for path in libraries)
    assert names.count("libposemb.so") == 1, libraries
    assert any(n.startswith("_cpp.") for n in names), libraries
    # The bound modules call the ops that `import posemb` registered.
    assert torch.ops.posemb.sinusoidal_add.default is not None


SINUSOIDAL = [
    dict(),
    dict(layout="half", freqs="fairseq", padding_idx=1, scale=4.0),
    dict(layout="half", base=500.0, seq_dim=0),
]


# input_ids need a padding_idx; per-sequence offsets are tested batch-first.
SINUSOIDAL_CASES = [(i, mode) for i, kw in enumerate(SINUSOIDAL)
                    for mode in ("offset", "offsets", "positions", "input_ids")
                    if not (mode == "input_ids" and "padding_idx" not in kw)
                    and not (mode == "offsets" and kw.get("seq_dim") == 0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case,mode", SINUSOIDAL_CASES,
                         ids=[f"{['interleaved', 'fairseq-padding', 'seq-first'][i]}-{m}" for i, m in SINUSOIDAL_CASES])
def test_sinusoidal_against_python(case, mode, dtype):
    kw = SINUSOIDAL[case]
    cpp = posemb.cpp.SinusoidalPositionalEmbedding(16, **kw)
    py = posemb.nn.SinusoidalPositionalEmbedding(16, **kw)
    shape = (6, 3, 16) if kw.get("seq_dim") == 0 else (3, 6, 16)
    args, kwargs = {
        "offset": ((), dict(offset=7)),
        "offsets": ((), dict(offset=torch.tensor([0, 5, 1000]))),
        "positions": ((torch.tensor([[3, 1, 4, 1, 5, 9]]),), {}),
        "input_ids": ((), dict(input_ids=torch.tensor([[5, 6, 7, 1, 1, 1], [1, 8, 9, 2, 3, 4], [2] * 6]))),
    }[mode]
    xs = [leaf(shape, dtype) for _ in range(2)]
    ys = [m(x, *args, **kwargs) for m, x in zip((cpp, py), xs)]
    same(*ys)
    g = leaf(shape, dtype, seed=1).detach()
    for y in ys:
        y.backward(g)
    same(xs[0].grad, xs[1].grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["offset", "offsets", "positions", "input_ids"])
def test_learned_against_python(mode, dtype):
    cpp = posemb.cpp.LearnedPositionalEmbedding(40, 8, padding_idx=1).to(dtype)
    py = posemb.nn.LearnedPositionalEmbedding(40, 8, padding_idx=1, dtype=dtype)
    assert cpp.load_state_dict(py.state_dict()) is not None
    same(cpp.weight, py.weight)
    args, kwargs = {
        "offset": ((), dict(offset=3)),
        "offsets": ((), dict(offset=torch.tensor([0, 20]))),
        "positions": ((torch.tensor([[0, 1, 1, 39, 2]]),), {}),
        "input_ids": ((), dict(input_ids=torch.tensor([[5, 6, 7, 1, 1], [1, 1, 9, 2, 3]]))),
    }[mode]
    xs = [leaf((2, 5, 8), dtype) for _ in range(2)]
    ys = [m(x, *args, **kwargs) for m, x in zip((cpp, py), xs)]
    same(*ys)
    g = leaf((2, 5, 8), dtype, seed=1).detach()
    for y in ys:
        y.backward(g)
    same(xs[0].grad, xs[1].grad)
    same(cpp.weight.grad, py.weight.grad)  # the padding row included (no gradient)


@pytest.mark.parametrize("noise_std", [0.0, 0.5])
def test_learned_sinusoidal_init_against_from_sinusoidal(noise_std):
    kw = dict(layout="half", freqs="fairseq", base=1000.0)
    cpp = posemb.cpp.LearnedPositionalEmbedding(64, 16, sinusoidal_init=True, noise_std=noise_std, **kw)
    py = posemb.nn.LearnedPositionalEmbedding.from_sinusoidal(64, 16, noise_std=0.0, **kw)
    assert cpp.weight.requires_grad
    if noise_std == 0:
        same(cpp.weight.detach(), py.weight.detach())
    else:  # random + sinusoid: the noise has the asked spread around the sinusoid
        noise = (cpp.weight - py.weight).detach()
        assert 0.4 < noise.std().item() < 0.6


def bert_pair(padding_aware=False, dropout=0.0):
    kw = dict(max_position_embeddings=40, type_vocab_size=3, pad_token_id=1, hidden_dropout_prob=dropout,
              padding_aware_positions=padding_aware)
    torch.manual_seed(0)
    py = posemb.nn.BertEmbeddings(30, 16, **kw).double()
    with torch.no_grad():  # LayerNorm away from its (1, 0) start
        py.LayerNorm.weight.uniform_(0.5, 1.5)
        py.LayerNorm.bias.uniform_(-0.5, 0.5)
    cpp = posemb.cpp.BertEmbeddings(30, 16, **kw).double()
    cpp.load_state_dict(py.state_dict())
    return cpp, py


IDS = torch.tensor([[5, 6, 7, 1, 1], [2, 1, 9, 2, 3]])
TYPES = torch.tensor([[0, 0, 1, 1, 2], [1, 0, 0, 2, 2]])


@pytest.mark.parametrize("case", ["plain", "types", "positions", "cache", "padding-aware"])
def test_bert_against_python(case):
    cpp, py = bert_pair(padding_aware=case == "padding-aware")
    assert cpp.state_dict().keys() == py.state_dict().keys()  # Hugging Face's names
    kwargs = {
        "plain": {}, "padding-aware": {},
        "types": dict(token_type_ids=TYPES),
        "positions": dict(token_type_ids=TYPES, position_ids=torch.tensor([[0, 2, 4, 6, 39]])),
        "cache": dict(cache_length=11),
    }[case]
    for m in (cpp, py):
        m.eval()
    ys = [m(IDS, **kwargs) for m in (cpp, py)]
    same(*ys)
    g = torch.randn(ys[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for y in ys:
        y.backward(g)
    grads = [grads_of(m) for m in (cpp, py)]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        same(grads[0][name], grads[1][name])


def test_bert_dropout_is_the_same_mask_from_the_same_seed():
    cpp, py = bert_pair(dropout=0.3)
    ys = []
    for m in (cpp, py):
        m.train()
        torch.manual_seed(123)  # both draw the op's seed from torch's default generator
        ys.append(m(IDS, token_type_ids=TYPES))
    same(*ys)
    assert (ys[0] == 0).any()


def test_bert_training_steps_agree():
    """A few SGD steps driven from Python on the C++ module and on its twin."""
    cpp, py = bert_pair()
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (cpp, py)]
    target = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    losses = [[], []]
    for _ in range(3):
        for i, (m, opt) in enumerate(zip((cpp, py), opts)):
            opt.zero_grad()
            loss = (m(IDS, token_type_ids=TYPES) - target).pow(2).mean()
            loss.backward()
            opt.step()
            losses[i].append(loss.item())
    assert losses[0] == losses[1]
    assert losses[0][-1] < losses[0][0]
    for (name, a), b in zip(cpp.state_dict().items(), py.state_dict().values()):
        same(a, b)


ROTARY = [
    (dict(), dict()),
    (dict(base=500.0, interleaved=True), dict(base=500.0, interleaved=True)),
    (dict(rotary_dim=8, seq_dim=2), dict(rotary_dim=8, seq_dim=2)),
    (dict(linear_factor=4.0), dict(rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cpp_kw,py_kw", ROTARY, ids=["default", "interleaved", "partial-heads-first", "linear"])
@pytest.mark.parametrize("mode", ["offset", "positions"])
def test_rotary_against_python(cpp_kw, py_kw, mode, dtype):
    cpp = posemb.cpp.RotaryEmbedding(16, **cpp_kw)
    py = posemb.nn.RotaryEmbedding(16, **py_kw)
    same(dict(cpp.named_buffers().items())["inv_freq"], py.inv_freq)
    shape = (2, 3, 5, 16) if cpp_kw.get("seq_dim") == 2 else (2, 5, 3, 16)
    args, kwargs = {"offset": ((), dict(offset=1000)),
                    "positions": ((torch.tensor([[0, 7, 7, 100000, 2**20]]),), {})}[mode]
    qs = [leaf(shape, dtype, 0) for _ in range(2)]
    ks = [leaf(shape, dtype, 1) for _ in range(2)]
    outs = [m(q, k, *args, **kwargs) for m, q, k in zip((cpp, py), qs, ks)]
    same(outs[0][0], outs[1][0])
    same(outs[0][1], outs[1][1])
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    for q_out, k_out in outs:
        (q_out * g + k_out * g.flip(-1)).sum().backward()
    same(qs[0].grad, qs[1].grad)
    same(ks[0].grad, ks[1].grad)


def test_rotary_takes_a_plan():
    plan = posemb.rope.frequency_plan({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                       "original_max_position_embeddings": 64}, 16, max_position_embeddings=512)
    cpp = posemb.cpp.RotaryEmbedding(16, inv_freq=plan.inv_freq, attention_scaling=plan.attention_scaling)
    py = posemb.nn.RotaryEmbedding(16, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                                        "original_max_position_embeddings": 64},
                                   max_position_embeddings=512)
    q, k = leaf((1, 9, 2, 16), torch.float32, 0), leaf((1, 9, 2, 16), torch.float32, 1)
    for a, b in zip(cpp(q, k, offset=300), py(q, k, offset=300)):
        same(a, b)


def test_errors_come_through_as_python_exceptions():
    with pytest.raises(RuntimeError, match="rotary_dim must be even"):
        posemb.cpp.RotaryEmbedding(16, rotary_dim=7)
    with pytest.raises(RuntimeError, match="hidden_dropout_prob"):
        posemb.cpp.BertEmbeddings(10, 8, hidden_dropout_prob=1.5)
    pe = posemb.cpp.SinusoidalPositionalEmbedding(8, padding_idx=1)
    with pytest.raises(RuntimeError, match="input_ids makes the positions"):
        pe(torch.zeros(1, 3, 8), offset=2, input_ids=torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="offset must be an int or a tensor of per-sequence offsets, got str"):
        pe(torch.zeros(1, 3, 8), offset="two")


@pytest.mark.parametrize("mode", ["offset", "offsets", "positions"])
def test_fourier_against_python(mode):
    kw = dict(bias=True)
    cpp, py = posemb.cpp.FourierPositionalEmbedding(12, 5, **kw), posemb.nn.FourierPositionalEmbedding(12, 5, **kw)
    same(cpp.frequencies, py.frequencies)  # the same initial frequencies
    with torch.no_grad():
        py.weight.normal_()
        py.bias.normal_()
    cpp.load_state_dict(py.state_dict())
    args, kwargs = {
        "offset": ((), dict(offset=3)),
        "offsets": ((), dict(offset=torch.tensor([0, 2**30]))),
        "positions": ((torch.tensor([[0, 1, 7, 2**31 - 1]]),), {}),
    }[mode]
    xs = [leaf((2, 4, 12), torch.float32) for _ in range(2)]
    ys = [m(x, *args, **kwargs) for m, x in zip((cpp, py), xs)]
    same(*ys)
    g = leaf((2, 4, 12), torch.float32, seed=1).detach()
    for y in ys:
        y.backward(g)
    same(xs[0].grad, xs[1].grad)
    for name, grad in grads_of(py).items():
        same(grads_of(cpp)[name], grad)  # frequencies, weight and bias


@pytest.mark.parametrize("call, message", [
    (lambda m: m(torch.zeros(2, 4, 12), torch.arange(4), offset=3), "pass positions or offset, not both"),
    (lambda m: m(torch.zeros(2, 4, 12), offset=2**63 - 2), r"offset \+ seq - 1 must fit in int64"),
    (lambda m: m(torch.zeros(2, 4, 12), offset=torch.tensor([0, 2**63 - 2])), r"offset \+ seq - 1 must fit in int64"),
    (lambda m: m(torch.zeros(2, 4, 12), offset=torch.tensor([0.0, 1.0])), "must be an int(eger tensor| or an integer)"),
    (lambda m: m(torch.zeros(2, 4, 12, dtype=torch.long)), "x must be a floating-point tensor"),
], ids=["positions-and-offset", "offset-past-int64", "offsets-past-int64", "float-offsets", "integer-x"])
def test_fourier_twins_refuse_the_same_inputs(call, message):
    for m in (posemb.cpp.FourierPositionalEmbedding(12, 5), posemb.nn.FourierPositionalEmbedding(12, 5)):
        with pytest.raises((RuntimeError, ValueError), match=message):
            call(m)


@pytest.mark.parametrize("kw", [dict(flip_sin_to_cos=True, downscale_freq_shift=0),
                                dict(flip_sin_to_cos=False, downscale_freq_shift=1, scale=3.0, max_period=500.0)])
def test_timesteps_against_python(kw):
    cpp, py = posemb.cpp.Timesteps(9, **kw), posemb.nn.Timesteps(9, **kw)
    assert cpp.__module__ == "posemb.cpp" and repr(cpp).startswith("posemb::nn::Timesteps(9")
    t = torch.tensor([0.0, 0.5, 999.0, 1e6])
    same(cpp(t), py(t))
    with pytest.raises(RuntimeError, match="posemb::nn::Timesteps: num_channels must be >= 1"):
        posemb.cpp.Timesteps(0, True, 0)


def grid_twins_agree(cpp, py, sizes, dim=32):
    """The C++ and Python grid modules on (2, prod(sizes), dim): the same
    output and input gradient, bitwise; both refuse an x of another width."""
    tokens = math.prod(sizes)
    xs = [leaf((2, tokens, dim), torch.float32) for _ in range(2)]
    ys = [m(x, *sizes) for m, x in zip((cpp, py), xs)]
    same(*ys)
    g = leaf((2, tokens, dim), torch.float32, seed=1).detach()
    for y in ys:
        y.backward(g)
    same(xs[0].grad, xs[1].grad)
    for m in (cpp, py):
        with pytest.raises((RuntimeError, ValueError), match=f"x must be \\(batch, .*, {dim}\\), got shape"):
            m(torch.zeros(2, tokens, 2 * dim), *sizes)


@pytest.mark.parametrize("kw", [{}, dict(base_size=16.0, interpolation_scale=2.0)])
def test_sincos_2d_against_python(kw):
    cpp, py = posemb.cpp.SinCos2dPositionalEmbedding(32, **kw), posemb.nn.SinCos2dPositionalEmbedding(32, **kw)
    grid_twins_agree(cpp, py, (6, 5))
    with pytest.raises(RuntimeError, match="embed_dim must be a positive multiple of 4"):
        posemb.cpp.SinCos2dPositionalEmbedding(30)


@pytest.mark.parametrize("kw", [{}, dict(spatial_interpolation_scale=1.875, temporal_interpolation_scale=0.5,
                                         base=500.0)])
def test_sincos_3d_against_python(kw):
    cpp, py = posemb.cpp.SinCos3dPositionalEmbedding(32, **kw), posemb.nn.SinCos3dPositionalEmbedding(32, **kw)
    assert cpp.__module__ == "posemb.cpp" and repr(cpp).startswith("posemb::nn::SinCos3dPositionalEmbedding(32")
    grid_twins_agree(cpp, py, (3, 6, 5))
    with pytest.raises(RuntimeError, match="embed_dim must be a positive multiple of 16"):
        posemb.cpp.SinCos3dPositionalEmbedding(40)
