"""Networks written the way other code bases write them, not the way pyg_ghn.deepnets does.

Used by the graph tests and by ``benchmarks/graph_build.py``: the graph builder must give these the
original's graphs, and keep them on the fast empty-batch trace.

* :class:`DartsNetworkCIFAR`: the DARTS network as the DARTS repository writes it (``NetworkCIFAR``; heads
  that flatten with ``x.view(x.size(0), -1)``, a tuple output, an auxiliary head), with other common
  head idioms selectable.
* :func:`original_vit`: the paper's ViT whose Transformer blocks compute attention as the original
  DeepNets-1M cell does with einops and ``torch.einsum``, written out in plain torch: rearranges as
  view/permute, the product ``attn @ v`` as torch's einsum records it (Softmax -> Unsqueeze -> Permute
  -> Permute -> View -> Bmm).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyg_ghn.deepnets.genotypes import DARTS_V2, Genotype
from pyg_ghn.deepnets.ops import Transformer
from pyg_ghn.deepnets.predefined import vit

__all__ = ['DartsNetworkCIFAR', 'HEADS', 'original_vit', 'einsum_bhij_bhjd', 'softmax_to_bmm_chains']


# --- DARTS, as in the DARTS repository (model.py / operations.py) --------------------------------------
class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out))


class DilConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, k, stride, padding, dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class SepConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int):
        super().__init__(DilConv(c_in, c_in, k, stride, padding, 1), DilConv(c_in, c_out, k, 1, padding, 1))


class FactorizedReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _op(name: str, c: int, stride: int) -> nn.Module:
    if name == 'max_pool_3x3':
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == 'avg_pool_3x3':
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == 'skip_connect':
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == 'sep_conv_3x3':
        return SepConv(c, c, 3, stride, 1)
    if name == 'dil_conv_3x3':
        return DilConv(c, c, 3, stride, 2, 2)
    raise ValueError(f'operation {name} is not used by DARTS-V2')


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    keep = 1. - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device).bernoulli_(keep)  # one draw per sample
    return x.div(keep).mul(mask)


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        ops, self._concat = (genotype.reduce, genotype.reduce_concat) if reduction else \
            (genotype.normal, genotype.normal_concat)
        self._ops = nn.ModuleList(_op(name, c, 2 if reduction and index < 2 else 1) for name, index in ops)
        self._indices = [index for _, index in ops]
        self.multiplier = len(self._concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._ops) // 2):
            h1, h2 = (self._ops[2 * i + j](states[self._indices[2 * i + j]]) for j in (0, 1))
            if self.training and drop_prob > 0.:
                h1 = h1 if isinstance(self._ops[2 * i], nn.Identity) else drop_path(h1, drop_prob)
                h2 = h2 if isinstance(self._ops[2 * i + 1], nn.Identity) else drop_path(h2, drop_prob)
            states.append(h1 + h2)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


#: How the classifier head turns the last feature map into a vector, as user code commonly writes it.
HEADS = ('view', 'reshape', 'mean', 'squeeze', 'flatten')


class DartsNetworkCIFAR(nn.Module):
    """DARTS's ``NetworkCIFAR`` (C=36, 20 cells: 794 nodes in the original's graph). ``head`` picks the
    head idiom: ``out.view(out.size(0), -1)`` (DARTS), ``out.reshape(out.shape[0], -1)``,
    ``out.mean([2, 3])`` instead of the pooling module, ``out.squeeze(-1).squeeze(-1)``, or
    ``torch.flatten(out, 1)``; the classifier's input always goes through ``F.dropout``."""

    def __init__(self, C: int = 36, num_classes: int = 10, layers: int = 20, auxiliary: bool = True,
                 genotype: Genotype = DARTS_V2, head: str = 'view', drop_prob: float = 0.):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f'head must be one of {HEADS}, got {head!r}')
        self._layers, self._auxiliary, self.head, self.drop_path_prob = layers, auxiliary, head, 0.
        self.drop_prob = drop_prob
        c_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_curr *= 2 if reduction else 1
            cell = Cell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == 2 * layers // 3:
                c_aux = c_p
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def _flatten(self, s1: Tensor) -> Tensor:
        if self.head == 'mean':
            return s1.mean([2, 3])
        out = self.global_pooling(s1)
        if self.head == 'view':
            return out.view(out.size(0), -1)
        if self.head == 'reshape':
            return out.reshape(out.shape[0], -1)
        if self.head == 'squeeze':
            return out.squeeze(-1).squeeze(-1)
        return torch.flatten(out, 1)

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        out = F.dropout(self._flatten(s1), self.drop_prob, self.training)
        return self.classifier(out), logits_aux


