"""SevenNet checkpoint surgery: a SevenNet model's element embedding, edge embedding and first
interaction blocks, rebuilt as an :class:`~aniso_nequip.nn.SevenNetBackbone` of its own
submodules (e3nn linears, tensor products and gates; SevenNet itself is needed only to read the
checkpoint)."""

import os
from typing import Sequence

import ase.data
import torch
from e3nn import o3
from nequip.utils.dtype import torch_default_dtype

from .. import _keys
from ..nn import SevenNetBackbone, SevenNetInteraction
from .nequip_backbone import check_backbone_layers, missing_element_error

FOUNDATION_EXTRA = "pip install 'aniso-nequip[foundation]'"
"""What installs SevenNet."""


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
    check_backbone_layers(backbone, num_layers, total)
    supported = (
        config.get("interaction_type", "nequip") == "nequip"
        and config.get("self_connection_type", "linear") == "linear"
        and not config.get("use_modal_node_embedding")
    )
    if not supported:
        raise ValueError(
            f"backbone `{backbone}`: only single-modal NequIP-type SevenNet models "
            "with linear self-connections are supported"
        )
    if float(config["cutoff"]) != float(r_max):
        raise ValueError(
            f"backbone `{backbone}` has cutoff {config['cutoff']} A: set r_max to it (got {r_max})"
        )

    type_map = config["_type_map"]
    numbers = [ase.data.atomic_numbers.get(name) for name in type_names]
    missing = [n for n, z in zip(type_names, numbers) if z not in type_map]
    if missing:
        raise missing_element_error(backbone, missing)

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
