"""Reading and writing GHN checkpoints: the original release files (``ghn2_cifar10.pt``, ...; spec §3) and
``pyg_ghn``'s own format.

Original files are ``torch.save`` dicts ``{'state_dict', 'config', 'epoch', 'optimzer' (sic, optional)}``
whose config has exactly the keys of :data:`ORIGINAL_CONFIG_KEYS`. Their key names differ from ours in a
few places (the original ``MLP`` wraps its layers in ``fc``, the 1x1 convolutions are Linear layers here,
the primitive embedding is ``op_embed``); :func:`convert_original_state_dict` maps them, in the manner of
timm's ``checkpoint_filter_fn``.
"""
import os
import pickle
import tempfile
import zipfile
from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor

__all__ = ['CheckpointError', 'ORIGINAL_CONFIG_KEYS', 'FORMAT', 'convert_original_state_dict',
           'to_original_state_dict', 'read_checkpoint', 'load_ghn', 'save_ghn']

#: The ``config`` keys of the original checkpoints, all required.
ORIGINAL_CONFIG_KEYS = ('max_shape', 'num_classes', 'hypernet', 'decoder', 'weight_norm', 've', 'layernorm',
                        'hid')
#: Marker of ``pyg_ghn``'s own format.
FORMAT = 'pyg_ghn'
_VERSION = 1
_EXTRA_CONFIG_KEYS = ('num_rounds', 'backward', 'sp_on_real_edges', 'max_sp_dist')

# Original prefix -> ours. Prefixes do not overlap, so the order does not matter.
_RENAMES = (
    ('embed.', 'op_embed.'),
    ('gnn.mlp.fc.', 'gnn.mlp.'),
    ('gnn.mlp_ve.fc.', 'gnn.mlp_sp.'),
    ('gnn.fc.', 'gnn.'),  # hypernet='mlp'
    ('decoder_1d.fc.', 'decoder_1d.'),
)
_CONV1X1 = ('decoder.conv.', 'decoder.class_layer_predictor.')


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit a GHN; the message says what is wrong."""


def convert_original_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Original GHN state dict -> ours: renamed keys (``module.`` prefixes of ``DataParallel`` dropped) and
    ``(out, in, 1, 1)`` convolution weights of the decoder squeezed to Linear weights."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        if key.startswith(_CONV1X1) and key.endswith('.weight') and value.dim() == 4:
            if tuple(value.shape[2:]) != (1, 1):
                raise CheckpointError(f'{key}: expected a 1x1 convolution weight, got shape '
                                      f'{tuple(value.shape)}')
            value = value[:, :, 0, 0]
        out[key] = value
    return out


def to_original_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Inverse of :func:`convert_original_state_dict`: our keys and shapes -> the original ones."""
    out = {}
    for key, value in state_dict.items():
        for old, new in _RENAMES:
            if key.startswith(new) and not (new == 'gnn.' and key.startswith(('gnn.mlp', 'gnn.gru'))):
                key = old + key[len(new):]
                break
        if key.startswith(_CONV1X1) and key.endswith('.weight') and value.dim() == 2:
            value = value[:, :, None, None]
        out[key] = value
    return out


