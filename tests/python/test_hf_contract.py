"""posemb.hf.patch keeps Hugging Face's rotary contract (issue 15).

For each rotary family transformers ships that patch() knows (Llama,
Mistral, Qwen2) and every rope type:
- ``model.model.rotary_emb(x, position_ids)`` returns real ``(cos, sin)``,
  called the way transformers' own frequency tests call it, and they match
  Hugging Face's module (and an fp64 truth);
- inside the model the fused kernel still runs (the eager cos/sin math does
  not), eagerly and under ``torch.compile(fullgraph=True)``; anything posemb
  did not make falls back to the model's own code;
- logits and gradients match the unpatched model;
- deferred initialisation (meta device; ``to_empty``; buffers materialised
  uninitialised then ``initialize_weights``; a real ``from_pretrained``) and
  casts after patching give the unpatched logits, with fp32 frequencies.
"""
from __future__ import annotations

import os

import pytest
import torch

import posemb
import posemb.hf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from conftest import Counter, ulp_distance  # noqa: E402

MAX_POS = 512
HEAD = 32  # hidden 128, 4 heads
SHORT, LONG = 10, int(MAX_POS * 1.5)  # as transformers' frequency tests
LONG_FACTOR = [1.0 + 0.05 * i for i in range(HEAD // 2)]
SHORT_FACTOR = [1.0 + 0.01 * i for i in range(HEAD // 2)]

ROPE = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 128},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 128},
    "longrope": {"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": LONG_FACTOR,
                 "short_factor": SHORT_FACTOR, "original_max_position_embeddings": 256},
}
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "llama"),
    "mistral": ("MistralConfig", "MistralForCausalLM", "mistral"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "qwen2"),
}


def config_of(family, rope_type):
    config_class = getattr(transformers, FAMILIES[family][0])
    return config_class(vocab_size=80, hidden_size=4 * HEAD, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POS,
                        rope_parameters=dict(ROPE[rope_type]), attention_dropout=0.0)


def build(family, rope_type, seed=0):
    torch.manual_seed(seed)
    return getattr(transformers, FAMILIES[family][1])(config_of(family, rope_type)).eval()


def modeling(family):
    import importlib

    name = FAMILIES[family][2]
    return importlib.import_module(f"transformers.models.{name}.modeling_{name}")


def hf_bound(inv_freq, positions, scaling):
    """How far Hugging Face's fp32 cos/sin may be from the truth (its angle
    ``position * inv_freq`` is rounded to fp32: 2^-24 of the angle), plus
    posemb's 2.5e-7 and a few ulp of rounding on each side."""
    angle = positions[..., None].double() * inv_freq.double()
    angle = torch.cat((angle, angle), dim=-1)
    return scaling * (angle * 2.0**-24 + 6e-7)


def truth(inv_freq, positions, scaling):
    angle = positions[..., None].double() * inv_freq.double()
    angle = torch.cat((angle, angle), dim=-1)
    return angle.cos() * scaling, angle.sin() * scaling


# ------------------------------------------------------------- (cos, sin)

