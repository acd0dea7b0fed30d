"""Smoke runs of every benchmark script (``benchmarks/``) and of the release step (``release/``)
on tiny slices, each as ``python -m benchmarks.NAME`` in its own process, writing only under
``tmp_path``: the figures files they write have the keys ``benchmarks/results.py`` and the model
card read, with sane values, so that the scripts behind the published figures cannot rot."""

import hashlib
import json
import math
import os
import shutil
import sys

import ase.io
import numpy as np
import pytest

from helpers import BIN, ROOT, bundled, run_command

pytestmark = pytest.mark.slow

SHIPPED = ROOT / "aniso_nequip" / "pretrained"
MAES = ("eps_poly_mae", "anisotropy_ratio_mae", "component_mae", "eigenvalue_mae")


def _module(name, *args, **env):
    """``python -m NAME ARGS`` from the repository root, with the venv's commands on PATH."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return run_command([sys.executable, "-m", name, *map(str, args)], PATH=path, **env)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shipped_state():
    return {p.name: _sha256(p) for p in sorted(SHIPPED.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory):
    """``train_file=... val_file=...``: 12 and 4 bundled crystals."""
    tmp = tmp_path_factory.mktemp("slice")
    overrides = []
    for split, n in (("train", 12), ("val", 4)):
        path = tmp / f"{split}.extxyz"
        ase.io.write(path, bundled(f"mp_subset_{split}", f":{n}"))
        overrides.append(f"{split}_file={path}")
    return overrides


@pytest.fixture(scope="module")
def shipped_before():
    """The ready model's files before the smoke runs: none of them may touch it."""
    before = _shipped_state()
    yield before
    assert _shipped_state() == before


@pytest.fixture(scope="module")
def accuracy_run(data_slice, shipped_before, tmp_path_factory):
    """``benchmarks.accuracy`` of the tiny config, seeds 0 and 1, one epoch each."""
    runs = tmp_path_factory.mktemp("runs")
    _module(
        "benchmarks.accuracy",
        "configs/tiny.yaml",
        "--name",
        "smoke",
        "--seeds",
        0,
        1,
        "--jobs",
        2,
        "--out",
        runs,
        "max_epochs=1",
        *data_slice,
    )
    return runs


def test_accuracy_writes_per_seed_and_ensemble_metrics(accuracy_run):
    summary = json.loads((accuracy_run / "smoke" / "accuracy.json").read_text())
    assert summary["config"] == "configs/tiny.yaml" and summary["seeds"] == [0, 1]
    assert summary["overrides"][0] == "max_epochs=1"
    for key in MAES:
        assert 0 < summary[f"{key}_mean"] < 100 and summary[f"{key}_std"] >= 0
        assert 0 < summary["ensemble"][key] < 100
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    for run in summary["runs"]:
        assert run["epochs"] == 1 and run["parameters"] > 0 and run["wall_s"] > 0
        assert sum(s["n"] for s in run["per_crystal_system"].values()) == 111
        # the phonondb test split less the crystals also in the mp_subset training split
        assert 0 < run["phonondb_ood"]["n"] < len(bundled("phonondb_test"))
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["torch"]


def test_ship_model_rebuilds_the_ready_model_elsewhere(accuracy_run, tmp_path):
    shipped = tmp_path / "pretrained"
    out = _module(
        "release.ship_model",
        "--config",
        "configs/tiny.yaml",
        "--name",
        "smoke",
        "--seeds",
        0,
        1,
        "--members",
        2,
        "--runs",
        accuracy_run,
        "--shipped",
        shipped,
    )
    assert "benchmarks.accuracy" not in out.stdout  # the finished run of the seeds is reused
    card = json.loads((shipped / "model_card.json").read_text())
    assert card["files"] == [f"anisonet_foundation_seed{s}.nequip.zip" for s in (0, 1)]
    assert card["ensemble"] and card["seeds"] == [0, 1]
    for name in card["files"]:
        assert card["sha256"][name] == _sha256(shipped / name)
    for key in MAES:
        assert 0 < card["test_metrics"][key] < 100
    assert card["test_metrics"] == card["test_metrics_ensemble"]
    assert len(card["test_metrics"]["largest_a_r_errors"]) == 5
    # the recipe as trained: the tiny config's readout and checkpoint selection
    assert card["readout"] == "linear"
    assert card["checkpoint_selection"] == {"monitor": "val0_epoch/weighted_sum", "mode": "min"}
    text = (shipped / "MODEL_CARD.md").read_text()
    assert "Built" in text and "Cartesian readout" in text and "does not force them" in text
    with np.load(shipped / "domain_reference.npz") as reference:
        assert len(reference.files) > 0


