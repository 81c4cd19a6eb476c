import os.path as osp

import pytest

from property_helpers import write_property_file




@pytest.fixture(scope='session')
def property_file(tmp_path_factory):
    path = osp.join(str(tmp_path_factory.mktemp('props')), 'properties.json')
    return path, write_property_file(path)
