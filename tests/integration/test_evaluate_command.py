"""``nequip-evaluate`` run as a command on the tiny trained model: its outputs and printed
table, metrics recomputed independently and equal to those of nequip-train's test run."""

import csv
import json

import ase.io
import numpy as np
import pytest

from helpers import BIN, EVALUATION_OUTPUTS, PNG_SIGNATURE, epoch_values, run_command

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    proc = run_command(
        [
            str(BIN / "nequip-evaluate"),
            "--model",
            str(trained["dir"] / "best.ckpt"),
            "--data",
            str(trained["files"]["test"]),
            "--out",
            str(out),
            "--batch-size",
            "5",
        ]
    )
    return out, proc.stdout


def _eigs(t):
    return np.linalg.eigvalsh(t)


def test_outputs_and_printed_table(evaluated):
    out, stdout = evaluated
    assert {p.name for p in out.iterdir()} == EVALUATION_OUTPUTS
    assert "| all | 16 |" in stdout and "eps_poly_mae" in stdout
    assert (out / "metrics.md").read_text().count("| cubic | 4 |") == 1
    for png in ("parity_eps_poly.png", "parity_anisotropy_ratio.png"):
        data = (out / png).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000
        import matplotlib.image

        assert matplotlib.image.imread(out / png).ndim == 3


def test_metrics_recomputed_independently(evaluated, trained):
    out, _ = evaluated
    frames = ase.io.read(out / "predictions.extxyz", ":")
    inputs = ase.io.read(trained["files"]["test"], ":")
    assert len(frames) == len(inputs) == 16
    ref = np.stack([np.reshape(a.calc.results["dielectric_tensor"], (3, 3)) for a in frames])
    pred = np.stack([np.reshape(a.info["dielectric_tensor_pred"], (3, 3)) for a in frames])
    # the input frames come back unchanged, with predictions added
    for a, b in zip(frames, inputs):
        np.testing.assert_allclose(a.positions, b.positions)
        assert a.info["entry_id"] == b.info["entry_id"]
    ev_r, ev_p = _eigs(ref), _eigs(pred)
    metrics = json.loads((out / "metrics.json").read_text())
    expected = {
        "eps_poly_mae": np.abs(ev_p.mean(1) - ev_r.mean(1)).mean(),
        "eps_poly_rmse": np.sqrt(((ev_p.mean(1) - ev_r.mean(1)) ** 2).mean()),
        "anisotropy_ratio_mae": np.abs(ev_p[:, 2] / ev_p[:, 0] - ev_r[:, 2] / ev_r[:, 0]).mean(),
        "eigenvalue_mae": np.abs(ev_p - ev_r).mean(),
        "component_mae": np.abs(pred - ref).mean(),
        "frobenius_mae": np.sqrt(((pred - ref) ** 2).sum(axis=(1, 2))).mean(),
    }
    r2 = 1 - ((ev_p.mean(1) - ev_r.mean(1)) ** 2).sum() / ((ev_r.mean(1) - ev_r.mean()) ** 2).sum()
    assert metrics["n"] == 16 and metrics["n_without_reference"] == 0
    assert metrics["eps_poly_r2"] == pytest.approx(r2, rel=1e-6)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key
    cubic = [a.info["crystal_system"] == "cubic" for a in frames]
    per = metrics["per_crystal_system"]
    assert per["cubic"]["n"] == 4 and sum(m["n"] for m in per.values()) == 16
    sel = np.array(cubic)
    assert per["cubic"]["eps_poly_mae"] == pytest.approx(
        np.abs(ev_p[sel].mean(1) - ev_r[sel].mean(1)).mean(), rel=1e-6
    )
    # equivariant model: cubic crystals are predicted isotropic (float32 rounding only)
    assert metrics["cubic_anisotropy_ratio_mae"] < 1e-5
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16
    assert [r["id"] for r in rows] == [a.info["entry_id"] for a in inputs]
    np.testing.assert_allclose([float(r["eps_poly_pred"]) for r in rows], ev_p.mean(1), atol=1e-5)
    np.testing.assert_allclose(
        [float(r["a_r_ref"]) for r in rows], ev_r[:, 2] / ev_r[:, 0], atol=1e-5
    )


def test_same_maes_as_nequip_train_test_run(evaluated, trained):
    out, _ = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    csv_path = trained["metrics_csv"]
    pairs = {
        "eps_poly_mae": "eps_poly_mae",
        "a_r_mae": "anisotropy_ratio_mae",
        "eigenvalue_mae": "eigenvalue_mae",
        "component_mae": "component_mae",
    }
    for logged, ours in pairs.items():
        (value,) = epoch_values(csv_path, f"test0_epoch/{logged}")
        assert metrics[ours] == pytest.approx(value, rel=1e-5), logged
