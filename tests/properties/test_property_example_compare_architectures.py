"""examples/compare_architectures.py runs end to end with --tiny (subprocess)."""
import json

from property_helpers import run_example as run


def test_compare_architectures_tiny(tmp_path):
    out = run('compare_architectures.py', '--out', str(tmp_path), '--ghn', 'ghn2=random', '--ghn', 'mlp=random')
    assert 'Table 10' in out and 'Table 11' in out
    res = json.load(open(tmp_path / 'results.json'))
    t10, t11 = res['table10'], res['table11']
    assert set(t10) == {'Hungarian', 'ghn2 (random)', 'mlp (random)'}
    for row in t10.values():
        assert set(row) == {'ResNet-34', 'ResNet-50-No-Skip', 'ViT'} and all(v > 0 for v in row.values())
    # Removing skip connections removes the sum nodes (and the downsampling convolutions and norms).
    assert res['nodes']['ResNet-50-No-Skip'] < res['nodes']['ResNet-50']
    for row in t11.values():
        assert set(row) == {'test', 'wide', 'deep', 'dense', 'bnfree'} and all(v >= 0 for v in row.values())
