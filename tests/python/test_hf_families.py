"""posemb.hf.patch across the model families of transformers 5.x (issue 12).

For each family patch() takes, a tiny seeded random model whose weights are
large enough that positions change its output (checked: stretched positions
for rotary, shifted ones for learned tables, give other outputs) is compared with the unpatched model: the
outputs, every parameter gradient, and for decoders greedy ``generate`` with
the KV cache (plain and left-padded), and the rotary module's ``(cos, sin)``
against the family's own module. patch() returns what it replaced, patching
twice replaces nothing more, and families posemb cannot reproduce exactly are
left alone with a warning that names them.
"""
from __future__ import annotations

import importlib
import os
import warnings

import pytest
import torch

import posemb
import posemb.hf

from conftest import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

VOCAB, SEQ, MAX_POS = 80, 24, 512
HIDDEN, HEADS, KV_HEADS, HEAD = 64, 4, 2, 16
COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=HEADS, max_position_embeddings=MAX_POS, pad_token_id=0, bos_token_id=1,
              eos_token_id=2, initializer_range=0.25, tie_word_embeddings=False)
GQA = dict(num_key_value_heads=KV_HEADS)
PHI3_ROTARY = HEAD // 2  # partial_rotary_factor 0.5

# family: (config class, model class, modeling module, config kwargs, positions offset)
FAMILIES = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", "qwen3",
              dict(**GQA, head_dim=HEAD, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                                          "original_max_position_embeddings": 128}), 0),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", "olmo", dict(**GQA), 0),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", "olmo2",
              dict(**GQA, rope_parameters={"rope_type": "linear", "rope_theta": 50000.0, "factor": 2.0}), 0),
    "granite": ("GraniteConfig", "GraniteForCausalLM", "granite",
                dict(**GQA, embedding_multiplier=2.0, attention_multiplier=0.3, residual_multiplier=0.7,
                     logits_scaling=1.5), 0),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", "gemma", dict(**GQA, head_dim=HEAD), 0),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", "gemma2",
               dict(**GQA, head_dim=HEAD, sliding_window=8, query_pre_attn_scalar=HEAD,
                    rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}), 0),
    # Local and global attention with their own rope: 10k default on the
    # sliding layers, 1M with linear scaling on the full ones (Gemma 3's).
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", "gemma3",
               dict(**GQA, head_dim=HEAD, sliding_window=8, query_pre_attn_scalar=HEAD,
                    layer_types=["sliding_attention", "full_attention"],
                    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                     "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0}}),
               0),
    # Gemma 4: per layer type too, the global layers with wider heads (32) and
    # proportional rope (a quarter of the frequencies turned, the rest zero);
    # apply_rotary_pos_emb(x, cos, sin) takes q and k one at a time.
    "gemma4": ("Gemma4TextConfig", "Gemma4ForCausalLM", "gemma4",
               dict(**GQA, head_dim=HEAD, global_head_dim=2 * HEAD, sliding_window=8,
                    layer_types=["sliding_attention", "full_attention"],
                    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                     "full_attention": {"rope_type": "proportional", "rope_theta": 1e6,
                                                        "partial_rotary_factor": 0.25}}),
               0),
    # longrope (short factors below 128, long past it) on half the head.
    "phi3": ("Phi3Config", "Phi3ForCausalLM", "phi3",
             dict(**GQA, partial_rotary_factor=0.5,
                  rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                   "long_factor": [1.0 + 0.3 * i for i in range(PHI3_ROTARY // 2)],
                                   "short_factor": [1.0 + 0.05 * i for i in range(PHI3_ROTARY // 2)],
                                   "original_max_position_embeddings": 128}), 140),
    # Partial rotary: a quarter of each head turned, the rest passed through.
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", "gpt_neox",
                 dict(partial_rotary_factor=0.25, hidden_dropout=0.0, attention_dropout=0.0), 0),
    # Interleaved pairs on the first 8 channels of each head; (sin, cos) and
    # apply_rotary_pos_emb(tensor, sin, cos), one tensor at a time.
    "gptj": ("GPTJConfig", "GPTJForCausalLM", "gptj", None, 0),
    # Half-width cos and sin turning each half (_apply_rotary_emb); yarn
    # untruncated as GPT-OSS ships it; attention sinks, sliding layers, MoE.
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", "gpt_oss",
                dict(**GQA, head_dim=HEAD, num_local_experts=2, num_experts_per_tok=1, sliding_window=8,
                     layer_types=["sliding_attention", "full_attention"],
                     rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "beta_fast": 32.0,
                                      "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 128}),
                0),
    # Per layer type, fp32 cos and sin (as Olmo's).
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", "olmo3",
              dict(**GQA, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                   rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                    "full_attention": {"rope_type": "linear", "rope_theta": 50000.0, "factor": 2.0}}),
              0),
    # Interleaved pairs: cos and sin repeated in place, computed in fp32.
    "cohere": ("CohereConfig", "CohereForCausalLM", "cohere", dict(**GQA, logit_scale=0.5), 0),
    # The same on the sliding layers only (the full ones have no rope).
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", "cohere2",
                dict(**GQA, sliding_window=8, layer_types=["sliding_attention", "full_attention"]), 0),
    "cohere2_moe": ("Cohere2MoeConfig", "Cohere2MoeForCausalLM", "cohere2_moe",
                    dict(**GQA, sliding_window=8, layer_types=["sliding_attention", "full_attention"]), 0),
    # Llama's cos and sin re-paired by apply_rotary_pos_emb: interleaved, on
    # half of each head (GLM), or all of it (Helium).
    "glm": ("GlmConfig", "GlmForCausalLM", "glm", dict(**GQA, head_dim=HEAD, partial_rotary_factor=0.5), 0),
    "glm4": ("Glm4Config", "Glm4ForCausalLM", "glm4", dict(**GQA, head_dim=HEAD, partial_rotary_factor=0.5), 0),
    "helium": ("HeliumConfig", "HeliumForCausalLM", "helium", dict(**GQA, head_dim=HEAD), 0),
    # Llama's code but for 'ntk_alpha' (left alone, below); q and k normed after rope.
    "hunyuan_v1_dense": ("HunYuanDenseV1Config", "HunYuanDenseV1ForCausalLM", "hunyuan_v1_dense",
                         dict(**GQA, head_dim=HEAD,
                              rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}), 0),
    "hunyuan_v1_moe": ("HunYuanMoEV1Config", "HunYuanMoEV1ForCausalLM", "hunyuan_v1_moe",
                       dict(**GQA, head_dim=HEAD, num_experts=2, moe_topk=1), 0),
}
DECODERS = list(FAMILIES)


