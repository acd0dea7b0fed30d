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


def test_discovery_table_pairs_each_row_with_the_baseline_folds(tmp_path):
    from benchmarks.discovery import table

    for fold, spearman in enumerate((0.8, 0.9, 0.7)):
        # fold 0 resumed after its training: its wall is the prediction (1 min) + 9 min training
        trained = {"train_wall_s": 540.0} if fold == 0 else {"train_wall_s": 50.0}
        _fold_result(tmp_path / "baseline", "baseline", fold, spearman, 0.5, 0.6, **trained)
    for fold, spearman in ((0, 0.85), (2, 0.71), (3, 0.99)):  # fold 3: baseline has none
        _fold_result(tmp_path / "readout_log", "readout_log", fold, spearman, 0.6, 0.5)
    lines = {line.split(" | ")[0][2:]: line.split(" | ") for line in table(tmp_path).splitlines()}
    assert lines["readout_log"][2] == "3 x 1"
    assert lines["readout_log"][11] == "+0.030 / +0.100 / -0.100 (2)"
    assert lines["baseline"][11] == "" and "not run yet" in lines["backbone_1"][2]
    assert lines["baseline"][12] == "4.0 ± 4.2" and lines["readout_log"][12] == "1.0 ± 0.0"


def test_discovery_jobs_run_each_unfinished_fold_once_sharing_the_cores(
    tmp_path, monkeypatch, capsys
):
    import benchmarks.discovery as discovery

    _fold_result(tmp_path / "out" / "backbone_1", "backbone_1", 1, 0.8, 0.5, 0.6)
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        k = command[command.index("--folds") + 1]
        table = "| row | wall per fold (min) | same folds: Δ |"  # a child's closing table
        stdout = f"x\nbackbone_1 seed 0 fold {k}: Spearman\n{table}"
        return argparse.Namespace(stdout=stdout, returncode=0)

    monkeypatch.setattr(discovery.subprocess, "run", fake_run)
    monkeypatch.setattr(discovery.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    discovery.main(
        ["--rows", "backbone_1", "--folds", "0", "1", "2", "--jobs", "2", "--max-epochs", "3"]
        + ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--slice", "12"]
    )
    assert sorted(c[c.index("--folds") + 1] for c in commands) == ["0", "2"]  # 1 is done
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if " fold " in line and ":" in line][:2] == [
        "backbone_1 seed 0 fold 0: Spearman",
        "backbone_1 seed 0 fold 2: Spearman",
    ]
    assert sum(line.startswith("| row |") for line in printed) == 1  # this run's table only
    for command in commands:
        options = dict(zip(command[3::2], command[4::2]))
        assert options["--threads"] == "2" and options["--concurrent"] == "2"
        assert options["--max-epochs"] == "3" and options["--slice"] == "12"
        assert options["--out"] == str(tmp_path / "out") and "--max-minutes" not in options


def test_model_card_gets_a_rows_out_of_fold_figures_and_worst_crystals(tmp_path):
    """``--card ROW``: mean and std over the row's folds, the paired differences from baseline,
    the crystals whose out-of-fold a_r is furthest from DFPT's, and the card's section."""
    import types

    import benchmarks.discovery as discovery

    frames = bundled("mp_subset_test", ":6")
    eps = _uniaxial([1.0, 1.2, 3.0, 1.1, 2.0, 1.0])
    bench = types.SimpleNamespace(frames=frames, eps=eps)
    predicted = _uniaxial([1.0, 1.3, 1.5, 1.1, 2.1, 1.0])  # crystal 2: 3.0 predicted 1.5
    for fold, (spearman, index) in enumerate(((0.8, [0, 1, 2]), (0.6, [3, 4, 5]))):
        fake = {"test_index": index, "test_ids": [f"id{i}" for i in index]}
        fake |= {"predicted": predicted[index].reshape(-1, 9).tolist()}
        fake |= {"n_crystals": 6}
        _fold_result(
            tmp_path / "out" / "readout_log", "readout_log", fold, spearman, 0.5, 0.6, **fake
        )
        _fold_result(tmp_path / "out" / "baseline", "baseline", fold, 0.7, 0.5, 0.5)
    shipped = tmp_path / "pretrained"
    shipped.mkdir()
    card = {"files": ["m.nequip.zip"], "ensemble": False, "seeds": [0], "config": "c.yaml"}
    (shipped / "model_card.json").write_text(json.dumps(card))
    import release.ship_model

    def markdown(card):  # the card's discovery section alone
        return release.ship_model._discovery_section(card["discovery"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(release.ship_model, "model_card_markdown", markdown)
        summary = discovery.update_card(bench, "readout_log", shipped, tmp_path / "out")
    assert summary["folds"] == [0, 1] and summary["seeds"] == [0]
    assert summary["mp"]["spearman_a_r"] == pytest.approx({"mean": 0.7, "std": 0.1})
    assert summary["paired_vs_baseline"]["spearman_a_r"] == pytest.approx(0.0)
    assert summary["paired_vs_baseline"]["eps_poly_mae"] == pytest.approx(0.1)
    # the row as defined: readout log on the baseline's selection by validation loss
    assert summary["overrides"] == [
        "monitor=val0_epoch/weighted_sum",
        "monitor_mode=min",
        "readout=log",
    ]
    worst = summary["largest_a_r_errors"]
    assert worst[0]["id"] == "id2" and {e["id"] for e in worst[1:3]} == {"id1", "id4"}
    assert worst[0]["a_r"] == pytest.approx(3.0) and worst[0]["a_r_pred"] == pytest.approx(1.5)
    assert json.loads((shipped / "model_card.json").read_text())["discovery"] == summary
    assert sorted(p.name for p in shipped.iterdir()) == ["MODEL_CARD.md", "model_card.json"]
    text = (shipped / "MODEL_CARD.md").read_text()
    assert "| `mp_subset`, out of fold | 0.700 ± 0.100 | 0.500 ± 0.000 |" in text
    assert f"| {frames[2].get_chemical_formula()} (id2) | 3.00 | 1.50 |" in text
    assert "paired on the same folds and seeds: Spearman `a_r` +0.000" in text
    with pytest.raises(SystemExit, match="backbone_1.*no fold results"):
        discovery.card_summary(bench, "backbone_1", tmp_path / "out")
