r"""Ewald-summed dipole field tensor of a crystal and the local-field (point-dipole) dielectric
tensor it gives (Gaussian units: lengths in Angstrom, polarisabilities in Angstrom^3).

An induced dipole ``p_j`` at ``r_j`` makes the field ``T_ij p_j`` at ``r_i``; ``T`` is summed over
every lattice translation ``L`` of ``r = r_i - r_j + L`` (``r = 0`` left out) with the ``k = 0``
term of its Fourier series left out, so the macroscopic field is the applied one. Ewald form with
splitting parameter ``eta``:

- real space: ``C(r) r r^T - B(r) I`` with ``B = erfc(eta r) / r^3 + (2 eta / sqrt(pi))
  exp(-eta^2 r^2) / r^2`` and ``C = 3 erfc(eta r) / r^5 + (2 eta / sqrt(pi)) (2 eta^2 + 3 / r^2)
  exp(-eta^2 r^2) / r^2``;
- reciprocal space: ``-(4 pi / V) sum_{k != 0} (k k^T / k^2) exp(-k^2 / (4 eta^2)) cos(k . r)``;
- self term ``+(4 eta^3 / (3 sqrt(pi))) I`` on the diagonal blocks.

Gaussian dipoles (widths ``sigma_i``) interact through the kernel ``erf(gamma r) / r`` with
``gamma_ij = 1 / sqrt(2 (sigma_i^2 + sigma_j^2))``: the point tensor minus the real-space sum of
the same ``C r r^T - B I`` with ``gamma_ij`` in place of ``eta`` (short-ranged, ``eta``-free).
Their Coulomb energy is positive, so ``S - T`` is positive semi-definite with
``S = blockdiag(I / (6 sqrt(pi) sigma_i^3))``. :func:`local_field_tensor` takes
``sigma_i^3 = tr(alpha_i) / (6 sqrt(pi))`` (``damping``): then ``alpha_i^-1 > S_i`` and
``A - T`` is positive definite for *any* positive-definite ``alpha_i``: no polarisation
catastrophe, every eigenvalue of ``eps`` > 1.

Dense: ``T`` is ``3N x 3N``; its cost grows as ``N^2`` times the number of lattice images and
reciprocal vectors (fixed by ``accuracy`` for a given cell shape), the solve as ``N^3``.
"""

import math
from typing import Optional

import torch

_SQRT_PI = math.sqrt(math.pi)


def _lattice_points(cell: torch.Tensor, radius: float) -> torch.Tensor:
    """The points ``n @ cell`` ``(M, 3)`` (``n`` integer) within ``radius`` of the origin, the
    origin first."""
    # |n_k| <= radius / h_k, h_k the spacing of the lattice planes normal to reciprocal vector k
    spacing = 1.0 / torch.linalg.norm(torch.linalg.inv(cell).detach(), dim=0)
    bounds = torch.floor(radius / spacing).to(torch.long).tolist()
    axes = [torch.arange(-m, m + 1, device=cell.device, dtype=cell.dtype) for m in bounds]
    n = torch.cartesian_prod(*axes)
    n = n[torch.argsort(torch.linalg.norm(n @ cell.detach(), dim=-1))]
    points = n @ cell
    return points[torch.linalg.norm(points.detach(), dim=-1) <= radius]


def _real_space_coefficients(inverse: torch.Tensor, dist: torch.Tensor, eta):
    """``B(r)`` and ``C(r)`` of the ``erfc(eta r) / r`` kernel (its tensor is ``C r r^T - B I``),
    from ``1 / r`` and ``r``."""
    inverse2 = inverse * inverse
    er3 = torch.erfc(eta * dist) * inverse * inverse2
    gauss2 = ((2.0 / _SQRT_PI) * eta) * torch.exp(-(eta * eta) * (dist * dist)) * inverse2
    b = er3 + gauss2
    c = 3.0 * er3 * inverse2 + gauss2 * (2.0 * eta * eta + 3.0 * inverse2)
    return b, c


