"""posemb under PyTorch's own distributed stack, 2 processes on the CPU with
gloo: every op on DTensors (posemb.distributed's sharding rules) equals the
op on the whole tensors, runs on the local shards (the output keeps the
input's sharding), and trains (table gradients as partial sums); DDP and FSDP2
(fully_shard) trains a patched BERT as one process does."""
from __future__ import annotations

import os
import socket

import pytest
import torch

import posemb

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, *args):
    import torch.multiprocessing as mp

    mp.spawn(worker, args=(_free_port(), *args), nprocs=2, join=True)


def _init(rank: int, port: int):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    return init_device_mesh("cpu", (2,))


def _finish():
    """Leave the group only once both ranks are done, then end the worker
    without the interpreter's teardown. A rank that destroys the group while
    the other still trains or saves can abort the other's gloo threads, and
    at interpreter exit a still-joinable gloo or autograd thread can call
    std::terminate ("terminate called without an active exception") after
    the worker's checks have all passed. os._exit(0) skips that teardown;
    a failed check has raised before this point and still fails the spawn."""
    import sys

    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check(name, out, expected, placement):
    assert out.placements == (placement,), f"{name}: output placement {out.placements}, expected {placement}"
    torch.testing.assert_close(out.full_tensor(), expected, rtol=0, atol=0, msg=name)


