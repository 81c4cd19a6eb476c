"""Tests of :class:`pyg_ghn.train.trainer.Trainer` and :mod:`pyg_ghn.train.meta_batch` on real Fashion-MNIST
images and small DeepNets-1M training splits generated into a temporary folder."""
import gc
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch_geometric.data import Batch

from pyg_ghn.datasets import FashionMNIST, InMemoryImageDataset, image_loaders
from pyg_ghn.datasets.deepnets1m import DeepNets1M, build_network
from pyg_ghn.nn import GHN
from pyg_ghn.train.meta_batch import MetaBatchSampler, meta_batch_loader, networks_of, norm_free_indices
from pyg_ghn.train.trainer import TooManySkippedSteps, TrainConfig, Trainer


class TinyDeepNets1M(DeepNets1M):
    """DeepNets-1M training architectures (real genotypes, stems, norms and heads) shrunk so that a training
    step takes a fraction of a second: ``C=8``, ``fc_dim=32`` and at most 3 cells. Graphs and networks both
    come from these ``net_args``, so the trainer's code paths are the real ones."""

    def net_args(self, idx, seed=None):
        args = super().net_args(idx, seed)
        return {**args, 'C': 8, 'fc_dim': 32, 'n_cells': min(args['n_cells'], 3)}




@pytest.fixture(scope='module')
def arch_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('deepnets1m'))
    TinyDeepNets1M(root, 'train', num_nets=6, log=False)  # generated once, reused by every test
    return root


@pytest.fixture(scope='module')
def archs(arch_root):
    return TinyDeepNets1M(arch_root, 'train', num_nets=6, log=False)


@pytest.fixture(scope='module')
def loaders():
    return image_loaders('fashion_mnist', batch_size=16, split='val', seed=0)


@pytest.fixture(scope='module')
def images(loaders):
    x, y = next(iter(loaders.train))
    return x, y


def make_trainer(dataset, image_loader, init_seed=0, ckpt_path=None, compact=False, **config):
    torch.manual_seed(init_seed)
    ghn = GHN.from_config('ghn2', 'cifar10')
    config = TrainConfig(**{'epochs': 1, 'steps_per_epoch': 4, 'meta_batch': 4, 'seed': 0, **config})
    return Trainer(ghn, dataset, image_loader, build_network, config, ckpt_path=ckpt_path, progress=False,
                   compact=compact)


def first_meta_batch(dataset, meta_batch=4, seed=0):
    return next(iter(meta_batch_loader(dataset, meta_batch, seed)))


def ghn_weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.ghn.state_dict().items()}


def assert_state_dicts_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- the loss and one optimizer step

def test_loss_equals_mean_cross_entropy_of_the_predicted_networks(archs, loaders, images):
    # Independent route: real modules (built from the dataset), parameters copied in by GHN.predict_into with
    # BN in batch-statistics mode, plain forward passes.
    x, y = images
    trainer = make_trainer(archs, loaders.train)
    batch = first_meta_batch(archs)
    with torch.no_grad():
        torch.manual_seed(1)  # the networks' classifiers have Dropout(0.5): same draws in both routes
        loss, acc = trainer.loss(batch, x, y)
        nets = [build_network(json.loads(args)) for args in batch.net_args]
        for net, g in zip(nets, batch.to_data_list()):
            assert sum(p.numel() for p in net.parameters()) < 100_000  # really tiny networks
            trainer.ghn(net, g)
        torch.manual_seed(1)
        ref_loss, ref_acc = [], []
        for net in nets:
            logits = net(x)
            logits = logits[0] if isinstance(logits, tuple) else logits
            ref_loss.append(F.cross_entropy(logits, y))
            ref_acc.append((logits.argmax(1) == y).float().mean())
    assert batch.num_graphs == 4
    assert loss.item() == pytest.approx(torch.stack(ref_loss).mean().item(), rel=1e-5)
    assert acc.item() == pytest.approx(torch.stack(ref_acc).mean().item(), abs=1e-6)


