import pytest
import torch


@pytest.fixture(autouse=True, scope='session')
def _one_thread():
    # The suite runs many small ops on a shared 2-core machine: one thread is faster and disturbs other
    # work less. Tests that need more threads set them themselves.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _flip_byte_in_largest_tensor(path: str, out: str) -> str:
    """Writes to ``out`` a copy of the torch checkpoint ``path`` with one bit flipped in the middle of its
    largest tensor record: a corruption ``torch.load`` alone reads without complaint."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if '/data/' in i.filename), key=lambda i: i.file_size)
    raw = bytearray(open(path, 'rb').read())
    h = info.header_offset  # local file header: 30 bytes, then the name and the extra field
    start = h + 30 + int.from_bytes(raw[h + 26:h + 28], 'little') + int.from_bytes(raw[h + 28:h + 30], 'little')
    raw[start + info.file_size // 2] ^= 0x10
    with open(out, 'wb') as f:
        f.write(bytes(raw))
    return out


@pytest.fixture
def flip_byte():
    """``flip_byte(path, out)``: a checkpoint copy with one flipped bit inside a tensor."""
    return _flip_byte_in_largest_tensor
