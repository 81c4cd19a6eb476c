"""Test helpers for the GHN: DeepNets-like synthetic architecture graphs, and a slow, node-by-node
reimplementation of the original GHN-2 forward pass written from the spec text (shape lookup dictionaries,
a sequential GatedGNN over a topological order, 1x1 convolutions, repeat-based tiling)."""
import math
import random
from typing import Dict, List, Optional, Sequence, Tuple

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F

from pyg_ghn import PRIMITIVES, ArchGraph, Role
from pyg_ghn.transforms import AddShortestPathEdges, AddTopologicalLevels


class GraphMaker:
    """Builds an ArchGraph node by node (node 0 = input)."""

    def __init__(self) -> None:
        self.prims: List[int] = []
        self.roles: List[int] = []
        self.shapes: List[Tuple[int, ...]] = []
        self.names: List[List[str]] = []
        self.edges: List[Tuple[int, int]] = []
        self.add('input')

    def add(self, prim: str, shape: Sequence[int] = (), role: Role = Role.NONE,
            names: Sequence[str] = (), inputs: Sequence[int] = ()) -> int:
        v = len(self.prims)
        self.prims.append(PRIMITIVES.index(prim))
        self.roles.append(int(role))
        self.shapes.append(tuple(shape))
        self.names.append(list(names))
        self.edges.extend((u, v) for u in inputs)
        return v

    def weight(self, name: str, shape: Sequence[int], inputs: Sequence[int], prim: str = 'conv') -> int:
        return self.add(prim, shape, Role.WEIGHT, [name + '.weight'], inputs)

    def bn(self, name: str, c: int, inputs: Sequence[int], prim: str = 'bn') -> int:
        return self.add(prim, (c,), Role.NORM, [name + '.weight', name + '.bias'], inputs)

    def build(self, max_sp_dist: int = 50) -> ArchGraph:
        n = len(self.prims)
        shape = torch.ones(n, 4, dtype=torch.long)
        for v, s in enumerate(self.shapes):
            if s:
                shape[v, :len(s)] = torch.tensor(s)
        g = ArchGraph(x=torch.tensor(self.prims), edge_index=torch.tensor(self.edges).t().contiguous(),
                      num_nodes=n, shape=shape, ndim=torch.tensor([len(s) for s in self.shapes]),
                      role=torch.tensor(self.roles), cell=torch.zeros(n, dtype=torch.long),
                      param_names=self.names,
                      node_names=[ns[0] if ns else PRIMITIVES[p] for ns, p in zip(self.names, self.prims)])
        g = AddTopologicalLevels()(g)
        return AddShortestPathEdges(max_sp_dist)(g)


