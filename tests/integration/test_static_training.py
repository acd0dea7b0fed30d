"""The multi-target config trained by ``nequip-train`` (``configs/anisonet_static.yaml``): each
head's loss falls, and ``nequip-evaluate``, ``predict`` and the calculator return every head."""

import numpy as np
import pytest

from helpers import BIN, epoch_values, run_command, split_files

pytestmark = pytest.mark.slow

EPS, IONIC, BORN = "dielectric_tensor", "dielectric_ionic_tensor", "born_effective_charges"


@pytest.fixture(scope="module")
def static_run(tmp_path_factory):

    tmp = tmp_path_factory.mktemp("static")
    files = split_files(tmp, train=32, val=8, test=8)
    run_dir = tmp / "run"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/anisonet_static.yaml",
            "l_max=2",
            "num_features=8",
            "num_layers=2",
            "max_epochs=6",
            "batch_size=4",
            "lr=0.01",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['test']}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    return run_dir, files


def test_training_lowers_each_heads_loss(static_run):
    run_dir, _ = static_run
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    for name in ("irreps_mse", "ionic_irreps_mse", "born_mse"):
        values = epoch_values(metrics_csv, f"train_metric_epoch/{name}")
        assert len(values) == 6 and values[-1] < values[0], name
    for name in ("static_eps_poly_mae", "static_a_r_mae", "ionic_a_r_mae", "born_isotropic_mae"):
        (value,) = epoch_values(metrics_csv, f"test0_epoch/{name}")
        assert np.isfinite(value)


def test_evaluate_and_predict_return_every_head(static_run, tmp_path):
    import json

    import ase.io

    import aniso_nequip
    from aniso_nequip.scripts.evaluate import main as evaluate_main

    run_dir, files = static_run
    out = tmp_path / "eval"
    assert (
        evaluate_main(
            ["--model", str(run_dir / "best.ckpt"), "--data", str(files["test"]), "--out", str(out)]
        )
        == 0
    )
    frames = ase.io.read(out / "predictions.extxyz", ":")
    assert all(np.shape(a.info["dielectric_ionic_tensor_pred"]) == (9,) for a in frames)
    assert all(a.arrays["born_effective_charges_pred"].shape == (len(a), 9) for a in frames)
    metrics = json.loads((out / "metrics.json").read_text())
    ref = np.stack([np.reshape(a.info[IONIC], (3, 3)) for a in frames])
    pred = np.stack([np.reshape(a.info["dielectric_ionic_tensor_pred"], (3, 3)) for a in frames])
    assert metrics[IONIC]["component_mae"] == pytest.approx(np.abs(pred - ref).mean())
    assert metrics["static"]["n"] == 8 and metrics[BORN]["n_atoms"] == sum(len(a) for a in frames)
    heads = aniso_nequip.predict(frames, run_dir / "best.ckpt", device="cpu", field="all")
    assert set(heads) == {EPS, IONIC, BORN}
    np.testing.assert_allclose(heads[IONIC], pred, atol=1e-6)
    assert [z.shape for z in heads[BORN]] == [(len(a), 3, 3) for a in frames]
    with pytest.raises(ValueError, match="not `nope`"):
        aniso_nequip.predict(frames, run_dir / "best.ckpt", field="nope")
    atoms = frames[0].copy()
    atoms.calc = aniso_nequip.DielectricCalculator(run_dir / "best.ckpt")
    assert atoms.calc.get_property(BORN, atoms).shape == (len(atoms), 3, 3)
