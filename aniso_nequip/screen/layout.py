"""What a screening run is and where its files lie: :class:`Settings` and the layout of its
output folder ``OUT``, shared by :mod:`aniso_nequip.screen.runner` (which writes the shards) and
:mod:`aniso_nequip.screen.report` (which merges them into the final outputs).

- ``OUT/shards/settings.json``: everything that determines the results; a later run into the same
  folder must have the same settings (or ``force`` to discard the old shards);
- ``OUT/shards/domain_reference.npz``: the domain reference built from a ``domain_reference``
  training file, once for every shard (:func:`reference_path`);
- while shard ``i`` of ``n`` runs: ``shard-i-of-n/chunk-c.csv|.extxyz|.json`` for each chunk
  of ``chunk_size`` consecutive structures of the shard, each written atomically when the chunk
  is done, the JSON last; a killed run resumes after its last finished chunk;
- per finished shard: ``shard-i-of-n.csv`` (one row per screened crystal, in ranking order:
  :func:`sorted_rows`), ``shard-i-of-n.extxyz`` (the shard's top ``top`` crystals with their
  predictions, physical ones only unless ``keep_unphysical``; absent when there is none) and
  ``shard-i-of-n.json`` (filter report, timings, peak memory), made from the chunks (which are
  then removed), each written atomically, the JSON last: a shard with its JSON is finished and
  is skipped when the run is repeated;
- the final outputs of :data:`OUTPUTS`.

Structure ``index`` belongs to shard ``index % n``; an unsharded run is shard 0 of 1.

A row is a dict of the columns of :meth:`Settings.columns`: a new per-crystal column is added
there and filled where the runner builds the rows (``runner._rows``).
"""

import csv
import dataclasses
import heapq
import json
import math
import pathlib
from typing import Dict, Iterator, List, Optional, Sequence

from ..domain import COLUMNS as DOMAIN_COLUMNS
from ..errors import InputError
from ..optics import CSV_COLUMNS
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
        dimensionality: classify the structural dimensionality of the ``top`` crystals (the
            slow part, so not done for the others)
        shards: the number of shards the pool is split into
        chunk_size: structures of a shard per chunk, the unit from which a killed run resumes
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
    chunk_size: int = 1000
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
            + ["physical", "failed", *DOMAIN_COLUMNS, "dimensionality", "crystal_system"]
            + [*CSV_COLUMNS, "n_sites"]
            + ["energy_above_hull", "band_gap"]
            + ["source", "index", "fingerprint"]
            + [f"eps_{c}" for c in VOIGT_NAMES]
            + ["eig_1", "eig_2", "eig_3"]
            + [f"axis_{i}_{c}" for i in (1, 2, 3) for c in "xyz"]
        )


def shard_path(out, shard: int, n_shards: int, suffix: str) -> pathlib.Path:
    """``OUT/shards/shard-i-of-n<suffix>``."""
    return pathlib.Path(out) / "shards" / f"shard-{shard}-of-{n_shards}{suffix}"


def chunk_path(out, shard: int, n_shards: int, chunk: int, suffix: str) -> pathlib.Path:
    """``OUT/shards/shard-i-of-n/chunk-c<suffix>`` (``c`` zero-padded to 6 digits)."""
    return shard_path(out, shard, n_shards, "") / f"chunk-{chunk:06d}{suffix}"


def settings_path(out) -> pathlib.Path:
    """``OUT/shards/settings.json``."""
    return pathlib.Path(out) / "shards" / "settings.json"


def reference_path(out) -> pathlib.Path:
    """``OUT/shards/domain_reference.npz``: the domain reference a run builds from its
    ``--domain-reference`` training file, once for all its shards."""
    return pathlib.Path(out) / "shards" / "domain_reference.npz"


def read_settings(out) -> Settings:
    """The :class:`Settings` of the run in ``out``; raises
    :class:`~aniso_nequip.errors.InputError` when ``out`` holds none."""
    path = settings_path(out)
    if not path.is_file():
        raise InputError(f"`{out}` holds no screening run (no {path})")
    return Settings.from_dict(json.loads(path.read_text()))


def sort_key(
    score: float, index: int, last: bool = False, failed: bool = False, out_of_domain: bool = False
):
    """Ranking order: ``failed`` predictions after everything (listed, never ranked), then
    ``last`` after the others (:meth:`Settings.ranked_last`), then crystals ``out_of_domain``
    (:mod:`aniso_nequip.domain`) after those in it, then descending score, NaN last, ties in
    input order."""
    return (failed, last, out_of_domain, math.inf if math.isnan(score) else -score, index)


def row_key(row: Dict[str, str], settings: Settings):
    """:func:`sort_key` of a CSV row (values as written: strings)."""
    last = settings.ranked_last(row["physical"] == "True")
    failed, out_of_domain = bool(row["failed"]), row["out_of_domain"] == "True"
    return sort_key(
        float(row[settings.score_column]), int(row["index"]), last, failed, out_of_domain
    )


def frame_key(atoms, settings: Settings):
    """:func:`sort_key` of a candidate frame (its ``info`` as the screen wrote it)."""
    info = atoms.info
    out_of_domain = bool(info.get("out_of_domain", False))
    score, index = float(info[settings.score_column]), int(info["index"])
    return sort_key(score, index, False, False, out_of_domain)


def sorted_rows(paths: Sequence[pathlib.Path], settings: Settings) -> Iterator[Dict[str, str]]:
    """The rows of CSV files each sorted in ranking order, merged into one stream in ranking
    order, one row of each file in memory at a time."""
    files = [open(path, newline="") for path in paths]
    try:
        yield from heapq.merge(
            *(csv.DictReader(f) for f in files), key=lambda row: row_key(row, settings)
        )
    finally:
        for f in files:
            f.close()


def frames_of(path: pathlib.Path):
    """Iterate the frames of a shard's or chunk's candidates file, none when it was not written
    (no candidate)."""
    import ase.io

    if path.is_file():
        yield from ase.io.iread(path, ":", format="extxyz")