@pytest.mark.parametrize("rope_type", list(ROPE))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_rotary_module_returns_hugging_faces_cos_and_sin(family, rope_type):
    """Called as transformers' frequency tests call it: x only gives dtype and
    device; short and long positions (dynamic and longrope switch plans past
    the original context, and dynamic switches back)."""
    hf = build(family, rope_type).model.rotary_emb
    patched = build(family, rope_type)
    posemb.hf.patch(patched)
    ours = patched.model.rotary_emb
    assert isinstance(ours, posemb.hf.HFRotaryEmbedding) and "RotaryEmbedding" in type(ours).__name__
    x = torch.randn(1, dtype=torch.float32)
    for length in (SHORT, LONG, SHORT):
        positions = torch.arange(length).unsqueeze(0)
        cos_ref, sin_ref = hf(x, positions)
        cos, sin = ours(x, positions)
        assert type(cos) is torch.Tensor and type(sin) is torch.Tensor
        assert cos.shape == sin.shape == cos_ref.shape == (1, length, HEAD)
        assert cos.dtype == sin.dtype == torch.float32
        inv_freq, scaling = ours._plan_for(length)
        # Hugging Face's own frequencies for this call are posemb's, bitwise.
        assert torch.equal(inv_freq, hf.inv_freq) and scaling == hf.attention_scaling
        bound = hf_bound(inv_freq, positions, scaling)
        for got, ref in ((cos, cos_ref), (sin, sin_ref)):
            err = (got.double() - ref.double()).abs()
            assert (err <= bound).all(), f"{length}: {err.max().item():.3g} > {bound.flatten()[err.argmax()]:.3g}"
            if length == SHORT:
                assert err.max() <= 1e-6 * max(1.0, scaling), err.max()
        # posemb's own: exact angles, one rounding.
        cos_true, sin_true = truth(inv_freq, positions, scaling)
        torch.testing.assert_close(cos.double(), cos_true, rtol=0, atol=3e-7 * max(1.0, scaling))
        torch.testing.assert_close(sin.double(), sin_true, rtol=0, atol=3e-7 * max(1.0, scaling))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rope_type", ["default", "yarn", "longrope"])
def test_cos_and_sin_come_in_x_dtype(rope_type, dtype):
    hf = build("llama", rope_type).model.rotary_emb
    patched = build("llama", rope_type)
    posemb.hf.patch(patched)
    positions = torch.arange(LONG).expand(2, LONG)  # a batch of positions
    x = torch.randn(2, LONG, 4 * HEAD, dtype=dtype)
    ours = patched.model.rotary_emb
    inv_freq, scaling = ours._plan_for(LONG)
    one_ulp = 2.0 ** (-7 if dtype == torch.bfloat16 else -10)  # at 1
    for got, ref, true in zip(ours(x, positions), hf(x, positions), truth(inv_freq, positions, scaling)):
        assert got.dtype == ref.dtype == dtype and got.shape == ref.shape == (2, LONG, HEAD)
        # posemb: the exact value rounded once to dtype (or one ulp from it).
        assert ulp_distance(got, true.to(dtype)).max() <= 1
        # Hugging Face rounds its fp32 values, a little off at long positions.
        err = (got.double() - ref.double()).abs()
        assert (err <= hf_bound(inv_freq, positions, scaling) + one_ulp).all(), err.max()


# ------------------------------------------------------- the fused path

def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("rope_type", list(ROPE))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_and_gradients_agree_and_the_fused_kernel_runs(family, rope_type, monkeypatch):
    model = build(family, rope_type)
    ids = torch.randint(0, 80, (2, 24), generator=torch.Generator().manual_seed(1))
    # Past the original context for dynamic and longrope: their scaled plans.
    position_ids = torch.arange(24).expand(2, 24) + (500 if rope_type in ("dynamic", "longrope") else 0)
    ref = model(ids, position_ids=position_ids).logits
    ref.logsumexp(-1).mean().backward()
    ref_grads = grads_of(model)
    model.zero_grad()
    replaced = posemb.hf.patch(model)
    assert list(replaced) == ["model.rotary_emb"]
    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    eager = Counter(monkeypatch, modeling(family), "rotate_half")  # only the eager cos/sin math uses it
    out = model(ids, position_ids=position_ids).logits
    assert kernel.calls == 1 + model.config.num_hidden_layers and eager.calls == 0
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.logsumexp(-1).mean().backward()
    grads = grads_of(model)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    posemb.hf.unpatch(model, replaced)


def qkv(layout="bhsd", seq=7):
    g = torch.Generator().manual_seed(5)
    shape = {"bhsd": ((2, 4, seq, HEAD), (2, 2, seq, HEAD)), "bshd": ((2, seq, 4, HEAD), (2, seq, 2, HEAD))}[layout]
    return torch.randn(*shape[0], generator=g), torch.randn(*shape[1], generator=g)


