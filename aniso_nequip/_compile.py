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

The ``static`` targets are those of :func:`aniso_nequip.model.AnisoNetStaticModel` with its three
heads; the others output ``dielectric_tensor`` only (AnisoNet, its ``6x0e`` ablation and the
foundation models).
"""

from typing import Final, List

from nequip.data import AtomicDataDict
from nequip.scripts._compile_utils import (
    BATCH_INPUTS,
    PAIR_NEQUIP_INPUTS,
    batched_data_settings,
    register_compile_targets,
    single_frame_batch_map_settings,
    single_frame_data_settings,
)

from ._keys import DIELECTRIC_IONIC_KEY

BATCH_DIELECTRIC_TARGET: Final[str] = "batch_dielectric"
BATCH_DIELECTRIC_STATIC_TARGET: Final[str] = "batch_dielectric_static"
ASE_DIELECTRIC_TARGET: Final[str] = "ase_dielectric"
ASE_DIELECTRIC_STATIC_TARGET: Final[str] = "ase_dielectric_static"

DIELECTRIC_OUTPUTS: Final[List[str]] = [AtomicDataDict.DIELECTRIC_KEY]
STATIC_OUTPUTS: Final[List[str]] = [
    AtomicDataDict.DIELECTRIC_KEY,
    DIELECTRIC_IONIC_KEY,
    AtomicDataDict.BORN_CHARGE_KEY,
]


def _batch_target(outputs: List[str]) -> dict:
    # nequip's `batch` settings: every batch dimension dynamic, traced on two frames so that the
    # number of frames does not specialise to 1
    return {
        "input": BATCH_INPUTS,
        "output": outputs,
        "batch_map_settings": lambda batch_map: batch_map,
        "data_settings": batched_data_settings,
    }


def _single_frame_target(outputs: List[str]) -> dict:
    return {
        "input": PAIR_NEQUIP_INPUTS,
        "output": outputs,
        "batch_map_settings": single_frame_batch_map_settings,
        "data_settings": single_frame_data_settings,
    }


register_compile_targets(
    {
        BATCH_DIELECTRIC_TARGET: _batch_target(DIELECTRIC_OUTPUTS),
        BATCH_DIELECTRIC_STATIC_TARGET: _batch_target(STATIC_OUTPUTS),
        ASE_DIELECTRIC_TARGET: _single_frame_target(DIELECTRIC_OUTPUTS),
        ASE_DIELECTRIC_STATIC_TARGET: _single_frame_target(STATIC_OUTPUTS),
    }
)
