"""Model builders (``@nequip.model.model_builder``) for dielectric tensors, and the optimizer
parameter groups of a pretrained backbone."""

from .anisonet import AnisoNetModel, ScalarAnisoNetModel
from .foundation import FoundationAnisoNetModel
from .param_groups import BackboneParamGroups
from .static import AnisoNetStaticModel

__all__ = [
    "AnisoNetModel",
    "AnisoNetStaticModel",
    "BackboneParamGroups",
    "FoundationAnisoNetModel",
    "ScalarAnisoNetModel",
]
