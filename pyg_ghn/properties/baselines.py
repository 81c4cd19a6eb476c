r"""Graph neural network regressors trained end to end on architecture graphs: baselines for the GHN
embeddings in property prediction (paper §5.2, "Additional baseline").

* :class:`GINRegressor`: GIN (:class:`torch_geometric.nn.GINConv`) on the graphs made undirected;
* :class:`DirectedGCNRegressor`: directed graph convolutions in the spirit of the Neural Predictor
  (Wen et al., 2020), each layer averaging a GCN pass along the edges and one against them;
* :class:`GHN2ConvRegressor`: the GHN-2 layer (:class:`pyg_ghn.nn.GHN2Conv`) as an encoder, trained from
  scratch.

All read the same node features (:class:`ArchNodeEncoder`): a learned embedding of the primitive plus a
linear map of shape features, pool the nodes by their mean and regress with an MLP. :func:`fit_regressor`
trains on standardised targets (mean squared error, Adam); :func:`predict` maps back to the target units.
"""
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GCNConv, GINConv, global_mean_pool
from torch_geometric.utils import to_undirected

from ..primitives import PRIMITIVES

__all__ = ['ArchNodeEncoder', 'shape_features', 'GINRegressor', 'DirectedGCNRegressor', 'GHN2ConvRegressor',
           'REGRESSORS', 'fit_regressor', 'predict', 'fit_and_predict']

NUM_SHAPE_FEATURES = 9


def shape_features(shape: Tensor, ndim: Tensor) -> Tensor:
    r"""Per-node shape features ``[N, 9]``: :math:`\log_2` of the 4 padded dimensions divided by 8 (so that
    padding ones give 0 and 256 channels give 1), then a one-hot of ``ndim`` (0 = no parameter, 1-4)."""
    logs = torch.log2(shape.clamp(min=1).float()) / 8
    return torch.cat([logs, F.one_hot(ndim.clamp(0, 4), 5).float()], dim=1)