# --- The original DeepNets-1M ViT cell (einops + torch.einsum, written out) -------------------------
def einsum_bhij_bhjd(attn: Tensor, v: Tensor) -> Tensor:
    """``torch.einsum('b h i j, b h j d -> b h i d', attn, v)`` as torch records it: the summed index j
    moved last on both sides, the batch indices folded, one ``bmm``."""
    b, h, i, j = attn.shape
    d = v.shape[-1]
    a = attn.unsqueeze(-1)  # b h i j 1 (the d index)
    a = a.permute(0, 1, 2, 4, 3)  # b h i 1 j: the output order, summed index last
    a = a.permute(0, 1, 2, 3, 4).view(b * h, i, j)  # einsum's second permute (here the identity), folded
    out = torch.bmm(a, v.reshape(b * h, j, d))
    return out.view(b, h, i, d)


class OriginalTransformer(Transformer):
    """The original DeepNets-1M ``Transformer`` op's forward (vit-pytorch style): ``to_qkv(ln1(x))``
    chunked in three, ``rearrange(t, 'b n (h d) -> b h n d')``, ``einsum`` for both products and
    ``rearrange(out, 'b h n d -> b n (h d)')``, here with plain torch operations. Same parameters as
    :class:`~pyg_ghn.deepnets.ops.Transformer` (it only replaces ``forward``)."""

    def forward(self, x: Tensor) -> Tensor:
        sz = x.shape
        if len(sz) == 4:
            x = x.view(sz[0], sz[1], -1).permute(0, 2, 1)  # b (h w) c
        b, n, _ = x.shape
        h = self.heads
        q, k, v = (t.view(b, n, h, -1).permute(0, 2, 1, 3)  # 'b n (h d) -> b h n d'
                   for t in self.to_qkv(self.ln1(x)).chunk(3, dim=-1))
        dots = torch.einsum('bhid,bhjd->bhij', q, k) * self.scale
        attn = dots.softmax(dim=-1)
        out = einsum_bhij_bhjd(attn, v)
        out = out.permute(0, 2, 1, 3).reshape(b, n, -1)  # 'b h n d -> b n (h d)'
        out = self.to_out(out) + x
        out = self.ff(self.ln2(out)) + out
        if len(sz) == 4:
            out = out.permute(0, 2, 1).reshape(sz)
            if self.stride > 1:
                out = out[:, :, ::self.stride, ::self.stride]
        return out


def original_vit(**kwargs) -> nn.Module:
    """The paper's ViT (``pyg_ghn.deepnets.predefined.vit``) with the original cell's attention code."""
    model = vit(**kwargs)
    for m in model.modules():
        if type(m) is Transformer:
            m.__class__ = OriginalTransformer
    return model


def softmax_to_bmm_chains(out: Tensor) -> List[List[str]]:
    """The autograd functions between each softmax and the matrix product that consumes it, in data-flow
    order (what the msa rule must see through)."""
    parents, stack, seen = {}, [out.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        for child, _ in fn.next_functions:
            if child is not None:
                parents.setdefault(child, []).append(fn)
                stack.append(child)
    chains = []
    for fn in seen:
        if type(fn).__name__.startswith('Softmax'):
            chain, cur = [], fn
            while not type(cur).__name__.startswith('Bmm') and len(parents.get(cur, [])) == 1:
                chain.append(type(cur).__name__)
                cur = parents[cur][0]
            chains.append(chain + [type(cur).__name__])
    return chains
