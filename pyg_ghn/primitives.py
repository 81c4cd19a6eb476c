"""The vocabulary of architecture graphs: primitive types and parameter roles.

The 15 primitives and their ids are those of the original GHN-2 code (``PRIMITIVES_DEEPNETS1M``), so that
node types index the same rows of a released checkpoint's ``embed.weight``.
"""
from enum import IntEnum
from typing import Dict, List

__all__ = ['PRIMITIVES', 'PRIMITIVE_IDS', 'Role']

PRIMITIVES: List[str] = [
    'max_pool',  # 0
    'avg_pool',  # 1
    'sep_conv',  # 2  depthwise / grouped convolution
    'dil_conv',  # 3  grouped convolution with dilation > 1
    'conv',  # 4  any other convolution or linear weight
    'msa',  # 5  multi-head self-attention
    'cse',  # 6  channel squeeze-and-excitation (the gating multiplication)
    'sum',  # 7
    'concat',  # 8
    'input',  # 9
    'bias',  # 10
    'bn',  # 11
    'ln',  # 12
    'pos_enc',  # 13
    'glob_avg',  # 14
]

PRIMITIVE_IDS: Dict[str, int] = {name: i for i, name in enumerate(PRIMITIVES)}


class Role(IntEnum):
    r"""What a node predicts, which decides the decoder head and the normalisation applied.

    * ``NONE``: no parameter (input, sum, concat, pooling, ...).
    * ``WEIGHT``: a convolution or linear weight (2-D, 3-D or 4-D), decoded by the convolutional decoder.
    * ``CLS_WEIGHT``: the classification weight (the second-to-last node when it holds a weight of two or
      more dimensions), decoded through the class-layer predictor.
    * ``NORM``: the weight and bias of a BatchNorm/LayerNorm (rows 0 and 1 of the 1-D decoder).
    * ``BIAS``: a convolution or linear bias (row 1 of the 1-D decoder).
    * ``CLS_BIAS``: a 1-D parameter on the last node (the classifier bias), decoded through the
      classifier-bias head; when the last node is a norm layer, both of its tensors take this head.
    """
    NONE = 0
    WEIGHT = 1
    CLS_WEIGHT = 2
    NORM = 3
    BIAS = 4
    CLS_BIAS = 5
