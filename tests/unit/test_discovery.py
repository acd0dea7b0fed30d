"""The discovery benchmark (benchmarks/discovery.py): grouped folds, its metrics, resuming."""

import json
import sys

import numpy as np
import pytest

from aniso_nequip.data.splits import chemical_system, grouped_folds
from aniso_nequip.metrics import discovery_metrics
from helpers import ROOT, bundled, run_command


def test_grouped_folds_keep_each_chemical_system_in_one_fold():
    frames = bundled("mp_subset_val") + bundled("mp_subset_test")
    systems = np.array([chemical_system(a) for a in frames])
    folds = grouped_folds(systems, 5, seed=0)
    assert folds.shape == (len(frames),) and set(folds.tolist()) == set(range(5))
    for system in set(systems.tolist()):
        assert len(set(folds[systems == system].tolist())) == 1, system
    sizes = np.bincount(folds)
    largest = max(np.unique(systems, return_counts=True)[1])
    assert sizes.sum() == len(frames) and sizes.max() - sizes.min() <= largest
    assert np.array_equal(folds, grouped_folds(systems, 5, seed=0))
    assert not np.array_equal(folds, grouped_folds(systems, 5, seed=1))


def test_grouped_folds_fill_the_smallest_fold_largest_group_first():
    folds = grouped_folds(list("aabcccd"), 2, seed=0)
    # c (3) -> fold 0, a (2) -> fold 1, then b and d to whichever has fewer
    assert folds[3] == folds[4] == folds[5] == 0 and folds[0] == folds[1] == 1
    assert sorted(np.bincount(folds).tolist()) == [3, 4]
    assert chemical_system(bundled("mp_subset_test", 0)) == "-".join(
        sorted(set(bundled("mp_subset_test", 0).get_chemical_symbols()))
    )
    with pytest.raises(ValueError, match="folds need 1 to 4"):
        grouped_folds(list("aabcccd"), 5)


def _uniaxial(a_r):
    """diag(2, 2, 2 a_r): eps_poly (4 + 2 a_r) / 3, anisotropy ratio a_r."""
    return np.stack([np.diag([2.0, 2.0, 2.0 * a]) for a in a_r])


def test_discovery_metrics_on_known_rankings():
    a_ref = 1 + np.arange(20) / 4  # 1, 1.25, ..., 5.75: 18 of them >= 1.5, the top 5% is the last
    a_pred = np.where(a_ref >= 1.5, a_ref + 0.5, a_ref)
    m = discovery_metrics(_uniaxial(a_ref), _uniaxial(a_pred))
    assert m["n"] == 20 and m["n_tail"] == 18
    assert m["spearman_a_r"] == pytest.approx(1.0) and m["top_recall"] == 1.0
    assert m["tail_a_r_mae"] == pytest.approx(0.5)
    assert m["eps_poly_mae"] == pytest.approx(2 / 3 * 0.5 * 18 / 20)

    swapped = a_ref.copy()
    swapped[[0, 19]] = swapped[[19, 0]]  # the most and least anisotropic swap places
    m = discovery_metrics(_uniaxial(a_ref), _uniaxial(swapped))
    assert m["spearman_a_r"] == pytest.approx(1 - 6 * 2 * 19**2 / (20 * (20**2 - 1)))
    assert m["top_recall"] == 0.0
    assert m["tail_a_r_mae"] == pytest.approx(4.75 / 18)

    # an eigenvalue <= 0 (a_r undefined) ranks first and stays out of the a_r MAEs
    broken = _uniaxial(a_ref)
    broken[0] = np.diag([-1.0, 2.0, 2.0])
    m = discovery_metrics(_uniaxial(a_ref), broken)
    assert m["top_recall"] == 0.0 and m["anisotropy_ratio_mae"] == 0.0
    assert discovery_metrics(_uniaxial(a_ref), _uniaxial(a_ref), top_fraction=0.1)["top_recall"]


def test_ridge_row_smoke_run_writes_each_fold_and_resumes(tmp_path):
    out = tmp_path / "out" / "ridge_b1_log"
    command = [sys.executable, str(ROOT / "benchmarks" / "discovery.py"), "--rows",
               "ridge_b1_log", "--slice", "24", "--work", str(tmp_path / "work"), "--out",
               str(tmp_path / "out")]  # fmt: skip
    first = run_command([*command, "--folds", "0", "1"]).stdout
    assert "computing 7net-0 features of" in first
    assert "| ridge_b1_log |" in first and "| 2 x 1 |" in first
    done = [out / f"seed0_fold{k}.json" for k in (0, 1)]
    assert all(f.is_file() for f in done) and not (out / "seed0_fold2.json").exists()
    stamps = [f.stat().st_mtime_ns for f in done]

    # the rest of the folds: the finished ones and the cached features are not computed again
    second = run_command(command).stdout
    assert "computing" not in second and "fold 0:" not in second and "fold 1:" not in second
    assert all(f"fold {k}:" in second for k in (2, 3, 4)) and "| 5 x 1 |" in second
    assert [f.stat().st_mtime_ns for f in done] == stamps

    results = [json.loads((out / f"seed0_fold{k}.json").read_text()) for k in range(5)]
    index = [i for r in results for i in r["test_index"]]
    assert sorted(index) == list(range(24))  # out of fold: every crystal exactly once
    predicted = np.concatenate([np.reshape(r["predicted"], (-1, 3, 3)) for r in results])
    eigenvalues = np.linalg.eigvalsh(predicted)
    assert (eigenvalues > 1).all()  # log space: eps = I + expm(L)
    systems = [a.info["crystal_system"] for a in bundled("mp_subset_train", ":24")]
    cubic = [n for n, i in enumerate(index) if systems[i] == "cubic"]
    assert cubic and np.allclose(eigenvalues[cubic, 0], eigenvalues[cubic, 2], rtol=1e-4)
    for r in results:
        assert -1 <= r["mp"]["spearman_a_r"] <= 1 and r["mp"]["eps_poly_mae"] > 0
        assert r["phonondb"]["n"] > 0 and set(r["l2_strength"]) == {"0e", "2e"}
