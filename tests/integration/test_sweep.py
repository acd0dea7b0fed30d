"""aniso-nequip sweep: optuna studies of real nequip-train runs of the tiny config."""

import csv
import os

import ase.io
import optuna
import pytest
import yaml

from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.sweep import load_spec
from helpers import BIN, PNG_SIGNATURE, ROOT, bundled, epoch_values, run_command, sweep_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweepdata")
    out = []
    for split, n in (("train", 16), ("val", 8), ("test", 8)):
        path = tmp / f"{split}.extxyz"
        ase.io.write(path, bundled(f"mp_subset_{split}", f":{n}"))
        out.append(f"{split}_file={path}")
    return out + ["batch_size=8"]


def _trials(tmp_path, name):
    with open(tmp_path / name / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_tpe_sweep_outputs_resume_and_best_config(tmp_path, data_overrides, in_root):
    spec = sweep_spec(tmp_path)
    assert cli(["sweep", str(spec), *data_overrides]) == 0
    out = tmp_path / "s"
    for name in ("trials.csv", "trials.md", "best.yaml", "history.png", "importance.png"):
        assert (out / name).is_file(), name
    assert (out / "history.png").read_bytes()[:8] == PNG_SIGNATURE
    rows = _trials(tmp_path, "s")
    # the median pruner may stop a trial whose first epoch is worse than the others'
    assert len(rows) == 3 and {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"}
    assert rows[0]["state"] == "COMPLETE"
    for row in (r for r in rows if r["state"] == "COMPLETE"):
        # the objective is the metric at the best-validation-loss epoch of that trial's run
        (metrics_csv,) = (out / "trials" / f"trial_{int(row['number']):04d}").glob("csv/*/*.csv")
        loss = epoch_values(metrics_csv, "val0_epoch/weighted_sum")
        metric = epoch_values(metrics_csv, "val0_epoch/eps_poly_mae")
        assert float(row["value"]) == pytest.approx(metric[loss.index(min(loss))])
    assert "| COMPLETE |" in (out / "trials.md").read_text()
    for row in (r for r in rows if r["state"] == "PRUNED"):
        trial_dir = out / "trials" / f"trial_{int(row['number']):04d}"
        assert (trial_dir / "PRUNED").read_text().startswith("pruned at epoch")
    first = {r["number"]: (r["value"], r["param_lr"]) for r in rows}
    stamp = os.path.getmtime(out / "trials" / "trial_0000" / "config.yaml")

    # re-running resumes: completed trials are kept and not re-run
    assert cli(["sweep", str(spec), "--n-trials", "4", *data_overrides]) == 0
    rows = _trials(tmp_path, "s")
    assert len(rows) == 4 and {r["number"]: (r["value"], r["param_lr"]) for r in rows[:3]} == first
    assert os.path.getmtime(out / "trials" / "trial_0000" / "config.yaml") == stamp

    # best.yaml is a complete config that nequip-train runs as is
    best = yaml.safe_load((out / "best.yaml").read_text())
    best_row = min((r for r in rows if r["value"]), key=lambda r: float(r["value"]))
    assert best["lr"] == pytest.approx(float(best_row["param_lr"]))
    assert "OptunaPruning" not in (out / "best.yaml").read_text()
    run_dir = tmp_path / "best_run"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            str(os.path.relpath(out / "best.yaml", ROOT)),
            "max_epochs=1",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert (run_dir / "best.ckpt").is_file()


def test_grid_sweep_visits_every_point(tmp_path, data_overrides, in_root):
    spec = sweep_spec(
        tmp_path,
        name="g",
        sampler={"name": "grid", "seed": 0},
        n_trials=None,
        pruner=None,
        parameters={
            "radial_basis": {"choices": ["gaussian", "bessel"]},
            "num_features": {"choices": [4, 6]},
        },
    )
    # a choice outside a variable's rule is refused before the first trial and failing trials
    # are recorded and reported: test_bad_inputs_sweep
    assert load_spec(spec).n_trials == 4
    args = ["sweep", str(spec), "l_max=2", *data_overrides]
    assert cli(args) == 0
    rows = _trials(tmp_path, "g")
    points = {(r["param_radial_basis"], r["param_num_features"]) for r in rows}
    assert points == {(b, f) for b in ("gaussian", "bessel") for f in ("4", "6")}
    assert sum(r["state"] == "COMPLETE" for r in rows) == 4
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'g' / 'study.db'}")
    assert len(study.trials) == 4


def test_wandb_offline_run_logs_validation_metric(tmp_path, data_overrides, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    run_dir = tmp_path / "run"
    run_command(
        [
            str(BIN / "nequip-train"),
            "-cn",
            "configs/tiny.yaml",
            "max_epochs=1",
            "wandb=true",
            "wandb_group=my_study",
            f"hydra.run.dir={run_dir}",
            *data_overrides,
        ]
    )
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    content = run_file.read_bytes()
    assert b"val0_epoch/eps_poly_mae" in content and b"my_study" in content
    assert epoch_values(next(run_dir.glob("csv/*/metrics.csv")), "val0_epoch/eps_poly_mae")


def test_two_workers_share_one_study(tmp_path, data_overrides):
    """Two processes on the same storage split the trials of one study between them."""
    import subprocess

    spec = sweep_spec(tmp_path, name="w", pruner=None)
    command = [str(BIN / "aniso-nequip"), "sweep", str(spec), "--n-trials", "2", *data_overrides]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    workers = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w' / 'study.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    # each worker stops once the study holds 2 finished trials (one may still be in flight)
    assert 2 <= len(complete) <= 3 and len(complete) == len(study.trials)
    assert all("[trial" in out for out in outputs), "both workers ran trials"
    assert len({t.user_attrs["dir"] for t in complete}) == len(complete)
