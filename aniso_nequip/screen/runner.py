"""Predicting a pool shard by shard, resumably, and merging the shards.

A run writes into its output folder ``OUT``:

- ``OUT/shards/settings.json``: everything that determines the results; a later run into the same
  folder must have the same settings (or ``force`` to discard the old shards);
- per shard ``i`` of ``n``: ``shard-i-of-n.csv`` (one row per screened crystal, in input order),
  ``shard-i-of-n.extxyz`` (the shard's top ``top`` crystals with their predictions, physical
  ones only unless ``keep_unphysical``) and
  ``shard-i-of-n.json`` (filter report and timings), each written atomically, the JSON last: a
  shard with its JSON is finished and is skipped when the run is repeated.

Structure ``index`` belongs to shard ``index % n``; an unsharded run is shard 0 of 1.
:func:`merge` combines finished shards into the final outputs (:mod:`.report`).
"""

import csv
import dataclasses
import heapq
import json
import math
import pathlib
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from ..data.files import read_frames
from ..data.matching import StructureIndex
from ..data.symmetry import crystal_system
from ..inference import load_model, predict
from ..io import OutputExistsError, atomic_file
from ..metrics import derived
from .dimensionality import dimensionality
from .filters import PoolFilter, Thresholds, label, merge_reports
from .sources import InputError, iter_structures

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
_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
_VOIGT_NAMES = ("xx", "yy", "zz", "yz", "xz", "xy")


class ShardsMissingError(RuntimeError):
    """:func:`merge` was asked for before every shard finished."""


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
            + ["physical", "dimensionality", "crystal_system", "n_sites"]
            + ["energy_above_hull", "band_gap"]
            + ["source", "index"]
            + [f"eps_{c}" for c in _VOIGT_NAMES]
            + ["eig_1", "eig_2", "eig_3"]
            + [f"axis_{i}_{c}" for i in (1, 2, 3) for c in "xyz"]
        )


def shard_path(out, shard: int, n_shards: int, suffix: str) -> pathlib.Path:
    """``OUT/shards/shard-i-of-n<suffix>``."""
    return pathlib.Path(out) / "shards" / f"shard-{shard}-of-{n_shards}{suffix}"


def _settings_path(out) -> pathlib.Path:
    return pathlib.Path(out) / "shards" / "settings.json"


def read_settings(out) -> Settings:
    path = _settings_path(out)
    if not path.is_file():
        raise FileNotFoundError(f"`{out}` holds no screening run (no {path})")
    return Settings.from_dict(json.loads(path.read_text()))


def prepare(out, settings: Settings, force: bool = False) -> None:
    """Claim ``out`` for a run with ``settings``: a new or empty folder, or one holding shards of
    the same settings (resumed). Other content is refused unless ``force``, which discards the
    shards and outputs of a run with different settings."""
    out = pathlib.Path(out)
    path = _settings_path(out)
    if path.is_file():
        old = json.loads(path.read_text())
        if old == settings.to_dict():
            return
        if not force:
            changed = sorted(k for k, v in settings.to_dict().items() if old.get(k) != v)
            raise OutputExistsError(
                f"`{out}` holds a screening run with other settings ({', '.join(changed)}); "
                "choose another --out or pass --force to discard its shards"
            )
        shutil.rmtree(out / "shards")
        for name in OUTPUTS.values():
            (out / name).unlink(missing_ok=True)
    elif out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(
            f"output directory `{out}` is not empty; choose another or pass --force"
        )
    with atomic_file(path, force=True) as tmp:
        tmp.write_text(json.dumps(settings.to_dict(), indent=2))


def exclusion_index(paths: Sequence[str]) -> Optional[StructureIndex]:
    """The training set of ``paths`` (frame files and id lists), ``None`` without paths."""
    if not paths:
        return None
    frames, ids = [], []
    for path in map(pathlib.Path, paths):
        if not path.is_file():
            raise InputError(f"exclusion file `{path}` does not exist")
        if path.suffix in ID_LIST_SUFFIXES:
            ids += [line.strip() for line in path.read_text().splitlines() if line.strip()]
            continue
        try:
            frames += read_frames(path)
        except Exception as err:  # ASE/h5py raise many types for malformed files
            raise InputError(f"cannot read `{path}`: {type(err).__name__}: {err}") from err
    return StructureIndex(frames, ids)


def _score(mean: float, std: float, settings: Settings) -> float:
    sign = {"mean": 0.0, "upper": 1.0, "lower": -1.0}[settings.rank_by]
    return mean + sign * settings.k * std


