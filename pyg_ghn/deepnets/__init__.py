"""DeepNets-1M architectures: genotypes and their sampling, network modules, predefined networks and
split generation (spec §4)."""
from .genotypes import (DARTS, DARTS_V2, PDARTS, PRIMITIVES_DARTS_EXT, Genotype, ViT, parse_op_ks,
                        sample_genotype)
from .network import Cell, Network, count_params, has_output, network_num_params
from .predefined import adjust_net, darts, resnet50, vit
from .generator import (SPLITS, arch_key, check_net_args, find_overlap, generate_net, generate_split,
                        is_connected, propose_net_args, sample_net_args, sample_train_width)

__all__ = [
    'Genotype', 'PRIMITIVES_DARTS_EXT', 'DARTS', 'DARTS_V2', 'PDARTS', 'ViT', 'parse_op_ks', 'sample_genotype',
    'Network', 'Cell', 'count_params', 'network_num_params', 'has_output', 'adjust_net', 'resnet50', 'vit',
    'darts', 'SPLITS', 'propose_net_args', 'check_net_args', 'is_connected', 'sample_net_args', 'generate_net',
    'generate_split', 'arch_key', 'find_overlap', 'sample_train_width'
]
