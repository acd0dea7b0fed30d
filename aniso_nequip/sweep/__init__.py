"""Hyperparameter sweeps on optuna: each trial is a real ``nequip-train`` run of a config."""

from .runner import run_sweep
from .spec import SpecError, SweepSpec, load_spec

__all__ = ["SpecError", "SweepSpec", "load_spec", "run_sweep"]