def _rows(entries, tensors: np.ndarray, dims: list, settings: Settings):
    """CSV rows and annotated frames of a batch; ``tensors`` is ``(n_models, B, 3, 3)``,
    ``dims`` the dimensionalities (or ``None``s)."""
    mean = tensors.mean(0)
    per_model = [derived(t) for t in tensors]
    eps_poly = np.stack([d["eps_poly"] for d in per_model])
    a_r = np.stack([d["a_r"] for d in per_model])
    eigenvalues, axes = np.linalg.eigh(0.5 * (mean + mean.transpose(0, 2, 1)))
    for b, (index, source, atoms) in enumerate(entries):
        if settings.ensemble:
            stats = {
                "a_r_mean": a_r[:, b].mean(),
                "a_r_std": a_r[:, b].std(),
                "eps_poly_mean": eps_poly[:, b].mean(),
                "eps_poly_std": eps_poly[:, b].std(),
            }
            stats[settings.score_column] = _score(stats["a_r_mean"], stats["a_r_std"], settings)
        else:
            stats = {"eps_poly": eps_poly[0, b], "a_r": a_r[0, b]}
        row = {
            "id": label(atoms, source),
            "formula": atoms.info.get("formula") or str(atoms.symbols.formula.reduce()[0]),
            **{k: float(v) for k, v in stats.items()},
            "physical": bool(eigenvalues[b, 0] >= PHYSICAL_MIN_EIGENVALUE),
            "dimensionality": dims[b],
            "crystal_system": crystal_system(atoms),
            "n_sites": len(atoms),
            "energy_above_hull": atoms.info.get("energy_above_hull"),
            "band_gap": atoms.info.get("band_gap"),
            "source": source,
            "index": index,
            **{f"eps_{c}": float(mean[b][ij]) for c, ij in zip(_VOIGT_NAMES, _VOIGT)},
            **{f"eig_{i + 1}": float(eigenvalues[b, i]) for i in range(3)},
            **{
                f"axis_{i + 1}_{c}": float(axes[b, j, i])
                for i in range(3)
                for j, c in enumerate("xyz")
            },
        }
        frame = atoms.copy()
        frame.info.update({k: v for k, v in row.items() if v is not None and k != "id"})
        frame.info["eigenvalues"] = eigenvalues[b]
        frame.info["principal_axes"] = axes[b].T.reshape(9)  # row i: axis of eigenvalue i
        frame.calc = SinglePointCalculator(frame, dielectric_tensor=mean[b].reshape(9))
        yield row, frame


def sort_key(score: float, index: int, last: bool = False):
    """Ranking order: ``last`` after the others (:meth:`Settings.ranked_last`), then descending
    score, NaN last, ties in input order."""
    return (last, math.inf if math.isnan(score) else -score, index)


def run_shard(
    out,
    settings: Settings,
    shard: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> bool:
    """Screen shard ``shard`` of ``settings.shards`` into ``out`` (after :func:`prepare`);
    ``False`` when it had finished before."""
    n = settings.shards
    report_path = shard_path(out, shard, n, ".json")
    if report_path.is_file():
        return False
    from tqdm import tqdm

    start = time.perf_counter()
    models = [load_model(path, device) for path in settings.models]
    known = set.intersection(*(set(m.type_names) for m in models))
    keep = PoolFilter(settings.thresholds, known, exclusion_index(settings.exclude))
    # min-heap of (negated sort key, frame): the shard's best `settings.top` candidates
    top: list = []
    counts = {"read": 0, "predicted": 0}
    seconds = {"predict": 0.0, "dimensionality": 0.0}

    def flush(batch, writer):
        tic = time.perf_counter()
        tensors = np.stack(
            [predict([a for _, _, a in batch], m, len(batch), device) for m in models]
        )
        seconds["predict"] += time.perf_counter() - tic
        tic = time.perf_counter()
        dims = [dimensionality(a) if settings.dimensionality else None for _, _, a in batch]
        seconds["dimensionality"] += time.perf_counter() - tic
        for row, frame in _rows(batch, tensors, dims, settings):
            writer.writerow(row)
            if settings.ranked_last(row["physical"]):
                continue
            key = tuple(-k for k in sort_key(row[settings.score_column], row["index"]))
            if len(top) < settings.top:
                heapq.heappush(top, (key, frame))
            elif key > top[0][0]:
                heapq.heapreplace(top, (key, frame))
        counts["predicted"] += len(batch)
        batch.clear()

    with atomic_file(shard_path(out, shard, n, ".csv"), force=True) as tmp_csv:
        with open(tmp_csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=settings.columns())
            writer.writeheader()
            batch = []
            entries = iter_structures(settings.structures, shard, n)
            desc = f"screening shard {shard}/{n}" if n > 1 else "screening"
            for index, source, atoms in tqdm(
                entries, desc=desc, unit="structure", disable=not progress, file=sys.stderr
            ):
                counts["read"] += 1
                if keep(atoms, source):
                    batch.append((index, source, atoms))
                if len(batch) == batch_size:
                    flush(batch, writer)
            if batch:
                flush(batch, writer)
        with atomic_file(shard_path(out, shard, n, ".extxyz"), force=True) as tmp_xyz:
            frames = [frame for _, frame in sorted(top, key=lambda item: item[0], reverse=True)]
            ase.io.write(tmp_xyz, frames, format="extxyz")
    seconds["total"] = time.perf_counter() - start
    report = {"shard": shard, "n_shards": n, **counts, "seconds": seconds, **keep.report}
    with atomic_file(report_path, force=True) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return True


def missing_shards(out, settings: Settings) -> List[int]:
    """The shards of ``out`` that have not finished."""
    n = settings.shards
    return [i for i in range(n) if not shard_path(out, i, n, ".json").is_file()]


def merge(out) -> Dict:
    """Combine the finished shards of ``out`` into the final outputs; returns the summary.

    Raises :class:`ShardsMissingError` naming the shards still to run.
    """
    from .report import write_outputs

    settings = read_settings(out)
    missing = missing_shards(out, settings)
    if missing:
        n = settings.shards
        raise ShardsMissingError(
            f"`{out}`: shard(s) {', '.join(f'{i}/{n}' for i in missing)} not finished; run them "
            f"(--shard i/{n}) before merging"
        )
    n = settings.shards
    reports = [json.loads(shard_path(out, i, n, ".json").read_text()) for i in range(n)]
    summary = {
        "read": sum(r["read"] for r in reports),
        "predicted": sum(r["predicted"] for r in reports),
        "seconds": {
            k: sum(r["seconds"][k] for r in reports) for k in ("total", "predict", "dimensionality")
        },
        **merge_reports(reports),
    }
    return write_outputs(out, settings, summary)
