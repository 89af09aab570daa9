"""Small launches over every path of posemb's kernels, to run under
compute-sanitizer (the GPU battery, README: "The GPU battery").

    python scripts/gpu_sanitize.py [--only FAMILY ...] [--device cuda|cpu]

Each family's calls cover its vector and scalar paths, odd tails, split
batches, per-sequence positions, in place and backward, and are checked
against posemb's fp64 reference or the CPU op: a wrong result exits 1.
``--device cpu`` runs the same calls on the CPU (the battery's dry run: every
name resolves, every case builds). Without a CUDA device, ``--device cuda``
(the default) exits 2 with a message saying so.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict

import torch

import posemb
from posemb import reference


def close(what: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> None:
    torch.testing.assert_close(actual.cpu().float(), expected.cpu().float(), atol=atol, rtol=rtol,
                               msg=lambda m: f"gpu_sanitize {what}: {m}")


def sinusoidal(device: str) -> None:
    cases = [
        (torch.randn(3, 37, 64), {}),                                        # vector, interleaved
        (torch.randn(2, 33, 96), dict(layout="half", freqs="fairseq")),      # vector, half
        (torch.randn(2, 9, 13), dict(layout="half")),                        # scalar, odd dim
        (torch.randn(2, 5, 32)[..., ::2], {}),                               # channel stride
        (torch.randn(300, 1, 16), dict(offset=torch.arange(300))),           # per-sequence offsets
        (torch.randn(300, 1, 16), dict(offset=42)),                          # decode: batch split
        (torch.randn(2, 6, 16), dict(input_ids=torch.randint(0, 3, (2, 6)), padding_idx=1)),
        (torch.randn(3, 7, 40)[1:, 2:, 4:36], {}),                          # storage offset
    ]
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for x, kw in cases:
            xd = x.to(device, dtype)
            kwd = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
            out = posemb.sinusoidal_add(xd, **kwd)
            inplace = xd.clone()
            posemb.sinusoidal_add_(inplace, **kwd)
            ref = reference.sinusoidal_add(xd.cpu(), **kw)
            tol = 2e-6 if dtype in (torch.float32, torch.float64) else 2e-2
            close(f"sinusoidal_add {dtype} {tuple(x.shape)} {sorted(kw)}", out, ref, tol * (1 + ref.abs().max().item()))
            assert torch.equal(out, inplace), f"sinusoidal_add_ {dtype} {tuple(x.shape)}: in place differs"
        table = posemb.sinusoidal_table(50, 24, dtype=dtype, device=device)
        close(f"sinusoidal_table {dtype}", table, reference.sinusoidal_encoding(torch.arange(50), 24), 2e-2)


def learned(device: str) -> None:
    """learned_add forward and backward, vector and scalar paths, against the CPU op."""
    for dtype in (torch.float32, torch.bfloat16):
        for x in (torch.randn(4, 9, 64), torch.randn(4, 9, 66)[..., 1:65]):
            w = torch.randn(20, 64)
            pos = torch.randint(0, 20, (4, 9))
            xd, wd = x.to(device, dtype).requires_grad_(), w.to(device, dtype).requires_grad_()
            out = posemb.learned_add(xd, wd, pos.to(device))
            out.backward(torch.ones_like(out))
            close(f"learned_add {dtype}", out, posemb.learned_add(x.to(dtype), w.to(dtype), pos), 1e-2)
            counts = torch.bincount(pos.view(-1), minlength=20).float()
            close(f"learned_add backward {dtype}", wd.grad[:, 0], counts, 1e-2)


def bert(device: str) -> None:
    """The BERT block forward and backward with dropout, against the CPU op:
    hidden 768 over 2400 rows (the warp path in 16-byte pieces, 150 row
    chunks of 16 rows, several rows per warp), hidden 13 (the warp path
    channel by channel) and hidden 1100 (the block path)."""
    op = torch.ops.posemb.bert_embeddings
    for dtype, hidden in ((torch.float32, 768), (torch.bfloat16, 768), (torch.float32, 13), (torch.bfloat16, 1100)):
        tables = [torch.randn(30, hidden), torch.randn(300, hidden), torch.randn(2, hidden), torch.randn(hidden),
                  torch.randn(hidden)]
        ids = torch.randint(0, 30, (8, 300) if hidden == 768 else (3, 50))
        seed = torch.tensor(9)
        cpu = [t.to(dtype).requires_grad_() for t in tables]
        dev = [t.to(device, dtype).requires_grad_() for t in tables]
        a = op(ids, *cpu, dropout_p=0.1, dropout_seed=seed)[0]
        b = op(ids.to(device), *dev, dropout_p=0.1, dropout_seed=seed)[0]
        close(f"bert_embeddings {dtype} hidden {hidden}", b, a, 5e-2)
        g = torch.randn_like(a)
        a.backward(g)
        b.backward(g.to(device))
        for name, c, d in zip(("word", "position", "type", "gamma", "beta"), cpu, dev):
            close(f"bert_embeddings backward {name} {dtype} hidden {hidden}", d.grad, c.grad, 5e-2, 5e-2)


def rotary(device: str) -> None:
    """rotary in each layout, packed, partial and interleaved, in place and
    backward, against the CPU op."""
    w = posemb.rope.frequency_plan({"rope_theta": 10000.0}, 48).inv_freq  # partial: 48 of 64 channels
    wd = w.to(device)
    for dtype in (torch.float32, torch.bfloat16):
        for seq_dim, shape_q, shape_k in ((1, (2, 9, 4, 64), (2, 9, 1, 64)), (2, (2, 4, 9, 64), (2, 1, 9, 64))):
            q, k = torch.randn(shape_q).to(dtype), torch.randn(shape_k).to(dtype)
            for interleaved in (False, True):
                a = posemb.rotary(q, k, w, offset=7, interleaved=interleaved, seq_dim=seq_dim)
                b = posemb.rotary(q.to(device), k.to(device), wd, offset=7, interleaved=interleaved, seq_dim=seq_dim)
                for name, x, y in zip("qk", a, b):
                    close(f"rotary {name} {dtype} seq_dim={seq_dim} interleaved={interleaved}", y, x, 2e-2)
        packed, cu = torch.randn(10, 3, 64).to(dtype), torch.tensor([0, 4, 10], dtype=torch.int32)
        a = posemb.rotary(packed, None, w, cu_seqlens=cu)
        b = posemb.rotary(packed.to(device), None, wd, cu_seqlens=cu.to(device))
        close(f"rotary packed {dtype}", b, a, 2e-2)
        qd = q.to(device).requires_grad_()
        out = posemb.rotary(qd, None, wd, seq_dim=2)
        out.backward(out.detach())  # the inverse rotation of the rotated q is q itself
        close(f"rotary backward {dtype}", qd.grad, q, 2e-2)
        inplace = q.to(device).clone()
        posemb.rotary(inplace, None, wd, seq_dim=2, inplace=True)
        close(f"rotary in place {dtype}", inplace, out.detach(), 0.0)


def timestep(device: str) -> None:
    """timestep_embedding: odd and even dims, fp32 and fp64 timesteps, every output dtype."""
    t = torch.tensor([0.0, 0.5, 999.0, 123.456, -3.75, 3e7])
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for dim, flip in ((320, True), (9, False)):
            for ts in (t, t.double()):
                out = posemb.timestep_embedding(ts.to(device), dim, flip, 0.0, dtype=dtype)
                close(f"timestep_embedding {dtype} {dim} {ts.dtype}", out,
                      reference.timestep_embedding(ts, dim, flip, 0.0), 2e-2 if dtype.itemsize == 2 else 1e-6)


def sincos_2d(device: str) -> None:
    """sincos_2d_add: contiguous and strided x, every dtype, backward."""
    pos_h, pos_w = posemb.sincos_2d_positions(7, 16), posemb.sincos_2d_positions(5, 16)
    table = reference.sincos_2d_table(pos_h, pos_w, 48)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for x in (torch.randn(3, 35, 48), torch.randn(35, 3, 96).transpose(0, 1)[..., ::2]):
            xd = x.to(device, dtype).requires_grad_()
            out = posemb.sincos_2d_add(xd, pos_h.to(device), pos_w.to(device))
            out.backward(torch.ones_like(out))
            close(f"sincos_2d_add {dtype} {tuple(x.stride())}", out, x.to(dtype).double() + table,
                  3e-2 if dtype.itemsize == 2 else 1e-6)
            close(f"sincos_2d_add backward {dtype}", xd.grad, torch.ones(x.shape), 0.0)
    # The 3-D grid of video patches: 3 frames of the same 7 x 5 grid.
    pos_t = posemb.sincos_2d_positions(3, None, 0.5)
    table = reference.sincos_2d_table(pos_h, pos_w, 48, pos_t=pos_t)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        for x in (torch.randn(2, 105, 48), torch.randn(105, 2, 96).transpose(0, 1)[..., ::2]):
            xd = x.to(device, dtype).requires_grad_()
            out = posemb.sincos_2d_add(xd, pos_h.to(device), pos_w.to(device), pos_t=pos_t.to(device))
            out.backward(torch.ones_like(out))
            close(f"sincos_2d_add pos_t {dtype} {tuple(x.stride())}", out, x.to(dtype).double() + table,
                  3e-2 if dtype.itemsize == 2 else 1e-6)
            close(f"sincos_2d_add pos_t backward {dtype}", xd.grad, torch.ones(x.shape), 0.0)


FAMILIES: Dict[str, Callable[[str], None]] = dict(sinusoidal=sinusoidal, learned=learned, bert=bert, rotary=rotary,
                                                  timestep=timestep, sincos_2d=sincos_2d)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_sanitize.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_sanitize: no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a GPU, or with --device cpu for the dry run", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    for name in args.only:
        FAMILIES[name](args.device)
        print(f"gpu_sanitize: {name} correct on {args.device}", flush=True)
    if args.device == "cuda":
        torch.cuda.synchronize()
    print(f"gpu_sanitize: all launches correct ({', '.join(args.only)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
