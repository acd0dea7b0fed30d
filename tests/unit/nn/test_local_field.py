"""The Ewald dipole field tensor and the local-field dielectric tensor (aniso_nequip.nn.dipole),
and the `readout: local_field` models built on them (float64 unless said otherwise)."""

import math

import ase.build
import numpy as np
import pytest
import torch

from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.nn.dipole import damping_widths, dipole_field_tensor, local_field_tensor
from helpers import build_tiny, bundled, predict, rotated, rotation

F64 = torch.float64


def _tensor(x):
    return torch.as_tensor(np.asarray(x), dtype=F64)


def _field(atoms, **kwargs):
    return dipole_field_tensor(_tensor(atoms.positions), _tensor(atoms.cell.array), **kwargs)


def _eps(atoms, alpha, **kwargs):
    return local_field_tensor(
        _tensor(atoms.positions), _tensor(atoms.cell.array), _tensor(alpha), **kwargs
    ).numpy()


def _random_alphas(n, seed=0, scale=2.0):
    """``n`` random symmetric positive-definite 3x3 polarisabilities."""
    m = np.random.default_rng(seed).normal(size=(n, 3, 3))
    return scale * (np.eye(3) + 0.3 * (m @ m.transpose(0, 2, 1)))


@pytest.fixture(scope="module")
def crystal():
    """A low-symmetry bundled crystal (monoclinic or triclinic, a few atoms)."""
    frames = bundled("mp_subset_test")
    return next(
        f for f in frames if f.info["crystal_system"] in ("triclinic", "monoclinic") and len(f) <= 8
    )


