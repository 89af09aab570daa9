"""Drop posemb into Hugging Face transformers models.

``patch(model)`` swaps each embedding block it knows for a posemb module that
shares the same parameters (nothing is copied; training updates the same
tensors), in place, and returns what it replaced; ``unpatch`` puts it back.

Known blocks (matched by class name and checked, so transformers is not
imported here):

- ``BertEmbeddings`` (BERT, and models built on it such as MiniLM
  sentence-transformers), ``ElectraEmbeddings`` and ``AlbertEmbeddings``
  (the same block, of width ``embedding_size``) ->
  :class:`posemb.nn.BertEmbeddings`;
- ``RobertaEmbeddings``, ``XLMRobertaEmbeddings``, ``CamembertEmbeddings``
  (padding-aware positions) -> the same, with ``padding_aware_positions``.
- DistilBERT's ``Embeddings`` (learned, or its sinusoid-filled table) ->
  :class:`DistilBertEmbeddings`.
- fairseq-style sinusoidal position modules written like M2M-100's,
  Speech2Text's or XGLM's (``_SINUSOIDAL_FORWARDS``) ->
  :class:`HFSinusoidalPositionalEmbedding` (no table).

- Rotary modules written like Llama's (or Cohere's, interleaved, or
  GPT-OSS's, half-width cos and sin) -> :class:`HFRotaryEmbedding`,
  Gemma 3's, Gemma 4's and Olmo 3's per-layer-type modules ->
  :class:`HFLayeredRotaryEmbedding`, and
  GPT-J's -> :class:`HFGPTJRotaryEmbedding`. A
  ``*RotaryEmbedding`` module is replaced only when its ``__init__`` and
  ``forward``, and its modeling module's ``apply_rotary_pos_emb`` and
  ``rotate_half``, are (after removing docstrings and annotations) one of
  the forms posemb reproduces (``_ROTARY_FORMS``, ``_APPLY_FORMS``,
  ``_ROTATE_HALF_FORMS``), the cos and sin layout the module makes is the
  one its apply function takes (``_LAYOUTS``: Llama's halves, Cohere's
  pairs, GLM's and Helium's re-paired halves, GPT-OSS's half width), and
  the family's own frequency code gives posemb's frequencies bitwise for
  this config. Anything else is left alone, with a warning naming it. The
  replacement keeps Hugging Face's contract: ``rotary_emb(x,
  position_ids)`` returns real ``(cos, sin)`` tensors, ``(batch, seq,
  rotary_dim)`` (``rotary_dim / 2`` for GPT-OSS; in ``x.dtype``, or fp32
  where the family's module returns fp32) with ``attention_scaling`` applied, computed by posemb's kernel
  from posemb's fp32 frequencies. The model's ``apply_rotary_pos_emb`` is
  wrapped: given the cos and sin posemb made, it runs posemb's fused rotary
  on q and k with the positions they were made for (interleaved where the
  family pairs channels (2i, 2i+1); partial rotary passes the other
  channels through); given anything else, the model's own code.

:data:`TESTED_ROTARY` lists the families the tests run end to end; others
that pass the check compute what those do, line for line.
"""
from __future__ import annotations

import ast
import gc
import inspect
import sys
import textwrap
import weakref
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from . import ops, rope
from ._patching import ITSELF, PatchError, report
from ._patching import is_posemb as _is_posemb, set_submodule as _set_submodule
from .nn import BertEmbeddings, RotaryEmbedding

__all__ = ["DistilBertEmbeddings", "HFGPTJRotaryEmbedding", "HFLayeredRotaryEmbedding", "HFRotaryEmbedding",
           "HFSinusoidalPositionalEmbedding", "PatchError", "TESTED_ROTARY",
           "patch", "restore_functions", "unpatch"]

_ABSOLUTE = {"BertEmbeddings", "ElectraEmbeddings", "AlbertEmbeddings"}
_PADDING_AWARE = {"RobertaEmbeddings", "XLMRobertaEmbeddings", "CamembertEmbeddings"}
_BERT_CHILDREN = {"word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm", "dropout"}
_DISTILBERT_CHILDREN = {"word_embeddings", "position_embeddings", "LayerNorm", "dropout"}

# The rotary families the tests run end to end (tests/python/test_hf_contract.py,
# tests/python/test_hf_families.py); patch() takes any family whose code is
# one of the forms below, these are the ones checked on a model.
TESTED_ROTARY = ("LlamaRotaryEmbedding", "MistralRotaryEmbedding", "Qwen2RotaryEmbedding", "Qwen3RotaryEmbedding",
                 "GraniteRotaryEmbedding", "GemmaRotaryEmbedding", "Gemma2RotaryEmbedding", "OlmoRotaryEmbedding",
                 "Olmo2RotaryEmbedding", "Phi3RotaryEmbedding", "GPTNeoXRotaryEmbedding", "Gemma3RotaryEmbedding",
                 "Gemma4TextRotaryEmbedding", "GPTJRotaryEmbedding", "Qwen2VLRotaryEmbedding",
                 "Qwen2_5_VLRotaryEmbedding", "Qwen3VLTextRotaryEmbedding", "Llama4TextRotaryEmbedding",
                 "PixtralVisionRotaryEmbedding", "GptOssRotaryEmbedding", "Olmo3RotaryEmbedding",
                 "CohereRotaryEmbedding", "Cohere2RotaryEmbedding", "Cohere2MoeRotaryEmbedding", "GlmRotaryEmbedding",
                 "Glm4RotaryEmbedding", "HeliumRotaryEmbedding", "HunYuanDenseV1RotaryEmbedding",
                 "HunYuanMoEV1RotaryEmbedding")


# posemb rotary modules alive in any model: the wrapped apply_rotary_pos_emb
# functions are restored once there are none.
_LIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class _Live:
    """A posemb rotary module in a model: alive (in _LIVE) from its build,
    and again in a copy (deepcopy, or a pickled model loaded in another
    process), which also wraps its model's apply function again when patch()
    had wrapped it (``_posemb_apply``: the modeling module and the apply
    form), so a copy keeps the fused kernel."""

    _posemb_apply = None

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        _LIVE.add(self)
        if self._posemb_apply is not None:
            _wrap_apply(*self._posemb_apply)


class _Made:
    """What posemb's cos and sin carry (as the attribute ``_posemb_rotary``,
    one object shared by the pair): the positions and the frequency plan they
    were computed from, so the wrapped ``apply_rotary_pos_emb`` can run the
    fused kernel on q and k instead of the eager cos/sin math. The versions
    (eager only) catch a cos or sin written in place after it was made."""

    __slots__ = ("positions", "inv_freq", "attention_scaling", "mrope_section", "mrope_interleaved", "layout",
                 "cos_version", "sin_version")

    def __init__(self, positions: Tensor, inv_freq: Tensor, attention_scaling: float,
                 mrope_section=None, mrope_interleaved: bool = False, layout: str = "halves") -> None:
        self.positions, self.inv_freq, self.attention_scaling = positions, inv_freq, attention_scaling
        self.mrope_section, self.mrope_interleaved, self.layout = mrope_section, mrope_interleaved, layout
        self.cos_version = self.sin_version = None


_MADE = "_posemb_rotary"


def _version(t: Tensor):
    """The in-place version counter, where there is one to read (eager, not
    an inference tensor); None otherwise."""
    if torch.compiler.is_compiling() or t.is_inference():
        return None
    return t._version


# ------------------------------------------------- what posemb reproduces
#
# The code of a family's rotary module and of its apply_rotary_pos_emb, as
# ast.unparse writes it once docstrings and annotations are removed
# (transformers 5.x; Llama's and the families copied from it, Olmo's fp32
# cos/sin, Phi-3's and GPT-NeoX's partial rotary, Gemma 3's per layer type,
# Cohere's interleaved pairs, GLM's and Helium's re-paired cos/sin, GPT-OSS's
# half-width cos/sin).

_INIT_FORM = """def __init__(self, config):
    super().__init__()
    self.max_seq_len_cached = config.max_position_embeddings
    self.original_max_seq_len = config.max_position_embeddings
    self.config = config
    self.rope_type = self.config.rope_parameters['rope_type']
    rope_init_fn: _ = self.compute_default_rope_parameters
    if self.rope_type != 'default':
        rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
    inv_freq, self.attention_scaling = rope_init_fn(self.config)
    self.inv_freq = nn.Buffer(inv_freq, persistent=False)
    self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)"""

# HunYuan's: Llama's, but 'dynamic' with an alpha is its own 'ntk_alpha'.
_NTK_ALPHA_INIT_FORM = _INIT_FORM.replace("""
    rope_init_fn: _ = self.compute_default_rope_parameters
    if self.rope_type != 'default':""", """
    if self.rope_type == 'dynamic' and self.config.rope_parameters.get('alpha'):
        self.rope_type = 'ntk_alpha'
    rope_init_fn: _ = self.compute_default_rope_parameters
    if self.rope_type == 'ntk_alpha':
        rope_init_fn = self.compute_ntk_alpha_rope_parameters
    elif self.rope_type != 'default':""")

_FORWARD_HEAD = """@dynamic_rope_update
def forward(self, x, position_ids):
    freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    emb = {}
    cos = emb.cos() * self.attention_scaling
    sin = emb.sin() * self.attention_scaling
"""
_CAT = _FORWARD_HEAD.format("torch.cat((freqs, freqs), dim=-1)")
# forward form -> HFRotaryEmbedding's arguments: does the module return fp32
# cos/sin (rather than x.dtype), and how it lays the frequencies out:
# "halves" (cat(freqs, freqs): Llama's), "pairs" (each repeated in place:
# Cohere's), "once" (half the width: GPT-OSS's).
_ROTARY_FORMS = {
    _CAT + "    return (cos.to(dtype=x.dtype), sin.to(dtype=x.dtype))": dict(fp32_cos_sin=False),
    _CAT + "    return (cos, sin)": dict(fp32_cos_sin=True),
    _FORWARD_HEAD.format("torch.repeat_interleave(freqs, 2, dim=-1)")
    + "    return (cos.to(dtype=x.dtype), sin.to(dtype=x.dtype))": dict(fp32_cos_sin=False, layout="pairs"),
    _FORWARD_HEAD.format("freqs") + "    return (cos.to(x.dtype), sin.to(x.dtype))": dict(fp32_cos_sin=False,
                                                                                       layout="once"),
}

