"""The optical description (aniso_nequip.optics) of crystals built here from lattice constants and
Wyckoff positions, with textbook refractive indices (sodium D line, Handbook of Optics / Deer,
Howie & Zussman) as Neumann-form tensors ``diag(n^2)`` in the crystals' own frames."""

import numpy as np
import pytest
from ase.geometry import get_duplicate_atoms
from ase.spacegroup import crystal

from aniso_nequip.optics import (
    CSV_COLUMNS,
    crystal_symmetry,
    csv_fields,
    describe,
    lattice_direction,
    principal_indices,
)
from helpers import rotation


def calcite():
    """CaCO3, R-3c, hexagonal setting (Maslen et al. 1993)."""
    return crystal(
        ["Ca", "C", "O"],
        [(0, 0, 0), (0, 0, 0.25), (0.2578, 0, 0.25)],
        spacegroup=167,
        cellpar=[4.99, 4.99, 17.06, 90, 90, 120],
    )


def rutile():
    """TiO2, P4_2/mnm."""
    return crystal(
        ["Ti", "O"],
        [(0, 0, 0), (0.3049, 0.3049, 0)],
        spacegroup=136,
        cellpar=[4.594, 4.594, 2.959, 90, 90, 90],
    )


def quartz():
    """alpha-SiO2, P3_221."""
    return crystal(
        ["Si", "O"],
        [(0.4697, 0, 2 / 3), (0.4135, 0.2669, 0.1191 + 2 / 3)],
        spacegroup=154,
        cellpar=[4.913, 4.913, 5.405, 90, 90, 120],
    )


def aragonite():
    """CaCO3, Pnma (a = c, b = a, c = b of the usual Pmcn setting; Antao & Hassan 2009)."""
    basis = [
        (0.75985, 0.25, 0.41502),
        (-0.0823, 0.25, 0.76211),
        (-0.0961, 0.25, 0.9222),
        (-0.0862, 0.4736, 0.68065),
    ]
    return crystal(
        ["Ca", "C", "O", "O"], basis, spacegroup=62, cellpar=[5.7407, 4.9611, 7.9672, 90, 90, 90]
    )


def eps(*n):
    return np.diag(np.square(n))


def rhombohedral(hexagonal):
    """The primitive rhombohedral cell of an R-centred hexagonal cell (obverse), same frame."""
    a, b, c = hexagonal.cell.array
    atoms = hexagonal.copy()
    atoms.set_cell([(2 * a + b + c) / 3, (-a + b + c) / 3, (-a - 2 * b + c) / 3], scale_atoms=False)
    atoms.wrap()
    get_duplicate_atoms(atoms, cutoff=0.1, delete=True)
    return atoms


def test_calcite_is_negative_uniaxial_along_c():
    d = describe(eps(1.658, 1.658, 1.486), calcite())
    assert (d.optical_class, d.optical_sign, d.point_group) == ("uniaxial", "negative", "-3m")
    assert d.optic_axis == (0, 0, 1)
    assert (d.n_o, d.n_e) == pytest.approx((1.658, 1.486))
    assert (d.eps_o, d.eps_e) == pytest.approx((1.658**2, 1.486**2))
    assert d.birefringence == pytest.approx(-0.172)
    assert d.refractive_indices == pytest.approx([1.486, 1.658, 1.658])
    assert d.summary().startswith("uniaxial negative (-3m), optic axis [0 0 1]: n_o 1.6580")


def test_rhombohedral_cell_optic_axis_is_111_and_values_unchanged():
    """The printed tensor of a rhombohedral cell is not diagonal in its cell axes, but its optic
    axis is a + b + c = the hexagonal c."""
    hexagonal = calcite()
    primitive = rhombohedral(hexagonal)
    assert len(primitive) == len(hexagonal) // 3
    d = describe(eps(1.658, 1.658, 1.486), primitive)
    assert d.optic_axis == (1, 1, 1)
    assert d.optical_sign == "negative"
    assert (d.n_o, d.n_e) == pytest.approx((1.658, 1.486))


@pytest.mark.parametrize(
    "build, n_o, n_e, point_group",
    [(rutile, 2.613, 2.909, "4/mmm"), (quartz, 1.5443, 1.5534, "32")],
)
def test_rutile_and_quartz_are_positive_uniaxial(build, n_o, n_e, point_group):
    d = describe(eps(n_o, n_o, n_e), build())
    assert (d.optical_class, d.optical_sign, d.point_group) == ("uniaxial", "positive", point_group)
    assert d.optic_axis == (0, 0, 1)
    assert d.birefringence == pytest.approx(n_e - n_o)
    assert principal_indices(d) == pytest.approx([n_o, n_e])


