"""nequip's own model tests (``BasicModelTestsMixin``) for every builder: construction, forward
on molecules and a bulk crystal, periodic images, batched vs single frames and O(3) equivariance
of every Cartesian output, in float32 and float64. Our physics tests (point-group forms, sum rule,
supercells, ...) are in test_model_symmetry.py, test_static.py and test_foundation.py. The mixin's
fixtures come from nequip's conftest, which tests/conftest.py executes."""

import pytest
from nequip.utils.unittests.model_tests_basic import BasicModelTestsMixin

# the mixin's data: molecules of H, C, O and bulk C (diamond) and Cu (as type 0)
TINY = dict(
    seed=1,
    type_names=["H", "C", "O"],
    avg_num_neighbors=10.0,
    l_max=2,
    num_layers=2,
    num_features=4,
    num_basis=4,
    isotropic_shift=4.0,
    isotropic_scale=2.0,
    anisotropic_scale=1.0,
)


class _DielectricModelTests(BasicModelTestsMixin):
    @pytest.fixture
    def strict_locality(self):
        return False


class TestAnisoNet(_DielectricModelTests):
    @pytest.fixture(scope="class")
    @classmethod
    def config(cls):
        return {"_target_": "aniso_nequip.model.AnisoNetModel", "r_max": 4.0, **TINY}


@pytest.mark.slow  # the quick subset runs the mixin on AnisoNet and the 6x0e ablation
class TestAnisoNetLogReadout(_DielectricModelTests):
    """``readout: log``; ``local_field`` needs periodic cells, which the mixin's molecules lack
    (its tests are in test_local_field.py)."""

    @pytest.fixture(scope="class")
    @classmethod
    def config(cls):
        return {
            "_target_": "aniso_nequip.model.AnisoNetModel",
            "r_max": 4.0,
            "readout": "log",
            **TINY,
        }


class TestScalarAnisoNet(_DielectricModelTests):
    """The ``6x0e`` ablation is not equivariant by design (test_model_symmetry.py shows it)."""

    @pytest.fixture(scope="class")
    @classmethod
    def config(cls):
        return {"_target_": "aniso_nequip.model.ScalarAnisoNetModel", "r_max": 4.0, **TINY}

    def test_equivariance(self):
        pytest.skip("the 6x0e ablation is not rotation-equivariant by design")


@pytest.mark.slow  # the quick subset runs the mixin on AnisoNet and the 6x0e ablation
class TestAnisoNetStatic(_DielectricModelTests):
    @pytest.fixture(scope="class")
    @classmethod
    def config(cls):
        return {"_target_": "aniso_nequip.model.AnisoNetStaticModel", "r_max": 4.0, **TINY}


@pytest.mark.slow  # SevenNet-0 as a backbone
class TestFoundationAnisoNet(_DielectricModelTests):
    @pytest.fixture(scope="class")
    @classmethod
    def config(cls):
        pytest.importorskip("sevenn")
        args = {**TINY, "num_layers": 1, "backbone_layers": 1}
        return {"_target_": "aniso_nequip.model.FoundationAnisoNetModel", "r_max": 5.0, **args}
