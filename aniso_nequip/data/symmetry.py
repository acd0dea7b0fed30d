"""Crystal symmetry helpers (pymatgen/spglib, symprec 0.1 as in the bundled data)."""

import ase

SYMPREC = 0.1


def crystal_system(atoms: ase.Atoms, symprec: float = SYMPREC) -> str:
    """``atoms.info["crystal_system"]`` when present, else pymatgen's SpacegroupAnalyzer."""
    if "crystal_system" in atoms.info:
        return str(atoms.info["crystal_system"])
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = AseAtomsAdaptor.get_structure(atoms)
    return SpacegroupAnalyzer(structure, symprec=symprec).get_crystal_system()