def test_the_wrapper_fuses_only_what_posemb_made(monkeypatch):
    from transformers.models.llama import modeling_llama

    plain = build("llama", "yarn")
    model = build("llama", "yarn")
    replaced = posemb.hf.patch(model)
    apply = modeling_llama.apply_rotary_pos_emb
    original = apply.posemb_original
    eager = Counter(monkeypatch, modeling_llama, "rotate_half")
    x, positions = torch.randn(1), torch.arange(7).expand(2, 7) + 3
    q, k = qkv()

    def fuses(*args, **kwargs):
        before = eager.calls
        got = apply(*args, **kwargs)
        assert eager.calls == before, "posemb's kernel should have run"
        return got

    cos, sin = model.model.rotary_emb(x, positions)
    fused = fuses(q, k, cos, sin)
    for a, b in zip(fused, original(q, k, cos, sin)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=2e-6)

    # (batch, seq, heads, head_dim) with unsqueeze_dim=2, keyword or positional.
    qs, ks = (t.transpose(1, 2) for t in (q, k))
    for args, kwargs in (((2,), {}), ((), {"unsqueeze_dim": 2})):
        for a, b in zip(fuses(qs, ks, cos, sin, *args, **kwargs), fused):
            torch.testing.assert_close(a.transpose(1, 2), b, rtol=0, atol=0)

    def falls_back(cos, sin, *args):
        before = eager.calls
        got = apply(q, k, cos, sin, *args)
        assert eager.calls == before + 2, "the eager code should have run"
        for a, b in zip(got, original(q, k, cos, sin, *args)):
            assert torch.equal(a, b)

    falls_back(*plain.model.rotary_emb(x, positions))            # made by Hugging Face's module
    falls_back(cos.clone(), sin.clone())                           # copies
    other_cos, other_sin = model.model.rotary_emb(x, positions)
    falls_back(cos, other_sin)                                     # not a pair
    falls_back(cos.unsqueeze(1), sin.unsqueeze(1), 0)              # another unsqueeze_dim
    changed_cos, changed_sin = model.model.rotary_emb(x, positions)
    changed_cos.mul_(0.5)
    falls_back(changed_cos, changed_sin)                           # written in place since
    # q and k whose head_dim is not contiguous (as Zaya's are): the eager code.
    q_strided, k_strided = (t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (q, k))
    want = original(q, k, cos, sin)
    before = eager.calls
    got = apply(q_strided, k_strided, cos, sin)
    assert eager.calls == before + 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Positions for another sequence length than q's: the eager code decides (and fails).
    short_cos, short_sin = model.model.rotary_emb(x, positions[:, :3])
    with pytest.raises(RuntimeError):
        apply(q, k, short_cos, short_sin)
    posemb.hf.unpatch(model, replaced)


def test_inference_mode_and_no_grad_run_the_fused_kernel(monkeypatch):
    model = build("llama", "default")
    ids = torch.randint(0, 80, (2, 9))
    with torch.no_grad():
        ref = model(ids).logits
    posemb.hf.patch(model)
    eager = Counter(monkeypatch, modeling("llama"), "rotate_half")
    with torch.inference_mode():
        out = model(ids).logits
    assert eager.calls == 0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_autocast_gives_the_eager_result_dtype(monkeypatch):
    """fp32 model under bf16 autocast: q comes out of a Linear in bf16, cos in
    fp32 (x is fp32); the eager code promotes to fp32, so does the fused path."""
    from transformers.models.llama import modeling_llama

    model = build("llama", "default")
    posemb.hf.patch(model)
    apply = modeling_llama.apply_rotary_pos_emb
    cos, sin = model.model.rotary_emb(torch.randn(1), torch.arange(7)[None])
    q, k = (t.bfloat16() for t in qkv())
    eager = Counter(monkeypatch, modeling_llama, "rotate_half")
    got = apply(q, k, cos, sin)
    assert eager.calls == 0
    want = apply.posemb_original(q, k, cos, sin)  # (counted too, from here on)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=2e-6)


# ----------------------------------------------------------- torch.compile

