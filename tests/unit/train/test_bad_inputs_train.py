"""Bad inputs of training (``nequip-train`` and its config check): config variables out of range,
builder errors and the one-line excepthook, fine-tuning mismatches.
"""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from aniso_nequip import errors
from aniso_nequip.data import DielectricDataModule
from aniso_nequip.errors import InputError
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.train import SelfContainedCheckpoints
from aniso_nequip.variables import check_config
from helpers import (
    BIN,
    ROOT,
    build_tiny,
)

# ---- 3. configs and runs fail early ----

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
    (_run_builder, "num_basis", 0, "`num_basis` must be an integer >= 2, got 0"),
    (_run_builder, "num_basis", 1, "`num_basis` must be an integer >= 2, got 1"),
    (
        _run_builder,
        "polynomial_cutoff_p",
        1,
        "`polynomial_cutoff_p` must be an integer >= 2, got 1",
    ),
    (_run_config, "num_basis", 1, "`num_basis` must be an integer >= 2, got 1"),
    (_run_config, "polynomial_cutoff_p", 1, "`polynomial_cutoff_p` must be an integer >= 2, got 1"),
    (
        _run_builder,
        "radial_basis",
        "cosine",
        "`radial_basis` must be one of gaussian, bessel, got 'cosine'",
    ),
    (
        _run_builder,
        "type_embed_num_features",
        0,
        "`type_embed_num_features` must be an integer >= 1 (or null), got 0",
    ),
    (
        _run_datamodule,
        "train_dataloader",
        0,
        "`train_dataloader.batch_size` must be an integer >= 1, got 0",
    ),
    (
        _run_datamodule,
        "val_dataloader",
        "8",
        "`val_dataloader.batch_size` must be an integer >= 1, got '8'",
    ),
    (_run_optimizer, "lr", -1, "`lr` must be a number > 0, got -1"),
    (_run_optimizer, "lr", 0.0, "`lr` must be a number > 0, got 0.0"),
    (_run_optimizer, "weight_decay", -0.1, "`weight_decay` must be a number >= 0, got -0.1"),
    (_run_config, "batch_size", 0, "`batch_size` must be an integer >= 1, got 0"),
    (_run_config, "max_epochs", 0, "`max_epochs` must be an integer >= 1, got 0"),
    (
        _run_config,
        "early_stopping_patience",
        -1,
        "`early_stopping_patience` must be an integer >= 0, got -1",
    ),
    (_run_config, "lr_decay", 0, "`lr_decay` must be a number > 0, got 0"),
    (
        _run_config,
        "loss_metric",
        "l2",
        "`loss_metric` must be one of mse, mae, log_mse, log_mae, got 'l2'",
    ),
    (_run_config, "head_dropout", 1.0, "`head_dropout` must be a number >= 0 and < 1, got 1.0"),
    (_run_builder, "head_dropout", -0.5, "`head_dropout` must be a number >= 0 and < 1, got -0.5"),
    (
        _run_config,
        "model_dtype",
        "float16",
        "`model_dtype` must be one of float32, float64, got 'float16'",
    ),
    (_run_config, "physical_readout", "yes", "`physical_readout` must be true or false, got 'yes'"),
    (
        _run_config,
        "readout",
        "exp",
        "`readout` must be one of linear, square, log, local_field, got 'exp'",
    ),
    (
        _run_builder,
        "readout",
        "pooled",
        "`readout` must be one of linear, square, log, local_field, got 'pooled'",
    ),
    (_run_config, "num_workers", -1, "`num_workers` must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize(
    "check, name, value, message",
    RUN_VARIABLE_CASES,
    ids=[f"{c[0].__name__[5:]}-{c[1]}={c[2]!r}" for c in RUN_VARIABLE_CASES],
)
def test_config_variable_out_of_range(check, name, value, message):
    with pytest.raises(InputError) as err:
        check(name, value)
    assert str(err.value) == message


def _run_train(args, tmp_path, **env):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [str(BIN / "nequip-train"), "-cn", "configs/tiny.yaml", f"hydra.run.dir={run_dir}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore", **env),
    )
    return proc, run_dir


RUN_TRAIN_CASES = [
    (["l_max=-1"], "`l_max` must be an integer >= 0, got -1"),
    (["batch_size=0"], "`batch_size` must be an integer >= 1, got 0"),
    (["r_max=abc"], "`r_max` must be a number > 0, got 'abc'"),
]


@pytest.mark.slow
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


@pytest.mark.slow
def test_nequip_train_prints_a_builder_error_in_one_line(split_overrides, tmp_path):
    """A value that reaches the builder unchecked (not a top-level variable) fails there, after
    the data statistics: Hydra and Lightning wrap it, the excepthook prints one line."""
    proc, _ = _run_train([*split_overrides, "training_module.model.num_basis=0"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "nequip-train: error: `num_basis` must be an integer >= 2, got 0"
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
    model = {
        "_target_": "aniso_nequip.model.AnisoNetModel",
        "type_names": RUN_TYPE_NAMES,
        "r_max": 5.0,
        "l_max": 2,
    }
    torch.save({"hyper_parameters": {"model": model}}, path)
    return path


RUN_FINETUNE_CASES = [
    (
        [RUN_TYPE_NAMES[1], RUN_TYPE_NAMES[0], *RUN_TYPE_NAMES[2:]],
        5.0,
        r"type_names \['H', 'Li', 'O', 'Si'\] but the data are mapped with model_type_names "
        r"\['Li', 'H', 'O', 'Si'\]",
    ),
    (
        RUN_TYPE_NAMES,
        4.0,
        r"has r_max 5.0 but the data's neighbour lists use r_max 4.0: set r_max=5.0",
    ),
]


@pytest.mark.parametrize(
    "type_names, r_max, message", RUN_FINETUNE_CASES, ids=["reordered-elements", "other-r_max"]
)
def test_finetuning_refuses_another_element_order_or_cutoff(
    type_names, r_max, message, _run_source
):
    module = SimpleNamespace(
        hparams={
            "model": {
                "_target_": "nequip.model.saved_models.load_saved_model",
                "input_path": str(_run_source),
            }
        }
    )
    SelfContainedCheckpoints(RUN_TYPE_NAMES, 5.0).setup(None, module, "fit")
    with pytest.raises(InputError, match=message) as err:
        SelfContainedCheckpoints(type_names, r_max).setup(None, module, "fit")
    assert str(_run_source) in str(err.value)