def build(family, seed=0, **overrides):
    config_class, model_class, _, kwargs, _ = FAMILIES[family]
    if family == "gptj":
        config = transformers.GPTJConfig(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=HEADS, rotary_dim=8,
                                         n_positions=MAX_POS, n_inner=96, initializer_range=0.25, bos_token_id=1,
                                         eos_token_id=2, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                         attn_pdrop=0.0, tie_word_embeddings=False, **overrides)
    else:
        config = getattr(transformers, config_class)(**{**COMMON, **kwargs, **overrides})
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, model_class)(config).eval()


def modeling(family):
    name = FAMILIES[family][2]
    return importlib.import_module(f"transformers.models.{name}.modeling_{name}")


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def projection(shape, seed=7):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def rope_tables(model):
    """How many (cos, sin) tables a forward makes: one per layer type."""
    types = getattr(model.config, "rope_parameters", None) or {"rope_theta": None}
    return len(types) if "rope_theta" not in types else 1


def rope_layers(model):
    """The layers that turn q and k: all, but Cohere 2's sliding ones only
    (or Cohere 2 MoE's with force_rope)."""
    if model.config.model_type not in ("cohere2", "cohere2_moe"):
        return model.config.num_hidden_layers
    return sum(layer.self_attn.sliding_window is not None or getattr(layer.self_attn, "force_rope", False)
               for layer in model.model.layers)


