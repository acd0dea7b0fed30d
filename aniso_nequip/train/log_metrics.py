"""Errors in log space: of the matrix logarithm ``L = logm(eps - I)`` of dielectric tensors.

Every eigenvalue of an electronic dielectric tensor exceeds 1 (vacuum), so ``eps - I`` is
positive definite and ``L`` (symmetric, rotating with the crystal) is defined. Where prediction
and target share their principal axes, ``L_pred - L_target`` has eigenvalues
``log((lambda_pred - 1) / (lambda_target - 1))``: an error in ``L`` weighs *relative* errors of
the eigenvalues' excess over vacuum, so that the strongly polarisable tail counts no more than the
rest, and unlike a loss on sorted eigenvalues it also sees misoriented principal axes. The
``log`` readout (``eps = I + expm(L)``) predicts ``L`` itself.

Use in a :class:`~nequip.train.MetricsManager` entry with ``field: dielectric_tensor`` (the loss
``loss_metric: log_mse`` or ``log_mae`` builds them, :func:`~aniso_nequip.train.DielectricLoss`).
"""

import math

import torch
from nequip.train import MeanAbsoluteError, MeanSquaredError

from .. import tensors

EXCESS_FLOOR = 0.05
"""Smallest eigenvalue of ``eps - I`` that :func:`log_excess` takes the logarithm of. Below it
(a linear readout may predict eigenvalues <= 1) the logarithm continues as its tangent, so that
the error stays finite and its gradient pushes the eigenvalue back up. The bundled crystals stay
well above it (their smallest eigenvalue of ``eps`` is 1.20)."""


def _log(w: torch.Tensor) -> torch.Tensor:
    """``log(w)``, continued below :data:`EXCESS_FLOOR` by its tangent there."""
    tangent = math.log(EXCESS_FLOOR) + (w - EXCESS_FLOOR) / EXCESS_FLOOR
    return torch.where(w > EXCESS_FLOOR, torch.log(w.clamp_min(EXCESS_FLOOR)), tangent)


def _log_derivative(w: torch.Tensor) -> torch.Tensor:
    return 1.0 / w.clamp_min(EXCESS_FLOOR)


class _SymmetricLog(torch.autograd.Function):
    """``V diag(_log(w)) V^T`` of a symmetric matrix ``V diag(w) V^T``, differentiated with the
    Daleckii-Krein formula: ``dL = V (F * (V^T dA V)) V^T`` with the divided differences
    ``F_ij = (_log(w_i) - _log(w_j)) / (w_i - w_j)`` (``_log'`` where ``w_i ~ w_j``), which stay
    finite for the degenerate eigenvalues of cubic and uniaxial crystals (the eigenvector terms
    of ``torch.linalg.eigh``'s own gradient divide by ``w_i - w_j``)."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor) -> torch.Tensor:
        w, v = torch.linalg.eigh(matrix)
        ctx.save_for_backward(w, v)
        return v @ torch.diag_embed(_log(w)) @ v.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        w, v = ctx.saved_tensors
        wi, wj = w.unsqueeze(-1), w.unsqueeze(-2)
        gap = wi - wj
        scale = torch.maximum(wi.abs(), wj.abs()).clamp_min(EXCESS_FLOOR)
        close = gap.abs() <= torch.finfo(w.dtype).eps ** 0.5 * scale
        divided = (_log(wi) - _log(wj)) / torch.where(close, torch.ones_like(gap), gap)
        f = torch.where(close, _log_derivative(0.5 * (wi + wj)), divided)
        inner = v.transpose(-1, -2) @ tensors.symmetrize(grad) @ v
        return v @ (f * inner) @ v.transpose(-1, -2)


def log_excess(tensor: torch.Tensor) -> torch.Tensor:
    """``logm(eps - I)`` ``(N, 3, 3)`` of dielectric tensors ``(N, 3, 3)`` or ``(N, 9)`` (their
    symmetric part), in float64, eigenvalues of ``eps - I`` below :data:`EXCESS_FLOOR` taken
    on the logarithm's tangent; differentiable, also at degenerate eigenvalues."""
    t = tensors.symmetrize(tensor.reshape(-1, 3, 3).to(torch.float64))
    return _SymmetricLog.apply(t - torch.eye(3, dtype=t.dtype, device=t.device))


class _LogSpace:
    """Compares the ``1x0e+1x2e`` coefficients of :func:`log_excess` of predictions and targets
    (orthonormal: their squared differences sum to the squared Frobenius norm of the
    difference of the matrix logarithms)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """"""
        super().update(tensors.to_irreps(log_excess(preds)), tensors.to_irreps(log_excess(target)))


class LogMeanSquaredError(_LogSpace, MeanSquaredError):
    """Mean squared error of the ``1x0e+1x2e`` coefficients of ``logm(eps - I)``."""

    def __str__(self) -> str:
        return "log_mse"


class LogMeanAbsoluteError(_LogSpace, MeanAbsoluteError):
    """Mean absolute error of the ``1x0e+1x2e`` coefficients of ``logm(eps - I)``."""

    def __str__(self) -> str:
        return "log_mae"
