"""Materials Project dielectric documents -> ``ase.Atoms`` in the project's extxyz schema.

A document is what ``mp_api.client.MPRester().materials.dielectric.search()`` returns (an
emmet-core ``DielectricDoc``) or a plain dict / JSON dump of one: ``material_id``, ``structure``
(pymatgen dict), ``electronic``, ``ionic`` and ``total`` (3x3 lists), and, where a document was
merged with summary data, ``band_gap`` and ``energy_above_hull``.
"""

import gzip
import json
import os
from typing import Any, Dict, Iterable, List, Tuple

import ase
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from .._keys import DIELECTRIC_IONIC_KEY
from .symmetry import SYMPREC, point_group_deviation

SOURCE = "mp-dfpt-pbe"
DOCUMENT_FIELDS = ["material_id", "structure", "electronic", "ionic", "total", "formula_pretty"]
# summary-document fields of a screening pool (``aniso-nequip data mp-candidates``)
CANDIDATE_FIELDS = [
    "material_id",
    "structure",
    "formula_pretty",
    "energy_above_hull",
    "band_gap",
    "nsites",
    "elements",
]


class DocumentError(ValueError):
    """One document cannot be converted; the message names its material id."""

    def __init__(self, material_id: str, problem: str):
        super().__init__(f"{material_id}: {problem}")
        self.material_id = material_id
        self.problem = problem


def document_to_dict(doc) -> Dict[str, Any]:
    """A plain JSON-able dict of a document (emmet-core ``DielectricDoc`` or dict).

    emmet-core excludes ``structure`` from ``model_dump()``, so it is added back here: a JSON
    dump made with ``doc.model_dump()`` alone cannot be converted.
    """
    if isinstance(doc, dict):
        return doc
    if hasattr(doc, "model_dump"):  # emmet-core / pydantic document
        out = doc.model_dump(mode="json")
        structure = getattr(doc, "structure", None)
        if structure is not None:
            out["structure"] = (
                json.loads(structure.to_json()) if hasattr(structure, "to_json") else structure
            )
        return out
    raise DocumentError("<unknown>", f"not a document: {type(doc).__name__}")


def _tensor(doc: Dict[str, Any], key: str, material_id: str) -> np.ndarray:
    value = doc.get(key)
    if value is None:
        raise DocumentError(material_id, f"missing `{key}` tensor")
    try:
        tensor = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as err:
        raise DocumentError(material_id, f"malformed `{key}` tensor: {err}") from err
    if tensor.shape != (3, 3):
        raise DocumentError(material_id, f"`{key}` tensor has shape {tensor.shape}, expected 3x3")
    if not np.isfinite(tensor).all():
        raise DocumentError(material_id, f"`{key}` tensor has non-finite values")
    return 0.5 * (tensor + tensor.T)


def document_atoms(doc: Dict[str, Any], material_id: str) -> ase.Atoms:
    """The document's ``structure`` as periodic ``ase.Atoms``; raises :class:`DocumentError`."""
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    value = doc.get("structure")
    if value is None:
        raise DocumentError(material_id, "missing `structure`")
    if isinstance(value, dict) and not value.get("sites"):
        raise DocumentError(material_id, "empty structure (no sites)")
    try:
        structure = value if isinstance(value, Structure) else Structure.from_dict(value)
    except Exception as err:  # pymatgen raises many types for malformed input
        raise DocumentError(
            material_id, f"malformed structure: {type(err).__name__}: {err}"
        ) from err
    if len(structure) == 0:
        raise DocumentError(material_id, "empty structure (no sites)")
    if structure.lattice.volume <= 0 or not np.isfinite(structure.cart_coords).all():
        raise DocumentError(material_id, "degenerate structure (zero volume or bad coordinates)")
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.pbc = True
    return atoms


def doc_to_atoms(doc, symprec: float = SYMPREC) -> ase.Atoms:
    """Convert one document; raises :class:`DocumentError` naming the material id.

    The electronic tensor becomes ``dielectric_tensor`` (an ASE calculator property, as in the
    bundled files), the ionic one ``info["dielectric_ionic_tensor"]``; both are symmetrised.
    ``info["frame_deviation"]`` records :func:`~aniso_nequip.data.symmetry.point_group_deviation`
    of the electronic tensor in the document's own structure.
    """
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    doc = document_to_dict(doc)
    material_id = str(doc.get("material_id") or "<no material_id>")
    atoms = document_atoms(doc, material_id)
    electronic = _tensor(doc, "electronic", material_id)
    sga = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=symprec)
    info = {
        "material_id": material_id,
        "entry_id": material_id,
        "formula": doc.get("formula_pretty") or atoms.get_chemical_formula(mode="reduce"),
        "source": SOURCE,
        "crystal_system": sga.get_crystal_system(),
        "spacegroup": int(sga.get_space_group_number()),
        "frame_deviation": point_group_deviation(atoms, electronic, symprec),
    }
    if doc.get("ionic") is not None:
        info[DIELECTRIC_IONIC_KEY] = _tensor(doc, "ionic", material_id).reshape(9)
    for key in ("band_gap", "energy_above_hull"):
        if doc.get(key) is not None:
            info[key] = float(doc[key])
    atoms.info.update(info)
    atoms.calc = SinglePointCalculator(atoms, dielectric_tensor=electronic.reshape(9))
    return atoms


def convert_documents(docs: Iterable, symprec: float = SYMPREC) -> Tuple[List[ase.Atoms], Dict]:
    """Convert documents, skipping (and reporting by material id) those that cannot be."""
    frames, skipped = [], {}
    for doc in docs:
        try:
            frames.append(doc_to_atoms(doc, symprec))
        except DocumentError as err:
            skipped[err.material_id] = err.problem
    return frames, skipped


def read_documents(path: str) -> List[Dict[str, Any]]:
    """Documents from a JSON or gzip-compressed JSON file (a list, or ``{"documents": [...]}``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    if not os.path.isfile(path):
        raise FileNotFoundError(f"document file `{path}` does not exist")
    try:
        with opener(path, "rt") as f:
            data = json.load(f)
    except (json.JSONDecodeError, EOFError, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"`{path}` is not valid JSON (truncated or corrupt?): {err}") from err
    if isinstance(data, dict) and "documents" in data:
        data = data["documents"]
    if not isinstance(data, list):
        raise ValueError(f"`{path}` must hold a JSON list of documents")
    return data
