"""`nequip-compile --mode aotinductor` with aniso-nequip's targets: compiled models predict what
the eager ones do, through load_model / predict and the ASE calculator."""

import numpy as np
import pytest
import torch

import aniso_nequip
from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.inference import CompiledModel, load_model, predict
from aniso_nequip.model import AnisoNetModel, AnisoNetStaticModel

pytestmark = pytest.mark.slow

TINY = dict(
    model_dtype="float32", l_max=2, num_layers=1, num_features=4, num_basis=4, anisotropic_scale=1.0
)


@pytest.fixture(scope="module")
def crystals(small_frames, symmetric_cells):
    """Low-symmetry crystals of the bundled test split and symmetric cells: 1 to 12 atoms."""
    return small_frames + list(symmetric_cells.values())


@pytest.fixture(scope="module")
def models(build_model):
    """The paper's model, and the static one with the log-space electronic readout (one compiled
    file for both: every compile costs seconds)."""
    return {
        "anisonet": build_model(AnisoNetModel, **TINY),
        "static": build_model(
            AnisoNetStaticModel,
            readout="log",
            isotropic_shift=5.0,
            ionic_mean=9.0,
            born_scale=1.3,
            **TINY,
        ),
    }


def _compile(model, data, path, target) -> None:
    """``nequip-compile``'s own ``main`` with ``target``, fed ``model`` (in place of a
    checkpoint) and the graph ``data``, as a checkpoint's data gives it."""
    import nequip.scripts.compile as nequip_compile

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nequip_compile, "load_saved_model", lambda *_, **__: (model, data))
        nequip_compile.main(
            [
                "unused.ckpt",
                str(path),
                "--mode",
                "aotinductor",
                "--device",
                "cpu",
                "--target",
                target,
            ]
        )


@pytest.fixture(scope="module")
def compiled(models, crystals, tmp_path_factory):
    """Our targets, compiled from the untrained models and one structure."""
    tmp = tmp_path_factory.mktemp("compiled")
    files = {}
    for name, model, target in (
        ("anisonet", models["anisonet"], "batch_dielectric"),
        ("anisonet_ase", models["anisonet"], "ase_dielectric"),
        ("static", models["static"], "batch_dielectric_static"),
    ):
        data = atoms_to_graphs(crystals[:1], model.type_names, float(model.metadata["r_max"]))
        files[name] = tmp / f"{name}.nequip.pt2"
        _compile(model, data, files[name], target)
    return files


def test_compiled_models_predict_what_eager_ones_do(models, compiled, crystals):
    """Batches of 1 to 8 structures of different sizes through one compiled file."""
    model = load_model(compiled["anisonet"])
    assert isinstance(model, CompiledModel) and model.type_names == models["anisonet"].type_names
    eager = predict(crystals, models["anisonet"], device="cpu")
    for batch_size in (1, 3, 8):
        np.testing.assert_allclose(
            predict(crystals, model, batch_size=batch_size, device="cpu"), eager, atol=1e-5
        )
    static = predict(crystals, compiled["static"], batch_size=4, device="cpu", field="all")
    expected = predict(crystals, models["static"], device="cpu", field="all")
    assert (
        set(static)
        == set(expected)
        == {"dielectric_tensor", "dielectric_ionic_tensor", "born_effective_charges"}
    )
    for field in ("dielectric_tensor", "dielectric_ionic_tensor"):
        np.testing.assert_allclose(static[field], expected[field], atol=1e-5)
    for atoms, z, z_eager in zip(
        crystals, static["born_effective_charges"], expected["born_effective_charges"]
    ):
        assert z.shape == (len(atoms), 3, 3)
        np.testing.assert_allclose(z, z_eager, atol=1e-5)