def test_attached_networks_give_the_same_loss(arch_root, archs, loaders, images):
    # DeepNets1M(attach_network=True) ships the meta-device modules with the graphs (what the CLI uses).
    x, y = images
    attached = TinyDeepNets1M(arch_root, 'train', num_nets=6, attach_network=True, log=False)
    trainer = make_trainer(archs, loaders.train)
    a, b = first_meta_batch(archs), first_meta_batch(attached)
    assert getattr(a, 'network', None) is None and len(b.network) == 4
    nets = networks_of(a, build_network, torch.device('cpu'))
    assert all(p.is_meta for net in nets for p in net.parameters())  # placeholders only
    assert all(not t.is_meta for net in nets for t in net.buffers())  # buffers are materialised
    with torch.no_grad():
        torch.manual_seed(1)  # Dropout in the classifiers
        loss_a = trainer.loss(a, x, y)[0]
        torch.manual_seed(1)
        assert torch.equal(loss_a, trainer.loss(b, x, y)[0])


def test_steps_on_a_fixed_batch_lower_the_loss(archs, loaders, images):
    x, y = images
    trainer = make_trainer(archs, loaders.train)
    batch = first_meta_batch(archs)
    with torch.no_grad():
        torch.manual_seed(2)  # the networks' classifiers have Dropout(0.5)
        loss0, acc0 = trainer.loss(batch, x, y)
    torch.manual_seed(2)
    outs = [trainer.step(batch, x, y) for _ in range(8)]
    with torch.no_grad():
        torch.manual_seed(2)
        loss1, acc1 = trainer.loss(batch, x, y)
    losses = [o['loss'] for o in outs]
    assert losses[0] == pytest.approx(loss0.item(), rel=1e-6)  # a step reports the loss before its update
    assert all(math.isfinite(o['grad_norm']) and o['grad_norm'] > 0 for o in outs)
    assert losses[-1] < losses[0] and loss1 < loss0 - 0.2, losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 6, losses  # descends (almost) every step
    assert acc1 > acc0


def test_gradients_are_clipped(archs, loaders, images):
    x, y = images
    trainer = make_trainer(archs, loaders.train, grad_clip=0.01)
    out = trainer.step(first_meta_batch(archs), x, y)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.ghn.parameters()]))
    assert out['grad_norm'] > 0.1  # the norm before clipping
    assert norm.item() == pytest.approx(0.01, rel=1e-4)


# ---------------------------------------------------------------- non-finite steps

def test_non_finite_step_is_skipped_and_counted(archs, loaders, images):
    x, y = images
    trainer = make_trainer(archs, loaders.train)
    batch = first_meta_batch(archs)
    before = ghn_weights(trainer)
    assert trainer.step(batch, torch.full_like(x, float('nan')), y) is None
    assert trainer.state.skipped == 1
    assert_state_dicts_equal(before, ghn_weights(trainer))
    assert not trainer.optimizer.state  # Adam took no step
    assert all(p.grad is None for p in trainer.ghn.parameters())

    assert trainer.step(batch, x, y) is not None  # a finite step afterwards trains as usual
    assert trainer.state.skipped == 1
    after = ghn_weights(trainer)
    assert not all(torch.equal(before[k], after[k]) for k in before)


def _images_loader(x, y, nan_batches=()):
    x = x.clone()
    for b in nan_batches:
        x[16 * b:16 * (b + 1)] = float('nan')
    return DataLoader(list(zip(x, y)), batch_size=16)


def test_train_counts_skipped_steps(archs, loaders):
    x, y = next(iter(DataLoader(loaders.train.dataset, batch_size=64)))
    trainer = make_trainer(archs, _images_loader(x, y, nan_batches=[1]), meta_batch=2, steps_per_epoch=4,
                           max_skipped_frac=0.5)  # up to 2 skipped steps
    history = trainer.train()
    assert trainer.state.skipped == 1 and trainer.state.global_step == 4
    assert history[0]['skipped'] == 1 and math.isfinite(history[0]['loss'])
    assert all(torch.isfinite(p).all() for p in trainer.ghn.parameters())


