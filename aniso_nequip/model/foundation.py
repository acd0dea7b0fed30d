"""Dielectric-tensor models on pretrained universal potentials (foundation backbones).

The backbone (SevenNet by name or checkpoint, :mod:`~aniso_nequip.model.sevennet_backbone`, or a
nequip checkpoint/package, :mod:`~aniso_nequip.model.nequip_backbone`) gives equivariant node
features after its first ``backbone_layers`` interaction blocks; AnisoNet's head reads them:
optional gated convolutions of its own, then ``0e+2e`` per atom, mean pooling and the symmetric
Cartesian readout.
"""

import hashlib
import json
from typing import Optional, Sequence, Union

import torch
from e3nn import o3
from nequip.data import AtomicDataDict
from nequip.model import model_builder
from nequip.nn import GraphModel, SequentialGraphNetwork

from .. import _keys
from ..nn import NequIPBackbone, SevenNetBackbone
from ..variables import check_variable, resolve_readout
from .anisonet import _trunk, dielectric_head
from .nequip_backbone import nequip_backbone
from .sevennet_backbone import FOUNDATION_EXTRA, sevennet_backbone

__all__ = [
    "FOUNDATION_EXTRA",
    "FoundationAnisoNetModel",
    "backbone_fingerprint",
    "frozen_backbone",
    "load_backbone",
    "nequip_backbone",
    "sevennet_backbone",
]

_NEQUIP_SUFFIXES = (".ckpt", ".nequip.zip")
# bump when the features a backbone module computes change for the same weights and settings
_FEATURES_FORMAT = 1


def load_backbone(
    backbone: str, type_names: Sequence[str], r_max: float, num_layers: int, irreps_in=None
) -> Union[SevenNetBackbone, NequIPBackbone]:
    """A nequip checkpoint/package (by suffix) or else a SevenNet name or checkpoint."""
    build = nequip_backbone if backbone.endswith(_NEQUIP_SUFFIXES) else sevennet_backbone
    return build(backbone, type_names, r_max, num_layers, irreps_in=irreps_in)