_LAYERED_INIT_FORM = """def __init__(self, config, device=None):
    super().__init__()
    self.max_seq_len_cached = config.max_position_embeddings
    self.original_max_seq_len = config.max_position_embeddings
    self.config = config
    self.layer_types = sorted(set(config.layer_types))
    self.rope_type = {}
    for layer_type in self.layer_types:
        rope_params = self.config.rope_parameters[layer_type]
        if rope_params is None:
            continue
        self.rope_type[layer_type] = rope_params['rope_type']
        rope_init_fn: _ = self.compute_default_rope_parameters
        if self.rope_type[layer_type] != 'default':
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type[layer_type]]
        curr_inv_freq, curr_attention_scaling = rope_init_fn(self.config, device, layer_type=layer_type)
        setattr(self, f'{layer_type}_inv_freq', nn.Buffer(curr_inv_freq, persistent=False))
        setattr(self, f'{layer_type}_original_inv_freq', nn.Buffer(curr_inv_freq.clone(), persistent=False))
        setattr(self, f'{layer_type}_attention_scaling', curr_attention_scaling)"""

# Gemma 4's: the same per layer type, from a config resolved for the layer
# type (its head_dim differs: global layers have wider heads).
_GEMMA4_INIT_FORM = """def __init__(self, config, device=None):
    super().__init__()
    self.max_seq_len_cached = config.max_position_embeddings
    self.original_max_seq_len = config.max_position_embeddings
    self.config = config
    self.layer_types = sorted(set(config.layer_types))
    self.rope_init_fns: _ = {}
    self.rope_type: _ = {}
    for layer_type in self.layer_types:
        rope_params = self.config.rope_parameters[layer_type]
        if rope_params is None:
            continue
        if (rope_type := rope_params['rope_type']) != 'default':
            rope_init_fn = ROPE_INIT_FUNCTIONS[rope_type]
        else:
            rope_init_fn = self.compute_default_rope_parameters
        self.rope_init_fns[layer_type] = rope_init_fn
        self.rope_type[layer_type] = rope_type
        rope_config = config.per_layer_config[layer_type]
        curr_inv_freq, curr_attention_scaling = rope_init_fn(rope_config, device, layer_type=layer_type)
        setattr(self, f'{layer_type}_inv_freq', nn.Buffer(curr_inv_freq, persistent=False))
        setattr(self, f'{layer_type}_original_inv_freq', nn.Buffer(curr_inv_freq.clone(), persistent=False))
        setattr(self, f'{layer_type}_attention_scaling', curr_attention_scaling)"""

_LAYERED_FORWARD_HEAD = """@dynamic_rope_update
def forward(self, x, position_ids, layer_type):
    inv_freq = getattr(self, f'{layer_type}_inv_freq')
    attention_scaling = getattr(self, f'{layer_type}_attention_scaling')
    freqs = position_ids[..., None].float() * inv_freq.to(device=x.device, dtype=torch.float)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos() * attention_scaling
    sin = emb.sin() * attention_scaling
"""
# forward form -> fp32 cos/sin? (Olmo 3's, as Olmo's)
_LAYERED_FORWARD_FORMS = {
    _LAYERED_FORWARD_HEAD + "    return (cos.to(dtype=x.dtype), sin.to(dtype=x.dtype))": False,
    _LAYERED_FORWARD_HEAD + "    return (cos, sin)": True,
}

_APPLY_HEAD = """def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
"""
_UNSQUEEZE = """    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
"""
_EMBED = """    q_embed = q * cos + rotate_half(q) * sin
    k_embed = k * cos + rotate_half(k) * sin
"""
# GLM's and Helium's: Llama's cos and sin, their first half repeated per pair.
_REPAIR = """    cos = cos[..., :cos.shape[-1] // 2].repeat_interleave(2, dim=-1)
    sin = sin[..., :sin.shape[-1] // 2].repeat_interleave(2, dim=-1)
"""
# apply_rotary_pos_emb form -> (kind, layout). kind: how its result is made:
# "llama" (the promoted dtype), "cast" (back to q's and k's dtypes: Olmo),
# "fp32" (computed from q.float() and k.float(), both back to q's dtype:
# Cohere), "partial" (the first cos.shape[-1] channels turned, the others
# passed through: Phi-3, GPT-NeoX, GLM). layout (_LAYOUTS): None where
# rotate_half decides it, "repaired" (GLM, Helium) or "once" (GPT-OSS).
_APPLY_FORMS = {
    _APPLY_HEAD + _UNSQUEEZE + _EMBED + "    return (q_embed, k_embed)": ("llama", None),
    _APPLY_HEAD + "    q_type, k_type = (q.dtype, k.dtype)\n" + _UNSQUEEZE + _EMBED
    + "    return (q_embed.to(q_type), k_embed.to(k_type))": ("cast", None),
    _APPLY_HEAD + "    dtype = q.dtype\n    q = q.float()\n    k = k.float()\n" + _UNSQUEEZE + _EMBED
    + "    return (q_embed.to(dtype=dtype), k_embed.to(dtype=dtype))": ("fp32", None),
    _APPLY_HEAD + _UNSQUEEZE + _REPAIR + _EMBED + "    return (q_embed, k_embed)": ("llama", "repaired"),
    _APPLY_HEAD + _UNSQUEEZE + """    rotary_dim = cos.shape[-1]
    q_rot, q_pass = (q[..., :rotary_dim], q[..., rotary_dim:])
    k_rot, k_pass = (k[..., :rotary_dim], k[..., rotary_dim:])
    q_embed = torch.cat([q_rot * cos + rotate_half(q_rot) * sin, q_pass], dim=-1)
    k_embed = torch.cat([k_rot * cos + rotate_half(k_rot) * sin, k_pass], dim=-1)
    return (q_embed, k_embed)""": ("partial", None),
}
_PARTIAL_TAIL = """    rotary_dim = cos.shape[-1]
    q_rot, q_pass = (q[..., :rotary_dim], q[..., rotary_dim:])
    k_rot, k_pass = (k[..., :rotary_dim], k[..., rotary_dim:])
    q_embed = q_rot * cos + rotate_half(q_rot) * sin
    k_embed = k_rot * cos + rotate_half(k_rot) * sin
    q_embed = torch.cat([q_embed, q_pass], dim=-1)
    k_embed = torch.cat([k_embed, k_pass], dim=-1)
    return (q_embed, k_embed)"""
_APPLY_FORMS.update({
    _APPLY_HEAD + _UNSQUEEZE + _PARTIAL_TAIL: ("partial", None),
    _APPLY_HEAD + _UNSQUEEZE + _REPAIR + _PARTIAL_TAIL: ("partial", "repaired"),
    # GPT-OSS's: half-width cos and sin on each half (_apply_rotary_emb, _HALVES_FORM).
    _APPLY_HEAD + _UNSQUEEZE + """    q_embed = _apply_rotary_emb(q, cos, sin)
    k_embed = _apply_rotary_emb(k, cos, sin)
    return (q_embed, k_embed)""": ("llama", "once"),
    # Gemma 4's: one tensor at a time (q, then k unless the layer reuses another's).
    """def apply_rotary_pos_emb(x, cos, sin, unsqueeze_dim=1):
""" + _UNSQUEEZE + "    return x * cos + rotate_half(x) * sin": ("single", None),
})

_ROTATE_HALF_FORM = """def rotate_half(x):
    x1 = x[..., :x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)"""
# rotate_half form -> does it turn pairs (2i, 2i+1) (Cohere's, GLM's) rather than halves (Llama's)?
_ROTATE_HALF_FORMS = {
    _ROTATE_HALF_FORM: False,
    """def rotate_half(x):
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    rot_x = torch.stack([-x2, x1], dim=-1).flatten(-2)
    return rot_x""": True,
    """def rotate_half(x):
    x1 = x[..., 0::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)""": True,
}
_HALVES_FORM = """def _apply_rotary_emb(x, cos, sin):
    first_half, second_half = torch.chunk(x, 2, dim=-1)
    first_ = first_half * cos - second_half * sin
    second_ = second_half * cos + first_half * sin
    return torch.cat((first_, second_), dim=-1)"""
# How an apply function pairs the channels it turns: layout -> (the layout of
# the cos and sin it takes (_ROTARY_FORMS), posemb's interleaved). "halves":
# Llama's; "pairs": Cohere's; "repaired": GLM's and Helium's (Llama's cos and
# sin, pairs turned); "once": GPT-OSS's.
_LAYOUTS = {"halves": ("halves", False), "pairs": ("pairs", True), "repaired": ("halves", True),
            "once": ("once", False)}

