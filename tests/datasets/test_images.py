import gzip
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pyg_ghn.datasets.images import (CIFAR10, CIFAR10_MEAN, CIFAR10_STD, FASHION_MNIST_MEAN,
                                     FASHION_MNIST_ROOT, FASHION_MNIST_STD, IMAGENET_MEAN, IMAGENET_STD,
                                     FashionMNIST, FixedShuffleSampler, ImageNetFolder, _crop_flip,
                                     image_loaders, random_crop_flip, read_idx, seed_loader_)

FMNIST_TRAIN = osp.join(FASHION_MNIST_ROOT, 'train-images-idx3-ubyte.gz')
needs_fmnist = pytest.mark.skipif(not osp.isfile(FMNIST_TRAIN),
                                  reason='apt-get install -y dataset-fashion-mnist')


def _raw_gz(name, offset):
    with gzip.open(osp.join(FASHION_MNIST_ROOT, name), 'rb') as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


# ---------------------------------------------------------------- idx reader

def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 5, dtype=np.int32).reshape(2, 3, 5) - 7
    header = bytes([0, 0, 0x0C, 3]) + np.array(arr.shape, '>u4').tobytes()
    raw = header + arr.astype('>i4').tobytes()
    (tmp_path / 'a-idx3').write_bytes(raw)
    with gzip.open(tmp_path / 'a-idx3.gz', 'wb') as f:
        f.write(raw)
    for name in ('a-idx3', 'a-idx3.gz'):
        out = read_idx(str(tmp_path / name))
        assert out.dtype == np.int32 and np.array_equal(out, arr)
    (tmp_path / 'bad').write_bytes(b'\x01\x02\x03\x04')
    with pytest.raises(ValueError, match='not an idx file'):
        read_idx(str(tmp_path / 'bad'))


def test_fashion_mnist_missing_files_names_apt(tmp_path):
    with pytest.raises(FileNotFoundError, match='apt-get install -y dataset-fashion-mnist'):
        FashionMNIST(str(tmp_path))


# ---------------------------------------------------------------- Fashion-MNIST on the real files

@needs_fmnist
def test_fashion_mnist_splits_and_shapes():
    sizes = {s: len(FashionMNIST(split=s)) for s in ('train', 'val', 'trainval', 'test')}
    assert sizes == {'train': 55000, 'val': 5000, 'trainval': 60000, 'test': 10000}
    val, trainval = FashionMNIST(split='val'), FashionMNIST(split='trainval')
    assert torch.equal(val.data, trainval.data[55000:]) and torch.equal(val.targets, trainval.targets[55000:])
    test = FashionMNIST(split='test')
    x, y = test[123]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    for ds in (trainval, test):
        assert ds.targets.min() == 0 and ds.targets.max() == 9 and ds.num_classes == 10
    # Balanced classes: 6000 per class in train, 1000 in test (a property of the dataset).
    assert torch.bincount(trainval.targets).tolist() == [6000] * 10
    assert torch.bincount(test.targets).tolist() == [1000] * 10


@needs_fmnist
def test_fashion_mnist_pixels_equal_raw_idx_bytes():
    raw_img = _raw_gz('train-images-idx3-ubyte.gz', 16)[:2 * 784].reshape(2, 28, 28)
    raw_lbl = _raw_gz('train-labels-idx1-ubyte.gz', 8)[:2]
    ds = FashionMNIST(split='train')
    for i in range(2):
        x, y = ds[i]
        assert y == int(raw_lbl[i])
        mean, std = FASHION_MNIST_MEAN[0], FASHION_MNIST_STD[0]
        pixels = torch.round((x * std + mean) * 255)
        assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[0], pixels[2])   # 3 equal channels
        assert torch.equal(pixels[0, 2:30, 2:30], torch.from_numpy(raw_img[i].copy()).float())
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert (pixels[0][border] == 0).all()                                            # zero padding
        assert torch.allclose(x[:, border], torch.tensor(-mean / std))
    raw_test = _raw_gz('t10k-images-idx3-ubyte.gz', 16)[-784:].reshape(28, 28)
    test = FashionMNIST(split='test')
    assert torch.equal(test.data[-1, 0], torch.from_numpy(raw_test.copy()))


@needs_fmnist
def test_fashion_mnist_normalisation_constants():
    # The documented constants are the pixel mean/std of the 60k unpadded training images.
    hist = torch.bincount(FashionMNIST(split='trainval').data.flatten(), minlength=256).double()
    v = torch.arange(256, dtype=torch.float64) / 255
    mean = (hist * v).sum() / hist.sum()
    std = ((hist * (v - mean) ** 2).sum() / hist.sum()).sqrt()
    assert abs(mean.item() - FASHION_MNIST_MEAN[0]) < 1e-6 and abs(std.item() - FASHION_MNIST_STD[0]) < 1e-6