def test_too_many_skipped_steps_raise(archs, loaders):
    x, y = next(iter(DataLoader(loaders.train.dataset, batch_size=32)))
    trainer = make_trainer(archs, _images_loader(x, y, nan_batches=[0, 1]), meta_batch=2, steps_per_epoch=100,
                           max_skipped_frac=0.02)  # 2 skipped steps allowed
    before = ghn_weights(trainer)
    with pytest.raises(TooManySkippedSteps,
                       match=r'3 steps of epoch 1 were skipped .*more than 2 .*Lower the learning rate'):
        trainer.train()
    assert trainer.state.skipped == 3 and trainer.state.global_step == 2
    assert_state_dicts_equal(before, ghn_weights(trainer))


def test_skipped_steps_are_limited_per_epoch_not_per_run(archs, loaders):
    # One bad batch per epoch (the loader is not shuffled) with 1 skip allowed per epoch: a long run must not
    # abort because the skips add up over epochs (the original resets its count every epoch).
    x, y = next(iter(DataLoader(loaders.train.dataset, batch_size=64)))
    trainer = make_trainer(archs, _images_loader(x, y, nan_batches=[1]), meta_batch=2, steps_per_epoch=4,
                           epochs=3, max_skipped_frac=0.25)
    history = trainer.train()
    assert trainer.state.global_step == 12 and trainer.state.skipped == 3
    assert [h['skipped'] for h in history] == [1, 2, 3]


def test_non_finite_gradients_with_a_finite_loss_skip_the_step(archs, loaders, images):
    x, y = images
    trainer = make_trainer(archs, loaders.train)
    batch = first_meta_batch(archs)
    before = ghn_weights(trainer)
    hook = trainer.ghn.op_embed.weight.register_hook(lambda g: g * float('nan'))
    assert trainer.step(batch, x, y) is None  # the loss was finite; one gradient was not
    assert trainer.state.skipped == 1 and not trainer.optimizer.state
    assert_state_dicts_equal(before, ghn_weights(trainer))
    hook.remove()
    out = trainer.step(batch, x, y)
    assert out is not None and math.isfinite(out['grad_norm'])
    assert all(torch.isfinite(p).all() for p in trainer.ghn.parameters())


def test_node_budget_is_on_the_whole_meta_batch_across_ranks(archs, loaders, monkeypatch):
    # A meta-batch of 2 graphs split over 2 ranks, 10 + 30 nodes, max_nodes 50: one process would take it, so
    # the ranks must too (the sum is what counts, not each rank's share of the budget).
    from types import SimpleNamespace

    import pyg_ghn.train.trainer as trainer_module
    trainer = make_trainer(archs, loaders.train, meta_batch=2, max_nodes=50)
    other_rank = torch.tensor([30., 1.])
    monkeypatch.setattr(trainer_module.dist, 'all_reduce', lambda t, *a, **k: t.add_(other_rank))
    trainer.world_size = 2
    assert not trainer._over_budget(SimpleNamespace(num_nodes=10, num_graphs=1))
    other_rank = torch.tensor([45., 1.])
    assert trainer._over_budget(SimpleNamespace(num_nodes=10, num_graphs=1))
    trainer.world_size = 1
    assert trainer._over_budget(SimpleNamespace(num_nodes=51, num_graphs=2))
    assert not trainer._over_budget(SimpleNamespace(num_nodes=50, num_graphs=2))


# ---------------------------------------------------------------- checkpoints and exact resumption

def test_resume_refuses_another_run(archs, loaders, tmp_path):
    path = str(tmp_path / 'trainer.pt')
    make_trainer(archs, loaders.train).save_checkpoint(path)
    make_trainer(archs, loaders.train, init_seed=1).load_checkpoint(path)  # the same run: fine
    with pytest.raises(ValueError, match=r"another training run.*seed: 0 in the checkpoint, 1 now; "
                                         r"meta_batch: 4 in the checkpoint, 2 now"):
        make_trainer(archs, loaders.train, seed=1, meta_batch=2).load_checkpoint(path)
    with pytest.raises(ValueError, match=r"another training run.*norm_free_prob: 0.0 in the checkpoint, 0.5 now"):
        make_trainer(archs, loaders.train, norm_free_prob=0.5).load_checkpoint(path)
    with pytest.raises(ValueError, match=r'training architectures: 6 in the checkpoint, 4 now'):
        make_trainer(archs[:4], loaders.train).load_checkpoint(path)
    # Settings that do not change the run (checkpoint frequency, logging) may differ.
    make_trainer(archs, loaders.train, ckpt_every=7, log_every=3).load_checkpoint(path)


