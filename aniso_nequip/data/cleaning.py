"""Cleaning rules of the AnisoNet paper, each switchable, with a report of what each removed."""

from typing import Dict, List, Optional, Tuple

import ase
import numpy as np

from .matching import StructureIndex, crystal_id, frame_label
from .symmetry import FRAME_TOLERANCE


def _eps(atoms: ase.Atoms) -> np.ndarray:
    return np.reshape(atoms.calc.results["dielectric_tensor"], (3, 3))


def clean(
    frames: List[ase.Atoms],
    frame_tolerance: Optional[float] = FRAME_TOLERANCE,
    min_diagonal: Optional[float] = 1.0,
    max_eps_poly: Optional[float] = 15.0,
    drop_duplicate_ids: bool = True,
    drop_duplicate_structures: bool = True,
) -> Tuple[List[ase.Atoms], Dict]:
    """Apply the rules in order; a rule set to ``None``/``False`` is skipped.

    Rules: ``frame`` (tensor not invariant under the structure's point group by more than
    ``frame_tolerance`` of its largest component, see ``info["frame_deviation"]``),
    ``duplicate_id`` (repeated material id, first kept; crystals without an id are never
    duplicates by id), ``min_diagonal`` (a diagonal element
    below ``min_diagonal``), ``max_eps_poly`` (mean eigenvalue above ``max_eps_poly``),
    ``duplicate_structure`` (pymatgen ``StructureMatcher`` match of an earlier kept crystal).

    Returns the kept frames and a report ``{"input": n, "kept": m, "removed": {rule: [ids]},
    "rules": {...}}``; a crystal without an id is listed as ``<frame i>`` (its input position).
    """
    rules = {
        "frame": frame_tolerance,
        "duplicate_id": drop_duplicate_ids,
        "min_diagonal": min_diagonal,
        "max_eps_poly": max_eps_poly,
        "duplicate_structure": drop_duplicate_structures,
    }
    removed = {rule: [] for rule, setting in rules.items() if setting not in (None, False)}
    seen_ids = set()
    candidates = []
    for i, atoms in enumerate(frames):
        eps = _eps(atoms)
        material_id = crystal_id(atoms)
        label = frame_label(atoms, i)
        if "frame" in removed and atoms.info.get("frame_deviation", 0.0) > frame_tolerance:
            removed["frame"].append(label)
        elif "duplicate_id" in removed and material_id is not None and material_id in seen_ids:
            removed["duplicate_id"].append(label)
        elif "min_diagonal" in removed and np.diag(eps).min() < min_diagonal:
            removed["min_diagonal"].append(label)
        elif "max_eps_poly" in removed and np.trace(eps) / 3 > max_eps_poly:
            removed["max_eps_poly"].append(label)
        else:
            candidates.append((label, atoms))
        if material_id is not None:
            seen_ids.add(material_id)
    kept = (
        _drop_duplicate_structures(candidates, removed)
        if drop_duplicate_structures
        else [atoms for _, atoms in candidates]
    )
    report = {
        "input": len(frames),
        "kept": len(kept),
        "removed": removed,
        "removed_counts": {rule: len(ids) for rule, ids in removed.items()},
        "rules": rules,
    }
    return kept, report


def _drop_duplicate_structures(candidates: List[Tuple[str, ase.Atoms]], removed: Dict):
    kept, index = [], StructureIndex()
    for label, atoms in candidates:
        if atoms in index:
            removed["duplicate_structure"].append(label)
            continue
        index.add(atoms)
        kept.append(atoms)
    return kept