def test_experiments_pass_their_overrides_to_accuracy(data_slice, shipped_before, tmp_path):
    _module(
        "benchmarks.experiments",
        "l_max_0",
        "--out",
        tmp_path,
        "--overrides",
        "max_epochs=1",
        "num_features=4",
        *data_slice,
    )
    summary = json.loads((tmp_path / "l_max_0" / "accuracy.json").read_text())
    assert summary["config"] == "configs/anisonet.yaml" and summary["seeds"] == [0]
    assert summary["overrides"][:2] == ["l_max=0", "max_epochs=1"]
    assert summary["runs"][0]["epochs"] == 1 and 0 < summary["eps_poly_mae_mean"] < 100


def test_speed_measures_training_and_inference(data_slice, tmp_path):
    out = tmp_path / "speed.json"
    _module(
        "benchmarks.speed",
        "--configs",
        "configs/tiny.yaml",
        "--modes",
        "eager",
        "--train-batches",
        2,
        "--infer-batches",
        2,
        "--warmup",
        1,
        "--infer-batch-size",
        4,
        "--out",
        out,
        *data_slice,
    )
    (row,) = json.loads(out.read_text())["results"]
    assert "error" not in row, row.get("error")
    assert row["config"] == "configs/tiny.yaml" and row["compile_mode"] == "eager"
    assert row["train_structures_timed"] == 2 * 4 and row["train_structures_per_s"] > 0
    assert row["inference_structures_timed"] == 2 * 4 and row["inference_structures_per_s"] > 0
    assert row["parameters"] == row["trainable_parameters"] > 0


def test_speed_foundation_levers_agree_with_todays_predictions(data_slice, tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("the levers' baseline is a package of the git history")
    out = tmp_path / "levers.json"
    _module(
        "benchmarks.speed",
        "--foundation",
        "--modes",
        "eager",
        "--training-paths",  # none: test_speed_measures_training_and_inference times training
        "--train-batches",
        1,
        "--infer-batches",
        1,
        "--warmup",
        0,
        "--out",
        out,
        *data_slice,
    )
    figures = json.loads(out.read_text())["foundation"]
    assert figures["training"] == []
    rows = figures["inference"]
    assert all("error" not in r for r in rows), rows
    assert {r["batch_size"] for r in rows} == {32, 1}
    for row in rows:
        assert row["structures_per_s"] > 0 and 0 <= row["centrosymmetric_fraction"] <= 1
        assert row["max_rel_diff"] < 1e-4  # every lever predicts what today's path does


def test_screen_benchmark_extrapolates_from_a_tiny_pool(shipped_before, tmp_path):
    _module(
        "benchmarks.screen",
        "--n",
        24,
        "--small",
        12,
        "--batch-size",
        8,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path,
    )
    result = json.loads((tmp_path / "screen_cpu.json").read_text())["results"]
    assert result["whole_pool"]["structures"] == 24 and result["small_pool"]["structures"] == 12
    assert result["dimensionality"] == "top 50 only, at the merge"
    assert result["whole_pool"]["ranked"] <= 24 and result["whole_pool"]["peak_rss_mb"] > 0
    assert result["extrapolated_150k_min"] > 0 or math.isnan(result["extrapolated_150k_min"])


def test_domain_benchmark_on_a_slice(shipped_before, tmp_path):
    _module("benchmarks.domain", "--slice", 8, "--out", tmp_path)
    result = json.loads((tmp_path / "domain.json").read_text())
    assert set(result["sets"]) == {"mp_subset_test", "phonondb_not_in_mp_train"}
    for s in result["sets"].values():
        assert s["n"] == 8 and len(s["thresholds"]) == 9
        assert -1 <= s["spearman_eps_poly"] <= 1 and s["eps_poly_mae"] > 0
        assert 0 <= s["score_quantiles"]["0.1"] <= s["score_quantiles"]["0.9"]
    assert result["neon"]["eps_poly_pred"] > 1 and result["shipped_threshold"] > 0


def test_experiment_updates_a_copy_of_the_model_card(shipped_before, tmp_path):
    shutil.copy(SHIPPED / "model_card.json", tmp_path)
    _module("benchmarks.experiment", "--out", tmp_path / "experiment.json", "--shipped", tmp_path)
    result = json.loads((tmp_path / "experiment.json").read_text())
    assert result["n_crystals"] == len(result["crystals"]) == 15
    assert 0 <= result["signs_right"] <= result["n_anisotropic"] <= 15
    assert 0 < result["eps_poly_median_abs_relative_error"] < 1
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["experiment"] == result and card["files"]
    assert "PBE vs experiment" in (tmp_path / "MODEL_CARD.md").read_text()


def test_repackage_rebuilds_a_copy_of_the_shipped_packages(shipped_before, tmp_path):
    for path in SHIPPED.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path)
    out = _module("release.repackage", "--shipped", tmp_path, "--slice", 8).stdout
    card = json.loads((tmp_path / "model_card.json").read_text())
    for name in card["files"]:
        assert card["sha256"][name] == _sha256(tmp_path / name)
        line = next(x for x in out.splitlines() if x.startswith(f"{name}: largest relative"))
        assert float(line.split()[-1]) <= 1e-5