def _small_augmented_loader():
    # 32 real images, augmented and shuffled like image_loaders' training loader; an epoch of 4 steps wraps
    # around the 2 batches, which resuming must replay too.
    fm = FashionMNIST(split='val')
    ds = InMemoryImageDataset(fm.data[:32], fm.targets[:32], fm.mean.flatten().tolist(),
                              fm.std.flatten().tolist(), augment=True)
    return DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator())


def test_kill_and_resume_gives_the_same_weights(arch_root, tmp_path):
    archs = TinyDeepNets1M(arch_root, 'train', num_nets=6, attach_network=True, log=False)
    cfg = dict(epochs=2, steps_per_epoch=4, meta_batch=2, lr_milestones=(0.5,), gamma=0.1)
    ref = make_trainer(archs, _small_augmented_loader(), ckpt_path=str(tmp_path / 'ref.pt'), **cfg)
    ref_history = ref.train()
    assert [h['lr'] for h in ref_history] == pytest.approx([1e-3, 1e-4])
    assert ref.state.global_step == 8

    # The same run, stopped by the time limit after every step and continued by a fresh trainer (with
    # differently initialised weights, which the checkpoint must overwrite) in a fresh stream.
    ckpt = str(tmp_path / 'run' / 'trainer.pt')
    steps = []
    trainer = make_trainer(archs, _small_augmented_loader(), ckpt_path=ckpt, **cfg)
    trainer.train(time_limit=0)
    steps.append(trainer.state.global_step)
    while trainer.state.global_step < 8:
        assert os.listdir(os.path.dirname(ckpt)) == ['trainer.pt']  # written atomically: no temporary files
        trainer = make_trainer(archs, _small_augmented_loader(), init_seed=len(steps), ckpt_path=ckpt, **cfg)
        trainer.load_checkpoint(ckpt)
        trainer.train(time_limit=0)
        steps.append(trainer.state.global_step)
    # Every step crosses the limit, so the run stops after each one, inside an epoch and at its end (step 4);
    # a stop at step 3 resumes past the end of the 2-batch loader.
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]

    assert_state_dicts_equal(ghn_weights(ref), ghn_weights(trainer))
    for a, b in zip(ref.optimizer.state.values(), trainer.optimizer.state.values()):
        assert_state_dicts_equal(a, b)
    assert ref.scheduler.state_dict() == trainer.scheduler.state_dict()
    assert ref.state.draws == trainer.state.draws == 8
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ('seconds', 'cpu_hours', 'data_seconds')}  # noqa: E731
                        for h in hs]
    assert strip(trainer.state.history) == strip(ref_history)
    rng = [torch.load(p, weights_only=True)['rng'] for p in (str(tmp_path / 'ref.pt'), ckpt)]
    assert torch.equal(rng[0]['torch'], rng[1]['torch']) and rng[0]['numpy'] == rng[1]['numpy']

    # The last checkpoint of both runs restores the same state.
    a = make_trainer(archs, _small_augmented_loader(), **cfg)
    a.load_checkpoint(str(tmp_path / 'ref.pt'))
    assert_state_dicts_equal(ghn_weights(a), ghn_weights(ref))


def test_max_steps_stops_at_an_equal_budget_and_resumes(arch_root, tmp_path):
    archs = TinyDeepNets1M(arch_root, 'train', num_nets=6, attach_network=True, log=False)
    cfg = dict(epochs=2, steps_per_epoch=4, meta_batch=2)
    ref = make_trainer(archs, _small_augmented_loader(), **cfg)
    ref.train()
    ckpt = str(tmp_path / 'trainer.pt')
    trainer = make_trainer(archs, _small_augmented_loader(), ckpt_path=ckpt, **cfg)
    trainer.train(max_steps=3)  # inside an epoch
    assert trainer.state.global_step == 3 and trainer.state.history == []
    for budget, history in ((4, 1), (4, 1), (None, 2)):  # at an epoch's end; already there; to the end
        trainer = make_trainer(archs, _small_augmented_loader(), init_seed=budget or 0, ckpt_path=ckpt, **cfg)
        trainer.load_checkpoint(ckpt)
        trainer.train(max_steps=budget)
        assert trainer.state.global_step == (budget or 8) and len(trainer.state.history) == history
    assert_state_dicts_equal(ghn_weights(ref), ghn_weights(trainer))


