"""Best-of-N CPU timings of a few posemb calls against their rooflines, for
comparing two builds on a shared machine (the minimum of many short runs
is the least disturbed by other work):

    python bench/cpu_ab.py THREADS                       # this build
    POSEMB_LIBRARY=<other>/libposemb.so python bench/cpu_ab.py THREADS
"""
import sys
import time

import torch

import posemb


def best(fn, n, inner=1):
    for _ in range(3):
        fn()
    b = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        b = min(b, (time.perf_counter() - t) / inner)
    return b * 1e6


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    r = {}
    for dt in (torch.float32, torch.bfloat16):
        n = str(dt).split(".")[1]
        x = torch.randn(64, 1, 1024).to(dt)
        off = torch.randint(0, 4000, (64,))
        r[f"decode (64,1,1024) {n}"] = best(lambda: posemb.sinusoidal_add(x, offset=off), 200, 20)
        r[f"clone {n}"] = best(lambda: x.clone(), 200, 20)
        X = torch.randn(8, 2048, 1024).to(dt)
        r[f"in place (8,2048,1024) {n}"] = best(lambda: posemb.sinusoidal_add_(X), 12)
        r[f"mul_ {n}"] = best(lambda: X.mul_(1.0), 12)
        inv = posemb.rope.frequency_plan({"rope_theta": 5e5}, 128).inv_freq
        q, k = torch.randn(1, 512, 32, 128).to(dt), torch.randn(1, 512, 8, 128).to(dt)
        r[f"rotary (1,512,32/8,128) {n}"] = best(lambda: posemb.rotary(q, k, inv), 15)
        # (batch, heads, seq, head_dim), as Llama's attention rotates, in place.
        qh, kh = torch.randn(1, 32, 2048, 128).to(dt), torch.randn(1, 8, 2048, 128).to(dt)
        r[f"rotary_ (1,32/8,2048,128) bhsd {n}"] = best(lambda: posemb.rotary(qh, kh, inv, seq_dim=2, inplace=True), 8)
        r[f"mul_ of q, k (bhsd) {n}"] = best(lambda: (qh.mul_(1.0), kh.mul_(1.0)), 8)
    x, table = torch.randn(6, 10, 384), torch.randn(512, 384)
    r["sinusoidal_add (6,10,384)"] = best(lambda: posemb.sinusoidal_add(x), 300, 50)
    r["x + table[:T]"] = best(lambda: x + table[:10], 300, 50)
    for name, us in r.items():
        print(f"{name:32s} {us:10.1f} us")


if __name__ == "__main__":
    main()
