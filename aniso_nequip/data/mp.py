"""Materials Project dielectric documents -> ``ase.Atoms`` in the project's extxyz schema.

A document is what ``mp_api.client.MPRester().materials.dielectric.search()`` returns (an
emmet-core ``DielectricDoc``) or a plain dict / JSON dump of one: ``material_id``, ``structure``
(pymatgen dict), ``electronic``, ``ionic`` and ``total`` (3x3 lists), and, where a document was
merged with summary data, ``band_gap`` and ``energy_above_hull``.

:func:`dielectric_documents` and :func:`download_candidates` download them (``MP_API_KEY``).
"""

import gzip
import json
import os
import pathlib
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import ase
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from .._keys import DIELECTRIC_IONIC_KEY
from ..errors import InputError, not_a_file
from ..io import check_writable, output_set, write_json
from .symmetry import SYMPREC, point_group_deviation
from .validation import disorder_problem, reduced_formula, structure_problem, tensor_problem

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


class DocumentError(InputError):
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


def _tensor(doc: Dict[str, Any], key: str, material_id: str, field: str) -> np.ndarray:
    value = doc.get(key)
    if value is None:
        raise DocumentError(material_id, f"missing `{key}` tensor")
    problem = tensor_problem(value, field, label=f"`{key}` tensor")
    if problem:
        raise DocumentError(material_id, problem)
    tensor = np.reshape(np.asarray(value, dtype=float), (3, 3))
    return 0.5 * (tensor + tensor.T)


def document_atoms(doc: Dict[str, Any], material_id: str) -> ase.Atoms:
    """The document's ``structure`` as periodic ``ase.Atoms``; raises :class:`DocumentError`
    for a missing or malformed structure and for one that
    :mod:`~aniso_nequip.data.validation` refuses (disordered sites included)."""
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
    problem = disorder_problem(structure)
    if problem:
        raise DocumentError(material_id, problem)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.pbc = True
    problem = structure_problem(atoms, bulk=False)  # a reference computed for this very cell
    if problem:
        raise DocumentError(material_id, problem)
    return atoms


def doc_to_atoms(doc, symprec: float = SYMPREC, name: str = "<no material_id>") -> ase.Atoms:
    """Convert one document; raises :class:`DocumentError` naming the material id (``name`` for
    a document without one).

    The electronic tensor becomes ``dielectric_tensor`` (an ASE calculator property, as in the
    bundled files), the ionic one ``info["dielectric_ionic_tensor"]``; a tensor that
    :func:`~aniso_nequip.data.validation.tensor_problem` refuses (asymmetric beyond tolerance,
    not positive (semi-)definite, ...) is reported, and the asymmetry within tolerance removed.
    ``info["frame_deviation"]`` records :func:`~aniso_nequip.data.symmetry.point_group_deviation`
    of the electronic tensor in the document's own structure. ``info["material_id"]`` and
    ``info["entry_id"]`` are set only when the document has a material id.
    """
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    doc = document_to_dict(doc)
    material_id = doc.get("material_id")
    name = str(material_id or name)
    atoms = document_atoms(doc, name)
    electronic = _tensor(doc, "electronic", name, "dielectric_tensor")
    sga = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=symprec)
    ids = {"material_id": name, "entry_id": name} if material_id else {}
    info = {
        **ids,
        "formula": doc.get("formula_pretty") or reduced_formula(atoms),
        "source": SOURCE,
        "crystal_system": sga.get_crystal_system(),
        "spacegroup": int(sga.get_space_group_number()),
        "frame_deviation": point_group_deviation(atoms, electronic, symprec),
    }
    if doc.get("ionic") is not None:
        info[DIELECTRIC_IONIC_KEY] = _tensor(doc, "ionic", name, DIELECTRIC_IONIC_KEY).reshape(9)
    for key in ("band_gap", "energy_above_hull"):
        if doc.get(key) is not None:
            info[key] = float(doc[key])
    atoms.info.update(info)
    atoms.calc = SinglePointCalculator(atoms, dielectric_tensor=electronic.reshape(9))
    return atoms