def rotary_calls(model):
    """posemb.rotary calls in one forward: the tables, then q and k of each
    layer with rope (together, or one at a time for GPT-J and Gemma 4)."""
    per_layer = 2 if model.config.model_type in ("gptj", "gemma4_text") else 1
    return rope_tables(model) + per_layer * rope_layers(model)


def eager_helper(family):
    return {"gptj": "rotate_every_two", "gpt_oss": "_apply_rotary_emb"}.get(family, "rotate_half")


def rotary_of(model):
    return next(m for n, m in model.named_modules() if n.endswith("rotary_emb"))


# ---------------------------------------------------------------- decoders

@pytest.mark.parametrize("family", DECODERS)
def test_decoder_logits_gradients_and_the_fused_kernel(family, monkeypatch):
    model = build(family)
    ids = torch.randint(3, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
    offset = FAMILIES[family][4]
    position_ids = torch.arange(SEQ).expand(2, SEQ) + offset
    ref = model(ids, position_ids=position_ids).logits
    # Positions matter to this model: stretched positions (other distances;
    # rotary is blind to a plain shift) give other logits.
    stretched = model(ids, position_ids=position_ids + torch.arange(SEQ)).logits
    assert (stretched - ref).abs().max() > 1e-2 * ref.abs().max()
    proj = projection(ref.shape)
    (ref * proj).sum().backward()
    ref_grads = grads_of(model)
    model.zero_grad()

    replaced = posemb.hf.patch(model)
    assert len(replaced) == 1 and next(iter(replaced)).endswith("rotary_emb")
    assert type(next(iter(replaced.values()))).__name__ in posemb.hf.TESTED_ROTARY
    assert posemb.hf._is_posemb(rotary_of(model))
    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    eager = Counter(monkeypatch, modeling(family), eager_helper(family))  # only the eager cos/sin math uses it
    out = model(ids, position_ids=position_ids).logits
    assert kernel.calls == rotary_calls(model) and eager.calls == 0
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    (out * proj).sum().backward()
    grads = grads_of(model)
    assert grads.keys() == ref_grads.keys() and len(grads) == len(list(model.parameters()))
    for name, g in grads.items():
        scale = ref_grads[name].abs().max().item()
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5 * max(1.0, scale), msg=name)

    # Twice: nothing more.
    with pytest.warns(UserWarning, match="nothing to replace"):
        assert posemb.hf.patch(model) == {}
    posemb.hf.unpatch(model, replaced)
    torch.testing.assert_close(model(ids, position_ids=position_ids).logits, ref, rtol=0, atol=0)


@pytest.mark.parametrize("family", DECODERS)
def test_rotary_module_returns_the_familys_cos_and_sin(family):
    model = build(family)
    replaced = posemb.hf.patch(model)
    hf, ours = next(iter(replaced.values())), rotary_of(model)
    layer_types = list(model.config.rope_parameters) if rope_tables(model) > 1 else [None]
    x = torch.randn(1)
    for length in (10, 300, 10):  # past longrope's and dynamic's original context, and back
        positions = torch.arange(length).unsqueeze(0)
        for layer_type in layer_types:
            args = (x, positions) if layer_type is None else (x, positions, layer_type)
            for got, want in zip(ours(*args), hf(*args)):
                assert type(got) is torch.Tensor and got.dtype == want.dtype and got.shape == want.shape
                # Hugging Face's fp32 angle is off by up to 2^-24 of itself.
                torch.testing.assert_close(got, want, rtol=0, atol=2e-6 + length * 2.0**-24 * 4)


