"""The one place where structures and tensors are checked, for every entry point: ``data
convert``, dataset loading for training, ``nequip-evaluate``, ``predict``, the ASE calculator and
``screen``.

Each check returns the problem as text (``None`` when there is none), so batch commands can skip
and list bad entries while the Python API raises :class:`~aniso_nequip.errors.InputError` through
:func:`check_structure` with the crystal's name (:func:`crystal_name`) in the message::

    from aniso_nequip.data.validation import structure_problem, tensor_problem

    structure_problem(atoms, type_names=model.type_names)   # None or e.g. "atoms 0 and 3 ..."
    tensor_problem(eps, "dielectric_tensor")                 # None or e.g. "not symmetric ..."

A structure is refused when it cannot be a crystal: non-finite positions or cell, no atoms, a zero
or singular cell, no periodicity in all three directions, two atoms closer than
:data:`REFUSED_DISTANCE_RATIO` of the sum of their covalent radii (periodic images included;
:func:`distance_problem`), disordered (partially occupied) sites (never reduced to one species
silently), elements outside the model's ``type_names`` or, with ``bulk`` (``aniso-nequip predict``
and ``screen``), a cell that is not a bulk crystal: fragments (a slab, chains, a molecule, a lone
atom) separated by vacuum (:func:`vacuum_problem`). A reference tensor is refused for a wrong
shape, non-finite values, asymmetry beyond :data:`SYMMETRY_TOLERANCE` (reported, never symmetrised
silently) and, for ``dielectric_tensor``, a non-positive eigenvalue; ``dielectric_ionic_tensor``
must be positive semi-definite within :data:`SEMIDEFINITE_TOLERANCE`; Born charges are only checked
for shape and finiteness. A *predicted* dielectric tensor with a non-finite value or an eigenvalue
outside :data:`PREDICTED_EIGENVALUE_RANGE` is a failed prediction (:func:`prediction_problem`):
reported, never ranked.

:func:`structure_warning` flags what a crystal may have but none of the bundled data has:
atoms closer than :data:`WARNED_DISTANCE_RATIO` of their covalent radii, or an empty gap wider
than :data:`WARNED_VACUUM` (and, without ``bulk``, the vacuum that :func:`vacuum_problem` finds).
Elements a model was never trained on (:func:`elements_not_in` with its training elements) are a
warning, not an error: the callers say so next to the prediction.

This module never imports a model: callers pass the model's type names in.
"""

from typing import Iterable, List, Optional, Sequence, Tuple

import ase
import ase.data
import numpy as np

from .._keys import DIELECTRIC_IONIC_KEY
from ..errors import InputError
from .matching import NAME_KEYS, crystal_id

REFUSED_DISTANCE_RATIO = 0.5
"""Two atoms closer than this fraction of the sum of their covalent radii (``ase.data.
covalent_radii``) are refused: overlapping atoms or a wrong unit. The closest pair of the 2,473
bundled crystals (``datasets/mp_subset_*``, ``phonondb_*``) is at 0.683 (U-O, 1.79 A, in
``mf-test-0001``); H2's bond is at 1.19."""

WARNED_DISTANCE_RATIO = 0.65
"""Atoms closer than this fraction of their covalent radii (but not refused) are warned about:
closer than in any bundled crystal (0.683), e.g. a compressed cell; its prediction is an
extrapolation."""

REFUSED_VACUUM = 8.0
"""An empty gap (Angstrom) between lattice planes wider than this, with a bonded network that is
not three-dimensional (:func:`bonded_dimensionality`), makes a cell a fragment in vacuum (a slab, a
molecule in a box, a lone atom), not a bulk crystal. Bulk crystals of the bundled data have
gaps up to 6.4 A (``mf-valid-0275``; graphite 3.35 A, 2H-MoS2 3.0 A); three MP cells of
``mp_subset`` are monolayers or a bilayer with 14-22 A of vacuum (``mf-test-0007``, ``-0014``,
``-0036``)."""

WARNED_VACUUM = 6.5
"""An empty gap wider than this (but not refused) is warned about: wider than in any bulk crystal
of the bundled data (6.4 A)."""

BOND_FACTOR = 1.25
"""Two atoms are bonded (:func:`bonded_dimensionality`) when closer than this multiple of the sum
of their covalent radii."""

