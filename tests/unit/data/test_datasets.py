"""The bundled real DFPT datasets (datasets/*.extxyz.gz) match their README."""

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from helpers import DATASETS, bundled

COUNTS = {
    "mp_subset": {"train": 883, "val": 110, "test": 111},
    "phonondb": {"train": 1095, "val": 137, "test": 137},
}
SOURCES = {"mp_subset": "mp-dfpt-pbe", "phonondb": "phonondb-dfpt-pbesol"}
CRYSTAL_SYSTEMS = {
    "cubic",
    "hexagonal",
    "trigonal",
    "tetragonal",
    "orthorhombic",
    "monoclinic",
    "triclinic",
}


@pytest.fixture(scope="module", params=sorted(COUNTS))
def collection(request):
    name = request.param
    return name, {split: bundled(f"{name}_{split}") for split in COUNTS[name]}


def test_files_are_small_and_compressed():
    files = sorted(DATASETS.glob("*.extxyz.gz"))
    assert len(files) == 6
    assert sum(f.stat().st_size for f in files) < 5 * 2**20


@pytest.mark.slow
def test_counts_keys_shapes(collection):
    name, splits = collection
    for split, frames in splits.items():
        assert len(frames) == COUNTS[name][split], (name, split)
        for atoms in frames:
            assert isinstance(atoms.calc, SinglePointCalculator)
            eps = np.asarray(atoms.calc.results["dielectric_tensor"]).reshape(3, 3)
            born = np.asarray(atoms.calc.results["born_effective_charges"])
            assert born.shape == (len(atoms), 9)
            assert atoms.pbc.all() and atoms.cell.volume > 0
            assert atoms.info["source"] == SOURCES[name]
            assert atoms.info["crystal_system"] in CRYSTAL_SYSTEMS
            assert 1 <= int(atoms.info["spacegroup"]) <= 230
            assert np.isfinite(eps).all()
            np.testing.assert_allclose(eps, eps.T, atol=1e-6)
            # cleaning rules of the README: diagonal >= 1, eps_poly <= 15
            assert np.diag(eps).min() >= 1.0 and np.trace(eps) / 3 <= 15.0
            if name == "mp_subset":
                ionic = np.asarray(atoms.info["dielectric_ionic_tensor"]).reshape(3, 3)
                np.testing.assert_allclose(ionic, ionic.T, atol=1e-6)


@pytest.mark.slow
def test_no_structure_in_two_splits(collection):
    _, splits = collection
    ids = {split: {a.info["entry_id"] for a in frames} for split, frames in splits.items()}
    keys = {
        split: {(a.get_chemical_formula(), round(a.cell.volume, 3)) for a in frames}
        for split, frames in splits.items()
    }
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not ids[a] & ids[b]
        assert not keys[a] & keys[b], f"same structure in {a} and {b}"


def test_nequip_reads_the_tensor_fields():
    from nequip.data import AtomicDataDict, from_ase

    atoms = bundled("mp_subset_test", 0)
    data = from_ase(atoms, include_keys=["dielectric_ionic_tensor"])
    assert data[AtomicDataDict.DIELECTRIC_KEY].shape == (1, 3, 3)
    assert data["dielectric_ionic_tensor"].shape == (1, 3, 3)
    assert data[AtomicDataDict.BORN_CHARGE_KEY].shape == (len(atoms), 3, 3)
    np.testing.assert_allclose(
        data[AtomicDataDict.DIELECTRIC_KEY][0].numpy(),
        np.reshape(atoms.calc.results["dielectric_tensor"], (3, 3)),
    )
