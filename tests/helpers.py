"""Helpers shared by the test modules (fixtures live in conftest.py)."""

import csv
import os
import pathlib
import subprocess
import sys

import ase.io
import numpy as np
import torch
import yaml
from emmet.core.polar import DielectricDoc
from pymatgen.io.ase import AseAtomsAdaptor

from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.data.mp import document_to_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
CONFIGS = ROOT / "configs"
BIN = pathlib.Path(sys.executable).parent
R_MAX = 4.0


def bundled(name: str, index=":"):
    """Frames of a bundled dataset, e.g. ``bundled("mp_subset_train", ":20")``."""
    return ase.io.read(DATASETS / f"{name}.extxyz.gz", index)


def rotation(seed: int = 0) -> np.ndarray:
    """A random proper rotation matrix."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def rotated(atoms, rot):
    """``atoms`` with positions and cell rotated by the matrix ``rot``."""
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    out.positions = atoms.positions @ rot.T
    return out


def predict(model, structures) -> np.ndarray:
    """``(N, 3, 3)`` tensors predicted by a ``GraphModel`` for a list of ``ase.Atoms``."""
    data = atoms_to_graphs(structures, model.type_names, float(model.metadata["r_max"]))
    with torch.no_grad():
        return model(data)["dielectric_tensor"].detach().numpy()


def run_command(args, cwd=ROOT, **env_vars):
    """Run a console script (with extra environment variables); fail the test with its output
    if it exits non-zero."""
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", **env_vars)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def epoch_values(metrics_csv, column):
    """Logged values of one column of a Lightning CSVLogger metrics.csv."""
    with open(metrics_csv) as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column)]


def build_tiny(builder, **kwargs):
    """A tiny float64 model of ``builder`` (``kwargs`` override the defaults), in eval mode."""
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


def reference_tensors(atoms):
    """The electronic and ionic reference tensors ``(3, 3)`` of a bundled frame."""
    return (
        np.reshape(atoms.calc.results["dielectric_tensor"], (3, 3)),
        np.reshape(atoms.info["dielectric_ionic_tensor"], (3, 3)),
    )


def mp_document(atoms, material_id=None, as_dict=True):
    """An emmet-core DielectricDoc (as mp-api returns it) for a bundled frame."""
    electronic, ionic = reference_tensors(atoms)
    total = electronic + ionic
    structure = AseAtomsAdaptor.get_structure(atoms)
    doc = DielectricDoc.from_structure(
        meta_structure=structure,
        material_id=None,
        total=total.tolist(),
        ionic=ionic.tolist(),
        electronic=electronic.tolist(),
        e_total=float(np.trace(total) / 3),
        e_ionic=float(np.trace(ionic) / 3),
        e_electronic=float(np.trace(electronic) / 3),
        n=float(np.sqrt(np.trace(electronic) / 3)),
        deprecated=False,
    )
    doc.material_id = None
    out = document_to_dict(doc) if as_dict else doc
    if as_dict:
        out["material_id"] = material_id or atoms.info["entry_id"]
    return out


def sweep_spec(tmp_path, name="s", **changes):
    """A copy of configs/sweeps/tiny.yaml named ``name`` (its study in ``tmp_path/name``) with
    ``changes``, written to ``tmp_path/name.yaml``; returns its path."""
    spec = yaml.safe_load((ROOT / "configs" / "sweeps" / "tiny.yaml").read_text())
    spec.update(study_name=name, output_dir=str(tmp_path / name), **changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