PREDICTED_EIGENVALUE_RANGE = (0.5, 100.0)
"""Eigenvalues a predicted dielectric tensor (``eps_inf``) may have. Every real material has
eigenvalues >= 1; the bundled data span 1.20-30.1 and a model's typical error is ~0.3, so an
eigenvalue below 0.5 or above 100 (3x the largest in the data) is a failed prediction, not an
error of degree."""

SINGULAR_CELL_TOLERANCE = 1e-6
"""A cell whose volume is below this fraction of the product of its vector lengths is
singular (flat); every crystal of the bundled datasets is above 0.05."""

OCCUPANCY_TOLERANCE = 1e-3
"""A site whose occupancies sum to less than ``1 - OCCUPANCY_TOLERANCE`` is partially occupied."""

SYMMETRY_TOLERANCE = 1e-3
"""Largest ``|T - T^T| / |T|`` (Frobenius norms) of a dielectric tensor ``T``."""

SEMIDEFINITE_TOLERANCE = 1e-2
"""Smallest eigenvalue of an ionic tensor allowed, as a fraction of its norm: ``-0.01 |T|``."""


class StructureWarning(UserWarning):
    """A usable crystal unlike any of the bundled data (:func:`structure_warning`): its
    prediction is an extrapolation."""


class FailedPredictionWarning(UserWarning):
    """A prediction failed (:func:`prediction_problem`): the Python API returns NaN for it."""


class UntrainedElementWarning(UserWarning):
    """A crystal holds elements that a model knows but never saw in its training data; its
    prediction is an extrapolation. Commands that list these themselves silence it."""


DIELECTRIC_KEY = "dielectric_tensor"
BORN_KEY = "born_effective_charges"
TENSOR_FIELDS = (DIELECTRIC_KEY, DIELECTRIC_IONIC_KEY, BORN_KEY)
"""Fields :func:`tensor_problem` checks."""


def reduced_formula(atoms: ase.Atoms) -> str:
    """The formula every output prints: pymatgen's reduced formula (``PbTiO3``, ``CaCO3``,
    ``NaNO3``: electronegativity order, as the Materials Project writes it)."""
    from pymatgen.core import Composition

    return Composition(atoms.get_chemical_formula()).reduced_formula


def crystal_name(atoms: ase.Atoms, index: Optional[int] = None) -> str:
    """How messages name a crystal: its id (``material_id``, ``entry_id``, ``mp_id``, ``id``)
    else its :func:`reduced_formula`; ``structure <index> (<name>)`` when ``index`` is given."""
    name = crystal_id(atoms, NAME_KEYS)
    name = name or (reduced_formula(atoms) if len(atoms) else "empty structure")
    return name if index is None else f"structure {index} ({name})"


def elements_not_in(atoms: ase.Atoms, elements: Iterable[str]) -> List[str]:
    """The elements of ``atoms`` that are not among ``elements``, sorted."""
    return sorted(set(atoms.get_chemical_symbols()) - set(elements))


def mapped_species(transforms: Sequence) -> Optional[List[str]]:
    """The chemical species that the type mapper among nequip data ``transforms``
    (``ChemicalSpeciesToAtomTypeMapper``: its ``lookup_table``) maps; ``None`` without one."""
    for transform in transforms:
        table = getattr(transform, "lookup_table", None)
        if table is not None:
            return [ase.data.chemical_symbols[z] for z in range(len(table)) if table[z] >= 0]
    return None


def disorder_problem(structure) -> Optional[str]:
    """Disordered (partially occupied or mixed) sites of an ``ase.Atoms`` read from a CIF (ASE
    records occupancies in ``info["occupancy"]`` and keeps one species per site) or of a
    pymatgen ``Structure``; ``None`` when ordered."""
    if isinstance(structure, ase.Atoms):
        occupancy = structure.info.get("occupancy") or {}
        sites = {str(k): dict(v) for k, v in occupancy.items()}
    elif structure.is_ordered:
        return None
    else:
        sites = {
            str(i): {str(el): float(occ) for el, occ in site.species.items()}
            for i, site in enumerate(structure)
        }
    bad = [
        f"{k} ({' '.join(f'{el}:{occ:g}' for el, occ in species.items())})"
        for k, species in sites.items()
        if len(species) > 1 or sum(species.values()) < 1 - OCCUPANCY_TOLERANCE
    ]
    if not bad:
        return None
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return (
        f"disordered sites (partial occupancy) {shown}: a model needs one element per site; "
        "order the structure first (e.g. pymatgen's OrderDisorderedStructureTransformation)"
    )


