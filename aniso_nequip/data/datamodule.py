"""The datamodule of the configs: dataset files (extxyz or HDF5) by path, as nequip's
``ASEDataModule``, read by :func:`~aniso_nequip.data.dataset_from_file`."""

from typing import Callable, Dict, List, Optional, Union

from nequip.data.datamodule import NequIPDataModule
from omegaconf import OmegaConf

from ..variables import RULES, check_variable

Paths = Union[str, List[str]]
_BATCH_SIZE = RULES["batch_size"]


def _as_list(value) -> list:
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return list(value) if isinstance(value, (list, tuple)) else [value]


class DielectricDataModule(NequIPDataModule):
    """``NequIPDataModule`` whose datasets are files: ``train_file_path``, ``val_file_path``,
    ``test_file_path`` (a path or a list of paths each), or ``split_dataset`` entries with a
    ``file_path`` and the ``train``/``val``/``test`` fractions (or counts) to split it into.

    Every file is read with the same options by :func:`~aniso_nequip.data.dataset_from_file`.

    Args:
        seed (int): data seed (shuffling, ``split_dataset``)
        train_file_path, val_file_path, test_file_path: dataset files (``.extxyz[.gz]``, ``.h5``)
        split_dataset (Dict/List[Dict]): ``{file_path, train, val, test}`` entries
        transforms (List[Callable]): data transforms (type mapper, neighbour list)
        include_keys (List[str]): ``atoms.info`` fields to load besides the ASE properties
        exclude_keys (List[str]): fields in the files that are not loaded
        exclude_structures_in (List[str]): files whose crystals are left out of every dataset
        **kwargs: ``NequIPDataModule``'s dataloaders and ``stats_manager``

    A dataloader's ``batch_size`` below 1 raises :class:`~aniso_nequip.errors.InputError`
    before any file is read.
    """

    def __init__(
        self,
        seed: int,
        train_file_path: Paths = (),
        val_file_path: Paths = (),
        test_file_path: Paths = (),
        split_dataset: Union[Dict, List[Dict]] = (),
        transforms: List[Callable] = (),
        include_keys: Optional[List[str]] = (),
        exclude_keys: Optional[List[str]] = (),
        exclude_structures_in: Optional[List[str]] = (),
        **kwargs,
    ):
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if "batch_size" in (kwargs.get(loader) or {}):
                check_variable(f"{loader}.batch_size", kwargs[loader]["batch_size"], _BATCH_SIZE)
        template = {
            "_target_": "aniso_nequip.data.dataset_from_file",
            "transforms": transforms,
            "include_keys": include_keys,
            "exclude_keys": exclude_keys,
            "exclude_structures_in": exclude_structures_in,
        }
        datasets = {
            name: [{**template, "file_path": path} for path in _as_list(paths)]
            for name, paths in (
                ("train_dataset", train_file_path),
                ("val_dataset", val_file_path),
                ("test_dataset", test_file_path),
            )
        }
        splits = []
        for entry in _as_list(split_dataset):
            entry = dict(entry)
            if "file_path" not in entry:
                raise ValueError(f"each `split_dataset` entry needs a `file_path`, got {entry}")
            dataset = {**template, "file_path": entry.pop("file_path")}
            splits.append({**entry, "dataset": dataset})
        super().__init__(seed=seed, split_dataset=splits, **datasets, **kwargs)
