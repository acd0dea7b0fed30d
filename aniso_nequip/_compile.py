"""``nequip-compile --mode aotinductor`` targets of the dielectric models.

Registered on import (``aniso_nequip/__init__.py``, which nequip's ``nequip.extension`` entry point
runs inside nequip's own ``__init__``), so ``--target`` offers them wherever nequip is imported;
this module imports only ``nequip.data`` and ``nequip.scripts._compile_utils``, neither of which
imports back into ``nequip.model`` or ``nequip.train``.

- ``batch_dielectric`` / ``batch_dielectric_static``: batches of any number of structures (the
  inputs of nequip's ``batch`` target), for :func:`aniso_nequip.load_model`, ``predict``,
  ``nequip-evaluate`` and ``screen``;
- ``ase_dielectric`` / ``ase_dielectric_static``: one structure at a time (the inputs of nequip's
  ``ase`` target), for :class:`aniso_nequip.DielectricCalculator`.

The batch targets also take ``inversion_partner`` (:func:`~aniso_nequip.data.atoms_to_graphs`
computes it; :class:`~aniso_nequip.inference.CompiledModel` gives -1, "no inversion centre", where
the data lacks it): a foundation model's backbone then skips the inverted pass of centrosymmetric
crystals inside the compiled code too (the other models ignore it).

The ``static`` targets are those of :func:`aniso_nequip.model.AnisoNetStaticModel` with its three
heads; the others output ``dielectric_tensor`` only (AnisoNet, its ``6x0e`` ablation and the
foundation models).
"""

from typing import Final, List

import torch
from nequip.data import AtomicDataDict
from nequip.scripts._compile_utils import (
    AOTI_ASE_TARGET,
    AOTI_BATCH_TARGET,
    COMPILE_TARGET_DICT,
    register_compile_targets,
)

from ._keys import INVERSION_PARTNER_KEY, PREDICTED_FIELDS

BATCH_DIELECTRIC_TARGET: Final[str] = "batch_dielectric"
BATCH_DIELECTRIC_STATIC_TARGET: Final[str] = "batch_dielectric_static"
ASE_DIELECTRIC_TARGET: Final[str] = "ase_dielectric"
ASE_DIELECTRIC_STATIC_TARGET: Final[str] = "ase_dielectric_static"

DIELECTRIC_OUTPUTS: Final[List[str]] = [AtomicDataDict.DIELECTRIC_KEY]
STATIC_OUTPUTS: Final[List[str]] = list(PREDICTED_FIELDS)


def with_inversion_partners(data: AtomicDataDict.Type) -> AtomicDataDict.Type:
    """``data`` with ``inversion_partner`` (-1 for every atom, "no inversion centre", where it
    has none: what a crystal without one gets, so predictions are the same either way)."""
    if INVERSION_PARTNER_KEY not in data:
        num_nodes = data[AtomicDataDict.POSITIONS_KEY].shape[0]
        data = {**data, INVERSION_PARTNER_KEY: torch.full((num_nodes,), -1, dtype=torch.long)}
    return data


def _with_outputs(target: str, outputs: List[str]) -> dict:
    """nequip's own target ``target`` (its inputs, batch and data settings) with ``outputs``.
    Its ``batch`` target traces on two frames, so that the number of frames does not specialise
    to 1; its ``ase`` target takes one frame."""
    return {**COMPILE_TARGET_DICT[target], "output": outputs}


def _with_partners(target: dict) -> dict:
    """``target`` that also takes ``inversion_partner`` (traced with it, -1 where the example
    data has none)."""
    settings = target["data_settings"]
    return {
        **target,
        "input": [*target["input"], INVERSION_PARTNER_KEY],
        "data_settings": lambda data: with_inversion_partners(settings(data)),
    }


register_compile_targets(
    {
        BATCH_DIELECTRIC_TARGET: _with_partners(
            _with_outputs(AOTI_BATCH_TARGET, DIELECTRIC_OUTPUTS)
        ),
        BATCH_DIELECTRIC_STATIC_TARGET: _with_partners(
            _with_outputs(AOTI_BATCH_TARGET, STATIC_OUTPUTS)
        ),
        ASE_DIELECTRIC_TARGET: _with_outputs(AOTI_ASE_TARGET, DIELECTRIC_OUTPUTS),
        ASE_DIELECTRIC_STATIC_TARGET: _with_outputs(AOTI_ASE_TARGET, STATIC_OUTPUTS),
    }
)
