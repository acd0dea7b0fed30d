"""Structural dimensionality of crystals, as robocrystallographer determines it.

Bonds come from pymatgen's ``CrystalNN``; the dimensionality of the bonded network (0: molecules
or clusters, 1: chains, 2: layers, 3: a framework) from Larsen et al.'s algorithm
(``pymatgen.analysis.dimensionality.get_dimensionality_larsen``), the slow part of screening.
"""

import functools
import warnings
from typing import Optional

import ase


@functools.lru_cache(maxsize=None)
def _crystal_nn():
    from pymatgen.analysis.local_env import CrystalNN

    return CrystalNN()


def dimensionality(atoms: ase.Atoms) -> Optional[int]:
    """Larsen dimensionality (0-3) of the CrystalNN-bonded structure of ``atoms``; ``None`` when
    CrystalNN cannot assign bonds (e.g. no neighbour within its cutoff)."""
    from pymatgen.analysis.dimensionality import get_dimensionality_larsen
    from pymatgen.io.ase import AseAtomsAdaptor

    structure = AseAtomsAdaptor.get_structure(atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CrystalNN warns about missing oxidation states
        try:
            bonded = _crystal_nn().get_bonded_structure(structure)
        except ValueError:
            return None
    return int(get_dimensionality_larsen(bonded))