def test_checkpoint_write_is_atomic(archs, loaders, tmp_path, monkeypatch):
    path = str(tmp_path / 'trainer.pt')
    trainer = make_trainer(archs, loaders.train, ckpt_path=path)
    trainer.save_checkpoint()
    good = open(path, 'rb').read()

    def failing_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as fh:
            fh.write(b'half a checkpoint')
        raise OSError('No space left on device')

    monkeypatch.setattr(torch, 'save', failing_save)
    trainer.state.global_step = 7
    with pytest.raises(OSError, match='No space left'):
        trainer.save_checkpoint()
    assert os.listdir(tmp_path) == ['trainer.pt'] and open(path, 'rb').read() == good
    monkeypatch.undo()
    fresh = make_trainer(archs, loaders.train, init_seed=1)
    fresh.load_checkpoint(path)
    assert fresh.state.global_step == 0
    assert_state_dicts_equal(ghn_weights(fresh), ghn_weights(trainer))


def test_corrupt_or_foreign_checkpoint_gives_a_clear_error(archs, loaders, tmp_path, flip_byte):
    trainer = make_trainer(archs, loaders.train)
    path = str(tmp_path / 'trainer.pt')
    trainer.save_checkpoint(path)
    # A flipped bit inside a tensor: torch.load reads it, resuming would continue from other weights.
    flipped = flip_byte(path, str(tmp_path / 'flipped.pt'))
    with pytest.raises(RuntimeError, match=r"Cannot read training checkpoint '.*flipped.pt'.*checksum mismatch"):
        trainer.load_checkpoint(flipped)
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])  # truncated, as by a copy that was cut short
    with pytest.raises(RuntimeError, match=r"Cannot read training checkpoint '.*trainer.pt'"):
        trainer.load_checkpoint(path)
    with pytest.raises(RuntimeError, match='Cannot read training checkpoint'):
        trainer.load_checkpoint(str(tmp_path / 'missing.pt'))
    ghn_path = str(tmp_path / 'ghn.pt')
    trainer.ghn.save(ghn_path)
    with pytest.raises(RuntimeError, match=r'not a pyg_ghn training checkpoint \(use GHN.load'):
        trainer.load_checkpoint(ghn_path)


def test_resume_refuses_another_ghn_or_other_data_settings(archs, loaders, tmp_path):
    path = str(tmp_path / 'trainer.pt')
    settings = {'data': 'fashion_mnist', 'batch_size': 16, 'channels': [32, 128]}
    trainer = make_trainer(archs, loaders.train)
    trainer.run_settings = dict(settings)
    trainer.save_checkpoint(path)
    # No normalisation: the same shapes, so load_state_dict alone would accept it and train another model.
    torch.manual_seed(0)
    other = Trainer(GHN.from_config('ghn2', 'cifar10', weight_norm=False), archs, loaders.train, build_network,
                    trainer.config, progress=False, run_settings=settings)
    with pytest.raises(ValueError, match=r"another training run.*GHN weight_norm: True in the checkpoint, False now"):
        other.load_checkpoint(path)
    # GHN-1: other shapes; the error names the configuration instead of a raw size mismatch.
    ghn1 = Trainer(GHN.from_config('ghn1', 'cifar10'), archs, loaders.train, build_network, trainer.config,
                   progress=False, run_settings=settings)
    with pytest.raises(ValueError, match=r'GHN layernorm: True in the checkpoint, False now'):
        ghn1.load_checkpoint(path)
    more_images = make_trainer(archs, loaders.train)
    more_images.run_settings = {**settings, 'batch_size': 64}
    with pytest.raises(ValueError, match=r'batch_size: 16 in the checkpoint, 64 now'):
        more_images.load_checkpoint(path)
    same = make_trainer(archs, loaders.train, init_seed=3)
    same.run_settings = dict(settings)
    same.load_checkpoint(path)
    assert_state_dicts_equal(ghn_weights(same), ghn_weights(trainer))


