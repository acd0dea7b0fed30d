"""Evaluating a trained model on files with reference tensors (``nequip-evaluate``): predictions,
metrics of every head, parity plots::

    from aniso_nequip.evaluation import evaluate

    metrics = evaluate("best.ckpt", ["datasets/mp_subset_test.extxyz.gz"], "eval/mp_test")
"""

import csv
import json
import os
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

import ase
import ase.io
import numpy as np
from nequip.data import AtomicDataDict
from nequip.data._key_registry import get_field_type

from . import plots
from ._keys import DIELECTRIC_IONIC_KEY
from .data.files import read_frames
from .data.matching import NAME_KEYS, crystal_id
from .data.symmetry import crystal_system
from .data.validation import (
    crystal_name,
    reduced_formula,
    reference_problem,
    reference_tensor,
    reference_value,
    structure_problem,
    structure_warnings,
)
from .domain import COLUMNS as DOMAIN_COLUMNS
from .domain import domain_metrics, metrics_note, resolve_reference
from .errors import InputError, not_a_file
from .inference import load_model, predict, split_failed, untrained_warnings
from .io import output_set
from .metrics import derived, metrics_table, tensor_metrics
from .optics import CSV_COLUMNS, STRUCTURE_COLUMNS, crystal_symmetry, csv_fields, principal_indices
from .optics import describe as describe_optics

PARITY_PLOTS = (("eps_poly", "eps_poly"), ("a_r", "anisotropy_ratio"), ("n", "refractive_indices"))
EVALUATION_FILES = (
    "predictions.extxyz",
    "predictions.csv",
    "metrics.json",
    "metrics.md",
    *(f"parity_{name}.png" for _, name in PARITY_PLOTS),
)
# the methods of reference tensors, by the words of their ``info["source"]``
METHOD_WORDS = (("pbesol", "PBEsol"), ("pbe", "PBE"), ("dfpt", "DFPT"))
_EPS = AtomicDataDict.DIELECTRIC_KEY
_IONIC = DIELECTRIC_IONIC_KEY
_BORN = AtomicDataDict.BORN_CHARGE_KEY


def _read_frames(paths: List[str]):
    frames, origin = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"data file `{path}` {not_a_file(path)}")
        if os.path.getsize(path) == 0:
            raise InputError(f"data file `{path}` contains no frames")
        these = read_frames(path)
        if len(these) == 0:
            raise InputError(f"data file `{path}` contains no frames")
        frames += these
        origin += [(path, i) for i in range(len(these))]
    return frames, origin


def _head_metrics(frames, outputs, systems):
    """Metrics of the heads beyond the electronic tensor, on the frames with usable references."""
    out = {}
    if _IONIC in outputs:
        refs = [reference_tensor(a, _IONIC) for a in frames]
        electronic = [reference_tensor(a) for a in frames]
        keep = [i for i, r in enumerate(refs) if r is not None and electronic[i] is not None]
        if keep:
            ionic_ref = np.stack([refs[i] for i in keep])
            ionic_pred = outputs[_IONIC][keep]
            kept_systems = [systems[i] for i in keep]
            out[_IONIC] = tensor_metrics(ionic_ref, ionic_pred, kept_systems)
            electronic_ref = np.stack([electronic[i] for i in keep])
            out["static"] = tensor_metrics(
                electronic_ref + ionic_ref, outputs[_EPS][keep] + ionic_pred, kept_systems
            )
    if _BORN in outputs:
        pairs = [
            (ref, z)
            for ref, z in zip((reference_tensor(a, _BORN) for a in frames), outputs[_BORN])
            if ref is not None
        ]
        if pairs:
            ref = np.concatenate([r for r, _ in pairs])
            pred = np.concatenate([p for _, p in pairs])
            iso = np.abs(np.trace(pred, axis1=1, axis2=2) - np.trace(ref, axis1=1, axis2=2)) / 3
            out[_BORN] = {
                "n_atoms": int(len(ref)),
                "component_mae": float(np.abs(pred - ref).mean()),
                "isotropic_mae": float(iso.mean()),
            }
    return out