@pytest.mark.compile
@pytest.mark.parametrize("rope_type", list(ROPE))
def test_fullgraph_compile_keeps_the_fused_kernel(rope_type):
    """One graph for every rope type: dynamic and longrope choose their
    frequencies from the largest position on the device (no host read), so
    the same graph gives the unpatched logits at short positions and past
    the original context (longrope's long factors, dynamic's grown base)."""
    model = build("llama", rope_type)
    ids = torch.randint(0, 80, (2, 16), generator=torch.Generator().manual_seed(2))
    short = torch.arange(16).repeat(2, 1)  # (strides as long's: one graph serves both)
    long = short + LONG  # past max_position_embeddings (512) and longrope's 256
    ref = model(ids, position_ids=short).logits
    ref.logsumexp(-1).mean().backward()
    ref_grads = grads_of(model)
    model.zero_grad()
    ref_long = model(ids, position_ids=long).logits
    if rope_type in ("dynamic", "longrope"):  # other frequencies there (a plain shift alone changes nothing)
        assert (ref_long - ref).abs().max() > 1e-3
    posemb.hf.patch(model)
    graphs = []

    def backend(gm, example_inputs):  # records dynamo's graph, then AOTAutograd (the backward too)
        graphs.append(gm)
        return torch._dynamo.backends.registry.lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    try:
        compiled = torch.compile(model, fullgraph=True, backend=backend)
        out = compiled(ids, position_ids=short).logits
        out_long = compiled(ids, position_ids=long).logits
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1  # both calls: one graph, no recompile
    rotary = [n for n in graphs[0].graph.nodes
              if n.target in (torch.ops.posemb.rotary, torch.ops.posemb.rotary.default)]
    # The (cos, sin) table, then q and k of each layer (the eager fallback
    # would leave only the first).
    assert len(rotary) == 1 + model.config.num_hidden_layers
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_long, ref_long, rtol=1e-4, atol=1e-4)
    out.logsumexp(-1).mean().backward()
    for name, g in grads_of(model).items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


# ------------------------------------------------ deferred initialisation

@pytest.mark.parametrize("rope_type", list(ROPE))
def test_meta_build_then_to_empty_and_a_state_dict_gives_the_unpatched_logits(rope_type):
    reference = build("llama", rope_type)
    with torch.device("meta"):
        lazy = transformers.LlamaForCausalLM(reference.config)
    posemb.hf.patch(lazy)
    assert lazy.model.rotary_emb.inv_freq.is_meta
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(reference.state_dict())
    lazy.eval()
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(3))
    position_ids = torch.arange(12).expand(2, 12) + (500 if rope_type in ("dynamic", "longrope") else 0)
    torch.testing.assert_close(lazy(ids, position_ids=position_ids).logits,
                               reference(ids, position_ids=position_ids).logits, rtol=1e-4, atol=1e-4)


def non_persistent_buffers(model):
    for module in model.modules():
        for name in module._non_persistent_buffers_set:
            yield module, name


