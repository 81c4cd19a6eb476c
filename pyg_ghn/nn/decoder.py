"""Decoders of GHN-1/GHN-2 (paper appendix B.1): node features -> max-sized parameter tensors."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['ConvDecoder', 'MLP', 'decoder_1d', 'bias_class_head']


class MLP(nn.Sequential):
    r"""``Linear -> ReLU -> ... -> Linear [-> ReLU]``: the original code's ``MLP`` without the ``fc``
    wrapper (its ``fc.<i>`` state-dict keys become ``<i>``).

    Args:
        channels (sequence of int): input size followed by the size of every layer.
        last_activation (bool): whether a ReLU follows the last layer too (the original default,
            ``last_activation='same'``). (default: :obj:`True`)
    """
    def __init__(self, channels: Sequence[int], last_activation: bool = True) -> None:
        layers = []
        for j, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Linear(c_in, c_out))
            if j < len(channels) - 2 or last_activation:
                layers.append(nn.ReLU())
        super().__init__(*layers)
        self.channels, self.last_activation = tuple(channels), last_activation

    def reset_parameters(self) -> None:
        for m in self:
            if isinstance(m, nn.Linear):
                m.reset_parameters()


def decoder_1d(hid: int, max_ch: int) -> MLP:
    """The 1-D decoder: ``Linear(hid, 2 hid) -> ReLU -> Linear(2 hid, 2 max_ch)``; its output, viewed as
    ``(2, max_ch)``, holds a norm layer's weight (row 0) and bias (row 1)."""
    return MLP((hid, 2 * hid, 2 * max_ch), last_activation=False)


def bias_class_head(max_ch: int, num_classes: int) -> nn.Sequential:
    """The classifier-bias head ``ReLU -> Linear(max_ch, num_classes)``, applied to both rows of the 1-D
    decoder's output for the last node of a graph."""
    return nn.Sequential(nn.ReLU(), nn.Linear(max_ch, num_classes))