def evaluation_metrics(
    frames: Sequence[ase.Atoms], outputs: Dict[str, np.ndarray], systems: Sequence[str]
) -> Dict:
    """Metrics of predictions against the references the frames carry.

    Args:
        frames: the evaluated crystals; a reference ``dielectric_tensor`` is a calculator result
            (or ``info`` entry), ``dielectric_ionic_tensor`` an ``info`` entry and
            ``born_effective_charges`` a calculator result
        outputs: predictions per field, one entry per frame (as
            :func:`~aniso_nequip.inference.predict` with ``field="all"`` returns them)
        systems: the crystal system of each frame

    Returns:
        :func:`~aniso_nequip.metrics.tensor_metrics` of the electronic tensor over the frames with
        a usable reference (``{"n": 0}`` without any) with ``n_without_reference`` and, when
        there are any, ``n_invalid_reference`` (references that
        :func:`~aniso_nequip.data.validation.tensor_problem` refuses: left out of every metric),
        and, where the model predicts them and references exist, ``dielectric_ionic_tensor`` and
        ``static`` (electronic + ionic) metrics and ``born_effective_charges`` component and
        isotropic-part MAEs
    """
    refs = [reference_tensor(a) for a in frames]
    has_ref = np.array([r is not None for r in refs], dtype=bool)
    if has_ref.any():
        reference = np.stack([r for r in refs if r is not None])
        kept_systems = [s for s, h in zip(systems, has_ref) if h]
        metrics = tensor_metrics(reference, outputs[_EPS][has_ref], kept_systems)
    else:
        metrics = {"n": 0}
    present = np.array([reference_value(a, _EPS) is not None for a in frames], dtype=bool)
    metrics["n_without_reference"] = int((~present).sum())
    if (present & ~has_ref).any():
        metrics["n_invalid_reference"] = int((present & ~has_ref).sum())
    metrics.update(_head_metrics(frames, outputs, systems))
    return metrics


def metrics_text(metrics: Dict) -> str:
    """Markdown tables of :func:`evaluation_metrics`, one per head."""
    text = metrics_table(metrics) if metrics["n"] else "No reference tensors: no metrics.\n"
    for head in (_IONIC, "static"):
        if head in metrics:
            text += f"\n{head}:\n\n" + metrics_table(metrics[head])
    if _BORN in metrics:
        born = metrics[_BORN]
        text += (
            f"\nborn_effective_charges ({born['n_atoms']} atoms): component MAE "
            f"{born['component_mae']:.4f}, isotropic-part MAE {born['isotropic_mae']:.4f}\n"
        )
    return text


def _listed(entries: List[Dict]) -> str:
    return "".join(
        f"  {e['file']} frame {e['frame']} ({e['id']}): {e['reason']}\n" for e in entries
    )


def _note(metrics: Dict) -> str:
    """What was skipped, left out of the metrics or predicted with a warning."""
    note = ""
    n_without = metrics["n_without_reference"]
    if n_without:
        note += (
            f"{n_without} frame(s) without a reference tensor got predictions but are left out "
            "of the metrics.\n"
        )
    if metrics.get("failed"):
        note += (
            f"{len(metrics['failed'])} failed prediction(s), left out of the predictions and "
            f"metrics:\n{_listed(metrics['failed'])}"
        )
    invalid = metrics.get("invalid_references")
    if invalid:
        note += (
            f"{len(invalid)} frame(s) with an unusable reference tensor got predictions but are "
            f"left out of the metrics:\n{_listed(invalid)}"
        )
    if metrics.get("skipped"):
        note += (
            f"{len(metrics['skipped'])} frame(s) skipped (not predicted):\n"
            f"{_listed(metrics['skipped'])}"
        )
    for warning in metrics.get("warnings", []):
        note += f"warning: {warning}\n"
    return note + metrics_note(metrics["domain"])


def _entry(origin, atoms, reason) -> Dict:
    return {"file": origin[0], "frame": origin[1], "id": crystal_name(atoms), "reason": reason}