def ops_worker(rank, port):
    import posemb.distributed  # noqa: F401  (the sharding rules)
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = _init(rank, port)
    g = torch.Generator().manual_seed(0)
    D = lambda t, *p: distribute_tensor(t, mesh, list(p))  # noqa: E731

    # sinusoidal: batch (offsets per sequence), sequence (positions sharded with
    # the tokens), seq-first; out of place and in place.
    x = torch.randn(4, 6, 16, generator=g)
    offsets = torch.tensor([0, 7, 100, 2**20])
    _check("sinusoidal batch", posemb.sinusoidal_add(D(x, Shard(0)), offset=D(offsets, Shard(0))),
           posemb.sinusoidal_add(x, offset=offsets), Shard(0))
    positions = torch.randint(0, 10**6, (4, 6), generator=g)
    _check("sinusoidal seq", posemb.sinusoidal_add(D(x, Shard(1)), D(positions, Shard(1))),
           posemb.sinusoidal_add(x, positions), Shard(1))
    _check("sinusoidal seq, positions (seq,)", posemb.sinusoidal_add(D(x, Shard(1)), D(positions[0], Shard(0))),
           posemb.sinusoidal_add(x, positions[0]), Shard(1))
    seq_first = x.transpose(0, 1).contiguous()
    _check("sinusoidal seq-first batch", posemb.sinusoidal_add(D(seq_first, Shard(1)), seq_dim=0),
           posemb.sinusoidal_add(seq_first, seq_dim=0), Shard(1))
    inplace = D(x.clone(), Shard(0))
    posemb.sinusoidal_add_(inplace, offset=5)
    _check("sinusoidal_ batch", inplace, posemb.sinusoidal_add(x, offset=5), Shard(0))

    # learned_add, forward and the table's gradient (a partial sum per shard).
    weight = torch.randn(2**20 + 16, 16, generator=g)
    for name, placement, pos in (("batch", Shard(0), D(offsets, Shard(0))),):
        xd = D(x, placement).requires_grad_()
        wd = D(weight, Replicate()).requires_grad_()
        y = posemb.learned_add(xd, wd, offset=pos)
        xs, ws = x.clone().requires_grad_(), weight.clone().requires_grad_()
        expected = posemb.learned_add(xs, ws, offset=offsets)
        _check(f"learned {name}", y, expected, placement)
        grad = torch.randn(expected.shape, generator=g)
        y.backward(D(grad, placement))
        expected.backward(grad)
        torch.testing.assert_close(xd.grad.full_tensor(), xs.grad)
        torch.testing.assert_close(wd.grad.full_tensor(), ws.grad, rtol=1e-6, atol=1e-6)
    small = torch.randn(64, 16, generator=g)
    pos = torch.randint(0, 64, (4, 6), generator=g)
    _check("learned seq", posemb.learned_add(D(x, Shard(1)), D(small, Replicate()), D(pos, Shard(1))),
           posemb.learned_add(x, small, pos), Shard(1))

    # rotary: heads (tensor parallel), batch, sequence; in place on heads.
    inv_freq = posemb.rope.frequency_plan({"rope_theta": 5e5}, 8).inv_freq
    q, k = torch.randn(2, 6, 4, 8, generator=g), torch.randn(2, 6, 2, 8, generator=g)
    w = D(inv_freq, Replicate())
    eq, ek = posemb.rotary(q, k, inv_freq, offset=33)
    for name, p in (("heads", Shard(2)), ("batch", Shard(0))):
        oq, ok = posemb.rotary(D(q, p), D(k, p), w, offset=33)
        _check(f"rotary {name} q", oq, eq, p)
        _check(f"rotary {name} k", ok, ek, p)
    positions = torch.randint(0, 10**6, (2, 6), generator=g)
    oq, ok = posemb.rotary(D(q, Shard(1)), D(k, Shard(1)), w, D(positions, Shard(1)))
    eq2, ek2 = posemb.rotary(q, k, inv_freq, positions)
    _check("rotary seq q", oq, eq2, Shard(1))
    _check("rotary seq k", ok, ek2, Shard(1))
    qd, kd = D(q.clone(), Shard(2)), D(k.clone(), Shard(2))
    posemb.rotary(qd, kd, w, offset=33, inplace=True)
    _check("rotary_ heads q", qd, eq, Shard(2))
    _check("rotary_ heads k", kd, ek, Shard(2))
    # Positions with axes (multimodal rope) follow q's batch and tokens.
    axes = torch.randint(0, 10**6, (3, 2, 6), generator=g)
    mq, mk = posemb.rotary(q, k, inv_freq, axes, mrope_section=[1, 1, 2])
    for name, p, on_axes in (("heads", Shard(2), Replicate()), ("batch", Shard(0), Shard(1)),
                             ("seq", Shard(1), Shard(2))):
        oq, ok = posemb.rotary(D(q, p), D(k, p), w, D(axes, on_axes), mrope_section=[1, 1, 2])
        _check(f"mrope {name} q", oq, mq, p)
        _check(f"mrope {name} k", ok, mk, p)
    # Training through the heads-sharded rotary: the gradients are the inverse rotation.
    qd = D(q, Shard(2)).requires_grad_()
    oq = posemb.rotary(qd, None, w, offset=33)
    oq.backward(D(torch.ones_like(q), Shard(2)))
    qs = q.clone().requires_grad_()
    posemb.rotary(qs, None, inv_freq, offset=33).backward(torch.ones_like(q))
    torch.testing.assert_close(qd.grad.full_tensor(), qs.grad, rtol=0, atol=0)

    # The BERT block on the batch, forward and every table's gradient.
    ids = torch.randint(0, 30, (4, 6), generator=g)
    types = torch.randint(0, 2, (4, 6), generator=g)
    tables = [torch.randn(30, 16, generator=g), torch.randn(12, 16, generator=g), torch.randn(2, 16, generator=g),
              torch.randn(16, generator=g), torch.randn(16, generator=g)]
    local = [t.clone().requires_grad_() for t in tables]
    dist_tables = [D(t, Replicate()).requires_grad_() for t in tables]
    out = posemb.bert_embeddings(D(ids, Shard(0)), *dist_tables, token_type_ids=D(types, Shard(0)), cache_length=3)
    expected = posemb.bert_embeddings(ids, *local, token_type_ids=types, cache_length=3)
    assert out.placements == (Shard(0),)
    torch.testing.assert_close(out.full_tensor(), expected, rtol=1e-6, atol=1e-6)
    grad = torch.randn(expected.shape, generator=g)
    out.backward(D(grad, Shard(0)))
    expected.backward(grad)
    for name, a, b in zip(("word", "position", "type", "ln_weight", "ln_bias"), dist_tables, local):
        torch.testing.assert_close(a.grad.full_tensor(), b.grad, rtol=1e-5, atol=1e-5, msg=name)

    # make_positions on the batch.
    padded = torch.tensor([[5, 6, 1, 1], [7, 1, 1, 1], [5, 6, 7, 8], [1, 1, 1, 1]])
    _check("make_positions batch", torch.ops.posemb.make_positions(D(padded, Shard(0)), 1),
           posemb.make_positions(padded, 1), Shard(0))

    _finish()


def test_every_op_on_dtensors_two_processes():
    _spawn(ops_worker)


