"""Multi-target model: ionic tensor and Born effective charges heads, their hooks and outputs
(trained by nequip-train: tests/integration/test_static_training.py)."""

import numpy as np
import pytest
import torch

from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.model import AnisoNetStaticModel
from aniso_nequip.train import AnisotropyRatio, PolycrystallineConstant, TensorIsotropicPart
from helpers import rotated, rotation

EPS, IONIC, BORN = "dielectric_tensor", "dielectric_ionic_tensor", "born_effective_charges"


@pytest.fixture(scope="module")
def static_model(build_model):
    return build_model(
        AnisoNetStaticModel, ionic_mean=9.0, ionic_scale=10.0, born_scale=1.3, born_charges=True
    )


def _run(model, structures):
    r_max = float(model.metadata["r_max"])
    data = atoms_to_graphs(structures, model.type_names, r_max, with_references=False)
    with torch.no_grad():
        out = model(data)
    counts = np.cumsum([len(a) for a in structures])[:-1]
    return (
        out[EPS].numpy(),
        out[IONIC].numpy(),
        np.split(out[BORN].numpy(), counts),
    )


def test_every_head_is_equivariant(static_model, small_frames):
    rot = rotation(7)
    eps, ionic, born = _run(static_model, small_frames)
    eps_r, ionic_r, born_r = _run(static_model, [rotated(a, rot) for a in small_frames])
    np.testing.assert_allclose(eps_r, rot @ eps @ rot.T, atol=1e-8)
    np.testing.assert_allclose(ionic_r, rot @ ionic @ rot.T, atol=1e-8)
    for z, z_r in zip(born, born_r):
        np.testing.assert_allclose(z_r, rot @ z @ rot.T, atol=1e-8)  # R Z R^T per atom
    # the heads do predict anisotropy and a non-symmetric (1e) part of Z*
    assert (
        np.abs(ionic - np.trace(ionic, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)).max()
        > 1e-3
    )
    assert max(np.abs(z - z.transpose(0, 2, 1)).max() for z in born) > 1e-4


def test_sum_rule_and_positive_ionic_tensor(static_model, small_frames):
    _, ionic, born = _run(static_model, small_frames + [small_frames[0].repeat((2, 1, 1))])
    for z in born:
        assert np.abs(z.sum(axis=0)).max() < 1e-12
    assert np.linalg.eigvalsh(ionic).min() >= -1e-12
    # single structures (no batch index) obey it too
    (_, _, (z,)) = _run(static_model, small_frames[:1])
    assert np.abs(z.sum(axis=0)).max() < 1e-12


def test_symmetry_forms(static_model, symmetric_cells):
    eps, ionic, born = _run(
        static_model, [symmetric_cells["rocksalt"], symmetric_cells["wurtzite"]]
    )
    for tensor in (eps[0], ionic[0]):  # cubic: isotropic
        np.testing.assert_allclose(tensor, np.trace(tensor) / 3 * np.eye(3), atol=1e-10)
    for z in born[0]:  # Na and Cl sit on m-3m sites: isotropic Z*
        np.testing.assert_allclose(z, np.trace(z) / 3 * np.eye(3), atol=1e-10)
    for tensor in (eps[1], ionic[1]):  # hexagonal: uniaxial along c
        assert abs(tensor[0, 0] - tensor[1, 1]) < 1e-10 and abs(tensor[0, 0] - tensor[2, 2]) > 1e-6
        assert np.abs(tensor - np.diag(np.diag(tensor))).max() < 1e-10


def test_heads_can_be_switched_off(build_model, small_frames):
    model = build_model(AnisoNetStaticModel, ionic=False, born_charges=False)
    from aniso_nequip.inference import output_fields

    assert output_fields(model) == [EPS]
    with pytest.raises(ValueError, match="at least one"):
        build_model(AnisoNetStaticModel, electronic=False, ionic=False, born_charges=False)


def test_static_and_born_modifiers():
    eps = torch.diag_embed(torch.tensor([[2.0, 3.0, 4.0]], dtype=torch.float64))
    ionic = torch.diag_embed(torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64))
    data = {EPS: eps, IONIC: ionic, BORN: torch.eye(3, dtype=torch.float64).expand(2, 3, 3) * 2}
    assert PolycrystallineConstant(plus=IONIC)(data).item() == pytest.approx(4.0)
    assert AnisotropyRatio(plus=IONIC)(data).item() == pytest.approx(2.0)
    assert torch.isnan(AnisotropyRatio(field=IONIC)(data)).all()  # lambda_min = 0: undefined
    assert TensorIsotropicPart()(data).tolist() == [2.0, 2.0]
    assert TensorIsotropicPart().type == "node"
