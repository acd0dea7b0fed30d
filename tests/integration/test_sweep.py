"""aniso-nequip sweep: optuna studies of real nequip-train runs of the tiny config."""

import csv
import os
import re

import ase.io
import optuna
import pytest
import yaml

from aniso_nequip.errors import InputError
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.sweep import SpecError, load_spec, run_and_report
from helpers import BIN, ROOT, bundled, epoch_values, run_command, sweep_spec

PNG = b"\x89PNG\r\n\x1a\n"


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


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_tpe_sweep_outputs_resume_and_best_config(tmp_path, data_overrides, in_root):
    spec = sweep_spec(tmp_path)
    assert cli(["sweep", str(spec), *data_overrides]) == 0
    out = tmp_path / "s"
    for name in ("trials.csv", "trials.md", "best.yaml", "history.png", "importance.png"):
        assert (out / name).is_file(), name
    assert (out / "history.png").read_bytes()[:8] == PNG
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
    run_command([str(BIN / "nequip-train"), "-cn", str(os.path.relpath(out / "best.yaml", ROOT)),
                 "max_epochs=1", f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert (run_dir / "best.ckpt").is_file()


def test_grid_sweep_visits_every_point(tmp_path, data_overrides, in_root):
    spec = sweep_spec(
        tmp_path,
        name="g",
        sampler={"name": "grid", "seed": 0},
        n_trials=None,
        pruner=None,
        parameters={"radial_basis": {"choices": ["gaussian", "bessel"]},
                    "num_features": {"choices": [4, 6]}},
    )  # fmt: skip
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


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"parameters": {"learning_rate": {"type": "float", "low": 0.1, "high": 1}}},
         "unknown parameter(s) ['learning_rate']"),
        ({"parameters": {"lr": {"type": "float", "low": 0.1, "high": 0.1}}}, "empty range"),
        ({"parameters": {"lr": {"choices": []}}}, "empty `choices`"),
        ({"sampler": {"name": "cmaes"}}, "unknown sampler `cmaes`"),
        ({"base_config": "configs/nope.yaml"}, "does not exist"),
        ({"sampler": {"name": "grid"}}, "needs `choices` for every parameter"),
    ],
)  # fmt: skip
def test_bad_specs_fail_before_training(tmp_path, in_root, changes, message, capsys):
    spec = sweep_spec(tmp_path, **changes)
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert message in str(err.value)
    assert cli(["sweep", str(spec)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_wandb_offline_run_logs_validation_metric(tmp_path, data_overrides, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    run_dir = tmp_path / "run"
    run_command(
        [str(BIN / "nequip-train"), "-cn", "configs/tiny.yaml", "max_epochs=1", "wandb=true",
         "wandb_group=my_study", f"hydra.run.dir={run_dir}", *data_overrides]
    )  # fmt: skip
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    content = run_file.read_bytes()
    assert b"val0_epoch/eps_poly_mae" in content and b"my_study" in content
    assert epoch_values(next(run_dir.glob("csv/*/metrics.csv")), "val0_epoch/eps_poly_mae")


def test_pruning_callback_reports_and_stops(tmp_path):
    import types

    import torch

    from aniso_nequip.train import OptunaPruning

    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="p", storage=storage)
    trial = study.ask()
    marker = tmp_path / "PRUNED"
    callback = OptunaPruning(
        storage, "p", trial._trial_id, "val0_epoch/weighted_sum", str(marker),
        pruner={"name": "threshold", "upper": 1.0},
    )  # fmt: skip
    trainer = types.SimpleNamespace(
        sanity_checking=False, current_epoch=0, should_stop=False,
        callback_metrics={"val0_epoch/weighted_sum": torch.tensor(0.5)},
    )  # fmt: skip
    callback.on_validation_epoch_end(trainer, None)
    assert not trainer.should_stop and not marker.exists()
    trainer.current_epoch, trainer.callback_metrics["val0_epoch/weighted_sum"] = (
        1,
        torch.tensor(3.0),
    )
    callback.on_validation_epoch_end(trainer, None)
    assert trainer.should_stop and marker.read_text().startswith("pruned at epoch 1")
    reloaded = optuna.load_study(study_name="p", storage=storage).trials[0]
    assert reloaded.intermediate_values == {0: 0.5, 1: 3.0}


def test_two_workers_share_one_study(tmp_path, data_overrides):
    """Two processes on the same storage split the trials of one study between them."""
    import subprocess

    spec = sweep_spec(tmp_path, name="w", pruner=None)
    command = [str(BIN / "aniso-nequip"), "sweep", str(spec), "--n-trials", "4", *data_overrides]
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
    # each worker stops once the study holds 4 finished trials (one may still be in flight)
    assert 4 <= len(complete) <= 5 and len(complete) == len(study.trials)
    assert all("[trial" in out for out in outputs), "both workers ran trials"
    assert len({t.user_attrs["dir"] for t in complete}) == len(complete)


def test_journal_storage_for_shared_file_systems(tmp_path):
    from aniso_nequip.sweep.storage import open_storage

    url = f"journal://{tmp_path / 'shared' / 'study.log'}"
    study = optuna.create_study(study_name="j", storage=open_storage(url))
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, 0.25)
    # another process (here: another storage object) sees the same study
    again = optuna.load_study(study_name="j", storage=open_storage(url))
    assert [t.value for t in again.trials] == [0.25]


def test_run_and_report_checks_overrides_and_spec_before_any_trial(tmp_path):
    with pytest.raises(InputError, match=re.escape("key=value: ['max_epochs']")):
        run_and_report(tmp_path / "nope.yaml", overrides=["max_epochs"])
    with pytest.raises(SpecError, match="nope.yaml` does not exist"):
        run_and_report(tmp_path / "nope.yaml", overrides=["max_epochs=1"])
