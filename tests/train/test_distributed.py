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
STEPS = 1


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
    deadline = time.time() + 120
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

    # The averaged gradients equal the single-process gradient over the whole meta-batch
    # (each rank's loss is the mean over its 4 networks, the single loss the mean over 8).
    grads = dict(single.ghn.named_parameters())
    for name, p in grads.items():
        for r in ranks:
            assert torch.allclose(r['grads'][name], p.grad, rtol=1e-4, atol=1e-6), name
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in grads.values()]))
    assert norm > 0.1
    # ... so the weights after the Adam step match too, and the ranks stay in sync. Adam's first update is
    # about lr * sign(g): where |g| is at float noise (< 1e-5) the two routes may differ by a fraction of lr,
    # but a missing or wrong-signed update (lr = 1e-3 away) is caught.
    for name, w in single.ghn.state_dict().items():
        assert torch.equal(ranks[0]['weights'][name], ranks[1]['weights'][name]), name
        assert torch.allclose(ranks[0]['weights'][name], w, rtol=0, atol=1e-4), name
        if name in grads:
            sure = grads[name].grad.abs() > 1e-5
            assert torch.allclose(ranks[0]['weights'][name][sure], w[sure], rtol=1e-5, atol=1e-6), name
    assert not torch.allclose(single.ghn.op_embed.weight, GHN.from_config('ghn2', 'cifar10').op_embed.weight)

    for r in ranks:  # (1 + 0) / 2 on both ranks
        assert torch.equal(r['one_sided'], torch.full_like(r['one_sided'], 0.5))
