"""Predicting dielectric tensors from Python, batch by batch, and reporting failed predictions.

import aniso_nequip
model = aniso_nequip.load_model("outputs/.../best.ckpt")      # or .nequip.zip / .nequip.pt2
eps = aniso_nequip.predict(structures, model)                # (N, 3, 3) numpy array
optics = aniso_nequip.predict(structures, field="optics")    # the ready model; n_o, n_e, ...
"""

import math
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import ase
import numpy as np
import torch
from nequip.data import AtomicDataDict
from nequip.data._key_registry import get_field_type

from ..data import atoms_to_graphs
from ..data.validation import (
    FailedPredictionWarning,
    StructureWarning,
    UntrainedElementWarning,
    check_structure,
    crystal_name,
    disorder_problem,
    prediction_problem,
    structure_warnings,
)
from ..errors import InputError
from ..variables import check_variable
from .ensembles import as_ensemble, ensemble_mean, member_outputs
from .loading import check_device, output_fields, untrained_warnings


def _as_atoms(structure, index: int, type_names: Sequence[str]) -> ase.Atoms:
    """``structure`` as ``ase.Atoms``, checked (:func:`~aniso_nequip.data.validation.
    check_structure`): :class:`~aniso_nequip.errors.InputError` naming structure ``index``."""
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(structure, Structure):
        problem = disorder_problem(structure)
        if problem:
            raise InputError(
                f"structure {index} ({structure.composition.reduced_formula}): {problem}"
            )
        structure = AseAtomsAdaptor.get_atoms(structure)
    elif not isinstance(structure, ase.Atoms):
        raise TypeError(f"expected ase.Atoms or pymatgen Structure, got {type(structure).__name__}")
    return check_structure(structure, type_names, crystal_name(structure, index), bulk=False)


def predict_batches(
    structures: Sequence,
    model,
    batch_size: int = 32,
    device: Union[str, torch.device] = "cpu",
    checked: bool = False,
    members: bool = False,
) -> Iterator[Dict[str, np.ndarray]]:
    """Yield ``{field: array}`` for consecutive batches of ``structures`` (graph fields
    ``(B, ...)``, per-atom fields concatenated over the batch's atoms); ``model`` as
    :func:`predict` takes it (a list: the ensemble's mean,
    :class:`~aniso_nequip.inference.Ensemble`); with ``members``, each member's values on a first
    axis (``(M, B, ...)``, :func:`~aniso_nequip.inference.member_outputs`).

    Raises :class:`~aniso_nequip.errors.InputError` naming the first structure that
    :mod:`~aniso_nequip.data.validation` refuses (unknown elements included) and warns
    (:class:`~aniso_nequip.data.validation.UntrainedElementWarning`) for elements the model was
    never trained on and (:class:`~aniso_nequip.data.validation.StructureWarning`) for
    structures unlike any of the bundled data; ``checked``: the structures are ``ase.Atoms``
    that the caller has checked and reported on itself (as ``nequip-evaluate``, ``predict`` and
    ``screen`` do), so neither happens again."""
    check_variable("batch_size", batch_size)
    model = as_ensemble(model, device)
    fields = output_fields(model)
    r_max = float(model.metadata["r_max"])
    for start in range(0, len(structures), batch_size):
        atoms = list(structures[start : start + batch_size])
        if not checked:
            atoms = [_as_atoms(s, start + i, model.type_names) for i, s in enumerate(atoms)]
            names = [crystal_name(a, start + i) for i, a in enumerate(atoms)]
            for warning in untrained_warnings(atoms, model, names):
                warnings.warn(warning, UntrainedElementWarning, stacklevel=2)
            for warning in structure_warnings(atoms, names, bulk=False):
                warnings.warn(warning, StructureWarning, stacklevel=2)
        graphs = atoms_to_graphs(atoms, model.type_names, r_max, with_references=False)
        data = AtomicDataDict.to_(graphs, device)
        with torch.no_grad():
            out = member_outputs(model, data) if members else model(data)
        yield {f: out[f].detach().cpu().to(torch.float64).numpy() for f in fields}


def split_failed(tensors: Sequence) -> Tuple[List[int], List[Tuple[int, str]]]:
    """``(kept, failed)`` of predicted dielectric tensors (an ensemble's: its mean): the indices
    of the usable ones and ``(index, problem)`` of each that
    :func:`~aniso_nequip.data.validation.prediction_problem` calls a failed prediction, which is
    reported and never a result."""
    problems = [prediction_problem(tensor) for tensor in tensors]
    kept = [i for i, problem in enumerate(problems) if problem is None]
    return kept, [(i, problem) for i, problem in enumerate(problems) if problem]


