"""Dielectric-tensor models on pretrained universal potentials (foundation backbones).

The backbone (SevenNet by name or checkpoint, or a nequip checkpoint/package) gives equivariant
node features after its first ``backbone_layers`` interaction blocks; AnisoNet's head reads them:
optional gated convolutions of its own, then ``0e+2e`` per atom, mean pooling and the symmetric
Cartesian readout.
"""

import hashlib
import json
import os
from typing import Optional, Sequence, Union

import ase.data
import torch
from e3nn import o3
from nequip.data import AtomicDataDict
from nequip.model import model_builder
from nequip.nn import GraphModel, SequentialGraphNetwork
from nequip.utils.dtype import torch_default_dtype

from .. import _keys
from ..nn import NequIPBackbone, SevenNetBackbone, SevenNetInteraction
from ..variables import resolve_readout
from .anisonet import _trunk, dielectric_head

_NEQUIP_SUFFIXES = (".ckpt", ".nequip.zip")
# bump when the features a backbone module computes change for the same weights and settings
_FEATURES_FORMAT = 1
FOUNDATION_EXTRA = "pip install 'aniso-nequip[foundation]'"


def _missing_element_error(backbone: str, missing: Sequence[str]) -> ValueError:
    return ValueError(
        f"backbone `{backbone}` does not know the element(s) {', '.join(missing)}: remove them "
        "from `model_type_names` (a structure holding them cannot be predicted with this backbone)"
    )


def _sevennet(backbone: str):
    """SevenNet model and config from a pretrained name (``7net-0``, ``7net-l3i5``, ...) or a
    checkpoint path."""
    try:
        import sevenn.util
    except ImportError as err:
        raise ImportError(
            f"backbone `{backbone}` needs SevenNet, which is not installed: {FOUNDATION_EXTRA}"
        ) from err
    path = backbone if os.path.isfile(backbone) else None
    if path is None:
        try:
            path = sevenn.util.pretrained_name_to_path(backbone)
        except Exception as err:  # sevenn raises a bare error for unknown names
            raise ValueError(
                f"backbone `{backbone}` is neither a file nor a SevenNet pretrained model name "
                f"(e.g. 7net-0, 7net-l3i5): {err}"
            ) from err
    # SevenNet's checkpoint patches compare float32 tensors: load in float32, then cast to the
    # dtype the model is being built in
    dtype = torch.get_default_dtype()
    with torch_default_dtype(torch.float32):
        model, config = sevenn.util.model_from_checkpoint(path)
    return model.to(dtype), config


def _recompute_wigner_3j(module: torch.nn.Module) -> None:
    """Recompute the Wigner 3j constants of ``module``'s e3nn tensor products in its dtype.

    A SevenNet checkpoint stores them in float32 (to ~1e-7), which would limit a float64 model's
    rotation equivariance to that; the stored sign of each block is kept."""
    from e3nn.o3 import wigner_3j

    for name, buffer in module.named_buffers():
        parts = name.rsplit(".", 1)[-1].split("_")
        if parts[:2] != ["", "w3j"]:
            continue
        exact = wigner_3j(*(int(l) for l in parts[2:5])).to(buffer)
        sign = 1.0 if torch.allclose(buffer, exact, atol=1e-5) else -1.0
        assert torch.allclose(buffer, sign * exact, atol=1e-5), name
        with torch.no_grad():
            buffer.copy_(sign * exact)


def _parity_sign(irreps) -> torch.Tensor:
    """``(-1)^l`` of each component of ``irreps``."""
    return torch.cat([torch.full((mul * ir.dim,), (-1.0) ** ir.l) for mul, ir in o3.Irreps(irreps)])


