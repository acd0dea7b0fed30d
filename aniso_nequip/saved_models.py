"""What a saved model records about its training run: a nequip checkpoint's hyperparameters
(the model's builder configuration and the run's ``info_dict``), which ``nequip-package`` copies
into the package's ``model/config.yaml``."""

import os
import zipfile
from typing import Tuple, Union

import torch
import yaml
from omegaconf import OmegaConf

PACKAGE_SUFFIX = ".nequip.zip"


def _plain(value) -> dict:
    return (
        OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else dict(value)
    )


def _recorded(path: Union[str, os.PathLike]) -> Tuple[dict, dict]:
    """``(model configuration, info_dict)`` of a checkpoint or package (``{}`` when absent)."""
    path = str(path)
    if path.endswith(PACKAGE_SUFFIX):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("model/config.yaml")]
            info = (yaml.safe_load(archive.read(names[0])) or {}) if names else {}
        return _plain(info.get("training_module", {}).get("model", {})), info
    # memory-mapped: only the small configuration is read, not the weights
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    hparams = checkpoint.get("hyper_parameters", {})
    return _plain(hparams.get("model", {})), _plain(hparams.get("info_dict", {}))


def model_config(path: Union[str, os.PathLike]) -> dict:
    """The configuration the model of a checkpoint (``.ckpt``) or package (``.nequip.zip``) is
    built from (for a checkpoint: what nequip rebuilds it from when loading it)."""
    return _recorded(path)[0]


def training_info(path: Union[str, os.PathLike]) -> dict:
    """The ``info_dict`` of the run that saved a checkpoint or package: ``training_module``,
    ``data``, ... and what :class:`~aniso_nequip.train.SelfContainedCheckpoints` adds
    (``training_elements``)."""
    return _recorded(path)[1]
