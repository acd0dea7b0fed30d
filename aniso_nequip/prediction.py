"""Dielectric tensors of structure files (``aniso-nequip predict``): read, predict, report.

    from aniso_nequip.prediction import predict_files, prediction_table, write_predictions
    result = predict_files(["examples/"])          # the shipped ready model by default
    print(prediction_table(result))
    write_predictions(result, "predictions/")       # predictions.csv + predictions.extxyz

``aniso-nequip predict`` is :func:`predict_and_write`: it claims its output folder before loading
the models (:func:`~aniso_nequip.io.output_set`) and writes with :func:`write_prediction_files`.

Inputs are CIF, POSCAR/CONTCAR (``*.vasp``) and extxyz (``.gz`` too) files, folders of them and
glob patterns. A file or structure that cannot be used (unreadable, or refused by
:func:`~aniso_nequip.data.validation.structure_problem`: no atoms, no periodic 3D cell,
overlapping atoms, disordered sites, an element the model does not know, ...) is skipped and
reported with its reason; the others are predicted. Crystals with elements the model never saw
in training, or unlike any of the bundled data (:func:`~aniso_nequip.data.validation.
structure_warning`: atoms unusually close, a wide empty gap), are predicted with a warning. A
failed prediction (:func:`~aniso_nequip.data.validation.prediction_problem`: non-finite, or
eigenvalues no material has) is reported with its reason and left out of the results.
"""

import contextlib
import csv
import dataclasses
import functools
import glob
import pathlib
from typing import List, Optional, Sequence, Tuple

import ase
import ase.io
import numpy as np

from .data.files import structure_file_problem
from .data.symmetry import crystal_system
from .data.validation import reduced_formula, structure_problem, structure_warnings
from .domain import COLUMNS as DOMAIN_COLUMNS
from .domain import DomainScores, capture_features, resolve_reference, scores_for
from .errors import InputError
from .inference import (
    as_ensemble,
    ensemble_mean,
    ensemble_spread,
    predict_members,
    split_failed,
    untrained_warnings,
)
from .io import output_set
from .metrics import derived
from .optics import CSV_COLUMNS, OpticalDescription, csv_fields, describe_all

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz", ".extxyz.gz", ".xyz.gz")
POSCAR_NAMES = ("POSCAR", "CONTCAR")
PREDICTION_FILES = ("predictions.csv", "predictions.extxyz")


@dataclasses.dataclass
class Predictions:
    """What :func:`predict_files` found: the predicted structures with their sources, each
    ensemble member's tensors ``(M, N, 3, 3)``, the skipped inputs with their reasons, warnings
    on predicted ones (elements the model never saw in training, unusual structures), the
    failed predictions with their reasons (not among the results) and the structures'
    applicability domain (:class:`~aniso_nequip.domain.DomainScores`)."""

    sources: List[str]
    structures: List[ase.Atoms]
    members: np.ndarray
    skipped: List[Tuple[str, str]]
    warnings: List[str] = dataclasses.field(default_factory=list)
    failed: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    domain: Optional[DomainScores] = None

    @functools.cached_property
    def mean(self) -> np.ndarray:
        """The prediction: the ensemble mean, ``(N, 3, 3)``."""
        return ensemble_mean(self.members)

    @functools.cached_property
    def summary(self) -> dict:
        """Per-structure derived quantities of the mean (``mean``: ``eps_poly``, ``a_r``,
        ``eigenvalues``) and the ensemble spread of ``eps_poly`` and ``a_r`` (``spread``: ``None``
        for one model)."""
        per_member = [derived(m) for m in self.members] if len(self.members) > 1 else []
        spread = {
            k: ensemble_spread(np.stack([d[k] for d in per_member])) if per_member else None
            for k in ("eps_poly", "a_r")
        }
        return {"mean": derived(self.mean), "spread": spread}

    @functools.cached_property
    def labels(self) -> List[Tuple[str, str]]:
        """``(reduced formula, crystal system)`` of each structure."""
        return [(reduced_formula(atoms), crystal_system(atoms)) for atoms in self.structures]

    @functools.cached_property
    def optics(self) -> List[OpticalDescription]:
        """The optical description of each mean tensor (:func:`~aniso_nequip.optics.describe`):
        optical class, sign, refractive indices, optic axis or 2V."""
        return describe_all(self.structures, self.mean)


def _is_structure_file(path: pathlib.Path) -> bool:
    name = path.name.lower()
    return name.endswith(STRUCTURE_SUFFIXES) or path.name.startswith(POSCAR_NAMES)


