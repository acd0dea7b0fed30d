"""The log-space loss (``loss_metric: log_mse`` / ``log_mae``): errors of ``logm(eps - I)``."""

import numpy as np
import pytest
import torch
from nequip.data import AtomicDataDict
from nequip.train import MetricsManager

from aniso_nequip.errors import InputError
from aniso_nequip.tensors import change_of_basis
from aniso_nequip.train import DielectricLoss
from aniso_nequip.train.log_metrics import (
    EXCESS_FLOOR,
    LogMeanAbsoluteError,
    LogMeanSquaredError,
    log_excess,
)
from helpers import rotation


def _spd(seed, n=5, excess=1.0):
    """``n`` symmetric tensors with every eigenvalue > 1 and distinct principal axes."""
    a = np.random.default_rng(seed).normal(size=(n, 3, 3))
    return np.eye(3) * (1 + excess) + a @ a.transpose(0, 2, 1)


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


def _numpy_log_coefficients(eps):
    w, v = np.linalg.eigh(eps - np.eye(3))
    log = v @ (np.log(w)[..., None] * v.transpose(0, 2, 1))
    return np.einsum("zjk,ijk->zi", log, change_of_basis().numpy())


def test_matches_a_numpy_computation():
    pred, target = _spd(0, n=2), _spd(1, n=2)
    diff = _numpy_log_coefficients(pred) - _numpy_log_coefficients(target)
    mse, mae = LogMeanSquaredError(), LogMeanAbsoluteError()
    assert mse(_t(pred), _t(target)).item() == pytest.approx((diff**2).mean(), rel=1e-10)
    assert mae(_t(pred), _t(target)).item() == pytest.approx(np.abs(diff).mean(), rel=1e-10)
    # the same tensors commuting (shared axes): the error is that of the log eigenvalues
    w_p, w_t = np.array([1.5, 2.0, 9.0]), np.array([2.0, 2.0, 4.0])
    frob2 = ((np.log(w_p - 1) - np.log(w_t - 1)) ** 2).sum()
    assert mse(_t(np.diag(w_p))[None], _t(np.diag(w_t))[None]).item() == pytest.approx(frob2 / 6)


def test_zero_for_identical_tensors_and_invariant_under_a_common_rotation():
    pred, target = _spd(2), _spd(3)
    assert LogMeanSquaredError()(_t(target), _t(target)).item() == pytest.approx(0.0, abs=1e-24)
    rot = rotation(4)
    for metric in (LogMeanSquaredError, LogMeanAbsoluteError):
        plain = metric()(_t(pred), _t(target)).item()
        turned = metric()(_t(rot @ pred @ rot.T), _t(rot @ target @ rot.T)).item()
        if metric is LogMeanSquaredError:  # the MAE of coefficients is not rotation-invariant
            assert turned == pytest.approx(plain, rel=1e-10)
        assert plain > 0.1


@pytest.mark.parametrize(
    "eigenvalues", [(0.5, 1.0, 3.0), (-2.0, 1.0 + EXCESS_FLOOR, 1.2), (1.0, 1.0, 1.0)]
)
def test_eigenvalues_up_to_one_give_finite_values_and_gradients(eigenvalues):
    """A linear readout may predict eigenvalues <= 1: the log continues as its tangent below
    ``1 + EXCESS_FLOOR``, so the loss is finite and its gradient raises those eigenvalues."""
    rot = _t(rotation(1))
    pred = (rot @ torch.diag(_t(eigenvalues)) @ rot.T)[None].requires_grad_(True)
    target = _t(np.diag([2.0, 3.0, 5.0]))[None]
    loss = LogMeanSquaredError()(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    # along each eigenvector below the target's smallest eigenvalue the loss falls
    along = torch.einsum("ij,ik,jk->k", pred.grad[0], rot, rot)
    low = _t(eigenvalues) < 2.0
    assert (along[low] < 0).all()


def test_tangent_floor_is_continuous():
    excess = _t([EXCESS_FLOOR * (1 - 1e-9), EXCESS_FLOOR * (1 + 1e-9)])
    values = torch.diagonal(log_excess(torch.diag_embed(1 + excess[:, None].expand(2, 3))), 0, 1, 2)
    assert values[0, 0].item() == pytest.approx(np.log(EXCESS_FLOOR), abs=1e-8)
    assert values[0, 0].item() == pytest.approx(values[1, 0].item(), abs=1e-8)


@pytest.mark.parametrize("eigenvalues", [(3.0, 3.0, 3.0), (2.0, 2.0, 5.0), (1.5, 2.5, 8.0)])
def test_gradient_matches_finite_differences_also_at_degenerate_eigenvalues(eigenvalues):
    """Cubic (all equal) and uniaxial (two equal) tensors, where the eigenvector gradient of
    ``torch.linalg.eigh`` divides by zero, get the exact derivative of the matrix log."""
    rot = _t(rotation(7))
    eps = (rot @ torch.diag(_t(eigenvalues)) @ rot.T)[None].requires_grad_(True)
    assert torch.autograd.gradcheck(log_excess, (eps,))


def test_loss_builder_entries_and_errors():
    loss = DielectricLoss(metric="log_mse")
    assert set(loss.entries) == {"irreps_log_mse"}
    assert isinstance(loss["irreps_log_mse"], LogMeanSquaredError)
    pred, target = _spd(5, n=4), _spd(6, n=4)
    data = {AtomicDataDict.DIELECTRIC_KEY: _t(pred).reshape(-1, 9)}
    out = loss(data, {AtomicDataDict.DIELECTRIC_KEY: _t(target).reshape(-1, 9)})
    diff = _numpy_log_coefficients(pred) - _numpy_log_coefficients(target)
    assert out["weighted_sum"].item() == pytest.approx((diff**2).mean())
    assert isinstance(DielectricLoss(metric="log_mae")["irreps_log_mae"], LogMeanAbsoluteError)
    with pytest.raises(InputError, match="born_effective_charges"):
        DielectricLoss(coeffs={"born_effective_charges": 1.0}, metric="log_mse")
    with pytest.raises(InputError, match="anisotropic_coeff"):
        DielectricLoss(metric="log_mae", anisotropic_coeff=0.5)
    with pytest.raises(InputError, match="log_mse"):
        DielectricLoss(metric="log")
    assert isinstance(loss, MetricsManager)