def _default_device(device):
    if device is not None:
        return check_device(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def _collect(structures, model, batch_size, device, progress, checked) -> Dict[str, list]:
    """Every field of every member for ``structures``: graph fields ``(M, N, 3, 3)``, per-atom
    fields a list of ``(M, n_atoms, 3, 3)`` arrays (one per structure)."""
    from tqdm import tqdm

    fields = output_fields(model)
    out = {f: [] for f in fields}
    batches = predict_batches(structures, model, batch_size, device, checked, members=True)
    n_batches = math.ceil(len(structures) / batch_size)
    for start, batch in zip(
        range(0, len(structures), batch_size),
        tqdm(batches, total=n_batches, desc="predicting", unit="batch", disable=not progress),
    ):
        counts = [len(s) for s in structures[start : start + batch_size]]
        for f, value in batch.items():
            if get_field_type(f) == "node":
                out[f].extend(np.split(value, np.cumsum(counts)[:-1], axis=1))
            else:
                out[f].append(value.reshape(len(value), -1, 3, 3))
    n_members = len(getattr(model, "members", [model]))
    for f in fields:
        if get_field_type(f) == "graph":
            parts = out[f] or [np.zeros((n_members, 0, 3, 3))]
            out[f] = np.concatenate(parts, axis=1)
    return out


def _name(structure, i: int) -> str:
    if isinstance(structure, ase.Atoms):
        return crystal_name(structure, i)
    return f"structure {i} ({structure.composition.reduced_formula})"


def _mark_failed(out: Dict, structures: Sequence) -> None:
    """Set every member's values of every field of the structures whose predicted (mean)
    dielectric tensor is a failed prediction (:func:`split_failed`) to NaN, warning with the
    structure's name and the problem; ``out`` as :func:`_collect` returns it."""
    tensors = out.get(AtomicDataDict.DIELECTRIC_KEY)
    if tensors is None:
        return
    for i, problem in split_failed(ensemble_mean(tensors))[1]:
        name = _name(structures[i], i)
        warnings.warn(f"{name}: {problem}", FailedPredictionWarning, stacklevel=3)
        for f, values in out.items():
            if get_field_type(f) == "node":
                values[i] = np.full_like(values[i], np.nan)
            else:
                values[:, i] = np.nan


def predict_members(
    structures: Sequence,
    model=None,
    batch_size: int = 32,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    checked: bool = False,
) -> np.ndarray:
    """Dielectric tensors predicted by each member of an ensemble, ``(M, N, 3, 3)`` (``M = 1``
    for a single model), whose :func:`~aniso_nequip.inference.ensemble_mean` is what
    :func:`predict` returns; ``model`` and ``checked`` as in :func:`predict` (a failed
    prediction of the mean is NaN for every member)."""
    check_variable("batch_size", batch_size)
    device = _default_device(device)
    model = as_ensemble(model, device)
    out = _collect(structures, model, batch_size, device, progress, checked)
    if AtomicDataDict.DIELECTRIC_KEY not in out:
        raise ValueError(f"the model predicts {list(out)}, not `{AtomicDataDict.DIELECTRIC_KEY}`")
    if not checked:
        _mark_failed(out, structures)
    return out[AtomicDataDict.DIELECTRIC_KEY]


def predict(
    structures: Sequence,
    model=None,
    batch_size: int = 32,
    device: Optional[Union[str, torch.device]] = None,
    field: str = AtomicDataDict.DIELECTRIC_KEY,
    progress: bool = False,
    checked: bool = False,
    domain=False,
):
    """Predicted dielectric tensors, an ``(N, 3, 3)`` float64 array; with ``domain``, the pair
    ``(tensors, scores)``, ``scores`` the :class:`~aniso_nequip.domain.DomainScores` of the
    structures (their applicability domain: :mod:`aniso_nequip.domain`).

    A prediction whose dielectric tensor :func:`~aniso_nequip.data.validation.prediction_problem`
    calls failed (non-finite, or eigenvalues no material has) is NaN in every field, with a
    :class:`~aniso_nequip.data.validation.FailedPredictionWarning` naming the structure, so that
    it can never be ranked as a result.

    Args:
        structures: ``ase.Atoms`` or pymatgen ``Structure`` objects
        model: a loaded model (:func:`~aniso_nequip.inference.load_model`) or the path of a
            checkpoint/package; a list of them is an ensemble (the mean of its members'
            predictions: :class:`~aniso_nequip.inference.Ensemble`); ``None`` (default): the
            ready model shipped with the package (``aniso_nequip.pretrained``)
        batch_size: structures per forward pass (an integer >= 1)
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available); one this machine
            lacks is an :class:`~aniso_nequip.errors.InputError`
        field: the head to return: ``dielectric_tensor`` (default), ``dielectric_ionic_tensor``
            (``(N, 3, 3)``), ``born_effective_charges`` (a list of ``(n_atoms, 3, 3)`` arrays),
            ``"all"`` for a dict of every head the model has, or ``"optics"`` for the optical
            description of each predicted ``dielectric_tensor`` (a list of
            :class:`~aniso_nequip.optics.OpticalDescription`: optical class, sign, ``n_o``,
            ``n_e``, optic axis, ``n_alpha < n_beta < n_gamma``, ``2V``, ...)
        progress: show a progress bar over the batches
        checked: the structures are ``ase.Atoms`` already checked by the caller, which reports
            their problems, untrained elements and failed predictions itself
            (:func:`predict_batches`): the predictions are returned as they are
        domain: ``False`` (default): no domain scores; ``True``: scores against the reference
            shipped with the ready model (unavailable, with the reason, for other models); a
            :class:`~aniso_nequip.domain.DomainReference`, its ``.npz`` file or the training
            file of ``model`` (:func:`~aniso_nequip.domain.resolve_reference`)
    """
    check_variable("batch_size", batch_size)
    device = _default_device(device)
    if domain is not False:
        from ..domain import capture_features, resolve_reference, scores_for

        reference = resolve_reference(model, domain, batch_size, device)
        model = as_ensemble(model, device)
        with capture_features(model) as features:
            out = predict(structures, model, batch_size, device, field, progress, checked)
        return out, scores_for(reference, features, structures)
    if field == "optics":
        from ..optics import describe_all

        tensors = predict(structures, model, batch_size, device, progress=progress, checked=checked)
        return describe_all(structures, tensors)
    out = _collect(structures, as_ensemble(model, device), batch_size, device, progress, checked)
    if field != "all" and field not in out:
        raise ValueError(f"the model predicts {list(out)}, not `{field}`")
    if not checked:
        _mark_failed(out, structures)
    out = {
        f: ensemble_mean(v) if get_field_type(f) == "graph" else [ensemble_mean(x) for x in v]
        for f, v in out.items()
    }
    return out if field == "all" else out[field]