def test_cpu_budget_stops_the_run_and_counts_across_resumes(arch_root, tmp_path):
    archs = TinyDeepNets1M(arch_root, 'train', num_nets=6, attach_network=True, log=False)
    cfg = dict(epochs=3, steps_per_epoch=4, meta_batch=2)
    ckpt = str(tmp_path / 'trainer.pt')
    trainer = make_trainer(archs, _small_augmented_loader(), ckpt_path=ckpt, **cfg)
    trainer.train(max_steps=2)
    spent = trainer.state.cpu_seconds
    assert spent > 0
    resumed = make_trainer(archs, _small_augmented_loader(), ckpt_path=ckpt, **cfg)
    resumed.load_checkpoint(ckpt)
    assert resumed.state.cpu_seconds == spent  # the budget spent so far travels with the checkpoint
    # A budget already spent trains nothing; a larger one stops after the step that crosses it.
    resumed.train(cpu_limit=spent / 2)
    assert resumed.state.global_step == 2
    resumed.train(cpu_limit=spent * 1.5)
    assert 2 < resumed.state.global_step < 12 and resumed.state.cpu_seconds >= spent * 1.5
    history = resumed.train()
    assert resumed.state.global_step == 12
    assert [h['cpu_hours'] for h in history] == sorted(h['cpu_hours'] for h in history)
    assert history[-1]['cpu_hours'] == pytest.approx(resumed.state.cpu_seconds / 3600)


def test_compact_checkpoint_resumes_the_same_run(arch_root, tmp_path):
    archs = TinyDeepNets1M(arch_root, 'train', num_nets=6, attach_network=True, log=False)
    cfg = dict(epochs=2, steps_per_epoch=4, meta_batch=2)
    ref = make_trainer(archs, _small_augmented_loader(), **cfg)
    ref.train()

    full, compact = str(tmp_path / 'full.pt'), str(tmp_path / 'compact.pt')
    trainer = make_trainer(archs, _small_augmented_loader(), **cfg)
    trainer.train(max_steps=3)
    trainer.save_checkpoint(full)
    trainer.compact = True
    trainer.save_checkpoint(compact)
    # Weights in float32, both Adam moments in bfloat16: 4 + 2 + 2 bytes a parameter instead of 4 + 4 + 4.
    assert os.path.getsize(compact) < 0.72 * os.path.getsize(full)
    saved = torch.load(compact, weights_only=True)
    assert all(v.dtype == torch.float32 for v in saved['ghn'].values())
    moments = [m for s in saved['optimizer']['state'].values() for k, m in s.items() if k != 'step']
    assert moments and all(m.dtype == torch.bfloat16 for m in moments) and saved['compact']

    resumed = make_trainer(archs, _small_augmented_loader(), init_seed=5, ckpt_path=compact, compact=True, **cfg)
    resumed.load_checkpoint(compact)
    assert_state_dicts_equal(ghn_weights(resumed), ghn_weights(trainer))
    for before, after in zip(trainer.optimizer.state.values(), resumed.optimizer.state.values()):
        for k in ('exp_avg', 'exp_avg_sq'):
            # back in float32, equal to the saved moments up to bfloat16's rounding (8 significant bits:
            # relative error <= 2^-8; fp32's exponent range, so nothing flushes to zero)
            assert after[k].dtype == torch.float32
            assert torch.allclose(after[k], before[k], rtol=2 ** -8, atol=0), k
        assert torch.equal(after['step'], before['step'])
    history = resumed.train()
    # The same run: the same architectures, images, schedule and number of steps ...
    assert resumed.state.draws == ref.state.draws and resumed.state.global_step == 8
    assert [h['lr'] for h in history] == [h['lr'] for h in ref.state.history]
    assert history[-1]['loss'] == pytest.approx(ref.state.history[-1]['loss'], abs=1e-3)
    # ... and weights within what the rounding can move them: an Adam update is at most ~lr per step, and
    # where a gradient sits at rounding level its sign (so the update) can flip, so each of the 5 steps
    # after the resume may differ by up to 2 lr.
    for k, v in ghn_weights(ref).items():
        assert torch.allclose(v, ghn_weights(resumed)[k], rtol=0, atol=5 * 2 * 1e-3), k
    # A float32 checkpoint of the same moment resumes bit for bit.
    exact = make_trainer(archs, _small_augmented_loader(), init_seed=6, **cfg)
    exact.load_checkpoint(full)
    exact.train()
    assert_state_dicts_equal(ghn_weights(ref), ghn_weights(exact))


