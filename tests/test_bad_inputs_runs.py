"""Configs and runs fail early and clearly: config variables, fine-tuning mismatches, sweeps,
screening options and re-runs, dataset statistics of undefined tensors."""

import os
import subprocess
import sys
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
import yaml

from aniso_nequip import errors
from aniso_nequip.data import DielectricDataModule
from aniso_nequip.data.matching import crystal_id
from aniso_nequip.data.stats import dataset_statistics
from aniso_nequip.errors import InputError
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.sweep import SpecError, load_spec, run_and_report
from aniso_nequip.sweep.runner import _suggest, open_study
from aniso_nequip.train import SelfContainedCheckpoints
from aniso_nequip.variables import check_config
from helpers import BIN, ROOT, build_tiny, bundled

RUN_TYPE_NAMES = ["H", "Li", "O", "Si"]


def _run_builder(name, value):
    build_tiny(AnisoNetModel, type_names=RUN_TYPE_NAMES, **{name: value})


def _run_datamodule(name, value):
    DielectricDataModule(
        seed=0, train_file_path="never-read.extxyz", **{name: {"batch_size": value}}
    )


def _run_optimizer(name, value):
    module = SimpleNamespace(hparams={"optimizer": {name: value}, "model": {}})
    SelfContainedCheckpoints(RUN_TYPE_NAMES, 5.0).setup(None, module, "fit")


def _run_config(name, value):
    check_config({name: value})


RUN_VARIABLE_CASES = [
    # (where the value is used, variable, value, the message)
    (_run_builder, "r_max", -1, "`r_max` must be a number > 0, got -1"),
    (_run_builder, "r_max", "abc", "`r_max` must be a number > 0, got 'abc'"),
    (_run_builder, "l_max", -1, "`l_max` must be an integer >= 0, got -1"),
    (_run_builder, "l_max", 2.5, "`l_max` must be an integer >= 0, got 2.5"),
    (_run_builder, "num_layers", 0, "`num_layers` must be an integer >= 1, got 0"),
    (_run_builder, "num_features", 0, "`num_features` must be an integer >= 1, got 0"),
    (_run_builder, "num_basis", 0, "`num_basis` must be an integer >= 1, got 0"),
    (_run_builder, "radial_basis", "cosine",
     "`radial_basis` must be one of gaussian, bessel, got 'cosine'"),
    (_run_builder, "type_embed_num_features", 0,
     "`type_embed_num_features` must be an integer >= 1 (or null), got 0"),
    (_run_datamodule, "train_dataloader", 0,
     "`train_dataloader.batch_size` must be an integer >= 1, got 0"),
    (_run_datamodule, "val_dataloader", "8",
     "`val_dataloader.batch_size` must be an integer >= 1, got '8'"),
    (_run_optimizer, "lr", -1, "`lr` must be a number > 0, got -1"),
    (_run_optimizer, "lr", 0.0, "`lr` must be a number > 0, got 0.0"),
    (_run_optimizer, "weight_decay", -0.1, "`weight_decay` must be a number >= 0, got -0.1"),
    (_run_config, "batch_size", 0, "`batch_size` must be an integer >= 1, got 0"),
    (_run_config, "max_epochs", 0, "`max_epochs` must be an integer >= 1, got 0"),
    (_run_config, "early_stopping_patience", -1,
     "`early_stopping_patience` must be an integer >= 0, got -1"),
    (_run_config, "lr_decay", 0, "`lr_decay` must be a number > 0, got 0"),
    (_run_config, "loss_metric", "l2", "`loss_metric` must be one of mse, mae, got 'l2'"),
    (_run_config, "model_dtype", "float16",
     "`model_dtype` must be one of float32, float64, got 'float16'"),
    (_run_config, "physical_readout", "yes", "`physical_readout` must be true or false, got 'yes'"),
    (_run_config, "num_workers", -1, "`num_workers` must be an integer >= 0, got -1"),
]  # fmt: skip


@pytest.mark.parametrize(
    "check, name, value, message",
    RUN_VARIABLE_CASES,
    ids=[f"{c[0].__name__[5:]}-{c[1]}={c[2]!r}" for c in RUN_VARIABLE_CASES],
)
def test_config_variable_out_of_range(check, name, value, message):
    with pytest.raises(InputError) as err:
        check(name, value)
    assert str(err.value) == message


