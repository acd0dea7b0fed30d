"""The inference package's shared pieces: the one ensemble implementation, the failed-prediction
filter and the one reference-tensor reader (aniso_nequip.data.validation)."""

import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

import aniso_nequip
from aniso_nequip import prediction
from aniso_nequip.data.validation import reference_problem, reference_tensor
from aniso_nequip.domain import resolve_reference
from aniso_nequip.inference import (
    Ensemble,
    as_ensemble,
    ensemble_mean,
    ensemble_spread,
    predict,
    predict_members,
    split_failed,
)
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.pretrained import model_paths
from aniso_nequip.saved_models import model_config, training_info
from helpers import build_tiny
from helpers import predict as forward


@pytest.fixture(scope="module")
def pair(type_names):
    """Two tiny models of different weights, whose tensors are those of materials (eigenvalues
    about 4 to 8: no failed prediction)."""
    return [
        build_tiny(AnisoNetModel, type_names=type_names, seed=seed, isotropic_shift=5.0)
        for seed in (1, 2)
    ]


def test_ensemble_mean_and_spread_are_numpys(pair, small_frames):
    each = np.stack([forward(m, small_frames).reshape(-1, 3, 3) for m in pair])
    assert each.shape == (2, len(small_frames), 3, 3) and not np.allclose(each[0], each[1])
    members = predict_members(small_frames, pair, batch_size=3, device="cpu")
    np.testing.assert_allclose(members, each, rtol=1e-10, atol=1e-12)
    mean = predict(small_frames, pair, batch_size=3, device="cpu")
    np.testing.assert_allclose(mean, np.mean(each, axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ensemble_mean(members), np.mean(each, axis=0), rtol=1e-12)
    np.testing.assert_allclose(ensemble_spread(members), np.std(each, axis=0), rtol=1e-10)
    # the calculator runs the same Ensemble module: its forward pass is the mean
    model = as_ensemble(pair)
    assert isinstance(model, Ensemble) and model.type_names == list(pair[0].type_names)
    atoms = small_frames[0].copy()
    atoms.calc = aniso_nequip.DielectricCalculator(pair)
    eps = atoms.calc.get_property("dielectric_tensor", atoms)
    np.testing.assert_allclose(eps, mean[0], rtol=1e-8, atol=1e-10)
    # one model is an ensemble of one: no spread
    (alone,) = predict_members(small_frames, pair[0], device="cpu")
    np.testing.assert_allclose(alone, each[0], rtol=1e-10, atol=1e-12)


def test_ensemble_members_must_share_elements_and_cutoff(pair):
    other = build_tiny(AnisoNetModel, type_names=["Na", "Cl"])
    with pytest.raises(ValueError, match="share their elements and r_max"):
        Ensemble([pair[0], other])
    with pytest.raises(ValueError, match="an empty ensemble"):
        as_ensemble([])


def test_split_failed_names_each_failed_prediction():
    tensors = [2 * np.eye(3), np.diag([-1.0, 2.0, 3.0]), np.full((3, 3), np.nan), 3 * np.eye(3)]
    kept, failed = split_failed(tensors)
    assert kept == [0, 3] and [i for i, _ in failed] == [1, 2]
    assert failed[0][1].startswith("failed prediction: eigenvalues -1 2 3 outside [0.5, 100]")
    assert failed[1][1] == "failed prediction: non-finite values"
    assert split_failed(np.zeros((0, 3, 3))) == ([], [])


def test_a_failed_ensemble_prediction_leaves_with_its_domain_score(
    pair, small_frames, tmp_path, monkeypatch
):
    """predict_files drops the crystal whose mean prediction failed (one member said -300) from
    the tensors, the sources and the domain scores alike; the others keep theirs."""
    files = []
    for i, atoms in enumerate(small_frames[:3]):
        files.append(str(tmp_path / f"crystal{i}.extxyz"))
        ase.io.write(files[-1], atoms)
    reference = resolve_reference(pair, small_frames)
    whole = prediction.predict_files(files, pair, domain_reference=reference)
    assert whole.failed == [] and len(whole.domain) == 3 and whole.domain.available
    real = prediction.predict_members

    def one_member_fails(*args, **kwargs):
        members = real(*args, **kwargs)
        members[0, 1] = np.diag([-300.0, 1.0, 1.0])
        return members

    monkeypatch.setattr(prediction, "predict_members", one_member_fails)
    result = prediction.predict_files(files, pair, domain_reference=reference)
    ((source, reason),) = result.failed
    assert source == files[1] and reason.startswith("failed prediction: eigenvalues")
    assert result.sources == [files[0], files[2]] and result.members.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(result.members, whole.members[:, [0, 2]])
    np.testing.assert_allclose(result.domain.score, whole.domain.score[[0, 2]])
    assert result.domain.nearest_id == [whole.domain.nearest_id[i] for i in (0, 2)]


def test_reference_tensor_reads_usable_references_only():
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64)
    assert reference_tensor(atoms) is None and reference_problem(atoms) is None
    atoms.info["dielectric_tensor"] = (2.0 * np.eye(3)).reshape(-1).tolist()
    eps = reference_tensor(atoms)
    assert eps.dtype == np.float64 and eps.shape == (3, 3)
    np.testing.assert_array_equal(eps, 2.0 * np.eye(3))
    # a calculator result wins over info
    atoms.calc = SinglePointCalculator(atoms, dielectric_tensor=3.0 * np.eye(3))
    np.testing.assert_array_equal(reference_tensor(atoms), 3.0 * np.eye(3))
    atoms.calc = None
    atoms.info["dielectric_tensor"] = [[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]
    assert reference_tensor(atoms) is None
    assert "`dielectric_tensor` is not symmetric" in reference_problem(atoms)
    atoms.arrays["born_effective_charges"] = np.arange(18.0).reshape(2, 9)
    assert reference_tensor(atoms, "born_effective_charges").shape == (2, 3, 3)


def test_saved_model_metadata_of_a_package():
    """The package's model/config.yaml: the run's info_dict and, in it, the model's builder."""
    path = model_paths()[0]
    info = training_info(path)
    assert model_config(path) == info["training_module"]["model"]
    assert model_config(path)["_target_"].startswith("aniso_nequip.model.")
    # the run's data: the bundled split, read by the project's datamodule
    assert info["data"]["_target_"] == "aniso_nequip.data.DielectricDataModule"
    assert info["data"]["train_file_path"].endswith("mp_subset_train.extxyz.gz")
