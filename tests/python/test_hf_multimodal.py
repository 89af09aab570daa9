"""posemb.hf.patch on multimodal-rope models (issue 14): Qwen2-VL and
Qwen2.5-VL (contiguous (t, h, w) frequency sections) and Qwen3-VL
(interleaved sections). Tiny seeded random models with a vision tower run a
prompt holding an image, so the three position axes differ; outputs, every
gradient and greedy generation with the KV cache are compared with the
unpatched model, and the fused kernel is checked to run with those axes."""
from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch

import posemb
import posemb.hf

from conftest import Counter, assert_same_gradients

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

IMAGE, VIDEO, START, END = 100, 101, 102, 103
KINDS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


def build(kind, seed=0):
    torch.manual_seed(seed)
    text = dict(vocab_size=120, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.25, bos_token_id=1,
                eos_token_id=2, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [4, 2, 2] if kind == "qwen3_vl" else [2, 3, 3]})
    tokens = dict(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)
    if kind == "qwen3_vl":
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                      deepstack_visual_indexes=[0])
        model = transformers.Qwen3VLForConditionalGeneration(
            transformers.Qwen3VLConfig(text_config=dict(text, head_dim=16), vision_config=vision, **tokens))
    else:
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
                      temporal_patch_size=2, in_chans=3, in_channels=3, out_hidden_size=64, intermediate_size=64,
                      fullatt_block_indexes=[0], window_size=8)
        config_class, model_class = ((transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration)
                                     if kind == "qwen2_vl" else
                                     (transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration))
        model = model_class(config_class(text_config=text, vision_config=vision, **tokens))
    return model.eval()


def prompt():
    """Text around one 16x16 image: a (1, 4, 4) patch grid, 2x2 tokens after merging."""
    g = torch.Generator().manual_seed(3)
    ids = torch.tensor([[5, 6, START] + [IMAGE] * 4 + [END, 7, 8, 9]])
    return dict(input_ids=ids, pixel_values=torch.randn(16, 3 * 2 * 4 * 4, generator=g),
                image_grid_thw=torch.tensor([[1, 4, 4]]), mm_token_type_ids=(ids == IMAGE).long())


def patch_quietly(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        replaced = posemb.hf.patch(model)
    return replaced, [str(w.message) for w in caught]


@pytest.mark.parametrize("kind", KINDS)
def test_logits_gradients_and_the_fused_kernel(kind, monkeypatch):
    model = build(kind)
    ours = copy.deepcopy(model)
    replaced, said = patch_quietly(ours)
    assert list(replaced) == ["model.language_model.rotary_emb"]
    assert type(replaced["model.language_model.rotary_emb"]).__name__ in posemb.hf.TESTED_ROTARY
    # The vision tower's rotary table is left alone, and patch() says so.
    assert any("model.visual.rotary_pos_emb" in s and "vision" in s for s in said)

    seen = []
    original = posemb.ops.rotary

    def spy(*args, **kwargs):
        seen.append((args[3], kwargs.get("mrope_section"), kwargs.get("mrope_interleaved")))
        return original(*args, **kwargs)

    monkeypatch.setattr(posemb.ops, "rotary", spy)
    inputs = prompt()
    ref = model(**inputs).logits
    out = ours(**inputs).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    # One table per forward and one fused call per layer, all with (t, h, w)
    # positions whose axes differ (the image's rows and columns).
    assert len(seen) == 1 + model.config.text_config.num_hidden_layers
    for positions, section, interleaved in seen:
        assert positions.shape[0] == 3 and not torch.equal(positions[1], positions[2])
        assert section == model.config.text_config.rope_parameters["mrope_section"]
        assert interleaved == (kind == "qwen3_vl")

    assert_same_gradients(model, ref, ours, out)


@pytest.mark.parametrize("kind", KINDS)
def test_the_axes_matter_to_these_models(kind):
    """Moving the image's positions along one axis changes the logits: the
    models see their own (t, h, w) positions, not one shared position."""
    model = build(kind)
    patch_quietly(model)
    rotary = model.model.language_model.rotary_emb
    assert posemb.hf._is_posemb(rotary)
    x = torch.randn(1)
    positions = torch.arange(10).expand(3, 1, 10).clone()
    cos, _ = rotary(x, positions)
    positions[1, :, 3:7] += 5
    moved, _ = rotary(x, positions)
    assert (moved - cos).abs().max() > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_cos_and_sin_are_the_familys(kind):
    model = build(kind)
    hf = copy.deepcopy(model.model.language_model.rotary_emb)
    patch_quietly(model)
    ours = model.model.language_model.rotary_emb
    x = torch.randn(1)
    g = torch.Generator().manual_seed(5)
    for positions in (torch.randint(0, 300, (3, 2, 9), generator=g), torch.arange(9).expand(2, 9)):
        for got, want in zip(ours(x, positions), hf(x, positions)):
            assert type(got) is torch.Tensor and got.dtype == want.dtype and got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=2e-6 + 300 * 2.0**-24 * 4)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_with_an_image_and_a_kv_cache(kind, monkeypatch):
    model = build(kind)
    ours = copy.deepcopy(model)
    patch_quietly(ours)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    ref = model.generate(**prompt(), **kw)
    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    assert torch.equal(ours.generate(**prompt(), **kw), ref)
    assert kernel.calls == 6 * (1 + model.config.text_config.num_hidden_layers)


