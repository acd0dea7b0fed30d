"""The datamodule of the configs: dataset files (extxyz or HDF5) by path, as nequip's
``ASEDataModule``, read by :func:`~aniso_nequip.data.dataset_from_file`."""

from typing import Callable, Dict, List, Optional, Union

import torch
from nequip.data.datamodule import NequIPDataModule
from omegaconf import OmegaConf

from ..variables import RULES, check_variable

Paths = Union[str, List[str]]
_BATCH_SIZE = RULES["batch_size"]


def _as_list(value) -> list:
    value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return list(value) if isinstance(value, (list, tuple)) else [value]


class TransformedInMemory(torch.utils.data.Dataset):
    """A dataset whose transformed frames (neighbour lists, cached backbone features...) are
    computed on first use and then kept in memory, so later epochs do not redo the transforms.

    For deterministic transforms only (those of the configs): every epoch sees the frames the
    first one computed. Each access returns a shallow copy of the kept frame (batching copies its
    tensors). With ``num_workers > 0`` each worker keeps its own frames, for as long as it lives
    (``persistent_workers``).

    Args:
        dataset (torch.utils.data.Dataset): the dataset to keep, e.g. of
            :func:`~aniso_nequip.data.dataset_from_file` (its ``frame_elements`` are kept too)
    """

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset
        self._frames: Dict[int, dict] = {}
        if hasattr(dataset, "frame_elements"):
            self.frame_elements = dataset.frame_elements

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices) -> List[dict]:
        indices = [int(i) for i in indices]
        missing = [i for i in dict.fromkeys(indices) if i not in self._frames]
        if missing:
            self._frames.update(zip(missing, _items(self.dataset, missing)))
        return [self._frames[i].copy() for i in indices]

    def __getitem__(self, index) -> dict:
        return self.__getitems__([index])[0]


def _items(dataset, indices: List[int]) -> List[dict]:
    if hasattr(dataset, "__getitems__"):
        return list(dataset.__getitems__(indices))
    return [dataset[i] for i in indices]


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
        keep_in_memory (bool): keep each dataset's transformed frames in memory after their first
            use (:class:`TransformedInMemory`): later epochs skip the neighbour lists and the
            feature cache's lookups; the numbers are the same either way
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
        keep_in_memory: bool = False,
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
        if keep_in_memory:
            template = {"_target_": f"{__name__}.TransformedInMemory", "dataset": template}
        datasets = {
            name: [_with_file(template, path) for path in _as_list(paths)]
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
            dataset = _with_file(template, entry.pop("file_path"))
            splits.append({**entry, "dataset": dataset})
        super().__init__(seed=seed, split_dataset=splits, **datasets, **kwargs)


def _with_file(template: Dict, path: str) -> Dict:
    """The dataset config ``template`` (possibly kept in memory) reading ``path``."""
    if "dataset" in template:
        return {**template, "dataset": _with_file(template["dataset"], path)}
    return {**template, "file_path": path}