@pytest.mark.parametrize("family", DECODERS)
def test_greedy_generation_with_a_kv_cache_is_unchanged(family, monkeypatch):
    model = build(family)
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(4))
    padded = ids.clone()
    padded[1, :3] = 0  # left padding
    mask = (padded != 0).long()
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    ref = model.generate(ids, **kw)
    ref_padded = model.generate(padded, attention_mask=mask, **kw)
    posemb.hf.patch(model)
    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    assert torch.equal(model.generate(ids, **kw), ref)
    assert torch.equal(model.generate(padded, attention_mask=mask, **kw), ref_padded)
    assert kernel.calls == 2 * 8 * rotary_calls(model)


def patched_in_bfloat16(family, cos_dtype):
    """The family patched, then cast to bf16: its rotary module gives cos and
    sin in cos_dtype, and the wrapped apply gives bf16 q and k close to the
    family's own code. Returns the model and the wrapped apply."""
    model = build(family)
    posemb.hf.patch(model)
    model.to(torch.bfloat16)
    cos, sin = rotary_of(model)(torch.randn(1, dtype=torch.bfloat16), torch.arange(5)[None])
    assert cos.dtype == sin.dtype == cos_dtype
    q, k = torch.randn(1, 4, 5, 16, dtype=torch.bfloat16), torch.randn(1, 2, 5, 16, dtype=torch.bfloat16)
    apply = modeling(family).apply_rotary_pos_emb
    for a, b in zip(apply(q, k, cos, sin), apply.posemb_original(q, k, cos, sin)):
        assert a.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(a, b, rtol=0.01, atol=0.02)
    return model, apply


def test_olmo_cast_to_bfloat16_keeps_olmos_dtypes(monkeypatch):
    """Olmo's module returns fp32 cos/sin and its apply casts back to q's dtype."""
    reference = build("olmo").to(torch.bfloat16)
    model, _ = patched_in_bfloat16("olmo", torch.float32)
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(ids).logits.float(), reference(ids).logits.float(), rtol=0.05, atol=0.1)


