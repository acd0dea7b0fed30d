"""The ready model shipped in the package, and `aniso-nequip predict` on structure files."""

import csv
import hashlib
import pathlib

import ase.build
import ase.io
import numpy as np
import pytest

import aniso_nequip
from aniso_nequip.data.symmetry import crystal_system
from aniso_nequip.data.validation import reference_tensor
from aniso_nequip.inference import predict
from aniso_nequip.metrics import tensor_metrics
from aniso_nequip.pretrained import model_card, model_paths
from aniso_nequip.scripts.cli import main as cli
from helpers import ROOT, bundled

EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*.cif"))


def test_shipped_files_match_their_card():
    card = model_card()
    paths = model_paths()
    assert len(paths) == len(card["files"]) >= 1
    for path in paths:
        digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
        assert digest == card["sha256"][pathlib.Path(path).name]
    assert (pathlib.Path(paths[0]).parent / "MODEL_CARD.md").is_file()
    assert card["functional"].startswith("PBE") and "Si" in card["elements_trained_on"]


@pytest.mark.slow
def test_shipped_model_reproduces_its_recorded_test_errors():
    """The card's test MAEs, recomputed from the shipped files on the bundled test split."""
    frames = bundled("mp_subset_test")
    reference = np.stack([reference_tensor(a) for a in frames])
    predicted = predict(frames, model_paths(), device="cpu")
    metrics = tensor_metrics(reference, predicted, [crystal_system(a) for a in frames])
    recorded = model_card()["test_metrics"]
    for key in ("eps_poly_mae", "anisotropy_ratio_mae", "component_mae", "eigenvalue_mae"):
        assert metrics[key] == pytest.approx(recorded[key], abs=1e-4)


def test_default_model_everywhere(symmetric_cells):
    """No model given: aniso_nequip.predict and the calculator use the shipped one; a cubic
    crystal comes out isotropic, a wurtzite one uniaxial along c."""
    cells = [symmetric_cells["rocksalt"], symmetric_cells["wurtzite"]]
    rocksalt, wurtzite = aniso_nequip.predict(cells, device="cpu")
    np.testing.assert_allclose(rocksalt, np.trace(rocksalt) / 3 * np.eye(3), atol=1e-5)
    assert 1.0 < np.trace(rocksalt) / 3 < 10.0
    assert abs(wurtzite[0, 0] - wurtzite[1, 1]) < 1e-5 and abs(wurtzite[0, 1]) < 1e-5
    atoms = symmetric_cells["wurtzite"].copy()
    atoms.calc = aniso_nequip.DielectricCalculator()
    np.testing.assert_allclose(
        atoms.calc.get_property("dielectric_tensor", atoms), wurtzite, atol=1e-6
    )