def expand_inputs(inputs: Sequence[str]) -> Tuple[List[pathlib.Path], List[Tuple[str, str]]]:
    """Files named by ``inputs`` (files, folders: their structure files in name order, glob
    patterns), and the inputs that name nothing, with the reason."""
    files, missing = [], []
    for item in inputs:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            missing.append((item, "no file matches this pattern"))
        for match in map(pathlib.Path, matches):
            if match.is_dir():
                found = sorted(p for p in match.iterdir() if p.is_file() and _is_structure_file(p))
                files += found
                if not found:
                    missing.append((str(match), "folder holds no CIF, POSCAR or extxyz file"))
            elif match.is_file():
                files.append(match)
            else:
                missing.append((str(match), "no such file or folder"))
    return files, missing


def read_structures(
    inputs: Sequence[str], type_names: Sequence[str]
) -> Tuple[List[str], List[ase.Atoms], List[Tuple[str, str]]]:
    """``(sources, structures, skipped)`` for ``inputs``: every usable structure with where it
    came from (``file`` or ``file:frame``), and ``(source, reason)`` for each one skipped."""
    files, skipped = expand_inputs(inputs)
    sources, structures = [], []
    for path in files:
        fmt = "vasp" if path.name.startswith(POSCAR_NAMES) else None
        problem = structure_file_problem(path)
        if problem:
            skipped.append((str(path), f"cannot be read: {problem}"))
            continue
        try:
            frames = ase.io.read(path, index=":", format=fmt)
        except Exception as err:  # ASE raises many types for malformed files
            skipped.append((str(path), f"cannot be read: {type(err).__name__}: {err}"))
            continue
        if not frames:
            skipped.append((str(path), "contains no structure"))
        for i, atoms in enumerate(frames):
            source = str(path) if len(frames) == 1 else f"{path}:{i}"
            problem = structure_problem(atoms, type_names)
            if problem:
                skipped.append((source, problem))
                continue
            sources.append(source)
            structures.append(atoms)
    return sources, structures, skipped


def predict_files(
    inputs: Sequence[str],
    model=None,
    device: str = "cpu",
    batch_size: int = 32,
    domain_reference=None,
) -> Predictions:
    """Read ``inputs`` and predict their tensors with ``model`` (a file, a list of files for an
    ensemble; default: the shipped ready model) and their domain scores against
    ``domain_reference`` (:func:`~aniso_nequip.domain.resolve_reference`: by default the ready
    model's own)."""
    reference = resolve_reference(model, domain_reference, batch_size, device)
    model = as_ensemble(model, device)
    sources, structures, skipped = read_structures(inputs, model.type_names)
    notes = untrained_warnings(structures, model, sources)
    notes += structure_warnings(structures, sources)
    with capture_features(model) as features:
        members = predict_members(structures, model, batch_size, device, checked=True)
    scores = scores_for(reference, features, structures)
    kept, failed = split_failed(ensemble_mean(members))
    failed = [(sources[i], problem) for i, problem in failed]
    sources, structures = [sources[i] for i in kept], [structures[i] for i in kept]
    return Predictions(
        sources, structures, members[:, kept], skipped, notes, failed, scores.take(kept)
    )


def predict_and_write(
    inputs: Sequence[str],
    model=None,
    out=None,
    device: str = "cpu",
    batch_size: int = 32,
    force: bool = False,
    strict: bool = False,
    quiet: bool = False,
    domain_reference=None,
) -> Predictions:
    """``aniso-nequip predict``: :func:`predict_files`, its report (:func:`prediction_table`,
    printed unless ``quiet``) and, with ``out``, its files (:func:`write_prediction_files`).

    ``out`` is checked and claimed before the models load and written together or not at all
    (:func:`~aniso_nequip.io.output_set`; a non-empty one is refused unless ``force``). Raises
    :class:`~aniso_nequip.errors.InputError`, writing nothing, when no structure could be
    predicted or, with ``strict``, when an input was skipped or a prediction failed."""
    claim = contextlib.nullcontext()
    if out:
        claim = output_set(out, PREDICTION_FILES, force=force, whole_folder=True)
    with claim as stage:
        result = predict_files(inputs, model, device, batch_size, domain_reference)
        if not quiet:
            print(prediction_table(result), end="")
        if not result.structures:
            raise InputError("no structure could be predicted (see the reasons above)")
        refused = [(result.skipped, "input(s) skipped"), (result.failed, "prediction(s) failed")]
        refused = [f"{len(items)} {what}" for items, what in refused if items]
        if refused and strict:
            raise InputError(f"{' and '.join(refused)} (--strict: nothing written)")
        if stage is not None:
            write_prediction_files(result, stage)
    if out and not quiet:
        print(f"wrote {out}/predictions.csv and predictions.extxyz")
    return result


