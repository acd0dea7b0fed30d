"""ASE calculator for dielectric tensors (ASE's standard ``dielectric_tensor`` and
``born_effective_charges`` properties), on nequip's ``NequIPCalculator``."""

import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from ase.calculators.calculator import all_changes
from nequip.data import AtomicDataDict
from nequip.integrations.ase import NequIPCalculator
from nequip.integrations.utils import basic_transforms
from nequip.scripts._compile_utils import COMPILE_TARGET_DICT

from ._compile import ASE_DIELECTRIC_TARGET
from .data.validation import (
    FailedPredictionWarning,
    StructureWarning,
    UntrainedElementWarning,
    check_structure,
    crystal_name,
    mapped_species,
    prediction_problem,
    structure_warnings,
)
from .domain import capture_features, resolve_reference, scores_for
from .inference import as_ensemble, output_fields, untrained_warnings


class DielectricCalculator(NequIPCalculator):
    """Predicts ``dielectric_tensor`` (3x3) and, when the model has them, per-atom
    ``born_effective_charges`` ((N, 3, 3)); the model predicts no energy, so neither energy,
    forces nor stress are implemented properties.

        atoms.calc = DielectricCalculator()              # the ready model shipped with the package
        atoms.calc = DielectricCalculator("best.ckpt")   # or .nequip.zip / .nequip.pt2, or a list
        eps = atoms.calc.get_property("dielectric_tensor", atoms)
        atoms.calc.domain["domain_score"], atoms.calc.domain["out_of_domain"]

    Every calculation also stores the crystal's applicability domain in ``domain``, a dict
    beside ``results`` (which ASE keeps to its known properties): :mod:`aniso_nequip.domain`'s
    ``domain_score``, ``out_of_domain``, ``nearest_training_id``, ``nearest_training_formula``,
    ``nearest_training_same_structure`` (a NaN score when the model has no domain reference).

    nequip's constructors work as for ``NequIPCalculator``:
    ``DielectricCalculator._from_saved_model(path)`` for a checkpoint or package and
    ``DielectricCalculator.from_compiled_model(path)`` for a model compiled with
    ``nequip-compile --mode aotinductor --target ase_dielectric``.

    Args:
        model: a loaded model or the path of a ``.ckpt``, ``.nequip.zip`` or ``.nequip.pt2``
            file (any of the ``batch_dielectric*`` / ``ase_dielectric*`` compile targets); a list
            of them is an ensemble (the mean of its members, which must share their elements and
            cutoff); ``None`` (default): the ready model shipped with the package
        device: torch device (default ``cpu``)
        transforms: the data transforms (type mapping and neighbour list); ``None`` (default)
            builds them from the model's elements (chemical symbols) and cutoff
        domain_reference: the model's training crystals for the domain score
            (:func:`~aniso_nequip.domain.resolve_reference`; default: the ready model's own)
        **kwargs: passed on to ``NequIPCalculator``
    """

    implemented_properties = [AtomicDataDict.DIELECTRIC_KEY, AtomicDataDict.BORN_CHARGE_KEY]

    @classmethod
    def _get_aoti_compile_target(cls) -> Dict:
        return COMPILE_TARGET_DICT[ASE_DIELECTRIC_TARGET]

    def __init__(
        self,
        model: Union[None, str, os.PathLike, torch.nn.Module, Sequence] = None,
        device: Union[str, torch.device] = "cpu",
        transforms: Optional[List[Callable]] = None,
        domain_reference=None,
        **kwargs,
    ):
        self.domain_reference = resolve_reference(model, domain_reference, device=device)
        self.domain = {}  # of the last calculation
        if transforms is None:
            model = as_ensemble(model, device)
            type_names = list(model.type_names)
            transforms = basic_transforms(
                model.metadata,
                float(model.metadata["r_max"]),
                type_names,
                {t: t for t in type_names},
            )
        super().__init__(model=model, device=device, transforms=transforms, **kwargs)
        self.species = mapped_species(self.transforms)  # the elements the transforms map
        # only what this model predicts
        self.implemented_properties = [
            f for f in type(self).implemented_properties if f in output_fields(self.model)
        ]

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        """Check the crystal (:func:`~aniso_nequip.data.validation.check_structure`: an
        :class:`~aniso_nequip.errors.InputError` naming it for an unusable structure or an element
        the model does not know; a warning for one it never saw in training or unlike any of
        the bundled data), then predict. A failed prediction
        (:func:`~aniso_nequip.data.validation.prediction_problem`) gives NaN results and a
        :class:`~aniso_nequip.data.validation.FailedPredictionWarning`."""
        structure = atoms if atoms is not None else self.atoms
        name = crystal_name(structure)
        check_structure(structure, self.species, name, bulk=False)
        for warning in untrained_warnings([structure], self.model, [name]):
            warnings.warn(warning, UntrainedElementWarning, stacklevel=2)
        for warning in structure_warnings([structure], [name], bulk=False):
            warnings.warn(warning, StructureWarning, stacklevel=2)
        with capture_features(self.model) as features:
            super().calculate(atoms, properties, system_changes)
        self.domain = scores_for(self.domain_reference, features, [structure]).values(0)
        problem = prediction_problem(self.results[AtomicDataDict.DIELECTRIC_KEY])
        if problem:
            warnings.warn(f"{name}: {problem}", FailedPredictionWarning, stacklevel=2)
            for field in self.implemented_properties:
                self.results[field] = np.full_like(self.results[field], np.nan)

    def save_extra_outputs(self, out: AtomicDataDict.Type):
        for field in self.implemented_properties:
            value = out[field].detach().cpu().to(torch.float64).numpy()
            if field == AtomicDataDict.DIELECTRIC_KEY:
                value = value.reshape(3, 3)
            self.results[field] = value
