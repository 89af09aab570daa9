"""Every op captured in a CUDA graph: replayed with new inputs it gives what
the eager call gives, dropout draws a new mask at each replay, and an index
outside a table (whose host check capture forbids) gives NaN, never a read
outside the table. CUDA only: the GPU battery runs these (scripts/gpu_check.sh);
the kernels' guards are walked on the CPU by tests/cpp (test_bert_grid.cpp,
test_table_grad_grid.cpp)."""
from __future__ import annotations

import pytest
import torch

import posemb

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def capture(fn, *static):
    """fn(*static) captured in a graph (after a warm-up on a side stream, as
    torch.cuda.graphs asks); returns (graph, static output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static)
    return graph, out


def replay_matches_eager(fn, make_inputs, replays=3):
    static = make_inputs(0)
    graph, out = capture(fn, *static)
    for i in range(1, replays + 1):
        fresh = make_inputs(i)
        for s, f in zip(static, fresh):
            s.copy_(f)
        graph.replay()
        torch.testing.assert_close(out, fn(*fresh), rtol=0, atol=0)


def gen(i):
    return torch.Generator(device="cuda").manual_seed(100 + i)


CASES = {
    "sinusoidal_add_offsets": (
        lambda x, off: posemb.sinusoidal_add(x, offset=off),
        lambda i: (torch.randn(4, 8, 64, device="cuda", generator=gen(i)),
                   torch.randint(0, 5000, (4,), device="cuda", generator=gen(i))),
    ),
    "learned_add_positions": (
        lambda x, w, pos: posemb.learned_add(x, w, pos),
        lambda i: (torch.randn(3, 8, 64, device="cuda", generator=gen(i)),
                   torch.randn(32, 64, device="cuda", generator=gen(i)),
                   torch.randint(0, 32, (3, 8), device="cuda", generator=gen(i))),
    ),
    "learned_add_backward": (
        lambda g, pos: torch.ops.posemb.learned_add_backward(g, pos, None, 0, -2, 32, None),
        lambda i: (torch.randn(3, 8, 64, device="cuda", generator=gen(i)),
                   torch.randint(0, 32, (3, 8), device="cuda", generator=gen(i))),
    ),
    "rotary_positions": (
        lambda q, k, pos: posemb.rotary(q, k, torch.ones(32, device="cuda") * 0.01, pos),
        lambda i: (torch.randn(2, 16, 4, 64, device="cuda", generator=gen(i)),
                   torch.randn(2, 16, 2, 64, device="cuda", generator=gen(i)),
                   torch.randint(0, 1 << 20, (2, 16), device="cuda", generator=gen(i))),
    ),
    "rotary_packed": (
        lambda q, k, cu: posemb.rotary(q, k, torch.full((32,), 0.02, device="cuda"), cu_seqlens=cu),
        lambda i: (torch.randn(24, 4, 64, device="cuda", generator=gen(i)),
                   torch.randn(24, 2, 64, device="cuda", generator=gen(i)),
                   torch.tensor([0, 5 + i, 13, 24], device="cuda")),
    ),
    "bert_embeddings_eval": (
        lambda ids, types, w, p, t, g, b: posemb.bert_embeddings(ids, w, p, t, g, b, token_type_ids=types),
        lambda i: (torch.randint(0, 50, (4, 12), device="cuda", generator=gen(i)),
                   torch.randint(0, 2, (4, 12), device="cuda", generator=gen(i)),
                   torch.randn(50, 64, device="cuda", generator=gen(i)),
                   torch.randn(16, 64, device="cuda", generator=gen(i)),
                   torch.randn(2, 64, device="cuda", generator=gen(i)),
                   torch.randn(64, device="cuda", generator=gen(i)),
                   torch.randn(64, device="cuda", generator=gen(i))),
    ),
    "timestep_embedding": (
        lambda t: posemb.timestep_embedding(t, 256),
        lambda i: (torch.rand(8, device="cuda", generator=gen(i)) * 1000,),
    ),
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"cuda-{c}")
def test_cuda_graph_replay_matches_eager(case):
    fn, make_inputs = CASES[case]
    replay_matches_eager(fn, make_inputs)


def test_cuda_graph_dropout_draws_a_new_mask_at_each_replay():
    ids = torch.randint(0, 50, (4, 32), device="cuda")
    w = [torch.randn(50, 64, device="cuda"), torch.randn(40, 64, device="cuda"),
         torch.randn(2, 64, device="cuda"), torch.ones(64, device="cuda"), torch.zeros(64, device="cuda")]
    full = posemb.bert_embeddings(ids, *w)

    def train(ids):
        return posemb.bert_embeddings(ids, *w, dropout_p=0.5, training=True)

    graph, out = capture(train, ids)
    masks = []
    for _ in range(3):
        graph.replay()
        kept = out != 0
        torch.testing.assert_close(out[kept], (full * 2)[kept])  # kept values scaled by 1 / (1 - p)
        masks.append(kept.clone())
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


def test_cuda_graph_index_outside_the_table_gives_nan_not_a_stray_read():
    x, w = torch.randn(2, 4, 64, device="cuda"), torch.randn(8, 64, device="cuda")
    pos = torch.zeros(2, 4, dtype=torch.long, device="cuda")
    graph, out = capture(lambda x, pos: posemb.learned_add(x, w, pos), x, pos)
    pos[1, 2] = 1 << 40
    graph.replay()
    torch.cuda.synchronize()  # a stray read would surface here as a CUDA error
    assert out[1, 2].isnan().all() and not out[0].isnan().any()
    with pytest.raises(RuntimeError, match="learned_add: positions must be in"):
        posemb.learned_add(x, w, pos)  # eagerly, the clear error
