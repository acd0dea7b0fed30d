"""Duplicates in a pool: the same crystal twice, and one id naming different crystals.

A crystal is known by a fingerprint of its atomic environments (:func:`fingerprint`), cheap
enough for every crystal of a large pool and stored as a ranking column, so duplicates in
different shards are found when the shards are merged (:func:`find_duplicates`, which reads only
that column, the index, id and source of each row). The fingerprint does not change under
rotation, translation, atom order or a supercell; copies that differ by more than rounding noise
(relaxation, a rattle) are different crystals to it.
"""

import collections
import hashlib
import math
from typing import Dict, Iterable, List, Tuple

import ase
import numpy as np

CUTOFF = 4.0  # A: the neighbour shell of each atom's environment
DECIMALS = 3  # distances rounded to 1e-3 A, volume per atom to 1e-2 A^3


def fingerprint(atoms: ase.Atoms) -> str:
    """16 hex digits identifying the crystal: a hash of its volume per atom and the multiset of
    its atoms' environments (element and the sorted ``(element, distance)`` of every neighbour
    within :data:`CUTOFF`, distances rounded to :data:`DECIMALS`), multiplicities divided by their
    greatest common divisor so that a supercell has the fingerprint of its cell."""
    from matscipy.neighbours import neighbour_list  # nequip's own neighbour lists

    i, j, d = neighbour_list("ijd", atoms, CUTOFF)
    numbers = atoms.numbers
    distances = np.rint(d * 10**DECIMALS).astype(np.int64)
    order = np.lexsort((distances, numbers[j], i))
    starts = np.searchsorted(i[order], np.arange(len(atoms) + 1))
    environments = collections.Counter(
        (int(numbers[a]), np.stack([numbers[j[o]], distances[o]], 1).tobytes())
        for a, o in ((a, order[starts[a] : starts[a + 1]]) for a in range(len(atoms)))
    )
    divisor = math.gcd(*environments.values())
    volume = round(atoms.get_volume() / len(atoms), 2)
    key = repr((volume, sorted((env, n // divisor) for env, n in environments.items())))
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def find_duplicates(rows: Iterable[Dict[str, str]]) -> Tuple[List[Dict], Dict[str, List[str]]]:
    """Duplicate structures and id clashes among ranking rows (``fingerprint``, ``index``,
    ``id`` and ``source`` columns), in any order.

    Returns ``(duplicates, clashes)``: ``duplicates`` holds one group per crystal seen more than
    once, ``{"kept": {"id", "source", "index"}, "dropped": [...]}`` with the first copy in input
    order kept; ``clashes`` maps an id given to structures with different fingerprints to their
    sources.
    """
    by_fingerprint: Dict[str, List[Dict]] = collections.defaultdict(list)
    by_id: Dict[str, Dict[str, str]] = collections.defaultdict(dict)
    for row in rows:
        entry = {"id": row["id"], "source": row["source"], "index": int(row["index"])}
        by_fingerprint[row["fingerprint"]].append(entry)
        by_id[row["id"]].setdefault(row["fingerprint"], row["source"])
    duplicates = []
    for copies in by_fingerprint.values():
        if len(copies) > 1:
            copies.sort(key=lambda c: c["index"])
            duplicates.append({"kept": copies[0], "dropped": copies[1:]})
    duplicates.sort(key=lambda g: g["kept"]["index"])
    clashes = {
        name: sorted(sources.values()) for name, sources in by_id.items() if len(sources) > 1
    }
    return duplicates, clashes


def dropped_indices(duplicates: List[Dict]) -> set:
    """The input indices of the copies that :func:`find_duplicates` drops."""
    return {copy["index"] for group in duplicates for copy in group["dropped"]}
