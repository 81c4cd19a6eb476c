r"""Image classification data for training and evaluating GHNs: Fashion-MNIST (the offline default),
CIFAR-10 and ImageNet, with the splits, transforms and loader settings of the original GHN-2 code
(paper §5 and appendix C.1; spec §5 and §6.1).

* **Fashion-MNIST** is read from the idx files of the Debian/Ubuntu package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), so everything runs offline. Images are presented like CIFAR-10:
  zero-padded 28 -> 32 and repeated to 3 channels.
* **CIFAR-10** is read from the python pickle files (``cifar-10-batches-py``); torchvision downloads them
  only when asked (``download=True``).
* **ImageNet** uses the ``ImageFolder`` layout ``root/{train,val}/<class>/<image>``.

The two small datasets are kept in memory as one ``uint8`` tensor, and their CIFAR-style augmentation
(``RandomCrop(32, padding=4)`` + horizontal flip) runs on whole batches: a
:class:`~torch.utils.data.DataLoader` fetches a batch through :meth:`InMemoryImageDataset.__getitems__`.

Splits follow the original code: ``'train'`` holds out the last images as ``'val'`` (5,000 for CIFAR-10
and Fashion-MNIST, the last 50 per class for ImageNet), ``'trainval'`` is the whole training set and
``'test'`` the official test (ImageNet: validation) set.
"""
import functools
import gzip
import os.path as osp
import pickle
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    'FASHION_MNIST_MEAN', 'FASHION_MNIST_STD', 'CIFAR10_MEAN', 'CIFAR10_STD', 'IMAGENET_MEAN',
    'IMAGENET_STD', 'FASHION_MNIST_ROOT', 'read_idx', 'InMemoryImageDataset', 'FashionMNIST', 'CIFAR10',
    'ImageNetFolder', 'imagenet_transforms', 'random_crop_flip', 'FixedShuffleSampler', 'ImageLoaders',
    'image_loaders', 'seed_loader_',
]

# Mean and std of the pixel values (in [0, 1]) of the 60,000 Fashion-MNIST training images, computed once
# over the raw 28x28 images (before the 2-pixel zero padding): 0.2860406 and 0.3530242.
FASHION_MNIST_MEAN = (0.2860406,)
FASHION_MNIST_STD = (0.3530242,)
# The DARTS / original GHN-2 constants for CIFAR-10 (`transforms_cifar` in the original code).
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                         'Sneaker', 'Bag', 'Ankle boot')
SPLITS = ('train', 'val', 'trainval', 'test')

# idx type codes (http://yann.lecun.com/exdb/mnist/): the data are big-endian.
_IDX_DTYPES = {0x08: '>u1', 0x09: '>i1', 0x0B: '>i2', 0x0C: '>i4', 0x0D: '>f4', 0x0E: '>f8'}


def read_idx(path: str) -> np.ndarray:
    r"""Reads an idx file (MNIST format; gzipped if the name ends in ``.gz``) into a numpy array.

    The header is two zero bytes, a type code, the number of dimensions :math:`d`, then :math:`d`
    big-endian ``uint32`` sizes.
    """
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"'{path}' is not an idx file (header {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(np.frombuffer(raw, '>u4', count=ndim, offset=4).tolist())
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    data = np.frombuffer(raw, dtype, count=int(np.prod(shape)), offset=4 + 4 * ndim)
    return data.reshape(shape).astype(dtype.newbyteorder('='))


@functools.lru_cache(maxsize=4)
def _read_idx_tensor(path: str, mtime: float) -> Tensor:
    # Cached per process: the train and val splits read the same 47 MB file. `mtime` invalidates.
    return torch.from_numpy(read_idx(path))


def _split_range(n: int, split: str, n_val: int) -> slice:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    if split in ('train', 'val') and not 0 < n_val < n:
        raise ValueError(f'n_val={n_val} must be in (0, {n}) to hold out a validation set')
    return {'train': slice(0, n - n_val), 'val': slice(n - n_val, n)}.get(split, slice(0, n))


def _crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, size: int) -> Tensor:
    # images [B, C, H, W] (already padded); per-image crop offsets and flips, gathered in one indexing op.
    ar = torch.arange(size, device=images.device)
    rows = (top.view(-1, 1) + ar).view(-1, 1, size, 1)
    cols = left.view(-1, 1) + ar                                         # [B, size]
    cols = torch.where(flip.view(-1, 1), cols.flip(1), cols).view(-1, 1, 1, size)
    b = torch.arange(images.size(0), device=images.device).view(-1, 1, 1, 1)
    c = torch.arange(images.size(1), device=images.device).view(1, -1, 1, 1)
    return images[b, c, rows, cols]


