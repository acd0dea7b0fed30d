"""Model builders (``@nequip.model.model_builder``) for dielectric tensors."""

from .anisonet import AnisoNetModel, ScalarAnisoNetModel

__all__ = ["AnisoNetModel", "ScalarAnisoNetModel"]
