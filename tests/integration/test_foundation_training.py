"""The foundation config (``configs/anisonet_foundation.yaml``) end to end: ``nequip-train``,
``nequip-package`` (the package runs without SevenNet), ``nequip-evaluate``, the calculator,
``aniso-nequip screen`` and a real sweep trial."""

import sys

import ase.io
import numpy as np
import pytest

from helpers import BIN, bundled, run_command, split_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def foundation_run(tmp_path_factory):
    """configs/anisonet_foundation.yaml trained for 2 epochs on a slice of the bundled data."""
    tmp = tmp_path_factory.mktemp("foundation")
    files = split_files(tmp, train=24, val=8, test=8)
    run_dir = tmp / "run"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/anisonet_foundation.yaml",
            *(f"{split}_file={path}" for split, path in files.items()),
            "max_epochs=2",
            "backbone_layers=1",
            "num_features=8",
            "batch_size=6",
            f"backbone_cache={tmp / 'cache'}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    return run_dir, files


def test_foundation_config_trains_and_packages(foundation_run, tmp_path):
    from helpers import epoch_values

    run_dir, files = foundation_run
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    train_loss = epoch_values(metrics_csv, "train_loss_epoch/weighted_sum")
    assert len(train_loss) == 2 and train_loss[1] < train_loss[0]
    package = tmp_path / "foundation.nequip.zip"
    run_command([str(BIN / "nequip-package"), "build", str(run_dir / "best.ckpt"), str(package)])
    # the package predicts what the checkpoint does, in a process where SevenNet cannot be
    # imported: a packaged foundation model needs only aniso-nequip's own dependencies
    script = (
        "import sys, numpy as np; sys.modules['sevenn'] = None\n"
        "import aniso_nequip, ase.io\n"
        f"frames = ase.io.read('{files['test']}', ':')\n"
        f"np.save('{tmp_path}/pkg.npy', aniso_nequip.predict(frames, '{package}'))\n"
    )
    run_command([sys.executable, "-c", script])
    import aniso_nequip

    frames = ase.io.read(files["test"], ":")
    from_ckpt = aniso_nequip.predict(frames, str(run_dir / "best.ckpt"))
    np.testing.assert_allclose(np.load(tmp_path / "pkg.npy"), from_ckpt, rtol=0, atol=1e-5)
    assert from_ckpt.shape == (8, 3, 3)


def test_downstream_commands_take_the_foundation_model(foundation_run, tmp_path):
    """nequip-evaluate, the calculator and `aniso-nequip screen` load the foundation model as
    they load any other and agree with aniso_nequip.predict."""
    import json

    import aniso_nequip

    run_dir, files = foundation_run
    ckpt = str(run_dir / "best.ckpt")
    frames = ase.io.read(files["test"], ":")
    eps = aniso_nequip.predict(frames, ckpt)
    run_command(
        [
            str(BIN / "nequip-evaluate"),
            "--model",
            ckpt,
            "--data",
            str(files["test"]),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    evaluated = ase.io.read(tmp_path / "eval" / "predictions.extxyz", ":")
    np.testing.assert_allclose(
        [np.reshape(a.info["dielectric_tensor_pred"], (3, 3)) for a in evaluated], eps, atol=1e-5
    )
    atoms = frames[1].copy()
    atoms.calc = aniso_nequip.DielectricCalculator(ckpt)
    np.testing.assert_allclose(
        atoms.calc.get_property("dielectric_tensor", atoms), eps[1], atol=1e-5
    )
    screen = tmp_path / "screen"
    run_command(
        [
            str(BIN / "aniso-nequip"),
            "screen",
            "--quiet",
            "--model",
            ckpt,
            "--structures",
            str(files["test"]),
            "--no-dimensionality",
            "--out",
            str(screen),
        ]
    )
    from aniso_nequip.metrics import derived

    summary = json.loads((screen / "summary.json").read_text())
    # the top is the largest a_r among the crystals the screen ranks: its rules leave out the
    # large cells and the cell of graphite with 22 A between its layers (not a bulk crystal)
    ranked = {row["id"] for row in summary["top"]}
    assert len(ranked) == summary["ranked"] == 5 and "mf-test-0007" in summary["invalid"]
    physical = derived(eps)["eigenvalues"][:, 0] >= 1.0
    physical &= np.array([a.info["entry_id"] in ranked for a in frames])
    a_r = np.where(physical, derived(eps)["a_r"], -np.inf)
    assert summary["top"][0]["id"] == frames[int(np.argmax(a_r))].info["entry_id"]
    assert float(summary["top"][0]["a_r"]) == pytest.approx(a_r.max(), rel=1e-3)


def test_foundation_sweep_runs_its_trials(tmp_path, monkeypatch):
    """`aniso-nequip sweep` on configs/sweeps/foundation.yaml: one short real trial."""
    import csv

    import yaml

    from aniso_nequip.scripts.cli import main as cli
    from helpers import ROOT

    monkeypatch.chdir(ROOT)
    spec = yaml.safe_load((ROOT / "configs" / "sweeps" / "foundation.yaml").read_text())
    spec.update(n_trials=1, output_dir=str(tmp_path / "sweep"), overrides=["max_epochs=1"])
    spec["parameters"]["backbone_layers"] = {"type": "categorical", "choices": [1]}
    spec["parameters"]["num_features"] = {"type": "categorical", "choices": [8]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    data = []
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        file = tmp_path / f"{split}.extxyz"
        ase.io.write(file, bundled(f"mp_subset_{split}", f":{n}"))
        data.append(f"{split}_file={file}")
    assert cli(["sweep", str(path), *data, "batch_size=6"]) == 0
    with open(tmp_path / "sweep" / "trials.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["state"] == "COMPLETE" and float(row["value"]) > 0
    assert int(row["param_backbone_layers"]) == 1
