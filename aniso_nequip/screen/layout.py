"""What a screening run is and where its files lie: :class:`Settings` and the layout of its
output folder ``OUT``, shared by :mod:`.runner` (which writes the shards) and :mod:`.report`
(which merges them into the final outputs).

- ``OUT/shards/settings.json``: everything that determines the results; a later run into the same
  folder must have the same settings (or ``force`` to discard the old shards);
- per shard ``i`` of ``n``: ``shard-i-of-n.csv`` (one row per screened crystal, in input order),
  ``shard-i-of-n.extxyz`` (the shard's top ``top`` crystals with their predictions, physical
  ones only unless ``keep_unphysical``) and
  ``shard-i-of-n.json`` (filter report and timings), each written atomically, the JSON last: a
  shard with its JSON is finished and is skipped when the run is repeated;
- the final outputs of :data:`OUTPUTS`.

Structure ``index`` belongs to shard ``index % n``; an unsharded run is shard 0 of 1.
"""

import dataclasses
import json
import math
import pathlib
from typing import Dict, List, Optional

from ..domain import COLUMNS as DOMAIN_COLUMNS
from ..errors import InputError
from .filters import Thresholds

RANK_BY = ("mean", "upper", "lower")
ID_LIST_SUFFIXES = (".txt", ".ids")
OUTPUTS = {
    "ranking": "ranking.csv",
    "candidates": "candidates.extxyz",
    "summary": "summary.md",
    "summary_json": "summary.json",
    "by_dimensionality": "a_r_by_dimensionality.png",
    "histogram": "a_r_histogram.png",
}
# a predicted tensor is physical when its smallest eigenvalue is at least this (eps_inf >= 1)
PHYSICAL_MIN_EIGENVALUE = 1 - 1e-6
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
VOIGT_NAMES = ("xx", "yy", "zz", "yz", "xz", "xy")


@dataclasses.dataclass
class Settings:
    """What determines a screening run's results (stored in ``OUT/shards/settings.json``).

    Args:
        models: model files (``.ckpt``, ``.nequip.zip`` or ``.nequip.pt2``); several make an
            ensemble
        structures: inputs (:func:`~aniso_nequip.screen.sources.iter_structures`)
        exclude: training-set files: extxyz (or HDF5) frames, or id lists (``.txt``/``.ids``,
            one id per line)
        training_set: files whose reference tensors give the training ``a_r`` histogram
            (default: the ``exclude`` frame files)
        thresholds: pool filters
        rank_by: ``mean`` ``a_r``, or its ``upper``/``lower`` bound ``mean +/- k * std``
        k: bound width in ensemble standard deviations
        top: crystals in ``candidates.extxyz``
        keep_unphysical: rank by score alone; by default crystals whose predicted tensor is
            unphysical (smallest eigenvalue below 1) rank after all physical ones and are left
            out of ``candidates.extxyz``
        dimensionality: classify structural dimensionality (the slow part)
        shards: the number of shards the pool is split into
        domain_reference: the models' training crystals for the domain score
            (:func:`~aniso_nequip.domain.resolve_reference`; default: the ready model's own);
            crystals out of the domain rank after those in it
    """

    models: List[str]
    structures: List[str]
    exclude: List[str] = dataclasses.field(default_factory=list)
    training_set: Optional[List[str]] = None
    thresholds: Thresholds = dataclasses.field(default_factory=Thresholds)
    rank_by: str = "mean"
    k: float = 1.0
    top: int = 50
    keep_unphysical: bool = False
    dimensionality: bool = True
    shards: int = 1
    domain_reference: Optional[str] = None

    def to_dict(self) -> Dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Dict) -> "Settings":
        return cls(**{**d, "thresholds": Thresholds(**d["thresholds"])})

    @property
    def ensemble(self) -> bool:
        return len(self.models) > 1

    @property
    def score_column(self) -> str:
        """The CSV column the ranking sorts by (descending)."""
        if not self.ensemble:
            return "a_r"
        return "a_r_mean" if self.rank_by == "mean" else f"a_r_{self.rank_by}"

    def ranked_last(self, physical: bool) -> bool:
        """Whether a crystal ranks after the others and stays out of ``candidates.extxyz``."""
        return not (physical or self.keep_unphysical)

    def columns(self) -> List[str]:
        """Per-crystal CSV columns of a shard (the final ranking adds ``rank`` in front)."""
        stats = ["eps_poly", "a_r"]
        if self.ensemble:
            stats = ["a_r_mean", "a_r_std", "eps_poly_mean", "eps_poly_std"]
            if self.rank_by != "mean":
                stats.insert(0, self.score_column)
        return (
            ["id", "formula"]
            + stats
            + ["physical", *DOMAIN_COLUMNS, "dimensionality", "crystal_system", "n_sites"]
            + ["energy_above_hull", "band_gap"]
            + ["source", "index"]
            + [f"eps_{c}" for c in VOIGT_NAMES]
            + ["eig_1", "eig_2", "eig_3"]
            + [f"axis_{i}_{c}" for i in (1, 2, 3) for c in "xyz"]
        )


def shard_path(out, shard: int, n_shards: int, suffix: str) -> pathlib.Path:
    """``OUT/shards/shard-i-of-n<suffix>``."""
    return pathlib.Path(out) / "shards" / f"shard-{shard}-of-{n_shards}{suffix}"


def settings_path(out) -> pathlib.Path:
    """``OUT/shards/settings.json``."""
    return pathlib.Path(out) / "shards" / "settings.json"


def read_settings(out) -> Settings:
    """The :class:`Settings` of the run in ``out``; raises
    :class:`~aniso_nequip.errors.InputError` when ``out`` holds none."""
    path = settings_path(out)
    if not path.is_file():
        raise InputError(f"`{out}` holds no screening run (no {path})")
    return Settings.from_dict(json.loads(path.read_text()))


def sort_key(score: float, index: int, last: bool = False, out_of_domain: bool = False):
    """Ranking order: ``last`` after the others (:meth:`Settings.ranked_last`), then crystals
    ``out_of_domain`` (:mod:`aniso_nequip.domain`) after those in it, then descending score,
    NaN last, ties in input order."""
    return (last, out_of_domain, math.inf if math.isnan(score) else -score, index)
