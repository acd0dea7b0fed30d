"""Loss, metric and data-statistics hooks for nequip's training machinery."""

from .modifiers import (
    AnisotropyRatio,
    PolycrystallineConstant,
    SortedEigenvalues,
    SymmetricTensorIrreps,
)

__all__ = [
    "AnisotropyRatio",
    "PolycrystallineConstant",
    "SortedEigenvalues",
    "SymmetricTensorIrreps",
]
