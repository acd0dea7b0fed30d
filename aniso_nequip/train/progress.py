"""What ``nequip-train`` shows on the console while it trains (nequip's runner stays in charge).

:class:`TrainingProgress` prints one line per epoch (training and validation loss, the main
validation metrics, the learning rate and the epoch's wall time), puts the current training loss
on Lightning's progress bar and silences Lightning's "checkpoint directory exists and is not
empty" warning on a fresh run: the checkpoints go to Hydra's run directory, which Hydra has
already filled with its own ``.hydra/`` and ``train.log`` before training starts, so the warning
fired on every run; it still fires when that directory holds checkpoints (``*.ckpt``).
"""

import math
import pathlib
import re
import time
import warnings
from typing import Dict, Optional

import lightning

LOSS_KEY = "train_loss_step/weighted_sum"
"""What nequip's training module logs as the loss of each step."""
EPOCH_METRICS = {
    "val loss": "val0_epoch/weighted_sum",
    "val eps_poly MAE": "val0_epoch/eps_poly_mae",
    "val a_r MAE": "val0_epoch/a_r_mae",
    "val a_r Spearman": "val0_epoch/a_r_spearman",
}
"""The epoch line's validation columns: label -> logged metric (missing ones are left out)."""


class TrainingProgress(lightning.Callback):
    """One line per epoch, the current loss on the progress bar, no warning on a fresh run::

        epoch   1/3  train loss 1.2345  val loss 1.4926  val eps_poly MAE 0.9351  val a_r MAE
        0.2657  val a_r Spearman 0.4120  lr 1.00e-02  168.9 s

    The training loss of the line is the mean of the epoch's step losses; the validation
    columns are :data:`EPOCH_METRICS` (or ``metrics``) as the validation run at the end of the
    epoch logged them.

    Args:
        metrics (Dict[str, str]): label -> logged metric name of the validation columns
            (default :data:`EPOCH_METRICS`)
    """

    def __init__(self, metrics: Optional[Dict[str, str]] = None):
        super().__init__()
        self.metrics = dict(EPOCH_METRICS if metrics is None else metrics)
        self._start = 0.0
        self._losses = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        # runs before ModelCheckpoint.setup, which Lightning orders last
        for callback in trainer.checkpoint_callbacks:
            folder = getattr(callback, "dirpath", None)
            if folder and not any(pathlib.Path(folder).glob("*.ckpt")):
                warnings.filterwarnings(
                    "ignore", message=re.escape(f"Checkpoint directory {folder} exists and is not")
                )

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        self._losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            loss = trainer.callback_metrics.get(LOSS_KEY)
        if loss is None:
            return
        value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        self._losses.append(value)
        pl_module.log("loss", value, prog_bar=True, logger=False, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._start
        print_line = getattr(trainer.progress_bar_callback, "print", print)
        print_line(self.epoch_line(trainer, seconds))

    def epoch_line(self, trainer, seconds: float) -> str:
        """The line of the epoch that just ended."""
        logged = trainer.callback_metrics
        width = len(str(trainer.max_epochs)) if trainer.max_epochs and trainer.max_epochs > 0 else 3
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        train = sum(self._losses) / len(self._losses) if self._losses else math.nan
        parts = [f"epoch {trainer.current_epoch + 1:>{width}}{total}", f"train loss {train:.4f}"]
        parts += [
            f"{label} {float(logged[key]):.4f}"
            for label, key in self.metrics.items()
            if key in logged
        ]
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.2e}")
        parts.append(f"{seconds:.1f} s")
        return "  ".join(parts)
