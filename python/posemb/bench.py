"""Benchmarks: ``python -m posemb.bench [--device cpu|cuda] [--quick] [--compile all|first|none] [--dry-run] [--json P] [--png P]``.

Each op is timed, in the same run, against the code a user would otherwise
write (eager PyTorch, ``torch.compile`` of it, Hugging Face's module) and
against a roofline measured in that run: a ``clone()`` (its time scaled to the
bytes the op must move) for out-of-place ops, an in-place ``mul_(1.0)`` for
in-place ones (README: Performance). Ratios are what to read; the machines are
shared and noisy. Every case is checked for correctness once
before it is timed.

Adding an op: write a function that yields :class:`Case` objects and decorate
it with ``@register("op_name")``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

import posemb


@dataclass
class Variant:
    """One way of computing a case. ``kind`` is "roofline", "posemb" or "peer";
    ``baseline`` names the roofline variant its "x roofline" ratio uses;
    ``before`` runs (untimed) before each call, e.g. to restore an in-place buffer;
    ``time_scale`` multiplies the measured time (a clone scaled to the op's bytes)."""
    name: str
    kind: str
    fn: Callable[[], object]
    baseline: str
    before: Optional[Callable[[], object]] = None
    time_scale: float = 1.0


@dataclass
class Case:
    op: str
    label: str
    shape: tuple
    dtype: torch.dtype
    bytes_moved: int  # what the op must read and write, at the least
    variants: List[Variant]
    notes: List[str] = field(default_factory=list)


@dataclass
class Settings:
    device: torch.device
    quick: bool  # fewer shapes
    compile: bool  # also time torch.compile peers (set per case by --compile)


CaseBuilder = Callable[[Settings], Case]  # builds (and checks) one case when called
CaseFactory = Callable[[Settings], Iterator[CaseBuilder]]
OPS: Dict[str, CaseFactory] = {}


def later(build: Callable[..., Case], *args) -> CaseBuilder:
    """A case built only when the run reaches it, so that one case failing to
    build (a peer missing on this machine, an API that changed) is recorded
    and the run goes on."""
    return lambda settings: build(settings, *args)


def register(op: str) -> Callable[[CaseFactory], CaseFactory]:
    def wrap(factory: CaseFactory) -> CaseFactory:
        OPS[op] = factory
        return factory
    return wrap


def tolerance(dtype: torch.dtype) -> dict:
    """Loose on purpose: the peer rounds twice in low precision (x*s, then +pe)
    and forms fp32 angles that drift ~1e-7 per position; this only catches a wrong kernel."""
    return dict(atol=5e-2, rtol=2e-2) if dtype in (torch.bfloat16, torch.float16) else dict(atol=2e-3, rtol=1e-5)


def assert_matches(what: str, actual: torch.Tensor, expected: torch.Tensor, tol: Optional[dict] = None) -> None:
    tol = tol or tolerance(expected.dtype)
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}: {m}")


