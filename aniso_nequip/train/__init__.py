"""Loss, metric and data-statistics hooks for nequip's training machinery."""

from .logging import loggers
from .modifiers import (
    AnisotropyRatio,
    PolycrystallineConstant,
    SortedEigenvalues,
    SymmetricTensorIrreps,
    TensorIsotropicPart,
)
from .param_groups import BackboneParamGroups
from .pruning import OptunaPruning

__all__ = [
    "BackboneParamGroups",
    "loggers",
    "OptunaPruning",
    "AnisotropyRatio",
    "PolycrystallineConstant",
    "SortedEigenvalues",
    "SymmetricTensorIrreps",
    "TensorIsotropicPart",
]