def test_num_layers_may_be_zero_on_a_backbone():
    check_config({"backbone": "7net-0", "num_layers": 0})
    with pytest.raises(InputError, match="`num_layers` must be an integer >= 1, got 0"):
        check_config({"num_layers": 0})


@pytest.fixture(scope="module")
def _run_data(tmp_path_factory):
    """Small train/val/test files as ``key=value`` overrides of the tiny config."""
    tmp = tmp_path_factory.mktemp("runs_data")
    out = []
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        path = tmp / f"{split}.extxyz"
        ase.io.write(path, bundled(f"mp_subset_{split}", f":{n}"))
        out.append(f"{split}_file={path}")
    return out


def _run_train(args, tmp_path, **env):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [str(BIN / "nequip-train"), "-cn", "configs/tiny.yaml", f"hydra.run.dir={run_dir}", *args],
        cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore", **env),
    )  # fmt: skip
    return proc, run_dir


RUN_TRAIN_CASES = [
    (["l_max=-1"], "`l_max` must be an integer >= 0, got -1"),
    (["batch_size=0"], "`batch_size` must be an integer >= 1, got 0"),
    (["r_max=abc"], "`r_max` must be a number > 0, got 'abc'"),
]


@pytest.mark.parametrize(
    "args, message", RUN_TRAIN_CASES, ids=[" ".join(c[0]) for c in RUN_TRAIN_CASES]
)
def test_nequip_train_refuses_a_variable_in_one_line(args, message, tmp_path):
    """The config's check runs when nequip-train starts: one line, no run directory."""
    proc, run_dir = _run_train(args, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"nequip-train: error: {message}"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run_dir.exists()


def test_nequip_train_prints_a_builder_error_in_one_line(_run_data, tmp_path):
    """A value that reaches the builder unchecked (not a top-level variable) fails there, after
    the data statistics: Hydra and Lightning wrap it, the excepthook prints one line."""
    proc, _ = _run_train([*_run_data, "training_module.model.num_basis=0"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "nequip-train: error: `num_basis` must be an integer >= 1, got 0"
    assert "Traceback" not in proc.stderr


def _run_wrapped(error):
    """``error`` raised from within another exception, as Hydra wraps a builder's errors."""
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("Error in call to target 'AnisoNetModel'") from inner
    except RuntimeError as outer:
        return outer


RUN_HOOK_CASES = [
    # (error, ANISO_NEQUIP_TRACEBACK, one line expected)
    (InputError("`lr` must be a number > 0, got -1"), "", True),
    (InputError("`lr` must be a number > 0, got -1"), "1", False),
    (ValueError("a bug"), "", False),
]


@pytest.mark.parametrize(
    "error, env, one_line",
    RUN_HOOK_CASES,
    ids=["input-error", "input-error-traceback-asked", "other-error"],
)
def test_excepthook_prints_input_errors_only(error, env, one_line, monkeypatch, capsys):
    monkeypatch.setenv(errors.TRACEBACK_VARIABLE, env)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/nequip-train"])
    wrapped = _run_wrapped(error)
    errors._excepthook(type(wrapped), wrapped, wrapped.__traceback__, previous=sys.__excepthook__)
    err = capsys.readouterr().err
    if one_line:
        assert err == f"nequip-train: error: {error}\n"
    else:
        assert "Traceback" in err and str(error) in err


@pytest.fixture(scope="module")
def _run_source(tmp_path_factory):
    """A checkpoint as fine-tuning reads it: the source model's builder configuration."""
    path = tmp_path_factory.mktemp("runs_ft") / "source.ckpt"
    model = {"_target_": "aniso_nequip.model.AnisoNetModel", "type_names": RUN_TYPE_NAMES,
             "r_max": 5.0, "l_max": 2}  # fmt: skip
    torch.save({"hyper_parameters": {"model": model}}, path)
    return path


RUN_FINETUNE_CASES = [
    ([RUN_TYPE_NAMES[1], RUN_TYPE_NAMES[0], *RUN_TYPE_NAMES[2:]], 5.0,
     r"type_names \['H', 'Li', 'O', 'Si'\] but the data are mapped with model_type_names "
     r"\['Li', 'H', 'O', 'Si'\]"),
    (RUN_TYPE_NAMES, 4.0,
     r"has r_max 5.0 but the data's neighbour lists use r_max 4.0: set r_max=5.0"),
]  # fmt: skip


@pytest.mark.parametrize(
    "type_names, r_max, message", RUN_FINETUNE_CASES, ids=["reordered-elements", "other-r_max"]
)
def test_finetuning_refuses_another_element_order_or_cutoff(
    type_names, r_max, message, _run_source
):
    module = SimpleNamespace(
        hparams={"model": {"_target_": "nequip.model.saved_models.load_saved_model",
                           "input_path": str(_run_source)}}
    )  # fmt: skip
    SelfContainedCheckpoints(RUN_TYPE_NAMES, 5.0).setup(None, module, "fit")
    with pytest.raises(InputError, match=message) as err:
        SelfContainedCheckpoints(type_names, r_max).setup(None, module, "fit")
    assert str(_run_source) in str(err.value)


def _run_spec(tmp_path, name="s", **changes):
    spec = yaml.safe_load((ROOT / "configs" / "sweeps" / "tiny.yaml").read_text())
    spec.update(study_name=name, output_dir=str(tmp_path / name), **changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


RUN_SWEEP_CASES = [
    # (spec changes, command-line overrides, error type, message)
    ({"metric": "val0_epoch/eps_poly_mea"}, [], SpecError,
     "`metric` 'val0_epoch/eps_poly_mea' is not logged by tiny.yaml; choose one of "
     "val0_epoch/irreps_mse, val0_epoch/component_mae, val0_epoch/eps_poly_mae"),
    ({"metric": "test0_epoch/eps_poly_mae"}, [], SpecError, "is not logged by tiny.yaml"),
    ({"overrides": ["max_epochs=0"]}, [], InputError,
     "`max_epochs` must be an integer >= 1, got 0"),
    ({}, ["batch_size=0"], InputError, "`batch_size` must be an integer >= 1, got 0"),
    ({}, ["--n-trials", "-1"], InputError, "`n_trials` must be >= 1, got -1"),
]  # fmt: skip


@pytest.mark.parametrize(
    "changes, args, kind, message",
    RUN_SWEEP_CASES,
    ids=["metric-typo", "metric-not-per-epoch", "spec-override", "cli-override", "n-trials"],
)
def test_sweep_checks_before_the_first_trial(
    changes, args, kind, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(ROOT)
    spec = _run_spec(tmp_path, **changes)
    overrides = [a for a in args if "=" in a]
    n_trials = int(args[1]) if args[:1] == ["--n-trials"] else None
    with pytest.raises(kind, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_and_report(spec, n_trials=n_trials, overrides=overrides)
    assert cli(["sweep", str(spec), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists(), "nothing written, no study created"


def test_sweep_whose_trials_all_fail_exits_non_zero(_run_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    spec = _run_spec(
        tmp_path,
        sampler={"name": "grid"},
        n_trials=None,
        pruner=None,
        parameters={"num_basis": {"choices": [0]}},
    )
    assert cli(["sweep", str(spec), *_run_data]) == 2
    err = capsys.readouterr().err
    assert "all 1 trials of sweep `s` failed" in err
    assert "`num_basis` must be an integer >= 1, got 0" in err
    assert "FAIL" in (tmp_path / "s" / "trials.csv").read_text()


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_seeded_sampler_draws_new_values(sampler, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_spec(_run_spec(tmp_path, sampler={"name": sampler, "seed": 0}))

    def draw(spec):
        study = open_study(spec)  # a new study object on the same storage: a resumed sweep
        trial = study.ask()
        values = tuple(_suggest(trial, n, p) for n, p in spec.parameters.items())
        study.tell(trial, 1.0)
        return values

    first = [draw(spec), draw(spec)]
    assert first[0] != first[1], "the resumed sampler repeated the first trial's values"
    again = load_spec(_run_spec(tmp_path, name="t", sampler={"name": sampler, "seed": 0}))
    assert [draw(again), draw(again)] == first, "a new study with the same seed repeats them"


RUN_SCREEN_ARG_CASES = [
    (["--top", "-1"], "argument --top: expected an integer >= 0, got '-1'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["--batch-size", "abc"], "argument --batch-size: expected an integer >= 1, got 'abc'"),
    (["--k", "-1"], "argument --k: expected a number >= 0, got '-1'"),
    (["--max-sites", "0"], "argument --max-sites: expected an integer >= 1 or `off`, got '0'"),
    (["--min-band-gap", "wide"], "argument --min-band-gap: expected a number or `off`, got 'wide'"),
]


@pytest.mark.parametrize(
    "args, message", RUN_SCREEN_ARG_CASES, ids=[" ".join(c[0]) for c in RUN_SCREEN_ARG_CASES]
)
def test_screen_refuses_options_out_of_range(args, message, tmp_path, capsys):
    out = tmp_path / "screen"
    with pytest.raises(SystemExit) as exit_:
        cli(["screen", "--structures", "pool.extxyz", "--out", str(out), *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


RUN_SCREEN_SETTINGS_CASES = [
    ({"top": -1}, 32, "`top` must be >= 0, got -1"),
    ({"k": -0.5}, 32, "`k` must be >= 0, got -0.5"),
    ({}, 0, "`batch_size` must be >= 1, got 0"),
]


@pytest.mark.parametrize(
    "changes, batch_size, message", RUN_SCREEN_SETTINGS_CASES, ids=["top", "k", "batch_size"]
)
def test_screen_library_refuses_options_out_of_range(changes, batch_size, message, tmp_path):
    from aniso_nequip.screen.layout import Settings
    from aniso_nequip.screen.runner import screen

    settings = Settings(models=["m.ckpt"], structures=["pool.extxyz"], **changes)
    with pytest.raises(InputError, match=message):
        screen(tmp_path / "screen", settings, batch_size=batch_size, device="cpu")
    assert not (tmp_path / "screen").exists()


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-folder", "empty-folder"])
def test_screen_failing_its_checks_leaves_nothing_that_blocks_the_rerun(out_exists, tmp_path):
    pool, bad = tmp_path / "pool.extxyz", tmp_path / "bad.extxyz"
    ase.io.write(pool, bundled("mp_subset_test", ":2"))
    bad.write_text("not an extxyz file\n")
    out = tmp_path / "screen"
    if out_exists:
        out.mkdir()
    base = ["screen", "--structures", str(pool), "--out", str(out), "--no-dimensionality"]
    assert cli([*base, "--exclude", str(bad), "--quiet"]) == 2
    assert (list(out.iterdir()) == []) if out_exists else not out.exists()
    # the corrected run (no --exclude: other settings) starts without --force
    assert cli([*base, "--quiet"]) == 0
    assert (out / "ranking.csv").is_file()


def _run_tensor(kind):
    return {
        "nan": np.full((3, 3), np.nan),
        "inf": np.diag([2.0, np.inf, 3.0]),
        "negative": np.diag([2.0, 3.0, -1.0]),
    }[kind]


RUN_STATS_CASES = [
    ("nan", "non-finite entries (NaN or inf) in the `dielectric_tensor` of frame 1"),
    ("inf", "non-finite entries (NaN or inf) in the `dielectric_tensor` of frame 1"),
    ("negative", "an eigenvalue <= 0 (so a_r is undefined) in the `dielectric_tensor` of frame 1"),
]


@pytest.mark.parametrize("kind, message", RUN_STATS_CASES, ids=[c[0] for c in RUN_STATS_CASES])
def test_data_stats_names_the_frames_of_undefined_statistics(kind, message, tmp_path, capsys):
    frames = bundled("mp_subset_test", ":4")
    for i in (1, 3):
        frames[i].calc.results["dielectric_tensor"] = _run_tensor(kind).reshape(9)
    path = tmp_path / "data.extxyz"
    ase.io.write(path, frames)
    ids = [crystal_id(frames[i]) for i in (1, 3)]
    with pytest.raises(InputError) as err:
        dataset_statistics(path)
    assert message in str(err.value)
    assert f"frame 1 ({ids[0]}), frame 3 ({ids[1]})" in str(err.value)
    png = tmp_path / "stats.png"
    assert cli(["data", "stats", str(path), "--png", str(png)]) == 2
    assert "frame 3" in capsys.readouterr().err
    assert not png.exists()
