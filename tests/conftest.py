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
