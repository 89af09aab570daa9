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
    torch.cuda.synchronize()
    print("gpu_sanitize: all launches correct")


if __name__ == "__main__":
    main()
