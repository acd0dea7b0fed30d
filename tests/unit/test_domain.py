"""The applicability domain score (aniso_nequip.domain) of the ready model and of user models, in
every output: the API, predict's CSV, nequip-evaluate, the calculator and screen."""

import csv
import json

import ase.build
import ase.io
import numpy as np
import pytest
import torch

import aniso_nequip
from aniso_nequip.domain import (
    COLUMNS,
    FLAG_THRESHOLD,
    DomainError,
    DomainReference,
    capture_features,
    resolve_reference,
    scores_for,
    shipped_reference_path,
)
from aniso_nequip.evaluation import evaluate
from aniso_nequip.prediction import predict_and_write
from aniso_nequip.screen.layout import Settings, sort_key
from aniso_nequip.screen.runner import screen
from helpers import bundled, rotated, rotation

NEON = ase.build.bulk("Ne", "fcc", a=4.46)  # real eps_inf ~1.2; the ready model says ~5.9


@pytest.fixture(scope="module")
def train3():
    return bundled("mp_subset_train", ":3")


@pytest.fixture(scope="module")
def shipped():
    return DomainReference.load(shipped_reference_path())


@pytest.mark.slow
def test_shipped_reference_covers_the_training_split(shipped):
    train = bundled("mp_subset_train")
    assert len(shipped.ids) == len(train) == shipped.features.shape[0]
    assert shipped.ids[:2] == [a.info["entry_id"] for a in train[:2]]
    assert shipped.threshold == FLAG_THRESHOLD and "validation" in shipped.calibration
    assert shipped.scale > 0


def test_training_crystal_scores_zero_and_is_its_own_nearest(train3):
    eps, domain = aniso_nequip.predict(train3, device="cpu", domain=True)
    assert eps.shape == (3, 3, 3) and len(domain) == 3
    np.testing.assert_allclose(domain.score, 0.0, atol=1e-3)
    assert domain.nearest_id == [a.info["entry_id"] for a in train3]
    assert domain.same_structure == [True, True, True]
    assert not domain.flagged.any()


def test_score_is_rotation_and_supercell_invariant(train3):
    crystal = bundled("mp_subset_test", 0)
    moved = rotated(crystal.repeat((2, 1, 1)), rotation(3))
    moved.positions += 0.37
    training_supercell = rotated(train3[1].repeat((1, 2, 1)), rotation(5))
    _, domain = aniso_nequip.predict([crystal, moved, training_supercell], domain=True)
    assert domain.score[0] > 0.05  # a test crystal is not a training crystal
    np.testing.assert_allclose(domain.score[1], domain.score[0], rtol=1e-4)
    assert domain.nearest_id[1] == domain.nearest_id[0]
    assert domain.score[2] < 1e-3 and domain.same_structure[2]  # same structure, as a supercell


def test_solid_neon_is_flagged(train3):
    _, domain = aniso_nequip.predict([NEON, train3[0]], domain=True)
    assert domain.score[0] > FLAG_THRESHOLD > domain.score[1]
    assert domain.flagged.tolist() == [True, False]
    assert not domain.same_structure[0]


def test_api_without_domain_returns_the_tensors_only(train3):
    eps = aniso_nequip.predict(train3[:1])
    assert isinstance(eps, np.ndarray) and eps.shape == (1, 3, 3)


def test_predict_csv_and_report_carry_the_score(tmp_path, capsys, train3):
    ase.io.write(tmp_path / "ne.cif", NEON)
    ase.io.write(tmp_path / "train0.cif", train3[0])
    predict_and_write(
        [str(tmp_path / "ne.cif"), str(tmp_path / "train0.cif")], out=tmp_path / "out"
    )
    printed = capsys.readouterr().out
    assert "OUT OF DOMAIN" in printed and "same structure" in printed
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(COLUMNS) <= set(rows[0])
    by_formula = {r["formula"]: r for r in rows}
    assert by_formula["Ne"]["out_of_domain"] == "True"
    assert float(by_formula["Ne"]["domain_score"]) > FLAG_THRESHOLD
    train_row = by_formula[rows[1]["formula"]]
    assert float(train_row["domain_score"]) < 1e-3
    assert train_row["nearest_training_id"] == train3[0].info["entry_id"]
    assert train_row["nearest_training_same_structure"] == "True"