# ---------------------------------------------------------------- the garbage collector during training
def test_objects_alive_before_training_are_frozen_while_it_trains(archs, loaders, monkeypatch):
    # Full collections would otherwise walk every object of torch, PyG and the datasets again every few steps.
    trainer = make_trainer(archs, loaders.train, meta_batch=2, steps_per_epoch=2)
    counts, step = [], Trainer.step

    def counting_step(self, *args, **kwargs):
        counts.append(gc.get_freeze_count())
        return step(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, 'step', counting_step)
    before = gc.get_freeze_count()
    trainer.train()
    assert len(counts) == 2 and min(counts) > before + 10_000  # torch alone is ~10^5 objects
    assert gc.get_freeze_count() == before  # undone on return

    def failing_step(self, *args, **kwargs):
        raise RuntimeError('boom')
    monkeypatch.setattr(Trainer, 'step', failing_step)
    with pytest.raises(RuntimeError, match='boom'):
        make_trainer(archs, loaders.train, meta_batch=2, steps_per_epoch=2).train()
    assert gc.get_freeze_count() == before  # and when training fails


# ---------------------------------------------------------------- the architecture stream

def test_meta_batch_sampler_draws_are_deterministic():
    a, b = MetaBatchSampler(1000, 8, seed=3), MetaBatchSampler(1000, 8, seed=3)
    assert a.draw(5) == b.draw(5)
    assert a.draw(5) != a.draw(6) and a.draw(5) != MetaBatchSampler(1000, 8, seed=4).draw(5)
    d = a.draw(0)
    assert len(d) == 8 and all(0 <= i < 1000 and 0 <= s < 2 ** 31 for i, s in d)


def test_meta_batch_sampler_start_continues_the_stream():
    it = iter(MetaBatchSampler(50, 4, seed=1))
    stream = [next(it) for _ in range(7)]
    resumed = iter(MetaBatchSampler(50, 4, seed=1, start=4))
    assert [next(resumed) for _ in range(3)] == stream[4:]


