"""Optimizer parameter groups: a smaller learning rate for a pretrained backbone."""

from typing import Dict, List

import torch

from ..variables import check_variable


def BackboneParamGroups(model: torch.nn.Module, backbone_lr: float) -> List[Dict]:
    """Parameter groups for ``training_module.optimizer.param_groups``: the backbone's trainable
    parameters (names containing ``backbone``) at ``backbone_lr``, every other trainable one at
    the optimizer's ``lr``. Frozen parameters are left out; a ``backbone_lr`` out of its rule
    (:data:`aniso_nequip.variables.RULES`) raises :class:`~aniso_nequip.errors.InputError`.

    .. code-block:: yaml

      optimizer:
        _target_: torch.optim.AdamW
        lr: 0.003
        param_groups:
          _target_: aniso_nequip.model.BackboneParamGroups
          backbone_lr: 0.0003
    """
    check_variable("backbone_lr", backbone_lr)
    backbone, head = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (backbone if "backbone" in name.split(".") else head).append(param)
    groups = [{"params": head}]
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr})
    return groups
