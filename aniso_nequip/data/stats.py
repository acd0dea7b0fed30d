"""Dataset statistics: crystal systems and the distributions of ``eps_poly`` and ``a_r``
(``aniso-nequip data stats``; :func:`aniso_nequip.plots.stats_histograms` draws them)."""

import collections
import dataclasses
import os
from typing import Dict

import numpy as np

from ..errors import InputError
from ..metrics import derived, reference_tensor
from .files import read_frames
from .matching import crystal_id
from .symmetry import crystal_system

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


def _undefined(path: str, bad: list, what: str, shown: int = 5) -> InputError:
    """The error naming the frames ``bad`` (``(index, atoms)``) whose tensor has ``what``."""
    names = [f"frame {i}{_id(atoms)}" for i, atoms in bad]
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    return InputError(
        f"`{path}`: {what} in the `dielectric_tensor` of {', '.join(names[:shown])}{more}"
    )


def _id(atoms) -> str:
    material = crystal_id(atoms)
    return f" ({material})" if material else ""


def dataset_statistics(path) -> DatasetStatistics:
    """Statistics of the crystals with a reference ``dielectric_tensor`` in the extxyz(.gz) or
    HDF5 file ``path``; raises :class:`~aniso_nequip.errors.InputError` for a missing or
    unreadable file, for one without reference tensors and, naming the frames, for tensors
    with NaN or inf entries or an eigenvalue <= 0 (whose ``a_r`` is undefined)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"`{path}` does not exist")
    frames = read_frames(path)
    refs = [(i, atoms, reference_tensor(atoms)) for i, atoms in enumerate(frames)]
    refs = [(i, atoms, eps) for i, atoms, eps in refs if eps is not None]
    if not refs:
        raise InputError(f"`{path}` has no frame with a `dielectric_tensor`")
    bad = [(i, atoms) for i, atoms, eps in refs if not np.isfinite(eps).all()]
    if bad:
        raise _undefined(path, bad, "non-finite entries (NaN or inf)")
    d = derived(np.stack([eps for _, _, eps in refs]))
    bad = [(i, atoms) for (i, atoms, _), a_r in zip(refs, d["a_r"]) if not np.isfinite(a_r)]
    if bad:
        raise _undefined(path, bad, "an eigenvalue <= 0 (so a_r is undefined)")
    counts = collections.Counter(crystal_system(atoms) for _, atoms, _ in refs)
    systems = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return DatasetStatistics(path, len(frames), systems, d["eps_poly"], d["a_r"])
