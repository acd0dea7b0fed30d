"""The one place where structures and tensors are checked, for every entry point: ``data
convert``, dataset loading for training, ``nequip-evaluate``, ``predict``, the ASE calculator and
``screen``.

Each check returns the problem as text (``None`` when there is none), so batch commands can skip
and list bad entries while the Python API raises :class:`~aniso_nequip.errors.InputError` through
:func:`check_structure` with the crystal's name (:func:`crystal_name`) in the message::

    from aniso_nequip.data.validation import structure_problem, tensor_problem

    structure_problem(atoms, type_names=model.type_names)   # None or e.g. "atoms 0 and 3 ..."
    tensor_problem(eps, "dielectric_tensor")                 # None or e.g. "not symmetric ..."

A structure is refused when it cannot be a crystal: non-finite positions or cell, no atoms, a
zero or singular cell, no periodicity in all three directions, atoms closer than
:data:`MIN_DISTANCE` (periodic images included), disordered (partially occupied) sites (never
reduced to one species silently), or elements outside the model's ``type_names``. A reference
tensor is refused for a wrong shape, non-finite values, asymmetry beyond
:data:`SYMMETRY_TOLERANCE` (reported, never symmetrised silently) and, for
``dielectric_tensor``, a non-positive eigenvalue; ``dielectric_ionic_tensor`` must be positive
semi-definite within :data:`SEMIDEFINITE_TOLERANCE`; Born charges are only checked for shape and
finiteness. Elements a model was never trained on (:func:`elements_not_in` with its training
elements) are a warning, not an error: the callers say so next to the prediction.

This module never imports a model: callers pass the model's type names in.
"""

from typing import Iterable, List, Optional, Sequence

import ase
import ase.data
import numpy as np

from .._keys import DIELECTRIC_IONIC_KEY
from ..errors import InputError
from .matching import NAME_KEYS, crystal_id

MIN_DISTANCE = 0.5
"""Smallest distance (Angstrom) between two atoms, periodic images included; the shortest bond
of any real crystal (H2, 0.74 Angstrom) is longer."""

SINGULAR_CELL_TOLERANCE = 1e-6
"""A cell whose volume is below this fraction of the product of its vector lengths is
singular (flat); every crystal of the bundled datasets is above 0.05."""

OCCUPANCY_TOLERANCE = 1e-3
"""A site whose occupancies sum to less than ``1 - OCCUPANCY_TOLERANCE`` is partially occupied."""

SYMMETRY_TOLERANCE = 1e-3
"""Largest ``|T - T^T| / |T|`` (Frobenius norms) of a dielectric tensor ``T``."""

SEMIDEFINITE_TOLERANCE = 1e-2
"""Smallest eigenvalue of an ionic tensor allowed, as a fraction of its norm: ``-0.01 |T|``."""


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
    atoms: ase.Atoms,
    type_names: Optional[Sequence[str]] = None,
    min_distance: float = MIN_DISTANCE,
) -> Optional[str]:
    """What makes ``atoms`` unusable as a crystal, or ``None``.

    Args:
        atoms: the structure
        type_names: the elements a model knows (``None``: not checked)
        min_distance: smallest interatomic distance allowed (Angstrom)
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
    return _distance_problem(atoms, min_distance)


def _distance_problem(atoms: ase.Atoms, min_distance: float) -> Optional[str]:
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, min_distance)
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    pair = f"atom {i[k]} and its periodic image" if i[k] == j[k] else f"atoms {i[k]} and {j[k]}"
    return (
        f"{pair} are {d[k]:.3f} A apart (less than {min_distance} A: overlapping atoms or a "
        "wrong unit, e.g. fractional coordinates read as Cartesian)"
    )


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
        label: how the message names the tensor (default: `` `field` ``)
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
    atoms: ase.Atoms, type_names: Optional[Sequence[str]] = None, name: Optional[str] = None
) -> ase.Atoms:
    """``atoms`` itself when :func:`structure_problem` finds nothing, else
    :class:`~aniso_nequip.errors.InputError` naming the crystal (``name``, default
    :func:`crystal_name`) and the problem."""
    problem = structure_problem(atoms, type_names)
    if problem:
        raise InputError(f"{name or crystal_name(atoms)}: {problem}")
    return atoms