def read_checkpoint(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` that also verifies the archive's checksums: every checkpoint
    pyg_ghn reads (GHN weights, training state, release files) goes through here, so a corrupt, truncated or
    unsafe file is a :class:`CheckpointError` naming the cause, never silently different weights."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'No checkpoint at {path!r}')
    if zipfile.is_zipfile(path):
        # torch.load does not check the archive's CRCs: a flipped byte inside a tensor loads silently.
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            bad = f'{type(e).__name__}: {e}'
        if bad is not None:
            raise CheckpointError(f'Cannot read {path!r} ({os.path.getsize(path)} bytes) as a torch checkpoint: '
                                  f'the file is corrupt (checksum mismatch in {bad})')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        if 'global' in reason.lower():
            raise CheckpointError(f'{path!r} is not a safe checkpoint: it holds objects that '
                                  f'weights_only loading refuses ({reason})') from e
        raise CheckpointError(f'Cannot read {path!r} ({os.path.getsize(path)} bytes) as a torch checkpoint: '
                              f'the file is truncated or corrupt ({reason})') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError) as e:
        raise CheckpointError(f'Cannot read {path!r} ({os.path.getsize(path)} bytes) as a torch checkpoint: '
                              f'the file is truncated or corrupt ({type(e).__name__}: {e})') from e


def _unpickler_reason(message: str) -> str:
    # torch's weights_only errors are long; keep the line that names the cause.
    for line in message.splitlines():
        if 'WeightsUnpickler error:' in line:
            rest = line.split('WeightsUnpickler error:', 1)[1].strip()
            if rest:
                return rest
            lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
            i = lines.index(line.strip())
            return lines[i + 1] if i + 1 < len(lines) else line.strip()
    return message.strip().splitlines()[0] if message.strip() else 'unpickling failed'


def _check_config(config: Any, allowed: tuple, required: tuple, path: str) -> Dict[str, Any]:
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{path!r}: 'config' must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise CheckpointError(f"{path!r}: unknown config key(s) {unknown}; expected {list(allowed)}")
    missing = [k for k in required if k not in config]
    if missing:
        raise CheckpointError(f"{path!r}: config lacks {missing}")
    return dict(config)


def _check_state_dict(ghn: torch.nn.Module, state_dict: Mapping[str, Any], path: str) -> None:
    expected = ghn.state_dict()
    problems = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        problems.append(f'missing keys {missing}')
    if unexpected:
        problems.append(f'unexpected keys {unexpected}')
    for k, v in state_dict.items():
        if k in expected:
            if not isinstance(v, Tensor):
                problems.append(f'{k} is a {type(v).__name__}, not a tensor')
            elif v.shape != expected[k].shape:
                problems.append(f'{k} has shape {tuple(v.shape)}, the config implies '
                                f'{tuple(expected[k].shape)}')
            elif v.is_floating_point() != expected[k].is_floating_point():
                problems.append(f'{k} has dtype {v.dtype}, expected a '
                                f'{"floating" if expected[k].is_floating_point() else "integer"} tensor')
            elif v.is_floating_point() and not bool(torch.isfinite(v).all()):
                problems.append(f'{k} holds NaN or infinite values')
    if problems:
        raise CheckpointError(f'{path!r} does not fit its config: ' + '; '.join(problems))


def load_ghn(path: str, map_location: Any = 'cpu') -> 'GHN':  # noqa: F821
    """Loads a GHN from ``path`` and returns it in eval mode.

    Reads both the original release files and files written by :func:`save_ghn`. The configuration is
    taken from the file; loading is strict. ``ghn.metadata`` receives the file's metadata (for original
    files: ``epoch`` and ``source='original'``).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated or corrupt, is not a GHN checkpoint dict, lacks keys, has an
            unknown config or tensors that do not fit the config.
    """
    from .ghn import GHN
    ckpt = read_checkpoint(path, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path!r} holds a {type(ckpt).__name__}, not a GHN checkpoint dict with '
                              f"'state_dict' and 'config'")
    if ckpt.get('format') == FORMAT:
        missing = [k for k in ('config', 'state_dict') if k not in ckpt]
        if missing:
            raise CheckpointError(f'{path!r}: pyg_ghn checkpoint lacks {missing}')
        if ckpt.get('version', _VERSION) > _VERSION:
            raise CheckpointError(f"{path!r} has format version {ckpt['version']}; this pyg_ghn reads "
                                  f'up to {_VERSION}')
        config = _check_config(ckpt['config'], ORIGINAL_CONFIG_KEYS + _EXTRA_CONFIG_KEYS,
                               ORIGINAL_CONFIG_KEYS, path)
        state_dict = ckpt['state_dict']
        metadata = dict(ckpt.get('metadata') or {}, source=FORMAT)
    else:
        missing = [k for k in ('config', 'state_dict') if k not in ckpt]
        if missing:
            raise CheckpointError(f'{path!r} is not a GHN checkpoint: it lacks {missing} (keys: '
                                  f'{sorted(map(str, ckpt))[:10]})')
        config = _check_config(ckpt['config'], ORIGINAL_CONFIG_KEYS, ORIGINAL_CONFIG_KEYS, path)
        if not isinstance(ckpt['state_dict'], Mapping):
            raise CheckpointError(f"{path!r}: 'state_dict' must be a dict")
        state_dict = convert_original_state_dict(ckpt['state_dict'])
        metadata = {'source': 'original', 'epoch': ckpt.get('epoch')}
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path!r}: 'state_dict' must be a dict")
    try:
        ghn = GHN(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f'{path!r}: invalid config {config}: {e}') from e
    _check_state_dict(ghn, state_dict, path)
    ghn.load_state_dict(state_dict, strict=True)
    ghn.metadata = metadata
    device = next(iter(state_dict.values())).device if len(state_dict) else torch.device('cpu')
    return ghn.to(device).eval()


def _plain(obj: Any, where: str) -> Any:
    # Metadata must load with weights_only=True: plain containers, strings, numbers, tensors.
    if obj is None or isinstance(obj, (bool, int, float, Tensor)):
        return obj
    if isinstance(obj, str):
        return str(obj)  # e.g. torch's TorchVersion, a str subclass weights_only refuses
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v, where) for v in obj) if type(obj) in (list, tuple) else \
            [_plain(v, where) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, f'{where}[{k!r}]') for k, v in obj.items()}
    raise TypeError(f'{where} holds a {type(obj).__name__}; checkpoints store plain values only (str, '
                    f'numbers, lists, dicts, tensors) so that they load with weights_only=True')


def save_ghn(ghn: 'GHN', path: str, *, half: bool = False,  # noqa: F821
             metadata: Optional[Dict[str, Any]] = None, original: bool = False) -> None:
    """Saves ``ghn`` to ``path`` atomically (a temporary file in the same folder, then ``os.replace``).

    Args:
        half (bool): store floating-point tensors as float16 (loading casts them back).
        metadata (dict, optional): plain values (str, numbers, lists, dicts) stored with the weights.
        original (bool): write the original release format instead (original key names, 1x1 conv weights,
            the eight original config keys), readable by the authors' code. Requires a configuration the
            original can express (``num_rounds=1, backward=True, sp_on_real_edges=True``).
    """
    state_dict = {k: v.detach().cpu() for k, v in ghn.state_dict().items()}
    if half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    if original:
        extra = {k: ghn.config[k] for k in _EXTRA_CONFIG_KEYS}
        if extra != dict(num_rounds=1, backward=True, sp_on_real_edges=True, max_sp_dist=50):
            raise ValueError(f'The original format cannot express {extra}')
        ckpt: Dict[str, Any] = {'state_dict': to_original_state_dict(state_dict),
                                'config': {k: ghn.config[k] for k in ORIGINAL_CONFIG_KEYS},
                                'epoch': (metadata or {}).get('epoch', ghn.metadata.get('epoch'))}
    else:
        from .. import __version__
        meta = {'pyg_ghn_version': __version__, 'torch_version': str(torch.__version__)}
        meta.update({k: v for k, v in ghn.metadata.items() if k != 'source'})
        meta.update(metadata or {})
        meta = _plain(meta, 'metadata')
        ckpt = {'format': FORMAT, 'version': _VERSION, 'config': dict(ghn.config),
                'state_dict': state_dict, 'metadata': meta,
                'dtype': 'float16' if half else 'float32'}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(ckpt, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