def backbone_fingerprint(module: torch.nn.Module, r_max: float, num_layers: int) -> int:
    """A 60-bit fingerprint of a backbone module's node features: its class, weights and buffers
    (the type map aside: features depend on the element, not on the model's type order), output
    irreps, cutoff, envelope, layers and dtype. The frozen-backbone feature cache keys its files by
    it, and a backbone reads cached features only when theirs is its own."""
    settings = {
        "format": _FEATURES_FORMAT,
        "class": type(module).__name__,
        "r_max": float(r_max),
        "layers": int(num_layers),
        "dtype": str(torch.get_default_dtype()),
        "irreps_out": str(module.irreps_out[AtomicDataDict.NODE_FEATURES_KEY]),
        **{
            name: getattr(module, name)
            for name in ("envelope", "cutoff_on", "polynomial_p", "symmetrize_inversion")
            if hasattr(module, name)
        },
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        if name.split(".")[-1] == "type_map":
            continue
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return int(digest.hexdigest()[:15], 16)


def frozen_backbone(
    backbone: str, type_names: Sequence[str], r_max: float, num_layers: int, irreps_in=None
) -> Union[SevenNetBackbone, NequIPBackbone]:
    """:func:`load_backbone` with its weights frozen, reading cached features when the data
    carries them (:class:`~aniso_nequip.nn.backbone.CachedFeaturesMixin`), in the default
    dtype."""
    module = load_backbone(backbone, type_names, r_max, num_layers, irreps_in).requires_grad_(False)
    fingerprint = backbone_fingerprint(module, r_max, num_layers)
    return module.read_cached_features(
        _keys.BACKBONE_FEATURES_KEY, _keys.BACKBONE_FEATURES_ID_KEY, fingerprint
    )


@model_builder
def FoundationAnisoNetModel(
    backbone: str = "7net-0",
    backbone_layers: int = 2,
    freeze_backbone: bool = True,
    num_layers: int = 1,
    l_max: int = 2,
    num_features: int = 32,
    head_input_features: Optional[int] = None,
    isotropic_shift: float = 0.0,
    isotropic_scale: float = 1.0,
    anisotropic_scale: float = 1.0,
    readout: str = "linear",
    physical_readout: Optional[bool] = None,
    **kwargs,
) -> GraphModel:
    """AnisoNet's dielectric head on the node features of a pretrained universal potential.

    The backbone runs its own element embedding, edge embedding and first ``backbone_layers``
    interaction blocks on this model's graphs; ``num_layers`` gated convolutions of AnisoNet's
    kind (``l_max``, ``num_features``, the last one keeping ``0e`` and ``2e``) follow, then a
    per-atom linear map to ``1x0e+1x2e``, mean pooling and the symmetric Cartesian readout.
    With ``num_layers=0`` the per-atom linear reads the backbone's features directly.

    Args:
        backbone (str): SevenNet pretrained name (``7net-0``, ``7net-l3i5``), a SevenNet
            checkpoint (``.pth``), or a nequip checkpoint (``.ckpt``) / package (``.nequip.zip``)
        backbone_layers (int): interaction blocks of the backbone to run (its deepest blocks of
            an energy model keep few or no ``2e`` features)
        freeze_backbone (bool): keep the backbone's weights fixed (only the head trains)
        num_layers (int): gated convolutions of the head (default ``1``)
        l_max (int): rotation order of the head's convolutions (default ``2``)
        num_features (int): channels of the head's convolutions (default ``32``)
        head_input_features (int): channels of each irrep the backbone's features are mapped to
            (per atom, linearly) before the head's convolutions, whose tensor products then run
            on that width (default ``None``: on all of the backbone's channels)
        isotropic_shift, isotropic_scale, anisotropic_scale, readout, physical_readout: the
            readout, as in :func:`~aniso_nequip.model.AnisoNetModel`
        **kwargs: ``seed``, ``model_dtype``, ``r_max`` (must be the backbone's cutoff),
            ``type_names`` (each must be known to the backbone), ``avg_num_neighbors`` and the
            other arguments of the head's convolutions, as in
            :func:`~aniso_nequip.model.AnisoNetModel`
    """
    type_names, r_max = kwargs["type_names"], kwargs["r_max"]
    check_variable("freeze_backbone", freeze_backbone)
    readout = resolve_readout(readout, physical_readout)

    def build_backbone(irreps_in):
        if freeze_backbone:
            return frozen_backbone(backbone, type_names, r_max, backbone_layers, irreps_in)
        module = load_backbone(backbone, type_names, r_max, backbone_layers, irreps_in)
        return module.requires_grad_(True)

    modules, prev_irreps = _trunk(
        last_layer=("0e", "2e"),
        num_layers=num_layers,
        l_max=l_max,
        num_features=num_features,
        head_input_features=head_input_features,
        backbone=build_backbone,
        **kwargs,
    )
    node_irreps = o3.Irreps(prev_irreps[AtomicDataDict.NODE_FEATURES_KEY])
    if o3.Irrep("2e") not in [ir for _, ir in node_irreps]:
        raise ValueError(
            f"no 2e feature reaches the readout (backbone `{backbone}` after {backbone_layers} "
            f"block(s): {node_irreps}): use fewer `backbone_layers` or `num_layers` >= 1"
        )
    modules.update(
        dielectric_head(
            prev_irreps,
            isotropic_shift=isotropic_shift,
            isotropic_scale=isotropic_scale,
            anisotropic_scale=anisotropic_scale,
            readout=readout,
        )
    )
    network = SequentialGraphNetwork(modules)
    # the optional inputs of the backbone reach it (nequip's GraphModel passes on only the first
    # module's inputs): the feature cache's fields, and the inversion partners
    optional = [getattr(modules["backbone"], "partner_field", None)]
    if freeze_backbone:
        optional += [_keys.BACKBONE_FEATURES_KEY, _keys.BACKBONE_FEATURES_ID_KEY]
    network.irreps_in.update({field: None for field in optional if field})
    return network