def compile_or_note(fn: Callable, args: tuple, notes: List[str],
                    grad: Optional[torch.Tensor] = None) -> Optional[Callable]:
    """torch.compile(fn), compiled now on ``args`` (and backpropagated once with
    ``grad``, if given); None (and a note) if that fails."""
    torch._dynamo.reset()  # a fresh, shape-specialised compile per case, no recompile limit
    try:
        compiled = torch.compile(fn)
        out = compiled(*args)
        if grad is not None:
            out.backward(grad)
        return compiled
    except Exception as e:  # no compiler, unsupported backend, ...
        notes.append(f"torch.compile skipped: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
        return None


def step(fn: Callable[[], torch.Tensor], grad: Optional[torch.Tensor]) -> Callable[[], object]:
    """What a variant times: ``fn()`` under no_grad (inference, ``grad`` None),
    or ``fn().backward(grad)`` (training)."""
    if grad is None:
        return torch.no_grad()(fn)
    return lambda: fn().backward(grad)


def clear_grads(leaves: Sequence[torch.Tensor]) -> None:
    for leaf in leaves:
        leaf.grad = None


def grads_after(fn: Callable[[], torch.Tensor], grad: torch.Tensor,
                leaves: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """The gradients ``fn().backward(grad)`` leaves on ``leaves``."""
    clear_grads(leaves)
    fn().backward(grad)
    return [leaf.grad for leaf in leaves]


def clone_roofline(like: torch.Tensor, bytes_moved: int) -> Variant:
    """A clone of ``like``, its time scaled by ``bytes_moved`` / the clone's bytes:
    the time to move ``bytes_moved`` at the copy bandwidth measured in this run."""
    scale = bytes_moved / (2 * like.numel() * like.element_size())
    name = "clone (roofline)" if scale == 1 else f"clone x{scale:.2f} (roofline)"
    return Variant(name, "roofline", lambda: like.clone(), name, time_scale=scale)


def add_optional_peer(variants: List[Variant], notes: List[str], name: str, build: Callable[[], Callable],
                      wrap: Callable[[Callable], Callable], baseline: str, before=None) -> None:
    """Adds the peer ``build()`` returns, or a note saying why there is none
    (not installed, no such API in this version, a failed check)."""
    try:
        fn = build()
    except Exception as e:  # ImportError, AttributeError, AssertionError, ...
        notes.append(f"{name} skipped: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
        return
    variants.append(Variant(name, "peer", wrap(fn), baseline, before))


# --------------------------------------------------------------------------- sinusoidal_add

def tutorial_encoding(positions: torch.Tensor, d: int) -> torch.Tensor:
    """The PyTorch tutorial's fp32 sinusoidal encoding, for any integer positions."""
    div_term = torch.exp(torch.arange(0, d, 2, device=positions.device) * (-math.log(10000.0) / d))
    angle = positions.unsqueeze(-1) * div_term
    pe = torch.zeros(*positions.shape, d, device=positions.device)
    pe[..., 0::2] = torch.sin(angle)
    pe[..., 1::2] = torch.cos(angle)
    return pe


def eager_sinusoidal_add(x, scale: float, seq_dim: int, offsets=None, table=None):
    """``x * scale + PE`` as users write it: rows of a cached fp32 table, or
    (``table=None``) the encoding of these positions computed on every call."""
    T = x.shape[seq_dim]
    positions = torch.arange(T, device=x.device)
    if offsets is not None:
        positions = offsets[:, None] + positions
    if table is None:
        pe = tutorial_encoding(positions, x.shape[-1])
    elif offsets is None:
        pe = table[:T]
    else:
        pe = table[positions]
    if seq_dim == 0:
        pe = pe.unsqueeze(1)
    return x * scale + pe.to(x.dtype)


SINUSOIDAL_SHAPES = [  # label, shape, seq_dim, per-sequence offsets, in --quick
    ("tiny (per-call overhead)", (3, 10, 384), 1, False, True),
    ("batch-first", (8, 512, 768), 1, False, True),
    ("batch-first long", (8, 2048, 1024), 1, False, False),
    ("decode, offsets", (64, 1, 1024), 1, True, True),
    ("seq-first", (512, 8, 768), 0, False, True),
]
TABLE_LEN = 8192  # cached table rows; covers every position used below


@register("sinusoidal_add")
def sinusoidal_add_cases(settings: Settings) -> Iterator[Case]:
    for label, shape, seq_dim, with_offsets, in_quick in SINUSOIDAL_SHAPES:
        if in_quick or not settings.quick:
            for dtype in (torch.float32, torch.bfloat16):
                yield later(sinusoidal_add_case, label, shape, seq_dim, with_offsets, dtype)


def sinusoidal_add_case(settings: Settings, label, shape, seq_dim, with_offsets, dtype) -> Case:
    device = settings.device
    d = shape[-1]
    s = math.sqrt(d)
    x = (torch.randn(shape, device=device) / s).to(dtype)  # x * s ~ N(0, 1)
    offsets = torch.randint(0, TABLE_LEN // 2, (shape[0],), device=device) if with_offsets else None
    table = tutorial_encoding(torch.arange(TABLE_LEN, device=device), d)
    kw = dict(offset=offsets if with_offsets else 0, seq_dim=seq_dim, scale=s)

    expected = eager_sinusoidal_add(x, s, seq_dim, offsets, table)
    what = f"sinusoidal_add {label} {tuple(shape)} {dtype}"
    assert_matches(f"{what}: posemb vs eager", posemb.sinusoidal_add(x, **kw), expected)
    assert_matches(f"{what}: posemb in place vs eager", posemb.sinusoidal_add_(x.clone(), **kw), expected)

    buf = x.clone()  # in-place target, restored (untimed) before each call so values stay finite
    restore = lambda: buf.copy_(x)  # noqa: E731
    clone, mul_ = "clone (roofline)", "mul_ (roofline, in place)"
    notes: List[str] = []
    compiled = compile_or_note(eager_sinusoidal_add, (x, s, seq_dim, offsets), notes) if settings.compile else None
    variants = [
        Variant(clone, "roofline", lambda: x.clone(), clone),
        Variant(mul_, "roofline", lambda: buf.mul_(1.0), mul_, restore),
        Variant("posemb", "posemb", lambda: posemb.sinusoidal_add(x, **kw), clone),
        Variant("posemb in place", "posemb", lambda: posemb.sinusoidal_add_(buf, **kw), mul_, restore),
        Variant("eager cached table", "peer", lambda: eager_sinusoidal_add(x, s, seq_dim, offsets, table), clone),
        Variant("eager rebuilt table", "peer", lambda: eager_sinusoidal_add(x, s, seq_dim, offsets), clone),
    ]
    if compiled is not None:
        variants.append(Variant("compile(rebuilt)", "peer", lambda: compiled(x, s, seq_dim, offsets), clone))
    return Case("sinusoidal_add", label, shape, dtype, 2 * x.numel() * x.element_size(), variants, notes)


# --------------------------------------------------------------------------- learned_add

def eager_learned_add(x: torch.Tensor, pos_emb: nn.Embedding) -> torch.Tensor:
    """``x + pos_emb(position_ids)`` as users write it (GPT-2, BERT)."""
    position_ids = torch.arange(x.shape[-2], device=x.device)
    return x + pos_emb(position_ids)


LEARNED_SHAPES = [  # label, (batch, seq, dim), table rows, in --quick
    ("BERT-like", (8, 512, 768), 512, True),
    ("GPT-2-like", (4, 1024, 768), 1024, False),
]


@register("learned_add")
def learned_add_cases(settings: Settings) -> Iterator[Case]:
    for label, shape, num_positions, in_quick in LEARNED_SHAPES:
        if in_quick or not settings.quick:
            for dtype in (torch.float32, torch.bfloat16):
                for backward in (False, True):
                    yield later(learned_add_case, label, shape, num_positions, dtype, backward)


def learned_add_case(settings: Settings, label, shape, num_positions, dtype, backward) -> Case:
    device = settings.device
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=backward)
    pos_emb = nn.Embedding(num_positions, shape[-1], device=device, dtype=dtype).requires_grad_(backward)
    weight = pos_emb.weight
    grad = torch.randn(shape, device=device, dtype=dtype) if backward else None
    fused = lambda: posemb.learned_add(x, weight)  # noqa: E731
    eager = lambda: eager_learned_add(x, pos_emb)  # noqa: E731

    label = f"{label}, {'fwd+bwd' if backward else 'forward'}"
    what = f"learned_add {label} {tuple(shape)} {dtype}"
    with torch.no_grad():
        assert_matches(f"{what}: posemb vs eager", fused(), eager())
    if backward:
        for name, actual, expected in zip(("x", "weight"), grads_after(fused, grad, (x, weight)),
                                          grads_after(eager, grad, (x, weight))):
            assert_matches(f"{what}: posemb vs eager, grad of {name}", actual, expected)

    # Forward: read x and the seq * dim table rows, write y. Backward adds: read
    # grad, write grad_x, write grad_weight (its seq * dim rows, summed over the
    # batch from the grad just read).
    table_rows = shape[-2] * shape[-1]
    bytes_moved = (4 * x.numel() + 2 * table_rows if backward else 2 * x.numel() + table_rows) * x.element_size()
    roofline = clone_roofline(x.detach(), bytes_moved)
    before = (lambda: clear_grads((x, weight))) if backward else None
    notes: List[str] = []
    compiled = None
    if settings.compile:
        with torch.set_grad_enabled(backward):
            compiled = compile_or_note(eager_learned_add, (x, pos_emb), notes, grad)
    variants = [
        roofline,
        Variant("posemb", "posemb", step(fused, grad), roofline.name, before),
        Variant("eager nn.Embedding", "peer", step(eager, grad), roofline.name, before),
    ]
    if compiled is not None:
        variants.append(Variant("compile(eager)", "peer", step(lambda: compiled(x, pos_emb), grad), roofline.name,
                                before))
    return Case("learned_add", label, shape, dtype, bytes_moved, variants, notes)


# --------------------------------------------------------------------------- bert_embeddings

BERT_CONFIGS = [("BERT-base", 768, True), ("MiniLM-like", 384, False)]  # label, hidden size, in --quick
BERT_TOKENS = [((8, 128), True), ((32, 512), False)]  # (batch, seq) of token ids, in --quick
BERT_TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1.3e-6), torch.bfloat16: dict(atol=3e-2, rtol=1.6e-2)}


def hf_bert_embeddings(hidden_size: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Hugging Face's ``BertEmbeddings``, built offline from a config."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings

    config = BertConfig(vocab_size=30522, hidden_size=hidden_size, max_position_embeddings=512,
                        type_vocab_size=2, hidden_dropout_prob=0.1)
    return BertEmbeddings(config).to(device=device, dtype=dtype)


@register("bert_embeddings")
def bert_embeddings_cases(settings: Settings) -> Iterator[Case]:
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("note: transformers is not installed; bert_embeddings skipped")
        return
    for label, hidden_size, config_in_quick in BERT_CONFIGS:
        for tokens_shape, tokens_in_quick in BERT_TOKENS:
            if (config_in_quick and tokens_in_quick) or not settings.quick:
                for dtype in (torch.float32, torch.bfloat16):
                    for training in (False, True):
                        yield later(bert_embeddings_case, label, hidden_size, tokens_shape, dtype, training)


def bert_embeddings_case(settings: Settings, label, hidden_size, tokens_shape, dtype, training) -> Case:
    device = settings.device
    hf = hf_bert_embeddings(hidden_size, device, dtype).eval()
    fused = posemb.nn.BertEmbeddings.from_hf(hf)  # shares hf's parameters
    input_ids = torch.randint(0, hf.word_embeddings.num_embeddings, tokens_shape, device=device)
    shape = (*tokens_shape, hidden_size)
    label = f"{label}, {'training' if training else 'inference'}"
    with torch.no_grad():
        assert_matches(f"bert_embeddings {label} {shape} {dtype}: posemb vs HF (eval)",
                       fused(input_ids=input_ids), hf(input_ids=input_ids), BERT_TOLERANCE[dtype])
    hf.train(training)
    fused.train(training)

    # Inference: read the gathered word, position and type rows (3 * tokens * hidden;
    # the tables' other rows are not read) and write the output. Training adds the
    # backward: read grad and the normalised values (2 * tokens * hidden) and write
    # the three tables' dense gradients (every row, as nn.Embedding's backward does).
    out_like = torch.randn(shape, device=device, dtype=dtype)
    n = out_like.numel()
    elements = 4 * n
    if training:
        elements += 2 * n + sum(t.weight.numel() for t in (hf.word_embeddings, hf.position_embeddings,
                                                            hf.token_type_embeddings))
    bytes_moved = elements * out_like.element_size()
    roofline = clone_roofline(out_like, bytes_moved)
    grad = torch.randn(shape, device=device, dtype=dtype) if training else None
    before = (lambda: hf.zero_grad(set_to_none=True)) if training else None
    notes: List[str] = []
    compiled = None
    if settings.compile:
        with torch.set_grad_enabled(training):
            compiled = compile_or_note(hf, (input_ids,), notes, grad)
    variants = [
        roofline,
        Variant("posemb", "posemb", step(lambda: fused(input_ids=input_ids), grad), roofline.name, before),
        Variant("HF eager", "peer", step(lambda: hf(input_ids=input_ids), grad), roofline.name, before),
    ]
    if compiled is not None:
        variants.append(Variant("compile(HF)", "peer", step(lambda: compiled(input_ids), grad), roofline.name, before))
    return Case("bert_embeddings", label, shape, dtype, bytes_moved, variants, notes)


# --------------------------------------------------------------------------- rotary

# label, (batch, seq, q heads, kv heads, head_dim), decode (per-sequence offsets), in --quick
ROTARY_SHAPES = [
    ("Llama prefill", (1, 512, 32, 8, 128), False, True),
    ("Llama prefill long", (1, 2048, 32, 8, 128), False, False),
    ("Llama decode", (32, 1, 32, 8, 128), True, True),
]
# transformers forms its angles in fp32 (off by ~5e-5 at position 512, ~4e-4 at
# 4096) and rotates bf16 in bf16; posemb is accurate to fp32 and rounds once.
ROTARY_TOLERANCE = {torch.float32: dict(atol=1e-3, rtol=0.0), torch.bfloat16: dict(atol=6e-2, rtol=2e-2)}


def rotary_variants(settings: Settings, what: str, q, k, fused, eager, backward: bool):
    """What every rotary case times, checked first: the roofline (a clone of
    q and k, scaled to the bytes moved), posemb, transformers' eager code and
    its compiled form. Returns (timed, roofline, before, bytes_moved,
    variants, notes); ``timed(fn)`` adds the backward when asked."""
    def timed(fn):
        if not backward:
            return lambda: fn()
        grads = (torch.randn_like(q), torch.randn_like(k))
        return lambda: torch.autograd.backward(fn(), grads)

    with torch.no_grad():
        for ours, theirs, name in zip(fused(), eager(q, k), ("q", "k")):
            assert_matches(f"{what}: posemb vs transformers, {name}", ours, theirs, ROTARY_TOLERANCE[q.dtype])
    # Read q and k, write them back rotated; the backward reads and writes the gradients again.
    bytes_moved = (q.numel() + k.numel()) * q.element_size() * (4 if backward else 2)
    roofline = clone_roofline(torch.cat([q.detach().reshape(-1), k.detach().reshape(-1)]), bytes_moved)
    before = (lambda: clear_grads((q, k))) if backward else None
    notes: List[str] = []
    variants = [
        roofline,
        Variant("posemb", "posemb", timed(fused), roofline.name, before),
        Variant("transformers eager", "peer", timed(lambda: eager(q, k)), roofline.name, before),
    ]
    if settings.compile:
        with torch.set_grad_enabled(backward):
            compiled = compile_or_note(eager, (q, k), notes)
        if compiled is not None:
            variants.append(Variant("compile(transformers)", "peer", timed(lambda: compiled(q, k)), roofline.name,
                                    before))
    return timed, roofline, before, bytes_moved, variants, notes


def hf_llama_rotary(head_dim: int, device: torch.device):
    """transformers' Llama rotary module and apply_rotary_pos_emb, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = LlamaConfig(hidden_size=head_dim * 32, num_attention_heads=32, max_position_embeddings=8192)
    return LlamaRotaryEmbedding(config).to(device), apply_rotary_pos_emb


@register("rotary")
def rotary_cases(settings: Settings) -> Iterator[Case]:
    for label, shape, decode, in_quick in ROTARY_SHAPES:
        if in_quick or not settings.quick:
            for dtype in (torch.float32, torch.bfloat16):
                for backward in (False, True):
                    yield later(rotary_case, label, shape, decode, dtype, backward)


def rotary_case(settings: Settings, label, shape, decode, dtype, backward) -> Case:
    device = settings.device
    batch, seq, q_heads, kv_heads, head_dim = shape
    # (batch, heads, seq, head_dim): the layout Llama's attention rotates.
    q = torch.randn(batch, q_heads, seq, head_dim, device=device, dtype=dtype, requires_grad=backward)
    k = torch.randn(batch, kv_heads, seq, head_dim, device=device, dtype=dtype, requires_grad=backward)
    start = torch.randint(0, 4000, (batch, 1), device=device) if decode else torch.zeros(batch, 1, device=device,
                                                                                         dtype=torch.long)
    position_ids = start + torch.arange(seq, device=device)
    hf_rotary, apply = hf_llama_rotary(head_dim, device)
    inv_freq = hf_rotary.inv_freq.float()
    offset = start.view(-1) if decode else 0
    fused = lambda: posemb.rotary(q, k, inv_freq, offset=offset, seq_dim=2)  # noqa: E731

    def eager(q, k):
        cos, sin = hf_rotary(q, position_ids)
        return apply(q, k, cos.to(q.dtype), sin.to(q.dtype))

    label = f"{label}, {'fwd+bwd' if backward else 'forward'}"
    what = f"rotary {label} {shape} {dtype}"
    timed, roofline, before, bytes_moved, variants, notes = rotary_variants(settings, what, q, k, fused, eager,
                                                                             backward)

    def lucid():
        from rotary_embedding_torch import RotaryEmbedding as LucidRotary

        rotate = LucidRotary(dim=head_dim).to(device).rotate_queries_or_keys
        return lambda: (rotate(q), rotate(k))

    def liger():
        if device.type != "cuda":
            raise ImportError("a Triton kernel: CUDA only")
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        def rotate():  # as in a Liger-patched Llama: HF's cos/sin, Liger's kernel
            cos, sin = hf_rotary(q, position_ids)
            return liger_rotary_pos_emb(q, k, cos.to(q.dtype), sin.to(q.dtype))
        with torch.no_grad():
            for ours, theirs, name in zip(fused(), rotate(), ("q", "k")):
                assert_matches(f"{what}: posemb vs liger-kernel, {name}", ours, theirs, ROTARY_TOLERANCE[dtype])
        return rotate

    if not decode:  # rotary-embedding-torch takes one offset for the batch, not one per sequence
        add_optional_peer(variants, notes, "rotary-embedding-torch", lucid, timed, roofline.name, before)
    add_optional_peer(variants, notes, "liger-kernel", liger, timed, roofline.name, before)
    return Case("rotary", label, shape, dtype, bytes_moved, variants, notes)


# --------------------------------------------------------------------------- multimodal rope

# label, (batch, seq, q heads, kv heads, head_dim), in --quick: Qwen2-VL-7B's attention.
MROPE_SHAPES = [
    ("Qwen2-VL prefill, image", (1, 1024, 28, 4, 128), True),
    ("Qwen2-VL prefill, 4 images", (4, 1024, 28, 4, 128), False),
]
MROPE_SECTION = [16, 24, 24]


def hf_qwen2_vl_rotary(head_dim: int, device: torch.device):
    """transformers' Qwen2-VL text rotary module and apply_rotary_pos_emb, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import Qwen2VLTextConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding, apply_rotary_pos_emb

    config = Qwen2VLTextConfig(hidden_size=head_dim * 28, num_attention_heads=28, num_key_value_heads=4,
                               rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                "mrope_section": MROPE_SECTION})
    return Qwen2VLRotaryEmbedding(config).to(device), apply_rotary_pos_emb


def image_prompt_positions(batch: int, seq: int, device: torch.device) -> torch.Tensor:
    """(t, h, w) positions as Qwen2-VL gives a prompt of text, one 32 x 24
    patch image (768 tokens), then text: (3, batch, seq)."""
    text, image = 128, 32 * 24
    before = torch.arange(text).expand(3, text)
    grid = torch.stack([torch.zeros(image, dtype=torch.long), torch.arange(image) // 24,
                        torch.arange(image) % 24]) + text
    after = torch.arange(seq - text - image).expand(3, -1) + grid.max() + 1
    return torch.cat([before, grid, after], dim=1).unsqueeze(1).expand(3, batch, seq).contiguous().to(device)


@register("mrope")
def mrope_cases(settings: Settings) -> Iterator[Case]:
    for label, shape, in_quick in MROPE_SHAPES:
        if in_quick or not settings.quick:
            for dtype in (torch.float32, torch.bfloat16):
                for backward in (False, True):
                    yield later(mrope_case, label, shape, dtype, backward)


def mrope_case(settings: Settings, label, shape, dtype, backward) -> Case:
    device = settings.device
    batch, seq, q_heads, kv_heads, head_dim = shape
    q = torch.randn(batch, q_heads, seq, head_dim, device=device, dtype=dtype, requires_grad=backward)
    k = torch.randn(batch, kv_heads, seq, head_dim, device=device, dtype=dtype, requires_grad=backward)
    positions = image_prompt_positions(batch, seq, device)
    hf_rotary, apply = hf_qwen2_vl_rotary(head_dim, device)
    inv_freq = hf_rotary.inv_freq.float()
    fused = lambda: posemb.rotary(q, k, inv_freq, positions, seq_dim=2, mrope_section=MROPE_SECTION)  # noqa: E731

    def eager(q, k):
        cos, sin = hf_rotary(q, positions)
        return apply(q, k, cos.to(q.dtype), sin.to(q.dtype))

    label = f"{label}, {'fwd+bwd' if backward else 'forward'}"
    _, _, _, bytes_moved, variants, notes = rotary_variants(settings, f"mrope {label} {shape} {dtype}", q, k, fused,
                                                            eager, backward)
    return Case("mrope", label, shape, dtype, bytes_moved, variants, notes)


# --------------------------------------------------------------------------- timing and report

# --------------------------------------------------------------------------- diffusion

TIMESTEP_SHAPES = [("UNet, batch 8", 8, 320, True), ("DiT, batch 256", 256, 256, False)]  # label, N, dim, in --quick


@register("timestep_embedding")
def timestep_embedding_cases(settings: Settings) -> Iterator[Case]:
    for label, n, dim, in_quick in TIMESTEP_SHAPES:
        if in_quick or not settings.quick:
            for fractional in (False, True):
                yield later(timestep_embedding_case, label, n, dim, fractional)


def timestep_embedding_case(settings: Settings, label, n, dim, fractional) -> Case:
    device = settings.device
    # Integer steps (DDPM/DiT training and sampling) or fractional ones (flow matching: sigma * 1000).
    t = torch.rand(n, device=device) * 1000 if fractional else torch.randint(0, 1000, (n,), device=device).float()
    label = f"{label}, {'fractional' if fractional else 'integer'} t"
    fused = lambda: posemb.timestep_embedding(t, dim, True, 0.0)  # noqa: E731
    out = torch.empty(n, dim, device=device)
    roofline = clone_roofline(out, 2 * out.numel() * out.element_size())  # the op writes (n, dim)
    variants = [roofline, Variant("posemb", "posemb", step(fused, None), roofline.name)]
    notes: List[str] = []

    def build():
        from diffusers.models.embeddings import get_timestep_embedding
        eager = lambda: get_timestep_embedding(t, dim, True, 0.0)  # noqa: E731
        assert_matches(f"timestep_embedding {label}: posemb vs diffusers", fused(), eager(), dict(atol=1e-4, rtol=0))
        return eager

    add_optional_peer(variants, notes, "diffusers eager", build, lambda fn: step(fn, None), roofline.name)
    return Case("timestep_embedding", label, (n, dim), torch.float32, out.numel() * out.element_size(), variants,
                notes)


SINCOS_2D_SHAPES = [("DiT-XL/2 256px", (8, 16, 16, 1152), True), ("SD3 1024px", (2, 64, 64, 1536), False)]


@register("sincos_2d_add")
def sincos_2d_add_cases(settings: Settings) -> Iterator[Case]:
    for label, shape, in_quick in SINCOS_2D_SHAPES:
        if in_quick or not settings.quick:
            for dtype in (torch.float32, torch.bfloat16):
                yield later(sincos_2d_add_case, label, shape, dtype)


def sincos_2d_add_case(settings: Settings, label, shape, dtype) -> Case:
    device = settings.device
    batch, h, w, dim = shape
    x = torch.randn(batch, h * w, dim, device=device, dtype=dtype)
    pos_h = posemb.sincos_2d_positions(h, h, device=device)
    pos_w = posemb.sincos_2d_positions(w, h, device=device)
    fused = lambda: posemb.sincos_2d_add(x, pos_h, pos_w)  # noqa: E731
    bytes_moved = 2 * x.numel() * x.element_size()
    roofline = clone_roofline(x, bytes_moved)
    variants = [roofline, Variant("posemb", "posemb", step(fused, None), roofline.name)]
    notes: List[str] = []

    def cached():  # PatchEmbed at its own size: the fp32 buffer, added
        from diffusers.models.embeddings import get_2d_sincos_pos_embed
        table = get_2d_sincos_pos_embed(dim, (h, w), base_size=h, output_type="pt", device=device).float()[None]
        eager = lambda: (x + table).to(dtype)  # noqa: E731
        assert_matches(f"sincos_2d_add {label}: posemb vs diffusers", fused(), eager())
        return eager

    def rebuilt():  # PatchEmbed at another size: the grid rebuilt (fp64) every call
        from diffusers.models.embeddings import get_2d_sincos_pos_embed
        return lambda: (x + get_2d_sincos_pos_embed(dim, (h, w), base_size=h, output_type="pt",
                                                    device=device).float()[None]).to(dtype)

    add_optional_peer(variants, notes, "diffusers buffer add", cached, lambda fn: step(fn, None), roofline.name)
    add_optional_peer(variants, notes, "diffusers grid rebuilt", rebuilt, lambda fn: step(fn, None), roofline.name)
    return Case("sincos_2d_add", label, tuple(x.shape), dtype, bytes_moved, variants, notes)


# CogVideoX 2b/5b latents of 480x720 video: 13 (or 5) latent frames of 60x90 in patches of 2, dim 1920.
SINCOS_3D_SHAPES = [("CogVideoX 480x720, 49 frames", (1, 13, 30, 45, 1920), True),
                    ("CogVideoX 480x720, 17 frames, batch 2", (2, 5, 30, 45, 1920), False)]


@register("sincos_3d_add")
def sincos_3d_add_cases(settings: Settings) -> Iterator[Case]:
    for label, shape, in_quick in SINCOS_3D_SHAPES:
        if in_quick or not settings.quick:
            for dtype in (torch.float32, torch.bfloat16):
                yield later(sincos_3d_add_case, label, shape, dtype)


def sincos_3d_add_case(settings: Settings, label, shape, dtype) -> Case:
    """posemb.sincos_2d_add with pos_t against CogVideoXPatchEmbed's grid:
    its buffer (in the model's dtype, as a pipeline loaded in that dtype has
    it) added, and get_3d_sincos_pos_embed rebuilt (fp64), as it does for a
    frame count or resolution other than its sample size."""
    device = settings.device
    batch, t, h, w, dim = shape
    spatial = 1.875  # CogVideoX's spatial_interpolation_scale
    x = torch.randn(batch, t * h * w, dim, device=device, dtype=dtype)
    pos_t = posemb.sincos_2d_positions(t, device=device)
    pos_h = posemb.sincos_2d_positions(h, None, spatial, device=device)
    pos_w = posemb.sincos_2d_positions(w, None, spatial, device=device)
    fused = lambda: posemb.sincos_2d_add(x, pos_h, pos_w, pos_t=pos_t)  # noqa: E731
    bytes_moved = 2 * x.numel() * x.element_size()
    roofline = clone_roofline(x, bytes_moved)
    variants = [roofline, Variant("posemb", "posemb", step(fused, None), roofline.name)]
    notes: List[str] = []

    def grid():
        from diffusers.models.embeddings import get_3d_sincos_pos_embed
        return get_3d_sincos_pos_embed(dim, (w, h), t, spatial, 1.0, device=device, output_type="pt").flatten(0, 1)

    def cached():  # CogVideoXPatchEmbed at its sample size: the buffer, added
        table = grid().to(dtype)[None]
        eager = lambda: x + table.to(dtype=x.dtype)  # noqa: E731
        assert_matches(f"sincos_3d_add {label}: posemb vs diffusers", fused(), eager())
        return eager

    def rebuilt():  # at another size: the grid rebuilt every call
        return lambda: x + grid().to(dtype=x.dtype)[None]

    add_optional_peer(variants, notes, "diffusers buffer add", cached, lambda fn: step(fn, None), roofline.name)
    add_optional_peer(variants, notes, "diffusers grid rebuilt", rebuilt, lambda fn: step(fn, None), roofline.name)
    return Case("sincos_3d_add", label, tuple(x.shape), dtype, bytes_moved, variants, notes)


def median_time_us(fn, device: torch.device, warmup: int, repeats: int, before=None) -> float:
    """Median time of one call, in µs, after ``warmup`` calls (CUDA events on GPU)."""
    before = before or (lambda: None)
    for _ in range(warmup):
        before()
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in events:
            before()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return statistics.median(start.elapsed_time(end) * 1e3 for start, end in events)
    times = []
    for _ in range(repeats):
        before()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def run_case(case: Case, device: torch.device, warmup: int, repeats: int) -> List[dict]:
    times = {v.name: v.time_scale * median_time_us(v.fn, device, warmup, repeats, v.before) for v in case.variants}
    posemb_times = {v.name: times[v.name] for v in case.variants if v.kind == "posemb"}
    rows = []
    for v in case.variants:
        t = times[v.name]
        rows.append(dict(
            op=case.op, case=case.label, shape=list(case.shape), dtype=str(case.dtype).replace("torch.", ""),
            variant=v.name, kind=v.kind, time_us=t, x_roofline=t / times[v.baseline],
            gb_per_s=case.bytes_moved / t / 1e3,
            speedup={p: t / tp for p, tp in posemb_times.items()} if v.kind == "peer" else {},
            notes=case.notes,
        ))
    return rows


def print_rows(rows: List[dict], posemb_names: List[str]) -> None:
    first = rows[0]
    print(f"\n{first['op']}  {first['case']} {tuple(first['shape'])} {first['dtype']}")
    print(f"  {'variant':<26}{'median µs':>11}{'x roof':>9}{'GB/s':>9}  " + "  ".join(f"{'vs ' + p:>8}" for p in posemb_names))
    for r in rows:
        speedups = "  ".join(f"{r['speedup'][p]:7.2f}x".rjust(len(p) + 3) for p in posemb_names if p in r["speedup"])
        print(f"  {r['variant']:<26}{r['time_us']:11.1f}{r['x_roofline']:9.2f}{r['gb_per_s']:9.1f}  {speedups}".rstrip())
    for note in first["notes"]:
        print(f"  note: {note}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def draw_png(results: List[dict], path: str, title: Optional[str] = None) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: matplotlib is not installed; {path} not drawn")
        return
    cases = list(dict.fromkeys(f"{r['case']}\n{r['dtype']}" for r in results))
    variants = list(dict.fromkeys(r["variant"] for r in results if r["kind"] != "roofline"))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(cases)), 5))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ratio = {f"{r['case']}\n{r['dtype']}": r["x_roofline"] for r in results if r["variant"] == v}
        ax.bar([c + i * width for c in range(len(cases))], [ratio.get(c, 0) for c in cases], width, label=v)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time / roofline time (lower is better)")
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, fontsize=8)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def headline(results: List[dict]) -> List[str]:
    """One line per op: the share of the roofline posemb reached (roofline time
    / posemb time, so 1.0 is the copy bandwidth) and its speedup over each peer,
    as min-max over the cases run."""
    lines = []
    for op in dict.fromkeys(r["op"] for r in results):
        rows = [r for r in results if r["op"] == op and "error" not in r]
        ours = [1 / r["x_roofline"] for r in rows if r["variant"] == "posemb"]
        parts = [f"{min(ours):.2f}-{max(ours):.2f} of roofline" if ours else "no posemb timing"]
        for peer in dict.fromkeys(r["variant"] for r in rows if r["kind"] == "peer"):
            ups = [r["speedup"]["posemb"] for r in rows if r["variant"] == peer and "posemb" in r["speedup"]]
            if ups:
                parts.append(f"{min(ups):.2f}-{max(ups):.2f}x vs {peer}")
        errors = sum(1 for r in results if r["op"] == op and "error" in r)
        if errors:
            parts.append(f"{errors} case(s) failed")
        lines.append(f"{op}: " + ", ".join(parts))
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m posemb.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="few shapes and repeats (< 1 min on CPU)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--png", metavar="PATH", help="draw time/roofline ratios (needs matplotlib)")
    parser.add_argument("--compile", choices=["all", "first", "none"], default="all",
                        help="torch.compile peers in every case, in the first case of each op, or none")
    parser.add_argument("--no-compile", dest="compile", action="store_const", const="none",
                        help="same as --compile none")
    parser.add_argument("--dry-run", action="store_true",
                        help="build and check every case's inputs and peers, time nothing (no compile)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma list of {', '.join(OPS)}")
    args = parser.parse_args(argv)
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        parser.error(f"unknown op(s) {unknown}; known: {', '.join(OPS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)
    compile_mode = "none" if args.dry_run else args.compile
    warmup, repeats = (2, 10) if args.quick else (10, 200 if device.type == "cuda" else 40)

    meta = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                device=device_name(device), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                posemb=posemb.__version__, quick=args.quick, compile=compile_mode, warmup=warmup, repeats=repeats)
    print("posemb bench  " + "  ".join(f"{k}={v}" for k, v in meta.items()))
    print("x roof = time / roofline time (clone, scaled to the op's bytes, or mul_ in place); "
          "GB/s = bytes the op must move / time; "
          "vs posemb = peer time / posemb time")
    torch.manual_seed(0)
    results: List[dict] = []
    built = 0
    for op in ops:
        for index, build in enumerate(OPS[op](Settings(device, args.quick, False))):
            settings = Settings(device, args.quick, compile_mode == "all" or (compile_mode == "first" and index == 0))
            try:  # a case that fails is recorded and the run goes on
                case = build(settings)
                built += 1
                if args.dry_run:
                    print(f"built {op} {case.label} {tuple(case.shape)} {case.dtype}: "
                          f"{', '.join(v.name for v in case.variants)}")
                    for note in case.notes:
                        print(f"  note: {note}")
                    continue
                rows = run_case(case, device, warmup, repeats)
            except Exception as e:
                message = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                print(f"\n{op} case {index}: FAILED {message}")
                results.append(dict(op=op, case=index, error=message))
                continue
            print_rows(rows, [v.name for v in case.variants if v.kind == "posemb"])
            results += rows
    if args.dry_run:
        failed = [r for r in results if "error" in r]
        print(f"\nbench dry run: {built} cases built, {len(failed)} failed")
        return 1 if failed or not built else 0
    print("\nsummary")
    for line in headline(results):
        print(f"  {line}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "summary": headline(results)}, f, indent=1)
        print(f"\nwrote {args.json}")
    if args.png:
        draw_png([r for r in results if "error" not in r], args.png)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