def _checked(frames, origin, type_names):
    """``(frames, origin, skipped, invalid)``: the frames that can be predicted with their origin,
    the entries of those that cannot (:func:`~aniso_nequip.data.validation.structure_problem`) and
    of the predicted frames whose reference tensors are unusable."""
    kept, kept_origin, skipped, invalid = [], [], [], []
    for i, atoms in enumerate(frames):
        problem = structure_problem(atoms, type_names, bulk=False)
        if problem:
            skipped.append(_entry(origin[i], atoms, problem))
            continue
        kept.append(atoms)
        kept_origin.append(origin[i])
        problem = reference_problem(atoms)
        if problem:
            invalid.append(_entry(origin[i], atoms, problem))
    return kept, kept_origin, skipped, invalid


def _identifier(atoms, index):
    return crystal_id(atoms, NAME_KEYS) or str(index)


def _annotated(frames, outputs):
    """Copies of ``frames`` with each prediction as ``info``/``arrays`` ``<field>_pred``."""
    annotated = []
    for i, frame in enumerate(frames):
        atoms = frame.copy()
        atoms.calc = frame.calc
        for field, values in outputs.items():
            value = np.asarray(values[i])
            if get_field_type(field) == "node":
                atoms.arrays[f"{field}_pred"] = value.reshape(len(atoms), -1)
            else:
                atoms.info[f"{field}_pred"] = value.reshape(-1)
        annotated.append(atoms)
    return annotated


def reference_method(frames: Sequence[ase.Atoms]) -> Optional[str]:
    """The method of the frames' reference tensors for plot labels, e.g. ``"PBE, DFPT"`` from
    ``info["source"]`` ``mp-dfpt-pbe`` (sources joined by `` / ``); ``None`` when unknown."""
    methods = []
    for source in sorted({str(a.info["source"]) for a in frames if "source" in a.info}):
        words = set(source.lower().replace("_", "-").split("-"))
        found = [name for word, name in METHOD_WORDS if word in words]
        methods.append(", ".join(found) if found else source)
    return " / ".join(methods) or None


