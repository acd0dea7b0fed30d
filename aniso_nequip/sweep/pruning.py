"""Lightning callback that reports per-epoch validation values to an optuna trial."""

import pathlib
from typing import Any, Dict, Optional

import lightning

CALLBACK_TARGET = "aniso_nequip.sweep.OptunaPruning"
"""``_target_`` of :class:`OptunaPruning` in the trial configs the sweep runner writes."""

CALLBACK_TARGETS = (CALLBACK_TARGET, "aniso_nequip.train.OptunaPruning")
"""Its ``_target_`` now and in the trial configs of sweeps started before it moved here (a
resumed sweep's best config leaves either out)."""


class OptunaPruning(lightning.Callback):
    """Report ``monitor`` after each validation epoch to optuna trial ``trial_id``; when the
    study's pruner says so, stop the training and write ``marker_file`` (the sweep runner then
    records the trial as pruned). Added to trial configs by ``aniso-nequip sweep``.

    Args:
        storage (str): the study's storage URL (``sqlite:///...``, ``journal:///...``, RDB URL)
        study_name (str): the study
        trial_id (int): optuna's trial id
        monitor (str): logged metric, e.g. ``val0_epoch/weighted_sum``
        marker_file (str): written when the trial is pruned
        pruner (dict): the sweep spec's ``pruner`` entry (optuna does not store pruners)
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_id: int,
        monitor: str,
        marker_file: str,
        pruner: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        self.storage = storage
        self.study_name = study_name
        self.trial_id = trial_id
        self.monitor = monitor
        self.marker_file = marker_file
        self.pruner = pruner
        self._trial = None

    def _get_trial(self):
        if self._trial is None:
            import optuna

            from .pruners import build_pruner
            from .storage import open_storage

            study = optuna.load_study(
                study_name=self.study_name,
                storage=open_storage(self.storage),
                pruner=build_pruner(self.pruner),
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        trial = self._get_trial()
        trial.report(float(trainer.callback_metrics[self.monitor]), step=trainer.current_epoch)
        if trial.should_prune():
            pathlib.Path(self.marker_file).write_text(f"pruned at epoch {trainer.current_epoch}\n")
            trainer.should_stop = True
