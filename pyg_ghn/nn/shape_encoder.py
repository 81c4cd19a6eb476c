"""Shape encoding of GHN-2 (paper appendix B.1, "shape encoding"): the shape of the tensor a node predicts,
looked up in per-checkpoint tables of channel and spatial sizes and embedded."""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ['ShapeEncoder', 'channel_table', 'spatial_table', 'tensor_shape_to_4d', 'shapes_to_4d']


def channel_table(num_classes: int) -> List[int]:
    r"""The channel sizes a shape encoder knows: :math:`\{1, 3, K\} \cup \{8, 16, \dots, 56\} \cup
    \{64, 80, \dots, 4080\} \cup \{4096, 4128, \dots, 8192\}`, sorted (391 values unless :math:`K` is already
    one of them). The table depends on ``num_classes``, so channel indices differ between checkpoints."""
    values = {1, 3, num_classes}
    values.update(range(8, 64, 8))
    values.update(range(64, 4096, 16))
    values.update(range(4096, 8192 + 1, 32))
    return sorted(values)


def spatial_table(max_spatial: int) -> List[int]:
    r"""The kernel sizes a shape encoder knows: odd sizes below :math:`\max(12, S)` plus 14 and 16
    (8 values for :math:`S = 11`, 10 for :math:`S = 16`)."""
    return sorted(set(range(1, max(12, max_spatial), 2)) | {14, 16})


def tensor_shape_to_4d(shape: Sequence[int]) -> Tuple[int, int, int, int]:
    r"""Describes a 1-D to 4-D tensor shape as 4-D: ``(a,) -> (a,1,1,1)``, ``(a,b) -> (a,b,1,1)``,
    ``(1,n,d) -> (1,d,floor(sqrt(n)),floor(sqrt(n)))`` when :math:`\min(n,d) > 1` (a ViT-style position
    embedding seen as a :math:`d`-channel image), any other ``(a,b,c) -> (a,b,c,1)``; 4-D is unchanged."""
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 4:
        raise ValueError(f'Expected a shape with 1 to 4 dimensions, got {shape}')
    if len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1:
        s = int(shape[1] ** 0.5)
        while s * s > shape[1]:  # guard float rounding of the square root
            s -= 1
        while (s + 1) * (s + 1) <= shape[1]:
            s += 1
        return (1, shape[2], s, s)
    return shape + (1,) * (4 - len(shape))  # type: ignore[return-value]


def shapes_to_4d(shape: Tensor, ndim: Tensor) -> Tensor:
    r"""Vectorised :func:`tensor_shape_to_4d` for an :class:`~pyg_ghn.ArchGraph`'s ``shape`` ``[N, 4]``
    (raw shapes padded with ones) and ``ndim`` ``[N]``. Padding with ones already gives the 4-D form of every
    shape except the 3-D ``(1, n, d)`` case, which is rewritten here."""
    out = shape.clone()
    special = (ndim == 3) & (shape[:, 0] == 1) & (torch.minimum(shape[:, 1], shape[:, 2]) > 1)
    if bool(special.any()):
        n, d = shape[special, 1], shape[special, 2]
        s = torch.tensor([tensor_shape_to_4d((1, a, b))[2] for a, b in zip(n.tolist(), d.tolist())],
                         dtype=shape.dtype, device=shape.device)
        out[special] = torch.stack([torch.ones_like(d), d, s, s], dim=1)
    return out


def _lookup(values: Tensor, table: Tensor, snap: Tuple[int, int, int]) -> Tensor:
    # Index of the nearest table value, ties to the smaller one (np.argmin of the first minimum). Values
    # in [snap[0], snap[1]] go to snap[2]; values outside [1, table max) that are not in the table go to the
    # last entry, as the original lookup dictionaries do.
    pos = torch.searchsorted(table, values).clamp(max=table.numel() - 1)
    lo = (pos - 1).clamp(min=0)
    nearest = torch.where((table[pos] - values).abs() < (values - table[lo]).abs(), pos, lo)
    exact = table[pos] == values
    in_range = (values >= 1) & (values < table[-1])
    idx = torch.where(exact | in_range, nearest, torch.full_like(nearest, table.numel() - 1))
    lo_snap, hi_snap, target = snap
    snapped = (values >= lo_snap) & (values <= hi_snap)
    target_idx = int((table == target).nonzero()[0, 0])
    return torch.where(snapped, torch.full_like(idx, target_idx), idx)


