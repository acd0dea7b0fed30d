"""Physical symmetries of the predicted dielectric tensor (float64 models, random weights)."""

import ase.build
import numpy as np
import pytest

from helpers import predict, rotated, rotation

ATOL = 1e-8  # float64


def _relative_anisotropy(eps):
    """Largest deviation from an isotropic tensor, relative to the trace/3."""
    iso = np.trace(eps) / 3
    return np.abs(eps - iso * np.eye(3)).max() / abs(iso)


def test_output_shape_and_symmetric(equivariant_model, scalar_model, small_frames):
    for model in (equivariant_model, scalar_model):
        eps = predict(model, small_frames)
        assert eps.shape == (len(small_frames), 3, 3)
        np.testing.assert_allclose(eps, eps.transpose(0, 2, 1), atol=1e-12)
        # the 2e part is not trivially zero: the model does predict anisotropy
        assert max(_relative_anisotropy(e) for e in eps) > 1e-2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_equivariance(equivariant_model, small_frames, seed):
    rot = rotation(seed)
    eps = predict(equivariant_model, small_frames)
    eps_rot = predict(equivariant_model, [rotated(f, rot) for f in small_frames])
    np.testing.assert_allclose(eps_rot, rot @ eps @ rot.T, atol=ATOL, rtol=0)


def test_scalar_model_is_not_rotation_equivariant(scalar_model, small_frames):
    rot = rotation(0)
    eps = predict(scalar_model, small_frames)
    eps_rot = predict(scalar_model, [rotated(f, rot) for f in small_frames])
    # its output is rotation *invariant* instead: the same six numbers for the rotated crystal
    np.testing.assert_allclose(eps_rot, eps, atol=ATOL, rtol=0)
    assert np.abs(eps_rot - rot @ eps @ rot.T).max() > 1e-3


def test_inversion_translation_permutation_invariance(equivariant_model, small_frames):
    eps = predict(equivariant_model, small_frames)
    inverted, translated, permuted = [], [], []
    rng = np.random.default_rng(0)
    for f in small_frames:
        g = f.copy()
        g.positions = -f.positions
        g.set_cell(-f.cell.array, scale_atoms=False)
        inverted.append(g)
        g = f.copy()
        g.positions = f.positions + np.array([0.37, -1.21, 2.5])
        translated.append(g)
        permuted.append(f[rng.permutation(len(f))])
    for variant in (inverted, translated, permuted):
        np.testing.assert_allclose(predict(equivariant_model, variant), eps, atol=ATOL, rtol=0)


def test_supercell_invariance(equivariant_model, small_frames):
    frames = small_frames[:2]
    eps = predict(equivariant_model, frames)
    supercells = [f.repeat((2, 1, 3)) for f in frames]
    np.testing.assert_allclose(predict(equivariant_model, supercells), eps, atol=ATOL, rtol=0)


def test_batched_equals_single(equivariant_model, small_frames):
    batched = predict(equivariant_model, small_frames)
    single = np.stack([predict(equivariant_model, [f])[0] for f in small_frames])
    np.testing.assert_allclose(batched, single, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["rocksalt", "diamond", "rocksalt_conventional"])
def test_cubic_cells_are_exactly_isotropic(equivariant_model, scalar_model, symmetric_cells, name):
    atoms = symmetric_cells[name]
    eps = predict(equivariant_model, [atoms])[0]
    assert _relative_anisotropy(eps) < 1e-10
    # the 6x0e ablation violates Neumann's principle
    assert _relative_anisotropy(predict(scalar_model, [atoms])[0]) > 1e-3


def test_cubic_isotropy_survives_rotation(equivariant_model, symmetric_cells):
    atoms = rotated(symmetric_cells["rocksalt"], rotation(3))
    assert _relative_anisotropy(predict(equivariant_model, [atoms])[0]) < 1e-10


@pytest.mark.parametrize("name", ["wurtzite", "hcp"])
def test_hexagonal_cell_is_uniaxial_along_c(
    equivariant_model, scalar_model, symmetric_cells, build_model, name
):
    if name == "hcp":
        from aniso_nequip.model import AnisoNetModel

        atoms = ase.build.bulk("Mg", "hcp", a=3.21, c=5.21)
        model = build_model(AnisoNetModel, type_names=["Mg"])
    else:
        atoms, model = symmetric_cells[name], equivariant_model
    c_axis = atoms.cell.array[2] / np.linalg.norm(atoms.cell.array[2])
    eps = predict(model, [atoms])[0]
    values, vectors = np.linalg.eigh(eps)
    # two equal eigenvalues, the third (distinct) one has its axis along c
    gaps = np.diff(values)
    assert min(gaps) < 1e-10 * abs(values).max()
    assert max(gaps) > 1e-6 * abs(values).max()
    unique = vectors[:, 0] if gaps[0] > gaps[1] else vectors[:, 2]
    assert abs(abs(unique @ c_axis) - 1) < 1e-10
    if name == "wurtzite":
        scalar_eps = predict(scalar_model, [atoms])[0]
        # the 6x0e model breaks the hexagonal symmetry: eps_xx != eps_yy or off-diagonals
        violation = max(
            abs(scalar_eps[0, 0] - scalar_eps[1, 1]),
            abs(scalar_eps[0, 1]),
            abs(scalar_eps[0, 2]),
            abs(scalar_eps[1, 2]),
        )
        assert violation > 1e-3