def random_crop_flip(images: Tensor, padding: int = 4, generator: Optional[torch.Generator] = None
                     ) -> Tensor:
    r"""The CIFAR-10 training augmentation, ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()``,
    applied independently to every image of a batch ``[B, C, H, W]`` (any dtype).

    As torchvision, the image is zero-padded by ``padding`` on every side, a ``H x W`` window is taken at a
    uniform offset in ``[0, 2 * padding]``, and flipped with probability 1/2.
    """
    B, _, H, W = images.shape
    if H != W:
        raise ValueError(f'square images expected, got {H}x{W}')
    padded = F.pad(images, (padding,) * 4)
    # Offsets and flips are drawn on the CPU so that a seeded generator gives the same crops on any device.
    top = torch.randint(0, 2 * padding + 1, (B,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (B,), generator=generator)
    flip = torch.rand(B, generator=generator) < 0.5
    dev = images.device
    return _crop_flip(padded, top.to(dev), left.to(dev), flip.to(dev), H)


class InMemoryImageDataset(Dataset):
    r"""A small image dataset held in memory as one ``uint8`` tensor ``[N, C, H, W]``.

    Items are normalised ``float32`` tensors ``[3, size, size]`` and integer labels. Images are zero-padded
    (black, before normalisation) to ``size`` and grayscale images are repeated to 3 channels. With
    ``augment=True`` every image gets :func:`random_crop_flip`.

    Randomness: in the main process the augmentation draws from :attr:`generator` when it is set (as
    :func:`image_loaders` does), else from torch's global RNG; in a DataLoader worker it draws from the
    worker's RNG, which the DataLoader seeds from its own generator.

    Args:
        data (Tensor): ``uint8`` images ``[N, C, H, W]`` with ``C`` 1 or 3.
        targets (Tensor): labels ``[N]``.
        mean, std (sequence of float): per-channel normalisation constants (one value for grayscale).
        augment (bool): apply the CIFAR training augmentation.
        size (int): output side; smaller images are zero-padded to it, centred.
        classes (sequence of str, optional): class names.
        padding (int): zero padding of the augmentation's random crop.
    """
    def __init__(self, data: Tensor, targets: Tensor, mean: Sequence[float], std: Sequence[float],
                 augment: bool = False, size: int = 32, classes: Optional[Sequence[str]] = None,
                 padding: int = 4):
        if data.dtype != torch.uint8 or data.dim() != 4:
            raise ValueError(f'expected uint8 images [N, C, H, W], got {data.dtype} {tuple(data.shape)}')
        if targets.dim() != 1 or targets.numel() != data.size(0):
            raise ValueError(f'{data.size(0)} images but targets of shape {tuple(targets.shape)}: the image and '
                             'label files do not match')
        self.data, self.targets = data, targets.long()
        self.augment, self.size, self.padding = augment, size, padding
        self.classes = list(classes) if classes is not None else None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.generator: Optional[torch.Generator] = None
        dh, dw = size - data.size(2), size - data.size(3)
        if dh < 0 or dw < 0:
            raise ValueError(f'images {tuple(data.shape[2:])} are larger than size={size}')
        self._pad = (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else int(self.targets.max()) + 1

    def __len__(self) -> int:
        return self.data.size(0)

    def transform_batch(self, images: Tensor) -> Tensor:
        """``uint8 [B, C, h, w]`` -> normalised ``float32 [B, 3, size, size]`` (augmented if enabled)."""
        x = F.pad(images, self._pad)
        if self.augment:
            in_worker = torch.utils.data.get_worker_info() is not None
            x = random_crop_flip(x, self.padding, None if in_worker else self.generator)
        x = (x.float().div_(255) - self.mean) / self.std
        return x.expand(-1, 3, -1, -1).contiguous() if x.size(1) == 1 else x

    def __getitem__(self, idx: int) -> Tuple[Tensor, int]:
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f'index {idx} is out of range for {n} images')
        idx %= n
        return self.transform_batch(self.data[idx:idx + 1])[0], int(self.targets[idx])

    def __getitems__(self, indices: List[int]) -> List[Tuple[Tensor, int]]:
        # Batched fetch used by DataLoader: one gather, one augmentation and one normalisation per batch.
        # Returned as a list of samples so that any collate_fn (the default one included) works.
        idx = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(self.transform_batch(self.data[idx]).unbind(0), self.targets[idx].tolist()))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self)}, augment={self.augment})'