@needs_fmnist
def test_fashion_mnist_batched_fetch_equals_single():
    ds = FashionMNIST(split='test')
    idx = [5, 0, 9999, 17]
    batch = ds.__getitems__(idx)
    for i, (x, y) in zip(idx, batch):
        x1, y1 = ds[i]
        assert torch.equal(x, x1) and y == y1


@needs_fmnist
def test_in_memory_dataset_indexing_and_bad_input():
    from pyg_ghn.datasets.images import InMemoryImageDataset
    data = torch.arange(3 * 28 * 28, dtype=torch.uint8).view(3, 1, 28, 28)
    ds = InMemoryImageDataset(data, torch.tensor([4, 5, 6]), [0.5], [0.25])
    assert ds[-1][1] == 6 and torch.equal(ds[-1][0], ds[2][0]) and ds[-3][1] == 4
    with pytest.raises(IndexError, match='index 3 is out of range for 3 images'):
        ds[3]
    with pytest.raises(ValueError, match='3 images but targets of shape \\(2,\\)'):
        InMemoryImageDataset(data, torch.tensor([4, 5]), [0.5], [0.25])


def test_fashion_mnist_augmentation_is_a_shifted_flipped_crop():
    ds = FashionMNIST(split='test', augment=True)
    ds.generator = torch.Generator().manual_seed(0)
    plain = FashionMNIST(split='test')
    x_aug, _ = ds[7]
    x0, _ = plain[7]
    bg = -FASHION_MNIST_MEAN[0] / FASHION_MNIST_STD[0]
    # Recover the crop: it must equal some window of the 4-padded plain image, maybe flipped.
    padded = torch.nn.functional.pad(x0[0], (4, 4, 4, 4), value=bg)
    found = any(torch.allclose(x_aug[0], w) for i in range(9) for j in range(9)
                for w in (padded[i:i + 32, j:j + 32], padded[i:i + 32, j:j + 32].flip(-1)))
    assert found
    # Over a batch, the augmentation does change images (offset (4, 4) without flip has chance 1/162).
    idx = list(range(64))
    aug = torch.stack([x for x, _ in ds.__getitems__(idx)])
    ref = torch.stack([x for x, _ in plain.__getitems__(idx)])
    assert (aug - ref).flatten(1).abs().amax(1).gt(0).sum() > 48


# ---------------------------------------------------------------- batched augmentation vs torchvision

def test_crop_flip_matches_torchvision():
    tvF = pytest.importorskip('torchvision.transforms.functional')
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    top, left = torch.tensor([0, 8, 3, 4, 8, 0]), torch.tensor([0, 8, 5, 4, 0, 8])
    flip = torch.tensor([False, True, True, False, True, False])
    out = _crop_flip(torch.nn.functional.pad(imgs, (4,) * 4), top, left, flip, 32)
    for b in range(6):
        ref = tvF.crop(tvF.pad(imgs[b], [4]), int(top[b]), int(left[b]), 32, 32)   # RandomCrop(32, padding=4)
        ref = tvF.hflip(ref) if flip[b] else ref
        assert torch.equal(out[b], ref)


def test_random_crop_flip_distribution():
    g = torch.Generator().manual_seed(1)
    # A single bright pixel at (0, 0): its position after the augmentation reveals the offsets and flip.
    imgs = torch.zeros(4000, 1, 8, 8)
    imgs[:, 0, 0, 0] = 1
    out = random_crop_flip(imgs, padding=2, generator=g)
    flat = out.view(4000, -1)
    visible = flat.sum(1) == 1
    pos = flat[visible].argmax(1)
    rows, cols = pos // 8, pos % 8
    # Pixel row = 2 - top lies in 0..2 when visible, col is 2 - left or its mirror 7 - (2 - left).
    assert set(rows.tolist()) == {0, 1, 2}
    assert set(cols.tolist()) == {0, 1, 2, 5, 6, 7}
    assert abs((cols >= 5).float().mean().item() - 0.5) < 0.05          # flips half of the time
    assert abs(visible.float().mean().item() - 9 / 25) < 0.04           # top, left uniform in 0..4
    out2 = random_crop_flip(imgs, padding=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, out2)


# ---------------------------------------------------------------- loaders

