from .ghn2_conv import GHN2Conv

__all__ = ['GHN2Conv']
