"""End to end on nequip's runner: nequip-train on a slice of bundled data, then nequip-package."""

import ase.io
import numpy as np
import pytest

from helpers import BIN, epoch_values, predict, run_command, split_files

pytestmark = pytest.mark.slow


def test_training_lowers_loss_and_writes_checkpoints(trained):
    run_dir = trained["dir"]
    assert (run_dir / "best.ckpt").is_file() and (run_dir / "last.ckpt").is_file()
    metrics_csv = trained["metrics_csv"]
    train_loss = epoch_values(metrics_csv, "train_loss_epoch/weighted_sum")
    val_loss = epoch_values(metrics_csv, "val0_epoch/weighted_sum")
    assert len(train_loss) == 8
    assert train_loss[-1] < 0.8 * train_loss[0]
    assert min(val_loss[1:]) < val_loss[0]
    # validation and test metrics are logged for the derived quantities
    for name in ("eps_poly_mae", "a_r_mae", "eigenvalue_mae", "component_mae", "irreps_mse"):
        assert epoch_values(metrics_csv, f"val0_epoch/{name}")
        (test_value,) = epoch_values(metrics_csv, f"test0_epoch/{name}")
        assert np.isfinite(test_value)


def test_training_console_shows_statistics_progress_and_one_line_per_epoch(trained):
    """The statistics pass has a progress bar, each epoch one line whose numbers are those
    logged to metrics.csv, and a fresh run directory gives no checkpoint-folder warning."""
    console = trained["console"].replace("\r", "\n")
    assert "training-data statistics: 100%" in console
    assert "exists and is not empty" not in console
    lines = [line for line in console.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == [f"{i}/8" for i in range(1, 9)]
    val_loss = epoch_values(trained["metrics_csv"], "val0_epoch/weighted_sum")
    a_r = epoch_values(trained["metrics_csv"], "val0_epoch/a_r_mae")
    rank = epoch_values(trained["metrics_csv"], "val0_epoch/a_r_spearman")
    for line, loss, mae, spearman in zip(lines, val_loss, a_r, rank, strict=True):
        assert f"val loss {loss:.4f}" in line and f"val a_r MAE {mae:.4f}" in line
        assert f"val a_r Spearman {spearman:.4f}" in line
        assert "train loss " in line and "val eps_poly MAE " in line and line.endswith(" s")
    assert "loss=" in console  # the current loss on the progress bar


def test_package_predicts_same_tensors_as_checkpoint(trained, packaged):
    from nequip.model import ModelFromCheckpoint, ModelFromPackage

    run_dir, package = trained["dir"], packaged
    frames = ase.io.read(trained["files"]["test"], ":")
    from_ckpt = ModelFromCheckpoint(str(run_dir / "best.ckpt"))["sole_model"].eval()
    from_pkg = ModelFromPackage(str(package))["sole_model"].eval()
    eps_ckpt = predict(from_ckpt, frames)
    eps_pkg = predict(from_pkg, frames)
    assert eps_ckpt.shape == (16, 3, 3)
    np.testing.assert_allclose(eps_pkg, eps_ckpt, rtol=0, atol=1e-6)
    # a trained model lands in the right range: mean eps_poly of this data is about 4.8
    assert 1.0 < np.trace(eps_ckpt, axis1=1, axis2=2).mean() / 3 < 15.0


@pytest.mark.parametrize("readout", ["log", "local_field"])
def test_positive_readouts_train_and_package(readout, tmp_path):
    """``readout=...`` as a plain nequip-train override: 2 epochs of configs/tiny.yaml on a
    slice, then nequip-package; the package predicts the checkpoint's tensors, all > 1."""
    from nequip.model import ModelFromCheckpoint, ModelFromPackage

    files = split_files(tmp_path, train=16, val=8, test=8)
    run_dir = tmp_path / "run"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/tiny.yaml",
            f"readout={readout}",
            *(f"{split}_file={path}" for split, path in files.items()),
            "max_epochs=2",
            f"hydra.run.dir={run_dir}",
        ]
    )
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    assert len(epoch_values(metrics_csv, "train_loss_epoch/weighted_sum")) == 2
    assert np.isfinite(epoch_values(metrics_csv, "test0_epoch/eps_poly_mae")).all()
    package = tmp_path / "model.nequip.zip"
    run_command([str(BIN / "nequip-package"), "build", str(run_dir / "best.ckpt"), str(package)])
    frames = ase.io.read(files["test"], ":")
    eps_ckpt = predict(ModelFromCheckpoint(str(run_dir / "best.ckpt"))["sole_model"].eval(), frames)
    eps_pkg = predict(ModelFromPackage(str(package))["sole_model"].eval(), frames)
    np.testing.assert_allclose(eps_pkg, eps_ckpt, rtol=0, atol=1e-6)
    assert np.linalg.eigvalsh(eps_ckpt).min() > 1.0