@needs_fmnist
def test_image_loaders_fashion_mnist():
    loaders = image_loaders('fashion_mnist', batch_size=64, test_batch_size=64, seed=3)
    assert loaders.num_classes == 10 and len(loaders.train.dataset) == 60000
    assert len(loaders.eval) == 157                                       # 156 x 64 + 16, as the original
    test = FashionMNIST(split='test')
    x, y = next(iter(loaders.eval))                                        # not shuffled
    assert x.shape == (64, 3, 32, 32) and torch.equal(y, test.targets[:64])
    assert torch.equal(x[0], test[0][0])
    # Same seed -> same training batches (order and augmentation); another seed -> different ones.
    xa, ya = next(iter(loaders.train))
    xb, yb = next(iter(image_loaders('fashion_mnist', seed=3).train))
    xc, yc = next(iter(image_loaders('fashion_mnist', seed=4).train))
    assert xa.shape == (64, 3, 32, 32) and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(ya, yc)
    # Reseeding replays the stream.
    seed_loader_(loaders.train, 3)
    xd, yd = next(iter(loaders.train))
    assert torch.equal(xd, xa) and torch.equal(yd, ya)
    val = image_loaders('fashion_mnist', split='val', load_train=False)
    assert val.train is None and len(val.eval.dataset) == 5000


def test_fixed_shuffle_sampler_equals_dataloader_first_pass():
    n = 103
    order = [i for b in DataLoader(range(n), batch_size=10, shuffle=True,
                                   generator=torch.Generator().manual_seed(1111)) for i in b.tolist()]
    sampler = FixedShuffleSampler(n, 1111)
    assert list(sampler) == order and list(sampler) == order and len(sampler) == n
    assert sorted(order) == list(range(n)) and order != list(range(n))


# ---------------------------------------------------------------- CIFAR-10 on tiny pickle files