def fsdp_worker(rank, port, ids, out_path):
    from torch.distributed.fsdp import fully_shard

    _init(rank, port)
    from test_hf import small_roberta, train_steps

    model = small_roberta()
    posemb.hf.patch(model)
    for layer in model.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    train_steps(model, ids, 2, rank)
    full = {n: p.full_tensor().detach() for n, p in model.named_parameters()}
    if rank == 0:
        torch.save(full, out_path)
    _finish()


def ddp_worker(rank, port, ids, out_path):
    _init(rank, port)
    from test_hf import small_roberta, train_steps

    model = small_roberta()
    posemb.hf.patch(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    train_steps(ddp, ids, 2, rank)
    if rank == 0:
        torch.save({n: p.detach() for n, p in model.named_parameters()}, out_path)
    del ddp
    _finish()


def _trains_as_one_process(worker, out_path):
    """Three SGD steps of a patched RoBERTa by `worker` on 2 processes (rank
    0 saves the parameters to out_path) equal the same steps on one."""
    from test_hf import BATCH, STEPS, small_roberta, train_steps

    ids = torch.randint(3, 60, (STEPS, BATCH, 10), generator=torch.Generator().manual_seed(4))
    _spawn(worker, ids, str(out_path))
    single = small_roberta()
    posemb.hf.patch(single)
    train_steps(single, ids)
    trained = torch.load(out_path)
    for name, p in single.named_parameters():
        torch.testing.assert_close(trained[name], p.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_ddp_training_matches_one_process(tmp_path):
    """DistributedDataParallel (gradients all-reduced) on a patched RoBERTa."""
    _trains_as_one_process(ddp_worker, tmp_path / "ddp.pt")


def test_fsdp2_training_matches_one_process(tmp_path):
    """fully_shard on a patched RoBERTa (posemb's fused embedding block inside)."""
    _trains_as_one_process(fsdp_worker, tmp_path / "fsdp.pt")


def tensor_parallel_worker(rank, port, rope_types):
    """Llama attention under parallelize_module, Hugging Face's own plan:
    q, k, v ColwiseParallel (each rank projects its own heads, local
    outputs), o_proj RowwiseParallel (the sum over heads all-reduced)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = _init(rank, port)
    from test_hf_contract import build

    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(3))
    plan = {"self_attn.q_proj": ColwiseParallel(), "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(), "self_attn.o_proj": RowwiseParallel()}
    original = posemb.ops.rotary
    for rope_type in rope_types:
        reference = build("llama", rope_type)  # unsharded and unpatched; the same seed on both ranks
        position_ids = torch.arange(12).expand(2, 12) + (600 if rope_type in ("dynamic", "longrope") else 0)
        want = reference(ids, position_ids=position_ids).logits
        want.logsumexp(-1).mean().backward()
        model = build("llama", rope_type)
        assert posemb.hf.patch(model)
        for layer in model.model.layers:
            parallelize_module(layer, mesh, plan)
        q_heads = []

        def counted(q, k, *args, **kwargs):
            q_heads.append(q.shape[1])  # (batch, heads, seq, head_dim) in the layers
            return original(q, k, *args, **kwargs)

        posemb.ops.rotary = counted
        try:
            got = model(ids, position_ids=position_ids).logits
        finally:
            posemb.ops.rotary = original
        # The (cos, sin) table, then the fused rotary of each layer on this
        # rank's 2 of the 4 query heads.
        assert q_heads[1:] == [model.config.num_attention_heads // 2] * model.config.num_hidden_layers, q_heads
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=rope_type)
        got.logsumexp(-1).mean().backward()
        for name, p in model.named_parameters():
            grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            torch.testing.assert_close(grad, reference.get_parameter(name).grad, rtol=1e-4, atol=1e-6,
                                       msg=f"{rope_type} {name}")
    _finish()


def test_llama_attention_tensor_parallel_equals_one_process():
    """A patched Llama whose attention is tensor parallel on 2 processes
    (ColwiseParallel q/k/v, RowwiseParallel o_proj) gives the unsharded,
    unpatched model's logits and gradients, with posemb's fused rotary on
    each rank's local heads (dynamic and longrope past the context too)."""
    _spawn(tensor_parallel_worker, ["default", "yarn", "dynamic", "longrope"])
