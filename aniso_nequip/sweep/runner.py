"""Run an optuna study whose trials are ``nequip-train`` runs of the spec's base config."""

import csv
import os
import subprocess
import sys
import time
from typing import List, Optional

from ..errors import InputError
from .pruners import build_pruner
from .pruning import CALLBACK_TARGET
from .spec import SweepSpec, check_trial_config, compose_config
from .storage import open_storage

TRIAL_CONFIG = "config.yaml"
PRUNED_MARKER = "PRUNED"


class TrialFailed(RuntimeError):
    """A trial's training exited with an error; the study records it and goes on."""


def _sampler(spec: SweepSpec, n_trials_before: int = 0):
    """The spec's sampler; a seeded one gets ``seed + n_trials_before`` so that a resumed study
    draws new values instead of repeating those of its first trials."""
    import optuna

    seed = spec.sampler.get("seed")
    if seed is not None:
        seed += n_trials_before
    name = spec.sampler["name"]
    if name == "grid":
        return optuna.samplers.GridSampler(spec.grid, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    options = {k: v for k, v in spec.sampler.items() if k not in ("name", "seed")}
    return optuna.samplers.TPESampler(seed=seed, **options)


def _suggest(trial, name, p):
    if p["type"] == "categorical":
        return trial.suggest_categorical(name, p["choices"])
    if p["type"] == "int":
        return trial.suggest_int(name, int(p["low"]), int(p["high"]), log=p["log"])
    return trial.suggest_float(name, p["low"], p["high"], log=p["log"])


def best_epoch_value(
    metrics_csv, metric: str, monitor: str = "val0_epoch/weighted_sum", mode: str = "min"
) -> dict:
    """``metric`` at the epoch with the best ``monitor`` (lowest, or highest with ``mode="max"``),
    i.e. the checkpointed epoch (the config's ``monitor`` and ``monitor_mode``)."""
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get(monitor) and r.get(metric)]
    if not rows:
        raise TrialFailed(f"`{metric}` was not logged in {metrics_csv}")
    best = (max if mode == "max" else min)(rows, key=lambda r: float(r[monitor]))
    return {"value": float(best[metric]), "epoch": int(best["epoch"]), "epochs": len(rows)}


class Objective:
    def __init__(self, spec: SweepSpec, cli_overrides: List[str], quiet: bool = False):
        self.spec = spec
        self.cli_overrides = list(cli_overrides)
        self.quiet = quiet

    def __call__(self, trial):
        import optuna
        from omegaconf import OmegaConf

        spec = self.spec
        params = {name: _suggest(trial, name, p) for name, p in spec.parameters.items()}
        trial_dir = (spec.output_dir / "trials" / f"trial_{trial.number:04d}").resolve()
        trial_dir.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("dir", str(trial_dir))
        overrides = (
            spec.overrides
            + self.cli_overrides
            + [f"{k}={v}" for k, v in params.items()]
            + [f"wandb_group={spec.study_name}"]
        )
        cfg = compose_config(spec.base_config, overrides)
        if spec.pruner is not None:
            cfg.trainer.callbacks.append(
                {
                    "_target_": CALLBACK_TARGET,
                    "storage": spec.storage,
                    "study_name": spec.study_name,
                    "trial_id": trial._trial_id,
                    "monitor": spec.metric,
                    "pruner": spec.pruner,
                    "marker_file": str(trial_dir / PRUNED_MARKER),
                }
            )
        OmegaConf.save(cfg, trial_dir / TRIAL_CONFIG)
        command = [
            os.path.join(os.path.dirname(sys.executable), "nequip-train"),
            "--config-path",
            str(trial_dir),
            "--config-name",
            TRIAL_CONFIG,
            f"hydra.run.dir={trial_dir}",
        ]
        if not self.quiet:
            print(f"[trial {trial.number}] {params} -> {trial_dir}", flush=True)
        start = time.time()
        with open(trial_dir / "train.out", "w") as log:
            proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        trial.set_user_attr("duration_s", round(time.time() - start, 1))
        if proc.returncode != 0:
            tail = (trial_dir / "train.out").read_text(errors="replace").strip().splitlines()[-5:]
            message = f"nequip-train exited with {proc.returncode}: " + " | ".join(tail)
            trial.set_user_attr("error", message[-1500:])
            raise TrialFailed(message)
        if (trial_dir / PRUNED_MARKER).exists():
            raise optuna.TrialPruned((trial_dir / PRUNED_MARKER).read_text().strip())
        (metrics_csv,) = trial_dir.glob("csv/version_*/metrics.csv")
        result = best_epoch_value(
            metrics_csv,
            spec.metric,
            cfg.get("monitor", "val0_epoch/weighted_sum"),
            cfg.get("monitor_mode", "min"),
        )
        trial.set_user_attr("best_epoch", result["epoch"])
        trial.set_user_attr("epochs", result["epochs"])
        return result["value"]


def open_study(spec: SweepSpec):
    """Create the spec's study in its storage, or load it with the trials it holds; its sampler
    is :func:`_sampler` seeded past those trials."""
    import optuna

    study = optuna.create_study(
        study_name=spec.study_name,
        storage=open_storage(spec.storage),
        pruner=build_pruner(spec.pruner),
        direction=spec.direction,
        load_if_exists=True,
    )
    study.sampler = _sampler(spec, len(study.get_trials(deepcopy=False)))
    return study


def run_sweep(spec: SweepSpec, n_trials: Optional[int] = None, cli_overrides=(), quiet=False):
    """Create or resume the study and run trials until ``n_trials`` (default: the spec's) have
    finished (complete or pruned) in the study, counting those of earlier runs and of other
    workers sharing the storage. Failed trials are recorded with their error and do not count.

    ``n_trials`` < 1 and the base config with the overrides (:func:`~.spec.check_trial_config`)
    raise :class:`~aniso_nequip.errors.InputError` before the study is created."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if n_trials is not None and n_trials < 1:
        raise InputError(f"`n_trials` must be >= 1, got {n_trials}")
    check_trial_config(spec, cli_overrides)
    target = n_trials or spec.n_trials
    study = open_study(spec)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = target - len(study.get_trials(deepcopy=False, states=finished))
    if remaining > 0:
        study.optimize(
            Objective(spec, list(cli_overrides), quiet),
            n_trials=remaining,
            catch=(TrialFailed,),
            callbacks=[MaxTrialsCallback(target, states=finished)],
        )
    return study
