"""ASE calculator for dielectric tensors (ASE's standard ``dielectric_tensor`` property)."""

import os
from typing import Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from nequip.data import AtomicDataDict

from .inference import as_model, output_fields, predict_batches


class DielectricCalculator(Calculator):
    """Predicts ``dielectric_tensor`` (3x3) and, when the model has them, per-atom
    ``born_effective_charges`` ((N, 3, 3)), both ASE standard properties.

        atoms.calc = DielectricCalculator("best.ckpt")
        eps = atoms.calc.get_property("dielectric_tensor", atoms)  # or atoms.get_properties([...])

    Args:
        model: a loaded model or the path of a ``.ckpt`` / ``.nequip.zip`` file
        device: torch device (default ``cpu``)
    """

    def __init__(self, model: Union[str, os.PathLike, torch.nn.Module], device="cpu", **kwargs):
        super().__init__(**kwargs)
        self.device = device
        self.model = as_model(model, device)
        ase_fields = (AtomicDataDict.DIELECTRIC_KEY, AtomicDataDict.BORN_CHARGE_KEY)
        self.implemented_properties = [f for f in output_fields(self.model) if f in ase_fields]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        (out,) = predict_batches([self.atoms], self.model, batch_size=1, device=self.device)
        self.results = {}
        for field in self.implemented_properties:
            value = np.asarray(out[field])
            self.results[field] = value[0] if field == AtomicDataDict.DIELECTRIC_KEY else value
