"""Recognising known crystals: by id where both sides carry one, else by structure.

Structures are compared with pymatgen's ``StructureMatcher`` (default tolerances: the same
crystal after relaxation noise, supercells and origin shifts), only within the same reduced
formula, so an index of thousands of crystals answers a query in milliseconds.
"""

from collections import defaultdict
from typing import Iterable, Optional, Sequence, Tuple

import ase

ID_KEYS = ("material_id", "entry_id")
NAME_KEYS = (*ID_KEYS, "mp_id", "id")
"""Keys of ``atoms.info`` whose value names a crystal in messages and tables."""


def crystal_id(atoms: ase.Atoms, keys: Sequence[str] = ID_KEYS) -> Optional[str]:
    """The crystal's id: the first of ``keys`` (default ``material_id``, else ``entry_id``) that
    ``atoms.info`` holds, or ``None``."""
    for key in keys:
        if atoms.info.get(key) not in (None, ""):
            return str(atoms.info[key])
    return None


def frame_label(atoms: ase.Atoms, index: int) -> str:
    """The crystal's :func:`crystal_id`, or ``<frame index>`` for one without an id."""
    return crystal_id(atoms) or f"<frame {index}>"


class StructureIndex:
    """A set of known crystals, queried by id and by structure.

    Args:
        frames: crystals to index; each is known by :func:`crystal_id` (when it has one) and by
            its structure.
        ids: further ids known without a structure (e.g. read from a list of material ids).
    """

    def __init__(self, frames: Iterable[ase.Atoms] = (), ids: Iterable[str] = ()):
        from pymatgen.analysis.structure_matcher import StructureMatcher

        self._matcher = StructureMatcher()
        self._ids = {str(i) for i in ids}
        self._by_formula = defaultdict(list)
        for atoms in frames:
            self.add(atoms)

    def __len__(self) -> int:
        return len(self._ids) + sum(len(group) for group in self._by_formula.values())

    def add(self, atoms: ase.Atoms) -> None:
        """Index ``atoms`` under its id (if any) and its structure."""
        from pymatgen.io.ase import AseAtomsAdaptor

        known = crystal_id(atoms)
        if known is not None:
            self._ids.add(known)
        structure = AseAtomsAdaptor.get_structure(atoms)
        self._by_formula[structure.composition.reduced_formula].append((known, structure))

    def match(self, atoms: ase.Atoms) -> Tuple[Optional[str], Optional[str]]:
        """How ``atoms`` is known: ``("id", id)``, ``("structure", id of the matching crystal)``,
        or ``(None, None)`` when it is new."""
        from pymatgen.io.ase import AseAtomsAdaptor

        known = crystal_id(atoms)
        if known is not None and known in self._ids:
            return "id", known
        structure = AseAtomsAdaptor.get_structure(atoms)
        for other_id, other in self._by_formula.get(structure.composition.reduced_formula, ()):
            if self._matcher.fit(structure, other):
                return "structure", other_id
        return None, None

    def __contains__(self, atoms: ase.Atoms) -> bool:
        return self.match(atoms)[0] is not None