def test_gemma3_meta_build_then_to_empty_gives_the_unpatched_logits():
    reference = build("gemma3")
    with torch.device("meta"):
        lazy = transformers.Gemma3ForCausalLM(reference.config)
    posemb.hf.patch(lazy)
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(reference.state_dict())
    # Gemma's own non-persistent embed_scale is left uninitialised by
    # to_empty (from_pretrained initialises it); posemb's rotary buffers are
    # rebuilt by the move itself.
    with torch.no_grad():
        lazy.model.embed_tokens.embed_scale.copy_(reference.model.embed_tokens.embed_scale)
    rotary = rotary_of(lazy)
    for layer_type in ("sliding_attention", "full_attention"):
        want = getattr(rotary_of(reference), f"{layer_type}_inv_freq")
        assert torch.equal(getattr(rotary, f"{layer_type}_inv_freq"), want)
        assert torch.equal(getattr(rotary, f"{layer_type}_original_inv_freq"), want)
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(lazy.eval()(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_cohere_computes_in_fp32_and_returns_qs_dtype():
    """Cohere's apply multiplies q.float() and k.float() and casts both back to q's dtype."""
    _, apply = patched_in_bfloat16("cohere", torch.bfloat16)
    assert apply.posemb_kind == "fp32"


def test_cos_and_sin_laid_out_otherwise_than_apply_takes_are_left_alone(monkeypatch):
    """Cohere's module repeats each frequency in place; with Llama's
    rotate_half its apply would turn other pairs: not posemb's rotary."""
    from transformers.models.llama import modeling_llama

    monkeypatch.setattr(modeling("cohere"), "rotate_half", modeling_llama.rotate_half)
    with pytest.warns(UserWarning) as record:
        assert posemb.hf.patch(build("cohere")) == {}
    assert any("takes cos and sin laid out otherwise" in str(w.message) for w in record)


def test_hunyuans_ntk_alpha_is_left_alone():
    model = build("hunyuan_v1_dense", rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 1.0,
                                                       "alpha": 1000.0})
    assert rotary_of(model).rope_type == "ntk_alpha"
    with pytest.warns(UserWarning) as record:
        assert posemb.hf.patch(model) == {}
    assert any("its rope type 'ntk_alpha'" in str(w.message) for w in record)


def test_unpatch_restores_the_families_functions():
    from transformers.models.olmo import modeling_olmo
    from transformers.models.phi3 import modeling_phi3

    # (Wrapped still, where models patched by earlier tests were not unpatched.)
    originals = tuple(getattr(f, "posemb_original", f)
                      for f in (modeling_olmo.apply_rotary_pos_emb, modeling_phi3.apply_rotary_pos_emb))
    olmo, phi3 = build("olmo"), build("phi3")
    olmo_replaced, phi3_replaced = posemb.hf.patch(olmo), posemb.hf.patch(phi3)
    assert modeling_olmo.apply_rotary_pos_emb.posemb_kind == "cast"
    assert modeling_phi3.apply_rotary_pos_emb.posemb_kind == "partial"
    posemb.hf.unpatch(olmo, olmo_replaced)
    posemb.hf.unpatch(phi3, phi3_replaced)
    assert (modeling_olmo.apply_rotary_pos_emb, modeling_phi3.apply_rotary_pos_emb) == originals


# ------------------------------------------------ what patch() leaves alone

def test_a_family_whose_apply_differs_is_left_alone_with_a_warning(monkeypatch):
    from transformers.models.qwen3 import modeling_qwen3

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        return q, k

    monkeypatch.setattr(modeling_qwen3, "apply_rotary_pos_emb", apply_rotary_pos_emb)
    model = build("qwen3")
    with pytest.warns(UserWarning) as record:
        assert posemb.hf.patch(model) == {}
    messages = [str(w.message) for w in record]
    assert any("model.rotary_emb (Qwen3RotaryEmbedding: its module's apply_rotary_pos_emb" in m for m in messages)
    assert any("nothing to replace in Qwen3ForCausalLM" in m for m in messages)
    assert modeling_qwen3.apply_rotary_pos_emb is apply_rotary_pos_emb
    with pytest.warns(UserWarning, match="left unpatched"), pytest.raises(posemb.hf.PatchError):
        posemb.hf.patch(model, strict=True)


def test_frequencies_that_are_not_posembs_are_left_alone(monkeypatch):
    from transformers.models.qwen3 import modeling_qwen3

    model = build("qwen3", rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    cls = modeling_qwen3.Qwen3RotaryEmbedding
    own = cls.compute_default_rope_parameters

    def shifted(config, *args, **kwargs):
        inv_freq, scaling = own(config, *args, **kwargs)
        return inv_freq * 1.001, scaling

    monkeypatch.setattr(cls, "compute_default_rope_parameters", staticmethod(shifted))
    with pytest.warns(UserWarning) as record:
        assert posemb.hf.patch(model) == {}
    assert any("frequencies for this config are not posemb's" in str(w.message) for w in record)


def test_gpt2_is_not_patched_and_says_so():
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    model = transformers.GPT2Model(config)
    with pytest.warns(UserWarning, match="nothing to replace in GPT2Model"):
        assert posemb.hf.patch(model) == {}


# ---------------------------------------------------------------- encoders

def encoder(name, seed=0, **kw):
    torch.manual_seed(seed)
    if name == "electra":
        config = transformers.ElectraConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                            initializer_range=0.2)
        return transformers.ElectraModel(config)
    if name == "albert":
        config = transformers.AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                           classifier_dropout_prob=0.0, initializer_range=0.2, pad_token_id=0)
        return transformers.AlbertModel(config, add_pooling_layer=False)
    config = transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                           max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                                           initializer_range=0.2, pad_token_id=0,
                                           sinusoidal_pos_embds=name == "distilbert-sinusoidal")
    return transformers.DistilBertModel(config)


