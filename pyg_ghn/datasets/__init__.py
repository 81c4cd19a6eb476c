from .deepnets1m import DeepNets1M, build_network
from .deepnets1m_hdf5 import DeepNets1MHDF5
from .net_args_list import NetArgsList
from .images import (CIFAR10, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN, FASHION_MNIST_STD, IMAGENET_MEAN,
                     IMAGENET_STD, FashionMNIST, FixedShuffleSampler, ImageLoaders, ImageNetFolder,
                     InMemoryImageDataset, image_loaders, imagenet_transforms, random_crop_flip, read_idx,
                     seed_loader_)

__all__ = ['DeepNets1M', 'DeepNets1MHDF5', 'NetArgsList', 'build_network', 'CIFAR10', 'FashionMNIST', 'ImageNetFolder', 'InMemoryImageDataset', 'image_loaders', 'ImageLoaders',
           'FixedShuffleSampler', 'imagenet_transforms', 'random_crop_flip', 'read_idx', 'seed_loader_',
           'FASHION_MNIST_MEAN', 'FASHION_MNIST_STD', 'CIFAR10_MEAN', 'CIFAR10_STD', 'IMAGENET_MEAN',
           'IMAGENET_STD']
