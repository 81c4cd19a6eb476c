"""Speed of :class:`pyg_ghn.nn.conv.GHN2Conv` (level by level) vs a sequential node-by-node sweep.

Workloads: a meta-batch of 8 random DAGs shaped like DeepNets-1M networks (chains of cells with
parallel branches, 150-250 nodes each, average degree ~2.3, virtual edges up to s = 50) and one
~800-node DAG (the size of DARTS). Hidden size 32, one thread, median of several runs.

    python benchmarks/layer_bench.py [--runs 7] [--seq-runs 3] [--device cuda]
"""
import argparse
import statistics
import time
from typing import Callable, List, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from pyg_ghn.graph.dag import topological_levels, topological_order
from pyg_ghn.nn.conv import GHN2Conv
from pyg_ghn.transforms import shortest_path_edges

HID = 32


def random_net_dag(num_nodes: int, gen: torch.Generator, two_inputs: bool = False) -> Data:
    """A chain of cells; each cell fans out into 2-4 branches of 2-5 nodes that merge into one node
    (sum/concat), the cell's output. About 1.17 edges per node (average degree ~2.3, as DeepNets-1M).
    With ``two_inputs``, a branch starts from either of the two previous cell outputs (as in DARTS),
    which makes far more node pairs lie within 50 hops."""
    edges: List[Tuple[int, int]] = []
    n, inputs = 1, [0, 0]
    while n < num_nodes:
        ends = []
        for _ in range(int(torch.randint(2, 5, (1,), generator=gen))):
            prev = inputs[int(torch.randint(0, 2, (1,), generator=gen))] if two_inputs else inputs[1]
            for _ in range(int(torch.randint(2, 6, (1,), generator=gen))):
                edges.append((prev, n))
                prev, n = n, n + 1
            ends.append(prev)
        edges += [(e, n) for e in ends]
        inputs, n = [inputs[1], n], n + 1
    perm = torch.randperm(n, generator=gen)  # node ids in no particular order
    edge_index = perm[torch.tensor(edges).t()]
    level_fw, level_bw = topological_levels(edge_index, n)
    edge_index_sp, edge_dist_sp = shortest_path_edges(edge_index, n, 50)
    return Data(x=torch.randn(n, HID, generator=gen), edge_index=edge_index, level_fw=level_fw,
                level_bw=level_bw, edge_index_sp=edge_index_sp, edge_dist_sp=edge_dist_sp,
                num_nodes=n)


class SequentialGHN2(torch.nn.Module):
    """The original algorithm node by node (one GRU step per node, in a topological order), using the
    weights of a :class:`GHN2Conv`. Per node it gathers its neighbours' current states, applies the MLPs
    to them and sums; states live in a Python list so that autograd sees no in-place writes."""

    def __init__(self, conv: GHN2Conv) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor, edge_index: Tensor, edge_index_sp: Tensor,
                edge_dist_sp: Tensor) -> Tensor:
        conv, n = self.conv, x.size(0)
        order = topological_order(edge_index, n).tolist()
        # Neighbour lists, built once (as Python ints, so that no step waits on the device): real
        # sources, virtual sources and their 1/s, per node and direction.
        def lists(src: Tensor, dst: Tensor, w: Tensor):
            key = torch.argsort(dst, stable=True)
            counts = torch.bincount(dst, minlength=n).tolist()
            return [t.tolist() for t in src[key].split(counts)], list(w[key].split(counts))
        ones = x.new_ones(edge_index.size(1))
        inv_s = 1.0 / edge_dist_sp.to(x.dtype)
        fw = (lists(edge_index[0], edge_index[1], ones), lists(edge_index_sp[0], edge_index_sp[1], inv_s))
        bw = (lists(edge_index[1], edge_index[0], ones), lists(edge_index_sp[1], edge_index_sp[0], inv_s))
        h = list(x.unbind(0))
        zero = x.new_zeros(1, HID)
        for _ in range(conv.num_rounds):
            for nodes, ((real, _), (sp, w_sp)) in ((order, fw), (order[::-1], bw)):
                for v in nodes:
                    m = zero
                    if real[v]:
                        hu = torch.stack([h[u] for u in real[v]])
                        m = m + (conv.mlp(hu) + conv.mlp_sp(hu)).sum(0, keepdim=True)
                    if sp[v]:
                        hu = torch.stack([h[u] for u in sp[v]])
                        m = m + (conv.mlp_sp(hu) * w_sp[v].unsqueeze(1)).sum(0, keepdim=True)
                    h[v] = conv.gru(m, h[v].unsqueeze(0)).squeeze(0)
        return torch.stack(h)


def timeit(fn: Callable[[], object], runs: int, device: torch.device) -> float:
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    run()  # warm-up
    return statistics.median(run() for _ in range(runs)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--runs', type=int, default=7, help='timed runs of the level-wise layer')
    parser.add_argument('--seq-runs', type=int, default=3, help='timed runs of the sequential one')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    meta_batch = Batch.from_data_list([
        random_net_dag(int(torch.randint(150, 251, (1,), generator=gen)), gen) for _ in range(8)])
    darts_like = random_net_dag(800, gen, two_inputs=True)

    torch.manual_seed(0)
    conv = GHN2Conv(HID).to(device)
    seq = SequentialGHN2(conv)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    print(f'torch {torch.__version__}, {name}, {torch.get_num_threads()} CPU thread, {conv}')
    print(f'{"workload":<36} {"impl":<11} {"forward ms":>11} {"fwd+bwd ms":>11}')
    for title, d in (('meta-batch of 8 DeepNets-like DAGs', meta_batch),
                     ('one DARTS-sized DAG', darts_like)):
        print(f'{title}: {d.num_nodes} nodes, {d.edge_index.size(1)} edges, '
              f'{d.edge_index_sp.size(1)} virtual, {int(d.level_fw.max()) + 1} levels')
        d = d.to(device)
        x = d.x.clone().requires_grad_()
        level_args = (x, d.edge_index, d.level_fw, d.level_bw, d.edge_index_sp, d.edge_dist_sp)
        seq_args = (x, d.edge_index, d.edge_index_sp, d.edge_dist_sp)
        err = (conv(*level_args) - seq(*seq_args)).abs().max().item()
        for impl, f, runs in (('level-wise', lambda: conv(*level_args), args.runs),
                              ('sequential', lambda: seq(*seq_args), args.seq_runs)):
            with torch.no_grad():
                t_fw = timeit(f, runs, device)
            t_fb = timeit(lambda: f().square().sum().backward(), runs, device)
            print(f'{"":<36} {impl:<11} {t_fw:>11.1f} {t_fb:>11.1f}')
        print(f'{"":<36} max |level-wise - sequential| = {err:.1e} (float32)')


if __name__ == '__main__':
    main()
