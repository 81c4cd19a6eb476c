r"""The GHN-2 layer as a generic DAG encoder: graph regression on directed acyclic graphs.

:class:`pyg_ghn.nn.GHN2Conv` updates nodes in topological order (a forward sweep, then a backward one),
so one layer sees whole paths. This example compares it, with and without shortest-path virtual edges,
with GIN on a synthetic task where direction matters:

* ``--target longest_path`` (default): each node has a type with a hidden weight (type :math:`t` weighs
  :math:`t + 1`); the target is the largest total weight of a directed path,
  :math:`\max_v L(v)` with :math:`L(v) = w_v + \max_{u \to v} L(u)`;
* ``--target depth``: the number of edges of the longest path.

Graphs are random DAGs (each node draws parents among the few nodes before it) with the topological
levels and virtual edges of :mod:`pyg_ghn.transforms`. Reports the test mean absolute error, :math:`R^2`
and Kendall's tau, next to the constant (training-mean) predictor.

Optional, with the ``ogb`` extra (``pip install 'pyg_ghn[ogb]'``): ``--dataset ogbg-code2`` regresses the
number of sub-tokens of a method's name from its abstract syntax tree (a tree, hence a DAG), a proxy task
on real graphs, not the OGB leaderboard task.

    python examples/dag_regression.py --num-graphs 2000 --epochs 50
    python examples/dag_regression.py --tiny
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GINConv, global_max_pool, global_mean_pool
from torch_geometric.utils import to_undirected

from pyg_ghn.nn import GHN2Conv
from pyg_ghn.properties import kendall_tau
from pyg_ghn.transforms import AddShortestPathEdges, AddTopologicalLevels

ENCODERS = ('ghn2', 'ghn1', 'gin')


def random_dag(rng: np.random.RandomState, num_nodes: int, num_types: int = 4, window: int = 4,
               p: float = 0.35) -> Data:
    """A random DAG on nodes ``0..n-1`` (a topological order): node ``v > 0`` links from each of the
    ``window`` nodes before it with probability ``p``, and from at least one. ``x`` holds node types."""
    edges = []
    for v in range(1, num_nodes):
        cand = np.arange(max(0, v - window), v)
        parents = cand[rng.rand(len(cand)) < p]
        if parents.size == 0:
            parents = rng.choice(cand, 1)
        edges += [(int(u), v) for u in parents]
    edge_index = torch.tensor(edges, dtype=torch.long).t().reshape(2, -1)
    x = torch.from_numpy(rng.randint(0, num_types, (num_nodes, 1))).long()
    return Data(x=x, edge_index=edge_index, num_nodes=num_nodes)


def longest_path(data: Data, weighted: bool) -> float:
    """:math:`\\max_v L(v)`, :math:`L(v) = w_v + \\max_{u \\to v} L(u)` (nodes are in topological order),
    with :math:`w_v` = type + 1, or 1 for every edge when not ``weighted`` (the depth)."""
    n = data.num_nodes
    w = (data.x[:, 0] + 1).tolist() if weighted else [0] * n
    best = list(w)
    parents: List[List[int]] = [[] for _ in range(n)]
    for u, v in data.edge_index.t().tolist():
        parents[v].append(u)
    for v in range(n):
        if parents[v]:
            best[v] = w[v] + max(best[u] for u in parents[v]) + (0 if weighted else 1)
    return float(max(best))


def synthetic(num_graphs: int, target: str, seed: int, n_range=(8, 40), num_types: int = 4,
              max_sp_dist: int = 10) -> List[Data]:
    rng = np.random.RandomState(seed)
    levels, sp = AddTopologicalLevels(), AddShortestPathEdges(max_sp_dist)
    out = []
    for _ in range(num_graphs):
        g = random_dag(rng, rng.randint(n_range[0], n_range[1] + 1), num_types)
        g.y = torch.tensor([[longest_path(g, target == 'longest_path')]])
        out.append(sp(levels(g)))
    return out


def code2(root: str, max_graphs: int, max_sp_dist: int = 5) -> List[Data]:
    try:
        from ogb.graphproppred import PygGraphPropPredDataset
    except ImportError:
        sys.exit("error: --dataset ogbg-code2 needs the ogb package: pip install 'pyg_ghn[ogb]'")
    try:
        ds = PygGraphPropPredDataset('ogbg-code2', root=root)
    except Exception as e:  # noqa: BLE001 - ogb's own loading; say what to do
        sys.exit(f'error: ogb could not load ogbg-code2 ({type(e).__name__}: {e}). ogb loads its processed file '
                 f'with a bare torch.load, which torch >= 2.6 refuses for PyG data; this example does not '
                 f'unpickle files unsafely.')
    levels, sp = AddTopologicalLevels(), AddShortestPathEdges(max_sp_dist)
    out = []
    for i in range(min(max_graphs, len(ds))):
        d = ds[i]
        # Node type and attribute ids, hashed into the encoder's vocabularies; AST edges point parent -> child.
        g = Data(x=torch.stack([d.x[:, 0] % 128, d.x[:, 1] % 4096], 1), edge_index=d.edge_index,
                 num_nodes=d.num_nodes, y=torch.tensor([[float(len(d.y))]]))
        out.append(sp(levels(g)))
    return out


class DAGRegressor(nn.Module):
    r"""Node-type embeddings -> encoder -> ``[mean || max]`` pooling -> MLP.

    Encoders: ``'ghn2'`` (:class:`~pyg_ghn.nn.GHN2Conv` with virtual edges, then LayerNorm), ``'ghn1'``
    (the same without virtual edges) and ``'gin'`` (``num_layers`` :class:`~torch_geometric.nn.GINConv` on
    the undirected graph).
    """

    def __init__(self, encoder: str, vocab: Sequence[int], hidden: int = 32, num_layers: int = 3) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f'encoder must be one of {ENCODERS}, got {encoder!r}')
        self.encoder_name = encoder
        self.embeds = nn.ModuleList(nn.Embedding(v, hidden) for v in vocab)
        if encoder == 'gin':
            self.convs = nn.ModuleList(GINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(),
                                                             nn.Linear(hidden, hidden)), train_eps=True)
                                       for _ in range(num_layers))
        else:
            self.conv = GHN2Conv(hidden, virtual_edges=encoder == 'ghn2')
            self.norm = nn.LayerNorm(hidden)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, data: Batch) -> Tensor:
        h = sum(emb(data.x[:, i]) for i, emb in enumerate(self.embeds))
        if self.encoder_name == 'gin':
            ei = to_undirected(data.edge_index, num_nodes=h.size(0))
            for conv in self.convs:
                h = F.relu(conv(h, ei))
        else:
            h = self.norm(self.conv(h, data.edge_index, data.level_fw, data.level_bw,
                                    getattr(data, 'edge_index_sp', None), getattr(data, 'edge_dist_sp', None)))
        pooled = torch.cat([global_mean_pool(h, data.batch, data.num_graphs),
                            global_max_pool(h, data.batch, data.num_graphs)], 1)
        return self.head(pooled)


def train_eval(model, train, test, epochs, lr, batch_size, seed):
    y = torch.cat([g.y for g in train]).view(-1)
    mean, std = y.mean(), y.std().clamp(min=1e-6)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    losses = []
    model.train()
    for _ in range(epochs):
        for b in loader:
            loss = F.mse_loss(model(b).view(-1), (b.y.view(-1) - mean) / std)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(b).view(-1) for b in DataLoader(test, batch_size=256)]) * std + mean
    truth = torch.cat([g.y for g in test]).view(-1)
    return metrics(truth, pred), losses


def metrics(truth: Tensor, pred: Tensor) -> dict:
    t, p = truth.double(), pred.double()
    return dict(mae=float((t - p).abs().mean()), r2=float(1 - ((t - p) ** 2).sum() / ((t - t.mean()) ** 2).sum()),
                tau=kendall_tau(t, p))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dataset', default='synthetic', choices=['synthetic', 'ogbg-code2'])
    ap.add_argument('--target', default='longest_path', choices=['longest_path', 'depth'])
    ap.add_argument('--encoders', nargs='+', default=list(ENCODERS), choices=ENCODERS)
    ap.add_argument('--num-graphs', type=int, default=2000)
    ap.add_argument('--epochs', type=int, default=50)
    ap.add_argument('--hidden', type=int, default=32)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--batch-size', type=int, default=64)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--root', default='data/ogb', help='ogbg-code2 folder')
    ap.add_argument('--out', default='runs/dag_regression')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--tiny', action='store_true', help='few graphs and epochs: an end-to-end check')
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.tiny:
        a.num_graphs, a.epochs, a.batch_size = 120, 6, 16
    t0 = time.time()
    if a.dataset == 'synthetic':
        graphs, vocab = synthetic(a.num_graphs, a.target, a.seed), [4]
        task = f'synthetic DAGs, target {a.target}'
    else:
        graphs, vocab = code2(a.root, a.num_graphs), [128, 4096]
        task = 'ogbg-code2 ASTs, target: number of method-name sub-tokens'
    n_test = max(1, len(graphs) // 5)
    train, test = graphs[:-n_test], graphs[-n_test:]
    y_train = torch.cat([g.y for g in train]).view(-1)
    y_test = torch.cat([g.y for g in test]).view(-1)
    results = {'mean predictor': metrics(y_test, torch.full_like(y_test, float(y_train.mean())))}
    for enc in a.encoders:
        torch.manual_seed(a.seed)
        model = DAGRegressor(enc, vocab, a.hidden)
        results[enc], losses = train_eval(model, train, test, a.epochs, a.lr, a.batch_size, a.seed)
        per_epoch = len(losses) // a.epochs
        results[enc]['first_epoch_loss'] = float(np.mean(losses[:per_epoch]))
        results[enc]['last_epoch_loss'] = float(np.mean(losses[-per_epoch:]))
    print(f'{task}: {len(train)} train / {len(test)} test graphs, {a.epochs} epochs')
    print(f"{'':<16}{'MAE':>8}{'R^2':>8}{'tau':>8}")
    for k, r in results.items():
        print(f"{k:<16}{r['mae']:>8.3f}{r['r2']:>8.3f}{r['tau']:>8.3f}")
    os.makedirs(a.out, exist_ok=True)
    with open(osp.join(a.out, 'results.json'), 'w') as f:
        json.dump(dict(task=task, args=vars(a), results=results), f, indent=1)
    print(f"saved {osp.join(a.out, 'results.json')} ({time.time() - t0:.0f} s)")
    return results


if __name__ == '__main__':
    main()
