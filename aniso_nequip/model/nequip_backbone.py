"""A nequip model's trunk as a foundation backbone: the embeddings and first convolutions of a
model in a nequip checkpoint (``.ckpt``) or package (``.nequip.zip``)."""

import os
from typing import Sequence

import torch
from nequip.nn import SequentialGraphNetwork

from ..nn import NequIPBackbone


def missing_element_error(backbone: str, missing: Sequence[str]) -> ValueError:
    """The error of a backbone that lacks elements of ``model_type_names``."""
    return ValueError(
        f"backbone `{backbone}` does not know the element(s) {', '.join(missing)}: remove them "
        "from `model_type_names` (a structure holding them cannot be predicted with this backbone)"
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
        raise missing_element_error(backbone, missing)

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
