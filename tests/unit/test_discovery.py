"""The discovery benchmark's grouped folds and metrics (its smoke run:
tests/integration/test_benchmarks.py)."""

import argparse
import json

import numpy as np
import pytest

from aniso_nequip.data.splits import chemical_system, grouped_folds
from aniso_nequip.metrics import discovery_metrics
from helpers import bundled


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


def _fold_result(path, row, fold, spearman, recall, mae, **extra):
    metrics = {"spearman_a_r": spearman, "top_recall": recall, "tail_a_r_mae": 0.5}
    metrics["eps_poly_mae"] = mae
    path.mkdir(parents=True, exist_ok=True)
    machine = {"gpu": None, "cpu": "cpu", "cores": 2}
    result = {"row": row, "seed": 0, "fold": fold, "wall_s": 60.0, "machine": machine, **extra}
    (path / f"seed0_fold{fold}.json").write_text(
        json.dumps(result | {"mp": metrics, "phonondb": metrics})
    )


def test_discovery_table_pairs_each_row_with_the_shipped_folds(tmp_path):
    from benchmarks.discovery import table

    for fold, spearman in enumerate((0.8, 0.9, 0.7)):
        # fold 0 resumed after its training: its wall is the prediction (1 min) + 9 min training
        trained = {"train_wall_s": 540.0} if fold == 0 else {"train_wall_s": 50.0}
        _fold_result(tmp_path / "shipped", "shipped", fold, spearman, 0.5, 0.6, **trained)
    for fold, spearman in ((0, 0.85), (2, 0.71), (3, 0.99)):  # fold 3: shipped has none
        _fold_result(tmp_path / "readout_log", "readout_log", fold, spearman, 0.6, 0.5)
    lines = {line.split(" | ")[0][2:]: line.split(" | ") for line in table(tmp_path).splitlines()}
    assert lines["readout_log"][2] == "3 x 1"
    assert lines["readout_log"][11] == "+0.030 / +0.100 / -0.100 (2)"
    assert lines["shipped"][11] == "" and "not run yet" in lines["backbone_1"][2]
    assert lines["shipped"][12] == "4.0 ± 4.2" and lines["readout_log"][12] == "1.0 ± 0.0"


def test_discovery_jobs_run_each_unfinished_fold_once_sharing_the_cores(tmp_path, monkeypatch):
    import benchmarks.discovery as discovery

    _fold_result(tmp_path / "out" / "backbone_1", "backbone_1", 1, 0.8, 0.5, 0.6)
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        k = command[command.index("--folds") + 1]
        return argparse.Namespace(stdout=f"x\nbackbone_1 seed 0 fold {k}: Spearman", returncode=0)

    monkeypatch.setattr(discovery.subprocess, "run", fake_run)
    monkeypatch.setattr(discovery.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    discovery.main(
        ["--rows", "backbone_1", "--folds", "0", "1", "2", "--jobs", "2", "--max-epochs", "3"]
        + ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--slice", "12"]
    )
    assert sorted(c[c.index("--folds") + 1] for c in commands) == ["0", "2"]  # 1 is done
    for command in commands:
        options = dict(zip(command[3::2], command[4::2]))
        assert options["--threads"] == "2" and options["--concurrent"] == "2"
        assert options["--max-epochs"] == "3" and options["--slice"] == "12"
        assert options["--out"] == str(tmp_path / "out") and "--max-minutes" not in options
