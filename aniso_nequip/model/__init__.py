"""Model builders (``@nequip.model.model_builder``) for dielectric tensors."""

from .anisonet import AnisoNetModel, ScalarAnisoNetModel
from .static import AnisoNetStaticModel

__all__ = ["AnisoNetModel", "AnisoNetStaticModel", "ScalarAnisoNetModel"]
