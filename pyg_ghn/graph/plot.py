"""Drawing architecture graphs with one marker and colour per primitive, as in the paper's Table 1."""
from typing import Any, Dict, Optional, Tuple

from ..primitives import PRIMITIVES

__all__ = ['plot_graph', 'PRIMITIVE_STYLE']

# (marker, colour) per primitive; a 1x1 convolution gets its own marker in the paper's figures.
PRIMITIVE_STYLE: Dict[str, Tuple[str, str]] = {
    'conv': ('s', '#1f77b4'), 'conv_1x1': ('^', '#1f77b4'), 'bn': ('o', '#ff7f0e'), 'sum': ('P', '#2ca02c'),
    'bias': ('.', '#7f7f7f'), 'sep_conv': ('D', '#9467bd'), 'concat': ('X', '#8c564b'),
    'dil_conv': ('d', '#e377c2'), 'ln': ('h', '#bcbd22'), 'max_pool': ('v', '#17becf'),
    'avg_pool': ('<', '#aec7e8'), 'msa': ('*', '#d62728'), 'cse': ('p', '#98df8a'), 'input': ('>', '#000000'),
    'glob_avg': ('8', '#c49c94'), 'pos_enc': ('H', '#f7b6d2'),
}


def plot_graph(graph: Any, path: Optional[str] = None, virtual_edges: bool = False, ax: Any = None,
               title: Optional[str] = None, node_size: float = 40) -> Any:
    """Draws an :class:`~pyg_ghn.ArchGraph` left to right by forward level (a layered layout that stays
    readable for graphs of hundreds of nodes, unlike force-directed ones). Saves a PNG when ``path`` is given
    and returns the matplotlib figure."""
    import matplotlib
    if path is not None:
        matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    level = graph.level_fw.tolist()
    slots: Dict[int, int] = {}
    pos = []
    for lv in level:
        slots[lv] = slots.get(lv, 0) + 1
        pos.append((lv, slots[lv] - 1))
    width = {lv: n for lv, n in slots.items()}
    pos = [(x, y - (width[x] - 1) / 2) for x, y in pos]

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(slots)), max(3, 0.35 * max(width.values()))))
    else:
        fig = ax.figure
    if virtual_edges and getattr(graph, 'edge_index_sp', None) is not None:
        for u, v in graph.edge_index_sp.t().tolist():
            ax.plot([pos[u][0], pos[v][0]], [pos[u][1], pos[v][1]], color='#dddddd', lw=0.3, zorder=0)
    for u, v in graph.edge_index.t().tolist():
        ax.annotate('', xy=pos[v], xytext=pos[u], zorder=1,
                    arrowprops=dict(arrowstyle='-|>', color='#555555', lw=0.6, shrinkA=3, shrinkB=3))
    names = [PRIMITIVES[i] for i in graph.x.view(-1).tolist()]
    shapes = graph.shape.tolist()
    for prim in dict.fromkeys(names + (['conv_1x1'] if 'conv' in names else [])):
        idx = [i for i, n in enumerate(names)
               if (n == prim and not (n == 'conv' and shapes[i][2:] == [1, 1]))
               or (prim == 'conv_1x1' and n == 'conv' and shapes[i][2:] == [1, 1])]
        if not idx:
            continue
        marker, colour = PRIMITIVE_STYLE[prim]
        ax.scatter([pos[i][0] for i in idx], [pos[i][1] for i in idx], marker=marker, c=colour, s=node_size,
                   label=f'{prim} ({len(idx)})', zorder=2, edgecolors='k', linewidths=0.3)
    ax.set_axis_off()
    ax.legend(loc='upper left', bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.set_title(title or f'{graph.num_nodes} nodes, {graph.edge_index.size(1)} edges', fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches='tight')
        plt.close(fig)
    return fig