class ShapeEncoder(nn.Module):
    r"""The shape encoder of GHN-1/GHN-2 (appendix B.1 of `"Parameter Prediction for Unseen Deep
    Architectures" <https://arxiv.org/abs/2110.13100>`_).

    A node predicting a tensor of 4-D shape :math:`(c_{out}, c_{in}, h, w)` (see
    :func:`tensor_shape_to_4d`) is encoded as

    .. math::
        \mathbf{s}_v = \mathbf{E}_c[\iota_c(c_{out})] \,\|\, \mathbf{E}_c[\iota_c(c_{in})] \,\|\,
        \mathbf{E}_s[\iota_s(h)] \,\|\, \mathbf{E}_s[\iota_s(w)]

    where :math:`\iota_c` / :math:`\iota_s` look the size up in :func:`channel_table` /
    :func:`spatial_table`: exact match, else the nearest value with ties to the smaller one; channels 4 to 7
    map to 8 and channels 0 or above the largest value to the largest value; spatial size 2 maps to 3 and
    sizes 0 or above 16 to 16. Nodes without a shape (``ndim == 0``) use the last ("dummy") row of both
    tables.

    Args:
        hid (int): output size, split into four embeddings of ``hid // 4``. (default: :obj:`32`)
        num_classes (int): number of classes of the checkpoint (it enters the channel table).
        max_shape (tuple): the GHN's ``max_shape``; :math:`S` = ``max_shape[3]`` sets the spatial table.

    Shapes:
        - **input:** ``shape`` :math:`(N, 4)` padded raw shapes, ``ndim`` :math:`(N,)`
        - **output:** :math:`(N, hid)`
    """
    def __init__(self, hid: int = 32, num_classes: int = 10,
                 max_shape: Sequence[int] = (64, 64, 11, 11)) -> None:
        super().__init__()
        if hid % 4 != 0:
            raise ValueError(f'hid must be divisible by 4 (four concatenated embeddings), got {hid}')
        if len(max_shape) != 4 or max_shape[2] != max_shape[3]:
            raise ValueError(f'max_shape must be (M0, M1, S, S), got {tuple(max_shape)}')
        self.hid, self.num_classes, self.max_shape = hid, num_classes, tuple(int(m) for m in max_shape)
        channels, spatial = channel_table(num_classes), spatial_table(self.max_shape[3])
        self.embed_spatial = nn.Embedding(len(spatial) + 1, hid // 4)
        self.embed_channel = nn.Embedding(len(channels) + 1, hid // 4)
        # Lookup tables and the dummy index are derived from the config, so they are not saved.
        self.register_buffer('channels', torch.tensor(channels, dtype=torch.long), persistent=False)
        self.register_buffer('spatial', torch.tensor(spatial, dtype=torch.long), persistent=False)
        self.register_buffer('dummy_ind', torch.tensor([len(channels), len(channels), len(spatial),
                                                        len(spatial)], dtype=torch.long), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embed_spatial.reset_parameters()
        self.embed_channel.reset_parameters()

    def shape_indices(self, shape: Tensor, ndim: Tensor) -> Tensor:
        """Table indices ``[N, 4]`` for padded raw shapes ``[N, 4]`` and their ``ndim`` ``[N]``."""
        s4 = shapes_to_4d(shape.long(), ndim)
        ch = _lookup(s4[:, :2].reshape(-1), self.channels, (4, 7, 8)).view(-1, 2)
        sp = _lookup(s4[:, 2:].reshape(-1), self.spatial, (2, 2, 3)).view(-1, 2)
        ind = torch.cat([ch, sp], dim=1)
        return torch.where((ndim > 0).view(-1, 1), ind, self.dummy_ind.view(1, 4))

    def forward(self, shape: Tensor, ndim: Tensor) -> Tensor:
        ind = self.shape_indices(shape, ndim)
        return torch.cat([self.embed_channel(ind[:, :2]).flatten(1),
                          self.embed_spatial(ind[:, 2:]).flatten(1)], dim=1)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(hid={self.hid}, num_classes={self.num_classes}, '
                f'max_shape={self.max_shape}, channels={self.channels.numel()}, '
                f'spatial={self.spatial.numel()})')
