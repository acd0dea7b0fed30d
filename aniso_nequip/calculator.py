"""ASE calculator for dielectric tensors (ASE's standard ``dielectric_tensor`` property)."""

import os
from typing import Sequence, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from nequip.data import AtomicDataDict

from .inference import as_model, ensemble_members, output_fields, predict_batches


class DielectricCalculator(Calculator):
    """Predicts ``dielectric_tensor`` (3x3) and, when the model has them, per-atom
    ``born_effective_charges`` ((N, 3, 3)), both ASE standard properties.

        atoms.calc = DielectricCalculator("best.ckpt")   # or DielectricCalculator(): ready model
        eps = atoms.calc.get_property("dielectric_tensor", atoms)  # or atoms.get_properties([...])

    Args:
        model: a loaded model or the path of a ``.ckpt`` / ``.nequip.zip`` file; a list of them
            is an ensemble (the mean of its members); ``None`` (default): the ready model shipped
            with the package
        device: torch device (default ``cpu``)
    """

    def __init__(
        self,
        model: Union[None, str, os.PathLike, torch.nn.Module, Sequence] = None,
        device="cpu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device = device
        self.models = [as_model(m, device) for m in ensemble_members(model)]
        ase_fields = (AtomicDataDict.DIELECTRIC_KEY, AtomicDataDict.BORN_CHARGE_KEY)
        self.implemented_properties = [f for f in output_fields(self.models[0]) if f in ase_fields]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        outs = [
            next(predict_batches([self.atoms], m, batch_size=1, device=self.device))
            for m in self.models
        ]
        self.results = {}
        for field in self.implemented_properties:
            value = np.mean([np.asarray(out[field]) for out in outs], axis=0)
            self.results[field] = value[0] if field == AtomicDataDict.DIELECTRIC_KEY else value
