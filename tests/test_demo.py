"""The README's main command, `bash dev.sh demo` (examples/demo.py), runs end to end on the shipped GHN-2."""
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_demo_predicts_unseen_networks(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'examples', 'demo.py'), '--nets', '1', '--batches', '2',
                           '--root', str(tmp_path / 'deepnets1m')], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    # the demo reports what the shipped file says of itself (steps of the run and its branch, architectures)
    from pyg_ghn.nn import GHNWeights
    meta = GHNWeights.DEFAULT.value.metadata()
    steps = meta.get('total_steps', meta['steps'])
    assert f"trained on {meta['data']}, {steps} steps, {meta['archs']} training architectures" in out, out
    rows = re.findall(r'^(DeepNets-1M test #0|ResNet-50 \(32x32\)|ViT 12 layers \(32x32\))\s+([\d,]+)\s+(\d+)'
                      r'\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%$', out, re.M)
    assert [r[0] for r in rows] == ['DeepNets-1M test #0', 'ResNet-50 (32x32)', 'ViT 12 layers (32x32)'], out
    for _, params, nodes, seconds, ghn_acc, he_acc in rows:
        assert int(params.replace(',', '')) > 0 and int(nodes) > 10 and float(seconds) > 0
        assert 0 <= float(ghn_acc) <= 100 and 0 <= float(he_acc) <= 100
