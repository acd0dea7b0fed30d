"""Symmetric 3x3 (dielectric) tensors: irreps basis and derived scalar quantities.

A symmetric tensor decomposes as ``eps = lambda * I + S`` with ``lambda = tr(eps) / 3`` (irrep
``0e``) and ``S`` symmetric traceless (irrep ``2e``). The change of basis is e3nn's
``CartesianTensor("ij=ji")``: an orthonormal ``(6, 3, 3)`` tensor ``Q`` whose first row is
``I / sqrt(3)``, so that ``irreps = einsum("zjk,ijk->zi", eps, Q)`` and
``eps = einsum("zi,ijk->zjk", irreps, Q)``.

All functions act on batches ``(..., 3, 3)`` of torch tensors.
"""

import functools

import torch


@functools.lru_cache(maxsize=None)
def _change_of_basis_float64(formula: str) -> torch.Tensor:
    from e3nn.io import CartesianTensor
    from nequip.utils import torch_default_dtype

    # e3nn computes in the default dtype, which model building may have set to float32
    with torch_default_dtype(torch.float64):
        return CartesianTensor(formula).reduced_tensor_products().change_of_basis


def change_of_basis(dtype: torch.dtype = torch.float64, formula: str = "ij=ji") -> torch.Tensor:
    """The orthonormal map from irreps coefficients to Cartesian 3x3 tensors: ``(6, 3, 3)`` from
    ``1x0e+1x2e`` for symmetric tensors (``"ij=ji"``), ``(9, 3, 3)`` from ``1x0e+1x1e+1x2e`` for
    general ones (``"ij"``, e.g. Born effective charges)."""
    return _change_of_basis_float64(formula).to(dtype)


def to_irreps(tensor: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` symmetric tensors -> ``(..., 6)`` ``1x0e+1x2e`` coefficients."""
    q = change_of_basis(tensor.dtype).to(tensor.device)
    return torch.einsum("...jk,ijk->...i", tensor, q)


def from_irreps(irreps: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` ``1x0e+1x2e`` coefficients -> ``(..., 3, 3)`` symmetric tensors."""
    q = change_of_basis(irreps.dtype).to(irreps.device)
    return torch.einsum("...i,ijk->...jk", irreps, q)


def symmetrize(tensor: torch.Tensor) -> torch.Tensor:
    """The symmetric part ``(T + T^T) / 2`` of ``(..., 3, 3)`` tensors."""
    return 0.5 * (tensor + tensor.transpose(-1, -2))


def eigenvalues(tensor: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues ``(..., 3)`` of the symmetric part of ``(..., 3, 3)`` tensors."""
    return torch.linalg.eigvalsh(symmetrize(tensor))


def polycrystalline(tensor: torch.Tensor) -> torch.Tensor:
    """Polycrystalline constant ``eps_poly = mean eigenvalue = tr / 3``, shape ``(...)``."""
    return torch.diagonal(tensor, dim1=-2, dim2=-1).mean(-1)


def anisotropy_ratio(tensor: torch.Tensor) -> torch.Tensor:
    """Anisotropy ratio ``a_r = lambda_max / lambda_min`` (1 if isotropic), shape ``(...)``;
    NaN where ``lambda_min <= 0`` (e.g. an ionic tensor without IR-active modes)."""
    ev = eigenvalues(tensor)
    return torch.where(ev[..., 0] > 0, ev[..., -1] / ev[..., 0], torch.nan)
