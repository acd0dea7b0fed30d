"""Loading trained models and predicting dielectric tensors from Python.

import aniso_nequip
model = aniso_nequip.load_model("outputs/.../best.ckpt")      # or .nequip.zip / .nequip.pt2
eps = aniso_nequip.predict(structures, model)                # (N, 3, 3) numpy array
optics = aniso_nequip.predict(structures, field="optics")    # the ready model; n_o, n_e, ...
"""

import math
import os
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Union

import ase
import numpy as np
import torch
from nequip.data import AtomicDataDict
from nequip.data._key_registry import get_field_type
from nequip.utils.global_dtype import _GLOBAL_DTYPE

from ._compile import with_inversion_partners
from ._keys import INVERSION_PARTNER_KEY, PREDICTED_FIELDS
from .data import atoms_to_graphs
from .data.validation import (
    FailedPredictionWarning,
    StructureWarning,
    UntrainedElementWarning,
    check_structure,
    crystal_name,
    disorder_problem,
    elements_not_in,
    prediction_problem,
    structure_warnings,
)
from .errors import InputError, not_a_file
from .saved_models import training_info
from .variables import check_variable

COMPILED_SUFFIX = ".nequip.pt2"
"""Suffix of the files ``nequip-compile --mode aotinductor`` writes."""


class ModelLoadError(InputError):
    """A model file is missing or is not a readable nequip checkpoint/package/compiled model."""


class CompiledModel(torch.nn.Module):
    """A model compiled by ``nequip-compile --mode aotinductor`` (``.nequip.pt2``) with the
    attributes inference reads from a ``GraphModel``: ``type_names``, ``metadata["r_max"]`` and
    ``irreps_out`` (its output fields, whose irreps the file does not record: ``None``).

    A model compiled for batches also takes one structure without ``batch`` fields (as
    ``NequIPCalculator`` gives it). The compiled code reads its inputs as contiguous tensors in
    the dtypes they were traced in (nequip's float64 for positions, cells and shifts) without
    checking: inputs are made so here (a single frame's ``batch`` from
    ``AtomicDataDict.with_batch_`` is an expanded, stride-0 tensor that it would read out of
    bounds).

    Args:
        model (torch.nn.Module): the model returned by nequip's ``load_compiled_model``
        metadata (dict): the metadata returned with it
    """

    def __init__(self, model: torch.nn.Module, metadata: dict):
        super().__init__()
        self.model = model
        self.metadata = metadata
        self.type_names = list(metadata["type_names"])
        self.irreps_out = {field: None for field in model.output_keys}
        self.batched = AtomicDataDict.BATCH_KEY in model.input_keys

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if self.batched and AtomicDataDict.BATCH_KEY not in data:
            data = AtomicDataDict.with_batch_(data.copy())
        elif not self.batched and AtomicDataDict.num_frames(data) > 1:
            raise ValueError(
                "this model was compiled for one structure at a time (an `ase_*` target): "
                "compile it with `--target batch_dielectric` (or `batch_dielectric_static`) to "
                "predict batches"
            )
        if INVERSION_PARTNER_KEY in self.model.input_keys:
            data = with_inversion_partners(data)
        inputs = {}
        for key in self.model.input_keys:
            value = data[key]
            if value.is_floating_point():
                value = value.to(_GLOBAL_DTYPE)
            inputs[key] = value.contiguous()
        return self.model(inputs)


