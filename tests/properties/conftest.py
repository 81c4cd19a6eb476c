import os.path as osp

import pytest
import torch

from property_helpers import write_property_file


@pytest.fixture(autouse=True, scope='session')
def _one_thread():
    # Many tiny ops on a shared 2-core machine: one thread is faster and disturbs the others less.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='session')
def property_file(tmp_path_factory):
    path = osp.join(str(tmp_path_factory.mktemp('props')), 'properties.json')
    return path, write_property_file(path)