def structure_problem(
    atoms: ase.Atoms, type_names: Optional[Sequence[str]] = None, bulk: bool = True
) -> Optional[str]:
    """What makes ``atoms`` unusable as a crystal, or ``None``.

    Args:
        atoms: the structure
        type_names: the elements a model knows (``None``: not checked)
        bulk: refuse a cell that is not a bulk crystal (:func:`vacuum_problem`), as
            ``aniso-nequip predict`` and ``screen`` do (a fragment's tensor, or a_r, means
            nothing); the Python API, the calculator, ``nequip-evaluate`` and data with reference
            tensors computed for that very cell (training files, converted documents) keep it,
            and :func:`structure_warning` flags it
    """
    if len(atoms) == 0:
        return "structure has no atoms"
    if not np.isfinite(atoms.positions).all():
        return "atom positions are not finite"
    cell = atoms.cell.array
    if not np.isfinite(cell).all():
        return "cell is not finite"
    if atoms.cell.rank < 3:
        return "structure has no periodic 3D cell (a crystal needs three lattice vectors)"
    lengths = np.prod(np.linalg.norm(cell, axis=1))
    if abs(np.linalg.det(cell)) <= SINGULAR_CELL_TOLERANCE * lengths:
        return f"cell is singular (volume {abs(atoms.cell.volume):.3g} A^3)"
    if not atoms.pbc.all():
        return (
            f"structure is not periodic in all three directions (pbc={atoms.pbc.tolist()}); "
            "set atoms.pbc = True for a crystal"
        )
    disorder = disorder_problem(atoms)
    if disorder:
        return disorder
    if type_names is not None:
        unknown = elements_not_in(atoms, type_names)
        if unknown:
            return f"element(s) {', '.join(unknown)} unknown to the model"
    return distance_problem(atoms) or (vacuum_problem(atoms) if bulk else None)


def closest_pair(atoms: ase.Atoms, ratio: float):
    """``(text, d / (r_i + r_j))`` of the pair of atoms closest relative to the sum of their
    covalent radii, among those closer than ``ratio`` of it; ``None`` when there is none."""
    from ase.neighborlist import neighbor_list

    radii = ase.data.covalent_radii[atoms.numbers]
    i, j, d = neighbor_list("ijd", atoms, list(ratio * radii))
    if len(d) == 0:
        return None
    ratios = d / (radii[i] + radii[j])
    k = int(np.argmin(ratios))
    pair = f"atom {i[k]} and its periodic image" if i[k] == j[k] else f"atoms {i[k]} and {j[k]}"
    symbols = atoms.get_chemical_symbols()
    text = (
        f"{pair} are {d[k]:.3f} A apart ({symbols[i[k]]}-{symbols[j[k]]}: {ratios[k]:.2f} of the "
        f"sum of their covalent radii, {radii[i[k]] + radii[j[k]]:.2f} A)"
    )
    return text, float(ratios[k])


def distance_problem(atoms: ase.Atoms) -> Optional[str]:
    """Two atoms closer than :data:`REFUSED_DISTANCE_RATIO` of the sum of their covalent radii
    (periodic images included), or ``None``."""
    found = closest_pair(atoms, REFUSED_DISTANCE_RATIO)
    if found is None:
        return None
    return (
        f"{found[0]}: no crystal has atoms closer than {REFUSED_DISTANCE_RATIO} of it "
        "(overlapping atoms or a wrong unit, e.g. fractional coordinates read as Cartesian)"
    )


def largest_gap(atoms: ase.Atoms) -> Tuple[float, int]:
    """``(width, k)``: the widest empty slab of space (Angstrom) between two planes of lattice
    vectors holding no atom, across lattice vector ``k`` (0, 1, 2 for a, b, c)."""
    cell = atoms.cell.array
    volume = abs(np.linalg.det(cell))
    fractions = np.sort(atoms.get_scaled_positions(wrap=True), axis=0)
    widths = []
    for k in range(3):
        spacing = volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
        f = fractions[:, k]
        widths.append(float(np.diff(np.append(f, f[0] + 1.0)).max() * spacing))
    k = int(np.argmax(widths))
    return widths[k], k