def _pm(value: float, spread, i: int, digits: int = 3) -> str:
    text = f"{value:.{digits}f}"
    return text if spread is None else f"{text} ± {spread[i]:.{digits}f}"


def prediction_table(result: Predictions) -> str:
    """A readable report: per crystal the formula, crystal system, its optical description
    (:meth:`~aniso_nequip.optics.OpticalDescription.summary`: class, sign, principal refractive
    indices, optic axis or 2V), 3x3 tensor, eigenvalues, ``eps_poly`` and ``a_r`` (with the
    ensemble spread when there is one); then the warnings, the failed predictions and what was
    skipped."""
    mean, spread = result.summary["mean"], result.summary["spread"]
    blocks = []
    for i, (source, (formula, system)) in enumerate(zip(result.sources, result.labels)):
        eps = result.mean[i]
        rows = "\n".join(
            "    [" + "  ".join(f"{round(v, 3) + 0.0:8.3f}" for v in row) + " ]" for row in eps
        )
        blocks.append(
            f"{formula} ({system})  {source}\n"
            f"  {result.optics[i].summary()}\n"
            f"  dielectric tensor (eps_inf, Cartesian frame of the input cell):\n{rows}\n"
            f"  eigenvalues {'  '.join(f'{v:.3f}' for v in mean['eigenvalues'][i])}"
            f"   eps_poly {_pm(mean['eps_poly'][i], spread['eps_poly'], i)}"
            f"   a_r {_pm(mean['a_r'][i], spread['a_r'], i)}"
            + (f"\n  {result.domain.text(i)}" if result.domain.available else "")
        )
    if len(result.members) > 1 and blocks:
        blocks.append(f"(± : spread of the {len(result.members)}-model ensemble)")
    for note in result.warnings:
        blocks.append(f"warning: {note}")
    for source, reason in result.failed:
        blocks.append(f"failed {source}: {reason}")
    blocks += (
        []
        if result.domain.available
        else [f"note: domain scores unavailable: {result.domain.reason}"]
    )
    for source, reason in result.skipped:
        blocks.append(f"skipped {source}: {reason}")
    return "\n\n".join(blocks) + "\n"


def write_predictions(result: Predictions, out, force: bool = False) -> None:
    """Write ``predictions.csv`` and ``predictions.extxyz`` (``dielectric_tensor_pred`` in each
    frame's info, as ``nequip-evaluate`` writes) into the folder ``out``, together or not at all
    (:func:`~aniso_nequip.io.output_set`; a non-empty ``out`` is refused unless ``force``)."""
    with output_set(out, PREDICTION_FILES, force=force, whole_folder=True) as stage:
        write_prediction_files(result, stage)


def write_prediction_files(result: Predictions, folder) -> None:
    """Write the files of :func:`write_predictions` into ``folder`` as they are (the staging
    folder of an :func:`~aniso_nequip.io.output_set` claimed before predicting)."""
    mean, spread = result.summary["mean"], result.summary["spread"]
    folder = pathlib.Path(folder)
    tensor_std = ensemble_spread(result.members)
    frames = []
    for i, atoms in enumerate(result.structures):
        atoms = atoms.copy()
        atoms.info["source"] = result.sources[i]
        atoms.info["dielectric_tensor_pred"] = result.mean[i].reshape(-1)
        if len(result.members) > 1:
            atoms.info["dielectric_tensor_pred_std"] = tensor_std[i].reshape(-1)
        frames.append(atoms)
    ase.io.write(folder / "predictions.extxyz", frames, format="extxyz")
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        components = [f"eps_{a}{b}" for a in "xyz" for b in "xyz"]
        header = ["source", "formula", "crystal_system", *CSV_COLUMNS, "n_atoms", *components]
        header += ["eigenvalue1", "eigenvalue2", "eigenvalue3", "eps_poly", "a_r"]
        if len(result.members) > 1:
            header += ["eps_poly_std", "a_r_std"]
        writer.writerow(header + list(DOMAIN_COLUMNS))
        for i, (atoms, (formula, system)) in enumerate(zip(result.structures, result.labels)):
            row = [result.sources[i], formula, system, *csv_fields(result.optics[i]).values()]
            row.append(len(atoms))
            values = [*result.mean[i].reshape(-1), *mean["eigenvalues"][i]]
            values += [mean["eps_poly"][i], mean["a_r"][i]]
            if len(result.members) > 1:
                values += [spread["eps_poly"][i], spread["a_r"][i]]
            writer.writerow(row + [f"{v:.6f}" for v in values] + [*result.domain.row(i).values()])
