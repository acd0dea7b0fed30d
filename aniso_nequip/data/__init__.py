"""Data: Materials Project documents -> cleaned, split extxyz/HDF5 files -> nequip graphs, and
the field modifiers and training-data statistics of dielectric models."""

from .datamodule import DielectricDataModule
from .files import dataset_from_file, read_frames, write_frames
from .graphs import atoms_to_graphs
from .modifier import (
    AnisotropyRatio,
    PolycrystallineConstant,
    SortedEigenvalues,
    SymmetricTensorIrreps,
    TensorIsotropicPart,
)
from .stats_manager import DielectricStatisticsManager

__all__ = [
    "AnisotropyRatio",
    "DielectricDataModule",
    "DielectricStatisticsManager",
    "PolycrystallineConstant",
    "SortedEigenvalues",
    "SymmetricTensorIrreps",
    "TensorIsotropicPart",
    "atoms_to_graphs",
    "dataset_from_file",
    "read_frames",
    "write_frames",
]
