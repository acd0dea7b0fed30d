"""Rank metrics for nequip's ``MetricsManager``: does a model order crystals as the references do?

A discovery screen keeps the crystals a model ranks highest (e.g. by ``a_r``), so a validation
rank correlation is the checkpoint-selection criterion closest to that use (the discovery
benchmark's Spearman of ``a_r``); MAEs weigh every crystal's error alike, however it changes the
order. ``DielectricMetrics`` logs ``a_r_spearman`` with it; the configs select by it (checkpoint
and early stopping) with

.. code-block:: yaml

    monitor: val0_epoch/a_r_spearman   # configs/anisonet_foundation.yaml does
    monitor_mode: max
"""

import warnings

import torch
from torchmetrics.regression import SpearmanCorrCoef


class SpearmanCorrelation(SpearmanCorrCoef):
    """Spearman rank correlation of predictions and targets ``(N,)`` over every batch since the
    last reset (an epoch, as ``MetricsManager`` computes it; the value of a single batch means
    little). Ties share their mean rank (torchmetrics). A NaN prediction, such as the ``a_r``
    of a tensor with an eigenvalue <= 0 (:class:`~aniso_nequip.train.AnisotropyRatio`), ranks
    above every number (the limit of ``lambda_max / lambda_min`` as ``lambda_min -> 0``), so the
    correlation stays defined; targets must be finite."""

    def __init__(self, **kwargs):
        with warnings.catch_warnings():  # that it keeps every value: one number per crystal here
            warnings.simplefilter("ignore")
            super().__init__(**kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """"""
        preds = torch.nan_to_num(preds.reshape(-1), nan=torch.inf)
        super().update(preds.to(torch.float64), target.reshape(-1).to(torch.float64))

    def __str__(self) -> str:
        return "spearman"
