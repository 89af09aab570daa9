"""Shared fixtures and helpers: devices, dtypes, ulp_distance, and the
sinusoidal samples (SAMPLES, op_args) that test_sinusoidal.py and
test_learned.py run over; the BERT and rotary tests build their own inputs."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

import pytest
import torch

import posemb  # noqa: F401  (loads the ops)

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@dataclasses.dataclass
class Sample:
    """x and the keyword arguments of posemb.sinusoidal_add (Python API)."""

    name: str
    x: torch.Tensor
    kwargs: Dict[str, Any]

    def to(self, device: str, dtype: torch.dtype) -> "Sample":
        """Same view geometry (strides, storage offset) on another device/dtype."""
        kwargs = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.kwargs.items()}
        return Sample(self.name, _same_view(self.x, device, dtype), kwargs)

    def __repr__(self) -> str:
        return self.name


def _same_view(x: torch.Tensor, device: str, dtype: torch.dtype) -> torch.Tensor:
    whole_storage = torch.as_strided(x, (x.untyped_storage().nbytes() // x.element_size(),), (1,), 0)
    base = whole_storage.to(device=device, dtype=dtype)  # a copy, storage offset 0
    return torch.as_strided(base, x.shape, x.stride(), x.storage_offset())


def sinusoidal_samples() -> List[Sample]:
    """fp32 CPU samples covering sizes, layouts, formulas, views and position schemes."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    s: List[Sample] = []
    for layout in ("interleaved", "half"):
        for freqs in ("vaswani", "fairseq"):
            s.append(Sample(f"{layout}-{freqs}", rand(2, 5, 8), dict(layout=layout, freqs=freqs)))
    for d in (2, 80, 96, 128, 256):
        s.append(Sample(f"dim{d}", rand(2, 3, d), dict(layout="half" if d % 3 else "interleaved")))
    s += [
        Sample("one-token", rand(1, 1, 2), {}),
        Sample("odd-len-odd-dim", rand(3, 7, 9), dict(layout="half", freqs="fairseq")),
        Sample("odd-dim-interleaved", rand(2, 5, 7), {}),
        Sample("dim1", rand(2, 3, 1), {}),
        Sample("empty-batch", rand(0, 5, 8), {}),
        Sample("empty-seq", rand(2, 0, 8), {}),
        Sample("2d", rand(6, 16), dict(offset=3)),
        Sample("seq-first", rand(5, 3, 8), dict(seq_dim=0)),
        Sample("transposed-view", rand(5, 2, 16).transpose(0, 1), {}),
        Sample("channel-stride", rand(2, 5, 16)[..., ::2], dict(layout="half")),
        Sample("storage-offset", rand(3, 7, 12)[1:, 2:, 2:10], {}),
        Sample("scale-base", rand(2, 4, 12), dict(scale=4.0, base=500.0)),
        Sample("offset-int", rand(2, 4, 8), dict(offset=1000)),
        Sample("offsets-tensor", rand(3, 4, 8), dict(offset=torch.tensor([0, 7, 123], dtype=torch.int32))),
        Sample("positions-1d", rand(2, 4, 8), dict(positions=torch.tensor([5, 1, 9, 2]))),
        Sample("positions-2d-int32", rand(2, 3, 8), dict(positions=torch.tensor([[4, 5, 6], [0, 9, 2]], dtype=torch.int32))),
        Sample("positions-stride0", rand(3, 4, 8), dict(positions=torch.tensor(7).expand(4))),
        Sample("positions-per-seq", rand(3, 4, 8), dict(positions=torch.tensor([[2], [5], [11]]))),
        Sample("positions-int16", rand(2, 3, 8), dict(positions=torch.tensor([3, 1, 2], dtype=torch.int16))),
        Sample("negative-positions", rand(1, 3, 8), dict(positions=torch.tensor([-3, 0, 3]))),
        Sample(
            "padding-aware",
            rand(2, 5, 8),
            dict(input_ids=torch.tensor([[1, 1, 5, 6, 7], [5, 6, 7, 8, 1]]), padding_idx=1, layout="half", freqs="fairseq"),
        ),
        Sample("padding-idx-positions", rand(1, 4, 8), dict(positions=torch.tensor([0, 1, 2, 1]), padding_idx=1)),
        Sample("fused-vector-bf16-width", rand(2, 9, 64), dict(offset=17)),
        Sample("decode", rand(16, 1, 32), dict(offset=torch.arange(16) * 3)),
    ]
    return s


SAMPLES = sinusoidal_samples()


def op_args(x: torch.Tensor, kwargs: Dict[str, Any]):
    """Maps Python-API kwargs onto torch.ops.posemb.sinusoidal_add's schema."""
    from posemb.ops import _position_args

    kw = dict(kwargs)
    positions, offsets, offset = _position_args(
        kw.pop("positions", None), kw.pop("offset", 0), kw.pop("input_ids", None), kw.get("padding_idx")
    )
    return (x, positions, offsets, offset), kw


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in units in the last place between two half/bf16 tensors."""

    def monotonic(t):
        bits = t.view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, -(bits & 0x7FFF), bits)

    return (monotonic(a) - monotonic(b)).abs()


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


class Counter:
    """Counts the calls of owner.name for the rest of a test (monkeypatch)."""

    def __init__(self, monkeypatch, owner, name):
        self.calls, original = 0, getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def assert_same_gradients(model, ref, ours, out, min_parameters: int = 10) -> None:
    """Backpropagates one random projection of ``ref`` (the unpatched
    ``model``'s output) and of ``out`` (the patched ``ours``'s), and checks
    that every parameter gradient agrees (1e-4 relative, 1e-5 of the
    gradient's largest entry)."""
    proj = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7))
    (ref * proj).sum().backward()
    (out * proj).sum().backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    got = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys() and len(got) > min_parameters
    for name, g in got.items():
        torch.testing.assert_close(g, want[name], rtol=1e-4, atol=1e-5 * max(1.0, want[name].abs().max().item()),
                                   msg=name)