def bonded_dimensionality(atoms: ase.Atoms) -> int:
    """Dimensionality (0: molecules or lone atoms, 1: chains, 2: layers, 3: a framework) of the
    network of bonds shorter than :data:`BOND_FACTOR` times the sum of the covalent radii, by
    ASE's rank determination (Larsen et al., as the screen's CrystalNN step, with fixed bonds)."""
    from ase.geometry.dimensionality.rank_determination import RDA
    from ase.neighborlist import neighbor_list

    radii = BOND_FACTOR * ase.data.covalent_radii[atoms.numbers]
    rda = RDA(len(atoms))
    for i, j, shift in zip(*neighbor_list("ijS", atoms, list(radii))):
        if (i, *shift) < (j, 0, 0, 0):  # each bond once
            rda.insert_bond(int(i), int(j), tuple(int(s) for s in shift))
    histogram = rda.check()
    return max(d for d, count in enumerate(histogram) if count)


FRAGMENTS = {0: "molecules or lone atoms", 1: "chains", 2: "layers (a slab)"}


def vacuum_problem(atoms: ase.Atoms) -> Optional[str]:
    """A cell of fragments in vacuum, not a bulk crystal: an empty gap wider than
    :data:`REFUSED_VACUUM` between lattice planes and a bonded network of fewer than three
    dimensions (:func:`bonded_dimensionality`); ``None`` for a bulk crystal (a layered van der
    Waals crystal such as graphite included)."""
    width, k = largest_gap(atoms)
    if width <= REFUSED_VACUUM:
        return None
    dimensions = bonded_dimensionality(atoms)
    if dimensions == 3:
        return None
    return (
        f"not a bulk crystal: {FRAGMENTS[dimensions]} separated by {width:.1f} A of vacuum "
        f"across lattice vector {'abc'[k]} (more than {REFUSED_VACUUM:g} A): the tensor of such "
        "a cell depends on the vacuum and means nothing; give the bulk crystal"
    )


def structure_warning(atoms: ase.Atoms, bulk: bool = True) -> Optional[str]:
    """What is unusual about a usable structure (:func:`structure_problem` finds nothing), or
    ``None``: atoms closer than :data:`WARNED_DISTANCE_RATIO` of their covalent radii, an empty
    gap wider than :data:`WARNED_VACUUM`, or (without ``bulk``) the vacuum of
    :func:`vacuum_problem`. Its prediction is an extrapolation."""
    found = closest_pair(atoms, WARNED_DISTANCE_RATIO)
    if found is not None:
        return (
            f"{found[0]}: closer than in any crystal of the bundled data (warned below "
            f"{WARNED_DISTANCE_RATIO}), e.g. a compressed cell: an extrapolation"
        )
    vacuum = None if bulk else vacuum_problem(atoms)
    if vacuum:
        return vacuum
    width, k = largest_gap(atoms)
    if width > WARNED_VACUUM:
        return (
            f"an empty gap of {width:.1f} A across lattice vector {'abc'[k]}, wider than in any "
            f"bulk crystal of the bundled data (warned above {WARNED_VACUUM:g} A): a fragment in "
            "vacuum? an extrapolation"
        )
    return None


def structure_warnings(structures: Sequence[ase.Atoms], names: Sequence[str], bulk: bool = True):
    """``"<name>: <warning>"`` for each of ``structures`` that :func:`structure_warning` flags."""
    found = ((name, structure_warning(atoms, bulk)) for name, atoms in zip(names, structures))
    return [f"{name}: {warning}" for name, warning in found if warning]


