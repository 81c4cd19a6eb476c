from .shape_encoder import ShapeEncoder, channel_table, spatial_table, tensor_shape_to_4d
from .decoder import MLP, ConvDecoder
from .normalize import (fan_in_beta, normalize_bias, normalize_norm_weight, normalize_weight,
                        tile_to_shape)
from .configs import CONFIGS, get_config, list_configs
from .ghn import GHN, calibrate_bn
from .checkpoint import CheckpointError, load_ghn, save_ghn

from .conv import GHN2Conv
from .pretrained import GHNWeights, from_pretrained

__all__ = [
    'GHN', 'GHN2Conv', 'ShapeEncoder', 'ConvDecoder', 'MLP', 'channel_table', 'spatial_table',
    'tensor_shape_to_4d', 'tile_to_shape', 'fan_in_beta', 'normalize_weight', 'normalize_norm_weight',
    'normalize_bias', 'CONFIGS', 'get_config', 'list_configs', 'calibrate_bn', 'CheckpointError',
    'load_ghn', 'save_ghn', 'GHNWeights', 'from_pretrained'
]
