"""posemb.diffusers.patch on tiny random diffusers models: outputs and
gradients equal to the unpatched model's, and posemb.hf's contract
(reports what it replaced, warns when nothing matched, transactional,
unpatch restores)."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import posemb
import posemb.diffusers as pd

diffusers = pytest.importorskip("diffusers")

# diffusers' own fp32 timestep embedding is off by up to 6e-5 at t = 999
# (test_timestep.py); posemb's by 1e-7. A tiny model passes that difference on
# at about its size.
ATOL = 2e-4


def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                  block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    inputs = lambda: dict(sample=torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
                          timestep=torch.tensor([999, 3]))
    return model, inputs, {"time_proj"}


def dit(size=8):
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                            out_channels=4, num_layers=1, sample_size=8, patch_size=2,
                                            num_embeds_ada_norm=10, norm_num_groups=4)
    inputs = lambda: dict(hidden_states=torch.randn(2, 4, size, size, generator=torch.Generator().manual_seed(1)),
                          timestep=torch.tensor([999, 12]), class_labels=torch.tensor([1, 7]))
    return model, inputs, {"pos_embed", "transformer_blocks.0.norm1.emb.time_proj"}


def sd3(height=8, width=8):
    torch.manual_seed(0)
    model = diffusers.SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1,
                                            attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                            caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
                                            pos_embed_max_size=12)

    def inputs():
        g = torch.Generator().manual_seed(1)
        return dict(hidden_states=torch.randn(2, 4, height, width, generator=g),
                    encoder_hidden_states=torch.randn(2, 5, 16, generator=g),
                    pooled_projections=torch.randn(2, 8, generator=g), timestep=torch.tensor([999.0, 0.5]))
    return model, inputs, {"pos_embed", "time_text_embed.time_proj"}


def cogvideox(frames=3, height=8, width=8):
    """CogVideoX 2b/5b's layout, tiny: a 3-D sin-cos pos_embedding for 9 video
    frames (3 latent frames) of 8x8 latents in patches of 2, 5 text tokens;
    other sizes take diffusers' rebuilt grid."""
    torch.manual_seed(0)
    model = diffusers.CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                                  out_channels=4, time_embed_dim=8, text_embed_dim=16, num_layers=1,
                                                  sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
                                                  temporal_compression_ratio=4, max_text_seq_length=5)

    def inputs():
        g = torch.Generator().manual_seed(1)
        return dict(hidden_states=torch.randn(2, frames, 4, height, width, generator=g),
                    encoder_hidden_states=torch.randn(2, 5, 16, generator=g), timestep=torch.tensor([999, 3]))
    return model, inputs, {"patch_embed", "time_proj"}


MODELS = {"unet": unet, "dit": dit, "dit-16x16": lambda: dit(16), "sd3": sd3, "sd3-crop-6x10": lambda: sd3(6, 10),
          "cogvideox": cogvideox, "cogvideox-5x6x10": lambda: cogvideox(5, 6, 10)}


def run(model, inputs):
    torch.manual_seed(3)  # DiT's class-label dropout draws in training mode
    kwargs = inputs()
    x = kwargs[next(iter(kwargs))].requires_grad_()
    out = model(**kwargs, return_dict=False)[0]
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)))
    return out.detach(), x.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", MODELS)
def test_outputs_and_gradients_equal_the_unpatched_model(name):
    model, inputs, expected_names = MODELS[name]()
    patched = copy.deepcopy(model)
    replaced = pd.patch(patched)
    assert set(replaced) == expected_names
    assert all(type(patched.get_submodule(n)).__module__.startswith("posemb") for n in replaced)
    assert patched.state_dict().keys() == model.state_dict().keys()
    want, got = run(model, inputs), run(patched, inputs)
    diff = (got[0] - want[0]).abs().max().item()
    print(f"{name}: output max diff {diff:.1e}")
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=ATOL)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=ATOL)
    assert got[2].keys() == want[2].keys()
    for n in want[2]:
        torch.testing.assert_close(got[2][n], want[2][n], rtol=1e-3, atol=ATOL, msg=n)


def test_patch_embed_adds_the_exact_grid():
    """Where the timestep is not involved, the patched PatchEmbed is diffusers'
    to fp32 rounding (diffusers builds its grid in fp64)."""
    model, inputs, _ = sd3(6, 10)
    original = model.pos_embed
    new = pd.PatchEmbed(original)
    x = inputs()["hidden_states"]
    torch.testing.assert_close(new(x), original(x), rtol=0, atol=1e-6)