@pytest.mark.parametrize("rope_type", list(ROPE))
def test_buffers_materialised_uninitialised_then_initialize_weights(rope_type):
    """What from_pretrained does after a meta build: non-persistent buffers
    become fresh uninitialised tensors (set, not moved: no _apply), then
    initialize_weights() runs _init_weights on the modules not yet initialised.
    posemb's rotary module must be one that it rebuilds."""
    reference = build("llama", rope_type)
    with torch.device("meta"):
        lazy = transformers.LlamaForCausalLM(reference.config)
    posemb.hf.patch(lazy)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(reference.state_dict())
    for p in lazy.parameters():
        p._is_hf_initialized = True  # loaded: initialize_weights leaves them alone
    for module, name in non_persistent_buffers(lazy):
        setattr(module, name, torch.full_like(getattr(module, name), float("nan")))
    lazy.initialize_weights()
    rotary = lazy.model.rotary_emb
    plan = posemb.rope.frequency_plan_from_config(reference.config)
    assert torch.equal(rotary.inv_freq, plan.inv_freq) and torch.equal(rotary.original_inv_freq, plan.inv_freq)
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(lazy.eval()(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rope_type", list(ROPE))
def test_from_pretrained_of_a_model_that_patches_itself(rope_type, tmp_path):
    """The real deferred path: from_pretrained builds on meta, loads the
    checkpoint, materialises the buffers and initialises what is missing."""

    class PatchedLlama(transformers.LlamaForCausalLM):
        def __init__(self, config):
            super().__init__(config)
            posemb.hf.patch(self)

    reference = build("llama", rope_type)
    reference.save_pretrained(tmp_path)
    model = PatchedLlama.from_pretrained(tmp_path).eval()
    assert isinstance(model.model.rotary_emb, posemb.hf.HFRotaryEmbedding)
    plan = posemb.rope.frequency_plan_from_config(reference.config)
    assert torch.equal(model.model.rotary_emb.inv_freq, plan.inv_freq)
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ casts

@pytest.mark.parametrize("cast", ["bfloat16", "half", "to_float16"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_cast_after_patching_keeps_fp32_frequencies(family, cast):
    dtype = torch.float16 if cast != "bfloat16" else torch.bfloat16
    cast_fn = {"bfloat16": lambda m: m.to(torch.bfloat16), "half": lambda m: m.half(),
               "to_float16": lambda m: m.to(dtype=torch.float16)}[cast]
    reference = build(family, "yarn")
    unpatched = cast_fn(build(family, "yarn"))
    model = build(family, "yarn")
    posemb.hf.patch(model)
    plan = posemb.rope.frequency_plan_from_config(model.config)
    cast_fn(model)
    rotary = model.model.rotary_emb
    assert rotary.inv_freq.dtype == rotary.original_inv_freq.dtype == torch.float32
    assert torch.equal(rotary.inv_freq, plan.inv_freq) and torch.equal(rotary.original_inv_freq, plan.inv_freq)
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(2))
    # The unpatched model in fp32 with the cast's weights: the difference left
    # is the dtype's own rounding of activations (HF also rounds its cos/sin
    # to dtype, posemb does not).
    cos, sin = rotary(torch.randn(1, dtype=dtype), torch.arange(12)[None])
    assert cos.dtype == sin.dtype == dtype
    out = model(ids).logits.float()
    # The unpatched model cast the same way: Hugging Face rounds its inv_freq
    # (and cos/sin) to dtype, posemb does not, so they agree to dtype's
    # precision through two layers.
    torch.testing.assert_close(out, unpatched(ids).logits.float(), rtol=0.05, atol=0.05)
    # The unpatched model in fp32 with the cast's weights: what is left is
    # dtype's rounding of the activations.
    with torch.no_grad():
        for p_ref, p in zip(reference.parameters(), model.parameters()):
            p_ref.copy_(p.float())
    torch.testing.assert_close(out, reference(ids).logits, rtol=0.05, atol=0.05)
    model.float()
    assert torch.equal(rotary.inv_freq, plan.inv_freq)


# ------------------------------------------------ generation, restored code

def test_greedy_generation_with_a_kv_cache_is_unchanged(monkeypatch):
    model = build("llama", "yarn")
    ids = torch.randint(0, 80, (2, 8), generator=torch.Generator().manual_seed(4))
    ref = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    posemb.hf.patch(model)
    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    out = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(out, ref)
    assert kernel.calls == 10 * (1 + model.config.num_hidden_layers)  # one step each: table, then each layer


def test_a_patched_model_still_works_with_the_original_functions_restored(monkeypatch):
    """(cos, sin) are real: the model's own apply_rotary_pos_emb handles them."""
    from transformers.models.llama import modeling_llama

    model = build("llama", "llama3")
    ids = torch.randint(0, 80, (2, 12))
    ref = model(ids).logits
    posemb.hf.patch(model)
    posemb.hf.restore_functions()
    assert not hasattr(modeling_llama.apply_rotary_pos_emb, "posemb_original")
    eager = Counter(monkeypatch, modeling_llama, "rotate_half")
    torch.testing.assert_close(model(ids).logits, ref, rtol=1e-4, atol=1e-4)
    assert eager.calls == 2 * model.config.num_hidden_layers


def test_copies_of_a_patched_model_keep_the_fused_kernel(monkeypatch, tmp_path):
    """A deep copy, and a pickled model loaded after the functions were
    restored (as in another process), wrap the model's apply function again;
    so does a second patch() after restore_functions()."""
    import copy

    from transformers.models.llama import modeling_llama

    model = build("llama", "default")
    ids = torch.randint(0, 80, (2, 10), generator=torch.Generator().manual_seed(2))
    replaced = posemb.hf.patch(model)
    ref = model(ids).logits
    fused = 1 + model.config.num_hidden_layers  # the (cos, sin) table, then each layer

    def calls(m):
        kernel = Counter(monkeypatch, posemb.ops, "rotary")
        torch.testing.assert_close(m(ids).logits, ref, rtol=1e-5, atol=1e-5)
        monkeypatch.undo()
        return kernel.calls

    twin = copy.deepcopy(model)
    posemb.hf.unpatch(model, replaced)  # the copy still needs the wrapper
    assert calls(twin) == fused
    torch.save(twin, tmp_path / "model.pt")
    posemb.hf.restore_functions()
    assert calls(twin) == 1
    assert posemb.hf.patch(twin) == {} and calls(twin) == fused
    posemb.hf.restore_functions()
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert hasattr(modeling_llama.apply_rotary_pos_emb, "posemb_original") and calls(loaded) == fused


def test_a_known_block_passed_as_the_model_is_left_alone():
    """It has no parent to hold its replacement: patch() says so and changes
    nothing (no child named '' inside it)."""
    import transformers

    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=20)
    block = transformers.BertModel(cfg).embeddings
    llama = build("llama", "default")
    for module in (block, llama.model.rotary_emb):
        children = [n for n, _ in module.named_children()]
        with pytest.warns(UserWarning, match="a module cannot replace itself; patch the model that holds it"):
            assert posemb.hf.patch(module) == {}
        assert [n for n, _ in module.named_children()] == children


# ------------------------------------------------- what the contract costs

def _time_the_contract(rounds: int = 15) -> None:
    """Prints the forward of a tiny Llama (CPU, one thread, no_grad)
    unpatched and patched, interleaved, and the rotary module alone: the
    README's figures. ``python tests/python/test_hf_contract.py``."""
    import statistics
    import time

    from transformers.models.llama import modeling_llama

    torch.set_num_threads(1)
    config = transformers.LlamaConfig(vocab_size=80, hidden_size=256, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                                      rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                       "original_max_position_embeddings": 2048})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    hf_rotary, hf_apply = model.model.rotary_emb, modeling_llama.apply_rotary_pos_emb
    posemb.hf.patch(model)
    variants = {"unpatched": (hf_rotary, hf_apply),
                "patched": (model.model.rotary_emb, modeling_llama.apply_rotary_pos_emb)}

    def median_us(fn, reps):
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            samples.append((time.perf_counter() - start) / reps)
        return statistics.median(samples) * 1e6

    with torch.no_grad():
        for seq, reps in ((16, 100), (256, 20), (2048, 3)):
            ids = torch.randint(0, 80, (2, seq))
            samples = {name: [] for name in variants}
            for _ in range(rounds):
                for name, (rotary, apply) in variants.items():
                    model.model.rotary_emb, modeling_llama.apply_rotary_pos_emb = rotary, apply
                    model(ids)
                    start = time.perf_counter()
                    for _ in range(reps):
                        model(ids)
                    samples[name].append((time.perf_counter() - start) / reps)
            med = {name: statistics.median(s) * 1e6 for name, s in samples.items()}
            print(f"forward, batch 2, seq {seq}: unpatched {med['unpatched']:.0f} us, patched {med['patched']:.0f} us")
        x = torch.randn(1)
        for seq in (16, 256, 4096):
            positions = torch.arange(seq)[None]
            reps = 200 if seq < 1000 else 20
            times = [median_us(lambda r=r: r(x, positions), reps) for r in (hf_rotary, variants["patched"][0])]
            print(f"rotary_emb(x, position_ids), seq {seq}: Hugging Face {times[0]:.1f} us, posemb {times[1]:.1f} us")
    model.model.rotary_emb, modeling_llama.apply_rotary_pos_emb = variants["patched"]


if __name__ == "__main__":
    _time_the_contract()