class FashionMNIST(InMemoryImageDataset):
    r"""Fashion-MNIST (Xiao et al., 2017) presented as CIFAR-10: ``[3, 32, 32]`` float images (28x28 padded
    with 2 zero pixels on every side, the channel repeated 3 times), normalised with
    :data:`FASHION_MNIST_MEAN` / :data:`FASHION_MNIST_STD`.

    Splits: ``'train'`` = the first 55,000 training images, ``'val'`` = the last ``n_val=5000``,
    ``'trainval'`` = all 60,000, ``'test'`` = the 10,000 test images.

    Args:
        root (str, optional): folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
            (default: :data:`FASHION_MNIST_ROOT`, installed by ``apt-get install -y dataset-fashion-mnist``).
        split (str): ``'train'``, ``'val'``, ``'trainval'`` or ``'test'``.
        augment (bool): ``RandomCrop(32, padding=4)`` + horizontal flip, batched.
        n_val (int): the number of training images held out as ``'val'``.
    """
    def __init__(self, root: Optional[str] = None, split: str = 'train', augment: bool = False,
                 n_val: int = 5000):
        root = root or FASHION_MNIST_ROOT
        prefix = 't10k' if split == 'test' else 'train'
        images = _read_idx_tensor(*_find_idx(root, f'{prefix}-images-idx3-ubyte'))
        labels = _read_idx_tensor(*_find_idx(root, f'{prefix}-labels-idx1-ubyte'))
        sl = _split_range(images.size(0), split, n_val)
        self.root, self.split = root, split
        super().__init__(images[sl].unsqueeze(1), labels[sl], FASHION_MNIST_MEAN, FASHION_MNIST_STD,
                         augment=augment, size=32, classes=FASHION_MNIST_CLASSES)

    def __repr__(self) -> str:
        return f"FashionMNIST({len(self)}, split='{self.split}', augment={self.augment})"


def _find_idx(root: str, name: str) -> Tuple[str, float]:
    for folder in (root, osp.join(root, 'FashionMNIST', 'raw'), osp.join(root, 'raw')):
        for path in (osp.join(folder, name), osp.join(folder, name + '.gz')):
            if osp.isfile(path):
                return path, osp.getmtime(path)
    raise FileNotFoundError(
        f"Fashion-MNIST file '{name}[.gz]' not found under '{root}'. Install the offline copy with "
        f"`apt-get install -y dataset-fashion-mnist` (files in {FASHION_MNIST_ROOT}) or pass root=.")


