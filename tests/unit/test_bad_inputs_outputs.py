"""Bad inputs and faults of the writers (``aniso-nequip data convert|mp|mp-candidates|predict``,
``nequip-evaluate``): output sets are all-or-nothing. A refused, failed, interrupted or concurrent
writer never leaves a partial or mixed set, and a folder a failed run left behind is usable by the
next one.
"""

import contextlib
import errno
import gzip
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import ase
import ase.build
import ase.io
import pytest

import aniso_nequip
import aniso_nequip.evaluation
import aniso_nequip.io
import aniso_nequip.plots
from aniso_nequip.data.pipeline import dataset_paths
from aniso_nequip.io import output_lock
from aniso_nequip.pretrained import model_paths
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.scripts.evaluate import main as evaluate_main
from helpers import (
    ROOT,
    bundled,
    mp_document,
)

# ---- 1. output sets are all-or-nothing ----

OUT_MODEL = model_paths()[0]  # the shipped ready model: no training needed
OUT_SPLIT = ["--split", "0.5", "0.25", "0.25"]
OUT_HIDDEN = (".staging-", ".backup-", ".lock")  # what a writer keeps beside its output

# Runs a console script in a new process that pauses (until the file GO exists) after the N-th
# call of MODULE:NAME, printing "paused" once: a writer caught in the middle of its set.
# argv: MODULE:NAME N GO SCRIPT-MODULE ARGS...
_OUT_PAUSED_WRITER = """
import importlib, pathlib, sys, time
target, n, go, script, *args = sys.argv[1:]
module_name, name = target.split(":")
module = importlib.import_module(module_name)
real, calls = getattr(module, name), []
def paused(*a, **k):
    result = real(*a, **k)
    calls.append(1)
    if len(calls) == int(n):
        print("paused", flush=True)
        while not pathlib.Path(go).exists():
            time.sleep(0.05)
    return result
setattr(module, name, paused)
sys.exit(importlib.import_module(script).main(args))
"""


def _out_start_paused(target, n, go, script, args):
    """Start :data:`_OUT_PAUSED_WRITER` and wait until it has paused; returns the process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-c", _OUT_PAUSED_WRITER, target, str(n), str(go), script, *args]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    for line in proc.stdout:
        if line.strip() == "paused":
            return proc
    proc.wait()
    raise AssertionError(f"the writer ended before pausing:\n{proc.stderr.read()[-3000:]}")


def _out_snapshot(folder):
    """``{relative path: sha256}`` of every visible file below ``folder`` (a writer's hidden
    files are :func:`_out_leftovers`)."""
    files = (p.relative_to(folder) for p in sorted(folder.rglob("*")) if p.is_file())
    return {
        str(p): hashlib.sha256((folder / p).read_bytes()).hexdigest()
        for p in files
        if not any(part.startswith(".") for part in p.parts)
    }


def _out_leftovers(*folders):
    """Staging and backup folders and lock files left in ``folders``."""
    return sorted(
        p.name for f in folders for p in f.iterdir() if any(h in p.name for h in OUT_HIDDEN)
    )


def _out_docs(path, frames):
    with gzip.open(path, "wt") as f:
        json.dump([mp_document(a) for a in frames], f)
    return path


@pytest.fixture(scope="module", name="out_sources")
def _out_sources_fixture(tmp_path_factory):
    """Two document dumps (8 and 6 crystals: two distinguishable runs), a previous dataset set
    made from the first beside a user's file, and an evaluation of 4 crystals."""
    tmp = tmp_path_factory.mktemp("out_sources")
    frames = bundled("mp_subset_val", ":14")
    docs = _out_docs(tmp / "docs.json.gz", frames[:8])
    other = _out_docs(tmp / "other.json.gz", frames[8:])
    dataset = tmp / "dataset"
    dataset.mkdir()
    (dataset / "notes.txt").write_text("the user's own file")
    assert cli(["data", "convert", str(docs), "--out", str(dataset / "mp.extxyz"), *OUT_SPLIT]) == 0
    data = tmp / "test.extxyz"
    ase.io.write(data, [a for a in bundled("mp_subset_test", ":40") if len(a) <= 8][:4])
    evaluation = tmp / "evaluation"
    assert _out_evaluate(data, evaluation) == 0
    return {"docs": docs, "other": other, "dataset": dataset, "data": data, "eval": evaluation}