def deepnets_like_graph(seed: int, num_classes: int = 10, n_cells: Optional[int] = None) -> ArchGraph:
    """A random DARTS-style network graph in the range of DeepNets-1M training networks: stem, cells of
    sep/dil/conv/pool ops joined by sums and a concat, two reductions multiplying the channels by
    ``C_mult``, a one- or two-layer classifier."""
    rng = random.Random(seed)
    gm = GraphMaker()
    c = rng.choice([32, 48, 64])
    c_mult = rng.choice([1, 2])
    n_cells = n_cells or rng.randint(4, 8)
    ks = rng.choice([3, 5, 7])
    x = gm.weight('stem.0', (c, 3, ks, ks), [0])
    x = gm.bn('stem.1', c, [x])
    s0 = s1 = x
    c_prev = c
    for cell in range(n_cells):
        if cell in (n_cells // 3, 2 * n_cells // 3):
            c *= c_mult
        p = f'cells.{cell}'
        pre0 = gm.bn(f'{p}.pre0.bn', c, [gm.weight(f'{p}.pre0.conv', (c, c_prev, 1, 1), [s0])])
        pre1 = gm.bn(f'{p}.pre1.bn', c, [gm.weight(f'{p}.pre1.conv', (c, c_prev, 1, 1), [s1])])
        states = [pre0, pre1]
        for step in range(rng.choice([2, 3, 4])):
            outs = []
            for j, src in enumerate(rng.sample(states, 2)):
                name = f'{p}._ops.{step}.{j}'
                op = rng.choice(['sep', 'dil', 'conv', 'conv1', 'conv71', 'max', 'avg'])
                if op == 'sep':
                    y = src
                    for r in range(2):
                        k = rng.choice([3, 5])
                        y = gm.weight(f'{name}.dw{r}', (c, 1, k, k), [y], prim='sep_conv')
                        y = gm.weight(f'{name}.pw{r}', (c, c, 1, 1), [y])
                        y = gm.bn(f'{name}.bn{r}', c, [y])
                elif op == 'dil':
                    y = gm.weight(f'{name}.dw', (c, 1, 3, 3), [src], prim='dil_conv')
                    y = gm.bn(f'{name}.bn', c, [gm.weight(f'{name}.pw', (c, c, 1, 1), [y])])
                elif op in ('conv', 'conv1'):
                    k = 3 if op == 'conv' else 1
                    y = gm.bn(f'{name}.bn', c, [gm.weight(f'{name}.conv', (c, c, k, k), [src])])
                elif op == 'conv71':
                    y = gm.weight(f'{name}.c17', (c, c, 1, 7), [src])
                    y = gm.bn(f'{name}.bn', c, [gm.weight(f'{name}.c71', (c, c, 7, 1), [y])])
                else:
                    y = gm.add('max_pool' if op == 'max' else 'avg_pool', (1, 1, 3, 3), inputs=[src])
                outs.append(y)
            states.append(gm.add('sum', inputs=outs))
        concat = states[2:]
        out = gm.add('concat', inputs=concat) if len(concat) > 1 else concat[0]
        s0, s1, c_prev = s1, out, c * len(concat)
    x = gm.add('glob_avg', inputs=[s1])
    if rng.random() < 0.5:  # two-layer head: Linear weight -> bias -> classifier
        fc = rng.choice([64, 128, 256])
        x = gm.weight('classifier.0', (fc, c_prev), [x])
        x = gm.add('bias', (fc,), Role.BIAS, ['classifier.0.bias'], [x])
        c_prev = fc
    x = gm.add('conv', (num_classes, c_prev), Role.CLS_WEIGHT, ['classifier.weight'], [x])
    gm.add('bias', (num_classes,), Role.CLS_BIAS, ['classifier.bias'], [x])
    return gm.build()


def vit_like_graph(num_classes: int = 10, c: int = 64, depth: int = 2) -> ArchGraph:
    """A small transformer graph: conv stem, a (1, C, 11, 11) position encoding feeding a sum, LN,
    attention weights, MLP blocks with biases, a LayerNorm as the last node (CLS_BIAS on a norm)."""
    gm = GraphMaker()
    x = gm.weight('stem', (c, 3, 3, 3), [0])
    pe = gm.add('pos_enc', (1, c, 11, 11), Role.WEIGHT, ['pos_enc.weight'])
    x = gm.add('sum', inputs=[x, pe])
    for b in range(depth):
        p = f'blocks.{b}'
        y = gm.bn(f'{p}.ln1', c, [x], prim='ln')
        y = gm.weight(f'{p}.qkv', (3 * c, c), [y])
        y = gm.add('msa', inputs=[y])
        y = gm.weight(f'{p}.out', (c, c), [y])
        y = gm.add('bias', (c,), Role.BIAS, [f'{p}.out.bias'], [y])
        x = gm.add('sum', inputs=[x, y])
        y = gm.bn(f'{p}.ln2', c, [x], prim='ln')
        y = gm.weight(f'{p}.ff1', (c, c), [y])
        y = gm.add('bias', (c,), Role.BIAS, [f'{p}.ff1.bias'], [y])
        y = gm.weight(f'{p}.ff2', (c, c), [y])
        y = gm.add('bias', (c,), Role.BIAS, [f'{p}.ff2.bias'], [y])
        x = gm.add('sum', inputs=[x, y])
    x = gm.add('avg_pool', (1, 1, 3, 3), inputs=[x])
    x = gm.add('conv', (num_classes, c), Role.CLS_WEIGHT, ['head.weight'], [x])
    gm.add('ln', (num_classes,), Role.CLS_BIAS, ['head_norm.weight', 'head_norm.bias'], [x])
    return gm.build()


def conv_chain_graph(shapes: Sequence[Tuple[int, ...]], num_classes: int = 10) -> ArchGraph:
    """input -> conv(shape_0) -> bn -> conv(shape_1) -> bn ... -> glob_avg -> classifier."""
    gm = GraphMaker()
    x = 0
    for i, s in enumerate(shapes):
        x = gm.bn(f'bn{i}', s[0], [gm.weight(f'conv{i}', s, [x])])
    x = gm.add('glob_avg', inputs=[x])
    x = gm.add('conv', (num_classes, shapes[-1][0]), Role.CLS_WEIGHT, ['fc.weight'], [x])
    gm.add('bias', (num_classes,), Role.CLS_BIAS, ['fc.bias'], [x])
    return gm.build()


# ----------------------------------------------------------------------------------------------------------
# Reference GHN-2 forward, node by node, from the spec's description of the original code.

def _lookup_dict(table: List[int], special: Dict[int, int], upto: int) -> Dict[int, int]:
    table_np = np.array(table)
    d = {c: i for i, c in enumerate(table)}
    for c, target in special.items():
        d[c] = d[target]
    for c in range(1, upto):
        if c not in d:
            d[c] = d[table[int(np.argmin(np.abs(table_np - c)))]]  # first minimum = smaller on ties
    return d


def reference_shape_indices(shapes: List[Tuple[int, ...]], num_classes: int, s_max: int) -> torch.Tensor:
    channels = sorted(set([1, 3, num_classes] + list(range(8, 64, 8)) + list(range(64, 4096, 16))
                          + list(range(4096, 8193, 32))))
    spatial = sorted(set(list(range(1, max(12, s_max), 2)) + [14, 16]))
    ch = _lookup_dict(channels, {4: 8, 5: 8, 6: 8, 7: 8}, channels[-1])
    sp = _lookup_dict(spatial, {2: 3}, spatial[-1])
    out = []
    for sz in shapes:
        if not sz:
            out.append([len(channels), len(channels), len(spatial), len(spatial)])
            continue
        if len(sz) == 1:
            sz = (sz[0], 1, 1, 1)
        elif len(sz) == 2:
            sz = (sz[0], sz[1], 1, 1)
        elif len(sz) == 3:
            if sz[0] == 1 and min(sz[1:]) > 1:
                s = int(math.floor(sz[1] ** 0.5))
                sz = (1, sz[2], s, s)
            else:
                sz = (sz[0], sz[1], sz[2], 1)
        out.append([ch.get(sz[0], len(channels) - 1), ch.get(sz[1], len(channels) - 1),
                    sp.get(sz[2], len(spatial) - 1), sp.get(sz[3], len(spatial) - 1)])
    return torch.tensor(out)


def _mlp(x: torch.Tensor, layers: Sequence[torch.nn.Linear], last_relu: bool = True) -> torch.Tensor:
    for j, lin in enumerate(layers):
        x = x @ lin.weight.t() + lin.bias
        if j < len(layers) - 1 or last_relu:
            x = torch.relu(x)
    return x


def reference_gated_gnn(gnn, x: torch.Tensor, graph: ArchGraph, ve: bool, backward: bool = True,
                        num_rounds: int = 1) -> torch.Tensor:
    """Sequential asynchronous GatedGNN (spec §2.5 step 4) over one networkx topological order."""
    n = x.size(0)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(graph.edge_index.t().tolist())
    order = list(nx.topological_sort(g))
    edges = [(u, v, 1) for u, v in graph.edge_index.t().tolist()]
    if ve:
        edges += [(u, v, s) for (u, v), s in zip(graph.edge_index_sp.t().tolist(), graph.edge_dist_sp.tolist())]
    mlp = [gnn.mlp[0], gnn.mlp[2]]
    mlp_ve = [gnn.mlp_sp[0], gnn.mlp_sp[2]] if ve else None
    incoming = {'fw': [[] for _ in range(n)], 'bw': [[] for _ in range(n)]}
    for a, b, s in edges:
        incoming['fw'][b].append((a, s))  # forward: messages from sources
        incoming['bw'][a].append((b, s))  # backward: messages from targets
    h = list(x.unbind(0))
    for _ in range(num_rounds):
        for direction in (('fw', 'bw') if backward else ('fw',)):
            for v in (order if direction == 'fw' else order[::-1]):
                m = torch.zeros_like(h[v])
                for u, s in incoming[direction][v]:
                    if s == 1:
                        m = m + _mlp(h[u], mlp)
                    if ve:
                        m = m + _mlp(h[u], mlp_ve) / s
                h[v] = gnn.gru(m.unsqueeze(0), h[v].unsqueeze(0))[0]
    return torch.stack(h)


def _tile_original(w: torch.Tensor, t: Tuple[int, ...]) -> torch.Tensor:
    # crop to min(t, s), repeat out/in by t // s + 1, crop to t; spatial dims by index modulo (our
    # extension for kernels > S; identity otherwise).
    if len(t) == 1:
        w = w[:min(t[0], w.shape[0])]
    elif len(t) == 2:
        if w.dim() > 2:
            w = w[:, :, 0, 0]
        w = w[:min(t[0], w.shape[0]), :min(t[1], w.shape[1])]
    else:
        if w.dim() == 2:
            w = w[:, :, None, None]
        if len(t) == 3:
            w = w[..., 0]
        w = w[:min(t[0], w.shape[0]), :min(t[1], w.shape[1])]
    if t[0] > w.shape[0]:
        w = w.repeat((t[0] // w.shape[0] + 1,) + (1,) * (w.dim() - 1))[:t[0]]
    if len(t) > 1 and t[1] > w.shape[1]:
        w = w.repeat((1, t[1] // w.shape[1] + 1) + (1,) * (w.dim() - 2))[:, :t[1]]
    for d in range(2, len(t)):
        if t[d] != w.shape[d]:
            w = w.index_select(d, torch.arange(t[d]) % w.shape[d])
    return w


def _normalize_original(p: torch.Tensor, is_w: bool, pos_enc: bool) -> torch.Tensor:
    if p.dim() > 1:
        sz = p.shape
        if len(sz) > 2 and sz[2] >= 11 and sz[0] == 1:
            assert pos_enc
            return p
        no_relu = len(sz) > 2 and (sz[1] == 1 or (len(sz) > 3 and sz[2] < sz[3]))
        beta = 1. if no_relu else 2.
        return p * (beta / p[0].numel()) ** 0.5
    return 2 * torch.sigmoid(0.5 * p) if is_w else torch.tanh(0.2 * p)


def reference_predict(ghn, graph: ArchGraph) -> Dict[str, torch.Tensor]:
    """Parameters of one graph predicted node by node."""
    cfg = ghn.config
    m0, m1, s_max, _ = cfg['max_shape']
    n = graph.num_nodes
    shapes = [graph.param_shape(v) for v in range(n)]
    ind = reference_shape_indices(shapes, cfg['num_classes'], s_max)
    se = ghn.shape_enc
    x = ghn.op_embed.weight[graph.x] + torch.cat(
        [se.embed_channel.weight[ind[:, 0]], se.embed_channel.weight[ind[:, 1]],
         se.embed_spatial.weight[ind[:, 2]], se.embed_spatial.weight[ind[:, 3]]], dim=1)
    if cfg['hypernet'] == 'mlp':
        x = _mlp(x, [ghn.gnn[0], ghn.gnn[2]])
    else:
        x = reference_gated_gnn(ghn.gnn, x, graph, cfg['ve'], cfg.get('backward', True),
                                cfg.get('num_rounds', 1))
    if cfg['layernorm']:
        x = F.layer_norm(x, (x.size(1),), ghn.ln.weight, ghn.ln.bias)

    dec = ghn.decoder
    hid0 = dec.fc[0].weight.size(0) // (s_max * s_max)
    conv_a = (dec.conv[0].weight[:, :, None, None], dec.conv[0].bias)
    conv_b = (dec.conv[2].weight[:, :, None, None], dec.conv[2].bias)
    cls_conv = (dec.class_layer_predictor[1].weight[:, :, None, None], dec.class_layer_predictor[1].bias)

    def dec4d(h: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
        y = torch.relu(h @ dec.fc[0].weight.t() + dec.fc[0].bias).view(1, hid0, s_max, s_max)
        y = y[:, :, :kh, :kw]
        z = F.conv2d(torch.relu(F.conv2d(y, *conv_a)), *conv_b)
        return z.view(m0, m1, kh, kw)

    out = {}
    for v in range(n):
        role, names, t = Role(int(graph.role[v])), graph.param_names[v], shapes[v]
        if role == Role.NONE or not names:
            continue
        pos_enc = PRIMITIVES[int(graph.x[v])] == 'pos_enc'
        if role == Role.WEIGHT:
            t4 = tuple(t) + (1,) * (4 - len(t))
            w = dec4d(x[v], min(t4[2], s_max), min(t4[3], s_max))
            tensors = [(w, True)]
        elif role == Role.CLS_WEIGHT:
            d = dec4d(x[v], 1, 1)  # (64, 64, 1, 1): channels = out axis
            w = F.conv2d(torch.relu(d[:, :, :, 0]).unsqueeze(0), *cls_conv)[0, :, :, 0]  # (K, 64)
            tensors = [(w, True)]
        else:
            vec = _mlp(x[v], [ghn.decoder_1d[0], ghn.decoder_1d[2]], last_relu=False).view(2, -1)
            if role == Role.CLS_BIAS:
                vec = torch.relu(vec) @ ghn.bias_class[1].weight.t() + ghn.bias_class[1].bias
            norm_like = role == Role.NORM or PRIMITIVES[int(graph.x[v])] in ('bn', 'ln')
            if norm_like:
                tensors = [(vec[0], True), (vec[1], False)][:len(names)]
            else:
                tensors = [(vec[1], False)]
        for name, (w, is_w) in zip(names, tensors):
            w = _tile_original(w, t)
            if cfg['weight_norm']:
                w = _normalize_original(w, is_w, pos_enc)
            out[name] = w
    return out
