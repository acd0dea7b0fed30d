"""Ensembles: several models that share their elements and cutoff, whose mean is the prediction
and whose spread (the standard deviation over the members) is its uncertainty.

Every ensemble prediction goes through here: :class:`Ensemble` runs the members on each batch
(:meth:`Ensemble.member_outputs`, for the spread) and its forward pass is their mean, so that the
calculator, ``predict``, ``screen``, ``nequip-evaluate`` and the benchmarks combine members in the
same way (:func:`ensemble_mean`, :func:`ensemble_spread`)::

    from aniso_nequip.inference import as_ensemble, predict_members
    model = as_ensemble(["a.ckpt", "b.nequip.zip"])   # one module; its forward is the mean
    members = predict_members(structures, model)       # (M, N, 3, 3)
"""

from typing import Dict, Sequence, Union

import torch
from nequip.data import AtomicDataDict

from .loading import as_model, output_fields, training_elements


def ensemble_mean(values):
    """The ensemble's prediction: the mean of its members' values stacked on the first axis
    (``(M, ...)`` numpy array or torch tensor)."""
    return values.mean(0)


def ensemble_spread(values):
    """The ensemble's uncertainty: the (population) standard deviation of its members' values
    stacked on the first axis (``(M, ...)`` numpy array); zero for one member."""
    return values.std(0)


def ensemble_members(model=None) -> list:
    """The models behind ``model``: ``None`` gives the shipped ready model's files
    (:mod:`aniso_nequip.pretrained`), a list or tuple its items, anything else ``[model]``."""
    if model is None:
        from ..pretrained import model_paths

        return model_paths()
    return list(model) if isinstance(model, (list, tuple)) else [model]


class Ensemble(torch.nn.Module):
    """The mean prediction of models that share their elements and cutoff, with the attributes
    of :class:`~aniso_nequip.inference.CompiledModel` (``type_names``, ``metadata``,
    ``irreps_out``: the fields every member predicts) and ``training_elements`` (those every
    member saw).

    Args:
        models (Sequence[torch.nn.Module]): the members (e.g. from
            :func:`~aniso_nequip.inference.load_model`)
    """

    def __init__(self, models: Sequence[torch.nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("no model given (an empty ensemble)")
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

    def member_outputs(self, data: AtomicDataDict.Type) -> Dict[str, torch.Tensor]:
        """Every member's prediction of each field, stacked on a first axis of members:
        ``(M, ...)`` float64 tensors."""
        outs = [member(data) for member in self.members]
        return {f: torch.stack([out[f].to(torch.float64) for out in outs]) for f in self.irreps_out}

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        return {f: ensemble_mean(v) for f, v in self.member_outputs(data).items()}


def member_outputs(model: torch.nn.Module, data: AtomicDataDict.Type) -> Dict[str, torch.Tensor]:
    """:meth:`Ensemble.member_outputs` of ``model``; a single model is an ensemble of one
    (its fields with a first axis of length 1)."""
    if isinstance(model, Ensemble):
        return model.member_outputs(data)
    out = model(data)
    return {f: out[f].to(torch.float64).unsqueeze(0) for f in output_fields(model)}


def as_ensemble(model=None, device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """One module, in eval mode on ``device``, for ``model`` as ``predict`` takes it (a loaded
    model, a path, a list of them, ``None`` for the shipped ready model: see
    :func:`ensemble_members`): the model itself for one member, else their :class:`Ensemble`."""
    members = [as_model(m, device) for m in ensemble_members(model)]
    if len(members) == 1:
        return members[0]
    return Ensemble(members).to(device).eval()
