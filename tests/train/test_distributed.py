"""Data-parallel training with ``torch.distributed``: 2 CPU processes (gloo) that each take half of every
meta-batch must make the same update as one process that takes the whole meta-batch."""
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pyg_ghn.datasets import image_loaders
from pyg_ghn.datasets.deepnets1m import DeepNets1M, build_network
from pyg_ghn.nn import GHN
from pyg_ghn.train.trainer import TrainConfig, Trainer

WORLD_SIZE = 2
META_BATCH = 8
STEPS = 1  # Adam's first step has a closed form, which the weight check below uses
# Float32 rounding of the gradient (< 1e-4 relative) vs a wrong reduction (O(1)): see the gradient check.
GRAD_RTOL = 1e-3


class TinyDeepNets1M(DeepNets1M):
    """DeepNets-1M training architectures shrunk for speed (``C=8``, ``fc_dim=32``, at most 3 cells)."""

    def net_args(self, idx, seed=None):
        args = super().net_args(idx, seed)
        return {**args, 'C': 8, 'fc_dim': 32, 'n_cells': min(args['n_cells'], 3)}


def build_without_dropout(net_args):
    # The classifiers' Dropout(0.5) draws masks network by network from the global RNG, so the ranks'
    # networks would get other masks than the same networks in one process.
    net = build_network(net_args)
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.
    return net


def _train(root):
    """Trains ``STEPS`` steps from the same seeded GHN on every rank; returns the trainer and the indices of
    the architectures each step gave this process."""
    torch.manual_seed(0)
    ghn = GHN.from_config('ghn2', 'cifar10')
    archs = TinyDeepNets1M(root, 'train', num_nets=12, log=False)
    images = image_loaders('fashion_mnist', batch_size=16, split='val', seed=0).train
    # No clipping: with it, a gradient of the wrong scale could be clipped back to the right norm.
    config = TrainConfig(epochs=1, steps_per_epoch=STEPS, meta_batch=META_BATCH, seed=0, grad_clip=float('inf'))
    trainer = Trainer(ghn, archs, images, build_without_dropout, config, progress=False)
    seen, step = [], trainer.step

    def recording_step(batch, x, y):
        seen.append(batch.net_idx.tolist())
        return step(batch, x, y)

    trainer.step = recording_step
    trainer.train()
    return trainer, seen


def _worker(rank, port, root, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=WORLD_SIZE)
    try:
        trainer, seen = _train(root)
        result = {'seen': seen, 'rank': trainer.rank, 'world_size': trainer.world_size,
                  'weights': trainer.ghn.state_dict(),
                  'grads': {n: p.grad for n, p in trainer.ghn.named_parameters()}}
        # A parameter with a gradient on one rank only (its share did not use it) must still be averaged.
        p = trainer.ghn.op_embed.weight
        p.grad = torch.ones_like(p) if rank == 0 else None
        trainer._all_reduce_grads()
        result['one_sided'] = p.grad
        torch.save(result, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_ranks_make_the_single_process_update(tmp_path):
    torch.set_num_threads(1)
    root = str(tmp_path / 'deepnets1m')
    TinyDeepNets1M(root, 'train', num_nets=12, log=False)  # generate before the ranks read it
    ctx = mp.spawn(_worker, args=(_free_port(), root, str(tmp_path)), nprocs=WORLD_SIZE, join=False)
    # Only to turn a deadlock into a failure: the ranks take ~20 s alone, several times that on a loaded
    # 2-core machine, so the limit is generous.
    deadline = time.time() + 300
    while not ctx.join(timeout=2):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail('the distributed ranks did not finish (deadlock in a collective?)')
    ranks = [torch.load(str(tmp_path / f'rank{r}.pt'), weights_only=True) for r in range(WORLD_SIZE)]

    single, seen = _train(root)
    assert single.world_size == 1 and [(r['rank'], r['world_size']) for r in ranks] == [(0, 2), (1, 2)]
    # Each rank took half of the same meta-batch: rank r has items r, r + 2, ...
    for k in range(STEPS):
        assert len(seen[k]) == META_BATCH
        assert ranks[0]['seen'][k] == seen[k][0::2] and ranks[1]['seen'][k] == seen[k][1::2]

    # The averaged gradients equal the single-process gradient over the whole meta-batch (each rank's loss
    # is the mean over its 4 networks, the single loss the mean over 8). The two routes compute the same sums
    # in another order (the GHN's batched graph holds 4 or 8 networks, and the CPU's matrix kernels, AVX2 or
    # AVX-512, block a product of another size differently), so they differ by float32 rounding: at most
    # about n * u relative for sums of n terms, u = 2^-24 = 6e-8, i.e. < 1e-4 for the few thousand terms of
    # the longest sums here, and typically sqrt(n) * u, ~1e-6 (measured: at most 1.2e-6 to 1.9e-6 under
    # ATEN_CPU_CAPABILITY=default, avx2 and avx512). A wrong reduction (one rank's share dropped, the sum
    # not divided by the world size, shares crossed between tensors) is off by a share of the gradient
    # itself, O(1) relative.
    # GRAD_RTOL sits between the two, per tensor and in norm: elementwise relative error means nothing for
    # entries that are sums cancelling to rounding level.
    grads = {n: p.grad for n, p in single.ghn.named_parameters()}
    for name, g in grads.items():
        for r in ranks:
            assert torch.linalg.vector_norm(r['grads'][name] - g) <= GRAD_RTOL * torch.linalg.vector_norm(g), name
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()])) > 0.1

    # The ranks stay in sync, and each route's weights are Adam's first step from its own (averaged)
    # gradient. On step 1 the bias corrections cancel exactly: w1 = w0 - lr * h / (|h| + eps) with
    # h = g + weight_decay * w0, i.e. about lr * sign(h). So where |h| is at rounding level the two routes'
    # weights may differ by up to 2 lr (the sign of a rounding error), and comparing the routes' weights
    # directly with any tolerance below 2 lr depends on the CPU. Instead each route is held to the formula
    # (in float64) up to float32 rounding of the step: Adam's step is about 12 float32 operations on h
    # (moments, square root, bias corrections, eps, division, step size), each rounding once (<= u relative),
    # and the new weight rounds once more, so 16 u (|w0| + lr) covers it (measured: at most 4.9 u (|w0| + lr)).
    # A step with another gradient than the averaged one (a rank's own share, say) moves weights by ~2 lr in
    # the elements where that gradient's sign differs, 1e5 times that tolerance. With the gradient check
    # above, this bounds the routes' weight difference by what their gradient difference allows.
    opt = single.optimizer.param_groups[0]
    lr, eps, wd = single.config.lr, opt['eps'], single.config.weight_decay
    torch.manual_seed(0)
    init = GHN.from_config('ghn2', 'cifar10').state_dict()
    u = torch.finfo(torch.float32).eps / 2
    for name, w in single.ghn.state_dict().items():
        assert torch.equal(ranks[0]['weights'][name], ranks[1]['weights'][name]), name
        w0 = init[name].double()
        for w1, g in ((w, grads[name]), (ranks[0]['weights'][name], ranks[0]['grads'][name])):
            h = g.double() + wd * w0
            expected = w0 - lr * h / (h.abs() + eps)
            assert torch.all((w1.double() - expected).abs() <= 16 * u * (w0.abs() + lr)), name

    for r in ranks:  # (1 + 0) / 2 on both ranks
        assert torch.equal(r['one_sided'], torch.full_like(r['one_sided'], 0.5))