def dipole_field_tensor(
    positions: torch.Tensor,
    cell: torch.Tensor,
    widths: Optional[torch.Tensor] = None,
    eta: Optional[float] = None,
    accuracy: float = 4.0,
) -> torch.Tensor:
    """The lattice-summed dipole field tensor ``T`` ``(3N, 3N)`` of one crystal (``k = 0`` left
    out), point dipoles or, with ``widths``, Gaussian dipoles.

    Args:
        positions (torch.Tensor): ``(N, 3)`` Cartesian positions (Angstrom)
        cell (torch.Tensor): ``(3, 3)`` lattice vectors as rows
        widths (torch.Tensor): ``(N,)`` Gaussian widths ``sigma_i`` (``None``: point dipoles)
        eta (float): Ewald splitting parameter (1/Angstrom; default ``sqrt(pi) / V^(1/3)``);
            the result does not depend on it
        accuracy (float): real and reciprocal sums reach ``accuracy / eta`` and ``2 accuracy eta``
            (and ``accuracy / gamma_min`` for the Gaussian term): errors ~ ``erfc(accuracy)``
    """
    num_atoms = positions.shape[0]
    volume = torch.abs(torch.linalg.det(cell))
    if eta is None:
        eta = _SQRT_PI / float(volume.detach()) ** (1.0 / 3.0)
    frac = torch.linalg.solve(cell.transpose(0, 1), positions.transpose(0, 1)).transpose(0, 1)
    dfrac = frac[:, None, :] - frac[None, :, :]
    d = (dfrac - torch.round(dfrac).detach()) @ cell  # (N, N, 3), minimum-image-like

    radius = accuracy / eta
    gamma = None
    if widths is not None:
        gamma = torch.rsqrt(2.0 * (widths[:, None] ** 2 + widths[None, :] ** 2)).clamp(max=1e10)
        radius = max(radius, accuracy / float(gamma.detach().min()))
    # every image within `radius` of some pair: |d_j| <= sum_k |a_kj| / 2 for each component j
    reach = 0.5 * torch.linalg.norm(torch.abs(cell.detach()).sum(0)).item()
    points = _lattice_points(cell, radius + reach)
    r = d[:, :, None, :] + points[None, None, :, :]  # (N, N, M, 3)
    self_image = torch.zeros(r.shape[:3], dtype=torch.bool, device=r.device)
    self_image[:, :, 0] = torch.eye(num_atoms, dtype=torch.bool, device=r.device)
    r = torch.where(self_image[..., None], torch.ones_like(r), r)  # placeholder, masked below
    dist = torch.linalg.norm(r, dim=-1)
    inverse = 1.0 / dist
    b, c = _real_space_coefficients(inverse, dist, eta)
    if gamma is not None:
        b_gauss, c_gauss = _real_space_coefficients(inverse, dist, gamma[:, :, None])
        b, c = b - b_gauss, c - c_gauss
    keep = (~self_image).to(r.dtype)
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    tensor = torch.einsum("ijm,ijma,ijmb->ijab", c * keep, r, r)
    tensor = tensor - (b * keep).sum(dim=2)[:, :, None, None] * eye  # (N, N, 3, 3)

    # reciprocal space, m = 0 left out
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(0, 1)
    k = _lattice_points(recip, 2.0 * accuracy * eta)[1:]
    k2 = (k**2).sum(-1)
    weight = torch.exp(-k2 / (4.0 * eta**2)) / k2
    kk = weight[:, None, None] * k[:, :, None] * k[:, None, :]
    cos = torch.cos(d @ k.transpose(0, 1))  # (N, N, K)
    tensor = tensor - (4.0 * math.pi / volume) * torch.einsum("ijk,kab->ijab", cos, kk)

    tensor = (
        tensor
        + (4.0 * eta**3 / (3.0 * _SQRT_PI))
        * torch.eye(num_atoms, dtype=r.dtype, device=r.device)[:, :, None, None]
        * eye
    )
    tensor = tensor.permute(0, 2, 1, 3).reshape(3 * num_atoms, 3 * num_atoms)
    return 0.5 * (tensor + tensor.transpose(0, 1))


def damping_widths(alpha: torch.Tensor) -> torch.Tensor:
    """Gaussian widths ``sigma_i = (tr(alpha_i) / (6 sqrt(pi)))^(1/3)`` ``(N,)`` of
    polarisabilities ``alpha`` ``(N, 3, 3)``: large enough that ``A - T`` stays positive
    definite (module docstring)."""
    trace = torch.diagonal(alpha, dim1=-2, dim2=-1).sum(-1)
    return (trace / (6.0 * _SQRT_PI)) ** (1.0 / 3.0)


def local_field_tensor(
    positions: torch.Tensor,
    cell: torch.Tensor,
    alpha: torch.Tensor,
    damping: bool = True,
    eta: Optional[float] = None,
    accuracy: float = 4.0,
) -> torch.Tensor:
    """``eps = I + (4 pi / V) J^T (A - T)^-1 J`` ``(3, 3)`` of one crystal whose atoms have
    polarisabilities ``alpha`` ``(N, 3, 3)`` (symmetric positive definite, Angstrom^3):
    ``A = blockdiag(alpha_i^-1)``, ``T`` from :func:`dipole_field_tensor` (Gaussian dipoles of
    :func:`damping_widths` with ``damping``, else point dipoles), ``J`` N stacked identities."""
    num_atoms = positions.shape[0]
    widths = damping_widths(alpha) if damping else None
    field = dipole_field_tensor(positions, cell, widths=widths, eta=eta, accuracy=accuracy)
    inverse = torch.linalg.inv(alpha)
    blocks = torch.block_diag(*inverse.unbind(0))
    eye = torch.eye(3, dtype=alpha.dtype, device=alpha.device)
    j = eye.repeat(num_atoms, 1)
    dipoles = torch.linalg.solve(blocks - field, j)  # (3N, 3): induced dipoles per unit field
    volume = torch.abs(torch.linalg.det(cell))
    eps = eye + (4.0 * math.pi / volume) * (j.transpose(0, 1) @ dipoles)
    return 0.5 * (eps + eps.transpose(0, 1))
