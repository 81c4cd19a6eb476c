"""A split's architectures (``net_args`` dicts) kept as compact JSON strings."""
import json
from collections.abc import Sequence
from typing import Any, Dict, Iterable, List, Mapping, Union

__all__ = ['NetArgsList']


class NetArgsList(Sequence):
    r"""A read-only sequence of architectures' ``net_args``, each stored as one compact JSON string and parsed
    when read.

    Why not a list of dicts: a DeepNets-1M split holds up to a million architectures, each a dict of nested
    lists and dicts, ~13 objects that Python's cyclic garbage collector tracks. Every full collection walks
    all of them (0.9 s for 100,000 architectures, 1.3 M objects, on a 2-core x86 box), and a training loop
    whose steps leave many objects alive (networks, graphs) triggers one every few steps. Strings are not
    tracked, and take a fraction of the memory.

    Reading an item returns a fresh ``dict``: changing it changes nothing stored. Compares equal to any
    sequence of the same ``net_args`` (a list of dicts included).

    Args:
        nets (iterable of mappings): the architectures, JSON-serialisable.
    """
    __slots__ = ('_rows',)

    def __init__(self, nets: Iterable[Mapping[str, Any]] = ()) -> None:
        self._rows: List[str] = [json.dumps(n, separators=(',', ':')) for n in nets]

    @classmethod
    def _from_rows(cls, rows: List[str]) -> 'NetArgsList':
        out = cls.__new__(cls)
        out._rows = rows
        return out

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, idx: Union[int, slice]) -> Any:
        if isinstance(idx, slice):
            return NetArgsList._from_rows(self._rows[idx])
        return json.loads(self._rows[idx])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NetArgsList) and self._rows == other._rows:
            return True  # the same strings: the same dicts (the converse needs parsing: key order may differ)
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self)} architectures)'

    def to_list(self) -> List[Dict[str, Any]]:
        """All architectures as a plain list of dicts."""
        return [json.loads(r) for r in self._rows]
