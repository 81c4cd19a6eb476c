"""The msa rule: self-attention is one ``msa`` node however it is written."""
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pyg_ghn.deepnets.predefined import vit
from pyg_ghn.graph import from_module
from test_empty_batch import assert_same_graph
from user_style_nets import original_vit, softmax_to_bmm_chains


class SelfAttention(nn.Module):
    """One attention layer, ``style`` picking how ``softmax(q k^T) v`` is computed."""

    def __init__(self, dim: int = 8, heads: int = 2, style: str = 'matmul'):
        super().__init__()
        self.heads, self.style = heads, style
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.to_qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # each b h n d/h
        if self.style == 'sdpa':
            out = F.scaled_dot_product_attention(q, k, v)
        elif self.style == 'einsum':
            attn = torch.einsum('bhid,bhjd->bhij', q, k).softmax(-1)
            out = torch.einsum('bhij,bhjd->bhid', attn, v)
        elif self.style == 'timm':  # softmax in float32, cast back, dropout on the weights
            attn = (q @ k.transpose(-2, -1)).softmax(-1, dtype=torch.float32).to(q.dtype)
            out = F.dropout(attn, 0.1, self.training) @ v
        elif self.style == 'folded':  # heads folded into the batch, bmm, weights through reshapes
            attn = (q @ k.transpose(-2, -1)).softmax(-1).reshape(b * h, n, n).contiguous()
            out = torch.bmm(attn.unsqueeze(1).expand(-1, 1, -1, -1).clone().squeeze(1),
                            v.reshape(b * h, n, d // h)).view(b, h, n, d // h)
        else:  # '@' with permutes
            attn = (q @ k.transpose(-2, -1)).softmax(-1)
            out = attn @ v
        return x + self.to_out(out.transpose(1, 2).reshape(b, n, d))


class MHA(nn.Module):
    def __init__(self, dim: int = 8, need_weights: bool = True):
        super().__init__()
        self.need_weights = need_weights
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x, x, x, need_weights=self.need_weights)[0]


def neighbours(g, i):
    """The names of node ``i``'s predecessors and successors."""
    src, dst = g.edge_index.tolist()
    return ([g.node_names[u] for u, v in zip(src, dst) if v == i],
            [g.node_names[v] for u, v in zip(src, dst) if u == i])


def tokens_model(*blocks: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), *blocks, nn.Linear(8, 3))


@pytest.mark.parametrize('style', ['matmul', 'sdpa', 'einsum', 'timm', 'folded'])
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_msa_between_qkv_and_out_in_every_style(style, mode):
    model = getattr(tokens_model(SelfAttention(style=style), SelfAttention(style=style)), mode)()
    g = from_module(model, (5, 4))
    assert g.primitive_counts()['msa'] == 2
    msa = [i for i, p in enumerate(g.primitive_names) if p == 'msa']
    for layer, i in zip((1, 2), msa):
        assert neighbours(g, i) == ([f'{layer}.to_qkv.weight'], [f'{layer}.to_out.weight'])


@pytest.mark.parametrize('need_weights', [True, False])  # bmm + softmax, or the fused kernel
def test_multihead_attention_is_an_msa_node(need_weights):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # nn.MultiheadAttention's parameters are not predicted (as the original)
        g = from_module(tokens_model(MHA(need_weights=need_weights)), (5, 4))
    assert g.primitive_counts()['msa'] == 1
    preds, succs = neighbours(g, g.primitive_names.index('msa'))
    assert preds == ['0.bias'] and succs == ['AddBackward0']  # the residual sum


class NotAttention(nn.Module):
    """A softmax gate multiplied in element-wise, a softmax added to before a product, and a product of
    projections without softmax (linear attention): none of them is the ``attn @ v`` of an attention."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.gate, self.mix, self.q, self.k = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x * self.gate(x).softmax(-1)
        mixed = (self.mix(x).softmax(-1) + x) @ x.transpose(1, 2)
        linear = (self.q(x).transpose(1, 2) @ self.k(x)).relu()
        return gate + mixed @ x + x @ linear


def test_softmax_and_products_that_are_not_attention():
    g = from_module(tokens_model(NotAttention()), (5, 4), warn=False)
    assert 'msa' not in g.primitive_counts()


def test_original_vit_cell_gives_the_original_graph():
    model = original_vit()
    # The original cell puts five operations between the softmax and attn @ v (spec; issue 17), more than
    # a fixed look-back window sees.
    out = model(torch.randn(1, 3, 32, 32))
    assert softmax_to_bmm_chains(out) == [['SoftmaxBackward0', 'UnsqueezeBackward0', 'PermuteBackward0',
                                           'PermuteBackward0', 'ViewBackward0', 'BmmBackward0']] * 10
    g = from_module(model)
    # The original's ViT graph with msa nodes (spec §1.7: 129 nodes, 148 real edges, 8,254 in all).
    assert g.num_nodes == 129 and g.edge_index.size(1) == 148
    assert g.edge_index.size(1) + g.edge_index_sp.size(1) == 8254
    assert g.primitive_counts()['msa'] == 10
    assert_same_graph(g, from_module(vit()))  # and that of our own cell, node for node
    msa = [i for i, p in enumerate(g.primitive_names) if p == 'msa']
    cells = [k for k in range(12) if k not in (4, 8)]  # cells 4 and 8 are the pooling "reductions"
    for k, i in zip(cells, msa):  # spec §1.8: ln1 -> to_qkv.weight -> msa -> to_out.0.weight
        assert neighbours(g, i) == ([f'cells.{k}._ops.1.to_qkv.weight'], [f'cells.{k}._ops.1.to_out.0.weight'])


@pytest.mark.slow  # maxvit_t at 224x224: ~15 s on one loaded core
def test_maxvit_has_its_attention_nodes():
    model = torchvision.models.maxvit_t()
    layers = [m for m in model.modules() if type(m).__name__ == 'RelativePositionalMultiHeadAttention']
    g = from_module(model, (3, 224, 224), warn=False)
    assert g.primitive_counts()['msa'] == len(layers) == 22  # block and grid attention of 11 MaxViT layers
    for i in (i for i, p in enumerate(g.primitive_names) if p == 'msa'):
        preds, succs = neighbours(g, i)
        assert len(preds) == len(succs) == 1
        assert preds[0].endswith('attn_layer.1.to_qkv.bias') and succs[0].endswith('attn_layer.1.merge.weight')
