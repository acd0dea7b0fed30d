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


INVERSION_TOLERANCE = 1e-6
"""Largest distance (A) between an atom's inverse image and an atom of its element for a
crystal to count as centrosymmetric in :func:`inversion_partners`."""


def inversion_partners(atoms: ase.Atoms, tolerance: float = INVERSION_TOLERANCE):
    """For a periodic crystal with an inversion centre, the index of the atom each atom's inverse
    image falls on (``-x_i + 2c = x_j`` modulo the lattice, same element, within ``tolerance``
    A); ``None`` for any other structure. Every inversion centre of the lattice passes through
    the midpoint of atom ``k`` (of the rarest element) and some atom of its element, so those
    candidates are tried."""
    import numpy as np

    if len(atoms) == 0 or not atoms.pbc.all():
        return None
    frac, numbers, cell = atoms.get_scaled_positions(wrap=False), atoms.numbers, atoms.cell.array
    elements, counts = np.unique(numbers, return_counts=True)
    k = int(np.flatnonzero(numbers == elements[np.argmin(counts)])[0])
    other = numbers[:, None] != numbers[None, :]
    for centre in frac[k] + frac[numbers == numbers[k]]:  # 2c of each candidate centre
        # image of atom i minus atom j, to the nearest lattice vector
        d = centre - frac[:, None, :] - frac[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ cell, axis=-1)
        dist[other] = np.inf
        partners = dist.argmin(axis=-1)
        if dist[np.arange(len(atoms)), partners].max() <= tolerance:
            if len(np.unique(partners)) == len(atoms):
                return partners
    return None
