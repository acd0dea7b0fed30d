"""Fine-tuning with nequip's saved-model loaders, made self-contained.

nequip's loaders (``load_saved_model``, ``ModelFromCheckpoint``, ``ModelFromPackage``) take the
architecture and weights from the source model, so a fine-tuning config never repeats the
architecture; but the checkpoints they write store only the loader and the source's path, and
every later load (evaluation, packaging, resuming) reads the source file again.
:class:`SelfContainedCheckpoints` writes the source's own builder configuration into them instead:
a fine-tuned checkpoint holds its architecture and weights and no longer needs the source file.
It also records the elements of the training data (``training_elements`` in the checkpoint's
``info_dict``, which ``nequip-package`` copies into the package's ``config.yaml``), so inference
can warn about crystals with elements the model never saw.
"""

from typing import List, Optional, Sequence

import lightning
from omegaconf import OmegaConf

from ..data.files import dataset_elements
from ..errors import InputError
from ..saved_models import model_config as saved_model_config
from ..variables import check_variable

_LOADERS = {
    "ModelFromCheckpoint": "checkpoint_path",
    "ModelFromPackage": "package_path",
    "load_saved_model": "input_path",
}


def _loader_path(model_config: dict) -> Optional[str]:
    """The source path when ``model_config`` is a nequip saved-model loader, else ``None``."""
    target = str(model_config.get("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    if target.startswith("nequip.") and name in _LOADERS:
        return str(model_config[_LOADERS[name]])
    return None


def source_model_config(model_config: dict) -> dict:
    """The builder configuration of the model a saved-model loader configuration loads
    (following loaders of loaders); ``model_config`` itself when it is a builder's."""
    if OmegaConf.is_config(model_config):
        model_config = OmegaConf.to_container(model_config, resolve=True)
    model_config = dict(model_config)
    while (path := _loader_path(model_config)) is not None:
        model_config = saved_model_config(path)
    return model_config


class SelfContainedCheckpoints(lightning.Callback):
    """Checks that the data match the model, records the training data's elements and makes
    fine-tuned checkpoints self-contained.

    At setup, the model's ``type_names`` and ``r_max`` (for a fine-tuned model: the source
    model's) must equal the ones the data transforms use (``model_type_names``, ``r_max`` of
    the config): a reordered element list or another cutoff would silently feed the source
    model other atom types or neighbourhoods than it was trained on. When the model comes
    from ``nequip.model.ModelFromCheckpoint`` / ``ModelFromPackage``, every checkpoint saved
    gets the source model's builder configuration in place of the loader. Every checkpoint's
    ``info_dict`` gets ``training_elements``: the elements of the training dataset (of this
    run only, not those a fine-tuned source model saw), when the datasets come from
    :func:`~aniso_nequip.data.dataset_from_file`.

    The optimizer's ``lr`` and ``weight_decay`` are checked at setup too, before any training
    (:data:`aniso_nequip.variables.RULES`). Every refusal is an
    :class:`~aniso_nequip.errors.InputError`.

    Args:
        type_names (Sequence[str]): element order of the data transforms
        r_max (float): cutoff of the data transforms' neighbour lists
    """

    def __init__(self, type_names: Sequence[str], r_max: float):
        super().__init__()
        check_variable("r_max", r_max)
        self.type_names = list(type_names)
        self.r_max = float(r_max)
        self.source: Optional[dict] = None
        self.training_elements: Optional[List[str]] = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if hasattr(datamodule, "train_dataset"):
            self.training_elements = dataset_elements(datamodule.train_dataset)
        optimizer = pl_module.hparams.get("optimizer") or {}
        for name in ("lr", "weight_decay"):
            if name in optimizer:
                check_variable(name, optimizer[name])
        model_config = pl_module.hparams["model"]
        path = _loader_path(model_config)
        config = self.source if self.source is not None else source_model_config(model_config)
        self.source = config if path is not None else None
        origin = f"the model of `{path}`" if path else "the model"
        if list(config["type_names"]) != self.type_names:
            raise InputError(
                f"{origin} has type_names {list(config['type_names'])} but the data are mapped "
                f"with model_type_names {self.type_names}: give the same elements in the same "
                "order (model_type_names=...)"
            )
        if float(config["r_max"]) != self.r_max:
            raise InputError(
                f"{origin} has r_max {config['r_max']} but the data's neighbour lists use "
                f"r_max {self.r_max}: set r_max={config['r_max']}"
            )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        hparams = dict(checkpoint["hyper_parameters"])
        info = dict(hparams["info_dict"])
        if self.training_elements is not None:
            info["training_elements"] = self.training_elements
        if self.source is not None:
            info["training_module"] = {**info["training_module"], "model": self.source}
            hparams["model"] = self.source
        hparams["info_dict"] = info
        checkpoint["hyper_parameters"] = hparams