ENCODERS = {"electra": "ElectraEmbeddings", "albert": "AlbertEmbeddings", "distilbert": "Embeddings",
            "distilbert-sinusoidal": "Embeddings"}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_hidden_states_and_gradients_agree(name):
    model = encoder(name).train()  # dropout 0: train mode computes the same as eval
    ids = torch.randint(3, VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    ids[0, 8:] = 0
    batch = dict(input_ids=ids, attention_mask=(ids != 0).long())
    ref = model(**batch).last_hidden_state
    # Positions matter: shifted positions give other hidden states.
    shifted = model(**batch, position_ids=torch.arange(12).expand(3, 12) + 3).last_hidden_state
    assert (shifted - ref).abs().max() > 1e-2
    proj = projection(ref.shape)
    (ref * proj).sum().backward()
    ref_grads = grads_of(model)
    model.zero_grad()
    replaced = posemb.hf.patch(model)
    assert list(replaced) == ["embeddings"] and type(replaced["embeddings"]).__name__ == ENCODERS[name]
    assert model.embeddings.position_embeddings.weight is replaced["embeddings"].position_embeddings.weight
    out = model(**batch).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(**batch, position_ids=torch.arange(12).expand(3, 12) + 3).last_hidden_state,
                               shifted, rtol=1e-5, atol=1e-5)
    (out * proj).sum().backward()
    grads = grads_of(model)
    assert grads.keys() == ref_grads.keys()
    for key, g in grads.items():
        torch.testing.assert_close(g, ref_grads[key], rtol=1e-4, atol=1e-5, msg=key)
    with pytest.warns(UserWarning, match="nothing to replace"):
        assert posemb.hf.patch(model) == {}
    # Checkpoints stay interchangeable.
    assert model.state_dict().keys() == encoder(name).state_dict().keys()
    posemb.hf.unpatch(model, replaced)
    assert model.embeddings is replaced["embeddings"]


# ------------------------------------------------------------- sinusoidal

def seq2seq(name, seed=0):
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64,
                  dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
                  decoder_layerdrop=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                  init_std=0.2, scale_embedding=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "m2m_100":
            return transformers.M2M100ForConditionalGeneration(transformers.M2M100Config(**common)).eval()
        if name == "speech_to_text":
            config = transformers.Speech2TextConfig(**common, input_feat_per_channel=8, input_channels=1,
                                                    num_conv_layers=1, conv_channels=16, conv_kernel_sizes=[5],
                                                    max_source_positions=64, max_target_positions=64)
            return transformers.Speech2TextForConditionalGeneration(config).eval()
        config = transformers.XGLMConfig(vocab_size=VOCAB, d_model=32, num_layers=2, attention_heads=4, ffn_dim=48,
                                         max_position_embeddings=64, dropout=0.0, attention_dropout=0.0,
                                         activation_dropout=0.0, layerdrop=0.0, pad_token_id=1, bos_token_id=0,
                                         eos_token_id=2, init_std=0.2, scale_embedding=True)
        return transformers.XGLMForCausalLM(config).eval()


SINUSOIDAL = {"m2m_100": "M2M100SinusoidalPositionalEmbedding", "xglm": "XGLMSinusoidalPositionalEmbedding",
              "speech_to_text": "Speech2TextSinusoidalPositionalEmbedding"}


def seq2seq_batch(name):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, 10), generator=g)
    ids[1, 7:] = 1  # padding (right; pads keep the zero encoding)
    if name == "xglm":
        return dict(input_ids=ids, attention_mask=(ids != 1).long())
    decoder = torch.randint(3, VOCAB, (2, 6), generator=g)
    if name == "m2m_100":
        return dict(input_ids=ids, attention_mask=(ids != 1).long(), decoder_input_ids=decoder)
    features = torch.randn(2, 16, 8, generator=g)
    return dict(input_features=features, attention_mask=torch.ones(2, 16, dtype=torch.long),
                decoder_input_ids=decoder)


def shift_tables(model, rows=3):
    """The same model with every position table rolled: other positions."""
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__.endswith("SinusoidalPositionalEmbedding"):
                module.weights = module.weights.roll(rows, 0)
    return model


