"""Every module validates its constructor arguments (a clear ValueError
naming the module and the argument, never a failure deep inside torch or
all-NaN outputs later), and builds on the meta device as torch's own do."""
from __future__ import annotations

import pytest
import torch

import posemb
from posemb.nn import BertEmbeddings, LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEmbedding

BAD = [
    (lambda: SinusoidalPositionalEmbedding(-1), "SinusoidalPositionalEmbedding: embedding_dim must be an int >= 0"),
    (lambda: SinusoidalPositionalEmbedding(8.0), "embedding_dim must be an int"),
    (lambda: SinusoidalPositionalEmbedding(8, layout="halves"), "layout must be one of"),
    (lambda: SinusoidalPositionalEmbedding(8, freqs="t5"), "freqs must be one of"),
    (lambda: SinusoidalPositionalEmbedding(8, base=0), "base must be a finite number > 0"),
    (lambda: SinusoidalPositionalEmbedding(8, base=float("nan")), "base must be a finite number > 0"),
    (lambda: SinusoidalPositionalEmbedding(8, scale=float("inf")), "scale must be a finite number"),
    (lambda: SinusoidalPositionalEmbedding(8, padding_idx=-1), "padding_idx must be an int >= 0"),
    (lambda: SinusoidalPositionalEmbedding(2, freqs="fairseq"), "needs embedding_dim >= 4"),
    (lambda: LearnedPositionalEmbedding(0, 8), "LearnedPositionalEmbedding: num_embeddings must be an int >= 1"),
    (lambda: LearnedPositionalEmbedding(4, -2), "embedding_dim must be an int >= 0"),
    (lambda: LearnedPositionalEmbedding(4, 8, padding_idx=4), r"padding_idx must be in \[0, 4\)"),
    (lambda: BertEmbeddings(0, 8), "BertEmbeddings: vocab_size must be an int >= 1"),
    (lambda: BertEmbeddings(10, 8, pad_token_id=10), r"pad_token_id must be None or in \[0, 10\)"),
    (lambda: BertEmbeddings(10, 8, pad_token_id=None, padding_aware_positions=True), "needs a pad_token_id"),
    (lambda: BertEmbeddings(10, 8, max_position_embeddings=4, pad_token_id=5, padding_aware_positions=True),
     "needs pad_token_id < max_position_embeddings"),
    (lambda: BertEmbeddings(10, 8, layer_norm_eps=0.0), "layer_norm_eps must be a finite number > 0"),
    (lambda: BertEmbeddings(10, 8, hidden_dropout_prob=1.5), r"hidden_dropout_prob must be in \[0, 1\]"),
    (lambda: RotaryEmbedding(64, base=0), "rope_theta must be a finite number > 0"),
    (lambda: RotaryEmbedding(64, base=-5.0), "rope_theta must be a finite number > 0"),
    (lambda: RotaryEmbedding(64, rotary_dim=7), "rotary_dim must be even"),
    (lambda: RotaryEmbedding(64, seq_dim=-1), "seq_dim must be 0, 1 or 2"),
    (lambda: RotaryEmbedding(64, rope_parameters={"rope_type": "ntk", "rope_theta": 1e4}), "rope_type must be one of"),
]


@pytest.mark.parametrize("build,message", BAD, ids=[m for _, m in BAD])
def test_bad_constructor_arguments_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()


MODULES = {
    "sinusoidal": lambda: SinusoidalPositionalEmbedding(16),
    "learned": lambda: LearnedPositionalEmbedding(12, 16, padding_idx=1),
    "bert": lambda: BertEmbeddings(30, 16, max_position_embeddings=12, pad_token_id=1, padding_aware_positions=True,
                                   hidden_dropout_prob=0.0),
    "rotary": lambda: RotaryEmbedding(16, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
}


def run(name, module):
    torch.manual_seed(0)
    if name == "bert":
        return module(input_ids=torch.tensor([[5, 6, 7, 1]]))
    x = torch.randn(2, 4, 16) if name != "rotary" else torch.randn(2, 4, 2, 16)
    return module(x)


@pytest.mark.parametrize("name", list(MODULES))
def test_meta_build_then_to_empty_and_load_gives_the_normal_module(name):
    normal = MODULES[name]()
    with torch.device("meta"):
        lazy = MODULES[name]()
    assert all(t.is_meta for t in list(lazy.parameters()) + list(lazy.buffers()))
    lazy.to_empty(device="cpu")
    lazy.load_state_dict(normal.state_dict())
    assert torch.equal(run(name, lazy), run(name, normal))


@pytest.mark.parametrize("name", ["learned", "bert", "rotary"])
def test_reset_parameters_rebuilds_state(name):
    m = MODULES[name]()
    for t in list(m.parameters()) + list(m.buffers()):
        with torch.no_grad():
            t.fill_(float("nan"))
    m.reset_parameters()
    assert all(torch.isfinite(t).all() for t in list(m.parameters()) + list(m.buffers()))
    assert torch.isfinite(run(name, m)).all()


@pytest.mark.parametrize("rope_type", ["default", "dynamic", "longrope"])
def test_every_module_takes_empty_position_tensors(rope_type):
    """Zero tokens with an empty positions tensor give an empty output (no
    reduction over nothing, such as the largest position of dynamic rope)."""
    none = torch.zeros(2, 0, dtype=torch.long)
    x = torch.randn(2, 0, 8)
    assert posemb.nn.SinusoidalPositionalEmbedding(8)(x, none).shape == (2, 0, 8)
    assert posemb.nn.SinusoidalPositionalEmbedding(8, padding_idx=1)(x, input_ids=none).shape == (2, 0, 8)
    assert posemb.nn.LearnedPositionalEmbedding(10, 8)(x, none).shape == (2, 0, 8)
    assert posemb.nn.FourierPositionalEmbedding(8)(x, none).shape == (2, 0, 8)
    params = {"rope_type": rope_type, "rope_theta": 1e4, "factor": 2.0}
    if rope_type == "longrope":
        params.update(short_factor=[1.0] * 4, long_factor=[2.0] * 4, original_max_position_embeddings=16)
    rope = posemb.nn.RotaryEmbedding(8, rope_parameters=params, max_position_embeddings=16)
    q, k = rope(torch.randn(2, 0, 2, 8), torch.randn(2, 0, 2, 8), none)
    assert q.shape == k.shape == (2, 0, 2, 8)
    assert rope(torch.randn(0, 2, 8), cu_seqlens=torch.tensor([0, 0])).shape == (0, 2, 8)  # q only
    bert = posemb.nn.BertEmbeddings(30, 8, max_position_embeddings=16)
    assert bert(none, position_ids=none).shape == (2, 0, 8)
