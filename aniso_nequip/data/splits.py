"""Seeded random train/validation/test splits, optionally stratified by crystal system."""

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