def sevennet_backbone(
    backbone: str, type_names: Sequence[str], r_max: float, num_layers: int, irreps_in=None
) -> SevenNetBackbone:
    """The element embedding, edge embedding and first ``num_layers`` interaction blocks of a
    SevenNet model, as a :class:`~aniso_nequip.nn.SevenNetBackbone` of its own submodules."""
    model, config = _sevennet(backbone)
    modules = model._modules
    total = config["num_convolution_layer"]
    if not 1 <= num_layers <= total:
        raise ValueError(
            f"`backbone_layers` must be in 1..{total} for `{backbone}`, got {num_layers}"
        )
    supported = (
        config.get("interaction_type", "nequip") == "nequip"
        and config.get("self_connection_type", "linear") == "linear"
        and not config.get("use_modal_node_embedding")
    )
    if not supported:
        raise ValueError(f"backbone `{backbone}`: only single-modal NequIP-type SevenNet models "
                         "with linear self-connections are supported")  # fmt: skip
    if float(config["cutoff"]) != float(r_max):
        raise ValueError(f"backbone `{backbone}` has cutoff {config['cutoff']} A: set r_max to it "
                         f"(got {r_max})")  # fmt: skip

    type_map = config["_type_map"]
    numbers = [ase.data.atomic_numbers.get(name) for name in type_names]
    missing = [n for n, z in zip(type_names, numbers) if z not in type_map]
    if missing:
        raise _missing_element_error(backbone, missing)

    edge = modules["edge_embedding"]
    cutoff_config = config["cutoff_function"]
    if cutoff_config["cutoff_function_name"] == "XPLOR":
        envelope, cutoff_on, p = "xplor", float(cutoff_config["cutoff_on"]), 0.0
    elif cutoff_config["cutoff_function_name"] == "poly_cut":
        envelope, cutoff_on, p = "polynomial", 0.0, float(cutoff_config["poly_cut_p_value"])
    else:
        raise ValueError(f"backbone `{backbone}`: cutoff function {cutoff_config} is not supported")

    layers = []
    for i in range(num_layers):
        conv = modules[f"{i}_convolution"]
        layers.append(
            SevenNetInteraction(
                self_connection=modules[f"{i}_self_connection_intro"].linear,
                linear_1=modules[f"{i}_self_interaction_1"].linear,
                weight_nn=conv.weight_nn,
                tensor_product=conv.convolution,
                linear_2=modules[f"{i}_self_interaction_2"].linear,
                gate=modules[f"{i}_equivariant_gate"].gate,
                denominator=float(conv.denominator),
            )
        )
    for layer in layers:
        _recompute_wigner_3j(layer)
    irreps_out = layers[-1].gate.irreps_out
    inversion_sign, first_layer_sign = None, None
    if not config.get("is_parity", True):
        # parity-free source: symmetrize under inversion (even, then odd copies of the features)
        inversion_sign = _parity_sign(edge.spherical.sph.irreps_out)
        if all(ir.l == 0 for _, ir in o3.Irreps(layers[0].linear_1.irreps_in)):
            first_layer_sign = _parity_sign(layers[0].gate.irreps_out)
        irreps_out = o3.Irreps(
            [(mul, (ir.l, 1)) for mul, ir in irreps_out]
            + [(mul, (ir.l, -1)) for mul, ir in irreps_out]
        )
    return SevenNetBackbone(
        type_map=torch.tensor([type_map[z] for z in numbers]),
        embedding=modules["onehot_to_feature_x"].linear,
        bessel_coeffs=edge.basis_function.coeffs.detach().clone(),
        r_max=float(config["cutoff"]),
        envelope=envelope,
        cutoff_on=cutoff_on,
        polynomial_p=p,
        spherical_harmonics=edge.spherical.sph,
        layers=layers,
        irreps_out=repr(irreps_out),
        num_species=modules["onehot_idx_to_onehot"].num_classes,
        inversion_sign=inversion_sign,
        first_layer_sign=first_layer_sign,
        partner_field=None if inversion_sign is None else _keys.INVERSION_PARTNER_KEY,
        irreps_in=irreps_in,
    )


def nequip_backbone(
    backbone: str, type_names: Sequence[str], r_max: float, num_layers: int, irreps_in=None
) -> NequIPBackbone:
    """The embeddings and first ``num_layers`` convolutions (``ConvNetLayer``) of a nequip model
    in a checkpoint or package, as a :class:`~aniso_nequip.nn.NequIPBackbone`."""
    from nequip.model import ModelFromCheckpoint, ModelFromPackage
    from nequip.model.utils import fresh_model_builder_context

    if not os.path.isfile(backbone):
        raise ValueError(f"backbone file `{backbone}` does not exist")
    loader = ModelFromPackage if backbone.endswith(".nequip.zip") else ModelFromCheckpoint
    with fresh_model_builder_context():
        source = loader(backbone)["sole_model"]
    if float(source.metadata["r_max"]) != float(r_max):
        raise ValueError(f"backbone `{backbone}` has r_max {source.metadata['r_max']} A: set "
                         f"r_max to it (got {r_max})")  # fmt: skip
    missing = [name for name in type_names if name not in source.type_names]
    if missing:
        raise _missing_element_error(backbone, missing)

    kept, convolutions = {}, 0
    for name, module in source.model.named_children():
        kept[name] = module
        convolutions += type(module).__name__ == "ConvNetLayer"
        if convolutions == num_layers:
            break
    if convolutions < num_layers:
        raise ValueError(f"`backbone_layers` must be in 1..{convolutions} for `{backbone}`, got "
                         f"{num_layers}")  # fmt: skip
    trunk = SequentialGraphNetwork(kept)
    trunk.requires_grad_(True)
    type_map = torch.tensor([source.type_names.index(name) for name in type_names])
    return NequIPBackbone(trunk=trunk, type_map=type_map, irreps_in=irreps_in)


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
        isotropic_shift, isotropic_scale, anisotropic_scale, readout, physical_readout: the
            readout, as in :func:`~aniso_nequip.model.AnisoNetModel`
        **kwargs: ``seed``, ``model_dtype``, ``r_max`` (must be the backbone's cutoff),
            ``type_names`` (each must be known to the backbone), ``avg_num_neighbors`` and the
            other arguments of the head's convolutions, as in
            :func:`~aniso_nequip.model.AnisoNetModel`
    """
    type_names, r_max = kwargs["type_names"], kwargs["r_max"]
    readout = resolve_readout(readout, physical_readout)

    def build_backbone(irreps_in):
        if freeze_backbone:
            return frozen_backbone(backbone, type_names, r_max, backbone_layers, irreps_in)
        module = load_backbone(backbone, type_names, r_max, backbone_layers, irreps_in)
        return module.requires_grad_(True)

    modules, prev_irreps = _trunk(
        last_layer=("0e", "2e"), num_layers=num_layers, l_max=l_max, num_features=num_features,
        backbone=build_backbone, **kwargs,
    )  # fmt: skip
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
