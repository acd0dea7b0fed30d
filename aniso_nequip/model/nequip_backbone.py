"""A nequip model's trunk as a foundation backbone: the embeddings and first convolutions of a
model in a nequip checkpoint (``.ckpt``) or package (``.nequip.zip``)."""

import os
from typing import Sequence

import torch
from nequip.nn import SequentialGraphNetwork

from ..nn import NequIPBackbone
from ..variables import RULES, check_variable


def missing_element_error(backbone: str, missing: Sequence[str]) -> ValueError:
    """The error of a backbone that lacks elements of ``model_type_names``."""
    return ValueError(
        f"backbone `{backbone}` does not know the element(s) {', '.join(missing)}: remove them "
        "from `model_type_names` (a structure holding them cannot be predicted with this backbone)"
    )


def check_backbone_layers(backbone: str, num_layers: int, available: int) -> None:
    """Refuse a ``backbone_layers`` outside its rule (:data:`aniso_nequip.variables.RULES`) or
    beyond the ``available`` interaction blocks of ``backbone``."""
    check_variable("backbone_layers", num_layers)
    if num_layers > available:
        raise ValueError(
            f"`backbone_layers` must be in {RULES['backbone_layers'].low:g}..{available} for "
            f"`{backbone}`, got {num_layers}"
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
        raise ValueError(
            f"backbone `{backbone}` has r_max {source.metadata['r_max']} A: set "
            f"r_max to it (got {r_max})"
        )
    missing = [name for name in type_names if name not in source.type_names]
    if missing:
        raise missing_element_error(backbone, missing)

    is_convolution = [type(m).__name__ == "ConvNetLayer" for m in source.model.children()]
    check_backbone_layers(backbone, num_layers, sum(is_convolution))
    kept, convolutions = {}, 0
    for (name, module), convolution in zip(source.model.named_children(), is_convolution):
        kept[name] = module
        convolutions += convolution
        if convolutions == num_layers:
            break
    trunk = SequentialGraphNetwork(kept)
    trunk.requires_grad_(True)
    type_map = torch.tensor([source.type_names.index(name) for name in type_names])
    return NequIPBackbone(trunk=trunk, type_map=type_map, irreps_in=irreps_in)
