"""End to end on nequip's runner: nequip-train on a slice of bundled data, then nequip-package."""

import ase.io
import numpy as np

from helpers import epoch_values, predict


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
