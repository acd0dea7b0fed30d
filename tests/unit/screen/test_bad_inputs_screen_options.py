"""Bad inputs of ``aniso-nequip screen``: bad structures in a pool are skipped and listed,
options out of range are refused before any work, and a run failing its checks leaves nothing that
blocks the corrected run.
"""

import csv
import json

import ase
import ase.build
import ase.io
import numpy as np
import pytest

from aniso_nequip.errors import InputError
from aniso_nequip.scripts.cli import main as cli
from helpers import (
    bad_frame,
    bundled,
    disordered_doc,
)

# ---- aniso-nequip screen --------------------------------------------------------------------


def _val_pool(tmp_path):
    frames = bundled("phonondb_test", ":3")
    bad = [bad_frame(c)[0] for c in ("overlapping", "no-cell", "unknown-element")]
    path = tmp_path / "pool.extxyz"
    ase.io.write(path, frames + bad)
    docs = tmp_path / "pool.json"
    docs.write_text(json.dumps([disordered_doc("mp-disordered")]))
    return [str(path), str(docs)]


def _screen_argv(trained):
    model = str(trained["dir"] / "best.ckpt")
    return ["screen", "--quiet", "--no-dimensionality", "--model", model]


def test_screen_skips_and_lists_bad_structures(trained, tmp_path, capsys):
    out = tmp_path / "screen"
    argv = _screen_argv(trained)
    argv += ["--structures", *_val_pool(tmp_path), "--out", str(out)]
    assert cli(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    invalid = summary["invalid"]
    assert set(invalid) == {"overlapping", "no-cell", "unknown-element", f"{argv[-3]}#0"}
    assert "atoms 0 and 1" in invalid["overlapping"] and "no periodic" in invalid["no-cell"]
    assert "Pu unknown" in invalid["unknown-element"]
    assert invalid[f"{argv[-3]}#0"].startswith("mp-disordered: disordered sites")
    assert summary["predicted"] == 3
    assert "skipped overlapping: atoms 0 and 1" in capsys.readouterr().out
    assert "- no-cell: structure has no periodic 3D cell" in (out / "summary.md").read_text()


@pytest.mark.parametrize("case", ["strict", "nothing-valid"])
def test_screen_fails_cleanly(case, trained, tmp_path, capsys):
    structures = _val_pool(tmp_path)
    if case == "nothing-valid":
        structures = structures[1:]
    out = tmp_path / "screen"
    argv = _screen_argv(trained)
    argv += ["--structures", *structures, "--out", str(out)] + ["--strict"] * (case == "strict")
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "mp-disordered: disordered sites" in err
    assert not (out / "ranking.csv").exists()
    if case == "strict":
        assert "--strict: nothing written" in err and not out.exists()


RUN_SCREEN_ARG_CASES = [
    (["--top", "-1"], "argument --top: expected an integer >= 0, got '-1'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["--batch-size", "abc"], "argument --batch-size: expected an integer >= 1, got 'abc'"),
    (["--k", "-1"], "argument --k: expected a number >= 0, got '-1'"),
    (["--max-sites", "0"], "argument --max-sites: expected an integer >= 1 or `off`, got '0'"),
    (["--min-band-gap", "wide"], "argument --min-band-gap: expected a number or `off`, got 'wide'"),
]


@pytest.mark.parametrize(
    "args, message", RUN_SCREEN_ARG_CASES, ids=[" ".join(c[0]) for c in RUN_SCREEN_ARG_CASES]
)
def test_screen_refuses_options_out_of_range(args, message, tmp_path, capsys):
    out = tmp_path / "screen"
    with pytest.raises(SystemExit) as exit_:
        cli(["screen", "--structures", "pool.extxyz", "--out", str(out), *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


RUN_SCREEN_SETTINGS_CASES = [
    ({"top": -1}, 32, "`top` must be >= 0, got -1"),
    ({"k": -0.5}, 32, "`k` must be >= 0, got -0.5"),
    ({}, 0, "`batch_size` must be >= 1, got 0"),
]


@pytest.mark.parametrize(
    "changes, batch_size, message", RUN_SCREEN_SETTINGS_CASES, ids=["top", "k", "batch_size"]
)
def test_screen_library_refuses_options_out_of_range(changes, batch_size, message, tmp_path):
    from aniso_nequip.screen.layout import Settings
    from aniso_nequip.screen.runner import screen

    settings = Settings(models=["m.ckpt"], structures=["pool.extxyz"], **changes)
    with pytest.raises(InputError, match=message):
        screen(tmp_path / "screen", settings, batch_size=batch_size, device="cpu")
    assert not (tmp_path / "screen").exists()


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-folder", "empty-folder"])
def test_screen_failing_its_checks_leaves_nothing_that_blocks_the_rerun(out_exists, tmp_path):
    pool, bad = tmp_path / "pool.extxyz", tmp_path / "bad.extxyz"
    ase.io.write(pool, bundled("mp_subset_test", ":2"))
    bad.write_text("not an extxyz file\n")
    out = tmp_path / "screen"
    if out_exists:
        out.mkdir()
    base = ["screen", "--structures", str(pool), "--out", str(out), "--no-dimensionality"]
    assert cli([*base, "--exclude", str(bad), "--quiet"]) == 2
    assert (list(out.iterdir()) == []) if out_exists else not out.exists()
    # the corrected run (no --exclude: other settings) starts without --force
    assert cli([*base, "--quiet"]) == 0
    assert (out / "ranking.csv").is_file()


def test_screen_never_ranks_a_failed_prediction(trained, tmp_path, monkeypatch, capsys):
    """A tensor with eigenvalues of 1e6 (a_r 1e6: it would top any ranking, and `physical` is
    true) is a failed prediction: listed with its reason in `failed`, unranked, last in
    ranking.csv, out of the candidates and counted in the summary."""
    from aniso_nequip.screen import runner

    frames = bundled("phonondb_test", ":4")
    pool = tmp_path / "pool.extxyz"
    ase.io.write(pool, frames)
    bad = frames[1].info["entry_id"]
    real = runner.predict_members

    def one_failed(structures, *args, **kwargs):
        tensors = real(structures, *args, **kwargs)
        for i, atoms in enumerate(structures):
            if atoms.info.get("entry_id") == bad:
                tensors[:, i] = np.diag([1.0, 2.0, 1e6])
        return tensors

    monkeypatch.setattr(runner, "predict_members", one_failed)
    out = tmp_path / "screen"
    argv = _screen_argv(trained)
    assert cli([*argv, "--structures", str(pool), "--out", str(out), "--top", "4"]) == 0
    with open(out / "ranking.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == ["1", "2", "3", ""] and rows[-1]["id"] == bad
    assert rows[-1]["physical"] == "True" and rows[-1]["failed"].startswith(
        "failed prediction: eigenvalues 1 2 1e+06 outside [0.5, 100]"
    )
    assert not any(r["failed"] for r in rows[:-1])
    candidates = ase.io.read(out / "candidates.extxyz", ":")
    assert bad not in [a.info["entry_id"] for a in candidates] and len(candidates) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"]["count"] == 1 and summary["failed"]["listed"][0]["id"] == bad
    assert "- failed predictions (`failed`, not ranked): 1" in (out / "summary.md").read_text()
