"""Optuna pruners from sweep-spec entries; shared by the runner and the trials' callback (an
optuna pruner is not stored with the study, so each trial process rebuilds it)."""

from typing import Any, Dict, Optional

PRUNERS = ("median", "threshold", "none")


def build_pruner(config: Optional[Dict[str, Any]]):
    """``None``/``{name: none}``: no pruning; ``{name: median, n_startup_trials, n_warmup_steps,
    ...}``: ``MedianPruner``; ``{name: threshold, lower, upper, n_warmup_steps}``:
    ``ThresholdPruner``."""
    import optuna

    config = dict(config or {"name": "none"})
    name = config.pop("name")
    if name == "median":
        return optuna.pruners.MedianPruner(**config)
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(**config)
    return optuna.pruners.NopPruner()
