"""Bad inputs of ``aniso-nequip sweep``: specs and overrides are refused with one line before the
first trial; a sweep whose trials all fail exits non-zero.
"""

import pytest

from aniso_nequip.errors import InputError
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.sweep import SpecError, load_spec, run_and_report
from aniso_nequip.sweep.runner import _suggest, open_study
from helpers import (
    ROOT,
    sweep_spec,
)

RUN_SWEEP_CASES = [
    # (spec changes, command-line overrides, error type, message)
    (
        {"metric": "val0_epoch/eps_poly_mea"},
        [],
        SpecError,
        "`metric` 'val0_epoch/eps_poly_mea' is not logged by tiny.yaml; choose one of "
        "val0_epoch/irreps_mse, val0_epoch/component_mae, val0_epoch/eps_poly_mae",
    ),
    ({"metric": "test0_epoch/eps_poly_mae"}, [], SpecError, "is not logged by tiny.yaml"),
    (
        {"overrides": ["max_epochs=0"]},
        [],
        InputError,
        "`max_epochs` must be an integer >= 1, got 0",
    ),
    ({}, ["batch_size=0"], InputError, "`batch_size` must be an integer >= 1, got 0"),
    ({}, ["--n-trials", "-1"], InputError, "`n_trials` must be >= 1, got -1"),
    (
        {"parameters": {"num_features": {"choices": [8, "sixteen"]}}},
        [],
        SpecError,
        "parameter `num_features`, choice 'sixteen': `num_features` must be an integer >= 1, "
        "got 'sixteen'",
    ),
    (
        {"parameters": {"lr": {"type": "float", "low": 0, "high": 0.01}}},
        [],
        SpecError,
        "parameter `lr`, `low`: `lr` must be a number > 0, got 0.0",
    ),
    (
        {"parameters": {"l_max": {"type": "int", "low": -1, "high": 2}}},
        [],
        SpecError,
        "parameter `l_max`, `low`: `l_max` must be an integer >= 0, got -1",
    ),
    ({"n_trials": "ten"}, [], SpecError, "`n_trials` must be an integer >= 1, got 'ten'"),
    (
        {"sampler": "tpe"},
        [],
        SpecError,
        "`sampler` must be a mapping such as {name: tpe, seed: 0}, got 'tpe'",
    ),
    (
        {"overrides": ["not_a_variable=3"]},
        [],
        SpecError,
        "the overrides ['not_a_variable=3'] do not apply to tiny.yaml: ",
    ),
]


@pytest.mark.parametrize(
    "changes, args, kind, message",
    RUN_SWEEP_CASES,
    ids=[
        "metric-typo",
        "metric-not-per-epoch",
        "spec-override",
        "cli-override",
        "n-trials",
        "choice-of-wrong-type",
        "low-outside-the-rule",
        "int-low-outside-the-rule",
        "n-trials-a-word",
        "sampler-a-string",
        "unknown-override-key",
    ],
)
def test_sweep_checks_before_the_first_trial(
    changes, args, kind, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(ROOT)
    spec = sweep_spec(tmp_path, **changes)
    overrides = [a for a in args if "=" in a]
    n_trials = int(args[1]) if args[:1] == ["--n-trials"] else None
    with pytest.raises(kind, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_and_report(spec, n_trials=n_trials, overrides=overrides)
    assert cli(["sweep", str(spec), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists(), "nothing written, no study created"


@pytest.mark.slow
def test_sweep_whose_trials_all_fail_exits_non_zero(split_overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    spec = sweep_spec(
        tmp_path,
        sampler={"name": "grid"},
        n_trials=None,
        pruner=None,
        parameters={"num_features": {"choices": [4]}},
        overrides=["max_epochs=1", "training_module.model.num_basis=0"],  # unchecked: a trial's
    )
    assert cli(["sweep", str(spec), *split_overrides]) == 2
    err = capsys.readouterr().err
    assert "all 1 trials of sweep `s` failed" in err
    assert "`num_basis` must be an integer >= 2, got 0" in err
    assert "FAIL" in (tmp_path / "s" / "trials.csv").read_text()


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_seeded_sampler_draws_new_values(sampler, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_spec(sweep_spec(tmp_path, sampler={"name": sampler, "seed": 0}))

    def draw(spec):
        study = open_study(spec)  # a new study object on the same storage: a resumed sweep
        trial = study.ask()
        values = tuple(_suggest(trial, n, p) for n, p in spec.parameters.items())
        study.tell(trial, 1.0)
        return values

    first = [draw(spec), draw(spec)]
    assert first[0] != first[1], "the resumed sampler repeated the first trial's values"
    again = load_spec(sweep_spec(tmp_path, name="t", sampler={"name": sampler, "seed": 0}))
    assert [draw(again), draw(again)] == first, "a new study with the same seed repeats them"