# GPT-J: a (sin || cos) table of its rotary_dim, (sin, cos) of half that
# width, interleaved pairs, and apply_rotary_pos_emb(tensor, sin, cos) for one
# tensor (batch, seq, heads, rotary_dim) at a time.
_GPTJ_FORMS = (
    """def __init__(self, config):
    super().__init__()
    self.max_positions = config.max_position_embeddings
    self.pos_embd_dim = config.rotary_dim or config.hidden_size
    self.embed_positions = nn.Buffer(create_sinusoidal_positions(self.max_positions, self.pos_embd_dim), \
persistent=False)""",
    """def forward(self, x, position_ids):
    sincos = self.embed_positions[position_ids].to(x.dtype)
    sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
    return (sin, cos)""",
    """def create_sinusoidal_positions(num_pos, dim):
    inv_freq = 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim)
    sinusoid_inp = torch.arange(num_pos, dtype=torch.int64).float()[:, None] * inv_freq
    return torch.cat((torch.sin(sinusoid_inp), torch.cos(sinusoid_inp)), dim=1)""",
    """def rotate_every_two(x):
    x1 = x[:, :, :, ::2]
    x2 = x[:, :, :, 1::2]
    x = torch.stack((-x2, x1), dim=-1)
    return x.flatten(-2)""",
    """def apply_rotary_pos_emb(tensor, sin, cos):
    sin = torch.repeat_interleave(sin[:, :, None, :], 2, 3)
    cos = torch.repeat_interleave(cos[:, :, None, :], 2, 3)
    return tensor * cos + rotate_every_two(tensor) * sin""",
)


def _is_gptj_form(cls, code) -> bool:
    apply = getattr(code, "apply_rotary_pos_emb", None)
    apply = getattr(apply, "posemb_original", apply)
    found = (_form(cls.__init__), _form(cls.forward), _form(getattr(code, "create_sinusoidal_positions", None)),
             _form(getattr(code, "rotate_every_two", None)), _form(apply, decorators=False))
    return found == _GPTJ_FORMS


# Sinusoidal position modules (fairseq's encoding: half layout, fairseq
# frequencies, the padding_idx row zero, odd widths padded with a zero
# column): M2M-100's code, which NLLB-MoE and SeamlessM4T copy; Speech2Text's
# (and SpeechT5's) forward; XGLM's.
_SINUSOIDAL_COMMON = (
    """def __init__(self, num_positions, embedding_dim, padding_idx=None):
    super().__init__()
    self.offset = 2
    self.num_positions = num_positions
    self.embedding_dim = embedding_dim
    self.padding_idx = padding_idx
    self.make_weights(num_positions + self.offset, embedding_dim, padding_idx)""",
    """def make_weights(self, num_embeddings, embedding_dim, padding_idx=None):
    emb_weights = self.get_embedding(num_embeddings, embedding_dim, padding_idx)
    if hasattr(self, 'weights'):
        emb_weights = emb_weights.to(dtype=self.weights.dtype, device=self.weights.device)
    self.weights = nn.Buffer(emb_weights, persistent=False)""",
    """@staticmethod
def get_embedding(num_embeddings, embedding_dim, padding_idx=None):
    half_dim = embedding_dim // 2
    emb = math.log(10000) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.int64).float() * -emb)
    emb = torch.arange(num_embeddings, dtype=torch.int64).float().unsqueeze(1) * emb.unsqueeze(0)
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(num_embeddings, -1)
    if embedding_dim % 2 == 1:
        emb = torch.cat([emb, torch.zeros(num_embeddings, 1)], dim=1)
    if padding_idx is not None:
        emb[padding_idx, :] = 0
    return emb.to(torch.get_default_dtype())""",
)
_FROM_IDS_BODY = """    mask = input_ids.ne(padding_idx).int()
    incremental_indices = (torch.cumsum(mask, dim=1).type_as(mask) + cache_length) * mask
    return incremental_indices.long() + padding_idx"""
_FROM_IDS = ("@staticmethod\ndef create_position_ids_from_input_ids(input_ids, padding_idx, cache_length=0):\n"
             + _FROM_IDS_BODY)
_FROM_IDS_METHOD = ("def create_position_ids_from_input_ids(self, input_ids, padding_idx, cache_length=0):\n"
                    + _FROM_IDS_BODY)
_FROM_EMBEDS = """@staticmethod
def create_position_ids_from_inputs_embeds(inputs_embeds, cache_length, padding_idx):
    input_shape = inputs_embeds.size()[:-1]
    sequence_length = input_shape[1]
    position_ids = torch.arange(padding_idx + 1, sequence_length + padding_idx + 1, dtype=torch.long, \
device=inputs_embeds.device)
    return position_ids.unsqueeze(0).expand(input_shape).contiguous() + cache_length"""
# forward form -> (flavor, the position-id helpers it calls, as forms)
_SINUSOIDAL_FORWARDS = {
    """@torch.no_grad()
def forward(self, input_ids=None, inputs_embeds=None, cache_length=0):
    if input_ids is not None:
        bsz, seq_len = input_ids.size()
        position_ids = self.create_position_ids_from_input_ids(input_ids, self.padding_idx, cache_length).to(\
input_ids.device)
    else:
        bsz, seq_len = inputs_embeds.size()[:-1]
        position_ids = self.create_position_ids_from_inputs_embeds(inputs_embeds, cache_length, self.padding_idx)
    max_pos = self.padding_idx + 1 + seq_len + cache_length
    if not (is_torchdynamo_compiling() and torch.is_tensor(max_pos)) and max_pos > self.weights.size(0):
        self.make_weights(max_pos + self.offset, self.embedding_dim, self.padding_idx)
    return self.weights.index_select(0, position_ids.view(-1)).view(bsz, seq_len, self.weights.shape[-1]).detach()\
""": ("m2m", (_FROM_IDS, _FROM_EMBEDS)),
    """@torch.no_grad()
def forward(self, input_ids, cache_length=0):
    bsz, seq_len = input_ids.size()
    position_ids = self.create_position_ids_from_input_ids(input_ids, self.padding_idx, cache_length).to(\
input_ids.device)
    max_pos = self.padding_idx + 1 + seq_len
    if max_pos > self.weights.size(0):
        self.make_weights(max_pos + self.offset, self.embedding_dim, self.padding_idx)
    return self.weights.index_select(0, position_ids.view(-1)).view(bsz, seq_len, -1).detach()\
""": ("s2t", (_FROM_IDS_METHOD, None)),
    """def forward(self, position_ids=None, cache_length=0):
    bsz, seq_len = position_ids.size()
    position_ids = position_ids + self.offset
    max_pos = 2 + seq_len + cache_length
    if not (is_torchdynamo_compiling() and torch.is_tensor(max_pos)) and max_pos > self.weights.size(0):
        self.make_weights(max_pos, self.embedding_dim, self.padding_idx)
    return self.weights.index_select(0, position_ids.view(-1)).view(bsz, seq_len, self.weights.shape[-1]).detach()\
""": ("xglm", (None, None)),
}


def _sinusoidal_replacement(module: nn.Module):
    """posemb's stand-in for a fairseq-style sinusoidal position module, or
    ``(None, reason)``."""
    cls = type(module)
    common = tuple(_form(getattr(cls, name, None)) for name in ("__init__", "make_weights", "get_embedding"))
    found = _SINUSOIDAL_FORWARDS.get(_form(cls.forward))
    helpers = tuple(_form(getattr(cls, name, None)) for name in ("create_position_ids_from_input_ids",
                                                                 "create_position_ids_from_inputs_embeds"))
    if common != _SINUSOIDAL_COMMON or found is None or helpers != found[1]:
        return None, "its code is not a form posemb reproduces (M2M-100's, Speech2Text's, XGLM's)"
    if module.padding_idx is None or module.embedding_dim < 4:
        return None, "posemb's fairseq frequencies need a padding_idx and embedding_dim >= 4"
    return HFSinusoidalPositionalEmbedding.from_hf(module, found[0]), None