@pytest.mark.parametrize("name", list(SINUSOIDAL))
def test_sinusoidal_families_outputs_gradients_and_generation(name):
    model = seq2seq(name)
    batch = seq2seq_batch(name)
    ref = model(**batch).logits
    assert (shift_tables(seq2seq(name))(**batch).logits - ref).abs().max() > 1e-2  # positions matter
    proj = projection(ref.shape)
    (ref * proj).sum().backward()
    ref_grads = grads_of(model)
    model.zero_grad()
    prompt = batch.get("input_features", batch.get("input_ids"))
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=1, eos_token_id=None)
    extra = {} if name == "xglm" else {"attention_mask": batch["attention_mask"]}
    ref_tokens = model.generate(prompt, **extra, **kw)

    replaced = posemb.hf.patch(model)
    assert replaced and all(type(m).__name__ == SINUSOIDAL[name] for m in replaced.values())
    assert all(isinstance(model.get_submodule(n), posemb.hf.HFSinusoidalPositionalEmbedding) for n in replaced)
    # The module's own encodings, at positions past its table and after a cache.
    for n, original in replaced.items():
        ours = model.get_submodule(n)
        ids = torch.randint(3, VOCAB, (2, 70), generator=torch.Generator().manual_seed(5))
        ids[0, :4] = 1
        for length, cache_length in ((20, 0), (20, 5), (70, 0)):  # 70: past the table Hugging Face starts with
            if ours.flavor == "xglm":
                pos = torch.arange(cache_length, cache_length + length).expand(2, length)
                got, want = ours(pos, cache_length), original(pos, cache_length)
            else:
                got = ours(ids[:, :length], cache_length=cache_length)
                want = original(ids[:, :length], cache_length=cache_length)
            assert got.dtype == want.dtype and got.shape == want.shape and not got.requires_grad
            torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    out = model(**batch).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    (out * proj).sum().backward()
    grads = grads_of(model)
    assert grads.keys() == ref_grads.keys()
    for key, g in grads.items():
        scale = ref_grads[key].abs().max().item()
        torch.testing.assert_close(g, ref_grads[key], rtol=1e-4, atol=1e-5 * max(1.0, scale), msg=key)
    assert torch.equal(model.generate(prompt, **extra, **kw), ref_tokens)
    assert model.state_dict().keys() == seq2seq(name).state_dict().keys()
    with pytest.warns(UserWarning, match="nothing to replace"):
        assert posemb.hf.patch(model) == {}
    posemb.hf.unpatch(model, replaced)
    torch.testing.assert_close(model(**batch).logits, ref, rtol=0, atol=0)


def test_sinusoidal_positions_follow_a_cast():
    model = seq2seq("m2m_100")
    posemb.hf.patch(model)
    model.to(torch.bfloat16)
    ids = torch.randint(3, VOCAB, (2, 5))
    ids[1, 3:] = 1
    pe = model.model.encoder.embed_positions(ids)
    assert pe.dtype == torch.bfloat16
    reference = seq2seq("m2m_100").to(torch.bfloat16).model.encoder.embed_positions(ids)
    torch.testing.assert_close(pe.float(), reference.float(), rtol=0, atol=1e-2)


def test_marian_is_left_alone_with_a_warning():
    config = transformers.MarianConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=48,
                                       decoder_ffn_dim=48, max_position_embeddings=64, pad_token_id=1,
                                       decoder_start_token_id=1)
    model = transformers.MarianMTModel(config)
    with pytest.warns(UserWarning) as record:
        assert posemb.hf.patch(model) == {}
    assert any("MarianSinusoidalPositionalEmbedding" in str(w.message) for w in record)


@pytest.mark.parametrize("family", ["olmo", "gemma3", "gemma4", "gpt_neox", "gptj", "gpt_oss", "cohere", "glm"])
def test_fullgraph_compile_keeps_the_fused_kernel(family):
    model = build(family)
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    ref = model(ids).logits
    posemb.hf.patch(model)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.backends.registry.lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    try:
        out = torch.compile(model, fullgraph=True, backend=backend)(ids).logits
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    targets = (torch.ops.posemb.rotary, torch.ops.posemb.rotary.default)
    rotary = [n for n in graphs[0].graph.nodes if n.target in targets]
    assert len(rotary) == rotary_calls(model)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["gemma3", "gemma4", "gptj"])
