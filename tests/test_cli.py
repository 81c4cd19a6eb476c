"""End-to-end tests of the ``pyg-ghn`` command line (``python -m pyg_ghn.cli``) on tiny settings: real
Fashion-MNIST images, DeepNets-1M splits generated into temporary folders."""
import os
import re
import subprocess
import sys

import pytest
import torch

from pyg_ghn.cli import main
from pyg_ghn.nn import GHN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd, check=True):
    env = {**os.environ, 'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
           'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    res = subprocess.run([sys.executable, '-m', 'pyg_ghn.cli', *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f'pyg-ghn {" ".join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}')
    return res




@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """``pyg-ghn train`` for 2 steps of 2 architectures and 16 images; returns the working folder."""
    work = tmp_path_factory.mktemp('cli')
    res = cli('train', '--arch-root', 'archs', '--archs', '4', '--epochs', '1', '--steps-per-epoch', '2',
              '--meta-batch', '2', '--batch-size', '16', '--threads', '1', '--device', 'cpu',
              '--ckpt', 'run/trainer.pt', '--log', 'run/log.json', '--out', 'ghn.pt', cwd=work)
    return work, res


def test_graph_command_describes_and_plots(tmp_path):
    res = cli('graph', 'resnet18', '--plot', 'x.png', cwd=tmp_path)
    assert re.search(r'resnet18: \d+ nodes, \d+ real and \d+ virtual edges', res.stdout), res.stdout
    with open(tmp_path / 'x.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_train_writes_a_loadable_ghn(trained):
    work, res = trained
    assert 'trained 2 steps' in res.stdout and '(0 skipped, ' in res.stdout
    ghn = GHN.load(str(work / 'ghn.pt'))
    assert ghn.config['max_shape'] == (64, 64, 11, 11) and not ghn.training
    assert ghn.metadata['steps'] == 2 and ghn.metadata['archs'] == 4
    ckpt = torch.load(str(work / 'run' / 'trainer.pt'), weights_only=True)
    assert ckpt['state']['global_step'] == 2 and ckpt['state']['epoch'] == 1
    for k, v in ghn.state_dict().items():  # the saved GHN is the trained one
        assert torch.equal(v, ckpt['ghn'][k]), k
    assert not torch.equal(ghn.op_embed.weight, GHN.from_config('ghn2').op_embed.weight)


def test_train_never_overwrites_or_mixes_runs(trained):
    work, _ = trained
    common = ['--arch-root', 'archs', '--archs', '4', '--epochs', '1', '--steps-per-epoch', '2', '--meta-batch',
              '2', '--batch-size', '16', '--threads', '1', '--device', 'cpu', '--ckpt', 'run/trainer.pt']
    before = (work / 'run' / 'trainer.pt').read_bytes()
    res = cli('train', *common, cwd=work, check=False)
    assert res.returncode != 0 and "'run/trainer.pt' exists: pass --resume" in res.stderr, res.stderr
    res = cli('train', *common, '--resume', '--seed', '7', cwd=work, check=False)
    assert res.returncode != 0 and 'seed: 1111 in the checkpoint, 7 now' in res.stderr, res.stderr
    assert (work / 'run' / 'trainer.pt').read_bytes() == before


def test_resume_refuses_settings_that_change_the_run(trained):
    work, _ = trained
    common = ['--arch-root', 'archs', '--archs', '4', '--epochs', '1', '--steps-per-epoch', '2', '--meta-batch',
              '2', '--threads', '1', '--device', 'cpu', '--ckpt', 'run/trainer.pt', '--resume']
    before = (work / 'run' / 'trainer.pt').read_bytes()
    for extra, message in ((['--batch-size', '32'], 'batch_size: 16 in the checkpoint, 32 now'),
                           (['--batch-size', '16', '--no-norm'], 'GHN weight_norm: True in the checkpoint, False now'),
                           (['--batch-size', '16', '--config', 'ghn1'], 'GHN layernorm: True in the checkpoint, '
                                                                         'False now'),
                           (['--batch-size', '16', '--norm-free-prob', '0.3'],
                            'norm_free_prob: 0.0 in the checkpoint, 0.3 now')):
        res = cli('train', *common, *extra, cwd=work, check=False)
        assert res.returncode != 0 and 'another training run' in res.stderr and message in res.stderr, res.stderr
        assert 'size mismatch' not in res.stderr
    assert (work / 'run' / 'trainer.pt').read_bytes() == before


def test_continue_picks_up_a_committed_run_on_a_fresh_clone(tmp_path):
    """A run trained 2 steps with a compact checkpoint, copied alone into another folder (a fresh clone: no
    architectures, no logs), continues with one command to the same architectures and steps as a run that
    was never interrupted."""
    run = ['train', '--recipe', 'cpu', '--archs', '4', '--epochs', '1', '--steps-per-epoch', '4', '--meta-batch',
           '2', '--batch-size', '16', '--threads', '1', '--device', 'cpu', '--arch-root', 'archs']
    ref_dir, first, clone = tmp_path / 'ref', tmp_path / 'first', tmp_path / 'clone'
    for d in (ref_dir, first, clone):
        d.mkdir()
    cli(*run, '--ckpt', 'ref.pt', '--max-steps', '4', cwd=ref_dir)
    cli(*run, '--ckpt', 'state.pt', '--compact', '--max-steps', '2', cwd=first)
    (clone / 'training').mkdir()
    (clone / 'training' / 'state.pt').write_bytes((first / 'state.pt').read_bytes())
    res = cli('continue', 'training/state.pt', '--max-steps', '4', '--threads', '1', '--device', 'cpu',
              '--arch-root', 'archs', cwd=clone)
    assert 'resumed from training/state.pt: epoch 0, step 2' in res.stdout and '4 in all' in res.stdout, res.stdout
    ref, cont = (torch.load(p, weights_only=True) for p in (ref_dir / 'ref.pt', clone / 'training' / 'state.pt'))
    assert cont['compact'] and cont['run_settings'] == ref['run_settings']
    assert cont['state']['draws'] == ref['state']['draws'] == 4 and cont['state']['history'][0]['steps'] == 4
    assert cont['train_config'] == ref['train_config'] and cont['ghn_config'] == ref['ghn_config']
    assert cont['scheduler'] == ref['scheduler']
    # Weights within what the bfloat16 moments of the compact state can move them in the 2 steps after the
    # resume: at most 2 lr a step (test_trainer.py::test_compact_checkpoint_resumes_the_same_run).
    for k, v in ref['ghn'].items():
        assert torch.allclose(v, cont['ghn'][k], rtol=0, atol=2 * 2 * 1e-3), k
    # The training loss of the 4 steps: the same batches, so the same value up to that rounding.
    assert cont['state']['history'][0]['loss'] == pytest.approx(ref['state']['history'][0]['loss'], abs=1e-3)

    # A checkpoint written before run settings were recorded cannot be continued blindly.
    old = dict(ref)
    del old['run_settings']
    torch.save(old, clone / 'old.pt')
    res = cli('continue', 'old.pt', cwd=clone, check=False)
    assert res.returncode != 0 and 'does not record its data settings' in res.stderr, res.stderr


def test_export_saves_the_ghn_of_a_training_checkpoint(trained, monkeypatch, capsys, flip_byte):
    work, _ = trained
    monkeypatch.chdir(work)
    main(['export', '--ckpt', 'run/trainer.pt', '--out', 'exported.pt', '--metadata', '{"note": "test"}'])
    assert 'exported the GHN of run/trainer.pt (step 2)' in capsys.readouterr().out
    exported, trained_ghn = GHN.load('exported.pt'), GHN.load('ghn.pt')
    assert exported.metadata['steps'] == 2 and exported.metadata['note'] == 'test'
    for k, v in trained_ghn.state_dict().items():
        assert torch.equal(v, exported.state_dict()[k]), k
    with pytest.raises(SystemExit, match="'ghn.pt' is not a pyg_ghn training checkpoint"):
        main(['export', '--ckpt', 'ghn.pt', '--out', 'x.pt'])
    flip_byte('run/trainer.pt', 'flipped.pt')
    with pytest.raises(SystemExit, match="cannot read 'flipped.pt'.*checksum mismatch"):
        main(['export', '--ckpt', 'flipped.pt', '--out', 'x.pt'])
    assert not os.path.exists('x.pt')


def test_predict_evaluates_and_saves_a_state_dict(trained):
    import torchvision
    work, _ = trained
    res = cli('predict', 'resnet18', '--ghn', 'ghn.pt', '--data', 'fashion_mnist', '--max-batches', '2',
              '--out', 'sd.pt', cwd=work)
    m = re.search(r'fashion_mnist test: top-1 ([\d.]+)%', res.stdout)
    assert m and 0 <= float(m.group(1)) <= 100, res.stdout
    assert re.search(r'predicted [\d,]+ parameters', res.stdout)
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(torch.load(str(work / 'sd.pt'), weights_only=True))
    # The saved weights are those the GHN predicts for resnet18 in this process.
    ref = GHN.load(str(work / 'ghn.pt'))(torchvision.models.resnet18(num_classes=10))
    for name, p in ref.named_parameters():
        assert torch.allclose(dict(model.named_parameters())[name], p, atol=1e-6), name


@pytest.mark.parametrize('ghn', ['ghn.pt', 'he'])
def test_eval_on_a_deepnets_split(trained, ghn, capsys, monkeypatch):
    import json
    work, _ = trained
    out = f'eval_{ghn}.json'
    args = ['eval', '--ghn', ghn, '--split', 'test', '--num-nets', '2', '--max-batches', '2', '--arch-root',
            'archs', '--out', out]
    if ghn == 'he':  # in this process (the command line itself is exercised above): saves a start-up
        monkeypatch.chdir(work)
        main(args)
        stdout = capsys.readouterr().out
    else:
        stdout = cli(*args, cwd=work).stdout
    assert re.search(r'top1_batch: +[\d.]+ ± [\d.]+', stdout), stdout
    with open(work / out) as f:
        records = json.load(f)['records']
    assert [r['name'] for r in records] == ['test/0', 'test/1']
    assert all(0 <= r['top1_batch'] <= 100 for r in records)
    assert all((r['predict_seconds'] > 0) == (ghn != 'he') for r in records)


def test_unknown_model_fails_with_advice():
    # SystemExit with a message: Python prints it to stderr and exits with status 1.
    with pytest.raises(SystemExit) as e:
        main(['predict', 'resnet_not_a_model', '--ghn', 'random'])
    assert isinstance(e.value.code, str)
    assert "'resnet_not_a_model' is not a torchvision classification model" in e.value.code
    assert 'list_models()' in e.value.code and 'module:callable' in e.value.code
    with pytest.raises(SystemExit, match='cannot load .*module:callable importable'):
        main(['graph', 'no_such_module:make_net'])


def test_model_options_reach_the_model(tmp_path, monkeypatch, capsys):
    # --input-size S is a 3xSxS image, as from_module reads an int; --num-classes reaches a user's builder.
    main(['graph', 'resnet18', '--input-size', '32', '--num-classes', '7'])
    out = capsys.readouterr().out
    main(['graph', 'resnet18', '--input-size', '3', '32', '32', '--num-classes', '7'])
    assert capsys.readouterr().out.split(' (built')[0] == out.split(' (built')[0]
    (tmp_path / 'user_nets.py').write_text(
        'import torch.nn as nn\n'
        'def mlp(num_classes=10):\n'
        '    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, num_classes))\n'
        'def fixed():\n'
        '    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 5))\n')
    monkeypatch.chdir(tmp_path)
    from pyg_ghn.cli import _load_model
    assert _load_model('user_nets:mlp', 7)[-1].out_features == 7
    assert _load_model('user_nets:mlp')[-1].out_features == 10
    assert _load_model('user_nets:fixed')[-1].out_features == 5
    with pytest.raises(SystemExit, match=r'--num-classes 7 given, but user_nets:fixed\(num_classes=...\) failed'):
        _load_model('user_nets:fixed', 7)
    assert _load_model('deepnets:darts', 7).classifier[-1].out_features == 7
    with pytest.raises(SystemExit, match="unknown predefined network 'resnet'; one of deepnets:resnet50"):
        _load_model('deepnets:resnet')


def test_eval_refuses_what_it_cannot_evaluate(tmp_path):
    # A 10-class GHN on 1000-class ImageNet would score ~0% silently; zero networks, an empty table.
    with pytest.raises(SystemExit, match='the GHN predicts 10-class networks, imagenet has 1000 classes'):
        main(['eval', '--ghn', 'pretrained', '--data', 'imagenet', '--arch-root', str(tmp_path / 'a')])
    with pytest.raises(SystemExit, match='the GHN predicts 10-class networks, imagenet has 1000 classes'):
        main(['predict', 'resnet18', '--ghn', 'pretrained', '--data', 'imagenet'])
    with pytest.raises(SystemExit, match='--num-nets must be at least 1'):
        main(['eval', '--ghn', 'he', '--num-nets', '0', '--arch-root', str(tmp_path / 'a')])
    with pytest.raises(SystemExit, match="unknown --data 'mnist'"):
        main(['eval', '--ghn', 'he', '--data', 'mnist', '--arch-root', str(tmp_path / 'a')])
    from pyg_ghn.cli import _data_setup
    assert _data_setup('ImageNet') == (1000, True, 'imagenet') and _data_setup('fashion-mnist')[0] == 10


def test_missing_checkpoint_fails_clearly(tmp_path):
    missing = str(tmp_path / 'missing.pt')
    with pytest.raises(SystemExit, match=f"error: no GHN checkpoint at '{re.escape(missing)}'"):
        main(['predict', 'resnet18', '--ghn', missing])
    with pytest.raises(SystemExit, match='no GHN checkpoint'):
        main(['eval', '--ghn', missing, '--arch-root', str(tmp_path / 'archs'), '--num-nets', '1'])


def test_training_curves_plot_marks_lr_changes(tmp_path):
    from pyg_ghn.cli import _plot_history
    hist = [dict(epoch=e, steps=100 * e, loss=2.0 - 0.1 * e, acc=20.0 + e, lr=1e-3 if e < 3 else 1e-4)
            for e in range(1, 5)]
    _plot_history(hist, str(tmp_path / 'curves.png'))
    _plot_history([dict(epoch=1, loss=2.0, acc=10.0)], str(tmp_path / 'old_log.png'))  # logs without steps/lr
    for name in ('curves.png', 'old_log.png'):
        with open(tmp_path / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