def test_evaluate_writes_scores_and_their_spearman(tmp_path):
    from aniso_nequip.pretrained import model_paths

    data = tmp_path / "few.extxyz"
    ase.io.write(data, bundled("mp_subset_test", ":6"))
    metrics = evaluate(model_paths()[0], [str(data)], tmp_path / "eval", quiet=True)
    domain = metrics["domain"]
    assert domain["available"] and domain["threshold"] == FLAG_THRESHOLD
    assert -1 <= domain["spearman_eps_poly"] <= 1 and -1 <= domain["spearman_a_r"] <= 1
    with open(tmp_path / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(float(r["domain_score"]) > 0 for r in rows)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["domain"] == domain
    assert "Spearman of the score" in (tmp_path / "eval" / "metrics.md").read_text()


def test_calculator_carries_the_score():
    atoms = NEON.copy()
    atoms.calc = aniso_nequip.DielectricCalculator()
    atoms.get_properties(["dielectric_tensor"])  # ASE accepts the results (known keys only)
    results = atoms.calc.domain
    assert results["domain_score"] > FLAG_THRESHOLD and results["out_of_domain"] is True
    assert results["nearest_training_formula"] and results["nearest_training_id"]


def test_user_model_needs_a_reference(equivariant_model, small_frames):
    eps, domain = aniso_nequip.predict(small_frames, equivariant_model, domain=True)
    assert not domain.available and "--domain-reference" in domain.reason
    assert np.isnan(domain.score).all() and not domain.flagged.any()
    assert domain.row(0) == dict.fromkeys(COLUMNS)
    # a reference built from its training structures (leave-one-out calibration)
    _, domain = aniso_nequip.predict(small_frames[:2], equivariant_model, domain=small_frames)
    assert domain.available
    np.testing.assert_allclose(domain.score, 0.0, atol=1e-6)
    assert domain.same_structure == [True, True]


def test_reference_round_trip_and_bad_files(tmp_path, equivariant_model, small_frames):
    reference = resolve_reference(equivariant_model, small_frames)
    assert "leave-one-out" in reference.calibration
    reference.save(tmp_path / "ref.npz")
    loaded = DomainReference.load(tmp_path / "ref.npz")
    np.testing.assert_allclose(loaded.features, reference.features, rtol=1e-6)
    assert loaded.ids == reference.ids and loaded.scale == pytest.approx(reference.scale)
    assert [len(a) for a in loaded.structures] == [len(a) for a in small_frames]
    (tmp_path / "bad.npz").write_text("not a reference")
    with pytest.raises(DomainError, match="bad.npz` is not a domain reference"):
        resolve_reference(equivariant_model, tmp_path / "bad.npz")
    with pytest.raises(DomainError, match="does not exist"):
        resolve_reference(equivariant_model, str(tmp_path / "missing.npz"))
    with pytest.raises(DomainError, match="another model"):
        aniso_nequip.predict(small_frames[:1], domain=loaded)  # the ready model: other features


def test_model_without_modules_gives_no_features(shipped, train3):
    with capture_features(torch.nn.Identity()) as features:  # as a compiled model
        assert features is None
    domain = scores_for(shipped, features, train3)
    assert not domain.available and "compiled" in domain.reason and len(domain) == 3


def test_screen_ranks_out_of_domain_crystals_after_the_others(tmp_path):
    ids = ("mf-test-0016", "mf-test-0086", "mf-test-0131")  # PbCl2, GaF3, VBr2 (out of domain)
    pool = [a for a in bundled("mp_subset_test") if a.info["entry_id"] in ids]
    ase.io.write(tmp_path / "pool.extxyz", pool)
    from aniso_nequip.pretrained import model_paths

    settings = Settings(
        models=model_paths(), structures=[str(tmp_path / "pool.extxyz")], dimensionality=False
    )
    summary = screen(tmp_path / "out", settings, device="cpu", progress=False).summary
    with open(tmp_path / "out" / "ranking.csv") as f:
        rows = list(csv.DictReader(f))
    flags = [r["out_of_domain"] == "True" for r in rows]
    assert flags == sorted(flags) and any(flags) and not all(flags)  # flagged ones last
    vbr2 = next(r for r in rows if r["formula"] == "VBr2")  # the largest a_r, ranked last
    assert vbr2["out_of_domain"] == "True" and vbr2["rank"] == str(len(rows))
    assert float(vbr2["a_r"]) > max(float(r["a_r"]) for r in rows if r is not vbr2)
    assert summary["out_of_domain"]["count"] == sum(flags)
    assert "## Applicability domain" in (tmp_path / "out" / "summary.md").read_text()
    assert sort_key(9.0, 0, False, True) > sort_key(1.0, 1, False, False)
