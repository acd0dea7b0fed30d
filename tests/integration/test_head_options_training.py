"""The discovery benchmark's knobs as plain ``nequip-train`` overrides of configs/tiny.yaml on a
slice: the log-space loss, head dropout, checkpoint selection by validation Spearman of a_r."""

import csv

import ase.io
import numpy as np
import pytest
import torch

from helpers import BIN, epoch_values, predict, run_command, split_files

pytestmark = pytest.mark.slow


def _train(tmp_path, *overrides):
    files = split_files(tmp_path, train=16, val=8, test=8)
    run_dir = tmp_path / "run"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/tiny.yaml",
            *(f"{split}_file={path}" for split, path in files.items()),
            f"hydra.run.dir={run_dir}",
            *overrides,
        ]
    )
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    return run_dir, metrics_csv, files


def test_log_space_loss_trains(tmp_path):
    _, metrics_csv, _ = _train(tmp_path, "loss_metric=log_mse", "max_epochs=1")
    (loss,) = epoch_values(metrics_csv, "train_loss_epoch/irreps_log_mse")
    (total,) = epoch_values(metrics_csv, "train_loss_epoch/weighted_sum")
    assert np.isfinite(loss) and loss > 0 and total == pytest.approx(loss)
    (spearman,) = epoch_values(metrics_csv, "val0_epoch/a_r_spearman")
    assert -1.0 <= spearman <= 1.0


def test_head_dropout_trains_packages_and_spearman_selects_the_checkpoint(tmp_path):
    from nequip.model import ModelFromCheckpoint, ModelFromPackage

    run_dir, metrics_csv, files = _train(
        tmp_path,
        "head_dropout=0.1",
        "max_epochs=2",
        "monitor=val0_epoch/a_r_spearman",
        "monitor_mode=max",
    )
    checkpoint = torch.load(run_dir / "best.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["model"]["head_dropout"] == 0.1
    model = ModelFromCheckpoint(str(run_dir / "best.ckpt"))["sole_model"].eval()
    assert "head_dropout" in dict(model.model.named_children())
    frames = ase.io.read(files["test"], ":")
    first, second = predict(model, frames), predict(model, frames)
    assert np.array_equal(first, second) and np.isfinite(first).all()
    # nequip-package interns the dropout module; the package predicts the same tensors
    package = tmp_path / "model.nequip.zip"
    run_command([str(BIN / "nequip-package"), "build", str(run_dir / "best.ckpt"), str(package)])
    packaged = predict(ModelFromPackage(str(package))["sole_model"].eval(), frames)
    np.testing.assert_allclose(packaged, first, rtol=0, atol=1e-6)
    # the best checkpoint is the epoch of the highest validation Spearman of a_r
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val0_epoch/a_r_spearman")]
    spearman = [float(r["val0_epoch/a_r_spearman"]) for r in rows]
    assert len(spearman) == 2
    assert checkpoint["epoch"] == int(rows[int(np.argmax(spearman))]["epoch"])
