"""End to end on nequip's runner: nequip-train on a slice of bundled data, then nequip-package."""

import csv
import os
import pathlib
import subprocess
import sys

import ase.io
import numpy as np
import pytest

from conftest import ROOT, bundled, predict

BIN = pathlib.Path(sys.executable).parent


def _run(args, cwd=ROOT):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _epoch_values(metrics_csv, column):
    with open(metrics_csv) as f:
        return [float(row[column]) for row in csv.DictReader(f) if row.get(column)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few epochs on 48 crystals of the bundled MP training split."""
    tmp = tmp_path_factory.mktemp("train")
    files = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        files[split] = tmp / f"{split}.extxyz"
        ase.io.write(files[split], bundled(f"mp_subset_{split}", f":{n}"))
    run_dir = tmp / "run"
    _run(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/tiny.yaml",
            f"train_file={files['train']}",
            f"val_file={files['val']}",
            f"test_file={files['test']}",
            "max_epochs=8",
            f"hydra.run.dir={run_dir}",
        ]
    )
    return {"dir": run_dir, "files": files}


def test_training_lowers_loss_and_writes_checkpoints(trained):
    run_dir = trained["dir"]
    assert (run_dir / "best.ckpt").is_file() and (run_dir / "last.ckpt").is_file()
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    train_loss = _epoch_values(metrics_csv, "train_loss_epoch/weighted_sum")
    val_loss = _epoch_values(metrics_csv, "val0_epoch/weighted_sum")
    assert len(train_loss) == 8
    assert train_loss[-1] < 0.8 * train_loss[0]
    assert min(val_loss[1:]) < val_loss[0]
    # validation and test metrics are logged for the derived quantities
    for name in ("eps_poly_mae", "a_r_mae", "eigenvalue_mae", "component_mae", "irreps_mse"):
        assert _epoch_values(metrics_csv, f"val0_epoch/{name}")
        (test_value,) = _epoch_values(metrics_csv, f"test0_epoch/{name}")
        assert np.isfinite(test_value)


def test_package_predicts_same_tensors_as_checkpoint(trained):
    from nequip.model import ModelFromCheckpoint, ModelFromPackage

    run_dir = trained["dir"]
    package = run_dir / "model.nequip.zip"
    _run([str(BIN / "nequip-package"), "build", str(run_dir / "best.ckpt"), str(package)])
    assert package.is_file()
    frames = ase.io.read(trained["files"]["test"], ":")
    from_ckpt = ModelFromCheckpoint(str(run_dir / "best.ckpt"))["sole_model"].eval()
    from_pkg = ModelFromPackage(str(package))["sole_model"].eval()
    eps_ckpt = predict(from_ckpt, frames)
    eps_pkg = predict(from_pkg, frames)
    assert eps_ckpt.shape == (16, 3, 3)
    np.testing.assert_allclose(eps_pkg, eps_ckpt, rtol=0, atol=1e-6)
    # a trained model lands in the right range: mean eps_poly of this data is about 4.8
    assert 1.0 < np.trace(eps_ckpt, axis1=1, axis2=2).mean() / 3 < 15.0
