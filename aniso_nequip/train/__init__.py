"""Loss, metrics and callbacks for nequip's training machinery.

The field modifiers and the statistics manager live in :mod:`aniso_nequip.data` (as nequip keeps
theirs), :func:`BackboneParamGroups` in :mod:`aniso_nequip.model` and :class:`OptunaPruning` in
:mod:`aniso_nequip.sweep`; they are re-exported here under their old names, which saved configs
and checkpoints give as ``_target_``.
"""

from ..data.modifier import (
    AnisotropyRatio,
    PolycrystallineConstant,
    SortedEigenvalues,
    SymmetricTensorIrreps,
    TensorIsotropicPart,
)
from ..data.stats_manager import DielectricStatisticsManager
from ..model.param_groups import BackboneParamGroups
from ..sweep.pruning import OptunaPruning
from .checks import CheckVariables
from .feature_cache import BackboneFeatureCache
from .finetune import SelfContainedCheckpoints
from .logging import loggers
from .metrics_manager import DielectricLoss, DielectricMetrics
from .progress import TrainingProgress

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
