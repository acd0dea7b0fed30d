"""Training the foundation config with the frozen-backbone feature cache (``nequip-train``)
(and the transformed frames kept in memory across epochs) selects the same checkpoint and reaches
the same test metrics as training without it."""

import ase.io
import h5py
import numpy as np
import pytest

from helpers import BIN, epoch_values, run_command, split_files

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning:sevenn")]


def _train(tmp, files, cache):
    run_dir = tmp / f"run_{cache is not None}"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/anisonet_foundation.yaml",
            *(f"{split}_file={path}" for split, path in files.items()),
            "max_epochs=3",
            "backbone_layers=1",
            "num_features=8",
            "batch_size=6",
            f"backbone_cache={cache or 'null'}",
            f"hydra.run.dir={run_dir}",
            # today's path (recomputed every epoch) against the new one (cache, frames in memory)
            f"data.keep_in_memory={cache is not None}",
        ]
    )
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    return run_dir, metrics_csv


def test_training_with_the_cache_changes_no_result(tmp_path):
    files = split_files(tmp_path, train=18, val=6, test=6)
    cache = tmp_path / "cache"
    runs = [_train(tmp_path, files, None), _train(tmp_path, files, cache)]
    (cache_file,) = cache.glob("*.h5")
    with h5py.File(cache_file) as file:
        assert len(file) == 30  # every train, val and test crystal, once
    val = [epoch_values(csv, "val0_epoch/weighted_sum") for _, csv in runs]
    assert len(val[0]) == 3
    np.testing.assert_allclose(val[1], val[0], rtol=1e-4)
    assert int(np.argmin(val[1])) == int(np.argmin(val[0]))  # the same best checkpoint
    for column in ("test0_epoch/weighted_sum", "test0_epoch/dielectric_tensor_eps_poly_mae"):
        np.testing.assert_allclose(*(epoch_values(csv, column) for _, csv in runs), rtol=1e-4)
    # the two best checkpoints predict alike, and run their backbone themselves
    import aniso_nequip

    frames = ase.io.read(files["test"], ":")
    predicted = [aniso_nequip.predict(frames, str(run / "best.ckpt")) for run, _ in runs]
    np.testing.assert_allclose(predicted[1], predicted[0], rtol=1e-4, atol=1e-5)