def test_unpatch_restores_and_patching_twice_replaces_nothing():
    model, _, _ = dit()
    before = dict(model.named_modules())
    replaced = pd.patch(model)
    with pytest.warns(UserWarning, match="posemb.diffusers.patch: nothing to replace"):
        assert pd.patch(model) == {}
    pd.unpatch(model, replaced)
    assert all(before[n] is m for n, m in model.named_modules())


def test_nothing_matched_warns_or_raises():
    with pytest.warns(UserWarning, match="nothing to replace in Linear"):
        assert pd.patch(torch.nn.Linear(2, 2)) == {}
    with pytest.raises(pd.PatchError, match="nothing to replace"):
        pd.patch(torch.nn.Linear(2, 2), strict=True)


def test_a_known_block_passed_as_the_model_is_left_alone():
    model, _, _ = dit()
    for block in (model.pos_embed, model.get_submodule("transformer_blocks.0.norm1.emb.time_proj")):
        with pytest.warns(UserWarning, match="a module cannot replace itself"):
            assert pd.patch(block) == {}
        assert "" not in dict(block.named_children())


def test_a_pos_embed_that_is_not_the_grid_is_left_alone():
    model, _, _ = dit()
    with torch.no_grad():
        model.pos_embed.pos_embed.add_(0.1)  # e.g. a fine-tuned table
    with pytest.warns(UserWarning, match="pos_embed \\(PatchEmbed: its pos_embed is not the sin-cos grid"):
        replaced = pd.patch(model)
    assert set(replaced) == {"transformer_blocks.0.norm1.emb.time_proj"}
    assert type(model.pos_embed).__module__.startswith("diffusers")


def test_patched_model_compiles_without_graph_breaks():
    model, inputs, _ = unet()
    pd.patch(model)
    kwargs = inputs()
    compiled = torch.compile(lambda s, t: model(s, t, return_dict=False)[0], fullgraph=True)
    torch.testing.assert_close(compiled(kwargs["sample"], kwargs["timestep"]),
                               model(**kwargs, return_dict=False)[0], rtol=1e-5, atol=1e-5)


def test_under_autocast_the_patched_block_keeps_diffusers_dtype():
    """bf16 conv output + the fp32 grid: diffusers adds in fp32 and rounds to
    bf16 once; posemb adds in fp32 inside the kernel and rounds once."""
    model, inputs, _ = sd3()
    original = model.pos_embed
    x = inputs()["hidden_states"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = original(x), pd.PatchEmbed(original)(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(3, 8, 8), (2, 4, 6)])
def test_cogvideox_patch_embed_adds_diffusers_grid(size):
    """Where the timestep is not involved, the patched CogVideoXPatchEmbed is
    diffusers' (cached buffer at the sample size, rebuilt grid otherwise) to
    the fp32 grid's rounding (diffusers builds its grid in fp64)."""
    model, inputs, _ = cogvideox(*size)
    original = model.patch_embed
    new = pd.CogVideoXPatchEmbed(original)
    kw = inputs()
    text, video = kw["encoder_hidden_states"], kw["hidden_states"]
    want, got = original(text, video), new(text, video)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got[:, :5], original.text_proj(text), rtol=0, atol=0)  # no grid on the text
    with pytest.raises(ValueError, match="text_embeds has 4 tokens"):
        new(text[:, :4], video)


def test_cogvideox_learned_or_rotary_positions_are_left_alone():
    torch.manual_seed(0)
    common = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
                  text_embed_dim=16, num_layers=1, sample_width=8, sample_height=8, sample_frames=9,
                  max_text_seq_length=5, use_rotary_positional_embeddings=True)
    for learned, reason in ((False, "it has no sin-cos positional embedding"),
                            (True, "its positional embedding is learned")):
        model = diffusers.CogVideoXTransformer3DModel(**common, use_learned_positional_embeddings=learned)
        with pytest.warns(UserWarning, match=f"patch_embed \\(CogVideoXPatchEmbed: {reason}"):
            replaced = pd.patch(model)
        assert set(replaced) == {"time_proj"}
        assert type(model.patch_embed).__module__.startswith("diffusers")


def test_cogvideox_pos_embedding_that_is_not_the_grid_is_left_alone():
    model, _, _ = cogvideox()
    with torch.no_grad():
        model.patch_embed.pos_embedding.add_(0.1)
    with pytest.warns(UserWarning, match="its pos_embedding is not the 3-D sin-cos grid"):
        assert set(pd.patch(model)) == {"time_proj"}
