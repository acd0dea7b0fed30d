import numpy as np
import pytest
import torch
from e3nn.io import CartesianTensor

from aniso_nequip import tensors


def _random_symmetric(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 3, 3, generator=g, dtype=torch.float64)
    return a + a.transpose(-1, -2)


def test_change_of_basis_is_orthonormal_and_starts_with_identity():
    q = tensors.change_of_basis().reshape(6, 9)
    torch.testing.assert_close(q @ q.T, torch.eye(6, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        tensors.change_of_basis()[0], torch.eye(3, dtype=torch.float64) / 3**0.5
    )


def test_round_trip_and_agreement_with_e3nn():
    eps = _random_symmetric(50)
    irreps = tensors.to_irreps(eps)
    assert irreps.shape == (50, 6)
    torch.testing.assert_close(tensors.from_irreps(irreps), eps, atol=1e-12, rtol=0)
    ct = CartesianTensor("ij=ji")
    torch.testing.assert_close(irreps, ct.from_cartesian(eps), atol=1e-10, rtol=0)
    torch.testing.assert_close(ct.to_cartesian(irreps), eps, atol=1e-10, rtol=0)
    # 0e coefficient is sqrt(3) * tr/3; 2e coefficients carry the traceless part
    torch.testing.assert_close(irreps[:, 0], 3**0.5 * tensors.polycrystalline(eps))
    traceless = eps - tensors.polycrystalline(eps)[:, None, None] * torch.eye(3)
    torch.testing.assert_close(
        tensors.from_irreps(torch.cat([0 * irreps[:, :1], irreps[:, 1:]], 1)), traceless
    )


def test_irreps_transform_as_0e_plus_2e_under_rotation():
    from e3nn import o3

    eps = _random_symmetric(5, seed=1)
    rot = o3.rand_matrix(dtype=torch.float64)
    rotated = rot @ eps @ rot.T
    d = o3.Irreps("1x0e+1x2e").D_from_matrix(rot)
    torch.testing.assert_close(tensors.to_irreps(rotated), tensors.to_irreps(eps) @ d.T)


def test_derived_quantities_on_known_tensors():
    diag = torch.tensor([[[2.0, 0, 0], [0, 3.0, 0], [0, 0, 8.0]]], dtype=torch.float64)
    rot = torch.tensor([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    eps = rot @ diag @ rot.T
    assert tensors.polycrystalline(eps).item() == pytest.approx(13 / 3)
    assert tensors.anisotropy_ratio(eps).item() == pytest.approx(4.0)
    np.testing.assert_allclose(tensors.eigenvalues(eps).numpy(), [[2.0, 3.0, 8.0]])
    iso = 5.0 * torch.eye(3, dtype=torch.float64)
    assert tensors.anisotropy_ratio(iso).item() == 1.0
    no_ionic_modes = torch.diag(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    assert torch.isnan(tensors.anisotropy_ratio(no_ionic_modes))
    assert tensors.to_irreps(iso)[1:].abs().max().item() < 1e-14