def check_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a ``torch.device``; :class:`~aniso_nequip.errors.InputError` naming it when
    torch does not know it (``tpu``) or this machine or torch build lacks it (``cuda`` without
    CUDA, ``cuda:3`` on a machine with 2 GPUs, ``mps`` off macOS)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(
            f"device {device!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is not None and device.index >= count > 0:
            raise InputError(f"device {str(device)!r}: this machine has {count} CUDA device(s)")
        if not count:
            raise InputError(
                f"device {str(device)!r}: CUDA is not available (torch {torch.__version__}, "
                f"built {'with' if torch.version.cuda else 'without'} CUDA); use device `cpu`"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {str(device)!r}: MPS is not available; use device `cpu`")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {str(device)!r} is not supported (cpu, cuda, mps)")
    return device


def load_model(
    path: Optional[Union[str, os.PathLike]] = None, device: Union[str, torch.device] = "cpu"
):
    """Load a trained model with nequip's loaders: a ``.ckpt`` checkpoint or a ``.nequip.zip``
    package gives the eager ``GraphModel``, a ``.nequip.pt2`` file of ``nequip-compile --mode
    aotinductor`` a :class:`CompiledModel` (for ``device``: the one it was compiled for);
    ``None`` (default) the ready model shipped with the package (:mod:`aniso_nequip.pretrained`:
    an :class:`Ensemble` when it has several files), as ``predict``, ``screen`` and
    ``nequip-evaluate`` use without a model.

    The model is put in eval mode on ``device``; its ``type_names`` and ``metadata["r_max"]`` say
    which elements it knows and which cutoff its graphs need, its ``training_elements`` (see
    :func:`training_elements`) which elements its training data held.
    """
    from nequip.model.inference_models import load_compiled_model
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    if path is None:
        models = [load_model(member, device) for member in ensemble_members(None)]
        return models[0] if len(models) == 1 else Ensemble(models).to(device).eval()
    path = os.fspath(path)
    device = check_device(device)
    if not os.path.isfile(path):
        raise ModelLoadError(f"model file `{path}` {not_a_file(path)}")
    set_global_state()
    try:
        if path.endswith(COMPILED_SUFFIX):
            model = CompiledModel(*load_compiled_model(path, device))
        else:
            model = load_saved_model(path)
    except Exception as err:  # anything torch/zip/pickle may raise on a bad file
        raise ModelLoadError(
            f"`{path}` is not a readable nequip checkpoint (.ckpt), package (.nequip.zip) or "
            f"compiled model ({COMPILED_SUFFIX}): {type(err).__name__}: {err}"
        ) from err
    model.training_elements = _recorded_training_elements(path)
    return model.to(device).eval()


def _recorded_training_elements(path: str) -> Optional[List[str]]:
    """``training_elements`` of a checkpoint or package, as
    :class:`~aniso_nequip.train.SelfContainedCheckpoints` records them
    (:func:`~aniso_nequip.saved_models.training_info`), or of the model card of the shipped ready
    model (:mod:`aniso_nequip.pretrained`); ``None`` when absent."""
    from .pretrained import HERE, model_card

    if path.endswith(COMPILED_SUFFIX):
        return None
    card = model_card()
    if os.path.abspath(path) in [os.path.abspath(HERE / name) for name in card["files"]]:
        elements = card["elements_trained_on"]
    else:
        elements = training_info(path).get("training_elements")
    return None if elements is None else [str(e) for e in elements]


def common_type_names(models: Sequence) -> List[str]:
    """The type names (elements) every one of ``models`` knows, sorted."""
    return sorted(set.intersection(*(set(m.type_names) for m in models)))


def training_elements(model) -> Optional[List[str]]:
    """The elements of the data ``model`` was trained on, ``None`` when unknown: recorded for a
    model that :func:`load_model` read from a file that records them; for an :class:`Ensemble`
    or a list of models, the elements every member saw."""
    if isinstance(model, (list, tuple)):
        seen = [training_elements(m) for m in model]
        return None if None in seen else sorted(set.intersection(*map(set, seen)))
    return getattr(model, "training_elements", None)


def untrained_warnings(structures: Sequence[ase.Atoms], model, names: Sequence[str]) -> List[str]:
    """``"<name>: ..."`` for each structure with elements that ``model`` (or a list of models)
    knows but its training data did not hold (its prediction is an extrapolation); ``names``
    name the structures."""
    elements = training_elements(model)
    if elements is None:
        return []
    out = []
    for name, atoms in zip(names, structures):
        unseen = elements_not_in(atoms, elements)
        if unseen:
            out.append(
                f"{name}: element(s) {', '.join(unseen)} not in the model's training data "
                "(an extrapolation: treat the prediction with care)"
            )
    return out


def as_model(model, device: Union[str, torch.device] = "cpu"):
    """``model`` itself (moved to ``device``, eval mode) or, for a path, :func:`load_model`."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device)
    return model.to(check_device(device)).eval()


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


def output_fields(model) -> List[str]:
    """The physical fields a model predicts, e.g. ``["dielectric_tensor"]`` (a ``GraphModel``,
    :class:`CompiledModel`, :class:`Ensemble` or nequip's wrapper of a compiled model)."""
    from nequip.nn.compile import DictInputOutputWrapper

    available = model.output_keys if isinstance(model, DictInputOutputWrapper) else model.irreps_out
    return [k for k in PREDICTED_FIELDS if k in available]


class Ensemble(torch.nn.Module):
    """The mean prediction of models that share their elements and cutoff, with the attributes
    of :class:`CompiledModel` (``type_names``, ``metadata``, ``irreps_out``: the fields every
    member predicts).

    Args:
        models (Sequence[torch.nn.Module]): the members (e.g. from :func:`load_model`)
    """

    def __init__(self, models: Sequence[torch.nn.Module]):
        super().__init__()
        first = models[0]
        for other in models[1:]:
            same_types = list(other.type_names) == list(first.type_names)
            if not same_types or float(other.metadata["r_max"]) != float(first.metadata["r_max"]):
                raise ValueError("the members of an ensemble must share their elements and r_max")
        self.members = torch.nn.ModuleList(models)
        self.type_names = list(first.type_names)
        self.metadata = first.metadata
        fields = [f for f in output_fields(first) if all(f in output_fields(m) for m in models)]
        self.irreps_out = {f: None for f in fields}
        self.training_elements = training_elements(list(models))

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        outs = [member(data) for member in self.members]
        return {f: torch.stack([out[f] for out in outs]).mean(dim=0) for f in self.irreps_out}


def predict_batches(
    structures: Sequence,
    model,
    batch_size: int = 32,
    device: Union[str, torch.device] = "cpu",
    checked: bool = False,
) -> Iterator[Dict[str, np.ndarray]]:
    """Yield ``{field: array}`` for consecutive batches of ``structures`` (graph fields
    ``(B, ...)``, per-atom fields concatenated over the batch's atoms).

    Raises :class:`~aniso_nequip.errors.InputError` naming the first structure that
    :mod:`~aniso_nequip.data.validation` refuses (unknown elements included) and warns
    (:class:`~aniso_nequip.data.validation.UntrainedElementWarning`) for elements the model was
    never trained on and (:class:`~aniso_nequip.data.validation.StructureWarning`) for
    structures unlike any of the bundled data; ``checked``: the structures are ``ase.Atoms``
    that the caller has checked and reported on itself (as ``nequip-evaluate``, ``predict`` and
    ``screen`` do), so neither happens again."""
    check_variable("batch_size", batch_size)
    model = as_model(model, device)
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
            out = model(data)
        yield {f: out[f].detach().cpu().to(torch.float64).numpy() for f in fields}


def ensemble_members(model=None) -> list:
    """The models behind ``model``: ``None`` gives the shipped ready model's files
    (:mod:`aniso_nequip.pretrained`), a list or tuple its items, anything else ``[model]``."""
    if model is None:
        from .pretrained import model_paths

        return model_paths()
    return list(model) if isinstance(model, (list, tuple)) else [model]


def predict_members(
    structures: Sequence,
    model=None,
    batch_size: int = 32,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    checked: bool = False,
) -> np.ndarray:
    """Dielectric tensors predicted by each member of an ensemble, ``(M, N, 3, 3)`` (``M = 1``
    for a single model); ``model`` and ``checked`` as in :func:`predict`."""
    members = ensemble_members(model)
    if not members:
        raise ValueError("no model given (an empty ensemble)")
    predictions = [
        predict(structures, m, batch_size, device, progress=progress, checked=checked)
        for m in members
    ]
    return np.stack(predictions).reshape(len(members), len(structures), 3, 3)


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
        model: a loaded model (:func:`load_model`) or the path of a checkpoint/package; a list of
            them is an ensemble (the mean of its members' predictions); ``None`` (default): the
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
    if device is not None:
        check_device(device)
    if domain is not False:
        from .domain import capture_features, resolve_reference, scores_for

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        reference = resolve_reference(model, domain, batch_size, device)
        members = [as_model(m, device) for m in ensemble_members(model)]
        with capture_features(members[0]) as features:
            out = predict(structures, members, batch_size, device, field, progress, checked)
        return out, scores_for(reference, features, structures)
    if field == "optics":
        from .optics import describe_all

        tensors = predict(structures, model, batch_size, device, progress=progress, checked=checked)
        return describe_all(structures, tensors)
    out = _predict(structures, model, batch_size, device, progress, checked)
    if field != "all" and field not in out:
        raise ValueError(f"the model predicts {list(out)}, not `{field}`")
    if not checked:
        _mark_failed(out, structures)
    return out if field == "all" else out[field]


def _predict(structures, model, batch_size, device, progress, checked) -> Dict[str, list]:
    """Every field :func:`predict` returns for ``field="all"``, before failed predictions are
    marked."""
    from tqdm import tqdm

    members = ensemble_members(model)
    if len(members) > 1:
        outs = [_predict(structures, m, batch_size, device, progress, checked) for m in members]
        return {f: _mean([o[f] for o in outs]) for f in outs[0]}
    (model,) = members
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = as_model(model, device)
    fields = output_fields(model)
    out = {f: [] for f in fields}
    batches = predict_batches(structures, model, batch_size, device, checked)
    n_batches = math.ceil(len(structures) / batch_size)
    for start, batch in zip(
        range(0, len(structures), batch_size),
        tqdm(batches, total=n_batches, desc="predicting", unit="batch", disable=not progress),
    ):
        counts = [len(s) for s in structures[start : start + batch_size]]
        for f, value in batch.items():
            if get_field_type(f) == "node":
                out[f].extend(np.split(value, np.cumsum(counts)[:-1]))
            else:
                out[f].extend(value)
    for f in fields:
        if get_field_type(f) == "graph":
            out[f] = np.asarray(out[f]).reshape(-1, 3, 3)
    return out


def _mark_failed(out: Dict, structures: Sequence) -> None:
    """Set every field of the structures whose predicted dielectric tensor is a failed
    prediction to NaN, warning with the structure's name and the problem."""
    for i, tensor in enumerate(out.get(AtomicDataDict.DIELECTRIC_KEY, [])):
        problem = prediction_problem(tensor)
        if problem is None:
            continue
        structure = structures[i]
        name = (
            crystal_name(structure, i)
            if isinstance(structure, ase.Atoms)
            else f"structure {i} ({structure.composition.reduced_formula})"
        )
        warnings.warn(f"{name}: {problem}", FailedPredictionWarning, stacklevel=3)
        for values in out.values():
            values[i] = np.full_like(values[i], np.nan)


def _mean(values: list):
    """Mean over ensemble members of one field: arrays, or lists of per-structure arrays."""
    if isinstance(values[0], np.ndarray):
        return np.mean(values, axis=0)
    return [np.mean(per_structure, axis=0) for per_structure in zip(*values)]
