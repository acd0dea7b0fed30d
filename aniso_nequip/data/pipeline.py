"""Materials Project documents -> a cleaned, split dataset: convert, clean, split, write, report.

:func:`build_dataset` is what ``aniso-nequip data convert`` and ``data mp`` run::

    from aniso_nequip.data.mp import read_documents
    from aniso_nequip.data.pipeline import build_dataset

    report = build_dataset(read_documents("docs.json.gz"), "datasets/mp.extxyz", stratify=True)
"""

import pathlib
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import InputError
from ..io import full_suffix, output_set, write_json
from .cleaning import clean
from .files import write_frames
from .matching import frame_label
from .mp import convert_documents
from .splits import SPLITS, split_frames
from .symmetry import FRAME_TOLERANCE

SKIPPED_LISTED = 20  # malformed documents listed by id in the summary (all are in the report)
REMOVED_LISTED = 8  # ids listed per cleaning rule in the summary


def dataset_paths(out, split: bool = True) -> Dict[str, pathlib.Path]:
    """The files :func:`build_dataset` writes for ``out``: ``all`` (``out`` itself), ``report``
    (``<stem>_report.json``) and, with ``split``, ``train``/``val``/``test``
    (``<stem>_<split><suffix>``)."""
    out = pathlib.Path(out)
    suffix = full_suffix(out)
    stem = out.name[: -len(suffix)] if suffix else out.name
    paths = {"all": out, "report": out.with_name(f"{stem}_report.json")}
    if split:
        paths.update({s: out.with_name(f"{stem}_{s}{suffix}") for s in SPLITS})
    return paths


def build_dataset(
    docs: Union[List, Callable[[], List]],
    out,
    split: Optional[Sequence[float]] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: bool = False,
    frame_tolerance: float = FRAME_TOLERANCE,
    keep_frame_mismatch: bool = False,
    min_diagonal: Optional[float] = 1.0,
    max_eps_poly: Optional[float] = 15.0,
    drop_duplicates: bool = True,
    force: bool = False,
    strict: bool = False,
) -> Dict:
    """Convert ``docs`` (:func:`~aniso_nequip.data.mp.convert_documents`), clean them
    (:func:`~aniso_nequip.data.cleaning.clean`), split them and write the files of
    :func:`dataset_paths`.

    Args:
        docs: Materials Project dielectric documents (dicts or emmet-core documents), or a
            function returning them (a download), called once the outputs are claimed
        out: file of all kept crystals (``.extxyz[.gz]``, or ``.h5`` for HDF5)
        split: train/val/test fractions, or ``None`` to write no splits
        seed: split seed
        stratify: stratify the split by crystal system
        frame_tolerance: largest point-group deviation of a tensor, relative to its largest
            component; entries above it are reported as ``frame_check_failed``
        keep_frame_mismatch: keep those entries all the same
        min_diagonal: drop tensors with a smaller diagonal element (``None``: keep)
        max_eps_poly: drop tensors with a larger mean eigenvalue (``None``: keep)
        drop_duplicates: drop repeated material ids and ``StructureMatcher`` duplicates
        force: replace the existing outputs (all of them: old splits that a run without
            ``split`` does not write are removed)
        strict: refuse to write anything when a document cannot be converted

    Returns:
        the report written to ``<stem>_report.json``: documents read, malformed ones skipped
        (``{material_id: problem}``), frame-check failures, what each cleaning rule removed and
        the split sizes

    The files are written together or not at all (:func:`~aniso_nequip.io.output_set`): an
    error or Ctrl-C leaves the previous ones whole.

    Raises, before any work, :class:`~aniso_nequip.io.OutputExistsError` when an output exists
    and not ``force``, :class:`~aniso_nequip.io.OutputInUseError` when another process is
    writing them and :class:`~aniso_nequip.errors.InputError` when they cannot be written; then
    :class:`~aniso_nequip.errors.InputError` when no crystal is left or, with ``strict``, when a
    document was skipped (listing each with its problem).
    """
    paths = dataset_paths(out)
    folder, members = paths["all"].parent, [p.name for p in paths.values()]
    with output_set(folder, members, force=force, key=paths["all"]) as stage:
        docs = docs() if callable(docs) else docs
        outputs, report = _clean_and_split(
            docs,
            split,
            seed,
            stratify,
            frame_tolerance,
            keep_frame_mismatch,
            min_diagonal,
            max_eps_poly,
            drop_duplicates,
            strict,
        )
        for name, frames_out in outputs.items():
            write_frames(frames_out, stage / paths[name].name)
        write_json(report, stage / paths["report"].name)
    return report


