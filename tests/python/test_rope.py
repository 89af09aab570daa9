"""Rotary frequency plans give bitwise the numbers transformers computes,
for every Hugging Face rope type."""
from __future__ import annotations

import os

import pytest
import torch

from posemb.rope import ROPE_TYPES, frequency_plan, frequency_plan_from_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

HEAD = 64
LONG = [1.0 + 0.05 * i for i in range(HEAD // 2)]
SHORT = [1.0 + 0.01 * i for i in range(HEAD // 2)]

CASES = {
    "default": ({"rope_type": "default", "rope_theta": 500000.0}, None),
    "linear": ({"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}, None),
    "linear-partial": ({"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0, "partial_rotary_factor": 0.5}, None),
    "dynamic-short": ({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, 100),
    "dynamic-long": ({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, 3000),
    "yarn": ({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 512}, None),
    "yarn-mscale": ({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "mscale": 1.0, "mscale_all_dim": 0.707,
                     "beta_fast": 32, "beta_slow": 1, "original_max_position_embeddings": 4096}, None),
    "yarn-no-truncate": ({"rope_type": "yarn", "rope_theta": 1e6, "factor": 8.0, "truncate": False,
                          "original_max_position_embeddings": 1024}, None),
    "llama3": ({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}, None),
    "longrope-short": ({"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": LONG, "short_factor": SHORT,
                        "original_max_position_embeddings": 1024}, 512),
    "longrope-long": ({"rope_type": "longrope", "rope_theta": 10000.0, "long_factor": LONG, "short_factor": SHORT,
                       "original_max_position_embeddings": 1024}, 4096),
    # Gemma 4's: a quarter of the frequencies turned (exponents over the whole head), the rest zero.
    "proportional": ({"rope_type": "proportional", "rope_theta": 1e6, "partial_rotary_factor": 0.25}, None),
    "proportional-factor": ({"rope_type": "proportional", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                             "factor": 8.0}, None),
    "proportional-whole": ({"rope_type": "proportional", "rope_theta": 10000.0}, None),
}


def hf_config(params):
    return transformers.LlamaConfig(hidden_size=HEAD * 4, num_attention_heads=4, max_position_embeddings=2048,
                                    rope_parameters=dict(params))


def hf_plan(config, seq_len):
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        rotary = LlamaRotaryEmbedding(config)
        return rotary.inv_freq, rotary.attention_scaling
    return ROPE_INIT_FUNCTIONS[rope_type](config, None, seq_len)


@pytest.mark.parametrize("name", CASES)
def test_plan_equals_transformers_bitwise(name):
    params, seq_len = CASES[name]
    config = hf_config(params)
    inv_freq, scaling = hf_plan(config, seq_len)
    plan = frequency_plan(params, HEAD, max_position_embeddings=2048, seq_len=seq_len)
    assert plan.inv_freq.dtype == torch.float32
    assert torch.equal(plan.inv_freq, inv_freq.float()), (plan.inv_freq - inv_freq).abs().max()
    assert plan.attention_scaling == scaling
    if params["rope_type"] == "proportional":  # the whole head; the frequencies past the fraction are 0
        assert plan.rotary_dim == HEAD
        turned = int(params.get("partial_rotary_factor", 1.0) * HEAD // 2)
        assert (plan.inv_freq[:turned] > 0).all() and (plan.inv_freq[turned:] == 0).all()
    else:
        assert plan.rotary_dim == int(HEAD * params.get("partial_rotary_factor", 1.0))
    from_config = frequency_plan_from_config(config, seq_len=seq_len)
    assert torch.equal(from_config.inv_freq, plan.inv_freq) and from_config.attention_scaling == plan.attention_scaling


def test_every_hugging_face_rope_type_is_covered():
    assert set(ROPE_TYPES) <= {p["rope_type"] for p, _ in CASES.values()}
    assert set(ROPE_TYPES) - {"default"} <= set(ROPE_INIT_FUNCTIONS)


def test_bad_plans_are_clear_errors():
    with pytest.raises(ValueError, match="rope_type must be one of"):
        frequency_plan({"rope_type": "ntk-by-parts", "rope_theta": 1e4}, 64)
    with pytest.raises(ValueError, match="rotary_dim must be even"):
        frequency_plan({"rope_theta": 1e4, "partial_rotary_factor": 0.5}, 6)
    with pytest.raises(ValueError, match="'dynamic' needs max_position_embeddings"):
        frequency_plan({"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}, 64)


def test_rotary_reference_matches_transformers_at_short_positions():
    """The fp64 reference the rotary kernel will be held to agrees with
    transformers' apply_rotary_pos_emb where fp32 angles are still exact."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from posemb import reference

    config = hf_config(CASES["yarn"][0])
    rotary = LlamaRotaryEmbedding(config)
    q = torch.randn(2, 4, 7, HEAD)  # (batch, heads, seq, head_dim), as transformers lays it out
    positions = torch.arange(7).expand(2, 7)
    cos, sin = rotary(q, positions)
    q_hf, _ = apply_rotary_pos_emb(q, q, cos, sin)
    plan = frequency_plan_from_config(config)
    ours = reference.rotary(q.transpose(1, 2), plan.inv_freq, positions,
                            attention_scaling=plan.attention_scaling).transpose(1, 2)
    torch.testing.assert_close(q_hf.double(), ours, rtol=1e-5, atol=1e-5)


def test_transformers_rotary_angles_drift_at_long_positions():
    """What the rotary kernel must not do: transformers forms the angles in
    fp32, which near position 2^20 is off by ~1e-2 against fp64."""
    config = hf_config(CASES["default"][0])
    rotary = LlamaRotaryEmbedding(config)
    positions = torch.arange(2**20 - 256, 2**20).unsqueeze(0)
    cos, _ = rotary(torch.zeros(1, 256, HEAD), positions)
    theta = positions[0].double().unsqueeze(-1) * rotary.inv_freq.double()
    exact = torch.cos(torch.cat([theta, theta], dim=-1))
    err = (cos[0].double() - exact).abs().max().item()
    print(f"\ntransformers' cos at positions near 2^20: max abs error {err:.2e}")
    assert err > 1e-3
