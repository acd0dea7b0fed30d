"""The package is a nequip extension: its fields are registered whenever nequip is imported."""

import subprocess
import sys

import pytest


def test_entry_point_registers_fields_and_compile_targets_without_explicit_import():
    code = (
        "import sys, nequip.data\n"
        "from nequip.scripts._compile_utils import COMPILE_TARGET_DICT as targets\n"
        "assert {'batch_dielectric', 'batch_dielectric_static', 'ase_dielectric',\n"
        "        'ase_dielectric_static'} <= set(targets)\n"
        "from nequip.data import _key_registry as r\n"
        "assert 'aniso_nequip' in sys.modules\n"
        "assert 'dielectric_ionic_tensor' in r._GRAPH_FIELDS\n"
        "assert r._CARTESIAN_TENSOR_FIELDS['dielectric_ionic_tensor'] == 'ij=ji'\n"
        "assert 'dielectric_tensor_irreps' in r._GRAPH_FIELDS\n"
        # nequip's own keys are reused, not redefined
        "assert r._CARTESIAN_TENSOR_FIELDS['dielectric_tensor'] == 'ij=ji'\n"
        "assert 'born_effective_charges' in r._NODE_FIELDS\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_field_names_reuse_nequip_keys():
    from nequip.data import AtomicDataDict

    from aniso_nequip import _keys

    assert AtomicDataDict.DIELECTRIC_KEY == "dielectric_tensor"
    assert AtomicDataDict.BORN_CHARGE_KEY == "born_effective_charges"
    assert _keys.DIELECTRIC_IONIC_KEY == "dielectric_ionic_tensor"


def test_builder_errors_and_warnings(build_model):
    from aniso_nequip.model import AnisoNetModel

    with pytest.raises(ValueError, match="radial_basis"):
        build_model(AnisoNetModel, radial_basis="chebyshev")
    with pytest.raises(ValueError, match="num_layers"):
        build_model(AnisoNetModel, num_layers=0)
    with pytest.warns(UserWarning, match="no 2e feature"):
        build_model(AnisoNetModel, l_max=1, num_layers=1)


def test_bessel_basis_and_parameter_count(build_model):
    from aniso_nequip.model import AnisoNetModel

    gaussian = build_model(AnisoNetModel)
    bessel = build_model(AnisoNetModel, radial_basis="bessel")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(gaussian) == count(bessel) > 0