def _write_csv(path, frames, origin, systems, ref_d, pred_d, has_ref, optics, domain) -> None:
    """``predictions.csv``; ``optics``: ``(reference, predicted)`` optical descriptions of each
    frame (``None`` for a frame without a reference), ``domain`` their
    :class:`~aniso_nequip.domain.DomainScores`."""
    per_tensor = [c for c in CSV_COLUMNS if c not in STRUCTURE_COLUMNS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["file", "frame", "id", "formula", "crystal_system", "n_atoms"]
        for which in ("ref", "pred"):
            header += [f"eps_poly_{which}", f"a_r_{which}"]
            header += [f"eigenvalue{k}_{which}" for k in (1, 2, 3)]
        header += [*STRUCTURE_COLUMNS, *(f"{c}_{w}" for w in ("ref", "pred") for c in per_tensor)]
        writer.writerow(header + list(DOMAIN_COLUMNS))
        for i, atoms in enumerate(frames):
            row = [
                origin[i][0],
                origin[i][1],
                _identifier(atoms, i),
                reduced_formula(atoms),
                systems[i],
                len(atoms),
            ]
            for d, present in ((ref_d, has_ref[i]), (pred_d, True)):
                values = [d["eps_poly"][i], d["a_r"][i], *d["eigenvalues"][i]]
                row += [f"{v:.6f}" if present else "" for v in values]
            ref_fields, pred_fields = (csv_fields(d) if d else {} for d in optics[i])
            row += [pred_fields[c] for c in STRUCTURE_COLUMNS]
            row += [fields.get(c, "") for fields in (ref_fields, pred_fields) for c in per_tensor]
            writer.writerow(row + [*domain.row(i).values()])


def evaluate(
    model_path: Optional[str],
    data_paths: Sequence,
    out,
    batch_size: int = 32,
    device: str = "cpu",
    force: bool = False,
    quiet: bool = False,
    strict: bool = False,
    domain_reference=None,
) -> Dict:
    """Predict every frame of ``data_paths`` with a model and write, into the folder ``out``
    (atomically: all files or none), ``predictions.extxyz``, ``predictions.csv``,
    ``metrics.json``, ``metrics.md`` and the parity plots ``parity_eps_poly.png``,
    ``parity_anisotropy_ratio.png`` and ``parity_refractive_indices.png``
    (:func:`~aniso_nequip.plots.parity_plot`; the principal refractive indices of the optical
    descriptions, :func:`~aniso_nequip.optics.principal_indices`). ``predictions.csv`` carries the
    optical description (:func:`~aniso_nequip.optics.csv_fields`) of the reference and the
    predicted tensor of each frame.

    Frames that cannot be predicted (:func:`~aniso_nequip.data.validation.structure_problem`,
    elements the model does not know included) are skipped; frames whose reference tensors are
    unusable (:func:`~aniso_nequip.data.validation.tensor_problem`: e.g. asymmetric) are
    predicted but left out of the metrics. Both are listed by file, frame and id with the reason
    (``skipped`` and ``invalid_references`` in ``metrics.json``, and in ``metrics.md``), as are
    failed predictions (``failed``: :func:`~aniso_nequip.data.validation.prediction_problem`,
    left out of the predictions and metrics) and frames with elements the model never saw in
    training or unlike any of the bundled data (``warnings``; a cell of fragments in vacuum is
    evaluated against its own reference, with a warning).

    Args:
        model_path: checkpoint (``.ckpt``), package (``.nequip.zip``) or compiled model;
            ``None``: the ready model shipped with the package (:mod:`aniso_nequip.pretrained`)
        data_paths: extxyz(.gz) or HDF5 files
        out: output folder; a non-empty one is refused unless ``force``
        batch_size: structures per forward pass
        device: ``cpu``, ``cuda``, ...
        force: overwrite the files of a non-empty ``out``
        quiet: no progress bar and no printed tables
        strict: refuse (writing nothing) when a frame is skipped or has an unusable reference
        domain_reference: the model's training crystals for the domain scores
            (:func:`~aniso_nequip.domain.resolve_reference`; default: the ready model's own)

    Returns:
        :func:`evaluation_metrics` with the ``model`` and ``data`` paths, the lists above and
        ``domain`` (:func:`~aniso_nequip.domain.domain_metrics`: how many predictions are out of
        the applicability domain and how the score ranks the errors)

    Raises :class:`~aniso_nequip.errors.InputError` for a missing, empty or unreadable data file,
    no frame that can be predicted, a skipped frame or unusable reference with ``strict`` and a
    model that cannot be loaded, and before any of that for an ``out`` that exists
    (:class:`~aniso_nequip.io.OutputExistsError`), that another process is writing
    (:class:`~aniso_nequip.io.OutputInUseError`) or that cannot be written. An error or Ctrl-C
    leaves a previous ``out`` as it was.
    """
    with output_set(out, EVALUATION_FILES, force=force, whole_folder=True) as stage:
        metrics, text = _evaluate(
            model_path, data_paths, stage, batch_size, device, quiet, strict, domain_reference
        )
    if not quiet:
        print(text, end="")
        print(f"wrote {pathlib.Path(out)}/")
    return metrics


def _evaluate(
    model_path, data_paths, stage, batch_size, device, quiet, strict, domain_reference=None
) -> Tuple[Dict, str]:
    """:func:`evaluate`'s work, writing into the folder ``stage``; returns the metrics and the
    printed tables."""
    frames, origin = _read_frames(data_paths)
    model = load_model(model_path, device)  # None: the ready model
    frames, origin, skipped, invalid = _checked(frames, origin, model.type_names)
    if not frames:
        raise InputError(f"no frame can be evaluated:\n{_listed(skipped)}".rstrip())
    if strict and (skipped or invalid):
        raise InputError(
            f"{len(skipped)} frame(s) cannot be predicted and {len(invalid)} have an unusable "
            f"reference tensor (--strict: nothing written):\n{_listed(skipped + invalid)}".rstrip()
        )

    reference = resolve_reference(model_path, domain_reference, batch_size, device)
    outputs, domain = predict(
        frames, model, batch_size, device, "all", not quiet, checked=True, domain=reference
    )
    kept, failed = split_failed(outputs[_EPS])
    failed = [_entry(origin[i], frames[i], problem) for i, problem in failed]
    if strict and failed:
        raise InputError(
            f"{len(failed)} prediction(s) failed (--strict: nothing written):\n"
            f"{_listed(failed)}".rstrip()
        )
    if not kept:
        raise InputError(f"every prediction failed:\n{_listed(failed)}".rstrip())
    frames, origin, domain = [frames[i] for i in kept], [origin[i] for i in kept], domain.take(kept)
    outputs = {f: [values[i] for i in kept] for f, values in outputs.items()}
    outputs = {f: np.asarray(v) if get_field_type(f) == "graph" else v for f, v in outputs.items()}
    refs = [reference_tensor(a) for a in frames]
    has_ref = np.array([r is not None for r in refs], dtype=bool)
    systems = [crystal_system(a) for a in frames]
    ref_d = derived(np.stack([r if r is not None else np.eye(3) for r in refs]))
    pred_d = derived(outputs[_EPS])
    metrics = evaluation_metrics(frames, outputs, systems)
    metrics["model"] = str(model_path) if model_path is not None else _ready_model_name()
    metrics["data"] = [str(p) for p in data_paths]
    metrics["skipped"] = skipped
    metrics["invalid_references"] = invalid
    names = [f"{path} frame {i} ({crystal_name(a)})" for (path, i), a in zip(origin, frames)]
    metrics["failed"] = failed
    metrics["warnings"] = untrained_warnings(frames, model, names)
    metrics["warnings"] += structure_warnings(frames, names, bulk=False)
    errors = {k: np.where(has_ref, abs(pred_d[k] - ref_d[k]), np.nan) for k in ("eps_poly", "a_r")}
    ids = [_identifier(a, i) for i, a in enumerate(frames)]
    metrics["domain"] = domain_metrics(domain, errors, ids)
    text, note = metrics_text(metrics), _note(metrics)

    annotated = _annotated(frames, outputs)
    ase.io.write(stage / "predictions.extxyz", annotated, format="extxyz")
    symmetries = [crystal_symmetry(a) for a in frames]
    optics = [
        (None if ref is None else describe_optics(ref, sym), describe_optics(pred, sym))
        for ref, pred, sym in zip(refs, outputs[_EPS], symmetries)
    ]
    _write_csv(
        stage / "predictions.csv", frames, origin, systems, ref_d, pred_d, has_ref, optics, domain
    )
    with open(stage / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2)
    report = f"# nequip-evaluate\n\nmodel: `{metrics['model']}`\n\n{text}\n{note}"
    (stage / "metrics.md").write_text(report)
    if has_ref.any():
        method = reference_method(frames)
        ref_systems = [s for s, h in zip(systems, has_ref) if h]
        pairs = [
            ((principal_indices(r), principal_indices(p)), s)
            for (r, p), s in zip(optics, systems)
            if r
        ]
        values = {
            key: (ref_d[key][has_ref], pred_d[key][has_ref], ref_systems)
            for key in ("eps_poly", "a_r")
        }
        values["n"] = (
            np.concatenate([r for (r, _), _ in pairs]),
            np.concatenate([p for (_, p), _ in pairs]),
            [s for (r, _), s in pairs for _ in r],
        )
        for key, name in PARITY_PLOTS:
            reference, predicted, kept = values[key]
            plots.parity_plot(
                reference, predicted, key, stage / f"parity_{name}.png", systems=kept, method=method
            )
    return metrics, text + note


def _ready_model_name() -> str:
    from .pretrained import model_card

    return "ready model (" + ", ".join(model_card()["files"]) + ")"
