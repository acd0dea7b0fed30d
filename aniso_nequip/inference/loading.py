"""Loading trained models: checkpoints, packages, compiled models and the shipped ready model,
with what they record about their training data (:func:`training_elements`)."""

import os
from typing import List, Optional, Sequence, Union

import ase
import torch
from nequip.data import AtomicDataDict
from nequip.utils.global_dtype import _GLOBAL_DTYPE

from .._compile import with_inversion_partners
from .._keys import INVERSION_PARTNER_KEY, PREDICTED_FIELDS
from ..data.validation import elements_not_in
from ..errors import InputError, not_a_file
from ..saved_models import training_info

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
    an :class:`~aniso_nequip.inference.Ensemble` when it has several files), as ``predict``,
    ``screen`` and
    ``nequip-evaluate`` use without a model.

    The model is put in eval mode on ``device``; its ``type_names`` and ``metadata["r_max"]`` say
    which elements it knows and which cutoff its graphs need, its ``training_elements`` (see
    :func:`training_elements`) which elements its training data held.
    """
    from nequip.model.inference_models import load_compiled_model
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    if path is None:
        from .ensembles import as_ensemble

        return as_ensemble(None, device)
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
    from ..pretrained import HERE, model_card

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
    model that :func:`load_model` read from a file that records them; for an
    :class:`~aniso_nequip.inference.Ensemble` or a list of models, the elements every member saw."""
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


def output_fields(model) -> List[str]:
    """The physical fields a model predicts, e.g. ``["dielectric_tensor"]`` (a ``GraphModel``,
    :class:`CompiledModel`, :class:`~aniso_nequip.inference.Ensemble` or nequip's wrapper of a
    compiled model)."""
    from nequip.nn.compile import DictInputOutputWrapper

    available = model.output_keys if isinstance(model, DictInputOutputWrapper) else model.irreps_out
    return [k for k in PREDICTED_FIELDS if k in available]
