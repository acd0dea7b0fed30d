"""Loss, metric and data-statistics hooks for nequip's training machinery."""

from .checks import CheckVariables
from .feature_cache import BackboneFeatureCache
from .finetune import SelfContainedCheckpoints
from .logging import loggers
from .metrics_manager import DielectricLoss, DielectricMetrics, DielectricStatisticsManager
from ..data.modifier import (
    AnisotropyRatio,
    PolycrystallineConstant,
    SortedEigenvalues,
    SymmetricTensorIrreps,
    TensorIsotropicPart,
)
from ..model.param_groups import BackboneParamGroups
from .progress import TrainingProgress
from ..sweep.pruning import OptunaPruning

__all__ = [
    "AnisotropyRatio",
    "BackboneFeatureCache",
    "BackboneParamGroups",
    "CheckVariables",
    "DielectricLoss",
    "DielectricMetrics",
    "DielectricStatisticsManager",
    "OptunaPruning",
    "PolycrystallineConstant",
    "SelfContainedCheckpoints",
    "SortedEigenvalues",
    "SymmetricTensorIrreps",
    "TensorIsotropicPart",
    "TrainingProgress",
    "loggers",
]