def test_readouts_benchmark_times_every_readout(tmp_path):
    out = tmp_path / "readouts.json"
    # the first 18 test crystals: the 18th is the first small cubic one (the scaling's cell)
    _module(
        "benchmarks.readouts", "--structures", 18, "--max-atoms", 16, "--threads", 1, "--out", out
    )
    report = json.loads(out.read_text())
    assert report["structures"] == 18 and report["threads"] == 1
    assert set(report["per_structure"]) == {"linear", "square", "log", "local_field"}
    scaling = report["local_field_scaling"]
    assert scaling and all(r["atoms"] <= 16 and r["local_field_s"] > 0 for r in scaling)
    for row in report["per_structure"].values():
        assert row["forward_s"] > 0 and row["forward+backward_s"] > 0


def test_input_limits_on_a_slice():
    figures = json.loads(_module("benchmarks.input_limits", "--slice", 5).stdout)
    assert figures["crystals"] == 6 * 5  # the first 5 of each bundled file
    assert 0 < figures["closest_pair"]["ratio"] < 2
    assert figures["eigenvalues"]["min"] >= 1
    assert figures["frame_deviation_mp"]["median"] <= figures["frame_deviation_mp"]["max"]


def test_results_renders_the_committed_figures(tmp_path):
    """RESULTS.md is generated: rendering the committed runs gives the committed file."""
    out = tmp_path / "RESULTS.md"
    _module("benchmarks.results", "--out", out)
    assert out.read_text() == (ROOT / "benchmarks" / "RESULTS.md").read_text()


def test_discovery_ridge_row_writes_each_fold_and_resumes(tmp_path):
    out = tmp_path / "out" / "ridge_b1_log"
    command = [
        sys.executable,
        "-m",
        "benchmarks.discovery",
        "--rows",
        "ridge_b1_log",
        "--slice",
        "24",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "out"),
    ]
    first = run_command([*command, "--folds", "0", "1"]).stdout
    assert "computing 7net-0 features of" in first
    assert "| ridge_b1_log |" in first and "| 2 x 1 |" in first
    done = [out / f"seed0_fold{k}.json" for k in (0, 1)]
    assert all(f.is_file() for f in done) and not (out / "seed0_fold2.json").exists()
    stamps = [f.stat().st_mtime_ns for f in done]

    # the rest of the folds, run as a script (`python benchmarks/discovery.py`): the finished
    # folds and the cached features are not computed again
    script = [sys.executable, str(ROOT / "benchmarks" / "discovery.py"), *command[3:]]
    second = run_command(script).stdout
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


def test_discovery_neural_row_trains_predicts_and_resumes(tmp_path):
    """A neural row end to end on a slice (configs/tiny.yaml for the foundation config): its
    nequip-train run, the best checkpoint's out-of-fold and phonondb predictions, the result
    file, and a second call that reads that file instead of training again."""
    from benchmarks import discovery

    bench = discovery.Benchmark(tmp_path / "work", slice_n=24)
    row = discovery.Row("tiny", "one epoch of configs/tiny.yaml", config="configs/tiny.yaml")
    first = discovery.run_fold(
        bench, row, 1, 0, tmp_path / "out", max_epochs=1, threads=1, concurrent=2
    )
    assert first is not None and first["epochs_run_best"] == [1, 1]
    assert first["threads"] == 1 and first["concurrent_folds"] == 2
    assert first["max_epochs"] == 1 and first["train_wall_s"] > 0
    test = bench.split(1)["test"]
    assert first["test_index"] == test.tolist() and len(test) > 0
    predicted = np.reshape(first["predicted"], (-1, 3, 3))
    assert predicted.shape == (len(test), 3, 3) and np.isfinite(predicted).all()
    assert np.allclose(predicted, predicted.transpose(0, 2, 1))
    assert first["mp"]["n"] == len(test) and first["phonondb"]["n"] == len(bench.ood) > 0
    result = tmp_path / "out" / "tiny" / "seed0_fold1.json"
    stamp = result.stat().st_mtime_ns
    (tmp_path / "work" / "tiny" / "seed0_fold1" / "best.ckpt").unlink()
    assert discovery.run_fold(bench, row, 1, 0, tmp_path / "out") == first
    assert result.stat().st_mtime_ns == stamp
