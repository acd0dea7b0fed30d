"""Graph modules of the aniso-nequip models.

These modules end up inside ``nequip-package`` archives, so they import only what nequip's own
``nn`` imports (``nequip.data``, ``nequip.nn`` and e3nn submodules).
"""

from .backbone import NequIPBackbone, SevenNetBackbone, SevenNetInteraction
from .dropout import IrrepsDropout
from .radial import GaussianEdgeLengthEncoding
from .readout import (
    BornChargeReadout,
    GraphMeanPool,
    LocalFieldReadout,
    SymmetricTensorReadout,
)

__all__ = [
    "BornChargeReadout",
    "GaussianEdgeLengthEncoding",
    "GraphMeanPool",
    "IrrepsDropout",
    "LocalFieldReadout",
    "NequIPBackbone",
    "SevenNetBackbone",
    "SevenNetInteraction",
    "SymmetricTensorReadout",
]