class ArchNodeEncoder(nn.Module):
    r"""Initial node features of an architecture graph,
    :math:`\mathbf{h}^0_v = \mathbf{E}[\mathrm{op}_v] + \mathbf{W} \phi(\mathrm{shape}_v) + \mathbf{b}` with
    :math:`\phi` the :func:`shape_features`."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(PRIMITIVES), hidden)
        self.shape = nn.Linear(NUM_SHAPE_FEATURES, hidden)

    def reset_parameters(self) -> None:
        self.embed.reset_parameters()
        self.shape.reset_parameters()

    def forward(self, data: Batch) -> Tensor:
        return self.embed(data.x.view(-1)) + self.shape(shape_features(data.shape, data.ndim))


class _ArchRegressor(nn.Module):
    """Node encoder -> graph encoder (subclasses) -> mean pooling -> MLP, with target statistics kept as
    buffers so that :func:`predict` returns values in the units of the targets."""

    def __init__(self, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.hidden, self.out_channels = hidden, out_channels
        self.node_encoder = ArchNodeEncoder(hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_channels))
        self.register_buffer('y_mean', torch.zeros(out_channels))
        self.register_buffer('y_std', torch.ones(out_channels))

    def encode(self, h: Tensor, data: Batch) -> Tensor:
        raise NotImplementedError

    def forward(self, data: Batch) -> Tensor:
        """Standardised predictions ``[B, out_channels]``."""
        h = self.encode(self.node_encoder(data), data)
        return self.head(global_mean_pool(h, data.batch, size=data.num_graphs))

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, 'reset_parameters'):
                m.reset_parameters()

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(hidden={self.hidden}, out_channels={self.out_channels})'


class GINRegressor(_ArchRegressor):
    r"""GIN layers (:class:`~torch_geometric.nn.GINConv` with a 2-layer MLP, trainable :math:`\epsilon`) on
    the undirected graph, ReLU between layers.

    Args:
        hidden (int): node feature size. (default: 64)
        num_layers (int): GIN layers. (default: 3)
        out_channels (int): regressed targets. (default: 1)
    """

    def __init__(self, hidden: int = 64, num_layers: int = 3, out_channels: int = 1) -> None:
        super().__init__(hidden, out_channels)
        self.convs = nn.ModuleList(
            GINConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)),
                    train_eps=True) for _ in range(num_layers))

    def encode(self, h: Tensor, data: Batch) -> Tensor:
        edge_index = to_undirected(data.edge_index, num_nodes=h.size(0))
        for conv in self.convs:
            h = F.relu(conv(h, edge_index))
        return h


class DirectedGCNRegressor(_ArchRegressor):
    r"""Directed graph convolutions as the Neural Predictor (NeuPred) uses for architectures:

    .. math::
        \mathbf{H}^{l+1} = \mathrm{Dropout}\Big(\mathrm{ReLU}\big(\tfrac12 \big(\mathrm{GCN}_{\rightarrow}
        (\mathbf{H}^l) + \mathrm{GCN}_{\leftarrow}(\mathbf{H}^l)\big)\big)\Big)

    with :class:`~torch_geometric.nn.GCNConv` along ``edge_index`` and along its reverse (separate
    weights, self-loops, symmetric normalisation).

    Args:
        hidden (int): node feature size (NeuPred: 144). (default: 144)
        num_layers (int): layers (NeuPred: 4). (default: 4)
        dropout (float): dropout after each layer (NeuPred: 0.1). (default: 0.1)
        out_channels (int): regressed targets. (default: 1)
    """

    def __init__(self, hidden: int = 144, num_layers: int = 4, dropout: float = 0.1,
                 out_channels: int = 1) -> None:
        super().__init__(hidden, out_channels)
        self.dropout = dropout
        self.fw = nn.ModuleList(GCNConv(hidden, hidden) for _ in range(num_layers))
        self.bw = nn.ModuleList(GCNConv(hidden, hidden) for _ in range(num_layers))

    def encode(self, h: Tensor, data: Batch) -> Tensor:
        rev = data.edge_index.flip(0)
        for fw, bw in zip(self.fw, self.bw):
            h = F.relu(0.5 * (fw(h, data.edge_index) + bw(h, rev)))
            h = F.dropout(h, self.dropout, self.training)
        return h


class GHN2ConvRegressor(_ArchRegressor):
    r"""The GHN-2 encoder trained from scratch as a regressor: :class:`~pyg_ghn.nn.GHN2Conv` (gated
    forward-backward sweeps in topological order, shortest-path virtual edges) followed by LayerNorm,
    as in the GHN, then mean pooling and an MLP.

    Args:
        hidden (int): node feature size (GHN-2: 32). (default: 32)
        virtual_edges (bool): use the graphs' ``edge_index_sp`` / ``edge_dist_sp``. (default: True)
        num_rounds (int): forward-backward rounds :math:`T`. (default: 1)
        out_channels (int): regressed targets. (default: 1)
    """

    def __init__(self, hidden: int = 32, virtual_edges: bool = True, num_rounds: int = 1,
                 out_channels: int = 1) -> None:
        from ..nn.conv import GHN2Conv
        super().__init__(hidden, out_channels)
        self.virtual_edges = virtual_edges
        self.conv = GHN2Conv(hidden, virtual_edges=virtual_edges, num_rounds=num_rounds)
        self.norm = nn.LayerNorm(hidden)

    def encode(self, h: Tensor, data: Batch) -> Tensor:
        from ..graph.dag import topological_levels
        level_fw, level_bw = getattr(data, 'level_fw', None), getattr(data, 'level_bw', None)
        if level_fw is None or level_bw is None:
            level_fw, level_bw = (t.to(h.device) for t in topological_levels(data.edge_index, h.size(0)))
        ei_sp = getattr(data, 'edge_index_sp', None) if self.virtual_edges else None
        dist_sp = getattr(data, 'edge_dist_sp', None) if self.virtual_edges else None
        return self.norm(self.conv(h, data.edge_index, level_fw, level_bw, ei_sp, dist_sp))


REGRESSORS = {'gin': GINRegressor, 'dgcn': DirectedGCNRegressor, 'ghn2conv': GHN2ConvRegressor}


def _with_targets(graphs: Sequence[Data], y: Optional[np.ndarray]) -> List[Data]:
    # Shallow copies that keep only what the regressors read, with the (standardised) targets as `y`.
    keys = ('x', 'edge_index', 'edge_index_sp', 'edge_dist_sp', 'level_fw', 'level_bw', 'shape', 'ndim')
    out = []
    for i, g in enumerate(graphs):
        d = Data(**{k: g[k] for k in keys if k in g}, num_nodes=g.num_nodes)
        if y is not None:
            d.y = torch.as_tensor(y[i], dtype=torch.float).view(1, -1)
        out.append(d)
    return out


def fit_regressor(model: _ArchRegressor, graphs: Sequence[Data], y: Union[np.ndarray, Tensor],
                  epochs: int = 100, batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 1e-4,
                  seed: int = 0, max_steps: Optional[int] = None, progress: bool = False) -> List[float]:
    """Trains ``model`` in place on ``graphs`` with targets ``y`` (``[N]`` or ``[N, out_channels]``):
    targets are standardised with their training mean and standard deviation (kept in the model), the loss
    is the mean squared error, the optimiser Adam, batches shuffled by a generator seeded with ``seed``.
    Stops after ``epochs`` epochs or ``max_steps`` updates. Returns the loss of every update."""
    y = torch.as_tensor(np.asarray(y, dtype=np.float32)).view(len(graphs), -1)
    if y.size(1) != model.out_channels:
        raise ValueError(f'{y.size(1)} target columns for a model with out_channels={model.out_channels}')
    mean, std = y.mean(0), y.std(0, unbiased=False).clamp(min=1e-8)
    model.y_mean.copy_(mean)
    model.y_std.copy_(std)
    device = model.y_mean.device
    data = _with_targets(graphs, ((y - mean) / std).numpy())
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses: List[float] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        model.train()
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=epochs, desc=type(model).__name__, leave=False)
        for _ in range(epochs):
            for batch in loader:
                batch = batch.to(device)
                loss = F.mse_loss(model(batch), batch.y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                if max_steps is not None and len(losses) >= max_steps:
                    break
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f'{losses[-1]:.3f}')
            if max_steps is not None and len(losses) >= max_steps:
                break
        if bar is not None:
            bar.close()
    model.eval()
    return losses


@torch.no_grad()
def predict(model: _ArchRegressor, graphs: Sequence[Data], batch_size: int = 64) -> np.ndarray:
    """Predictions ``[N, out_channels]`` in the units of the training targets (eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    device = model.y_mean.device
    # A generator of its own: a DataLoader without one draws its base seed from the global random state.
    for batch in DataLoader(_with_targets(graphs, None), batch_size=batch_size, generator=torch.Generator()):
        out.append(model(batch.to(device)) * model.y_std + model.y_mean)
    model.train(was_training)
    return torch.cat(out).cpu().double().numpy() if out else np.zeros((0, model.out_channels))


def fit_and_predict(name: str, train_graphs: Sequence[Data], y_train: Union[np.ndarray, Tensor],
                    test_graphs: Sequence[Data], seed: int = 0, **fit_kwargs) -> np.ndarray:
    """One baseline run: ``REGRESSORS[name]`` initialised with ``seed``, fitted on ``train_graphs`` /
    ``y_train`` (:func:`fit_regressor`, ``seed`` and ``fit_kwargs``) and its predictions on ``test_graphs``,
    ``[N_test, out_channels]``. A function of its arguments only (the global random state is left as it
    was), so that runs can go to worker processes and give the same numbers as in one process."""
    y = np.asarray(y_train, dtype=np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = REGRESSORS[name](out_channels=1 if y.ndim == 1 else y.shape[1])
    fit_regressor(model, train_graphs, y, seed=seed, **fit_kwargs)
    return predict(model, test_graphs)