def test_unpatch_restores_the_model():
    model = build("qwen3_vl")
    ref = model(**prompt()).logits
    replaced, _ = patch_quietly(model)
    posemb.hf.unpatch(model, replaced)
    assert not posemb.hf._is_posemb(model.model.language_model.rotary_emb)
    torch.testing.assert_close(model(**prompt()).logits, ref, rtol=0, atol=0)


def test_sections_that_are_not_three_are_left_alone():
    model = build("qwen2_vl")
    model.model.language_model.rotary_emb.mrope_section = [4, 4]
    replaced, said = patch_quietly(model)
    assert replaced == {}
    assert any("mrope_section [4, 4] is not three (t, h, w) sections" in s for s in said)


# ------------------------------------------------------------ Pixtral (2-D axial)

def pixtral(seed=0):
    torch.manual_seed(seed)
    config = transformers.PixtralVisionConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                              num_attention_heads=4, image_size=64, patch_size=8,
                                              initializer_range=0.25)
    return transformers.PixtralVisionModel(config).eval()


def pixtral_inputs():
    """Two images of different sizes: 8 x 6 and 4 x 8 patches, packed into one sequence."""
    return dict(pixel_values=torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2)),
                image_sizes=torch.tensor([[64, 48], [32, 64]]))


def test_pixtral_hidden_states_gradients_and_the_fused_kernel(monkeypatch):
    model = pixtral()
    ours = copy.deepcopy(model)
    replaced, said = patch_quietly(ours)
    assert list(replaced) == ["patch_positional_embedding"] and said == []
    assert type(replaced["patch_positional_embedding"]).__name__ in posemb.hf.TESTED_ROTARY
    ref = model(**pixtral_inputs()).last_hidden_state
    kernel = Counter(monkeypatch, posemb.ops, "rotary")
    out = ours(**pixtral_inputs()).last_hidden_state
    assert kernel.calls == 1 + model.config.num_hidden_layers
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    assert_same_gradients(model, ref, ours, out)


def test_pixtral_cos_and_sin_are_pixtrals_and_both_axes_matter():
    model = pixtral()
    hf = copy.deepcopy(model.patch_positional_embedding)
    patch_quietly(model)
    ours = model.patch_positional_embedding
    x = torch.randn(1)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(6), indexing="ij")
    positions = torch.stack([rows.flatten(), cols.flatten()], dim=-1)
    for got, want in zip(ours(x, positions), hf(x, positions)):
        assert type(got) is torch.Tensor and got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    cos = ours(x, positions)[0]
    assert (ours(x, positions.flip(-1))[0] - cos).abs().max() > 1e-2  # rows and columns are not interchangeable
    # After a cast the frequencies are still Pixtral's, in fp32.
    model.to(torch.bfloat16)
    assert ours.inv_freq.dtype == torch.float32 and torch.equal(ours.inv_freq, hf.inv_freq)


@pytest.mark.compile
@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen3_vl"])
def test_text_model_compiles_in_one_graph_with_its_three_axes(kind):
    model = build(kind)
    ref_lm = copy.deepcopy(model.model.language_model)
    patch_quietly(model)
    lm = model.model.language_model
    g = torch.Generator().manual_seed(6)
    embeds, positions = torch.randn(2, 12, 64, generator=g), torch.randint(0, 50, (3, 2, 12), generator=g)
    torch._dynamo.reset()
    compiled = torch.compile(lambda e, p: lm(inputs_embeds=e, position_ids=p).last_hidden_state, fullgraph=True)
    ref = ref_lm(inputs_embeds=embeds, position_ids=positions).last_hidden_state
    torch.testing.assert_close(compiled(embeds, positions), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
