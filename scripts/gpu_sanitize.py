"""A few CUDA launches covering every path of the kernels (vector and scalar,
odd tails, split batches, per-sequence positions, in place), small enough to
run under compute-sanitizer. Exits non-zero on a wrong result."""
import torch

import posemb
from posemb import reference


def main() -> None:
    torch.manual_seed(0)
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
            xc = x.to("cuda", dtype)
            kwc = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
            out = posemb.sinusoidal_add(xc, **kwc)
            y = xc.clone()
            posemb.sinusoidal_add_(y, **kwc)
            ref = reference.sinusoidal_add(xc, **kw)
            tol = 2e-6 if dtype in (torch.float32, torch.float64) else 2e-2
            err = (out.double().cpu() - ref).abs().max().item() if out.numel() else 0.0
            assert err <= tol * (1 + ref.abs().max().item()), (dtype, x.shape, kw.keys(), err)
            assert torch.equal(out, y)
    learned_and_bert()
    rotary()
    torch.cuda.synchronize()
    print("gpu_sanitize: all launches correct")


def learned_and_bert() -> None:
    """learned_add forward/backward (vector and scalar paths) and the BERT
    block forward/backward with dropout, against the CPU ops."""
    for dtype in (torch.float32, torch.bfloat16):
        for x in (torch.randn(4, 9, 64), torch.randn(4, 9, 66)[..., 1:65]):
            w = torch.randn(20, 64)
            pos = torch.randint(0, 20, (4, 9))
            xc, wc = x.to("cuda", dtype).requires_grad_(), w.to("cuda", dtype).requires_grad_()
            out = posemb.learned_add(xc, wc, pos.cuda())
            out.backward(torch.ones_like(out))
            ref = posemb.learned_add(x.to(dtype), w.to(dtype), pos)
            assert torch.allclose(out.cpu().float(), ref.float(), atol=1e-2), "learned_add"
            counts = torch.bincount(pos.view(-1), minlength=20).float()
            assert torch.allclose(wc.grad.float().cpu()[:, 0], counts, atol=1e-2), "learned_add backward"
        # hidden 768, 2400 rows: several warps per block, several rows per block
        tables = [torch.randn(30, 768), torch.randn(300, 768), torch.randn(2, 768), torch.randn(768), torch.randn(768)]
        ids = torch.randint(0, 30, (8, 300))
        seed = torch.tensor(9)
        cpu = [t.to(dtype).requires_grad_() for t in tables]
        gpu = [t.to("cuda", dtype).requires_grad_() for t in tables]
        op = torch.ops.posemb.bert_embeddings
        a = op(ids, *cpu, dropout_p=0.1, dropout_seed=seed)[0]
        b = op(ids.cuda(), *gpu, dropout_p=0.1, dropout_seed=seed)[0]
        assert torch.allclose(a.float(), b.cpu().float(), atol=5e-2), "bert_embeddings"
        g = torch.randn_like(a)
        a.backward(g)
        b.backward(g.cuda())
        for c, d in zip(cpu, gpu):
            assert torch.allclose(c.grad.float(), d.grad.cpu().float(), atol=5e-2, rtol=5e-2), "bert backward"


if __name__ == "__main__":
    main()


def rotary() -> None:
    """rotary in each layout, packed, partial and interleaved, in place and
    backward, against the CPU op."""
    w = posemb.rope.frequency_plan({"rope_theta": 10000.0}, 48).inv_freq
    for dtype in (torch.float32, torch.bfloat16):
        for seq_dim, shape_q, shape_k in ((1, (2, 9, 4, 64), (2, 9, 1, 64)), (2, (2, 4, 9, 64), (2, 1, 9, 64))):
            q, k = torch.randn(shape_q).to(dtype), torch.randn(shape_k).to(dtype)
            for interleaved in (False, True):
                a = posemb.rotary(q, k, w, offset=7, interleaved=interleaved, seq_dim=seq_dim)
                b = posemb.rotary(q.cuda(), k.cuda(), w.cuda(), offset=7, interleaved=interleaved, seq_dim=seq_dim)
                for x, y in zip(a, b):
                    assert torch.allclose(x.float(), y.cpu().float(), atol=2e-2), "rotary"
        packed, cu = torch.randn(10, 3, 64).to(dtype), torch.tensor([0, 4, 10], dtype=torch.int32)
        a = posemb.rotary(packed, None, w, cu_seqlens=cu)
        b = posemb.rotary(packed.cuda(), None, w.cuda(), cu_seqlens=cu.cuda())
        assert torch.allclose(a.float(), b.cpu().float(), atol=2e-2), "rotary packed"
        qc = q.cuda().requires_grad_()
        posemb.rotary(qc, None, w.cuda(), seq_dim=2).sum().backward()
        inplace = q.cuda().clone()
        posemb.rotary(inplace, None, w.cuda(), seq_dim=2, inplace=True)