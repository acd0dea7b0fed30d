"""The validation rank metric ``a_r_spearman`` that checkpointing can monitor."""

import numpy as np
import pytest
import torch
from nequip.data import AtomicDataDict
from scipy.stats import spearmanr

from aniso_nequip.train import DielectricMetrics
from aniso_nequip.train.ranking import SpearmanCorrelation


def _data(eps):
    return {AtomicDataDict.DIELECTRIC_KEY: torch.as_tensor(eps, dtype=torch.float64)}


def _tensors(rng, n):
    a = rng.normal(size=(n, 3, 3))
    return 3 * np.eye(3) + 0.5 * (a + a.transpose(0, 2, 1))


def test_epoch_spearman_of_a_r_over_batches_matches_scipy():
    rng = np.random.default_rng(0)
    target = _tensors(rng, 13)
    target[:3] = 2.5 * np.eye(3)  # cubic crystals: tied a_r = 1
    pred = target + 0.3 * _tensors(rng, 13) - 0.9 * np.eye(3)
    metrics = DielectricMetrics()
    for batch in (slice(0, 5), slice(5, 12), slice(12, 13)):  # the last batch: one crystal
        metrics(_data(pred[batch]), _data(target[batch]))
    value = metrics.compute()["a_r_spearman"].item()
    ev_p, ev_t = np.linalg.eigvalsh(pred), np.linalg.eigvalsh(target)
    expected = spearmanr(ev_p[:, 2] / ev_p[:, 0], ev_t[:, 2] / ev_t[:, 0]).statistic
    assert value == pytest.approx(expected, abs=1e-6)
    assert 0.2 < value < 1.0
    metrics.reset()
    metrics(_data(target), _data(target))
    assert metrics.compute()["a_r_spearman"].item() == pytest.approx(1.0, abs=1e-5)


def test_nan_predictions_rank_highest():
    """``a_r`` of a predicted tensor with an eigenvalue <= 0 is NaN; it ranks above all."""
    metric = SpearmanCorrelation()
    metric.update(torch.tensor([1.0, 2.0, float("nan")]), torch.tensor([1.0, 2.0, 3.0]))
    assert metric.compute().item() == pytest.approx(1.0, abs=1e-5)
    metric.reset()
    metric.update(torch.tensor([float("nan"), 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0]))
    assert metric.compute().item() == pytest.approx(-0.5, abs=1e-5)


def test_only_the_electronic_tensor_is_ranked():
    metrics = DielectricMetrics(heads={"dielectric_tensor": 1.0, "dielectric_ionic_tensor": 0.1})
    assert [name for name in metrics.entries if "spearman" in name] == ["a_r_spearman"]