@pytest.fixture(name="out_dataset")
def _out_dataset_fixture(out_sources, tmp_path):
    """A copy of the previous dataset set: ``(OUT, snapshot of its folder)``."""
    folder = shutil.copytree(out_sources["dataset"], tmp_path / "dataset")
    return folder / "mp.extxyz", _out_snapshot(folder)


@pytest.fixture(name="out_evaluation")
def _out_evaluation_fixture(out_sources, tmp_path):
    """A copy of the previous evaluation folder: ``(OUT, snapshot)``."""
    out = shutil.copytree(out_sources["eval"], tmp_path / "eval")
    return out, _out_snapshot(out)


def _out_convert(docs, out, *extra):
    return cli(["data", "convert", str(docs), "--out", str(out), *OUT_SPLIT, *extra])


def _out_evaluate(data, out, *extra):
    return evaluate_main(["--model", OUT_MODEL, "--data", str(data), "--out", str(out), *extra])


def _out_unwritable(monkeypatch, folder):
    """Make ``folder`` read-only as a check sees it (root, who runs CI containers, may write
    anywhere, so ``chmod`` alone would prove nothing)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if os.path.abspath(path) == str(folder) and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def _out_fail(*_, **__):
    raise AssertionError("the expensive work started")


# --- refused before the work: each case is setup(out, monkeypatch) -> (--out, extra arguments,
# fragments the message must hold) ------------------------------------------------------------


def _out_existing_set(out, monkeypatch):
    return out, [], [str(out), "outputs exist", "--force"]


def _out_below_a_file(out, monkeypatch):
    return out.parent / "notes.txt" / "mp.extxyz", ["--force"], ["notes.txt", "is a file"]


def _out_read_only(out, monkeypatch):
    _out_unwritable(monkeypatch, out.parent)
    return out, ["--force"], [str(out.parent), "not writable"]


def _out_in_use(out, monkeypatch):
    return out, ["--force"], [str(out), "in use", f"pid {os.getpid()}"]


OUT_CONVERT_REFUSALS = [
    pytest.param(_out_existing_set, id="existing-set-without-force"),
    pytest.param(_out_below_a_file, id="out-below-a-file"),
    pytest.param(_out_read_only, id="read-only-folder"),
    pytest.param(_out_in_use, id="set-in-use"),
]


@pytest.mark.parametrize("setup", OUT_CONVERT_REFUSALS)
def test_out_convert_refused_before_reading_documents(
    setup, out_dataset, out_sources, monkeypatch, capsys
):
    out, before = out_dataset
    target, extra, fragments = setup(out, monkeypatch)
    monkeypatch.setattr("aniso_nequip.data.mp.read_documents", _out_fail)
    with output_lock(out) if setup is _out_in_use else contextlib.nullcontext():
        assert _out_convert(out_sources["docs"], target, *extra) == 2
    message = capsys.readouterr().err
    assert all(f in message for f in fragments), message
    assert _out_snapshot(out.parent) == before and not _out_leftovers(out.parent)


def _out_file_not_folder(out, monkeypatch):
    shutil.rmtree(out)
    out.write_text("not a folder")
    return out, ["--force"], [str(out), "not a directory"]


def _out_not_empty(out, monkeypatch):
    return out, [], [str(out), "not empty", "--force"]


def _out_eval_below_a_file(out, monkeypatch):
    return out / "metrics.json" / "sub", ["--force"], ["metrics.json", "is a file"]


def _out_parent_read_only(out, monkeypatch):
    _out_unwritable(monkeypatch, out.parent)
    return out.parent / "new", [], [str(out.parent), "not writable"]


def _out_folder_read_only(out, monkeypatch):
    _out_unwritable(monkeypatch, out)
    return out, ["--force"], [str(out), "not writable"]


OUT_EVALUATE_REFUSALS = [
    pytest.param(_out_file_not_folder, id="out-is-a-file"),
    pytest.param(_out_not_empty, id="non-empty-without-force"),
    pytest.param(_out_eval_below_a_file, id="out-below-a-file"),
    pytest.param(_out_parent_read_only, id="read-only-parent"),
    pytest.param(_out_folder_read_only, id="read-only-out"),
    pytest.param(_out_in_use, id="out-in-use"),
]


@pytest.mark.parametrize("setup", OUT_EVALUATE_REFUSALS)
def test_out_evaluate_refused_before_loading_the_model(
    setup, out_evaluation, out_sources, monkeypatch, capsys
):
    out, _ = out_evaluation
    target, extra, fragments = setup(out, monkeypatch)
    before = _out_snapshot(out.parent)
    monkeypatch.setattr(aniso_nequip.evaluation, "load_model", _out_fail)
    monkeypatch.setattr(aniso_nequip.evaluation, "_read_frames", _out_fail)
    with output_lock(out) if setup is _out_in_use else contextlib.nullcontext():
        assert _out_evaluate(out_sources["data"], target, *extra) == 2
    message = capsys.readouterr().err
    assert message.startswith("nequip-evaluate: error:") and all(f in message for f in fragments), (
        message
    )
    assert _out_snapshot(out.parent) == before and not _out_leftovers(out.parent)


OUT_OTHER_REFUSALS = [
    # (argv after `aniso-nequip`, function that must not run, message fragments)
    pytest.param(
        ["predict", "x.cif", "--out", "{tmp}/taken.txt"],
        "aniso_nequip.prediction.predict_files",
        ["taken.txt", "not a directory"],
        id="predict-out-is-a-file",
    ),
    pytest.param(
        ["predict", "x.cif", "--out", "{tmp}/pred", "--force"],
        "aniso_nequip.prediction.predict_files",
        ["pred", "in use"],
        id="predict-out-in-use",
    ),
    pytest.param(
        ["data", "mp", "--cache", "{tmp}/none.json.gz", "--out", "{tmp}/taken.txt"],
        "aniso_nequip.data.mp.fetch_documents",
        ["taken.txt", "outputs exist"],
        id="mp-existing-output-before-download",
    ),
    pytest.param(
        ["data", "mp-candidates", "--out", "{tmp}/taken.txt/pool.json.gz"],
        "aniso_nequip.data.mp.fetch_documents",
        ["taken.txt", "is a file"],
        id="mp-candidates-below-a-file-before-download",
    ),
]


@pytest.mark.parametrize("argv, expensive, fragments", OUT_OTHER_REFUSALS)
def test_out_other_writers_refused_before_the_work(
    argv, expensive, fragments, tmp_path, monkeypatch, capsys
):
    (tmp_path / "taken.txt").write_text("mine")
    monkeypatch.setattr(expensive, _out_fail)
    argv = [a.format(tmp=tmp_path) for a in argv]
    with output_lock(tmp_path / "pred"):  # held as another writer would (used by one case)
        assert cli(argv) == 2
    message = capsys.readouterr().err
    assert all(f in message for f in fragments), message
    assert _out_snapshot(tmp_path) == {"taken.txt": hashlib.sha256(b"mine").hexdigest()}


# --- failed or interrupted --force runs -----------------------------------------------------


def _out_on_swap_rename(monkeypatch, n, action):
    """Run ``action()`` at the ``n``-th rename of a staged file into its destination."""
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if ".staging-" in str(src) and ".staging-" not in str(dst):
            calls.append(dst)
            if len(calls) == n:
                action()
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def _out_raise(error):
    def action(*_, **__):
        raise error

    return action


@pytest.mark.slow
def test_out_convert_sigint_in_subprocess_leaves_the_previous_set(
    out_dataset, out_sources, tmp_path
):
    """Ctrl-C while the new split files are being written (a real SIGINT to a real process)."""
    out, before = out_dataset
    args = ["data", "convert", str(out_sources["other"]), "--out", str(out), *OUT_SPLIT, "--force"]
    proc = _out_start_paused(
        "aniso_nequip.data.pipeline:write_frames",
        2,
        tmp_path / "go",
        "aniso_nequip.scripts.cli",
        args,
    )
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130 and "interrupted" in proc.stderr.read()
    assert _out_snapshot(out.parent) == before and not _out_leftovers(out.parent)


def test_out_convert_sigint_during_the_swap_is_held_until_the_set_is_whole(
    out_dataset, out_sources, monkeypatch
):
    out, before = out_dataset
    calls = _out_on_swap_rename(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGINT))
    assert _out_convert(out_sources["other"], out, "--force") == 130
    assert len(calls) == 5  # every file swapped in before the interrupt took effect
    report = json.loads(dataset_paths(out)["report"].read_text())
    assert report["documents"] == 6
    sizes = [len(ase.io.read(dataset_paths(out)[s], ":")) for s in ("all", "train", "val", "test")]
    assert sizes == [report["kept"], *(report["split"][s] for s in ("train", "val", "test"))]
    after = _out_snapshot(out.parent)
    assert after["notes.txt"] == before["notes.txt"] and after != before
    assert not _out_leftovers(out.parent)


def test_out_convert_failed_rename_restores_the_previous_set(
    out_dataset, out_sources, monkeypatch, capsys
):
    out, before = out_dataset
    _out_on_swap_rename(monkeypatch, 3, _out_raise(OSError(errno.EIO, "simulated I/O error")))
    assert _out_convert(out_sources["other"], out, "--force") == 2
    err = _out_error_line(capsys.readouterr().err)
    assert "simulated I/O error; the previous files of" in err, err
    assert _out_snapshot(out.parent) == before and not _out_leftovers(out.parent)


def test_out_convert_writer_killed_mid_swap_is_undone_by_the_next_run(
    out_dataset, out_sources, monkeypatch, capsys
):
    """A process killed between two renames (simulated: no restore) leaves a backup that the
    next writer of the set puts back before anything else."""
    out, before = out_dataset
    with monkeypatch.context() as m:
        m.setattr(aniso_nequip.io, "_restore", lambda *_: None)
        _out_on_swap_rename(m, 3, _out_raise(SystemExit("killed")))
        with pytest.raises(SystemExit):
            _out_convert(out_sources["other"], out, "--force")
    assert _out_snapshot(out.parent) != before and any(
        ".backup-" in n for n in _out_leftovers(out.parent)
    )
    assert _out_convert(out_sources["other"], out) == 2
    assert "outputs exist" in capsys.readouterr().err
    assert _out_snapshot(out.parent) == before and not _out_leftovers(out.parent)


def test_out_convert_without_splits_removes_the_old_splits(out_dataset, out_sources):
    out, before = out_dataset
    assert _out_convert(out_sources["other"], out, "--force", "--no-split") == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "mp.extxyz",
        "mp_report.json",
        "notes.txt",
    ]
    assert _out_snapshot(out.parent)["notes.txt"] == before["notes.txt"]


@pytest.mark.slow
def test_out_convert_second_writer_is_refused_and_the_first_finishes(
    out_dataset, out_sources, tmp_path, capsys
):
    out, before = out_dataset
    go = tmp_path / "go"
    args = ["data", "convert", str(out_sources["other"]), "--out", str(out), *OUT_SPLIT, "--force"]
    first = _out_start_paused(
        "aniso_nequip.data.pipeline:write_frames", 2, go, "aniso_nequip.scripts.cli", args
    )
    try:
        assert _out_convert(out_sources["docs"], out, "--force") == 2
        message = capsys.readouterr().err
        assert f"output `{out}` is in use" in message and f"pid {first.pid}" in message, message
        assert _out_snapshot(out.parent) == before
    finally:
        go.touch()
    assert first.wait(timeout=60) == 0, first.stderr.read()
    assert json.loads(dataset_paths(out)["report"].read_text())["documents"] == 6
    assert not _out_leftovers(out.parent)


def test_out_evaluate_interrupted_leaves_the_previous_set(out_evaluation, out_sources, monkeypatch):
    """Ctrl-C after metrics.json is staged, while the plots are drawn."""
    out, before = out_evaluation
    monkeypatch.setattr(aniso_nequip.plots, "parity_plot", _out_raise(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _out_evaluate(out_sources["data"], out, "--force")
    assert _out_snapshot(out) == before and not _out_leftovers(out.parent)


def test_out_evaluate_failed_rename_keeps_metrics_of_one_run(
    out_evaluation, out_sources, tmp_path, monkeypatch, capsys
):
    out, before = out_evaluation
    data = tmp_path / "three.extxyz"  # another run: other metrics
    ase.io.write(data, ase.io.read(out_sources["data"], ":3"))
    calls = _out_on_swap_rename(
        monkeypatch, 2, _out_raise(OSError(errno.ENOSPC, "simulated full disk"))
    )
    assert _out_evaluate(data, out, "--force") == 2
    assert "simulated full disk; the previous files of" in capsys.readouterr().err
    assert [p.name for p in calls][-1] == "metrics.md"  # metrics.json had been swapped in
    assert _out_snapshot(out) == before and not _out_leftovers(out.parent)


def test_out_evaluate_force_without_references_drops_the_old_plots(
    out_evaluation, out_sources, tmp_path
):
    out, _ = out_evaluation
    (out / "notes.txt").write_text("kept")
    frames = ase.io.read(out_sources["data"], ":2")
    for a in frames:
        a.calc = None
    data = tmp_path / "unlabelled.extxyz"
    ase.io.write(data, frames)
    assert _out_evaluate(data, out, "--force") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "metrics.json",
        "metrics.md",
        "notes.txt",
        "predictions.csv",
        "predictions.extxyz",
    ]
    assert json.loads((out / "metrics.json").read_text())["data"] == [str(data)]


@pytest.mark.slow
def test_out_evaluate_second_writer_refused_and_a_killed_writer_blocks_nothing(
    out_evaluation, out_sources, tmp_path, monkeypatch, capsys
):
    out, before = out_evaluation
    args = ["--model", OUT_MODEL, "--data", str(out_sources["data"]), "--out", str(out), "--force"]
    first = _out_start_paused(
        "aniso_nequip.plots:parity_plot", 1, tmp_path / "go", "aniso_nequip.scripts.evaluate", args
    )
    try:
        with monkeypatch.context() as m:
            m.setattr(aniso_nequip.evaluation, "load_model", _out_fail)
            assert _out_evaluate(out_sources["data"], out, "--force") == 2
        message = capsys.readouterr().err
        assert f"output `{out}` is in use" in message and f"pid {first.pid}" in message, message
    finally:
        first.kill()  # SIGKILL: no clean-up runs
        first.wait()
    assert _out_snapshot(out) == before
    assert (out.parent / ".eval.lock").read_text().strip() == str(first.pid)  # left behind
    assert any(".staging-" in name for name in _out_leftovers(out.parent))
    assert _out_evaluate(out_sources["data"], out, "--force") == 0
    after = _out_snapshot(out)
    assert after.keys() == before.keys() and not _out_leftovers(out.parent)


def _out_error_line(err):
    """The one error line a command printed (progress bars aside), asserting there is no other
    and no traceback."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _out_refuse_replace(monkeypatch, refused):
    """Make ``os.replace(src, dst)`` fail with EPERM, as for a file made immutable
    (``chattr +i``), whenever ``refused(src, dst)``; returns the list of refused calls."""
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        if refused(pathlib.Path(src), pathlib.Path(dst)):
            calls.append((src, dst))
            raise PermissionError(errno.EPERM, "Operation not permitted", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_out_evaluate_swap_refused_by_an_immutable_file_keeps_a_usable_folder(
    out_evaluation, out_sources, monkeypatch, capsys
):
    """metrics.md cannot be replaced: one line naming it, the previous set whole (metrics.json,
    swapped in before, is put back; metrics.md never changed), nothing hidden left behind, and
    the next run (once the file is writable) writes the set."""
    out, before = out_evaluation
    with monkeypatch.context() as m:
        calls = _out_refuse_replace(m, lambda src, dst: dst == out / "metrics.md")
        assert _out_evaluate(out_sources["data"], out, "--force") == 2
    err = _out_error_line(capsys.readouterr().err)
    assert calls and f"cannot write `{out / 'metrics.md'}`: Operation not permitted" in err
    assert f"the previous files of `{out}` were kept" in err
    assert _out_snapshot(out) == before and not _out_leftovers(out.parent)
    assert _out_evaluate(out_sources["data"], out, "--force") == 0
    assert not _out_leftovers(out.parent)


def test_out_evaluate_failed_restore_is_reported_and_repaired_by_the_next_run(
    out_evaluation, out_sources, monkeypatch, capsys
):
    """The swap fails at metrics.md and putting metrics.json back fails too: one line naming
    what is kept where; the next run puts it back first (or, while it still cannot, says so in
    one line) instead of failing on a backup that no longer matches its manifest."""
    out, before = out_evaluation

    def refused(src, dst):
        return dst == out / "metrics.md" or (".backup-" in str(src) and dst.name == "metrics.json")

    with monkeypatch.context() as m:
        _out_refuse_replace(m, refused)
        assert _out_evaluate(out_sources["data"], out, "--force") == 2
        err = _out_error_line(capsys.readouterr().err)
        assert "metrics.json could not be put back" in err, err
        assert any(".backup-" in n for n in _out_leftovers(out.parent))
        assert _out_evaluate(out_sources["data"], out, "--force") == 2  # still refused
        err = _out_error_line(capsys.readouterr().err)
        assert "a previous run could not finish writing" in err, err
        assert "metrics.json are still kept in" in err
    assert _out_evaluate(out_sources["data"], out) == 2  # repaired first, then refused: not empty
    assert "not empty" in capsys.readouterr().err
    assert _out_snapshot(out) == before and not _out_leftovers(out.parent)
