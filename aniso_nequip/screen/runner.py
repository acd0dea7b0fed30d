"""Predicting a pool shard by shard, resumably, and merging the shards (the files are those of
:mod:`.layout`); :func:`screen` runs one shard and merges when all are done, as
``aniso-nequip screen`` does, and :func:`merge` combines finished shards into the final outputs
(:mod:`aniso_nequip.screen.report`).
"""

import csv
import dataclasses
import heapq
import json
import os
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
from ..data.validation import prediction_problem, reduced_formula
from ..domain import (
    REFERENCE_SUFFIX,
    DomainReference,
    capture_features,
    resolve_reference,
    scores_for,
)
from ..errors import InputError
from ..inference import (
    as_ensemble,
    common_type_names,
    ensemble_mean,
    ensemble_spread,
    load_model,
    predict_members,
    training_elements,
)
from ..io import OutputExistsError, atomic_file, check_writable, output_lock
from ..metrics import derived
from ..optics import csv_fields, describe
from .duplicates import fingerprint
from .filters import PoolFilter, label, merge_reports
from .layout import (
    ID_LIST_SUFFIXES,
    OUTPUTS,
    PHYSICAL_MIN_EIGENVALUE,
    VOIGT,
    VOIGT_NAMES,
    Settings,
    chunk_path,
    frame_key,
    frames_of,
    read_settings,
    reference_path,
    settings_path,
    shard_path,
    sort_key,
    sorted_rows,
)
from .report import peak_rss_mb, write_outputs
from .sources import count_structures, iter_structures, shard_size

# a batch also ends at this many atoms per structure on average, so that the peak memory (set
# by the largest batch) does not depend on how many large crystals a pool holds
BATCH_ATOMS = 24


class ShardsMissingError(InputError):
    """:func:`merge` was asked for before every shard finished."""


def prepare(out, settings: Settings, force: bool = False) -> bool:
    """Claim ``out`` for a run with ``settings``: a new or empty folder, or one holding shards of
    the same settings (resumed). Other content is refused unless ``force``, which discards the
    shards and outputs of a run with different settings, and so is a folder that cannot be
    written. ``True`` when it wrote the settings (a new claim), ``False`` when it resumes."""
    out = pathlib.Path(out)
    check_writable(out)
    path = settings_path(out)
    if path.is_file():
        old = json.loads(path.read_text())
        if old == settings.to_dict():
            return False
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
    return True


