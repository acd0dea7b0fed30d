"""Dataset statistics: crystal systems and the distributions of ``eps_poly`` and ``a_r``
(``aniso-nequip data stats``; :func:`aniso_nequip.plots.stats_histograms` draws them)."""

import collections
import dataclasses
import os
from typing import Dict

import numpy as np

from ..errors import InputError, not_a_file
from ..metrics import derived
from .files import listed_frames, read_frames
from .matching import crystal_id
from .symmetry import crystal_system
from .validation import DIELECTRIC_KEY, reference_problem, reference_tensor

PERCENTILES = (50, 90, 99)


@dataclasses.dataclass
class DatasetStatistics:
    """What a dataset file holds.

    Args:
        path: the file
        n_frames: crystals in it
        crystal_systems: crystals with a reference tensor per crystal system, most common first
        eps_poly: polycrystalline constant of each reference tensor
        a_r: anisotropy ratio of each reference tensor
    """

    path: str
    n_frames: int
    crystal_systems: Dict[str, int]
    eps_poly: np.ndarray
    a_r: np.ndarray

    def summary(self) -> str:
        """Counts per crystal system and the mean, median, 90th and 99th percentile and maximum
        of ``eps_poly`` and ``a_r``, one line each."""
        lines = [
            f"{self.path}: {self.n_frames} crystals, {len(self.eps_poly)} with dielectric tensors",
            "crystal systems:",
        ]
        lines += [f"  {system:>13}: {n}" for system, n in self.crystal_systems.items()]
        for name, values in (("eps_poly", self.eps_poly), ("a_r", self.a_r)):
            q = np.percentile(values, PERCENTILES)
            lines.append(
                f"{name:>9}: mean {values.mean():.3f}, median {q[0]:.3f}, p90 {q[1]:.3f}, "
                f"p99 {q[2]:.3f}, max {values.max():.3f}"
            )
        return "\n".join(lines)


def _id(atoms) -> str:
    material = crystal_id(atoms)
    return f" ({material})" if material else ""


def dataset_statistics(path) -> DatasetStatistics:
    """Statistics of the crystals with a reference ``dielectric_tensor`` in the extxyz(.gz) or
    HDF5 file ``path``; raises :class:`~aniso_nequip.errors.InputError` for a missing or
    unreadable file, for one without reference tensors and, naming each frame and its problem,
    for tensors that :func:`~aniso_nequip.data.validation.tensor_problem` refuses (a wrong
    shape, NaN or inf entries, asymmetric, an eigenvalue <= 0: statistics would be undefined),
    as every other entry point does."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"`{path}` {not_a_file(path)}")
    frames = read_frames(path)
    refs, bad = [], []
    for i, atoms in enumerate(frames):
        problem = reference_problem(atoms, [DIELECTRIC_KEY])
        if problem:
            bad.append(f"  frame {i}{_id(atoms)}: {problem}")
        elif (eps := reference_tensor(atoms)) is not None:
            refs.append((atoms, eps))
    if bad:
        raise InputError(
            f"`{path}`: {len(bad)} frame(s) with an unusable `{DIELECTRIC_KEY}` (statistics "
            f"would be undefined):\n{listed_frames(bad)}"
        )
    if not refs:
        raise InputError(f"`{path}` has no frame with a `dielectric_tensor`")
    d = derived(np.stack([eps for _, eps in refs]))
    counts = collections.Counter(crystal_system(atoms) for atoms, _ in refs)
    systems = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return DatasetStatistics(path, len(frames), systems, d["eps_poly"], d["a_r"])
