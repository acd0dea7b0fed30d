"""Crystal symmetry helpers (pymatgen/spglib, symprec 0.1 as in the bundled data)."""

import ase

SYMPREC = 0.1

FRAME_TOLERANCE = 0.01
"""Largest :func:`point_group_deviation` of a reference tensor in its structure's frame. The
bundled data's own deviations: median 1e-8 and 99th percentile 0.005 for ``mp_subset`` (9 of
1,104 above 0.01), at most 0.0014 for ``phonondb``; a strongly anisotropic trigonal tensor
rotated by 0.7 rad deviates by about 0.02."""


def crystal_system(atoms: ase.Atoms, symprec: float = SYMPREC) -> str:
    """``atoms.info["crystal_system"]`` when present, else pymatgen's SpacegroupAnalyzer."""
    if "crystal_system" in atoms.info:
        return str(atoms.info["crystal_system"])
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = AseAtomsAdaptor.get_structure(atoms)
    return SpacegroupAnalyzer(structure, symprec=symprec).get_crystal_system()


def point_group_deviation(atoms: ase.Atoms, tensor, symprec: float = SYMPREC) -> float:
    """How far a rank-2 tensor is from being invariant under the structure's point group.

    ``max_R max|R T R^T - T| / max|T|`` over the Cartesian point-group operations ``R`` of
    ``atoms`` (pymatgen ``SpacegroupAnalyzer``): ~0 when the tensor is expressed in the frame of
    this structure; large when the structure was rotated or had its axes swapped relative to the
    calculation the tensor came from.
    """
    import numpy as np
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    tensor = np.asarray(tensor, dtype=float).reshape(3, 3)
    structure = AseAtomsAdaptor.get_structure(atoms)
    ops = SpacegroupAnalyzer(structure, symprec=symprec).get_point_group_operations(cartesian=True)
    scale = np.abs(tensor).max()
    if scale == 0:
        return 0.0
    return max(
        float(np.abs(op.rotation_matrix @ tensor @ op.rotation_matrix.T - tensor).max())
        for op in ops
    ) / float(scale)
