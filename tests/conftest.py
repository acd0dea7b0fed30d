import pathlib

import ase.build
import ase.io
import numpy as np
import pytest
import torch
from nequip.utils.global_state import set_global_state

from aniso_nequip.data import atoms_to_graphs

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
CONFIGS = ROOT / "configs"
R_MAX = 4.0


@pytest.fixture(scope="session", autouse=True)
def _global_state():
    set_global_state()


def bundled(name: str, index=":"):
    """Frames of a bundled dataset, e.g. ``bundled("mp_subset_train", ":20")``."""
    return ase.io.read(DATASETS / f"{name}.extxyz.gz", index)


def rotation(seed: int = 0) -> np.ndarray:
    """A random proper rotation matrix."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def predict(model, structures) -> np.ndarray:
    """``(N, 3, 3)`` tensors predicted by a ``GraphModel`` for a list of ``ase.Atoms``."""
    data = atoms_to_graphs(structures, model.type_names, float(model.metadata["r_max"]))
    with torch.no_grad():
        return model(data)["dielectric_tensor"].detach().numpy()


@pytest.fixture(scope="session")
def small_frames():
    """Low-symmetry real crystals (triclinic/monoclinic first) from the bundled test split."""
    frames = bundled("mp_subset_test")
    frames.sort(key=lambda f: f.info["crystal_system"] not in ("triclinic", "monoclinic"))
    return [f for f in frames if len(f) <= 12][:4]


@pytest.fixture(scope="session")
def symmetric_cells():
    return {
        "rocksalt": ase.build.bulk("NaCl", "rocksalt", a=5.64),
        "diamond": ase.build.bulk("C", "diamond", a=3.57),
        "rocksalt_conventional": ase.build.bulk("MgO", "rocksalt", a=4.21, cubic=True),
        "wurtzite": ase.build.bulk("ZnO", "wurtzite", a=3.25, c=5.21),
    }


def _build(builder, **kwargs):
    args = dict(
        seed=1,
        model_dtype="float64",
        r_max=R_MAX,
        avg_num_neighbors=20.0,
        l_max=2,
        num_layers=2,
        num_features=8,
        num_basis=6,
        isotropic_shift=1.0,
        isotropic_scale=2.0,
        anisotropic_scale=100.0,
    )
    args.update(kwargs)
    return builder(**args).eval()


@pytest.fixture(scope="session")
def type_names(small_frames, symmetric_cells):
    symbols = {s for f in small_frames + list(symmetric_cells.values()) for s in f.symbols}
    return sorted(symbols)


@pytest.fixture(scope="session")
def equivariant_model(type_names):
    from aniso_nequip.model import AnisoNetModel

    return _build(AnisoNetModel, type_names=type_names)


@pytest.fixture(scope="session")
def scalar_model(type_names):
    from aniso_nequip.model import ScalarAnisoNetModel

    return _build(ScalarAnisoNetModel, type_names=type_names)


@pytest.fixture(scope="session")
def build_model(type_names):
    def _make(builder, **kwargs):
        return _build(builder, **{"type_names": type_names, **kwargs})

    return _make
