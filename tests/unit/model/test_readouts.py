"""The `readout` variable of every builder: linear, square, log (I + expm(L)) and local_field;
saved configs' boolean `physical_readout`; standardisation of each readout (float64 models)."""

import math

import ase
import numpy as np
import pytest
import torch

from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.errors import InputError
from aniso_nequip.model import AnisoNetModel, AnisoNetStaticModel, ScalarAnisoNetModel
from aniso_nequip.model.anisonet import local_field_scales, readout_scales
from aniso_nequip.nn import LocalFieldReadout, SymmetricTensorReadout
from aniso_nequip.tensors import change_of_basis
from helpers import build_tiny, bundled, predict, rotated, rotation

SCALES = dict(isotropic_shift=5.0, isotropic_scale=2.0, anisotropic_scale=1.0)


def _push_weights(model, seed=0, sigma=0.5):
    """Random weights far from the initial ones."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.as_tensor(rng.normal(0, sigma, p.shape), dtype=p.dtype))


@pytest.mark.parametrize("physical, readout", [(True, "square"), (False, "linear")])
def test_saved_physical_readout_builds_its_readout(physical, readout, type_names, small_frames):
    old = build_tiny(AnisoNetModel, type_names=type_names, physical_readout=physical, **SCALES)
    new = build_tiny(AnisoNetModel, type_names=type_names, readout=readout, **SCALES)
    assert old.state_dict().keys() == new.state_dict().keys()
    new.load_state_dict(old.state_dict())
    np.testing.assert_array_equal(predict(old, small_frames), predict(new, small_frames))


def test_readout_errors(type_names):
    with pytest.raises(
        InputError, match="`readout` must be one of linear, square, log, local_field, got 'exp'"
    ):
        build_tiny(AnisoNetModel, type_names=type_names, readout="exp")
    with pytest.raises(InputError, match="give `readout` alone"):
        build_tiny(AnisoNetModel, type_names=type_names, readout="log", physical_readout=True)
    with pytest.raises(InputError, match="`physical_readout` must be true or false, got 'yes'"):
        build_tiny(AnisoNetModel, type_names=type_names, physical_readout="yes")


@pytest.mark.parametrize("form", ["linear", "square", "exp"])
def test_readout_standardisation(form):
    """Zero coefficients give ``shift * I``; the isotropic and anisotropic coefficients move
    ``eps`` by the given scales (first order) in every form."""
    options = readout_scales(5.0, 2.0, 0.7, form, floor=1.0)
    module = SymmetricTensorReadout(
        field="y",
        out_field="eps",
        change_of_basis=change_of_basis(),
        irreps_in={"y": "1x0e+1x2e"},
        **options,
    )
    q = change_of_basis()
    h = 1e-6
    y = torch.zeros(3, 6, dtype=torch.float64)
    y[1, 0], y[2, 3] = h, h
    eps = module({"y": y})["eps"]
    np.testing.assert_allclose(eps[0], 5.0 * np.eye(3), atol=1e-12)
    assert (eps[1].trace() - eps[0].trace()).item() / 3 == pytest.approx(2.0 * h, rel=1e-5)
    np.testing.assert_allclose(eps[2] - eps[0], 0.7 * h * q[3], atol=1e-11)


def test_local_field_standardisation():
    """Zero coefficients on a simple cubic crystal of point dipoles give ``eps = shift * I``
    (Clausius-Mossotti with the volume per atom as unit of alpha)."""
    module = LocalFieldReadout(
        field="y",
        out_field="eps",
        change_of_basis=change_of_basis(),
        damping=False,
        irreps_in={"y": "1x0e+1x2e"},
        **local_field_scales(5.0, 2.0, 1.0),
    )
    data = atoms_to_graphs([ase.Atoms("C", cell=np.eye(3) * 2.7, pbc=True)], ["C"], 3.0)
    data["y"] = torch.zeros(1, 6, dtype=torch.float64)
    np.testing.assert_allclose(module(data)["eps"][0], 5.0 * np.eye(3), atol=1e-6)


@pytest.fixture(scope="module")
def log_model(type_names):
    model = build_tiny(AnisoNetModel, type_names=type_names, readout="log", **SCALES)
    _push_weights(model)
    return model


def test_log_readout_eigenvalues_above_one(log_model, type_names):
    frames = [
        f
        for f in bundled("mp_subset_test", ":60")
        if set(f.get_chemical_symbols()) <= set(type_names)
    ]
    values = np.linalg.eigvalsh(predict(log_model, frames))
    assert values.min() > 1.0 and values.max() - values.min() > 0.1


def test_log_readout_symmetry(log_model, small_frames, symmetric_cells):
    rot = rotation(5)
    eps = predict(log_model, small_frames)
    np.testing.assert_allclose(
        predict(log_model, [rotated(f, rot) for f in small_frames]), rot @ eps @ rot.T, atol=1e-8
    )
    rocksalt, wurtzite = predict(
        log_model, [symmetric_cells["rocksalt"], symmetric_cells["wurtzite"]]
    )
    np.testing.assert_allclose(rocksalt, np.trace(rocksalt) / 3 * np.eye(3), atol=1e-10)
    values, vectors = np.linalg.eigh(wurtzite)
    c_axis = symmetric_cells["wurtzite"].cell.array[2] / np.linalg.norm(
        symmetric_cells["wurtzite"].cell.array[2]
    )
    gaps = np.diff(values)
    assert min(gaps) < 1e-10 and max(gaps) > 1e-6
    unique = vectors[:, 0] if gaps[0] > gaps[1] else vectors[:, 2]
    assert abs(abs(unique @ c_axis) - 1) < 1e-10


@pytest.mark.parametrize("readout", ["log", "local_field"])
def test_gradients_are_finite_on_degenerate_cubic_tensors(readout, type_names, symmetric_cells):
    """expm is differentiated at exactly degenerate eigenvalues (cubic crystals)."""
    model = build_tiny(AnisoNetModel, type_names=type_names, readout=readout, **SCALES).train()
    data = atoms_to_graphs(
        [symmetric_cells["rocksalt"], symmetric_cells["diamond"]], model.type_names, 4.0
    )
    model(data)["dielectric_tensor"].square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)


@pytest.mark.parametrize("readout", ["log", "local_field"])
def test_scalar_ablation_readouts(readout, type_names, small_frames):
    """The 6x0e ablation reads its six invariants as ``L`` (log) or as each atom's
    ``log(alpha)`` (local_field): positive, but not rotation-equivariant."""
    model = build_tiny(ScalarAnisoNetModel, type_names=type_names, readout=readout, **SCALES)
    eps = predict(model, small_frames)
    assert np.linalg.eigvalsh(eps).min() > 1.0
    rot = rotation(0)
    eps_rot = predict(model, [rotated(f, rot) for f in small_frames])
    assert np.abs(eps_rot - rot @ eps @ rot.T).max() > 1e-4


@pytest.mark.parametrize(
    "readout, form", [("log", "exp"), ("local_field", None), ("square", "square")]
)
def test_static_model_readouts(readout, form, type_names, small_frames):
    """The electronic head follows ``readout``; the ionic one keeps ``S @ S`` (it may vanish)."""
    model = build_tiny(
        AnisoNetStaticModel, type_names=type_names, readout=readout, ionic_mean=9.0, **SCALES
    )
    modules = model.model
    if form is None:
        assert isinstance(modules.electronic_readout, LocalFieldReadout)
        assert "electronic_pool" not in modules._modules
    else:
        assert modules.electronic_readout.form == form
    assert modules.ionic_readout.form == "square" and modules.ionic_readout.floor == 0.0
    out = predict(model, small_frames)
    assert np.linalg.eigvalsh(out).min() > 1.0
    assert math.isfinite(float(np.abs(out).max()))


@pytest.mark.parametrize("physical", [False, True])
def test_checkpoint_saved_with_physical_readout_loads(physical, trained, small_frames, tmp_path):
    """A checkpoint whose saved model config holds ``physical_readout`` (before ``readout``)
    loads; ``false`` predicts what the same weights do under ``readout: linear``."""
    from nequip.model.saved_models import ModelFromCheckpoint

    checkpoint = torch.load(trained["dir"] / "best.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["model"].pop("readout") == "linear"
    checkpoint["hyper_parameters"]["model"]["physical_readout"] = physical
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    model = ModelFromCheckpoint(str(old))["sole_model"].eval()
    assert model.model.tensor_readout.form == ("square" if physical else "linear")
    if not physical:
        reference = ModelFromCheckpoint(str(trained["dir"] / "best.ckpt"))["sole_model"].eval()
        np.testing.assert_array_equal(
            predict(model, small_frames), predict(reference, small_frames)
        )
