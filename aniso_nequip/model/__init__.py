"""Model builders (``@nequip.model.model_builder``) for dielectric tensors."""

from .anisonet import AnisoNetModel, ScalarAnisoNetModel
from .foundation import FoundationAnisoNetModel
from .static import AnisoNetStaticModel

__all__ = [
    "AnisoNetModel",
    "AnisoNetStaticModel",
    "FoundationAnisoNetModel",
    "ScalarAnisoNetModel",
]
