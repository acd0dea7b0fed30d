"""Data: Materials Project documents -> cleaned, split extxyz/HDF5 files -> nequip graphs."""

from .datamodule import DielectricDataModule
from .files import dataset_from_file, read_frames, write_frames
from .graphs import atoms_to_graphs

__all__ = [
    "DielectricDataModule",
    "atoms_to_graphs",
    "dataset_from_file",
    "read_frames",
    "write_frames",
]
