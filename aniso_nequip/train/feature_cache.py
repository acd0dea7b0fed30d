"""The frozen-backbone feature cache: a data transform that computes a frozen backbone's node
features once per crystal, keeps them in an HDF5 file and hands them to the model as a field.

Entries are keyed per structure (atomic numbers, positions, cell, periodic boundaries: exact
bytes), files per backbone (:func:`~aniso_nequip.model.foundation.backbone_fingerprint`: weights,
layers, cutoff, dtype...), so every dataset, split, fold and sweep trial holding the same crystals
and the same backbone shares them. A different structure or backbone setting is a different key:
it is computed afresh, never mixed up. Packaged and compiled models get no such field and run
their backbone; the backbone of a trained model ignores features that are not its own.
"""

import hashlib
import os
import pathlib
import warnings
from contextlib import contextmanager
from typing import Dict, Optional, Sequence

import ase.data
import filelock
import h5py
import numpy as np
import torch
from nequip.data import AtomicDataDict
from nequip.utils.dtype import torch_default_dtype

from .. import _keys

_FORMAT = "aniso-nequip backbone features 1"


def structure_key(numbers: np.ndarray, positions, cell, pbc) -> str:
    """Hex digest of a structure's exact atomic numbers, positions, cell and periodicity."""
    digest = hashlib.sha256()
    for array, dtype in (
        (numbers, np.int64),
        (positions, np.float64),
        (cell, np.float64),
        (pbc, np.bool_),
    ):
        array = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
        digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return digest.hexdigest()


class FeatureStore:
    """One HDF5 file of node features of one backbone (``fingerprint``), one dataset per
    structure key, read into memory once and appended to under a file lock (several trainings
    may share it). A file that cannot be read or belongs to another fingerprint is replaced, with
    a warning; an entry of the wrong shape is recomputed by the caller (:meth:`get` returns
    ``None``)."""

    def __init__(self, path: pathlib.Path, fingerprint: int):
        self.path = pathlib.Path(path)
        self.fingerprint = int(fingerprint)
        self._entries: Optional[Dict[str, np.ndarray]] = None

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(f"{self.path}.lock"):
            yield

    def _valid(self, file: h5py.File) -> bool:
        return (
            file.attrs.get("format") == _FORMAT
            and int(file.attrs.get("fingerprint", -1)) == self.fingerprint
        )

    def _load(self) -> Dict[str, np.ndarray]:
        entries = {}
        with self._locked():
            if not self.path.exists():
                return entries
            try:
                with h5py.File(self.path, "r") as file:
                    if not self._valid(file):
                        raise ValueError("written for another backbone or format")
                    for key, dataset in file.items():
                        entries[key] = dataset[()]
            except (OSError, ValueError, KeyError) as err:
                warnings.warn(
                    f"backbone feature cache `{self.path}` is unusable ({err}): rebuilding it"
                )
                self.path.unlink()
                entries = {}
        return entries

    def get(self, key: str, num_atoms: int, dim: Optional[int]) -> Optional[np.ndarray]:
        if self._entries is None:
            self._entries = self._load()
        features = self._entries.get(key)
        if features is None:
            return None
        shape_ok = features.ndim == 2 and features.shape[0] == num_atoms
        if not (shape_ok and features.shape[1] == (dim or features.shape[1])):
            return None
        return features if np.all(np.isfinite(features)) else None

    def put(self, key: str, features: np.ndarray) -> None:
        if self._entries is None:
            self._entries = self._load()
        self._entries[key] = features
        with self._locked():
            with h5py.File(self.path, "a") as file:
                if not file.attrs.get("format"):
                    file.attrs["format"] = _FORMAT
                    file.attrs["fingerprint"] = self.fingerprint
                if key in file:
                    del file[key]
                file.create_dataset(key, data=features)


class BackboneFeatureCache:
    """Data transform (after the type mapper and the neighbour list) that attaches a frozen
    backbone's node features (``backbone_features``) and its fingerprint
    (``backbone_features_id``) to each structure, computing them once per structure and backbone
    and keeping them in ``cache_dir``.

    The backbone is built as the model builds it
    (:func:`~aniso_nequip.model.foundation.frozen_backbone`, in ``model_dtype``) on first use.
    With ``enabled`` false (e.g. ``freeze_backbone=false``: a fine-tuned backbone changes its
    features at every step) or ``cache_dir`` null the transform passes the data through.

    Args:
        backbone (str): the model's ``backbone``
        backbone_layers (int): the model's ``backbone_layers``
        r_max (float): the model's cutoff
        type_names (List[str]): the model's ``type_names`` (the type mapper's)
        model_dtype (str): the model's dtype
        cache_dir (str): folder of the cache files (one per backbone and settings)
        enabled (bool): attach features at all
    """

    def __init__(
        self,
        backbone: str,
        backbone_layers: int,
        r_max: float,
        type_names: Sequence[str],
        model_dtype: str = "float32",
        cache_dir: Optional[str] = ".cache/backbone_features",
        enabled: bool = True,
    ):
        self.backbone = backbone
        self.backbone_layers = int(backbone_layers)
        self.r_max = float(r_max)
        self.type_names = list(type_names)
        self.model_dtype = model_dtype
        self.cache_dir = cache_dir
        self.enabled = bool(enabled) and cache_dir is not None
        self._numbers = torch.tensor([ase.data.atomic_numbers[n] for n in self.type_names])
        self._module = None
        self._store: Optional[FeatureStore] = None
        self._dim: Optional[int] = None

    def _setup(self) -> None:
        from e3nn.o3 import Irreps

        from ..model.foundation import frozen_backbone

        with torch_default_dtype(getattr(torch, self.model_dtype)):
            module = frozen_backbone(
                self.backbone, self.type_names, self.r_max, self.backbone_layers
            )
        self._module = module.eval()
        self._dim = Irreps(module.irreps_out[AtomicDataDict.NODE_FEATURES_KEY]).dim
        base = os.path.basename(self.backbone)
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in base)
        self._store = FeatureStore(
            pathlib.Path(self.cache_dir) / f"{name}-{module.features_id:015x}.h5",
            module.features_id,
        )

    def _compute(self, data: AtomicDataDict.Type) -> np.ndarray:
        graph = {k: v for k, v in data.items() if k != _keys.BACKBONE_FEATURES_KEY}
        graph = AtomicDataDict.with_batch_(graph)
        with torch.no_grad(), torch_default_dtype(getattr(torch, self.model_dtype)):
            features = self._module(graph)[AtomicDataDict.NODE_FEATURES_KEY]
        return features.detach().cpu().numpy()

    def __call__(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if not self.enabled:
            return data
        if self._module is None:
            self._setup()
        numbers = self._numbers[data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)]
        key = structure_key(
            numbers,
            data[AtomicDataDict.POSITIONS_KEY],
            data.get(AtomicDataDict.CELL_KEY, torch.zeros(1, 3, 3)),
            data.get(AtomicDataDict.PBC_KEY, torch.zeros(1, 3, dtype=torch.bool)),
        )
        num_atoms = int(numbers.shape[0])
        features = self._store.get(key, num_atoms, self._dim)
        if features is None:
            features = self._compute(data)
            self._store.put(key, features)
        data[_keys.BACKBONE_FEATURES_KEY] = torch.from_numpy(features)
        data[_keys.BACKBONE_FEATURES_ID_KEY] = torch.tensor(
            [self._module.features_id], dtype=torch.long
        )
        return data