def test_from_pretrained_of_a_model_that_patches_itself(family, tmp_path):
    """from_pretrained builds on meta, materialises the non-persistent buffers
    uninitialised and runs _init_weights, which rebuilds only its own
    classes' buffers: patch() makes the model's _init_weights rebuild
    posemb's too (on the instance: the model still pickles and copies)."""
    import copy
    import io

    base = getattr(transformers, FAMILIES[family][1])

    class Patched(base):
        def __init__(self, config):
            super().__init__(config)
            posemb.hf.patch(self)

    reference = build(family)
    reference.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Patched.from_pretrained(tmp_path).eval()
    assert posemb.hf._is_posemb(rotary_of(model))
    ids = torch.randint(3, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    want = reference(ids).logits
    torch.testing.assert_close(model(ids).logits, want, rtol=1e-4, atol=1e-4)
    # A patched model (of the library's class) still copies and pickles whole.
    patched = build(family)
    posemb.hf.patch(patched)
    torch.testing.assert_close(copy.deepcopy(patched)(ids).logits, want, rtol=1e-4, atol=1e-4)
    buffer = io.BytesIO()
    torch.save(patched, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.__dict__["_init_weights"].owner is loaded
    torch.testing.assert_close(loaded(ids).logits, want, rtol=1e-4, atol=1e-4)


def test_unpatch_forgets_the_init_weights_hook():
    model = build("gemma3")
    replaced = posemb.hf.patch(model)
    assert "_init_weights" in model.__dict__ and "_init_weights" in model.model.__dict__
    posemb.hf.unpatch(model, replaced)
    assert "_init_weights" not in model.__dict__ and "_init_weights" not in model.model.__dict__


# Families patch() takes by form alone (not in TESTED_ROTARY): a smoke check
# that they compute what the unpatched model does.
FORM_ONLY = {
    "Mixtral": dict(num_local_experts=2, num_experts_per_tok=1),
    "Starcoder2": {},
    "Phi": dict(partial_rotary_factor=0.5),
    "StableLm": dict(partial_rotary_factor=0.25),
    "Qwen3Moe": dict(num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32, head_dim=16),
    "SmolLM3": {},
    "Persimmon": dict(partial_rotary_factor=0.5),
    "DeepseekV3": dict(n_routed_experts=2, num_experts_per_tok=1, n_group=1, topk_group=1, moe_intermediate_size=32,
                       first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
                       qk_nope_head_dim=8, v_head_dim=16),
    "Glm4Moe": dict(n_routed_experts=2, num_experts_per_tok=1, n_group=1, topk_group=1, moe_intermediate_size=32,
                    first_k_dense_replace=1, head_dim=16, partial_rotary_factor=0.5),
}


@pytest.mark.parametrize("name", list(FORM_ONLY))
def test_families_taken_by_form_compute_the_same(name):
    kwargs = {**COMMON, **GQA, **FORM_ONLY[name], "max_position_embeddings": 256}
    config = getattr(transformers, f"{name}Config")(**kwargs)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(transformers, f"{name}ForCausalLM")(config).eval()
    ids = torch.randint(3, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    position_ids = torch.arange(16).expand(2, 16)
    ref = model(ids, position_ids=position_ids).logits
    assert (model(ids, position_ids=position_ids + torch.arange(16)).logits - ref).abs().max() > 1e-2
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    ref_tokens = model.generate(ids[:, :5], **kw)
    replaced = posemb.hf.patch(model)
    assert list(replaced) == ["model.rotary_emb"]
    torch.testing.assert_close(model(ids, position_ids=position_ids).logits, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(model.generate(ids[:, :5], **kw), ref_tokens)