def release(
    out, settings: Settings, new_folders: Sequence[pathlib.Path] = (), keep_chunks: bool = False
) -> None:
    """Undo a :func:`prepare` claim of ``out`` on which no shard has finished: remove the
    finished chunks and the settings, then the folders among ``new_folders`` (those the claim
    created) left empty, so that a run with other (corrected) settings can claim it again.
    ``keep_chunks`` (an interrupted run): leave a claim with finished chunks to be resumed."""
    if len(missing_shards(out, settings)) < settings.shards:
        return
    chunks = [shard_path(out, i, settings.shards, "") for i in range(settings.shards)]
    if keep_chunks and any(folder.is_dir() and any(folder.iterdir()) for folder in chunks):
        return
    for folder in chunks:
        shutil.rmtree(folder, ignore_errors=True)
    settings_path(out).unlink(missing_ok=True)
    reference_path(out).unlink(missing_ok=True)
    for folder in sorted(new_folders, key=lambda f: len(f.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def check_options(settings: Settings, batch_size: int) -> None:
    """Raise :class:`~aniso_nequip.errors.InputError` for a ranking or batch option out of
    range: ``top`` < 0, ``k`` < 0, ``batch_size`` < 1, ``max_sites`` < 1, ``shards`` < 1,
    ``chunk_size`` < 1."""
    checks = {
        "chunk_size": (settings.chunk_size, 1),
        "top": (settings.top, 0),
        "k": (settings.k, 0),
        "batch_size": (batch_size, 1),
        "max_sites": (settings.thresholds.max_sites, 1),
        "shards": (settings.shards, 1),
    }
    for name, (value, low) in checks.items():
        if value is not None and not value >= low:
            raise InputError(f"`{name}` must be >= {low}, got {value}")


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
        frames += read_frames(path)
    return StructureIndex(frames, ids)


def _score(mean: float, std: float, settings: Settings) -> float:
    sign = {"mean": 0.0, "upper": 1.0, "lower": -1.0}[settings.rank_by]
    return mean + sign * settings.k * std


def _rows(entries, tensors: np.ndarray, settings: Settings, domain):
    """CSV rows and annotated frames of a batch; ``tensors`` is ``(n_models, B, 3, 3)``,
    ``domain`` the batch's :class:`~aniso_nequip.domain.DomainScores`. The dimensionality is
    left empty: the merge classifies the top crystals only (:mod:`.report`)."""
    mean = ensemble_mean(tensors)
    per_model = [derived(t) for t in tensors]
    eps_poly = np.stack([d["eps_poly"] for d in per_model])
    a_r = np.stack([d["a_r"] for d in per_model])
    eigenvalues, axes = np.linalg.eigh(0.5 * (mean + mean.transpose(0, 2, 1)))
    for b, (index, source, atoms) in enumerate(entries):
        if settings.ensemble:
            stats = {
                "a_r_mean": ensemble_mean(a_r[:, b]),
                "a_r_std": ensemble_spread(a_r[:, b]),
                "eps_poly_mean": ensemble_mean(eps_poly[:, b]),
                "eps_poly_std": ensemble_spread(eps_poly[:, b]),
            }
            stats[settings.score_column] = _score(stats["a_r_mean"], stats["a_r_std"], settings)
        else:
            stats = {"eps_poly": eps_poly[0, b], "a_r": a_r[0, b]}
        row = {
            "id": label(atoms, source),
            "formula": reduced_formula(atoms),
            **{k: float(v) for k, v in stats.items()},
            "physical": bool(eigenvalues[b, 0] >= PHYSICAL_MIN_EIGENVALUE),
            "failed": prediction_problem(mean[b]) or "",
            **domain.row(b),
            "dimensionality": None,
            "crystal_system": crystal_system(atoms),
            **csv_fields(describe(mean[b], atoms)),
            "n_sites": len(atoms),
            "energy_above_hull": atoms.info.get("energy_above_hull"),
            "band_gap": atoms.info.get("band_gap"),
            "source": source,
            "index": index,
            "fingerprint": fingerprint(atoms),
            **{f"eps_{c}": float(mean[b][ij]) for c, ij in zip(VOIGT_NAMES, VOIGT)},
            **{f"eig_{i + 1}": float(eigenvalues[b, i]) for i in range(3)},
            **{
                f"axis_{i + 1}_{c}": float(axes[b, j, i])
                for i in range(3)
                for j, c in enumerate("xyz")
            },
        }
        frame = atoms.copy()
        frame.info.update({k: v for k, v in row.items() if v not in (None, "") and k != "id"})
        frame.info["eigenvalues"] = eigenvalues[b]
        frame.info["principal_axes"] = axes[b].T.reshape(9)  # row i: axis of eigenvalue i
        frame.calc = SinglePointCalculator(frame, dielectric_tensor=mean[b].reshape(9))
        yield row, frame


def invalid_structures(settings: Settings, shard: int = 0) -> Dict[str, str]:
    """``{name: problem}`` for the structures of shard ``shard`` that cannot be screened (as
    :func:`run_shard` skips them), read without predicting anything."""
    known = _known_elements(settings.models)
    keep = PoolFilter(settings.thresholds)
    for _, source, atoms, problem in iter_structures(
        settings.structures, shard, settings.shards, known
    ):
        if problem:
            keep.reject(atoms, source, problem)
    return keep.report["invalid"]


def domain_reference(out, settings: Settings, batch_size: int = 32, device: str = "cpu"):
    """The run's domain reference (:func:`~aniso_nequip.domain.resolve_reference` of
    ``settings.domain_reference``), built once per run: one built from a training-structure file
    is saved as :func:`~.layout.reference_path` by the first shard that needs it (shards starting
    at once wait for it) and read from there by every shard."""
    given = settings.domain_reference
    if given is None or given.endswith(REFERENCE_SUFFIX):
        return resolve_reference(settings.models, given, batch_size, device)
    path = reference_path(out)
    with output_lock(path, wait=True):
        if not path.is_file():
            built = resolve_reference(settings.models, given, batch_size, device)
            with atomic_file(path, force=True) as tmp:
                built.save(tmp)
    return DomainReference.load(path)


def _known_elements(models) -> List[str]:
    """The elements every model file knows (their ``type_names``)."""
    return common_type_names([load_model(path) for path in models])


def run_shard(
    out,
    settings: Settings,
    shard: int = 0,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> bool:
    """Screen shard ``shard`` of ``settings.shards`` into ``out`` (after :func:`prepare`),
    chunk by chunk, resuming after the last finished chunk; ``False`` when the shard had
    finished before.

    Structures that cannot be screened are skipped and listed (``invalid`` in the report); a
    shard in which none can be is refused (:class:`~aniso_nequip.errors.InputError`) before its
    results are written. Raises :class:`~aniso_nequip.io.OutputInUseError` when another process
    is running the shard.
    """
    with output_lock(shard_path(out, shard, settings.shards, "")):
        return _run_shard(out, settings, shard, device, batch_size, progress)


class _Best:
    """The best ``size`` frames in ranking order, one per fingerprint (the first offered)."""

    def __init__(self, size: int):
        self.size = size
        self.heap: list = []  # min-heap of (negated sort key, fingerprint, frame)
        self.fingerprints = set()

    def offer(self, key, frame: ase.Atoms) -> None:
        fp = frame.info["fingerprint"]
        if self.size == 0 or fp in self.fingerprints:
            return
        item = (tuple(-k for k in key), fp, frame)
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, item)
        elif item[0] > self.heap[0][0]:
            self.fingerprints.discard(heapq.heapreplace(self.heap, item)[1])
        else:
            return
        self.fingerprints.add(fp)

    def frames(self) -> List[ase.Atoms]:
        return [frame for *_, frame in sorted(self.heap, key=lambda item: item[0], reverse=True)]


def _write_frames(path: pathlib.Path, frames: List[ase.Atoms]) -> None:
    """Write ``frames`` atomically to ``path``; nothing when there is none."""
    if frames:
        with atomic_file(path, force=True) as tmp:
            ase.io.write(tmp, frames, format="extxyz")


class _Chunk:
    """The results of one chunk of a shard while it runs."""

    def __init__(self, number: int, keep: PoolFilter, top: int):
        self.number, self.keep = number, keep
        self.rows: List[Dict] = []
        self.best = _Best(top)
        self.read = 0
        self.batch: list = []
        self.seconds = {"predict": 0.0, "dimensionality": 0.0}
        self.start = time.perf_counter()

    def batch_atoms(self) -> int:
        return sum(len(atoms) for _, _, atoms in self.batch)

    def write(self, out, settings: Settings, shard: int) -> None:
        """The chunk's CSV (in ranking order) and candidates, then its JSON (it is finished)."""
        n = settings.shards
        score = settings.score_column
        self.rows.sort(
            key=lambda r: sort_key(
                r[score],
                r["index"],
                settings.ranked_last(r["physical"]),
                bool(r["failed"]),
                r["out_of_domain"] is True,
            )
        )
        with atomic_file(chunk_path(out, shard, n, self.number, ".csv"), force=True) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=settings.columns())
                writer.writeheader()
                writer.writerows(self.rows)
        _write_frames(chunk_path(out, shard, n, self.number, ".extxyz"), self.best.frames())
        report = {
            "read": self.read,
            "predicted": len(self.rows),
            "seconds": {**self.seconds, "total": time.perf_counter() - self.start},
            "peak_rss_mb": peak_rss_mb(),
            **self.keep.report,
        }
        with atomic_file(chunk_path(out, shard, n, self.number, ".json"), force=True) as tmp:
            tmp.write_text(json.dumps(report))


def finished_chunks(out, settings: Settings, shard: int) -> int:
    """How many chunks of the shard have finished (they finish in order)."""
    chunk = 0
    while chunk_path(out, shard, settings.shards, chunk, ".json").is_file():
        chunk += 1
    return chunk


def _run_shard(out, settings: Settings, shard: int, device: str, batch_size: int, progress: bool):
    n = settings.shards
    report_path = shard_path(out, shard, n, ".json")
    if report_path.is_file():
        shutil.rmtree(shard_path(out, shard, n, ""), ignore_errors=True)  # a kill's leftovers
        return False
    from tqdm import tqdm

    reference = domain_reference(out, settings, batch_size, device)
    model = as_ensemble(settings.models, device)
    known = model.type_names
    exclude = exclusion_index(settings.exclude)
    trained = training_elements(model)
    done = finished_chunks(out, settings, shard)
    size = settings.chunk_size

    def new_chunk(number):
        return _Chunk(number, PoolFilter(settings.thresholds, exclude, trained), settings.top)

    def flush(chunk):
        batch = chunk.batch
        if not batch:
            return
        tic = time.perf_counter()
        structures = [a for _, _, a in batch]  # checked by iter_structures, reported by keep
        with capture_features(model) as features:
            tensors = predict_members(structures, model, len(batch), device, checked=True)
        domain = scores_for(reference, features, structures)
        chunk.seconds["predict"] += time.perf_counter() - tic
        for row, frame in _rows(batch, tensors, settings, domain):
            chunk.rows.append(row)
            if not (row["failed"] or settings.ranked_last(row["physical"])):
                chunk.best.offer(frame_key(frame, settings), frame)
        batch.clear()

    chunk = new_chunk(done)
    # the shard's structures from the first of chunk `done` (index shard + position * n)
    entries = iter_structures(settings.structures, shard, n, known, start=shard + done * size * n)
    total = shard_size(count_structures(settings.structures), shard, n)
    desc = f"screening shard {shard}/{n}" if n > 1 else "screening"
    bar = tqdm(
        entries,
        desc=desc,
        total=total,
        initial=done * size,
        unit="structure",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    for index, source, atoms, problem in bar:
        chunk.read += 1
        if problem:
            chunk.keep.reject(atoms, source, problem)
        elif chunk.keep(atoms, source):
            chunk.batch.append((index, source, atoms))
        if len(chunk.batch) == batch_size or chunk.batch_atoms() >= batch_size * BATCH_ATOMS:
            flush(chunk)
        if chunk.read == size:
            flush(chunk)
            chunk.write(out, settings, shard)
            chunk = new_chunk(chunk.number + 1)
    bar.close()
    if chunk.read:
        flush(chunk)
        chunk.write(out, settings, shard)
        chunk = new_chunk(chunk.number + 1)
    _finish_shard(out, settings, shard, chunk.number)
    return True


def _finish_shard(out, settings: Settings, shard: int, n_chunks: int) -> None:
    """Combine the shard's ``n_chunks`` finished chunks into its files (the JSON last) and
    remove them; refuse (:class:`~aniso_nequip.errors.InputError`) a shard in which no structure
    can be screened."""
    n = settings.shards
    reports = [
        json.loads(chunk_path(out, shard, n, c, ".json").read_text()) for c in range(n_chunks)
    ]
    report = {
        "shard": shard,
        "n_shards": n,
        "read": sum(r["read"] for r in reports),
        "predicted": sum(r["predicted"] for r in reports),
        "seconds": {
            k: sum(r["seconds"][k] for r in reports) for k in ("total", "predict", "dimensionality")
        },
        "peak_rss_mb": max([r["peak_rss_mb"] for r in reports], default=peak_rss_mb()),
        **merge_reports(reports),
    }
    invalid = report["invalid"]
    if invalid and len(invalid) == report["read"]:
        listed = "\n".join(f"  {name}: {problem}" for name, problem in invalid.items())
        raise InputError(f"shard {shard}/{n}: no structure can be screened:\n{listed}")
    with atomic_file(shard_path(out, shard, n, ".csv"), force=True) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=settings.columns())
            writer.writeheader()
            chunks = [chunk_path(out, shard, n, c, ".csv") for c in range(n_chunks)]
            writer.writerows(sorted_rows(chunks, settings))
    best = _Best(settings.top)
    for c in range(n_chunks):
        for frame in frames_of(chunk_path(out, shard, n, c, ".extxyz")):
            best.offer(frame_key(frame, settings), frame)
    _write_frames(shard_path(out, shard, n, ".extxyz"), best.frames())
    with atomic_file(shard_path(out, shard, n, ".json"), force=True) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    shutil.rmtree(shard_path(out, shard, n, ""), ignore_errors=True)


def missing_shards(out, settings: Settings) -> List[int]:
    """The shards of ``out`` that have not finished."""
    n = settings.shards
    return [i for i in range(n) if not shard_path(out, i, n, ".json").is_file()]


def merge(out) -> Dict:
    """Combine the finished shards of ``out`` into the final outputs; returns the summary.

    Raises :class:`ShardsMissingError` naming the shards still to run.
    """
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
        "peak_rss_mb": max(r["peak_rss_mb"] for r in reports),
        **merge_reports(reports),
    }
    return write_outputs(out, settings, summary)