def test_meta_batch_sampler_ranks_partition_a_draw():
    full = MetaBatchSampler(50, 8, seed=2).draw(3)
    parts = [MetaBatchSampler(50, 8, seed=2, rank=r, world_size=4).draw(3) for r in range(4)]
    assert all(len(p) == 2 for p in parts)
    assert [parts[k % 4][k // 4] for k in range(8)] == full
    with pytest.raises(ValueError, match='multiple of the world size'):
        MetaBatchSampler(50, 6, world_size=4)


def test_meta_batch_sampler_oversamples_a_subset_in_the_replaced_slots_only():
    subset, p, draws = list(range(990, 1000)), 0.25, 4000
    uniform = MetaBatchSampler(1000, 8, seed=5)
    over = MetaBatchSampler(1000, 8, seed=5, subset=subset, subset_prob=p)
    assert MetaBatchSampler(1000, 8, seed=5, subset=subset, subset_prob=0.).draw(7) == uniform.draw(7)
    in_subset = changed = 0
    for k in range(draws):
        u, o = uniform.draw(k), over.draw(k)
        assert [s for _, s in o] == [s for _, s in u]  # widths keep their seeds
        for (iu, _), (io, _) in zip(u, o):
            in_subset += io in subset
            changed += io != iu
            assert io == iu or io in subset  # a slot either keeps its uniform draw or comes from the subset
    # A slot is in the subset with probability p + (1 - p) * 1%: 0.2575 over 32,000 Bernoulli slots, whose
    # standard deviation is 0.0024; 5 of them is the tolerance.
    assert abs(in_subset / (8 * draws) - (p + (1 - p) * 0.01)) < 0.012
    assert changed > 0 and over.draw(3) == MetaBatchSampler(1000, 8, seed=5, subset=subset, subset_prob=p).draw(3)
    assert all(i in subset for i, _ in MetaBatchSampler(1000, 8, seed=5, subset=subset, subset_prob=1.).draw(0))


def test_meta_batch_sampler_rejects_a_bad_subset():
    with pytest.raises(ValueError, match='non-empty subset'):
        MetaBatchSampler(50, 8, subset_prob=0.5)
    with pytest.raises(ValueError, match=r'subset_prob must be in \[0, 1\]'):
        MetaBatchSampler(50, 8, subset=[1], subset_prob=1.5)
    with pytest.raises(ValueError, match=r'subset indices must lie in \[0, 50\)'):
        MetaBatchSampler(50, 8, subset=[50], subset_prob=0.5)


def test_norm_free_indices_are_the_networks_without_batchnorm(arch_root):
    archs = TinyDeepNets1M(arch_root, 'train', num_nets=200, log=False)  # ~3% norm-free: a few of 200
    with torch.device('meta'):
        no_bn = [i for i in range(len(archs)) if not any(
            isinstance(m, torch.nn.BatchNorm2d) for m in build_network(archs.net_args(i)).modules())]
    assert no_bn and norm_free_indices(archs) == no_bn
    batch = next(iter(meta_batch_loader(archs, 4, seed=0, norm_free_prob=1.)))
    assert set(batch.net_idx.tolist()) <= set(no_bn)
    bn_only = archs[torch.tensor([i for i in range(len(archs)) if i not in no_bn][:6])]
    # positions in a view of the split, not rows of its net_args list
    assert norm_free_indices(archs[torch.tensor([bn_only.indices()[0]] + no_bn)]) == list(range(1, len(no_bn) + 1))
    with pytest.raises(ValueError, match='none of the 6 architectures is without BatchNorm'):
        meta_batch_loader(bn_only, 2, norm_free_prob=0.5)


def test_batches_from_a_worker_equal_those_built_in_process(arch_root, archs, loaders, images):
    # Workers hand a meta-batch over pickled whole (MetaBatchLoader), not storage by storage: same graphs,
    # same attached networks, same loss.
    attached = TinyDeepNets1M(arch_root, 'train', num_nets=6, attach_network=True, log=False)
    local, remote = iter(meta_batch_loader(attached, 2, seed=0)), iter(meta_batch_loader(attached, 2, seed=0,
                                                                                              num_workers=1))
    trainer = make_trainer(archs, loaders.train)
    for _ in range(3):
        a, b = next(local), next(remote)
        assert isinstance(b, Batch) and a.keys() == b.keys() and a.net_args == b.net_args
        for key in a.keys():
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
        for net_a, net_b in zip(a.network, b.network):
            assert [(k, v.shape, v.is_meta) for k, v in net_a.state_dict().items()] == \
                [(k, v.shape, v.is_meta) for k, v in net_b.state_dict().items()]
        with torch.no_grad():
            torch.manual_seed(1)  # Dropout in the classifiers
            loss_a = trainer.loss(a, *images)[0]
            torch.manual_seed(1)
            assert torch.equal(loss_a, trainer.loss(b, *images)[0])


def test_meta_batch_loader_resumes_with_the_same_graphs(archs):
    it = iter(meta_batch_loader(archs, 2, seed=0))
    batches = [next(it) for _ in range(3)]
    resumed = next(iter(meta_batch_loader(archs, 2, seed=0, start=2)))
    assert resumed.net_args == batches[2].net_args and torch.equal(resumed.x, batches[2].x)
    sampled = MetaBatchSampler(len(archs), 2, seed=0).draw(2)
    assert resumed.net_idx.tolist() == [i for i, _ in sampled]