def _write_cifar(root, n_per_batch=4, n_test=6, seed=0):
    rng = np.random.RandomState(seed)
    folder = osp.join(root, 'cifar-10-batches-py')
    os.makedirs(folder)
    images, labels = [], []
    for name, n in [(f'data_batch_{i}', n_per_batch) for i in range(1, 6)] + [('test_batch', n_test)]:
        hwc = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
        lbl = rng.randint(0, 10, n).tolist()
        # The official layout: rows of 3072 bytes, the R plane then G then B, each 32x32 row-major.
        entry = {'batch_label': name, 'labels': lbl, 'data': hwc.transpose(0, 3, 1, 2).reshape(n, 3072),
                 'filenames': [f'{name}_{i}.png' for i in range(n)]}
        with open(osp.join(folder, name), 'wb') as f:
            pickle.dump(entry, f)
        images.append(hwc)
        labels.append(lbl)
    meta = {'label_names': ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                            'ship', 'truck'], 'num_cases_per_batch': n_per_batch, 'num_vis': 3072}
    with open(osp.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump(meta, f)
    return np.concatenate(images[:5]), sum(labels[:5], []), images[5], labels[5]


def test_cifar10_tiny_pickles(tmp_path, monkeypatch):
    train_hwc, train_lbl, test_hwc, test_lbl = _write_cifar(str(tmp_path))
    root = str(tmp_path)
    sizes = {s: len(CIFAR10(root, s, n_val=5)) for s in ('train', 'val', 'trainval', 'test')}
    assert sizes == {'train': 15, 'val': 5, 'trainval': 20, 'test': 6}
    val = CIFAR10(root, 'val', n_val=5)
    assert val.targets.tolist() == train_lbl[15:] and val.classes[0] == 'airplane'
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    x, y = val[2]
    ref = (torch.from_numpy(train_hwc[17]).permute(2, 0, 1).float() / 255 - mean) / std
    assert x.shape == (3, 32, 32) and y == train_lbl[17] and torch.allclose(x, ref, atol=1e-6)

    # Independent reference: torchvision's CIFAR10 reader (md5 checks off) + the original eval transforms.
    tv = pytest.importorskip('torchvision')
    monkeypatch.setattr(tv.datasets.cifar, 'check_integrity', lambda *args, **kwargs: True)
    tf = tv.transforms.Compose([tv.transforms.ToTensor(), tv.transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    ref_test = tv.datasets.CIFAR10(root, train=False, transform=tf)
    ref_train = tv.datasets.CIFAR10(root, train=True, transform=tf)
    assert torch.allclose(CIFAR10(root, 'trainval')[13][0], ref_train[13][0], atol=1e-6)
    ours = CIFAR10(root, 'test')
    for i in range(6):
        assert torch.allclose(ours[i][0], ref_test[i][0], atol=1e-6) and ours[i][1] == ref_test[i][1] == test_lbl[i]

    loaders = image_loaders('cifar10', root=root, batch_size=4, test_batch_size=4, n_val=5)
    assert loaders.num_classes == 10 and len(loaders.train.dataset) == 20 and len(loaders.eval) == 2
    xb, yb = next(iter(loaders.train))
    assert xb.shape == (4, 3, 32, 32) and loaders.train.dataset.augment
    assert not loaders.eval.dataset.augment
    assert torch.equal(next(iter(loaders.eval))[1], torch.tensor(test_lbl[:4]))

    with pytest.raises(FileNotFoundError, match='download=True'):
        CIFAR10(str(tmp_path / 'nothing'), 'train')


@pytest.mark.parametrize('protocol', [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_reads_arrays_but_refuses_code(tmp_path, protocol):
    # The official files are Python-2 pickles (protocol 2); any protocol of plain values and numpy arrays
    # loads, while a file that names a callable (what a swapped-in pickle runs on load) is refused.
    _write_cifar(str(tmp_path))
    folder = tmp_path / 'cifar-10-batches-py'
    entry = {'labels': [3, 1], 'data': np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)}
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump(entry, f, protocol=protocol)
    test = CIFAR10(str(tmp_path), 'test')
    assert test.targets.tolist() == [3, 1] and torch.equal(test.data[1].flatten(), torch.from_numpy(entry['data'][1]))

    class Exploit:
        def __reduce__(self):
            return (os.remove, (str(folder / 'batches.meta'),))

    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump({'labels': [0], 'data': Exploit()}, f, protocol=protocol)
    with pytest.raises(ValueError, match=r'not a CIFAR-10 batch file: posix.remove is not allowed'):
        CIFAR10(str(tmp_path), 'test')
    assert (folder / 'batches.meta').exists()  # nothing ran


# ---------------------------------------------------------------- ImageNet folder on tiny images

def _write_image_folder(root, n_train=5, n_val=2, seed=0):
    Image = pytest.importorskip('PIL.Image')
    rng = np.random.RandomState(seed)
    for split, n in (('train', n_train), ('val', n_val)):
        for c, cls in enumerate(('n01', 'n02', 'n03')):
            os.makedirs(osp.join(root, split, cls))
            for i in range(n):
                h, w = rng.randint(20, 60, 2)
                arr = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
                ext = 'JPEG' if (i + c) % 2 else 'png'
                Image.fromarray(arr).save(osp.join(root, split, cls, f'img_{i}.{ext}'))


def test_imagenet_folder_tiny(tmp_path):
    root = str(tmp_path)
    _write_image_folder(root)
    tr = ImageNetFolder(root, 'train', n_val_per_class=2)
    va = ImageNetFolder(root, 'val', n_val_per_class=2)
    tv_ = ImageNetFolder(root, 'trainval', n_val_per_class=2)
    te = ImageNetFolder(root, 'test', n_val_per_class=2)
    assert (len(tr), len(va), len(tv_), len(te)) == (9, 6, 15, 6) and tr.num_classes == 3
    # val = the last 2 files (sorted) of every class, train the rest; together all of train/.
    names = lambda ds: [osp.relpath(p, root) for p, _ in ds.samples]  # noqa: E731
    expected = [f"train/{c}/img_{i}.{'JPEG' if (i + ci) % 2 else 'png'}"
                for ci, c in enumerate(('n01', 'n02', 'n03')) for i in (3, 4)]
    assert names(va) == expected
    assert sorted(names(tr) + names(va)) == sorted(names(tv_))
    assert va.targets == [0, 0, 1, 1, 2, 2]

    x, y = te[0]
    assert x.shape == (3, 224, 224) and y == 0
    # Eval transform by hand: Resize(256) (shorter side), CenterCrop(224), normalise.
    from PIL import Image
    tvF = pytest.importorskip('torchvision.transforms.functional')
    img = Image.open(te.samples[0][0]).convert('RGB')
    ref = tvF.to_tensor(tvF.center_crop(tvF.resize(img, 256), 224))
    ref = (ref - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(x, ref, atol=1e-6)
    xa, _ = ImageNetFolder(root, 'train', augment=True, n_val_per_class=2)[0]
    assert xa.shape == (3, 224, 224)
    with pytest.raises(ValueError, match='n_val_per_class'):
        ImageNetFolder(root, 'train', n_val_per_class=5)

    loaders = image_loaders('imagenet', root=root, batch_size=4, test_batch_size=4, n_val=2)
    assert loaders.num_classes == 3 and len(loaders.train.dataset) == 15
    assert isinstance(loaders.eval.sampler, FixedShuffleSampler)
    y1 = torch.cat([b[1] for b in loaders.eval])
    y2 = torch.cat([b[1] for b in loaders.eval])
    assert torch.equal(y1, y2) and sorted(y1.tolist()) == [0, 0, 1, 1, 2, 2]