def _clean_and_split(
    docs,
    split,
    seed,
    stratify,
    frame_tolerance,
    keep_frame_mismatch,
    min_diagonal,
    max_eps_poly,
    drop_duplicates,
    strict,
) -> Tuple[Dict[str, List], Dict]:
    """The frames of each output of :func:`build_dataset` (``all`` and the splits) and its
    report; the arguments are those of :func:`build_dataset`."""
    frames, skipped = convert_documents(_progress(docs, "converting"))
    if strict and skipped:
        listed = "\n".join(
            f"  {material_id}: {problem}" for material_id, problem in skipped.items()
        )
        raise InputError(
            f"{len(skipped)} of {len(docs)} document(s) cannot be converted (--strict: nothing "
            f"written):\n{listed}"
        )
    kept, report = clean(
        frames,
        frame_tolerance=None if keep_frame_mismatch else frame_tolerance,
        min_diagonal=min_diagonal,
        max_eps_poly=max_eps_poly,
        drop_duplicate_ids=drop_duplicates,
        drop_duplicate_structures=drop_duplicates,
    )
    flagged = sorted(
        (frame_label(a, i), round(float(a.info["frame_deviation"]), 4))
        for i, a in enumerate(frames)
        if a.info["frame_deviation"] > frame_tolerance
    )
    report = {"documents": len(docs), "skipped": skipped, "frame_check_failed": flagged, **report}
    if not kept:
        raise InputError(f"no crystal left after conversion and cleaning: {summary(report)}")
    outputs = {"all": kept}
    if split is not None:
        stratify_by = "crystal_system" if stratify else None
        outputs.update(split_frames(kept, split, seed=seed, stratify_by=stratify_by))
        report["split"] = {
            "fractions": list(split),
            "seed": seed,
            "stratify": stratify,
            **{s: len(outputs[s]) for s in SPLITS},
        }
    return outputs, report


def summary(report: Dict) -> str:
    """A few lines on a :func:`build_dataset` report: skipped documents, what each cleaning rule
    removed, the split sizes."""
    skipped = report["skipped"]
    lines = [f"{report['documents']} documents, {len(skipped)} skipped as malformed"]
    for material_id, problem in list(skipped.items())[:SKIPPED_LISTED]:
        lines.append(f"  skipped {material_id}: {problem}")
    if len(skipped) > SKIPPED_LISTED:
        lines.append(f"  ... and {len(skipped) - SKIPPED_LISTED} more (see the report file)")
    if "removed_counts" in report:
        lines.append(f"cleaning: {report['input']} converted -> {report['kept']} kept")
        for rule, count in report["removed_counts"].items():
            ids = report["removed"][rule]
            shown = ", ".join(ids[:REMOVED_LISTED]) + (" ..." if len(ids) > REMOVED_LISTED else "")
            lines.append(f"  {rule:>19}: {count} removed" + (f" ({shown})" if ids else ""))
    if report.get("split"):
        s = report["split"]
        lines.append(
            f"split (seed {s['seed']}): train {s['train']}, val {s['val']}, test {s['test']}"
        )
    return "\n".join(lines)


def _progress(items, desc: str) -> list:
    from tqdm import tqdm

    return list(tqdm(items, desc=desc, unit="doc", disable=not sys.stderr.isatty()))
