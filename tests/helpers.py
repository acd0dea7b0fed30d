"""Helpers shared by the test modules (fixtures live in conftest.py)."""

import csv
import os
import pathlib
import subprocess
import sys

import ase
import ase.build
import ase.io
import numpy as np
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from emmet.core.polar import DielectricDoc
from pymatgen.io.ase import AseAtomsAdaptor

from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.data.mp import document_to_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
CONFIGS = ROOT / "configs"
BIN = pathlib.Path(sys.executable).parent
R_MAX = 4.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# what nequip-evaluate writes
EVALUATION_OUTPUTS = {
    "predictions.extxyz",
    "predictions.csv",
    "metrics.json",
    "metrics.md",
    "parity_eps_poly.png",
    "parity_anisotropy_ratio.png",
    "parity_refractive_indices.png",
}


def bundled(name: str, index=":"):
    """Frames of a bundled dataset, e.g. ``bundled("mp_subset_train", ":20")``."""
    return ase.io.read(DATASETS / f"{name}.extxyz.gz", index)


def split_files(folder, **sizes) -> dict:
    """The first ``n`` crystals of each bundled ``mp_subset_<split>`` written to
    ``folder/<split>.extxyz``, for ``split=n`` in ``sizes``: ``{split: path}``."""
    files = {}
    for split, n in sizes.items():
        files[split] = folder / f"{split}.extxyz"
        ase.io.write(files[split], bundled(f"mp_subset_{split}", f":{n}"))
    return files


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


# ---- bad inputs shared by the tests/test_bad_inputs*.py files ----

VAL_EPS = np.diag([2.0, 2.5, 3.0])
"""A valid reference dielectric tensor."""


def nacl_crystal(name="nacl-ok", eps=VAL_EPS):
    """Rock-salt NaCl named ``name`` (``entry_id``) with the reference tensor ``eps``."""
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64)
    atoms.info["entry_id"] = name
    atoms.calc = SinglePointCalculator(atoms, dielectric_tensor=np.reshape(eps, 9))
    return atoms


def _val_with(mutate, name):
    atoms = nacl_crystal(name)
    mutate(atoms)
    return atoms


def _val_set_positions(atoms, positions):
    atoms.positions = positions


def _val_no_atoms(name):
    atoms = ase.Atoms(cell=[4.0] * 3, pbc=True)
    atoms.info["entry_id"] = name
    return atoms


def _val_molecule(name):
    atoms = ase.Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.4]])
    atoms.info["entry_id"] = name
    return atoms


def _val_disordered(atoms):
    # what ASE's CIF reader records for a site shared by Na and K
    atoms.info["occupancy"] = {"0": {"Na": 0.5, "K": 0.5}, "1": {"Cl": 1.0}}


def _val_unknown(atoms):
    atoms.symbols[0] = "Pu"


# (id, structure maker taking a name, expected problem)
VAL_STRUCTURES = [
    ("no-atoms", _val_no_atoms, "structure has no atoms"),
    (
        "nan-position",
        lambda n: _val_with(lambda a: a.positions.__setitem__((0, 0), np.nan), n),
        "atom positions are not finite",
    ),
    (
        "inf-cell",
        lambda n: _val_with(lambda a: a.cell.array.__setitem__((0, 0), np.inf), n),
        "cell is not finite",
    ),
    ("no-cell", _val_molecule, "no periodic 3D cell"),
    (
        "singular-cell",
        lambda n: _val_with(lambda a: a.set_cell([[4, 0, 0], [0, 4, 0], [4, 4, 0]]), n),
        "cell is singular",
    ),
    (
        "not-periodic",
        lambda n: _val_with(lambda a: a.set_pbc(False), n),
        "not periodic in all three directions",
    ),
    (
        "overlapping",
        lambda n: _val_with(lambda a: _val_set_positions(a, [[0, 0, 0], [0.1, 0, 0]]), n),
        "atoms 0 and 1 are 0.100 A",
    ),
    (
        "image-overlap",
        lambda n: _val_with(lambda a: a.set_cell([0.3, 4, 4], scale_atoms=True), n),
        "and its periodic image",
    ),
    ("disordered", lambda n: _val_with(_val_disordered, n), "disordered sites (partial occupancy)"),
    ("unknown-element", lambda n: _val_with(_val_unknown, n), "element(s) Pu unknown to the model"),
]
VAL_STRUCTURE_IDS = [case[0] for case in VAL_STRUCTURES]

# (id, field, tensor, expected problem)
VAL_TENSORS = [
    ("shape", "dielectric_tensor", np.ones((2, 2)) + np.eye(2), "has shape (2, 2), expected 3x3"),
    ("non-finite", "dielectric_tensor", np.diag([2.0, np.nan, 3.0]), "non-finite values"),
    ("asymmetric", "dielectric_tensor", VAL_EPS + np.triu(np.ones((3, 3)), 1), "is not symmetric"),
    (
        "not-positive-definite",
        "dielectric_tensor",
        np.diag([2.0, -0.5, 3.0]),
        "not positive definite (smallest eigenvalue -0.5)",
    ),
    (
        "ionic-negative",
        "dielectric_ionic_tensor",
        np.diag([1.0, -0.8, 2.0]),
        "not positive semi-definite",
    ),
    ("born-shape", "born_effective_charges", np.ones((3, 3, 3)), "expected (2, 3, 3)"),
]


def bad_frame(case):
    """A frame (with a valid tensor) for a structure case, or a valid structure with a bad
    tensor for a tensor case."""
    for name, make, problem in VAL_STRUCTURES:
        if name == case:
            return make(case), problem
    for name, field, tensor, problem in VAL_TENSORS:
        if name == case:
            atoms = nacl_crystal(case)
            if field == "dielectric_ionic_tensor":
                atoms.info[field] = tensor.reshape(-1)
            else:
                atoms.calc = SinglePointCalculator(atoms, **{field: np.asarray(tensor)})
            return atoms, problem
    raise KeyError(case)


def dielectric_doc(material_id, atoms=None, electronic=3 * np.eye(3), ionic=None):
    """A Materials Project dielectric document (a cubic crystal: isotropic tensors)."""
    atoms = atoms if atoms is not None else ase.build.bulk("MgO", "rocksalt", a=4.21)
    ionic = np.diag([1.0, 1.0, 1.0]) if ionic is None else ionic
    return {
        "material_id": material_id,
        "structure": AseAtomsAdaptor.get_structure(atoms).as_dict(),
        "electronic": np.asarray(electronic).tolist(),
        "ionic": np.asarray(ionic).tolist(),
        "total": (np.asarray(electronic) + ionic).tolist(),
    }


def disordered_doc(material_id):
    doc = dielectric_doc(material_id)
    doc["structure"]["sites"][0]["species"] = [
        {"element": "Mg", "occu": 0.5},
        {"element": "Ca", "occu": 0.5},
    ]
    return doc
