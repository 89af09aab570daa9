"""Tensors of more than 2^31 elements: every index the kernels form must be
64-bit. Each op runs once over a bf16 tensor of 2^31 + 1024 elements (4 GiB;
at most two of them live at once, about 9 GB), and the rows past element
2^31 are compared with the same op on just those rows.

Marked ``large`` (README: Tests): ``pytest -m "not large"`` leaves them out;
they skip themselves where the machine has less than 12 GB available.
"""
from __future__ import annotations

import pytest
import torch

import posemb

DIM = 1024
SEQ = 2**31 // DIM + 1  # 2^31 + DIM elements in (1, SEQ, DIM)
TAIL = 4  # rows checked, all past element 2^31


def _available_gb() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 2**20


pytestmark = [
    pytest.mark.large,
    pytest.mark.skipif(_available_gb() < 12, reason="needs 12 GB of free memory"),
]


def _big(fill: float = 0.0) -> torch.Tensor:
    x = torch.empty(1, SEQ, DIM, dtype=torch.bfloat16)
    x[:, :-TAIL].fill_(fill)
    x[:, -TAIL:] = torch.randn(1, TAIL, DIM, generator=torch.Generator().manual_seed(0)).bfloat16()
    return x


def test_sinusoidal_add_in_place_and_out_of_place():
    x = _big()
    tail = x[:, -TAIL:].clone()
    expected = posemb.sinusoidal_add(tail, offset=SEQ - TAIL)
    y = posemb.sinusoidal_add(x)
    assert torch.equal(y[:, -TAIL:], expected)
    del y
    posemb.sinusoidal_add_(x)
    assert torch.equal(x[:, -TAIL:], expected)


def test_learned_add_forward_and_backward():
    x = _big()
    weight = torch.randn(7, DIM).bfloat16()
    positions = torch.arange(SEQ) % 7
    y = posemb.learned_add(x, weight, positions)
    expected = posemb.learned_add(x[:, -TAIL:].clone(), weight, positions[-TAIL:])
    assert torch.equal(y[:, -TAIL:], expected)
    del y
    # The table's gradient sums every row: with x as the incoming gradient,
    # row 0..6 get the tail rows plus zeros from everything else.
    grad = torch.ops.posemb.learned_add_backward(x, positions, None, 0, 1, 7, None)
    tail_grad = torch.ops.posemb.learned_add_backward(x[:, -TAIL:].clone(), positions[-TAIL:], None, 0, 1, 7, None)
    assert torch.equal(grad, tail_grad)


def test_rotary_in_place_and_out_of_place():
    q = _big().view(1, SEQ, 1, DIM)
    inv_freq = posemb.rope.frequency_plan({"rope_theta": 5e5}, DIM).inv_freq
    expected = posemb.rotary(q[:, -TAIL:].clone(), None, inv_freq, offset=SEQ - TAIL)
    out = posemb.rotary(q, None, inv_freq)
    assert torch.equal(out[:, -TAIL:], expected)
    del out
    posemb.rotary(q, None, inv_freq, inplace=True)
    assert torch.equal(q[:, -TAIL:], expected)


def test_bert_embeddings_over_2_31_output_elements():
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(1, SEQ, dtype=torch.long)
    ids[0, -TAIL:] = torch.tensor([1, 2, 3, 4])
    position_ids = (torch.arange(SEQ) % 16).unsqueeze(0)
    tables = [torch.randn(n, DIM, generator=g).bfloat16() for n in (8, 16, 2)]
    ln = [torch.ones(DIM).bfloat16(), torch.zeros(DIM).bfloat16()]
    out = posemb.bert_embeddings(ids, *tables, *ln, position_ids=position_ids)
    expected = posemb.bert_embeddings(ids[:, -TAIL:], *tables, *ln, position_ids=position_ids[:, -TAIL:])
    assert torch.equal(out[:, -TAIL:], expected)
