"""``head_dropout``: equivariant dropout of the features the readout reads, off by default."""

import numpy as np
import pytest
import torch
from e3nn.o3._irreps import Irreps
from nequip.data import AtomicDataDict

from aniso_nequip.errors import InputError
from aniso_nequip.model import AnisoNetModel, AnisoNetStaticModel
from aniso_nequip.nn import IrrepsDropout
from helpers import build_tiny, predict, rotation

FEATURES = AtomicDataDict.NODE_FEATURES_KEY


def _dropout(irreps, p):
    return IrrepsDropout(p, irreps_in={FEATURES: irreps})


def test_zero_and_absent_give_the_same_model(type_names, small_frames):
    absent = build_tiny(AnisoNetModel, type_names=type_names)
    zero = build_tiny(AnisoNetModel, type_names=type_names, head_dropout=0.0)
    assert [n for n, _ in zero.named_modules()] == [n for n, _ in absent.named_modules()]
    assert np.array_equal(predict(zero, small_frames), predict(absent, small_frames))
    for model in (absent, zero):  # no dropout in training either: the training step is the same
        model.train()
    assert np.array_equal(predict(zero, small_frames), predict(absent, small_frames))


@pytest.mark.parametrize("builder", [AnisoNetModel, AnisoNetStaticModel])
def test_dropout_acts_while_training_only(builder, type_names, small_frames):
    plain = build_tiny(builder, type_names=type_names)
    dropped = build_tiny(builder, type_names=type_names, head_dropout=0.5)
    assert isinstance(dropped.model.head_dropout, IrrepsDropout)
    # no parameters of its own: the same seed gives the same weights, and evaluation is the same
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    assert np.array_equal(predict(dropped, small_frames), predict(plain, small_frames))
    dropped.train()
    torch.manual_seed(0)
    first = predict(dropped, small_frames)
    second = predict(dropped, small_frames)
    assert np.abs(first - second).max() > 1e-3
    assert np.isfinite(first).all()


def test_whole_irreps_dropped_scaled_and_equivariant():
    irreps = Irreps("16x0e+16x1o+16x2e")
    layer = _dropout(irreps, 0.25).train()
    x = torch.randn(500, irreps.dim, dtype=torch.float64)
    torch.manual_seed(1)
    y = layer({FEATURES: x.clone()})[FEATURES]
    ratio = y / x
    # per atom and feature: all components kept (times 1 / (1 - p)) or all zeroed
    for (mul, ir), part in zip(irreps, irreps.slices()):
        r = ratio[:, part].reshape(500, mul, ir.dim)
        assert torch.allclose(r, r[..., :1].expand_as(r))
        assert set(np.round(r.unique().numpy(), 12)) <= {0.0, round(1 / 0.75, 12)}
    assert (ratio == 0).double().mean().item() == pytest.approx(0.25, abs=0.02)
    # the same mask commutes with rotations
    d = irreps.D_from_matrix(torch.as_tensor(rotation(3), dtype=torch.float64))
    torch.manual_seed(1)
    y_rot = layer({FEATURES: x @ d.T})[FEATURES]
    assert torch.allclose(y_rot, y @ d.T, atol=1e-12)
    assert torch.equal(layer.eval()({FEATURES: x.clone()})[FEATURES], x)


@pytest.mark.parametrize("p", [1.0, -0.1, 2])
def test_out_of_range_is_refused(p, type_names):
    with pytest.raises(InputError, match=r"`head_dropout` must be a number >= 0 and < 1"):
        build_tiny(AnisoNetModel, type_names=type_names, head_dropout=p)