def convert_documents(docs: Iterable, symprec: float = SYMPREC) -> Tuple[List[ase.Atoms], Dict]:
    """Convert documents, skipping (and reporting by material id, ``<document i>`` for one
    without an id) those that cannot be."""
    frames, skipped = [], {}
    for i, doc in enumerate(docs):
        try:
            frames.append(doc_to_atoms(doc, symprec, name=f"<document {i}>"))
        except DocumentError as err:
            skipped[err.material_id] = err.problem
    return frames, skipped


def read_documents(path: str) -> List[Dict[str, Any]]:
    """Documents from a JSON or gzip-compressed JSON file (a list, or ``{"documents": [...]}``);
    raises :class:`~aniso_nequip.errors.InputError` for a missing or malformed file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    if not os.path.isfile(path):
        raise InputError(f"document file `{path}` {not_a_file(path)}")
    try:
        with opener(path, "rt") as f:
            data = json.load(f)
    except (json.JSONDecodeError, EOFError, OSError, UnicodeDecodeError) as err:
        raise InputError(f"`{path}` is not valid JSON (truncated or corrupt?): {err}") from err
    if isinstance(data, dict) and "documents" in data:
        data = data["documents"]
    if not isinstance(data, list):
        raise InputError(f"`{path}` must hold a JSON list of documents")
    return data


def fetch_documents(search: Callable) -> List[Dict[str, Any]]:
    """The documents ``search(mpr)`` returns for an ``MPRester`` made with ``MP_API_KEY``, as
    dicts (:func:`document_to_dict`); the key is never printed.

    Raises :class:`~aniso_nequip.errors.InputError` when the key is not set or the download fails.
    """
    key = os.environ.get("MP_API_KEY", "").strip()
    if not key:
        raise InputError(
            "MP_API_KEY is not set: create an API key at https://materialsproject.org/api and "
            "`export MP_API_KEY=...`, or convert a saved dump with `aniso-nequip data convert`"
        )
    try:
        from mp_api.client import MPRester

        with MPRester(api_key=key) as mpr:
            docs = search(mpr)
    except Exception as err:  # network, authentication, server errors
        message = str(err).replace(key, "***")
        raise InputError(
            f"could not download from the Materials Project ({type(err).__name__}: {message}); "
            "check the network and MP_API_KEY"
        ) from None
    return [document_to_dict(d) for d in docs]


def dielectric_documents(cache, refresh: bool = False) -> Tuple[List[Dict[str, Any]], bool]:
    """Every Materials Project dielectric document: read from ``cache`` when it exists (unless
    ``refresh``), else downloaded (:func:`fetch_documents`) and saved to ``cache``.

    Returns:
        the documents and whether they were downloaded
    """
    cache = pathlib.Path(cache)
    if cache.exists() and not refresh:
        return read_documents(str(cache)), False
    check_writable(cache)
    docs = fetch_documents(lambda mpr: mpr.materials.dielectric.search(fields=DOCUMENT_FIELDS))
    write_json(docs, cache, force=refresh)
    return docs, True


def download_candidates(
    out,
    max_e_above_hull: Optional[float] = None,
    min_band_gap: Optional[float] = None,
    max_sites: Optional[int] = None,
    force: bool = False,
) -> int:
    """Download a screening pool of Materials Project summary documents (``CANDIDATE_FIELDS``)
    within the given energy-above-hull, band-gap and site-count bounds (``None``: unbounded) into
    the JSON(.gz) file ``out``; returns the number of documents.

    ``out`` is claimed before downloading (:func:`~aniso_nequip.io.output_set`): an existing
    one is refused unless ``force``, as are one another process is writing and one that cannot
    be written.
    """
    out = pathlib.Path(out)
    with output_set(out.parent, [out.name], force=force, key=out) as stage:
        docs = fetch_documents(
            lambda mpr: mpr.materials.summary.search(
                energy_above_hull=(0, max_e_above_hull),
                band_gap=(min_band_gap, None),
                nsites=(None, max_sites),
                fields=CANDIDATE_FIELDS,
            )
        )
        write_json(docs, stage / out.name)
    return len(docs)