def test_aragonite_is_biaxial_negative_with_its_textbook_axes_and_2v():
    """X (n_alpha) normal to the CO3 planes (Pnma a), Y along Pnma b, Z along Pnma c; 2V 18 deg
    (from these rounded indices 19.3), negative: X bisects the acute angle."""
    n_alpha, n_beta, n_gamma = 1.530, 1.680, 1.685
    d = describe(eps(n_alpha, n_beta, n_gamma), aragonite())
    assert (d.optical_class, d.point_group, d.optical_sign) == ("biaxial", "mmm", "negative")
    assert d.refractive_indices == pytest.approx([n_alpha, n_beta, n_gamma])
    assert d.principal_axes_uvw == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    cos2 = n_gamma**2 * (n_beta**2 - n_alpha**2) / (n_beta**2 * (n_gamma**2 - n_alpha**2))
    vx = np.degrees(np.arccos(np.sqrt(cos2)))  # the textbook form: V about X
    assert d.two_v == pytest.approx(2 * vx, abs=1e-6) and 19.0 < d.two_v < 19.6
    assert d.two_vz == pytest.approx(180 - d.two_v)
    assert d.birefringence == pytest.approx(n_gamma - n_alpha)
    assert d.optic_axis is None and d.n_o is None


def test_the_class_comes_from_the_structure_not_from_coinciding_eigenvalues():
    """An isotropic-looking tensor on rutile stays uniaxial (sign undetermined); a cubic
    crystal's float-noise anisotropy is averaged away by its point group."""
    d = describe(eps(2.0, 2.0, 2.0), rutile())
    assert (d.optical_class, d.optical_sign, d.birefringence) == ("uniaxial", None, 0.0)
    rocksalt = crystal(
        ["Na", "Cl"], [(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225, cellpar=[5.64] * 3 + [90] * 3
    )
    noisy = np.eye(3) * 2.3 + 1e-7 * np.random.default_rng(0).normal(size=(3, 3))
    d = describe(noisy, rocksalt)
    assert (d.optical_class, d.point_group, d.optical_sign) == ("isotropic", "m-3m", None)
    assert d.refractive_indices == pytest.approx([np.sqrt(2.3)] * 3, abs=1e-7)
    assert 0 < d.neumann_deviation < 1e-6
    np.testing.assert_allclose(d.tensor, np.eye(3) * np.trace(noisy) / 3, atol=1e-15)


@pytest.mark.parametrize("build", [calcite, aragonite, quartz])
def test_description_of_a_rotated_crystal_is_the_same(build):
    atoms = build()
    n = (1.530, 1.680, 1.685) if build is aragonite else (1.6, 1.6, 1.5)
    tensor = eps(*n)
    rot = rotation(3)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    turned.positions = atoms.positions @ rot.T
    d, t = describe(tensor, atoms), describe(rot @ tensor @ rot.T, turned)
    assert csv_fields(d) == csv_fields(t)  # [uvw], class, sign and values identical
    np.testing.assert_allclose(t.principal_values, d.principal_values, atol=1e-12)
    np.testing.assert_allclose(t.tensor, rot @ d.tensor @ rot.T, atol=1e-12)


def test_csv_fields_and_lattice_directions():
    fields = csv_fields(describe(eps(2.613, 2.613, 2.909), rutile()))
    assert list(fields) == list(CSV_COLUMNS)
    assert fields["optic_axis"] == "[0 0 1]" and fields["optical_sign"] == "positive"
    assert fields["two_v_deg"] == "" and fields["axis_alpha"] == ""
    hexagonal = quartz().cell.array
    assert lattice_direction(hexagonal[0] - hexagonal[1], hexagonal) == (1, -1, 0)
    assert lattice_direction(-hexagonal[2], hexagonal) == (0, 0, 1)
    assert lattice_direction([1.0, 0.37, 0.0], np.eye(3)) == (1.0, 0.37, 0.0)


def test_symmetry_of_a_supercell_that_does_not_carry_the_threefold_axis():
    """An orthohexagonal cell of quartz (a, a + 2b, c) carries no 3-fold axis as an integer
    matrix; its point group and optic axis come from the standardized cell."""
    atoms = quartz()
    a, b, c = atoms.cell.array
    ortho = atoms.repeat((1, 2, 1))
    ortho.set_cell([a, a + 2 * b, c], scale_atoms=False)
    ortho.wrap()
    get_duplicate_atoms(ortho, cutoff=0.1, delete=True)
    sym = crystal_symmetry(ortho)
    assert (sym.point_group, sym.unique_axis, len(ortho)) == ("32", (0, 0, 1), 18)
    d = describe(eps(1.5443, 1.5443, 1.5534), sym)
    assert (d.optical_sign, d.n_e) == ("positive", pytest.approx(1.5534))