def test_lorentz_factor_of_a_simple_cubic_lattice():
    atoms = ase.Atoms("X", cell=np.eye(3) * 3.1, pbc=True)
    expected = 4 * math.pi / (3 * atoms.get_volume()) * np.eye(3)
    np.testing.assert_allclose(_field(atoms, accuracy=5.0).numpy(), expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("eta", [0.3, 0.6, 1.0])
def test_trace_of_any_single_atom_lattice(eta):
    atoms = ase.Atoms("X", cell=[[3.0, 0.2, 0.1], [0.5, 4.0, 0.3], [0.2, -0.4, 5.5]], pbc=True)
    trace = np.trace(_field(atoms, eta=eta, accuracy=5.0).numpy())
    assert trace == pytest.approx(4 * math.pi / atoms.get_volume(), abs=1e-8)


def test_fcc_lattice_sum():
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    n = len(atoms)
    summed = _field(atoms, accuracy=5.0).numpy().reshape(n, 3, n, 3).sum(axis=2)
    expected = 4 * math.pi * n / (3 * atoms.get_volume()) * np.eye(3)
    np.testing.assert_allclose(summed, np.broadcast_to(expected, (n, 3, 3)), atol=1e-8)


@pytest.mark.parametrize("damped", [False, True])
def test_independent_of_splitting_and_cutoffs(crystal, damped):
    widths = torch.linspace(0.6, 1.4, len(crystal), dtype=F64) if damped else None
    reference = _field(crystal, widths=widths, eta=0.5, accuracy=5.5).numpy()
    for eta, accuracy in ((0.3, 4.5), (0.8, 4.5), (1.2, 5.0)):
        field = _field(crystal, widths=widths, eta=eta, accuracy=accuracy).numpy()
        np.testing.assert_allclose(field, reference, atol=1e-6, rtol=0)
    # damping changes it
    assert np.abs(reference - _field(crystal, accuracy=5.5).numpy()).max() > 1e-3 or not damped


def test_clausius_mossotti_on_a_simple_cubic_lattice():
    atoms = ase.Atoms("X", cell=np.eye(3) * 3.0, pbc=True)
    for alpha in (0.5, 1.5, 3.0):
        eps = _eps(atoms, alpha * np.eye(3)[None], damping=False, accuracy=5.0)
        np.testing.assert_allclose(eps, eps[0, 0] * np.eye(3), atol=1e-10)
        cm = (eps[0, 0] - 1) / (eps[0, 0] + 2)
        assert cm == pytest.approx(4 * math.pi * alpha / (3 * atoms.get_volume()), abs=1e-9)


@pytest.mark.parametrize("damping", [False, True])
def test_supercell_permutation_and_rotation(crystal, damping):
    alphas = _random_alphas(len(crystal))
    options = dict(damping=damping, accuracy=5.0)
    eps = _eps(crystal, alphas, **options)
    supercell = crystal.repeat((2, 2, 2))
    np.testing.assert_allclose(
        _eps(supercell, np.tile(alphas, (8, 1, 1)), **options), eps, atol=1e-7, rtol=0
    )
    order = np.random.default_rng(1).permutation(len(crystal))
    np.testing.assert_allclose(
        _eps(crystal[order], alphas[order], **options), eps, atol=1e-9, rtol=0
    )
    rot = rotation(2)
    rotated_eps = _eps(rotated(crystal, rot), rot @ alphas @ rot.T, **options)
    np.testing.assert_allclose(rotated_eps, rot @ eps @ rot.T, atol=1e-9, rtol=0)


def test_stacked_layers_mix_in_parallel_in_plane_and_in_series_across():
    """Square layers (spacing 3 A) of isotropic atoms, stacked ``gap`` apart: ``eps_xx > eps_zz``,
    and as the gap grows, a fixed layer mixed with vacuum: ``(eps_xx - 1) * gap`` (parallel) and
    ``(1 - 1 / eps_zz) * gap`` (series) tend to constants, ``(eps_zz - 1) * gap`` does not."""
    rows = []
    for gap in (6.0, 12.0, 24.0, 48.0):
        atoms = ase.Atoms("X", cell=np.diag([3.0, 3.0, gap]), pbc=True)
        for damping in (False, True):
            eps = _eps(atoms, 1.5 * np.eye(3)[None], damping=damping)
            assert eps[0, 0] == pytest.approx(eps[1, 1], abs=1e-10)
            assert eps[0, 0] > eps[2, 2] > 1.0
        rows.append([(eps[0, 0] - 1) * gap, (1 - 1 / eps[2, 2]) * gap, (eps[2, 2] - 1) * gap])
    rows = np.array(rows)
    np.testing.assert_allclose(rows[1:, :2], np.broadcast_to(rows[-1, :2], (3, 2)), rtol=1e-6)
    assert abs(rows[-2, 2] / rows[-1, 2] - 1) > 1e-2


def test_damping_prevents_the_polarisation_catastrophe(crystal):
    """Undamped point dipoles of large polarisability give an unphysical tensor (an eigenvalue
    below 1); Gaussian dipoles keep ``A - T`` positive definite for any ``alpha``."""
    big = 60.0 * np.eye(3)[None].repeat(len(crystal), 0)
    assert np.linalg.eigvalsh(_eps(crystal, big, damping=False)).min() < 1.0
    for scale in (0.1, 10.0, 60.0, 1e3):
        alphas = _random_alphas(len(crystal), seed=3, scale=scale)
        eps = _eps(crystal, alphas, damping=True)
        assert np.linalg.eigvalsh(eps).min() > 1.0
        alpha_t = _tensor(alphas)
        field = _field(crystal, widths=damping_widths(alpha_t)).numpy()
        blocks = torch.block_diag(*torch.linalg.inv(alpha_t).unbind(0)).numpy()
        assert np.linalg.eigvalsh(blocks - field).min() > 0


def test_float32_matches_float64(crystal):
    alphas = _random_alphas(len(crystal))
    eps64 = _eps(crystal, alphas)
    eps32 = local_field_tensor(
        *(
            torch.as_tensor(np.asarray(x), dtype=torch.float32)
            for x in (crystal.positions, crystal.cell.array, alphas)
        )
    )
    assert eps32.dtype == torch.float32
    np.testing.assert_allclose(eps32.numpy(), eps64, atol=1e-5 * np.abs(eps64).max(), rtol=0)


def test_gradients_reach_the_polarisabilities(crystal):
    alphas = _tensor(_random_alphas(len(crystal))).requires_grad_(True)
    eps = local_field_tensor(_tensor(crystal.positions), _tensor(crystal.cell.array), alphas)
    eps.trace().backward()
    assert torch.isfinite(alphas.grad).all() and (alphas.grad.abs() > 0).any()


@pytest.fixture(scope="module")
def local_field_model(type_names):
    return build_tiny(
        AnisoNetModel,
        type_names=type_names,
        readout="local_field",
        isotropic_shift=5.0,
        anisotropic_scale=1.0,
    )


def test_model_neumann_forms(local_field_model, symmetric_cells):
    rocksalt, diamond, wurtzite = predict(
        local_field_model,
        [symmetric_cells["rocksalt"], symmetric_cells["diamond"], symmetric_cells["wurtzite"]],
    )
    for eps in (rocksalt, diamond):
        np.testing.assert_allclose(eps, np.trace(eps) / 3 * np.eye(3), atol=1e-9)
    values, vectors = np.linalg.eigh(wurtzite)
    c_axis = symmetric_cells["wurtzite"].cell.array[2]
    c_axis = c_axis / np.linalg.norm(c_axis)  # not in place: the cell is a shared fixture's
    gaps = np.diff(values)
    assert min(gaps) < 1e-9 and max(gaps) > 1e-6
    unique = vectors[:, 0] if gaps[0] > gaps[1] else vectors[:, 2]
    assert abs(abs(unique @ c_axis) - 1) < 1e-9


def test_model_rotation_batching_and_supercell(local_field_model, small_frames):
    rot = rotation(4)
    eps = predict(local_field_model, small_frames)
    np.testing.assert_allclose(
        predict(local_field_model, [rotated(f, rot) for f in small_frames]),
        rot @ eps @ rot.T,
        atol=1e-8,
    )
    single = np.stack([predict(local_field_model, [f])[0] for f in small_frames])
    np.testing.assert_allclose(eps, single, atol=1e-12)
    assert np.linalg.eigvalsh(eps).min() > 1.0
    smallest = min(small_frames, key=len)
    np.testing.assert_allclose(
        predict(local_field_model, [smallest.repeat((2, 2, 2))])[0],
        predict(local_field_model, [smallest])[0],
        atol=1e-6,
    )


@pytest.mark.slow
def test_eigenvalues_above_one_on_every_bundled_crystal():
    """An untrained float32 model, weights pushed far from their start, on all 1,104 bundled
    mp_subset crystals (1 to 84 atoms): no polarisation catastrophe anywhere."""
    frames = [f for split in ("train", "val", "test") for f in bundled(f"mp_subset_{split}")]
    names = sorted({s for f in frames for s in f.symbols})
    model = build_tiny(
        AnisoNetModel,
        type_names=names,
        readout="local_field",
        model_dtype="float32",
        num_layers=1,
        num_features=4,
        r_max=3.0,
        isotropic_shift=8.0,
        anisotropic_scale=1.0,
    )
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.as_tensor(rng.normal(0, 0.5, p.shape), dtype=p.dtype))
    eps = np.concatenate([predict(model, frames[i : i + 32]) for i in range(0, len(frames), 32)])
    values = np.linalg.eigvalsh(eps)
    assert eps.shape == (1104, 3, 3) and np.isfinite(eps).all()
    assert values.min() > 1.0 and values.max() > 3.0


def test_compile_refuses_clearly(local_field_model, symmetric_cells, tmp_path):
    import nequip.scripts.compile as nequip_compile

    data = atoms_to_graphs([symmetric_cells["rocksalt"]], local_field_model.type_names, 4.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            nequip_compile, "load_saved_model", lambda *_, **__: (local_field_model, data)
        )
        with pytest.raises(RuntimeError, match="`readout: local_field` cannot be compiled"):
            nequip_compile.main(
                [
                    "unused.ckpt",
                    str(tmp_path / "m.nequip.pt2"),
                    "--mode",
                    "aotinductor",
                    "--device",
                    "cpu",
                    "--target",
                    "batch_dielectric",
                ]
            )