class ConvDecoder(nn.Module):
    r"""The convolutional decoder of GHN-1/GHN-2 (appendix B.1 of `"Parameter Prediction for Unseen Deep
    Architectures" <https://arxiv.org/abs/2110.13100>`_).

    A node feature :math:`\mathbf{h} \in \mathbb{R}^{d}` becomes a :math:`(M_0, M_1, k_h, k_w)` tensor:

    .. math::
        \mathbf{Y} &= \mathrm{ReLU}(\mathbf{W}_{fc}\mathbf{h} + \mathbf{b}_{fc})
            \text{ viewed as } (c_0, S, S), \text{ cropped to } (c_0, k_h, k_w) \text{ (top-left)}

        \mathbf{Z}_{:,y,x} &= \mathbf{W}_2\,\mathrm{ReLU}(\mathbf{W}_1 \mathbf{Y}_{:,y,x} + \mathbf{b}_1)
            + \mathbf{b}_2 \in \mathbb{R}^{M_0 M_1}

        \mathbf{P}[o, i, y, x] &= \mathbf{Z}[o M_1 + i, y, x] \quad \text{(out-major channels)}

    The two :math:`1 \times 1` convolutions of the original act per kernel position and are written here
    as :class:`~torch.nn.Linear` layers (``conv.0``, ``conv.2``). The result is always the full
    decoding, sliced (spec §2.7), but only what survives the slice is evaluated: the :math:`k_h k_w` rows
    of ``fc`` and, for targets with fewer than :math:`M_0` / :math:`M_1` channels, the rows
    :math:`o M_1 + i` of ``conv.2`` with :math:`o < m_0, i < m_1`. Every channel count works.
    The classification weight mixes the *out* axis into :math:`K` classes (:meth:`classifier`):

    .. math::
        \mathbf{W}_{cls}[k, i] = \sum_o \mathbf{W}_c[k, o]\,\mathrm{ReLU}(\mathbf{P}[o, i, 0, 0])
            + \mathbf{b}_c[k].

    Args:
        in_features (int): node feature size :math:`d`. (default: :obj:`32`)
        hid (sequence of int): hidden sizes :math:`(c_0, c_1, \dots)`; GHN-2 uses :math:`(4d, 8d)`.
        out_shape (sequence of int): :math:`(M_0, M_1, S, S)`. (default: :obj:`(64, 64, 11, 11)`)
        num_classes (int): :math:`K`. (default: :obj:`10`)

    Shapes:
        - **input:** :math:`(N, d)`
        - **output:** :math:`(N, M_0, M_1, k_h, k_w)`; :meth:`classifier`: :math:`(N, K, M_1)`
    """
    def __init__(self, in_features: int = 32, hid: Sequence[int] = (128, 256),
                 out_shape: Sequence[int] = (64, 64, 11, 11), num_classes: int = 10) -> None:
        super().__init__()
        if len(out_shape) != 4 or out_shape[2] != out_shape[3]:
            raise ValueError(f'out_shape must be (M0, M1, S, S), got {tuple(out_shape)}')
        self.in_features, self.hid = in_features, tuple(hid)
        self.out_shape, self.num_classes = tuple(int(s) for s in out_shape), num_classes
        m0, m1, s, _ = self.out_shape
        self.fc = nn.Sequential(nn.Linear(in_features, self.hid[0] * s * s), nn.ReLU())
        self.conv = MLP(self.hid + (m0 * m1,), last_activation=False)
        self.class_layer_predictor = nn.Sequential(nn.ReLU(), nn.Linear(m0, num_classes))
        self._rows: Dict[Tuple, Tensor] = {}  # cached row indices of fc / conv.2 per slice
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc[0].reset_parameters()
        self.conv.reset_parameters()
        self.class_layer_predictor[1].reset_parameters()

    def _fc_rows(self, kh: int, kw: int, device: torch.device) -> Tensor:
        # fc's output is viewed as (c0, S, S): row c*S*S + y*S + x holds channel c at (y, x). Rows are
        # listed position-major, (y, x, c), so that the output reshapes to (N*kh*kw, c0) directly.
        key = ('fc', kh, kw, device)
        if key not in self._rows:
            s = self.out_shape[2]
            c = torch.arange(self.hid[0], device=device) * s * s
            y = torch.arange(kh, device=device) * s
            x = torch.arange(kw, device=device)
            self._rows[key] = (y.view(-1, 1, 1) + x.view(1, -1, 1) + c.view(1, 1, -1)).flatten()
        return self._rows[key]

    def _out_rows(self, m0: int, m1: int, device: torch.device) -> Tensor:
        # Output channel o*M1 + i (out-major) for o < m0, i < m1.
        key = ('out', m0, m1, device)
        if key not in self._rows:
            o = torch.arange(m0, device=device) * self.out_shape[1]
            self._rows[key] = (o.view(-1, 1) + torch.arange(m1, device=device).view(1, -1)).flatten()
        return self._rows[key]

    def forward(self, x: Tensor, kh: int = 1, kw: int = 1, out_channels: Optional[int] = None,
                in_channels: Optional[int] = None) -> Tensor:
        """Decodes :math:`(N, m_0, m_1, k_h, k_w)`: the top-left ``out_channels`` x ``in_channels``
        (default :math:`M_0 \times M_1`) block of the full prediction, which is all a target with at
        most that many channels uses. Only those output rows are evaluated; the values are those of the
        full decoding."""
        return self.forward_multi([x], [(kh, kw)], out_channels, in_channels)[0]

    def forward_multi(self, xs: List[Tensor], kernels: List[Tuple[int, int]],
                      out_channels: Optional[int] = None, in_channels: Optional[int] = None
                      ) -> List[Tensor]:
        """:meth:`forward` for several node sets, each with its own kernel size: ``fc`` runs per set, the
        :math:`1 \times 1` layers once over all kernel positions of all sets."""
        s = self.out_shape[2]
        m0 = self.out_shape[0] if out_channels is None else min(out_channels, self.out_shape[0])
        m1 = self.out_shape[1] if in_channels is None else min(in_channels, self.out_shape[1])
        lin = self.fc[0]
        ys, sizes = [], []
        for x, (kh, kw) in zip(xs, kernels):
            if not (1 <= kh <= s and 1 <= kw <= s):
                raise ValueError(f'kernel size ({kh}, {kw}) must lie in [1, {s}]; larger kernels are tiled '
                                 f'after decoding (pyg_ghn.nn.normalize.tile_to_shape)')
            rows = self._fc_rows(kh, kw, x.device)
            w, b = lin.weight.index_select(0, rows), lin.bias.index_select(0, rows)
            ys.append(F.relu(F.linear(x, w, b)).view(-1, self.hid[0]))
            sizes.append(ys[-1].size(0))
        z = torch.cat(ys) if len(ys) > 1 else ys[0]  # (positions, c0)
        for layer in list(self.conv)[:-1]:
            z = layer(z)
        last = self.conv[-1]
        if (m0, m1) == self.out_shape[:2]:
            z = last(z)
        else:
            rows = self._out_rows(m0, m1, z.device)
            z = F.linear(z, last.weight.index_select(0, rows), last.bias.index_select(0, rows))
        outs = z.split(sizes) if len(sizes) > 1 else [z]
        return [o.view(x.size(0), kh, kw, m0, m1).permute(0, 3, 4, 1, 2)
                for o, x, (kh, kw) in zip(outs, xs, kernels)]

    def classifier(self, x: Tensor) -> Tensor:
        """Classification weights :math:`(N, K, M_1)` from the :math:`1 \\times 1` decoding."""
        d = self(x, 1, 1)[..., 0, 0]  # (N, M0 out, M1 in)
        return self.class_layer_predictor(d.transpose(1, 2)).transpose(1, 2)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_features}, hid={self.hid}, '
                f'out_shape={self.out_shape}, num_classes={self.num_classes})')
