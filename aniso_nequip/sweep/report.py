"""Sweep results: trials.csv / trials.md, best.yaml, optuna's plots, a one-screen summary;
:func:`run_and_report` runs a sweep and writes them (``aniso-nequip sweep``)."""

import csv
import os
import pathlib
from typing import Optional, Sequence

from .. import plots
from ..errors import InputError
from ..io import check_writable, output_set
from .pruning import CALLBACK_TARGETS
from .runner import TRIAL_CONFIG, run_sweep
from .spec import load_spec

RESULT_FILES = ("trials.csv", "trials.md", "best.yaml", "history.png", "importance.png")


def _rows(study):
    names = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.trials:
        row = {"number": t.number, "state": t.state.name, "value": t.value}
        row.update({f"param_{n}": t.params.get(n) for n in names})
        row["best_epoch"] = t.user_attrs.get("best_epoch")
        row["duration_s"] = t.user_attrs.get("duration_s")
        row["error"] = t.user_attrs.get("error", "")
        rows.append(row)
    return rows


def _best_trial(study):
    from optuna.trial import TrialState

    return study.best_trial if study.get_trials(states=(TrialState.COMPLETE,)) else None


def write_results(study, spec) -> dict:
    """Write the outputs into ``spec.output_dir``, all of them or none
    (:func:`~aniso_nequip.io.output_set`; workers finishing together take turns); returns their
    paths."""
    out = pathlib.Path(spec.output_dir)
    rows = _rows(study)
    names = {"csv": "trials.csv", "md": "trials.md"}
    with output_set(out, RESULT_FILES, force=True, key=out / "results", wait=True) as stage:
        with open(stage / names["csv"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number"])
            writer.writeheader()
            writer.writerows(rows)
        (stage / names["md"]).write_text(trials_markdown(study, spec, rows))
        best = _best_trial(study)
        if best is not None:
            names["best"] = "best.yaml"
            _write_best_config(best, spec.study_name, stage / names["best"], out / names["best"])
        names.update({k: p.name for k, p in plots.sweep_plots(study, stage).items()})
    return {k: out / name for k, name in names.items()}


def trials_markdown(study, spec, rows=None) -> str:
    rows = _rows(study) if rows is None else rows
    columns = [c for c in (rows[0] if rows else {}) if c != "error"]
    lines = [
        f"# Sweep `{spec.study_name}`",
        "",
        f"base config `{spec.base_config.name}`, metric `{spec.metric}` ({spec.direction}), "
        f"sampler `{spec.sampler['name']}`, {len(rows)} trials",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["error"]]
    if failed:
        lines += ["", "Failed trials:", ""]
        lines += [f"- trial {r['number']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def _write_best_config(trial, study_name, path, final_path) -> None:
    """The best trial's config, without the pruning callback, written to ``path``; its header
    says how to train it from ``final_path``."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(pathlib.Path(trial.user_attrs["dir"]) / TRIAL_CONFIG)
    cfg.trainer.callbacks = [
        c for c in cfg.trainer.callbacks if c.get("_target_") not in CALLBACK_TARGETS
    ]
    header = (
        "# @package _global_\n"
        f"# best trial {trial.number} of sweep `{study_name}`: value {trial.value:.6g}, "
        f"params {trial.params}\n"
        f"# train it:  nequip-train -cn {os.path.relpath(final_path)}\n"
    )
    pathlib.Path(path).write_text(header + OmegaConf.to_yaml(cfg))


def summary(study, spec, paths) -> str:
    from collections import Counter

    states = Counter(t.state.name for t in study.trials)
    lines = [
        f"study `{spec.study_name}` ({spec.storage})",
        "trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())),
    ]
    best = _best_trial(study)
    if best is not None:
        lines.append(f"best: trial {best.number}, {spec.metric} = {best.value:.5g}")
        lines += [f"  {k} = {v}" for k, v in best.params.items()]
    lines += [f"{k}: {v}" for k, v in paths.items()]
    return "\n".join(lines)


class SweepFailed(InputError):
    """Every trial of the study failed (typically a config that cannot train)."""


def _check_not_all_failed(study, spec, paths) -> None:
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        return
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    if failed:
        raise SweepFailed(
            f"all {len(failed)} trials of sweep `{spec.study_name}` failed (listed in "
            f"{paths['md']}); trial {failed[0].number}: {failed[0].user_attrs.get('error', '')}"
        )


def run_and_report(spec_path, n_trials: Optional[int] = None, overrides: Sequence[str] = ()) -> str:
    """Load the sweep spec ``spec_path``, run (or resume) its study with ``overrides``
    (``key=value``) applied to every trial, write the results (:func:`write_results`) and return
    the one-screen :func:`summary`.

    Raises :class:`~aniso_nequip.errors.InputError` for an override without ``=`` or a config
    variable out of range, :class:`~aniso_nequip.sweep.SpecError` for an invalid spec or a
    ``metric`` the config does not log (all before any trial), and :class:`SweepFailed` (after
    writing the results) when every trial of the study failed.
    """
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise InputError(f"overrides must look like key=value: {bad}")
    spec = load_spec(spec_path)
    check_writable(spec.output_dir)
    study = run_sweep(spec, n_trials=n_trials, cli_overrides=list(overrides))
    paths = write_results(study, spec)
    _check_not_all_failed(study, spec, paths)
    return summary(study, spec, paths)
