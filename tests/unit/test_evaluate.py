"""nequip-evaluate's main, aniso_nequip.predict and the ASE calculator on the tiny trained model
(the command itself: tests/integration/test_evaluate_command.py)."""

import json

import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.calculator import PropertyNotImplementedError

import aniso_nequip
from aniso_nequip.scripts.evaluate import main as evaluate_main
from helpers import EVALUATION_OUTPUTS, PNG_SIGNATURE


def test_package_and_missing_references(trained, packaged, tmp_path):
    frames = ase.io.read(trained["files"]["test"], ":4")
    frames[1].calc = None  # no reference tensor for this one
    data = tmp_path / "partial.extxyz"
    ase.io.write(data, frames)
    out = tmp_path / "out"
    assert evaluate_main(["--model", str(packaged), "--data", str(data), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_without_reference"] == 1
    assert "1 frame(s) without a reference" in (out / "metrics.md").read_text()
    pred = ase.io.read(out / "predictions.extxyz", ":")
    assert all("dielectric_tensor_pred" in a.info for a in pred)
    # package and checkpoint agree through the Python API as well
    np.testing.assert_allclose(
        aniso_nequip.predict(frames, packaged, device="cpu"),
        np.stack([np.reshape(a.info["dielectric_tensor_pred"], (3, 3)) for a in pred]),
        atol=1e-6,
    )


def test_predict_api_and_ase_calculator(trained, packaged):
    from pymatgen.io.ase import AseAtomsAdaptor

    ckpt = trained["dir"] / "best.ckpt"
    model = aniso_nequip.load_model(ckpt)
    frames = ase.io.read(trained["files"]["test"], ":5")
    eps = aniso_nequip.predict(frames, model, batch_size=2, device="cpu")
    assert eps.shape == (5, 3, 3) and eps.dtype == np.float64
    structures = [AseAtomsAdaptor.get_structure(a) for a in frames]
    np.testing.assert_allclose(
        aniso_nequip.predict(structures, model, device="cpu"), eps, atol=1e-5
    )
    assert aniso_nequip.predict([], model).shape == (0, 3, 3)
    calculator = aniso_nequip.DielectricCalculator
    atoms = frames[2].copy()
    atoms.calc = calculator(str(ckpt))
    np.testing.assert_allclose(
        atoms.get_properties(["dielectric_tensor"])["dielectric_tensor"], eps[2], atol=1e-5
    )
    assert atoms.calc.implemented_properties == ["dielectric_tensor"]
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energy()
    # a package, nequip's own constructor and an ensemble (its mean) give the same tensor
    for calc in (
        calculator(packaged),
        calculator._from_saved_model(packaged, chemical_species_to_atom_type_map=True),
        calculator([ckpt, packaged]),
    ):
        atoms.calc = calc
        np.testing.assert_allclose(calc.get_property("dielectric_tensor", atoms), eps[2], atol=1e-5)


def _fails(argv, capsys, match):
    assert evaluate_main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err


def test_errors_are_clear_and_leave_nothing(trained, tmp_path, capsys):
    ckpt = str(trained["dir"] / "best.ckpt")
    data = str(trained["files"]["test"])
    out = tmp_path / "out"
    _fails(
        ["--model", ckpt, "--data", str(tmp_path / "nope.extxyz"), "--out", str(out)],
        capsys,
        "nope.extxyz` does not exist",
    )
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    _fails(["--model", ckpt, "--data", str(empty), "--out", str(out)], capsys, "no frames")
    bad_model = tmp_path / "bad.ckpt"
    bad_model.write_bytes(b"not a checkpoint")
    _fails(
        ["--model", str(bad_model), "--data", data, "--out", str(out)],
        capsys,
        "is not a readable nequip checkpoint",
    )
    _fails(
        ["--model", str(tmp_path / "missing.ckpt"), "--data", data, "--out", str(out)],
        capsys,
        "does not exist",
    )
    francium = ase.build.bulk("NaCl", "rocksalt", a=5.6)
    francium.symbols[0] = "Fr"
    unknown = tmp_path / "unknown.extxyz"
    ase.io.write(unknown, [ase.io.read(data, 0), francium])
    _fails(
        ["--model", ckpt, "--data", str(unknown), "--out", str(out), "--strict"],
        capsys,
        f"{unknown} frame 1 (FrCl): element(s) Fr unknown to the model",
    )
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_existing_output_is_not_overwritten(trained, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("keep me")
    argv = [
        "--model",
        str(trained["dir"] / "best.ckpt"),
        "--data",
        str(trained["files"]["test"]),
        "--out",
        str(out),
    ]
    _fails(argv, capsys, "not empty")
    assert (out / "metrics.json").read_text() == "keep me"
    assert evaluate_main(argv + ["--force"]) == 0
    assert json.loads((out / "metrics.json").read_text())["n"] == 16


def test_parity_plot_is_a_scatter_for_small_sets_and_a_density_for_large(tmp_path):
    from matplotlib.collections import PathCollection, QuadMesh

    from aniso_nequip import plots

    rng = np.random.default_rng(0)
    ref = rng.uniform(2, 10, 100)
    systems = ["cubic"] * 30 + ["tetragonal"] * 50 + ["monoclinic"] * 20
    fig = plots.parity_figure(ref, ref + rng.normal(0, 0.2, 100), "eps_poly", systems)
    (ax,) = fig.axes  # no colour bar
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert [len(c.get_offsets()) for c in scatters] == [20, 50, 30]  # crystal-system order
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["monoclinic (20)", "tetragonal (50)", "cubic (30)"]
    plots.pyplot().close(fig)

    big = rng.uniform(2, 10, 3000)
    fig = plots.parity_figure(big, big, "eps_poly", ["cubic"] * 3000)
    assert len(fig.axes) == 2  # the plot and its colour bar
    assert any(isinstance(c, QuadMesh) for c in fig.axes[0].collections)
    plots.pyplot().close(fig)
    assert plots.parity_plot(ref, ref, "a_r", tmp_path / "small.png", systems) == "scatter"
    assert plots.parity_plot(big, big, "a_r", tmp_path / "big.png") == "density"
    assert (tmp_path / "small.png").read_bytes()[:8] == PNG_SIGNATURE


def test_evaluate_draws_scatter_parity_plots_for_a_small_test_set(trained, tmp_path, monkeypatch):
    from aniso_nequip import evaluation, plots

    drawn = []

    def spy(reference, predicted, label, path, systems=None, **kwargs):
        drawn.append((label, path.name, list(systems)))
        return parity_plot(reference, predicted, label, path, systems, **kwargs)

    parity_plot = plots.parity_plot
    monkeypatch.setattr(plots, "parity_plot", spy)
    ckpt = trained["dir"] / "best.ckpt"
    out = tmp_path / "out"
    metrics = evaluation.evaluate(ckpt, [trained["files"]["test"]], out, quiet=True)
    assert metrics["n"] == 16 and metrics["model"] == str(ckpt)
    systems = [a.info["crystal_system"] for a in ase.io.read(trained["files"]["test"], ":")]
    assert drawn[:2] == [
        ("eps_poly", "parity_eps_poly.png", systems),
        ("a_r", "parity_anisotropy_ratio.png", systems),
    ]
    label, name, index_systems = drawn[2]
    assert (label, name) == ("n", "parity_refractive_indices.png")
    # one point per principal index: n (isotropic), n_o and n_e (uniaxial), n_alpha..n_gamma
    from aniso_nequip.optics import crystal_symmetry

    per_class = {"isotropic": 1, "uniaxial": 2, "biaxial": 3}
    frames = ase.io.read(trained["files"]["test"], ":")
    counts = [per_class[crystal_symmetry(a).optical_class] for a in frames]
    assert index_systems == [s for s, count in zip(systems, counts) for _ in range(count)]
    assert {p.name for p in out.iterdir()} == EVALUATION_OUTPUTS


def test_evaluation_metrics_of_every_head():
    from aniso_nequip.evaluation import evaluation_metrics, metrics_text

    frames = [ase.build.bulk("NaCl", "rocksalt", a=5.6 + 0.1 * i) for i in range(3)]
    electronic = np.stack([np.diag([2.0, 2.5, 3.0 + i]) for i in range(3)])
    ionic = np.stack([np.diag([1.0, 1.0, 0.5 * i]) for i in range(3)])
    for atoms, eps, ion in zip(frames[:2], electronic, ionic):
        atoms.info["dielectric_ionic_tensor"] = ion.reshape(9)
        atoms.info["dielectric_tensor"] = eps.reshape(9)
    outputs = {"dielectric_tensor": electronic + 0.3 * np.eye(3), "dielectric_ionic_tensor": ionic}
    metrics = evaluation_metrics(frames, outputs, ["cubic"] * 3)
    assert metrics["n"] == 2 and metrics["n_without_reference"] == 1
    assert metrics["eps_poly_mae"] == pytest.approx(0.3)
    assert metrics["dielectric_ionic_tensor"]["eps_poly_mae"] == pytest.approx(0.0)
    assert metrics["static"]["eps_poly_mae"] == pytest.approx(0.3)
    text = metrics_text(metrics)
    assert "\ndielectric_ionic_tensor:\n" in text and "\nstatic:\n" in text
    assert evaluation_metrics(frames[2:], {"dielectric_tensor": electronic[2:]}, ["cubic"]) == {
        "n": 0,
        "n_without_reference": 1,
    }