def test_compiled_log_readout(models, compiled, crystals):
    """``readout: log`` (``torch.linalg.matrix_exp``) exports: the static model's electronic
    tensor, ``I + expm(L)``, keeps every eigenvalue above 1."""
    eager = predict(crystals, models["static"], device="cpu", field="all")["dielectric_tensor"]
    compiled_eps = predict(
        crystals, load_model(compiled["static"]), batch_size=3, device="cpu", field="all"
    )["dielectric_tensor"]
    np.testing.assert_allclose(compiled_eps, eager, atol=1e-5 * np.abs(eager).max())
    assert np.linalg.eigvalsh(compiled_eps).min() > 1.0


def test_single_structure_target(models, compiled, crystals):
    model = load_model(compiled["anisonet_ase"])
    eager = predict(crystals, models["anisonet"], device="cpu")
    np.testing.assert_allclose(predict(crystals, model, batch_size=1), eager, atol=1e-5)
    with pytest.raises(ValueError, match="compiled for one structure at a time"):
        predict(crystals, model, batch_size=2)


def test_calculator_on_compiled_models(models, compiled, crystals):
    eager = predict(crystals, models["anisonet"], device="cpu")
    calculators = [
        aniso_nequip.DielectricCalculator.from_compiled_model(
            compiled["anisonet_ase"], chemical_species_to_atom_type_map=True
        ),
        aniso_nequip.DielectricCalculator(compiled["anisonet"]),
    ]
    for calc in calculators:
        assert calc.implemented_properties == ["dielectric_tensor"]
        for atoms, eps in zip(crystals[:3], eager):
            atoms = atoms.copy()
            atoms.calc = calc
            np.testing.assert_allclose(
                atoms.calc.get_property("dielectric_tensor", atoms), eps, atol=1e-5
            )
    static = predict(crystals[:1], models["static"], device="cpu", field="all")
    atoms = crystals[0].copy()
    atoms.calc = aniso_nequip.DielectricCalculator(compiled["static"])
    assert atoms.calc.implemented_properties == ["dielectric_tensor", "born_effective_charges"]
    born = atoms.calc.get_property("born_effective_charges", atoms)
    assert born.shape == (len(atoms), 3, 3)
    np.testing.assert_allclose(born, static["born_effective_charges"][0], atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning:sevenn")
def test_compiled_foundation_model_skips_the_inverted_pass_of_centrosymmetric_crystals(
    crystals, type_names, tmp_path
):
    """A foundation model compiled for batches takes ``inversion_partner``: batches mixing
    crystals with and without an inversion centre (rocksalt, diamond against wurtzite and the
    low-symmetry ones) predict what the eager model does without the shortcut, within 1e-5
    relative, and so do graphs without the field (every crystal then runs both passes)."""
    from aniso_nequip import _keys
    from aniso_nequip.model import FoundationAnisoNetModel
    from helpers import build_tiny

    model = build_tiny(
        FoundationAnisoNetModel,
        type_names=type_names,
        r_max=5.0,
        backbone_layers=1,
        num_layers=1,
        model_dtype="float32",
    )
    graphs = atoms_to_graphs(crystals, type_names, 5.0, with_references=False)
    centrosymmetric = [
        bool((atoms_to_graphs([a], type_names, 5.0)[_keys.INVERSION_PARTNER_KEY] >= 0).all())
        for a in crystals
    ]
    assert 0 < sum(centrosymmetric) < len(crystals)
    plain = dict(graphs)
    plain.pop(_keys.INVERSION_PARTNER_KEY)
    with torch.no_grad():
        eager = model(plain)["dielectric_tensor"].double().numpy()
    path = tmp_path / "foundation.nequip.pt2"
    _compile(model, atoms_to_graphs(crystals[:1], type_names, 5.0), path, "batch_dielectric")
    compiled = load_model(path)
    assert _keys.INVERSION_PARTNER_KEY in compiled.model.input_keys
    tol = dict(rtol=0, atol=1e-5 * np.abs(eager).max())
    with torch.no_grad():
        for data in (graphs, plain):
            np.testing.assert_allclose(compiled(dict(data))["dielectric_tensor"], eager, **tol)
    np.testing.assert_allclose(predict(crystals, compiled, batch_size=3), eager, **tol)