def test_predict_command_on_the_example_cifs(tmp_path, capsys):
    assert len(EXAMPLES) == 3
    out = tmp_path / "predictions"
    assert cli(["predict", *EXAMPLES, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for formula in ("NaCl (cubic)", "ZnO (hexagonal)", "MoS2 (hexagonal)"):
        assert formula in printed
    # each crystal's report leads with its optical description
    blocks = {b.split("\n")[0].split(" ")[0]: b.split("\n")[1] for b in printed.split("\n\n")}
    assert blocks["NaCl"].startswith("  isotropic (m-3m): n ")
    assert blocks["ZnO"].startswith("  uniaxial positive (6mm), optic axis [0 0 1]: n_o ")
    assert blocks["MoS2"].startswith("  uniaxial negative (6/mmm), optic axis [0 0 1]: n_o ")
    assert "eps_poly" in printed and "a_r" in printed
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [pathlib.Path(r["source"]).name for r in rows] == [
        pathlib.Path(e).name for e in EXAMPLES
    ]
    frames = ase.io.read(out / "predictions.extxyz", ":")
    expected = aniso_nequip.predict([ase.io.read(e) for e in EXAMPLES], device="cpu")
    for row, atoms, eps in zip(rows, frames, expected):
        np.testing.assert_allclose(
            np.reshape(atoms.info["dielectric_tensor_pred"], (3, 3)), eps, atol=1e-5
        )
        assert float(row["eps_poly"]) == pytest.approx(np.trace(eps) / 3, abs=1e-5)
    nacl = next(r for r in rows if "NaCl" in r["source"])
    assert nacl["crystal_system"] == "cubic" and float(nacl["a_r"]) == pytest.approx(1.0, abs=1e-5)
    mos2 = next(r for r in rows if "MoS2" in r["source"])
    assert float(mos2["a_r"]) > 1.01  # a layered crystal is predicted anisotropic
    assert mos2["formula"] == "MoS2" and mos2["optical_class"] == "uniaxial"
    assert mos2["optic_axis"] == "[0 0 1]" and mos2["optical_sign"] == "negative"
    eps_zz = float(mos2["eps_zz"])  # c along z in the CIF's frame: the optic axis
    assert float(mos2["n_e"]) == pytest.approx(np.sqrt(eps_zz), abs=1e-4)
    assert float(mos2["birefringence"]) == pytest.approx(
        float(mos2["n_e"]) - float(mos2["n_o"]), abs=2e-5
    )
    # `aniso-nequip screen` without --model ranks with the same model
    screen = tmp_path / "screen"
    args = ["screen", "--quiet", "--structures", str(ROOT / "examples"), "--no-dimensionality"]
    assert cli([*args, "--out", str(screen)]) == 0
    with open(screen / "ranking.csv") as f:
        ranking = list(csv.DictReader(f))
    # MoS2 has the largest a_r but no training crystal like it: out of the domain, ranked after
    # every crystal in the domain (rock salt's score is near the threshold: either side)
    (k,) = [i for i, r in enumerate(ranking) if r["id"] == "MoS2_2H_layered"]
    assert ranking[k]["out_of_domain"] == "True" and mos2["out_of_domain"] == "True"
    assert k > 0 and all(r["out_of_domain"] == "False" for r in ranking[:k])
    assert float(ranking[k]["a_r"]) == pytest.approx(float(mos2["a_r"]), rel=1e-4)
    assert float(ranking[k]["a_r"]) == max(float(r["a_r"]) for r in ranking)


@pytest.mark.slow
def test_load_model_and_evaluate_default_to_the_ready_model(symmetric_cells, tmp_path):
    from aniso_nequip.evaluation import evaluate

    model = aniso_nequip.load_model()
    assert model.training_elements == model_card()["elements_trained_on"]
    cells = [symmetric_cells["rocksalt"], symmetric_cells["wurtzite"]]
    np.testing.assert_allclose(
        aniso_nequip.predict(cells, model, device="cpu"),
        aniso_nequip.predict(cells, device="cpu"),
        atol=1e-6,
    )
    rocksalt, wurtzite = aniso_nequip.predict(cells, model, device="cpu", field="optics")
    assert (rocksalt.optical_class, wurtzite.optical_class) == ("isotropic", "uniaxial")
    assert wurtzite.optic_axis == (0, 0, 1) and wurtzite.n_e == pytest.approx(
        np.sqrt(aniso_nequip.predict(cells[1:], model, device="cpu")[0, 2, 2]), abs=1e-6
    )
    data = tmp_path / "four.extxyz"
    ase.io.write(data, bundled("mp_subset_test", ":4"))
    metrics = evaluate(None, [str(data)], tmp_path / "eval", quiet=True)
    assert metrics["n"] == 4 and metrics["model"].startswith("ready model (")
    with open(tmp_path / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    for row, atoms in zip(rows, bundled("mp_subset_test", ":4")):
        ref = reference_tensor(atoms)
        n_ref = np.array([float(row[f"n_{i}_ref"]) for i in (1, 2, 3)])
        # the point-group average keeps the trace and moves eigenvalues only by DFPT noise
        assert (n_ref**2).sum() == pytest.approx(np.trace(ref), abs=1e-3)
        np.testing.assert_allclose(n_ref, np.sqrt(np.linalg.eigvalsh(ref)), atol=1e-3)
        assert row["optical_class"] in ("isotropic", "uniaxial", "biaxial")


def test_predict_command_skips_and_reports_bad_inputs(tmp_path, capsys):
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("data_x\n_cell_length_a nonsense\n")
    broken = tmp_path / "broken.extxyz"
    broken.write_text("2\nLattice=oops\nNa 0 0\n")
    unknown = tmp_path / "Am.cif"
    ase.io.write(unknown, ase.build.bulk("Am", "fcc", a=4.9))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    inputs = [
        EXAMPLES[0],
        str(garbage),
        str(broken),
        str(unknown),
        str(tmp_path / "missing.cif"),
        str(empty_dir),
        str(tmp_path / "*.vasp"),
    ]
    assert cli(["predict", *inputs]) == 0
    printed = capsys.readouterr().out
    assert f"skipped {garbage}: contains no structure" in printed
    assert f"skipped {broken}: cannot be read" in printed
    assert f"skipped {unknown}: element(s) Am unknown to the model" in printed
    assert f"skipped {tmp_path / 'missing.cif'}: no such file or folder" in printed
    assert f"skipped {empty_dir}: folder holds no CIF, POSCAR or extxyz file" in printed
    assert "no file matches this pattern" in printed
    assert cli(["predict", *inputs, "--strict"]) == 2
    assert "6 input(s) skipped" in capsys.readouterr().err
    out = tmp_path / "out"
    assert cli(["predict", str(garbage), str(unknown), "--out", str(out)]) == 2
    assert "no structure could be predicted" in capsys.readouterr().err
    assert not out.exists()  # nothing written when nothing was predicted
    assert cli(["predict", EXAMPLES[0], "--batch-size", "0"]) == 2
