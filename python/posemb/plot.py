"""``python -m posemb plot [--out DIR] [--bench JSON]``: the README's pictures.

- ``encoding.png``: the sinusoidal encoding as a heatmap, both layouts;
- ``similarity.png``: dot-product similarity against relative distance, for
  the sinusoidal encoding and for rotary;
- ``accuracy.png``: the error of sin/cos of Llama's frequencies against the
  position, up to 2^31: posemb, naive fp32 and transformers' rotary module;
- ``bench_<op>.png``: a ``posemb.bench`` JSON as bars against the roofline.

Needs matplotlib (and mpmath, which torch brings, for the exact reference).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from typing import List, Optional

import torch

from . import ops, rope


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def encoding(path: str, positions: int = 128, dim: int = 64) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, layout in zip(axes, ("interleaved", "half")):
        table = ops.sinusoidal_table(positions, dim, layout=layout)
        image = ax.imshow(table.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f'layout="{layout}"' + (" (sin, cos pairs)" if layout == "interleaved" else " (sines, then cosines)"))
        ax.set_xlabel("channel")
    axes[0].set_ylabel("position")
    fig.colorbar(image, ax=axes, fraction=0.025)
    fig.suptitle(f"posemb.sinusoidal_table({positions}, {dim})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def similarity(path: str, dim: int = 128, distances: int = 256) -> None:
    """Scores against the relative distance k, from two starting positions:
    PE(p)·PE(p+k) for the sinusoidal encoding, and q·k after rotary of one
    random pair q, k at positions p and p + k. Both depend on k alone, so the
    curves from p = 0 and from p = 10^8 coincide (with exact angles: naive
    fp32 angles at p = 10^8, also drawn, do not)."""
    plt = _pyplot()
    k = torch.arange(distances + 1)
    far = 10**8
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for start in (0, far):
        table = ops.sinusoidal_table(distances + 1, dim, offset=start, dtype=torch.float64)
        left.plot(k.numpy(), ((table[0] * table).sum(-1) / (dim / 2)).numpy(), label=f"from p = {start:,}",
                  linestyle="-" if start == 0 else "--")
    left.set_title(f"sinusoidal: PE(p)·PE(p+k) / (dim/2), dim {dim}")
    g = torch.Generator().manual_seed(0)
    q, key = torch.randn(dim, generator=g), torch.randn(dim, generator=g)
    inv_freq = rope.frequency_plan({"rope_theta": 10000.0}, dim).inv_freq

    def scores(start: int) -> torch.Tensor:
        q_p = ops.rotary(q.view(1, 1, 1, dim), None, inv_freq, offset=start)[0, 0, 0]
        k_pk = ops.rotary(key.expand(1, distances + 1, 1, dim).contiguous(), None, inv_freq, offset=start)[0, :, 0]
        return (k_pk @ q_p) / dim

    def naive_scores(start: int) -> torch.Tensor:  # cos/sin of float32(p) * inv_freq, as eager code does
        def turn(v, positions):
            angle = positions.float().unsqueeze(-1) * inv_freq
            cos, sin = torch.cat((angle.cos(), angle.cos()), -1), torch.cat((angle.sin(), angle.sin()), -1)
            return v * cos + torch.cat((-v[..., dim // 2:], v[..., :dim // 2]), -1) * sin
        return (turn(key, start + k) @ turn(q, torch.tensor([start]))[0]) / dim

    for start in (0, far):
        right.plot(k.numpy(), scores(start).numpy(), label=f"posemb, from p = {start:,}",
                   linestyle="-" if start == 0 else "--")
    right.plot(k.numpy(), naive_scores(far).numpy(), label=f"naive fp32 angles, from p = {far:,}", alpha=0.6)
    right.set_title("rotary: q_p·k_(p+k) / dim, one random q, k")
    for ax in (left, right):
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xlabel("relative distance k")
        ax.legend(fontsize=8)
    left.set_ylabel("similarity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _exact_sin(positions: List[int], inv_freq: torch.Tensor):
    import mpmath

    mpmath.mp.dps = 40
    w = [mpmath.mpf(float(v)) for v in inv_freq.tolist()]  # fp32 frequencies, taken as exact
    return torch.tensor([[float(mpmath.sin(p * wi)) for wi in w] for p in positions], dtype=torch.float64)


def accuracy(path: str, head_dim: int = 128) -> None:
    """Max |error| over Llama's frequencies of sin(position * inv_freq), fp32."""
    plt = _pyplot()
    # Odd positions: at a power of two float(p) * w is exact, which flatters
    # the naive curves at a few points.
    positions = sorted({int(round(2 ** (e / 4))) | 1 for e in range(0, 125)} | {2**31 - 1})
    inv_freq = rope.frequency_plan({"rope_theta": 10000.0}, head_dim).inv_freq
    exact = _exact_sin(positions, inv_freq)
    p = torch.tensor(positions).unsqueeze(0)
    n = inv_freq.numel()
    curves = {"posemb": ops.fourier_features(p, inv_freq)[0, :, :n].double()}
    curves["naive fp32: sin(float(p) * w)"] = torch.sin(p[0].float().unsqueeze(-1) * inv_freq).double()
    try:
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        config = LlamaConfig(hidden_size=head_dim, num_attention_heads=1, rope_theta=10000.0,
                             max_position_embeddings=2**31)
        _, sin = LlamaRotaryEmbedding(config)(torch.zeros(1, dtype=torch.float32), p)
        curves["transformers LlamaRotaryEmbedding"] = sin[0, :, :n].double()
    except Exception as e:  # transformers is optional here
        print(f"note: transformers' curve left out ({type(e).__name__}: {e})")
    fig, ax = plt.subplots(figsize=(8, 4.6))
    styles = {"posemb": dict(marker=".", linewidth=1.5), "naive": dict(linewidth=3, alpha=0.5),
              "transformers": dict(linestyle="--", linewidth=1.2)}
    for name, values in curves.items():
        error = (values - exact).abs().max(dim=-1).values.clamp_min(1e-10)
        ax.loglog(positions, error.numpy(), label=name, **styles[name.split()[0].rstrip(":")])
    ax.axhline(2.5e-7, color="black", linestyle="--", linewidth=0.8, label="posemb's contract, 2.5e-7")
    ax.set_xlabel("position")
    ax.set_ylabel("max |error| over the frequencies")
    ax.set_title(f"fp32 sin(position · inv_freq), Llama frequencies (head_dim {head_dim}) vs. mpmath")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latest_bench_json(root: str = "bench/results") -> Optional[str]:
    files = sorted(glob.glob(os.path.join(root, "*.json")), key=os.path.getmtime)
    return files[-1] if files else None


def bench(out: str, json_path: str) -> List[str]:
    """One bench_<op>.png per op in the JSON."""
    from .bench import draw_png

    with open(json_path) as f:
        data = json.load(f)
    results = [r for r in data["results"] if "error" not in r]
    meta = data.get("meta", {})
    paths = []
    for op in dict.fromkeys(r["op"] for r in results):
        paths.append(os.path.join(out, f"bench_{op}.png"))
        title = f"{op}: {meta.get('device', '')}, torch {meta.get('torch', '?')}, {os.path.basename(json_path)}"
        draw_png([r for r in results if r["op"] == op], paths[-1], title=title)
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m posemb plot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img", help="folder for the PNGs (default docs/img)")
    parser.add_argument("--bench", help="a posemb.bench JSON (default: the newest in bench/results)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for name, draw in (("encoding", encoding), ("similarity", similarity), ("accuracy", accuracy)):
        draw(os.path.join(args.out, f"{name}.png"))
        print(f"wrote {os.path.join(args.out, name + '.png')}")
    json_path = args.bench or latest_bench_json()
    if json_path:
        bench(args.out, json_path)
    else:
        print("note: no bench JSON found; no bench_*.png drawn (run python -m posemb.bench --json PATH)")
    return 0