@dataclasses.dataclass
class ScreenResult:
    """What :func:`screen` did.

    Args:
        ran: ``False`` when the shard had finished before (and was skipped)
        missing: shards still unfinished, so not merged; ``None`` when merging was not asked for
        summary: the merged summary (:func:`merge`), ``None`` when not merged
    """

    ran: bool
    missing: Optional[List[int]] = None
    summary: Optional[Dict] = None


def screen(
    out,
    settings: Settings,
    shard: int = 0,
    device: Optional[str] = None,
    batch_size: int = 32,
    progress: bool = True,
    force: bool = False,
    merge_when_done: bool = False,
    strict: bool = False,
) -> ScreenResult:
    """Screen shard ``shard`` of ``settings.shards`` into ``out`` and, for an unsharded run or
    with ``merge_when_done``, merge once every shard has finished.

    Args:
        out: output folder (:func:`prepare`); a repeated run resumes
        settings: the run's settings
        shard: the shard to run
        device: ``cpu``, ``cuda``, ... (default: ``cuda`` when available)
        batch_size: structures per forward pass (a batch also ends at ``BATCH_ATOMS`` atoms
            per structure on average: memory)
        progress: show a progress bar
        force: discard the shards of a run with other settings
        merge_when_done: merge a sharded run when its last shard has finished
        strict: refuse, before writing anything, when a structure of the shard cannot be
            screened (by default it is skipped and listed in the summary)

    Raises :class:`~aniso_nequip.errors.InputError` for an option out of range
    (:func:`check_options`), a missing model, structure or exclusion file, an unreadable input,
    a shard without any structure that can be screened, a structure that cannot be with
    ``strict``, and an output folder holding something else. A new run that fails before its
    shard has finished leaves ``out`` as it found it (:func:`release`), so the corrected run can
    start; an interrupted one (Ctrl-C, a kill) keeps its finished chunks, and the same call
    resumes after them.
    """
    check_options(settings, batch_size)
    inputs = settings.models + settings.structures + settings.exclude
    for path in inputs + (settings.training_set or []):
        if not os.path.exists(path):
            raise InputError(f"`{path}` does not exist")
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if strict:
        invalid = invalid_structures(settings, shard)
        if invalid:
            listed = "\n".join(f"  {name}: {problem}" for name, problem in invalid.items())
            raise InputError(
                f"{len(invalid)} structure(s) cannot be screened (--strict: nothing written):\n"
                f"{listed}"
            )
    out = pathlib.Path(out)
    check_writable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out, wait=True):  # shards starting at once (a job array) claim in turn
        new_folders = [f for f in (out, settings_path(out).parent) if not f.exists()]
        claimed = prepare(out, settings, force=force)
    try:
        ran = run_shard(out, settings, shard, device, batch_size, progress)
    except BaseException as err:
        if claimed:  # an interruption keeps finished chunks for the resumed run
            release(out, settings, new_folders, keep_chunks=not isinstance(err, Exception))
        raise
    if settings.shards > 1 and not merge_when_done:
        return ScreenResult(ran)
    missing = missing_shards(out, settings)
    return ScreenResult(ran, missing, None if missing else merge(out))
