"""``NetArgsList``: a split's architectures stored as compact JSON strings, read back as the same dicts."""
import gc

import pytest

from pyg_ghn.datasets.net_args_list import NetArgsList
from pyg_ghn.deepnets.generator import generate_split


@pytest.fixture(scope='module')
def nets():
    return generate_split('val', 20)


def _tracked_objects_reachable(obj):
    """How many objects the cyclic garbage collector tracks among those reachable from ``obj``, classes (and
    what they reach: modules, everything) left out."""
    seen, todo, tracked = set(), [obj], 0
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, type):
            continue
        seen.add(id(o))
        tracked += gc.is_tracked(o)
        todo += gc.get_referents(o)
    return tracked


def test_items_are_the_stored_dicts(nets):
    stored = NetArgsList(nets)
    assert len(stored) == len(nets)
    for i, a in enumerate(nets):
        assert stored[i] == a and type(stored[i]) is dict
    assert stored[-1] == nets[-1] and list(stored) == nets and stored.to_list() == nets
    assert stored[3:7] == nets[3:7] and isinstance(stored[3:7], NetArgsList)
    with pytest.raises(IndexError):
        stored[len(nets)]


def test_equality_with_lists_and_other_lists(nets):
    stored = NetArgsList(nets)
    assert stored == nets and nets == stored and stored == NetArgsList(nets)
    # the same dicts with their keys in another order are the same architectures
    assert stored == NetArgsList([dict(reversed(list(a.items()))) for a in nets])
    assert stored != nets[:-1] and stored != NetArgsList(nets[1:])
    changed = [dict(a) for a in nets]
    changed[5]['C'] += 1
    assert stored != changed
    assert stored != 'not a list' and stored != 3
    with pytest.raises(TypeError):
        hash(stored)


def test_items_are_copies(nets):
    stored = NetArgsList(nets)
    item = stored[0]
    item['C'] = -1
    item['genotype']['normal'].clear()
    assert stored[0] == nets[0]


def test_holds_a_constant_number_of_gc_tracked_objects(nets):
    # A list of dicts gives the garbage collector ~13 objects an architecture to walk at every full collection;
    # the stored strings are not tracked, so only the containers are (the object and its list).
    assert _tracked_objects_reachable(nets) > 10 * len(nets)
    assert _tracked_objects_reachable(NetArgsList(nets)) == _tracked_objects_reachable(NetArgsList(nets[:2])) == 2


def test_rejects_what_json_cannot_store():
    with pytest.raises(TypeError):
        NetArgsList([{'C': object()}])
