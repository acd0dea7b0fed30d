"""The optical description of a dielectric tensor: principal values and axes, the optical class
from the crystal's point group, refractive indices, optic axes, sign and birefringence::

    from aniso_nequip.optics import describe
    d = describe(atoms, eps)          # eps: (3, 3) in the Cartesian frame of ``atoms``
    d.optical_class, d.optical_sign, d.n_o, d.n_e, d.optic_axis   # "uniaxial", "-", 1.66, ...

The class comes from the structure (spglib through pymatgen's ``SpacegroupAnalyzer``, symprec
:data:`SYMPREC`), never from eigenvalues that happen to coincide:
cubic point groups are optically **isotropic**, tetragonal, trigonal and hexagonal ones
**uniaxial** (optic axis along the unique 3-, 4- or 6-fold axis), orthorhombic, monoclinic and
triclinic ones **biaxial**. The tensor is first averaged over the point group (``R eps R^T``, the
Neumann form: a predicted tensor obeys Neumann's principle only up to float noise), then:

- uniaxial: ``eps_e = a . eps . a`` along the optic axis ``a``, ``eps_o`` perpendicular to it,
  ``n = sqrt(eps)``; optical sign ``positive`` when ``n_e > n_o``, else ``negative``;
  birefringence ``n_e - n_o`` (signed);
- biaxial: ``n_alpha < n_beta < n_gamma`` (:attr:`OpticalDescription.refractive_indices`) along
  the principal axes X, Y, Z; ``2Vz``, the angle between the two optic axes measured across Z,
  from ``cos^2 Vz = eps_alpha (eps_gamma - eps_beta) / (eps_beta (eps_gamma - eps_alpha))``;
  the crystal is biaxial positive when Z bisects the acute angle (``2Vz < 90``), negative when X
  does; ``two_v`` is the acute angle ``2V`` (degrees, 0-90); birefringence
  ``n_gamma - n_alpha``;
- isotropic: one value ``eps = tr / 3``, no sign, birefringence 0.

Directions are given in crystal coordinates, as ``[uvw]`` of the input cell (``u a + v b + w c``,
smallest integers when the direction is a lattice row), so the description of a rotated crystal
(structure and tensor rotated together) is the same.
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import ase
import numpy as np

SYMPREC = 1e-3
"""spglib's distance tolerance (Angstrom) for the point group of the optical description: tighter
than the 0.1 of crystal-system labels (:data:`~aniso_nequip.data.symmetry.SYMPREC`), because a
tensor obeys the symmetry the atoms actually have. At 0.1, a graphite cell of the bundled test
split distorted by ~0.005 A counts as trigonal while its DFPT tensor (eigenvalues 1.2, 4.0, 14.6)
and any equivariant prediction are monoclinic; at 1e-3 every reference tensor of the bundled
splits deviates from its point group's Neumann form by at most 0.8%, and
coordinates given to 4 decimals (CIF files) still resolve."""
OPTICAL_CLASS = {
    "cubic": "isotropic",
    "tetragonal": "uniaxial",
    "trigonal": "uniaxial",
    "hexagonal": "uniaxial",
    "orthorhombic": "biaxial",
    "monoclinic": "biaxial",
    "triclinic": "biaxial",
}
# largest index tried when writing a direction as integers [uvw], and how close to integers
MAX_INDEX = 12
INDEX_TOLERANCE = 0.01
CSV_COLUMNS = (
    "optical_class",
    "point_group",
    "optical_sign",
    "n_1",
    "n_2",
    "n_3",
    "n_o",
    "n_e",
    "eps_o",
    "eps_e",
    "birefringence",
    "optic_axis",
    "two_v_deg",
    "axis_alpha",
    "axis_beta",
    "axis_gamma",
)
"""Columns of :func:`csv_fields`, as ``predict``, ``screen`` and ``nequip-evaluate`` write them."""
GREEK = ("alpha", "beta", "gamma")
STRUCTURE_COLUMNS = ("optical_class", "point_group")
"""The columns of :data:`CSV_COLUMNS` that depend on the structure only, not on the tensor."""


@dataclasses.dataclass(frozen=True)
class CrystalSymmetry:
    """What the optical description needs of a structure: its crystal system, point group
    (Hermann-Mauguin), the input cell (rows ``a, b, c``, Angstrom), the Cartesian point-group
    operations ``(n, 3, 3)`` in the frame of the input and, for a uniaxial crystal, its unique
    axis as ``[uvw]`` of the input cell (:func:`lattice_direction`)."""

    crystal_system: str
    point_group: str
    cell: np.ndarray
    rotations: np.ndarray
    unique_axis: Optional[tuple]

    @property
    def optical_class(self) -> str:
        return OPTICAL_CLASS[self.crystal_system]


def crystal_symmetry(structure, symprec: float = SYMPREC) -> CrystalSymmetry:
    """The :class:`CrystalSymmetry` of ``structure`` (``ase.Atoms`` or pymatgen ``Structure``),
    from spglib (through pymatgen's ``SpacegroupAnalyzer``).

    The operations are those of spglib's standardized conventional cell rotated back into the
    input frame: the input cell itself may not carry them all as integer matrices (a supercell,
    e.g. an orthohexagonal cell of a trigonal crystal, does not carry its 3-fold axis). The
    unique axis of a uniaxial crystal is that cell's ``c`` axis."""
    import spglib
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    if isinstance(structure, ase.Atoms):
        structure = AseAtomsAdaptor.get_structure(structure)
    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    data = sga.get_symmetry_dataset()
    standard = np.array(data.std_lattice, dtype=float)  # rows, idealized frame
    to_ideal = np.array(data.std_rotation_matrix, dtype=float)  # input frame -> idealized
    fractional = spglib.get_symmetry_from_database(data.hall_number)["rotations"]
    # r = L^T f for row lattice vectors L, so f' = W f is r' = L^T W L^-T r
    ideal = np.einsum("ji,njk,kl->nil", standard, fractional, np.linalg.inv(standard).T)
    rotations = np.einsum("ji,njk,kl->nil", to_ideal, ideal, to_ideal)
    cell = np.array(structure.lattice.matrix, dtype=float)
    system = sga.get_crystal_system()
    unique = None
    if OPTICAL_CLASS[system] == "uniaxial":
        unique = lattice_direction(to_ideal.T @ standard[2], cell)
    return CrystalSymmetry(system, sga.get_point_group_symbol(), cell, rotations, unique)


def _canonical(vector):
    """``vector`` with its first non-zero component positive (a direction, not a sense)."""
    vector = np.asarray(vector)
    nonzero = vector[np.abs(vector) > 1e-9]
    sign = -1 if len(nonzero) and nonzero[0] < 0 else 1
    return tuple(sign * v for v in vector.tolist())


def lattice_direction(vector, cell) -> tuple:
    """The Cartesian direction ``vector`` as ``[uvw]`` of ``cell`` (rows ``a, b, c``): smallest
    integers when it is a lattice row with indices up to :data:`MAX_INDEX`, else floats scaled
    to a largest component of 1 (3 decimals); first non-zero component positive."""
    frac = np.linalg.solve(np.asarray(cell, dtype=float).T, np.asarray(vector, dtype=float))
    frac = frac / np.abs(frac).max()
    for m in range(1, MAX_INDEX + 1):
        scaled = frac * m
        if np.abs(scaled - np.round(scaled)).max() < INDEX_TOLERANCE:
            ints = np.round(scaled).astype(int)
            return _canonical(ints // math.gcd(*(int(x) for x in ints)))
    return _canonical(np.round(frac, 3))


def direction_text(uvw) -> str:
    """``[0 0 1]``, ``[1 -1 0]``, ``[1 0 -0.371]``: a direction of :func:`lattice_direction`."""
    if uvw is None:
        return ""
    return "[" + " ".join(str(v) if isinstance(v, int) else f"{v:g}" for v in uvw) + "]"


@dataclasses.dataclass(frozen=True)
class OpticalDescription:
    """The optical description of one dielectric tensor (see the module docstring).

    ``principal_values`` (ascending; refractive indices ``refractive_indices`` = their square
    roots, NaN for a non-positive value) lie along ``principal_axes`` (rows: Cartesian unit
    vectors of the input frame) of the point-group-averaged ``tensor``;
    ``neumann_deviation`` is ``max|eps - tensor| / max|eps|`` for the tensor ``eps`` described
    (float noise for an equivariant model's prediction). Fields that do not apply to the
    crystal's class are ``None``.
    """

    optical_class: str
    crystal_system: str
    point_group: str
    tensor: np.ndarray
    principal_values: np.ndarray
    principal_axes: np.ndarray
    refractive_indices: np.ndarray
    birefringence: float
    neumann_deviation: float
    optical_sign: Optional[str] = None
    eps_o: Optional[float] = None
    eps_e: Optional[float] = None
    n_o: Optional[float] = None
    n_e: Optional[float] = None
    optic_axis: Optional[tuple] = None
    two_v: Optional[float] = None
    two_vz: Optional[float] = None
    principal_axes_uvw: Optional[List[tuple]] = None

    def summary(self) -> str:
        """One line leading with class, sign, principal refractive indices and optic axis."""
        if self.optical_class == "isotropic":
            return f"isotropic ({self.point_group}): n {_f(self.refractive_indices[0])}"
        sign = self.optical_sign or "sign undetermined"
        head = f"{self.optical_class} {sign} ({self.point_group})"
        if self.optical_class == "uniaxial":
            return (
                f"{head}, optic axis {direction_text(self.optic_axis)}: n_o {_f(self.n_o)}  "
                f"n_e {_f(self.n_e)}  n_e - n_o {self.birefringence:+.4f}"
            )
        indices = "  ".join(
            f"n_{name} {_f(n)} {direction_text(axis)}"
            for name, n, axis in zip(GREEK, self.refractive_indices, self.principal_axes_uvw)
        )
        two_v = "n/a" if self.two_v is None else f"{self.two_v:.1f} deg"
        return f"{head}, 2V {two_v}: {indices}  n_gamma - n_alpha {self.birefringence:.4f}"


_SIGNS = {True: "positive", False: "negative"}


def _f(value) -> str:
    return "nan" if value is None or not np.isfinite(value) else f"{value:.4f}"


def _sqrt(values):
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.asarray(values, dtype=float))


def describe(tensor, structure) -> Optional[OpticalDescription]:
    """The :class:`OpticalDescription` of the dielectric tensor ``tensor`` (``(3, 3)`` or 9
    values, in the Cartesian frame of the structure) of ``structure`` (``ase.Atoms``, pymatgen
    ``Structure`` or a :class:`CrystalSymmetry` from :func:`crystal_symmetry`, to describe
    several tensors of one crystal without analysing its symmetry again); ``None`` for a tensor
    with non-finite entries (a failed prediction)."""
    eps = np.asarray(tensor, dtype=float).reshape(3, 3)
    if not np.isfinite(eps).all():  # a failed prediction (data.validation.prediction_problem)
        return None
    sym = structure if isinstance(structure, CrystalSymmetry) else crystal_symmetry(structure)
    eps = 0.5 * (eps + eps.T)
    neumann = np.einsum("nij,jk,nlk->il", sym.rotations, eps, sym.rotations) / len(sym.rotations)
    neumann = 0.5 * (neumann + neumann.T)
    scale = np.abs(eps).max()
    deviation = float(np.abs(eps - neumann).max() / scale) if scale > 0 else 0.0
    values, vectors = np.linalg.eigh(neumann)
    common = dict(
        crystal_system=sym.crystal_system,
        point_group=sym.point_group,
        tensor=neumann,
        principal_values=values,
        principal_axes=vectors.T,
        refractive_indices=_sqrt(values),
        neumann_deviation=deviation,
    )
    if sym.optical_class == "isotropic":
        iso = np.full(3, np.trace(neumann) / 3)
        common.update(principal_values=iso, refractive_indices=_sqrt(iso))
        return OpticalDescription("isotropic", birefringence=0.0, **common)
    if sym.optical_class == "uniaxial":
        axis = np.asarray(sym.unique_axis, dtype=float) @ sym.cell
        axis /= np.linalg.norm(axis)
        eps_e = float(axis @ neumann @ axis)
        eps_o = float((np.trace(neumann) - eps_e) / 2)
        n_o, n_e = (float(v) for v in _sqrt([eps_o, eps_e]))
        delta = n_e - n_o
        sign = None if not np.isfinite(delta) or delta == 0 else _SIGNS[delta > 0]
        return OpticalDescription(
            "uniaxial",
            birefringence=delta,
            optical_sign=sign,
            eps_o=eps_o,
            eps_e=eps_e,
            n_o=n_o,
            n_e=n_e,
            optic_axis=sym.unique_axis,
            **common,
        )
    alpha, beta, gamma = values
    n = common["refractive_indices"]
    two_vz = sign = two_v = None
    if alpha > 0 and gamma > alpha:
        cos2 = alpha * (gamma - beta) / (beta * (gamma - alpha))
        two_vz = float(np.degrees(2 * np.arccos(np.sqrt(np.clip(cos2, 0.0, 1.0)))))
        sign = _SIGNS[two_vz < 90]
        two_v = min(two_vz, 180 - two_vz)
    return OpticalDescription(
        "biaxial",
        birefringence=float(n[2] - n[0]),
        optical_sign=sign,
        two_v=two_v,
        two_vz=two_vz,
        principal_axes_uvw=[lattice_direction(v, sym.cell) for v in vectors.T],
        **common,
    )


def describe_all(structures: Sequence, tensors) -> List[OpticalDescription]:
    """:func:`describe` of each of ``tensors`` (``(N, 3, 3)``) for ``structures``."""
    return [describe(t, atoms) for atoms, t in zip(structures, np.asarray(tensors))]


def csv_fields(description: Optional[OpticalDescription]) -> Dict[str, str]:
    """The :data:`CSV_COLUMNS` of ``description`` as text (empty where they do not apply):
    principal refractive indices ``n_1 <= n_2 <= n_3`` (``n_alpha, n_beta, n_gamma`` of a
    biaxial crystal) and, for a biaxial crystal, their axes ``axis_alpha``, ``axis_beta``,
    ``axis_gamma`` (X, Y, Z) as ``[uvw]``; all empty for ``None`` (a failed prediction)."""
    if description is None:
        return dict.fromkeys(CSV_COLUMNS, "")
    d = description

    def number(value, digits=5):
        return "" if value is None else f"{value:.{digits}f}"

    axes = d.principal_axes_uvw or [None] * 3
    return {
        "optical_class": d.optical_class,
        "point_group": d.point_group,
        "optical_sign": d.optical_sign or "",
        **{f"n_{i + 1}": number(v) for i, v in enumerate(d.refractive_indices)},
        "n_o": number(d.n_o),
        "n_e": number(d.n_e),
        "eps_o": number(d.eps_o),
        "eps_e": number(d.eps_e),
        "birefringence": number(d.birefringence),
        "optic_axis": direction_text(d.optic_axis),
        "two_v_deg": number(d.two_v, 2),
        **{f"axis_{name}": direction_text(axis) for name, axis in zip(GREEK, axes)},
    }


def principal_indices(description: OpticalDescription) -> np.ndarray:
    """The refractive indices that define the optics of a crystal of its class: ``[n]``
    (isotropic), ``[n_o, n_e]`` (uniaxial), ``[n_alpha, n_beta, n_gamma]`` (biaxial); compared
    index by index, a uniaxial prediction with the wrong optical sign puts its ``n_o`` and
    ``n_e`` on opposite sides of the identity."""
    if description.optical_class == "isotropic":
        return description.refractive_indices[:1]
    if description.optical_class == "uniaxial":
        return np.array([description.n_o, description.n_e])
    return description.refractive_indices
