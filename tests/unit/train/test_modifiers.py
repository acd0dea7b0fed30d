"""Loss/metric hooks: field modifiers inside nequip's MetricsManager, and the configs' wiring."""

import numpy as np
import pytest
import torch
from nequip.data import AtomicDataDict
from nequip.train import MeanAbsoluteError, MeanSquaredError, MetricsManager

from aniso_nequip.data import (
    AnisotropyRatio,
    PolycrystallineConstant,
    SortedEigenvalues,
    SymmetricTensorIrreps,
)


def _data(eps):
    return {AtomicDataDict.DIELECTRIC_KEY: torch.as_tensor(eps, dtype=torch.float64)}


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 3, 3))
    target = 3 * np.eye(3) + 0.3 * (a + a.transpose(0, 2, 1))
    b = rng.normal(size=(7, 3, 3))
    pred = target + 0.1 * (b + b.transpose(0, 2, 1))
    return pred, target


def test_modifier_values(pair):
    pred, target = pair
    ev_p, ev_t = np.linalg.eigvalsh(pred), np.linalg.eigvalsh(target)
    p, t = PolycrystallineConstant()(_data(pred), _data(target))
    np.testing.assert_allclose(t.numpy(), ev_t.mean(1))
    np.testing.assert_allclose(p.numpy(), np.trace(pred, axis1=1, axis2=2) / 3)
    p, t = AnisotropyRatio()(_data(pred), _data(target))
    np.testing.assert_allclose(t.numpy(), ev_t[:, 2] / ev_t[:, 0])
    assert (p.numpy() >= 1).all()
    p, t = SortedEigenvalues()(_data(pred), _data(target))
    np.testing.assert_allclose(p.numpy(), ev_p)
    full = SymmetricTensorIrreps()(_data(target))
    assert full.shape == (7, 6)
    np.testing.assert_allclose(full[:, 0].numpy(), np.sqrt(3) * ev_t.mean(1))
    np.testing.assert_allclose(SymmetricTensorIrreps(irrep="2e")(_data(target)), full[:, 1:])
    np.testing.assert_allclose(SymmetricTensorIrreps(irrep="0e")(_data(target)), full[:, :1])
    for modifier in (PolycrystallineConstant(), SymmetricTensorIrreps(), AnisotropyRatio()):
        assert modifier.type == "graph"


def test_bad_irrep_is_rejected():
    with pytest.raises(ValueError, match="irrep"):
        SymmetricTensorIrreps(irrep="1o")


def test_metrics_manager_accumulates_exact_maes(pair):
    pred, target = pair
    manager = MetricsManager(
        [
            {
                "name": "irreps_mse",
                "coeff": 1.0,
                "field": SymmetricTensorIrreps(),
                "metric": MeanSquaredError(),
            },
            {
                "name": "eps_poly_mae",
                "field": PolycrystallineConstant(),
                "metric": MeanAbsoluteError(),
            },
            {"name": "a_r_mae", "field": AnisotropyRatio(), "metric": MeanAbsoluteError()},
        ]
    )
    for batch in (slice(0, 3), slice(3, 7)):
        manager(_data(pred[batch]), _data(target[batch]))
    out = manager.compute()
    ev_p, ev_t = np.linalg.eigvalsh(pred), np.linalg.eigvalsh(target)
    assert out["eps_poly_mae"].item() == pytest.approx(np.abs(ev_p.mean(1) - ev_t.mean(1)).mean())
    a_p, a_t = ev_p[:, 2] / ev_p[:, 0], ev_t[:, 2] / ev_t[:, 0]
    assert out["a_r_mae"].item() == pytest.approx(np.abs(a_p - a_t).mean())
    # the irreps basis is orthonormal: irreps MSE = mean squared Frobenius error / 6
    frob2 = ((pred - target) ** 2).sum(axis=(1, 2))
    assert out["irreps_mse"].item() == pytest.approx(frob2.mean() / 6)
    assert out["weighted_sum"].item() == pytest.approx(out["irreps_mse"].item())