def prediction_problem(tensor) -> Optional[str]:
    """What makes a predicted dielectric tensor a failed prediction, or ``None``: non-finite
    values or an eigenvalue outside :data:`PREDICTED_EIGENVALUE_RANGE`."""
    array = np.asarray(tensor, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(array).all():
        return "failed prediction: non-finite values"
    eigenvalues = np.linalg.eigvalsh(0.5 * (array + array.T))
    low, high = PREDICTED_EIGENVALUE_RANGE
    if eigenvalues[0] < low or eigenvalues[-1] > high:
        shown = " ".join(f"{v:.4g}" for v in eigenvalues)
        return (
            f"failed prediction: eigenvalues {shown} outside [{low:g}, {high:g}] (a real "
            "eps_inf has eigenvalues >= 1; the input is outside what the model can answer)"
        )
    return None


def tensor_problem(
    value, field: str = DIELECTRIC_KEY, n_atoms: Optional[int] = None, label: Optional[str] = None
) -> Optional[str]:
    """What makes a reference ``field`` tensor unusable, or ``None``.

    Args:
        value: the tensor (3x3 or 9 values; Born charges ``(n_atoms, 3, 3)`` or ``(n_atoms, 9)``)
        field: ``dielectric_tensor`` (symmetric, positive definite), ``dielectric_ionic_tensor``
            (symmetric, positive semi-definite within tolerance) or ``born_effective_charges``
            (shape and finite values only)
        n_atoms: the structure's atom count (Born charges)
        label: how the message names the tensor (default: ``field`` in backticks)
    """
    what = label or f"`{field}`"
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        return f"{what} is not numeric: {err}"
    if field == BORN_KEY:
        count = len(array) if n_atoms is None else n_atoms
        if array.size != 9 * count or array.size == 0:
            return f"{what} has shape {array.shape}, expected ({count}, 3, 3)"
        if not np.isfinite(array).all():
            return f"{what} has non-finite values"
        return None
    if array.size != 9:
        return f"{what} has shape {array.shape}, expected 3x3"
    if not np.isfinite(array).all():
        return f"{what} has non-finite values"
    tensor = array.reshape(3, 3)
    norm = np.linalg.norm(tensor)
    asymmetry = np.linalg.norm(tensor - tensor.T) / norm if norm > 0 else 0.0
    if asymmetry > SYMMETRY_TOLERANCE:
        return (
            f"{what} is not symmetric (|T - T^T| / |T| = {asymmetry:.2g} > {SYMMETRY_TOLERANCE:g})"
        )
    smallest = float(np.linalg.eigvalsh(0.5 * (tensor + tensor.T))[0])
    if field == DIELECTRIC_IONIC_KEY:
        if smallest < -SEMIDEFINITE_TOLERANCE * norm:
            return f"{what} is not positive semi-definite (smallest eigenvalue {smallest:.4g})"
    elif smallest <= 0:
        return f"{what} is not positive definite (smallest eigenvalue {smallest:.4g})"
    return None


def reference_value(atoms: ase.Atoms, field: str):
    """A frame's reference ``field`` as stored (calculator result, else ``info``, else per-atom
    ``arrays``), or ``None``."""
    results = atoms.calc.results if atoms.calc is not None else {}
    return results.get(field, atoms.info.get(field, atoms.arrays.get(field)))


def reference_tensor(atoms: ase.Atoms, field: str = DIELECTRIC_KEY) -> Optional[np.ndarray]:
    """A frame's usable reference ``field`` (:func:`reference_value`) as a float64 array,
    ``(3, 3)`` (Born charges ``(n_atoms, 3, 3)``); ``None`` when the frame has none or
    :func:`tensor_problem` refuses it (:func:`reference_problem` says why)."""
    value = reference_value(atoms, field)
    if value is None or tensor_problem(value, field, n_atoms=len(atoms)):
        return None
    shape = (len(atoms), 3, 3) if field == BORN_KEY else (3, 3)
    return np.reshape(np.asarray(value, dtype=np.float64), shape)


def reference_problem(atoms: ase.Atoms, fields: Iterable[str] = TENSOR_FIELDS) -> Optional[str]:
    """The first problem (:func:`tensor_problem`) of the reference tensors among ``fields`` that
    ``atoms`` carries (:func:`reference_value`), or ``None``."""
    for field in fields:
        value = reference_value(atoms, field)
        if value is None:
            continue
        problem = tensor_problem(value, field, n_atoms=len(atoms))
        if problem:
            return problem
    return None


def check_structure(
    atoms: ase.Atoms,
    type_names: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
    bulk: bool = True,
) -> ase.Atoms:
    """``atoms`` itself when :func:`structure_problem` (with ``bulk``) finds nothing, else
    :class:`~aniso_nequip.errors.InputError` naming the crystal (``name``, default
    :func:`crystal_name`) and the problem."""
    problem = structure_problem(atoms, type_names, bulk)
    if problem:
        raise InputError(f"{name or crystal_name(atoms)}: {problem}")
    return atoms
