"""aniso-nequip sweep without training: specs and overrides checked before any trial, the pruning
callback, the journal storage (the sweeps themselves: tests/integration/test_sweep.py)."""

import re

import optuna
import pytest

from aniso_nequip.errors import InputError
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.sweep import SpecError, load_spec, run_and_report
from helpers import sweep_spec


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"parameters": {"learning_rate": {"type": "float", "low": 0.1, "high": 1}}},
            "unknown parameter(s) ['learning_rate']",
        ),
        ({"parameters": {"lr": {"type": "float", "low": 0.1, "high": 0.1}}}, "empty range"),
        ({"parameters": {"lr": {"choices": []}}}, "empty `choices`"),
        ({"sampler": {"name": "cmaes"}}, "unknown sampler `cmaes`"),
        ({"base_config": "configs/nope.yaml"}, "does not exist"),
        ({"sampler": {"name": "grid"}}, "needs `choices` for every parameter"),
    ],
)
def test_bad_specs_fail_before_training(tmp_path, in_root, changes, message, capsys):
    spec = sweep_spec(tmp_path, **changes)
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    assert message in str(err.value)
    assert cli(["sweep", str(spec)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_pruning_callback_reports_and_stops(tmp_path):
    import types

    import torch

    from aniso_nequip.sweep import OptunaPruning

    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="p", storage=storage)
    trial = study.ask()
    marker = tmp_path / "PRUNED"
    callback = OptunaPruning(
        storage,
        "p",
        trial._trial_id,
        "val0_epoch/weighted_sum",
        str(marker),
        pruner={"name": "threshold", "upper": 1.0},
    )
    trainer = types.SimpleNamespace(
        sanity_checking=False,
        current_epoch=0,
        should_stop=False,
        callback_metrics={"val0_epoch/weighted_sum": torch.tensor(0.5)},
    )
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
