"""Hyperparameter sweeps on optuna: each trial is a real ``nequip-train`` run of a config."""

from .pruning import OptunaPruning
from .report import SweepFailed, run_and_report
from .runner import run_sweep
from .spec import SpecError, SweepSpec, load_spec

__all__ = [
    "OptunaPruning",
    "SpecError",
    "SweepFailed",
    "SweepSpec",
    "load_spec",
    "run_and_report",
    "run_sweep",
]