class CIFAR10(InMemoryImageDataset):
    r"""CIFAR-10 from the python pickle files (``root/cifar-10-batches-py/{data_batch_1..5, test_batch,
    batches.meta}``), normalised with the constants of the original code (:data:`CIFAR10_MEAN`,
    :data:`CIFAR10_STD`), with the optional ``RandomCrop(32, padding=4)`` + flip training augmentation.

    Splits as the original: ``'train'`` = the first 45,000 training images, ``'val'`` = the last
    ``n_val=5000``, ``'trainval'`` = all 50,000, ``'test'`` = the 10,000 test images.

    The files are read here rather than by :class:`torchvision.datasets.CIFAR10`, which would re-check
    their md5 sums on every construction; torchvision is used (and checks them) only to download, and only
    when ``download=True``.
    """
    base_folder = 'cifar-10-batches-py'

    def __init__(self, root: str = './data', split: str = 'train', augment: bool = False,
                 n_val: int = 5000, download: bool = False):
        folder = osp.join(root, self.base_folder)
        if download:
            import torchvision
            torchvision.datasets.CIFAR10(root, train=True, download=True)
        files = ['test_batch'] if split == 'test' else [f'data_batch_{i}' for i in range(1, 6)]
        missing = [f for f in files + ['batches.meta'] if not osp.isfile(osp.join(folder, f))]
        if missing:
            raise FileNotFoundError(f"CIFAR-10 files {missing} not found in '{folder}'; pass download=True "
                                    f"(needs internet) or copy the python version of CIFAR-10 there.")
        data, targets = [], []
        for f in files:
            entry = _load_pickle(osp.join(folder, f))
            data.append(np.asarray(entry['data'], dtype=np.uint8).reshape(-1, 3, 32, 32))
            targets.extend(entry['labels'] if 'labels' in entry else entry['fine_labels'])
        meta = _load_pickle(osp.join(folder, 'batches.meta'))
        data, targets = torch.from_numpy(np.concatenate(data)), torch.tensor(targets, dtype=torch.long)
        sl = _split_range(data.size(0), split, n_val)
        self.root, self.split = root, split
        super().__init__(data[sl], targets[sl], CIFAR10_MEAN, CIFAR10_STD, augment=augment, size=32,
                         classes=meta['label_names'])

    def __repr__(self) -> str:
        return f"CIFAR10({len(self)}, split='{self.split}', augment={self.augment})"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only: CIFAR-10 is a pickle format, and an
    unrestricted ``pickle.load`` of a file someone swapped in would run any code it names."""
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
               ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
               ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode')}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f'{module}.{name} is not allowed in a CIFAR-10 file (only numpy '
                                         'arrays and plain Python values are)')
        return super().find_class(module, name)


def _load_pickle(path: str) -> dict:
    # The official files were pickled by Python 2: latin1 decodes their str keys and byte arrays.
    with open(path, 'rb') as f:
        try:
            return _ArrayUnpickler(f, encoding='latin1').load()
        except pickle.UnpicklingError as e:
            raise ValueError(f'{path!r} is not a CIFAR-10 batch file: {e}') from e


def imagenet_transforms(im_size: int = 224) -> Tuple[Callable, Callable]:
    r"""The ImageNet ``(train, eval)`` transforms of the original code: train = ``RandomResizedCrop`` +
    flip + ``ColorJitter(0.4, 0.4, 0.4, 0.2)`` + normalise; eval = ``Resize(256)`` + ``CenterCrop(224)`` +
    normalise."""
    from torchvision import transforms as T
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = T.Compose([T.RandomResizedCrop(im_size), T.RandomHorizontalFlip(),
                       T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
                       T.ToTensor(), normalize])
    test = T.Compose([T.Resize(max(im_size, 256)), T.CenterCrop(max(im_size, 224)), T.ToTensor(), normalize])
    return train, test


class ImageNetFolder(Dataset):
    r"""ImageNet in the ``ImageFolder`` layout ``root/train/<class>/*`` and ``root/val/<class>/*``.

    Splits as the original: ``'train'`` = ``root/train`` without the last ``n_val_per_class=50`` images of
    every class (in sorted file order), ``'val'`` = those held-out images, ``'trainval'`` = all of
    ``root/train``, ``'test'`` = ``root/val`` (the official validation set, the paper's test set).

    Args:
        root (str): the folder holding ``train/`` and ``val/``.
        split (str): ``'train'``, ``'val'``, ``'trainval'`` or ``'test'``.
        transform (callable, optional): applied to the PIL image (default: :func:`imagenet_transforms`,
            the train one when ``augment``).
    """
    def __init__(self, root: str, split: str = 'train', transform: Optional[Callable] = None,
                 augment: bool = False, n_val_per_class: int = 50):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
        folder = osp.join(root, 'val' if split == 'test' else 'train')
        if not osp.isdir(folder):
            raise FileNotFoundError(f"ImageNet folder '{folder}' not found (layout: root/train/<class>/..., "
                                    f"root/val/<class>/...)")
        if transform is None:
            train_tf, test_tf = imagenet_transforms()
            transform = train_tf if augment else test_tf
        from torchvision.datasets import ImageFolder
        self.inner = ImageFolder(folder, transform=transform)
        samples = self.inner.samples
        if split in ('train', 'val'):
            by_class = {}
            for s in samples:
                by_class.setdefault(s[1], []).append(s)
            small = [c for c, v in by_class.items() if len(v) <= n_val_per_class]
            if small:
                raise ValueError(f'classes {small} have <= n_val_per_class={n_val_per_class} images')
            keep = slice(None, -n_val_per_class) if split == 'train' else slice(-n_val_per_class, None)
            samples = [s for c in sorted(by_class) for s in by_class[c][keep]]
        self.samples = samples
        self.targets = [s[1] for s in samples]
        self.classes, self.split, self.augment = self.inner.classes, split, augment

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> Tuple[Tensor, int]:
        path, target = self.samples[idx]
        img = self.inner.loader(path)
        if self.inner.transform is not None:
            img = self.inner.transform(img)
        return img, target

    def __repr__(self) -> str:
        return f"ImageNetFolder({len(self)}, split='{self.split}', classes={len(self.classes)})"


class FixedShuffleSampler(Sampler):
    r"""Yields the same random permutation on every pass: the order a ``DataLoader(shuffle=True,
    generator=torch.Generator().manual_seed(seed))`` gives on its first pass.

    The original evaluation shuffles ImageNet val with seed 1111 and reseeds before every network (results
    depend on batch composition when BatchNorm uses batch statistics); this sampler makes every pass over the
    loader that first pass. A DataLoader draws one ``int64`` from its generator (the workers' base seed)
    before the sampler draws the permutation, so that draw is replayed here.
    """
    def __init__(self, num_samples: int, seed: int = 1111):
        self.num_samples, self.seed = num_samples, seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        torch.empty((), dtype=torch.int64).random_(generator=g)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ImageLoaders(NamedTuple):
    """``(train, eval, num_classes)``; unpacks like the original ``image_loader``'s return value."""
    train: Optional[DataLoader]
    eval: DataLoader
    num_classes: int


def _make_dataset(name: str, root: Optional[str], split: str, augment: bool, download: bool,
                  n_val: Optional[int]) -> Dataset:
    if name in ('fashion_mnist', 'fashionmnist', 'fmnist'):
        return FashionMNIST(root, split, augment=augment, n_val=5000 if n_val is None else n_val)
    if name == 'cifar10':
        return CIFAR10(root or './data', split, augment=augment, n_val=5000 if n_val is None else n_val,
                       download=download)
    if name == 'imagenet':
        return ImageNetFolder(root or osp.join('.', 'data', 'imagenet'), split, augment=augment,
                              n_val_per_class=50 if n_val is None else n_val)
    raise ValueError(f"unknown dataset '{name}' (fashion_mnist, cifar10, imagenet)")


def image_loaders(name: str = 'fashion_mnist', root: Optional[str] = None, batch_size: int = 64,
                  test_batch_size: int = 64, split: str = 'test', seed: int = 1111, num_workers: int = 0,
                  augment: bool = True, load_train: bool = True, download: bool = False,
                  n_val: Optional[int] = None, eval_seed: int = 1111) -> ImageLoaders:
    r"""Training and evaluation loaders as the original GHN-2 code builds them.

    * ``split='test'``: train on ``'trainval'``, evaluate on ``'test'`` (how reported numbers are made);
      ``split='val'``: train on ``'train'``, evaluate on the held-out ``'val'`` (model selection).
    * The training loader is shuffled by a generator seeded with ``seed`` (and the in-memory datasets'
      augmentation by another one seeded from it), so two calls with the same ``seed`` give the same
      batches.
      ImageNet's torchvision augmentation draws from the workers' RNGs, seeded from the loader's generator,
      so it is reproducible with ``num_workers >= 1``; with ``num_workers=0`` it draws from torch's global
      RNG (seed it with :func:`torch.manual_seed` for repeatable crops).
    * The evaluation loader is not shuffled for Fashion-MNIST and CIFAR-10. For ImageNet it is shuffled by
      :class:`FixedShuffleSampler` with ``eval_seed=1111``, so every pass (every evaluated network) sees the
      original batch composition.

    Args:
        name (str): ``'fashion_mnist'`` (offline default), ``'cifar10'`` or ``'imagenet'``.
        root (str, optional): data folder (defaults: :data:`FASHION_MNIST_ROOT`, ``./data``,
            ``./data/imagenet``).
        augment (bool): training augmentation (CIFAR-style crop + flip; the ImageNet train transforms).
        load_train (bool): build the training loader (``train`` is ``None`` otherwise).
        download (bool): CIFAR-10 only: download with torchvision if missing.
        n_val (int, optional): held-out images (per class for ImageNet); default 5000 / 50.
    """
    name = name.lower().replace('-', '_')
    if split not in ('test', 'val'):
        raise ValueError(f"split must be 'test' or 'val', got '{split}'")
    pin = torch.cuda.is_available()
    eval_set = _make_dataset(name, root, split, False, download, n_val)
    sampler = FixedShuffleSampler(len(eval_set), eval_seed) if name == 'imagenet' else None
    eval_loader = DataLoader(eval_set, batch_size=test_batch_size, shuffle=False, sampler=sampler,
                             num_workers=num_workers, pin_memory=pin)
    train_loader = None
    if load_train:
        train_set = _make_dataset(name, root, 'trainval' if split == 'test' else 'train', augment, False, n_val)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                  pin_memory=pin, generator=torch.Generator())
        seed_loader_(train_loader, seed)
    return ImageLoaders(train_loader, eval_loader, eval_set.num_classes)


def seed_loader_(loader: DataLoader, seed: int) -> DataLoader:
    r"""Reseeds a loader's shuffling generator and, for :class:`InMemoryImageDataset`, its augmentation
    generator (with ``seed + 1``), in place, so that the next passes over ``loader`` are reproducible."""
    if loader.generator is not None:
        loader.generator.manual_seed(seed)
    dataset = loader.dataset
    if isinstance(dataset, InMemoryImageDataset):
        if dataset.generator is None:
            dataset.generator = torch.Generator()
        dataset.generator.manual_seed(seed + 1)
    return loader