def _form(fn, decorators: bool = True):
    """The code of ``fn`` without docstrings and annotations (None where
    there is no source to read)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(fn))))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef):
        return None
    for n in ast.walk(tree):
        if isinstance(n, ast.FunctionDef):
            n.returns = None
            for a in n.args.posonlyargs + n.args.args + n.args.kwonlyargs + [n.args.vararg, n.args.kwarg]:
                if a is not None:
                    a.annotation = None
            body = n.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                n.body = body[1:] or [ast.Pass()]
        elif isinstance(n, ast.AnnAssign):
            n.annotation = ast.Name("_", ast.Load())
    if not decorators:
        node.decorator_list = []
    return ast.unparse(node)


def _apply_form(code):
    """``(kind, layout)`` of a modeling module's ``apply_rotary_pos_emb`` (the
    original where patch() wrapped it; ``_APPLY_FORMS``, ``_LAYOUTS``), or
    ``(None, reason)`` where it has none posemb reproduces."""
    fn = getattr(code, "apply_rotary_pos_emb", None)
    fn = getattr(fn, "posemb_original", fn)
    if fn is None:
        return None, "its module has no apply_rotary_pos_emb"
    kind, layout = _APPLY_FORMS.get(_form(fn, decorators=False), (None, None))
    if kind is None:
        return None, "its module's apply_rotary_pos_emb is not a form posemb reproduces"
    if layout == "once":
        if _form(getattr(code, "_apply_rotary_emb", None), decorators=False) != _HALVES_FORM:
            return None, "its module's _apply_rotary_emb is not GPT-OSS's"
        return (kind, layout), None
    pairs = _ROTATE_HALF_FORMS.get(_form(getattr(code, "rotate_half", None), decorators=False))
    if pairs is None:
        return None, "its module's rotate_half is not Llama's, Cohere's or GLM's"
    if layout == "repaired" and not pairs:  # cos repeated per pair, halves turned: no rotation
        return None, "its module's rotate_half turns halves of cos and sin repeated per pair"
    return (kind, layout or ("pairs" if pairs else "halves")), None


# Llama 4's rotary: Llama's __init__, angles as complex numbers (freqs_cis)
# and its own apply_rotary_emb (pairs (2i, 2i+1), q and k (batch, seq, heads,
# head_dim)). Its layers without rope (iRoPE's no_rope_layers) just skip it.
_COMPLEX_FORWARD_FORM = """@dynamic_rope_update
def forward(self, x, position_ids):
    freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
    freqs_cis = freqs_cis * self.attention_scaling
    return freqs_cis"""
_COMPLEX_APPLY_FORM = """def apply_rotary_emb(xq, xk, freqs_cis):
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    xq_out = torch.view_as_real(xq_ * freqs_cis[:, :, None, :]).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis[:, :, None, :]).flatten(3)
    return (xq_out.type_as(xq), xk_out.type_as(xk))"""
# Pixtral's vision rotary (2-D axial): positions (patches, 2) of rows and
# columns, the first half of the (reordered) frequencies on rows, the second
# on columns.
_AXIAL_INIT_FORM = """def __init__(self, config):
    super().__init__()
    self.config = config
    self.rope_type = self.config.rope_parameters['rope_type']
    rope_init_fn: _ = self.compute_axial_rope_parameters
    if self.rope_type != 'axial':
        raise ValueError(f'{self.__class__.__name__} supports only axial rope, but requested {self.rope_type}')
    inv_freq, self.attention_scaling = rope_init_fn(self.config)
    self.inv_freq = nn.Buffer(inv_freq, persistent=False)
    self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)"""
_AXIAL_FORWARD_FORM = """def forward(self, x, position_ids):
    freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    cos = freqs.cos() * self.attention_scaling
    sin = freqs.sin() * self.attention_scaling
    cos = self.recomposition_frequencies(cos)
    sin = self.recomposition_frequencies(sin)
    return (cos.to(x.dtype), sin.to(x.dtype))"""
_AXIAL_RECOMPOSITION_FORM = """def recomposition_frequencies(self, freq):
    freq_h, freq_w = (m[:, i % 2] for i, m in enumerate(freq.chunk(2, dim=-1)))
    freq_hw = torch.cat([freq_h, freq_w], dim=-1)
    return torch.cat([freq_hw, freq_hw], dim=-1)"""

# The module-level function each apply kind wraps.
_APPLY_NAMES = {"complex": "apply_rotary_emb"}


def _apply_name(kind: str) -> str:
    return _APPLY_NAMES.get(kind, "apply_rotary_pos_emb")


# Multimodal rope (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): Llama's __init__ plus the
# sections, a forward that expands the positions to (t, h, w) and lays each
# frequency's axis out by the recomposition form (-> interleaved?).
_MROPE_INIT_TAIL = "\n    self.mrope_section = config.rope_parameters.get('mrope_section', "
_MROPE_FORWARD_FORM = """@dynamic_rope_update
def forward(self, x, position_ids):
    position_ids = position_ids.expand(3, -1, -1)
    freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
    cos = freqs.cos() * self.attention_scaling
    sin = freqs.sin() * self.attention_scaling
    sin = self.recomposition_frequencies(sin)
    cos = self.recomposition_frequencies(cos)
    return (cos.to(dtype=x.dtype), sin.to(dtype=x.dtype))"""
_MROPE_RECOMPOSITION_FORMS = {
    """def recomposition_frequencies(self, freq):
    freq = torch.cat([m[i % 3] for i, m in enumerate(freq.split(self.mrope_section, dim=-1))], dim=-1)
    return torch.cat((freq, freq), dim=-1)""": False,
    """def recomposition_frequencies(self, freq):
    freqs_thw = freq[0]
    for dim, offset in enumerate((1, 2), start=1):
        length = self.mrope_section[dim] * 3
        idx = slice(offset, length, 3)
        freqs_thw[..., idx] = freq[dim, ..., idx]
    return torch.cat((freqs_thw, freqs_thw), dim=-1)""": True,
}


def _mrope_layout(cls, init: str, forward: str):
    """True (interleaved sections) or False (contiguous) for a multimodal
    rotary module posemb reproduces; None for any other."""
    if not (init.startswith(_INIT_FORM) and init[len(_INIT_FORM):].startswith(_MROPE_INIT_TAIL)
            and init.count("\n") == _INIT_FORM.count("\n") + 1 and forward == _MROPE_FORWARD_FORM):
        return None
    recomposition = getattr(cls, "recomposition_frequencies", None)
    return None if recomposition is None else _MROPE_RECOMPOSITION_FORMS.get(_form(recomposition))


def _rope_init_functions():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # the model's own transformers

    return ROPE_INIT_FUNCTIONS


def _same_plan(cls, config, plan, **kwargs) -> bool:
    """The family's own frequency code gives posemb's plan, bitwise (Gemma 4:
    ``config`` is the one resolved for the layer type)."""
    params = config.rope_parameters if not kwargs else config.rope_parameters[kwargs["layer_type"]]
    rope_type = params.get("rope_type", "default")
    init = cls.compute_default_rope_parameters if rope_type == "default" else _rope_init_functions()[rope_type]
    with torch.device("cpu"):
        inv_freq, scaling = init(config, **kwargs)
    return (torch.equal(inv_freq.to("cpu", torch.float32), plan.inv_freq)
            and float(scaling) == float(plan.attention_scaling))


def _rotary_replacement(module: nn.Module):
    """``(replacement, (apply kind, layout))`` for a rotary module posemb
    reproduces, or ``(None, reason)``."""
    cls = type(module)
    if not cls.__module__.startswith("transformers."):
        return None, "not a transformers module"
    code = sys.modules.get(cls.__module__)
    if _is_gptj_form(cls, code):
        new = HFGPTJRotaryEmbedding(module.pos_embd_dim, module.max_positions)
        device = _buffer_device(module)
        return (new.to(device) if device is not None else new), ("gptj", None)
    init, forward = _form(cls.__init__), _form(cls.forward)
    if init == _NTK_ALPHA_INIT_FORM:  # Llama's for every other rope type
        if module.rope_type == "ntk_alpha":
            return None, ("its rope type 'ntk_alpha' ('dynamic' with a fixed alpha: rope_theta stretched by "
                          "alpha ** (dim / (dim - 2))) is not one of posemb's plans")
        init = _INIT_FORM
    per_layer_config = init == _GEMMA4_INIT_FORM
    layered = init in (_LAYERED_INIT_FORM, _GEMMA4_INIT_FORM) and forward in _LAYERED_FORWARD_FORMS
    mrope_interleaved = _mrope_layout(cls, init, forward)
    if mrope_interleaved is not None:
        section = list(getattr(module, "mrope_section", None) or [])
        if len(section) != 3:
            return None, f"its mrope_section {section} is not three (t, h, w) sections"
    elif init == _INIT_FORM and forward == _COMPLEX_FORWARD_FORM:
        apply = getattr(code, "apply_rotary_emb", None)
        if _form(getattr(apply, "posemb_original", apply), decorators=False) != _COMPLEX_APPLY_FORM:
            return None, "its module's apply_rotary_emb is not Llama 4's"
        try:
            new = HFComplexRotaryEmbedding(module.config)
        except (ValueError, KeyError, TypeError) as error:
            return None, f"posemb cannot express its rope parameters ({error})"
        if not _same_plan(cls, module.config, rope.frequency_plan_from_config(module.config)):
            return None, "its frequencies for this config are not posemb's"
        device = _buffer_device(module)
        return (new.to(device) if device is not None else new), ("complex", None)
    elif init == _AXIAL_INIT_FORM and forward == _AXIAL_FORWARD_FORM \
            and _form(getattr(cls, "recomposition_frequencies", None)) == _AXIAL_RECOMPOSITION_FORM:
        apply, reason = _apply_form(code)
        if apply is None or apply[1] != "halves":
            return None, reason or _LAYOUT_REASON
        try:
            new = HFAxialRotaryEmbedding(module.config)
        except (ValueError, KeyError, TypeError) as error:
            return None, f"posemb cannot express its rope parameters ({error})"
        with torch.device("cpu"):
            inv_freq, scaling = cls.compute_axial_rope_parameters(module.config)
        if not (torch.equal(inv_freq.to(torch.float32), new.inv_freq.cpu()) and float(scaling) == 1.0):
            return None, "its frequencies for this config are not posemb's"
        device = _buffer_device(module)
        return (new.to(device) if device is not None else new), apply
    elif not layered and (init != _INIT_FORM or forward not in _ROTARY_FORMS):
        if "Vision" in cls.__name__:
            return None, ("a vision tower's rotary table, indexed by patch rows and columns in the vision model's "
                          "own forward; posemb.rotary with mrope_section computes such axial rotary directly")
        return None, ("its code is not a form posemb reproduces (Llama's, Olmo's, Cohere's, GPT-OSS's, Gemma 3's, "
                      "Gemma 4's)")
    apply, reason = _apply_form(code)
    if apply is None:
        return None, reason
    rotary = _ROTARY_FORMS.get(forward, {})  # {} for the layered and multimodal ones: Llama's layout
    if _LAYOUTS[apply[1]][0] != rotary.get("layout", "halves"):
        return None, _LAYOUT_REASON
    config = module.config
    try:
        if layered:
            new = HFLayeredRotaryEmbedding(config, per_layer_config=per_layer_config,
                                           fp32_cos_sin=_LAYERED_FORWARD_FORMS[forward])
            same = all(_same_plan(cls, new._config_of(lt), new._plan(lt), layer_type=lt) for lt in new.rope_type)
        elif mrope_interleaved is not None:
            new = HFMultimodalRotaryEmbedding(config, mrope_section=section, mrope_interleaved=mrope_interleaved)
            same = _same_plan(cls, config, rope.frequency_plan_from_config(config))
        else:
            new = HFRotaryEmbedding(config, **rotary)
            same = _same_plan(cls, config, rope.frequency_plan_from_config(config))
    except (ValueError, KeyError, TypeError) as error:
        return None, f"posemb cannot express its rope parameters ({error})"
    if not same:
        return None, "its frequencies for this config are not posemb's"
    device = _buffer_device(module)
    if device is not None:
        new.to(device)
    return new, apply


_LAYOUT_REASON = "its module's apply_rotary_pos_emb takes cos and sin laid out otherwise than its rotary module's"


def _buffer_device(module: nn.Module):
    for buffer in module.buffers(recurse=False):
        return buffer.device
    return None


class HFRotaryEmbedding(_Live, RotaryEmbedding):
    """Stands in for a Hugging Face rotary module (``LlamaRotaryEmbedding``
    and those written like it) and keeps its contract: a
    :class:`posemb.nn.RotaryEmbedding` whose ``forward`` is Hugging Face's.

    ``forward(x, position_ids)`` returns ``(cos, sin)``, each ``(batch, seq,
    rotary_dim)`` in ``x.dtype`` (``x`` gives only the dtype and device), with
    ``attention_scaling`` applied, as Hugging Face's module does, for every
    rope type, laid out as the family's module lays them (``layout``:
    ``"halves"``, Llama's; ``"pairs"``, each frequency twice in place,
    Cohere's; ``"once"``, ``rotary_dim / 2`` wide, GPT-OSS's). They are computed by posemb's kernel with exact angles from
    posemb's fp32 frequencies: :func:`posemb.rotary` of a row whose first half
    is ones and second half zeros is ``(cos, sin) * attention_scaling`` of
    each frequency. ``dynamic`` and ``longrope`` take their frequencies from
    the call's largest position, chosen on the device (no host read, so
    ``torch.compile(fullgraph=True)`` keeps one graph), with no state kept
    between calls.

    The cos and sin it returns carry the positions and plan they were made
    from; the wrapped ``apply_rotary_pos_emb`` of the model recognises them
    and runs posemb's fused rotary on q and k. Anything else passed to it
    (cos and sin made by other code, or posemb's written in place, sliced or
    copied) runs the model's own code.

    ``inv_freq`` and ``original_inv_freq`` are non-persistent fp32 buffers
    (Hugging Face's names), kept fp32 through every cast and rebuilt after
    every move (``to_empty()`` included). With ``rope_type``, ``config`` and
    ``compute_default_rope_parameters`` they let transformers' deferred
    initialisation (meta device, buffers materialised uninitialised, then
    ``_init_weights``) rebuild them as it rebuilds its own modules'.
    """

    def __init__(self, config, device=None, *, fp32_cos_sin: bool = False, layout: str = "halves") -> None:
        # q and k are (batch, heads, seq, head_dim) in these models.
        super().__init__(rope.head_dim_of(config), rope_parameters=rope.rope_parameters_of(config),
                         max_position_embeddings=getattr(config, "max_position_embeddings", None), seq_dim=2)
        _LIVE.add(self)
        self.config = config
        # Olmo's module returns fp32 cos and sin whatever x's dtype; Llama's, x.dtype.
        self.fp32_cos_sin = fp32_cos_sin
        # How cos and sin lay the frequencies out (_ROTARY_FORMS): "halves", "pairs" or "once".
        self.layout = layout
        self.rope_type = self.rope_parameters.get("rope_type", self.rope_parameters.get("type", "default"))
        self.max_seq_len_cached = self.original_max_seq_len = self.max_position_embeddings
        self.register_buffer("original_inv_freq", self.inv_freq.clone(), persistent=False)
        # Positions without axes, whatever the config holds (HFMultimodalRotaryEmbedding has them).
        self.mrope_section, self.mrope_interleaved = None, False
        if device is not None:
            self.to(device)

    @classmethod
    def from_hf(cls, original: nn.Module, *, fp32_cos_sin: bool = False, layout: str = "halves") \
            -> "HFRotaryEmbedding":
        """The replacement of a Hugging Face rotary module, on its device."""
        return cls(original.config, device=original.inv_freq.device, fp32_cos_sin=fp32_cos_sin, layout=layout)

    def reset_parameters(self) -> None:
        """Rebuilds both buffers in fp32 from the rope parameters, where they live."""
        super().reset_parameters()
        self.original_inv_freq = self.inv_freq.clone()

    @staticmethod
    def compute_default_rope_parameters(config, device=None, seq_len=None, **kwargs):
        """posemb's plan as ``(inv_freq, attention_scaling)`` (what Hugging
        Face's ``_init_weights`` calls for ``rope_type="default"``)."""
        plan = rope.frequency_plan_from_config(config, seq_len=seq_len)
        return plan.inv_freq.to(device) if device is not None else plan.inv_freq, plan.attention_scaling

    def forward(self, x: Tensor, position_ids: Tensor):
        inv_freq = self.inv_freq
        if self.rope_type in rope.LENGTH_DEPENDENT:  # once per forward, on the device: every layer uses it
            inv_freq = self._inv_freq_for(self._seq_len(x, position_ids, 0, None))
        return _cos_sin(x, position_ids, inv_freq, self.attention_scaling,
                        torch.float32 if self.fp32_cos_sin else x.dtype, self.mrope_section, self.mrope_interleaved,
                        self.layout)


class HFMultimodalRotaryEmbedding(HFRotaryEmbedding):
    """Stands in for a multimodal rotary module (Qwen2-VL's and Qwen2.5-VL's
    contiguous (t, h, w) sections, Qwen3-VL's interleaved ones) and keeps its
    contract: ``forward(x, position_ids)`` takes ``(batch, seq)`` or ``(3,
    batch, seq)`` positions and returns ``(cos, sin)``, ``(batch, seq,
    rotary_dim)``, each frequency turned by its own axis' positions; the
    wrapped ``apply_rotary_pos_emb`` fuses them as for Llama (one launch,
    positions with axes, see :func:`posemb.rotary`)."""

    def __init__(self, config, device=None, *, mrope_section, mrope_interleaved: bool = False) -> None:
        super().__init__(config)
        self.mrope_section, self.mrope_interleaved = [int(n) for n in mrope_section], bool(mrope_interleaved)
        if device is not None:
            self.to(device)

    @classmethod
    def from_hf(cls, original: nn.Module, *, mrope_interleaved: bool = False) -> "HFMultimodalRotaryEmbedding":
        return cls(original.config, device=original.inv_freq.device, mrope_section=original.mrope_section,
                   mrope_interleaved=mrope_interleaved)

    def forward(self, x: Tensor, position_ids: Tensor):
        return super().forward(x, position_ids.expand(3, -1, -1))


class HFAxialRotaryEmbedding(_Live, RotaryEmbedding):
    """Stands in for Pixtral's vision rotary module (2-D axial rope over
    image patches) and keeps its contract: ``forward(x, position_ids)``
    takes ``(patches, 2)`` (row, column) positions and returns ``(cos,
    sin)``, ``(patches, head_dim)`` in ``x.dtype``. ``inv_freq`` is
    Pixtral's: the default frequencies reordered, even ones (rows) then odd
    ones (columns). The wrapped ``apply_rotary_pos_emb`` fuses them: posemb's
    rotary with positions with axes, ``mrope_section=[head_dim // 4] * 2``."""

    def __init__(self, config, device=None) -> None:
        head_dim = rope.head_dim_of(config)
        if head_dim % 4:
            raise ValueError(f"axial rope needs head_dim divisible by 4, got {head_dim}")
        super().__init__(head_dim, rope_parameters={"rope_type": "default",
                                                    "rope_theta": config.rope_parameters["rope_theta"]}, seq_dim=2)
        _LIVE.add(self)
        self.config = config
        self.rope_type = "axial"
        self.mrope_section = [head_dim // 4] * 2
        self.register_buffer("original_inv_freq", self.inv_freq.clone(), persistent=False)
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def reset_parameters(self) -> None:
        """Rebuilds Pixtral's reordered fp32 frequencies, where they live."""
        super().reset_parameters()
        self.inv_freq = torch.cat([self.inv_freq[0::2], self.inv_freq[1::2]])
        if "original_inv_freq" in self._buffers:
            self.original_inv_freq = self.inv_freq.clone()

    def forward(self, x: Tensor, position_ids: Tensor):
        return _cos_sin(x, position_ids.movedim(-1, 0), self.inv_freq, self.attention_scaling, x.dtype,
                        self.mrope_section)


class HFComplexRotaryEmbedding(HFRotaryEmbedding):
    """Stands in for Llama 4's rotary module and keeps its contract:
    ``forward(x, position_ids)`` returns ``freqs_cis``, complex64 ``(batch,
    seq, rotary_dim / 2)``, ``attention_scaling * exp(i * angle)``, with
    posemb's exact angles. The wrapped ``apply_rotary_emb`` recognises it and
    runs posemb's fused interleaved rotary on q and k; layers without rope
    (``no_rope_layers``) never call it, as in the original."""

    def __init__(self, config, device=None) -> None:
        super().__init__(config, device, fp32_cos_sin=True)

    def forward(self, x: Tensor, position_ids: Tensor):
        cos, sin = super().forward(x, position_ids)
        made = getattr(cos, _MADE)
        half = made.inv_freq.numel()
        freqs_cis = torch.complex(cos[..., :half], sin[..., :half])
        made.cos_version = made.sin_version = _version(freqs_cis)
        setattr(freqs_cis, _MADE, made)
        return freqs_cis


def _complex_dispatch(original):
    """Llama 4's apply_rotary_emb that runs posemb's fused rotary for a
    freqs_cis posemb made, and the model's own code otherwise."""

    def apply_rotary_emb(xq, xk, freqs_cis):
        made = getattr(freqs_cis, _MADE, None)
        if made is not None and isinstance(xq, Tensor) and isinstance(xk, Tensor) and not freqs_cis.requires_grad \
                and (torch.compiler.is_compiling() or made.cos_version is None
                     or freqs_cis._version == made.cos_version) \
                and freqs_cis.dim() == 3 and xq.dim() == 4 and xk.dim() == 4 \
                and xq.shape[1] == xk.shape[1] == freqs_cis.shape[1] \
                and xq.shape[-1] == xk.shape[-1] == 2 * made.inv_freq.numel():
            return ops.rotary(xq, xk, made.inv_freq, made.positions, attention_scaling=made.attention_scaling,
                              interleaved=True, seq_dim=1)
        return original(xq, xk, freqs_cis)

    apply_rotary_emb.posemb_original = original
    apply_rotary_emb.posemb_kind = "complex"
    return apply_rotary_emb


def _cos_sin(x: Tensor, position_ids: Tensor, inv_freq: Tensor, scaling: float, dtype: torch.dtype,
             mrope_section=None, mrope_interleaved: bool = False, layout: str = "halves"):
    """Hugging Face's ``(cos, sin)``, ``(*position_ids.shape, rotary_dim)`` in
    ``dtype`` (``position_ids.shape[1:]`` for positions with axes; ``rotary_dim
    / 2`` wide for ``layout="once"``), made by posemb's kernel and marked as
    posemb's."""
    device = x.device
    inv_freq, positions = inv_freq.to(device), position_ids.to(device)
    half = inv_freq.numel()
    if mrope_section is None:
        shape = positions.shape
        rows = positions.reshape(-1, shape[-1] if len(shape) else 1)
    else:  # (axes, batch, seq), or (axes, seq) shared by the batch
        shape, rows = positions.shape[1:], positions if positions.dim() == 3 else positions.unsqueeze(1)
    # One row of (1..1, 0..0) turned by each position: the first half of
    # the result is cos * scaling, the second sin * scaling.
    unit = (torch.arange(2 * half, device=device) < half).to(torch.float32)
    table = ops.rotary(unit.expand(rows.shape[-2], rows.shape[-1], 1, 2 * half), None, inv_freq, rows,
                       attention_scaling=scaling, seq_dim=1, mrope_section=mrope_section,
                       mrope_interleaved=mrope_interleaved)
    table = table.to(dtype).reshape(*shape, 2 * half)
    c, s = table[..., :half], table[..., half:]
    if layout == "halves":
        cos, sin = torch.cat((c, c), dim=-1), torch.cat((s, s), dim=-1)
    elif layout == "pairs":
        cos, sin = c.repeat_interleave(2, dim=-1), s.repeat_interleave(2, dim=-1)
    else:
        cos, sin = c, s
    made = _Made(positions, inv_freq, scaling, mrope_section, mrope_interleaved, layout)
    made.cos_version, made.sin_version = _version(cos), _version(sin)
    setattr(cos, _MADE, made)
    setattr(sin, _MADE, made)
    return cos, sin


class HFLayeredRotaryEmbedding(_Live, nn.Module):
    """Stands in for Gemma 3's, Gemma 4's and Olmo 3's rotary modules (one frequency
    plan per layer type, e.g. local ``sliding_attention`` and global
    ``full_attention`` with different ``rope_theta`` and scaling; with
    ``per_layer_config``, Gemma 4's, each layer type's head_dim from
    ``config.per_layer_config``) and keeps their contract:
    ``forward(x, position_ids, layer_type)`` returns that layer type's
    ``(cos, sin)`` as :class:`HFRotaryEmbedding` does (fp32 with
    ``fp32_cos_sin``: Olmo 3's). Buffers have Hugging
    Face's names (``{layer_type}_inv_freq``, ``{layer_type}_original_inv_freq``),
    non-persistent, fp32 and rebuilt after every move or cast."""

    def __init__(self, config, device=None, *, per_layer_config: bool = False, fp32_cos_sin: bool = False) -> None:
        super().__init__()
        _LIVE.add(self)
        self.config = config
        self.per_layer_config = per_layer_config
        self.fp32_cos_sin = fp32_cos_sin  # Olmo 3's, as Olmo's
        self.max_position_embeddings = getattr(config, "max_position_embeddings", None)
        self.max_seq_len_cached = self.original_max_seq_len = self.max_position_embeddings
        self.layer_types = sorted(set(config.layer_types))
        self.rope_type, self.rope_parameters, self.head_dims = {}, {}, {}
        for layer_type in self.layer_types:
            params = config.rope_parameters[layer_type]
            if params is None:
                continue
            self.rope_parameters[layer_type] = dict(params)
            self.head_dims[layer_type] = rope.head_dim_of(self._config_of(layer_type))
            self.rope_type[layer_type] = params.get("rope_type", "default")
            plan = self._plan(layer_type)
            inv_freq = plan.inv_freq.to(torch.empty(0).device)
            self.register_buffer(f"{layer_type}_inv_freq", inv_freq, persistent=False)
            self.register_buffer(f"{layer_type}_original_inv_freq", inv_freq.clone(), persistent=False)
            if self.rope_type[layer_type] == "longrope":  # fp32 on the host, as RotaryEmbedding.long_inv_freq
                setattr(self, f"{layer_type}_long_inv_freq", rope.long_inv_freq(
                    self.rope_parameters[layer_type], self.head_dims[layer_type], self.max_position_embeddings))
            setattr(self, f"{layer_type}_attention_scaling", plan.attention_scaling)
        if device is not None:
            self.to(device)

    def _config_of(self, layer_type: str):
        """The config of a layer type (Gemma 4 resolves one per type)."""
        return self.config.per_layer_config[layer_type] if self.per_layer_config else self.config

    def _plan(self, layer_type: str, seq_len=None):
        return rope.frequency_plan(self.rope_parameters[layer_type], self.head_dims[layer_type],
                                   max_position_embeddings=self.max_position_embeddings, seq_len=seq_len)

    def reset_parameters(self) -> None:
        """Rebuilds every layer type's buffers in fp32, where they live."""
        for layer_type in self.rope_type:
            device = getattr(self, f"{layer_type}_inv_freq").device
            if device.type == "meta":
                inv_freq = torch.empty(getattr(self, f"{layer_type}_inv_freq").shape, device=device)
            else:
                inv_freq = self._plan(layer_type).inv_freq.to(device)
            setattr(self, f"{layer_type}_inv_freq", inv_freq)
            setattr(self, f"{layer_type}_original_inv_freq", inv_freq.clone())

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.reset_parameters()
        return self

    def forward(self, x: Tensor, position_ids: Tensor, layer_type: str):
        inv_freq = getattr(self, f"{layer_type}_inv_freq")
        if self.rope_type[layer_type] in rope.LENGTH_DEPENDENT:  # on the device, as HFRotaryEmbedding
            last = position_ids.max() if position_ids.numel() else position_ids.new_zeros(())
            inv_freq = rope.inv_freq_for_length(self.rope_parameters[layer_type], self.head_dims[layer_type],
                                                self.max_position_embeddings, last.to(torch.int64) + 1, inv_freq,
                                                getattr(self, f"{layer_type}_long_inv_freq", None))
        return _cos_sin(x, position_ids, inv_freq, getattr(self, f"{layer_type}_attention_scaling"),
                        torch.float32 if self.fp32_cos_sin else x.dtype)

    def extra_repr(self) -> str:
        return ", ".join(f"{lt}: rope_type={t!r}, rotary_dim={2 * getattr(self, lt + '_inv_freq').numel()}"
                         for lt, t in self.rope_type.items())


class HFGPTJRotaryEmbedding(_Live, nn.Module):
    """Stands in for GPT-J's rotary module and keeps its contract:
    ``forward(x, position_ids)`` returns ``(sin, cos)``, each ``(batch, seq,
    rotary_dim // 2)`` in ``x.dtype``, with no table: posemb's kernel with
    exact angles of GPT-J's frequencies (``10000^(-2i/rotary_dim)``, fp32).
    The wrapped ``apply_rotary_pos_emb(tensor, sin, cos)`` runs posemb's
    interleaved rotary on the tensor for the pair it made. ``inv_freq`` is
    a non-persistent fp32 buffer rebuilt after every move or cast (GPT-J's
    ``embed_positions`` table is non-persistent too: checkpoints are
    unchanged)."""

    def __init__(self, rotary_dim: int, max_positions: int, device=None) -> None:
        super().__init__()
        _LIVE.add(self)
        self.max_positions = max_positions  # GPT-J's names
        self.pos_embd_dim = rotary_dim
        self.register_buffer("inv_freq", self._plan().inv_freq.to(torch.empty(0).device), persistent=False)
        if device is not None:
            self.to(device)

    def _plan(self):
        return rope.frequency_plan({"rope_type": "default", "rope_theta": 10000.0}, self.pos_embd_dim)

    def reset_parameters(self) -> None:
        device = self.inv_freq.device
        self.inv_freq = (torch.empty(self.inv_freq.shape, device=device) if device.type == "meta"
                         else self._plan().inv_freq.to(device))

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.reset_parameters()
        return self

    def forward(self, x: Tensor, position_ids: Tensor):
        cos, sin = _cos_sin(x, position_ids, self.inv_freq, 1.0, x.dtype, layout="once")
        return sin, cos

    def extra_repr(self) -> str:
        return f"rotary_dim={self.pos_embd_dim}, interleaved=True"


def _gptj_dispatch(original):
    """GPT-J's apply_rotary_pos_emb(tensor, sin, cos): posemb's interleaved
    rotary for the (sin, cos) posemb made, the model's own code otherwise."""

    def apply_rotary_pos_emb(tensor, sin, cos):
        made = getattr(cos, _MADE, None)
        if made is not None and getattr(sin, _MADE, None) is made and isinstance(tensor, Tensor) \
                and tensor.dim() == 4 and sin.dim() == 3 and sin.shape == cos.shape \
                and not (sin.requires_grad or cos.requires_grad) \
                and tensor.shape[-1] == 2 * sin.shape[-1] == 2 * made.inv_freq.numel() \
                and tensor.shape[1] == sin.shape[1]:
            if torch.compiler.is_compiling() or made.cos_version is None \
                    or (cos._version == made.cos_version and sin._version == made.sin_version):
                dtype = torch.promote_types(tensor.dtype, cos.dtype)
                return ops.rotary(tensor.to(dtype), None, made.inv_freq, made.positions, interleaved=True, seq_dim=1)
        return original(tensor, sin, cos)

    apply_rotary_pos_emb.posemb_original = original
    apply_rotary_pos_emb.posemb_kind = "gptj"
    return apply_rotary_pos_emb


class HFSinusoidalPositionalEmbedding(nn.Module):
    """Stands in for a fairseq-style sinusoidal position module of Hugging
    Face (M2M-100's, Speech2Text's, XGLM's, and their copies) and keeps its
    contract: ``forward`` takes the module's arguments and returns the
    encodings ``(batch, seq, embedding_dim)`` (the model adds them), made by
    posemb's kernel (:func:`posemb.sinusoidal_add`, ``layout="half"``,
    ``freqs="fairseq"``, zero at ``padding_idx``) with exact angles, instead
    of a table: nothing to grow, any position. Positions are the module's own
    (padding-aware from the ids, counting on from ``cache_length``; XGLM's
    ``position_ids + 2``). The result has the dtype and device the table
    would (a 0-element non-persistent buffer follows casts and moves)."""

    def __init__(self, num_positions: int, embedding_dim: int, padding_idx: int, flavor: str = "m2m",
                 dtype=None, device=None) -> None:
        super().__init__()
        if flavor not in ("m2m", "s2t", "xglm"):
            raise ValueError(f"HFSinusoidalPositionalEmbedding: flavor must be 'm2m', 's2t' or 'xglm', got {flavor!r}")
        self.offset = 2  # Hugging Face's names
        self.num_positions, self.embedding_dim, self.padding_idx = num_positions, embedding_dim, padding_idx
        self.flavor = flavor
        self.register_buffer("like", torch.empty(0, dtype=dtype or torch.get_default_dtype(), device=device),
                             persistent=False)

    @classmethod
    def from_hf(cls, original: nn.Module, flavor: str) -> "HFSinusoidalPositionalEmbedding":
        table = original.weights
        return cls(original.num_positions, original.embedding_dim, original.padding_idx, flavor,
                   dtype=table.dtype, device=table.device)

    def _positions_from_ids(self, input_ids: Tensor, cache_length) -> Tensor:
        mask = input_ids.ne(self.padding_idx).int()
        return ((torch.cumsum(mask, dim=1).type_as(mask) + cache_length) * mask).long() + self.padding_idx

    @torch.no_grad()
    def forward(self, *args, **kwargs) -> Tensor:
        if self.flavor == "xglm":
            position_ids, cache_length = _bind(args, kwargs, ("position_ids", None), ("cache_length", 0))
            positions = position_ids + self.offset
        elif self.flavor == "s2t":
            input_ids, cache_length = _bind(args, kwargs, ("input_ids", None), ("cache_length", 0))
            positions = self._positions_from_ids(input_ids, cache_length).to(input_ids.device)
        else:
            input_ids, inputs_embeds, cache_length = _bind(args, kwargs, ("input_ids", None),
                                                           ("inputs_embeds", None), ("cache_length", 0))
            if input_ids is not None:
                positions = self._positions_from_ids(input_ids, cache_length).to(input_ids.device)
            else:
                shape = inputs_embeds.shape[:-1]
                start = self.padding_idx + 1
                positions = torch.arange(start, start + shape[1], dtype=torch.long, device=inputs_embeds.device)
                positions = positions.unsqueeze(0).expand(shape).contiguous() + cache_length
        like = self.like
        zeros = torch.zeros(*positions.shape, self.embedding_dim, dtype=like.dtype, device=like.device)
        return ops.sinusoidal_add(zeros, positions.to(like.device), padding_idx=self.padding_idx, layout="half",
                                  freqs="fairseq")

    def extra_repr(self) -> str:
        return f"{self.embedding_dim}, padding_idx={self.padding_idx}, flavor={self.flavor!r}"


def _bind(args, kwargs, *params):
    """The values of ``params`` ((name, default), in order) from a call."""
    if len(args) > len(params):
        raise TypeError(f"forward() takes {len(params)} arguments, got {len(args)}")
    values = dict(params)
    values.update(zip((name for name, _ in params), args))
    for name, value in kwargs.items():
        if name not in values:
            raise TypeError(f"forward() got an unexpected argument {name!r}")
        values[name] = value
    return tuple(values[name] for name, _ in params)


class DistilBertEmbeddings(BertEmbeddings):
    """DistilBERT's learned ``Embeddings`` block (``dropout(LayerNorm(word[ids]
    + position[pos]))``, no token types) in posemb's fused op, sharing the
    module's parameters; ``forward`` takes DistilBERT's arguments."""

    @classmethod
    def from_hf(cls, module: nn.Module, padding_aware_positions: bool = False) -> "DistilBertEmbeddings":
        return cls._sharing(module, ("word_embeddings", "position_embeddings", "LayerNorm", "dropout"), False)

    def reset_parameters(self) -> None:
        for module in (self.word_embeddings, self.position_embeddings, self.LayerNorm):
            module.reset_parameters()

    def forward(self, input_ids: Optional[Tensor] = None, inputs_embeds: Optional[Tensor] = None,
                position_ids: Optional[Tensor] = None) -> Tensor:
        if input_ids is None:
            seq = inputs_embeds.shape[1]
            if position_ids is None:
                position_ids = torch.arange(seq, device=inputs_embeds.device).unsqueeze(0)
            return self.dropout(self.LayerNorm(inputs_embeds + self.position_embeddings(position_ids)))
        word = self.word_embeddings.weight
        # One all-zero type row: adding 0 changes nothing, bitwise.
        no_types = torch.zeros(1, word.shape[1], dtype=word.dtype, device=word.device)
        return ops.bert_embeddings(
            input_ids, word, self.position_embeddings.weight, no_types, self.LayerNorm.weight, self.LayerNorm.bias,
            position_ids=position_ids, eps=self.LayerNorm.eps, dropout_p=self.dropout.p, training=self.training,
            word_padding_idx=self.word_embeddings.padding_idx,
        )


# The name patch() used before: the same class.
HFRotary = HFRotaryEmbedding


def _extra_parameters(original, skip: int = 4):
    """The parameters of ``apply_rotary_pos_emb`` after (q, k, cos, sin)
    (``skip`` of them), with their defaults (older transformers had
    ``position_ids`` there)."""
    try:
        params = list(inspect.signature(original).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    return [(p.name, p.default) for p in params]


def _fused_seq_dim(extra, args, kwargs, cos_rank: int = 3):
    """Where q and k hold the sequence when the call can be fused: 2 for
    ``unsqueeze_dim=1`` ((batch, heads, seq, head_dim), Llama's), 1 for
    ``unsqueeze_dim=2``, and 2 for a (seq, rotary_dim) cos shared by the
    batch with ``unsqueeze_dim=0`` (Pixtral's); None for anything else
    (other arguments given)."""
    unsqueeze_dim = 1
    if args or kwargs:
        if extra is None or len(args) > len(extra):
            return None
        values = {name: default for name, default in extra}
        values.update(zip((name for name, _ in extra), args))
        for name, value in kwargs.items():
            if name not in values:
                return None
            values[name] = value
        unsqueeze_dim = values.pop("unsqueeze_dim", 1)
        if any(value is not None for value in values.values()):
            return None
    if not isinstance(unsqueeze_dim, int):
        return None
    if cos_rank == 2:
        return {0: 2, -3: 2}.get(unsqueeze_dim)
    return {1: 2, -3: 2, 2: 1, -2: 1}.get(unsqueeze_dim)


def _fusable(made: _Made, q, k, cos, sin, seq_dim: int, partial: bool, takes: str = "halves") -> bool:
    """posemb's kernel computes what the eager code would with these cos and
    sin (up to their rounding to x.dtype), laid out as ``takes``."""
    if made.layout != takes:
        return False
    if not torch.compiler.is_compiling():
        if made.cos_version is not None and (cos._version != made.cos_version or sin._version != made.sin_version):
            return False  # written in place since posemb made them
    if cos.requires_grad or sin.requires_grad or cos.dim() not in (2, 3) or not isinstance(q, Tensor) \
            or not isinstance(k, Tensor) or q.dim() != 4 or k.dim() != 4:
        return False
    if q.stride(-1) != 1 or k.stride(-1) != 1:  # the kernel reads head_dim contiguous
        return False
    width = 2 * made.inv_freq.numel()
    if cos.shape[-1] != (width // 2 if takes == "once" else width) or cos.shape != sin.shape or not q.shape[seq_dim] == k.shape[seq_dim] == cos.shape[-2]:
        return False
    if partial:  # the first `width` channels turned, the rest passed through
        return q.shape[-1] >= width and k.shape[-1] >= width
    return q.shape[-1] == k.shape[-1] == width


def _single_dispatch(original):
    """Gemma 4's apply_rotary_pos_emb(x, cos, sin, unsqueeze_dim=1): posemb's
    rotary on the one tensor for cos and sin posemb made, the model's own
    code otherwise."""
    extra = _extra_parameters(original, skip=3)

    def apply_rotary_pos_emb(x, cos, sin, *args, **kwargs):
        made = getattr(cos, _MADE, None)
        if made is not None and getattr(sin, _MADE, None) is made:
            seq_dim = _fused_seq_dim(extra, args, kwargs)
            if seq_dim is not None and _fusable(made, x, x, cos, sin, seq_dim, False):
                dtype = torch.promote_types(x.dtype, cos.dtype)  # the eager code's (x * cos promotes)
                return ops.rotary(x.to(dtype), None, made.inv_freq, made.positions,
                                  attention_scaling=made.attention_scaling, seq_dim=seq_dim)
        return original(x, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb.posemb_original = original
    apply_rotary_pos_emb.posemb_kind = "single"
    return apply_rotary_pos_emb


def _rotary_dispatch(original, kind: str = "llama", layout: Optional[str] = "halves"):
    """apply_rotary_pos_emb that runs posemb's fused rotary for cos and sin
    that posemb made, and the model's own code otherwise (models left
    unpatched are unaffected). ``kind`` is the form of the original
    (``_APPLY_FORMS``): ``llama``, ``cast`` (results in q's and k's dtypes),
    ``fp32`` (computed in fp32, results in q's dtype), ``partial`` (channels
    past cos's width passed through), ``single`` (one tensor: Gemma 4),
    ``complex`` (Llama 4's freqs_cis) or ``gptj``; ``layout`` how it pairs
    channels (``_LAYOUTS``)."""
    if kind == "gptj":
        return _gptj_dispatch(original)
    if kind == "complex":
        return _complex_dispatch(original)
    if kind == "single":
        return _single_dispatch(original)
    extra = _extra_parameters(original)
    partial, takes, interleaved = kind == "partial", *_LAYOUTS[layout]

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        made = getattr(cos, _MADE, None)
        if made is not None and getattr(sin, _MADE, None) is made:
            seq_dim = _fused_seq_dim(extra, args, kwargs, cos.dim() if isinstance(cos, Tensor) else 3)
            if seq_dim is not None and _fusable(made, q, k, cos, sin, seq_dim, partial, takes):
                # The eager code's result dtype (q * cos promotes; Cohere's multiplies q.float(), k.float()).
                inputs = (torch.float32, torch.float32) if kind == "fp32" else (q.dtype, k.dtype)
                dtype = torch.promote_types(torch.promote_types(*inputs), cos.dtype)
                q_out, k_out = ops.rotary(q.to(dtype), k.to(dtype), made.inv_freq, made.positions,
                                          attention_scaling=made.attention_scaling, interleaved=interleaved,
                                          seq_dim=seq_dim, mrope_section=made.mrope_section,
                                          mrope_interleaved=made.mrope_interleaved)
                if kind == "cast":
                    q_out, k_out = q_out.to(q.dtype), k_out.to(k.dtype)
                elif kind == "fp32":
                    q_out, k_out = q_out.to(q.dtype), k_out.to(q.dtype)
                return q_out, k_out
        return original(q, k, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb.posemb_original = original
    apply_rotary_pos_emb.posemb_kind = kind
    return apply_rotary_pos_emb


def _absolute_replacement(module: nn.Module, kind: str):
    """posemb's block for a BERT-like embeddings block, or ``(None, reason)``."""
    children = {name for name, _ in module.named_children()}
    want = _DISTILBERT_CHILDREN if kind == "Embeddings" else _BERT_CHILDREN
    if children != want or not isinstance(module.LayerNorm, nn.LayerNorm) \
            or not all(isinstance(getattr(module, n), nn.Embedding) for n in want if n.endswith("embeddings")):
        return None, f"its children are not {sorted(want)}"
    if kind == "Embeddings":
        return DistilBertEmbeddings.from_hf(module), None
    return BertEmbeddings.from_hf(module, padding_aware_positions=kind in _PADDING_AWARE), None


def _is_distilbert(module: nn.Module) -> bool:
    return type(module).__name__ == "Embeddings" and type(module).__module__.endswith("modeling_distilbert")


def _builder(module: nn.Module):
    """How patch() builds posemb's stand-in for `module`: a call giving
    ``(replacement, apply form)`` for a rotary module, ``(replacement, None)``
    for the others, or ``(None, reason)``; None when posemb does not know
    this kind of block."""
    kind = type(module).__name__
    if kind in _ABSOLUTE | _PADDING_AWARE or _is_distilbert(module):
        return lambda: _absolute_replacement(module, kind)
    if kind.endswith("SinusoidalPositionalEmbedding") and type(module).__module__.startswith("transformers."):
        return lambda: _sinusoidal_replacement(module)
    if kind.endswith("RotaryEmbedding"):
        return lambda: _rotary_replacement(module)
    return None


def patch(model: nn.Module, *, strict: bool = False) -> Dict[str, nn.Module]:
    """Replaces the model's embedding blocks with posemb's, in place.

    Returns ``{qualified name: the module replaced}``. When it recognises
    nothing, it warns (or, with ``strict=True``, raises :class:`PatchError`)
    and changes nothing; a rotary or embeddings block it sees but cannot
    reproduce exactly is left alone, with a warning that names it and says
    why. It is transactional: every replacement is built before anything is
    changed, so a failure leaves the model and the process as they were.
    posemb's own modules are never wrapped again, so calling it twice
    replaces nothing the second time.
    """
    planned: Dict[str, nn.Module] = {}
    skipped: Dict[str, str] = {}
    wrap_modules: Dict[str, tuple] = {}
    for name, module in model.named_modules():
        if _is_posemb(module):
            # Already patched: its model's apply function is wrapped again if
            # restore_functions() (or an unpatch elsewhere) put it back.
            if isinstance(module, _Live) and module._posemb_apply is not None:
                wrap_modules.setdefault(*module._posemb_apply)
            continue
        if any(name.startswith(done + ".") for done in planned):
            continue
        build = _builder(module)
        if build is None:
            continue
        kind = type(module).__name__
        if name == "":
            skipped[ITSELF[0]] = f"{kind}: {ITSELF[1]}"
            continue
        new, reason = build()
        if new is None:
            skipped[name] = f"{kind}: {reason}"
            continue
        if isinstance(new, _Live):  # a rotary stand-in: `reason` is its model's apply form, wrapped too
            new._posemb_apply = (type(module).__module__, reason)
            wrap_modules[type(module).__module__] = reason
        planned[name] = new
    nothing = (f"{type(model).__name__} (posemb knows {sorted(_ABSOLUTE | _PADDING_AWARE)}, DistilBERT's "
               f"Embeddings, M2M-100-, Speech2Text- and XGLM-style sinusoidal position modules and the rotary "
               f"modules written like {', '.join(TESTED_ROTARY)}; already patched blocks are skipped)")
    if not report("posemb.hf.patch", planned, skipped, nothing, strict):
        for module_name, apply in wrap_modules.items():  # already patched modules only
            _wrap_apply(module_name, apply)
        return {}
    # Everything is built: now change the model, and the modules' code.
    replaced: Dict[str, nn.Module] = {}
    for name, new in planned.items():
        replaced[name] = model.get_submodule(name)
        _set_submodule(model, name, new)
    for module_name, apply in wrap_modules.items():
        _wrap_apply(module_name, apply)
    if any(isinstance(new, _OWN_INIT) for new in planned.values()):
        _rebuild_in_init_weights(model)
    return replaced


# posemb modules whose buffers transformers' _init_weights does not know (it
# rebuilds Gemma 3's and GPT-J's by isinstance of its own classes).
_OWN_INIT = (HFLayeredRotaryEmbedding, HFGPTJRotaryEmbedding)


class _RebuildPosembBuffers:
    """A Hugging Face model's ``_init_weights`` (set on the instance) that
    also rebuilds posemb's buffers its class does not know. A plain object
    holding the model, so the model still pickles and deep-copies."""

    def __init__(self, owner: nn.Module) -> None:
        self.owner = owner

    def __call__(self, module: nn.Module) -> None:
        type(self.owner)._init_weights(self.owner, module)
        if isinstance(module, _OWN_INIT):
            module.reset_parameters()


def _rebuild_in_init_weights(model: nn.Module) -> None:
    """Makes each Hugging Face model in ``model`` (the instance, not its
    class) rebuild posemb's buffers when transformers initialises weights
    (``from_pretrained`` after a meta build materialises non-persistent
    buffers uninitialised, then runs ``_init_weights`` on the modules)."""
    for owner in model.modules():
        if "_init_weights" in owner.__dict__ or not hasattr(owner, "_initialize_weights") \
                or not callable(getattr(type(owner), "_init_weights", None)):
            continue
        owner._init_weights = _RebuildPosembBuffers(owner)


def _forget_init_weights(model: nn.Module) -> None:
    for owner in model.modules():
        if isinstance(owner.__dict__.get("_init_weights"), _RebuildPosembBuffers):
            del owner.__dict__["_init_weights"]


# Module-level functions patch() replaced, by module, with their originals.
_WRAPPED: Dict[str, object] = {}


def _wrap_apply(module_name: str, apply) -> None:
    """Wraps the modeling module's apply function (``_rotary_dispatch`` of
    its ``(kind, layout)``), unless it is wrapped already."""
    code = sys.modules.get(module_name)
    fn = getattr(code, _apply_name(apply[0]), None)
    if fn is not None and not hasattr(fn, "posemb_original"):
        setattr(code, _apply_name(apply[0]), _rotary_dispatch(fn, *apply))
        _WRAPPED[module_name] = fn


def unpatch(model: nn.Module, replaced: Dict[str, nn.Module]) -> None:
    """Puts back the modules that :func:`patch` returned. Once no posemb
    rotary module is alive anywhere, the modules' ``apply_rotary_pos_emb``
    are restored too (until then the wrapper forwards every call that is not
    posemb's to the original, unchanged)."""
    for name, module in replaced.items():
        _set_submodule(model, name, module)
    if not any(isinstance(m, _OWN_INIT) for m in model.modules()):
        _forget_init_weights(model)
    gc.collect()  # the replaced posemb modules, unless something else holds them
    if not _LIVE:
        restore_functions()


def restore_functions() -> None:
    """Restores every module-level function patch() wrapped. Models still
    patched keep working: their rotary modules return real (cos, sin), which
    the model's own code then applies (without posemb's fused kernel, until
    they are patched again)."""
    for module_name, original in list(_WRAPPED.items()):
        code = sys.modules.get(module_name)
        if code is not None and hasattr(getattr(code, original.__name__, None), "posemb_original"):
            setattr(code, original.__name__, original)
        del _WRAPPED[module_name]
