"""Seeded random train/validation/test splits, optionally stratified by crystal system, and
cross-validation folds grouped by chemical system."""

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import ase
import numpy as np

SPLITS = ("train", "val", "test")


def _counts(n: int, fractions: Sequence[float]) -> List[int]:
    val, test = (int(round(f * n)) for f in fractions[1:])
    return [n - val - test, val, test]


def split_frames(
    frames: List[ase.Atoms],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify_by: Optional[str] = None,
) -> Dict[str, List[ase.Atoms]]:
    """Split ``frames`` into ``train``/``val``/``test`` with the given fractions (sum 1).

    The same ``seed`` and input give the same split. With ``stratify_by`` (an ``atoms.info`` key,
    e.g. ``"crystal_system"``) each group is split with the same fractions.
    """
    fractions = [float(f) for f in fractions]
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"split fractions must be 3 non-negative numbers summing to 1: {fractions}"
        )
    groups = defaultdict(list)
    for i, atoms in enumerate(frames):
        groups[atoms.info.get(stratify_by) if stratify_by else None].append(i)
    rng = np.random.default_rng(seed)
    out = {name: [] for name in SPLITS}
    for key in sorted(groups, key=str):
        indices = rng.permutation(groups[key])
        start = 0
        for name, count in zip(SPLITS, _counts(len(indices), fractions)):
            out[name].extend(int(i) for i in indices[start : start + count])
            start += count
    return {name: [frames[i] for i in sorted(idx)] for name, idx in out.items()}


def chemical_system(atoms: ase.Atoms) -> str:
    """The crystal's set of elements, e.g. ``"Mo-S"`` for MoS2 and for every Mo-S compound."""
    return "-".join(sorted(set(atoms.get_chemical_symbols())))


def grouped_folds(groups: Sequence[str], n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (``0..n_folds-1``) of each item, every group in one fold only.

    Groups are taken largest first (in a ``seed``-shuffled order among equal sizes) and each goes
    to the fold with the fewest items so far, so folds differ in size by at most the largest
    group. The same ``seed`` and groups give the same folds.

    Args:
        groups: group label of each item (e.g. :func:`chemical_system` of each crystal)
        n_folds: number of folds, at most the number of distinct groups
        seed: seed of the order among groups of equal size
    """
    labels, inverse, sizes = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    if not 1 <= n_folds <= len(labels):
        raise ValueError(f"{n_folds} folds need 1 to {len(labels)} (the distinct groups)")
    shuffled = np.random.default_rng(seed).permutation(len(labels))
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    filled, fold_of_group = np.zeros(n_folds, dtype=int), np.empty(len(labels), dtype=int)
    for group in order:
        fold = int(np.argmin(filled))
        fold_of_group[group] = fold
        filled[fold] += sizes[group]
    return fold_of_group[inverse.reshape(-1)]
