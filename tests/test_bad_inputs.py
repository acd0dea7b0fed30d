"""Bad inputs and faults at every entry point (``nequip-train``, ``nequip-evaluate``,
``aniso-nequip data|sweep|screen|predict``, the Python API and the calculator): each case asserts
the exit code or exception type, that the message names the entry and the problem, and that no
partial or mixed output is left behind.

1. Output sets are all-or-nothing: a refused, failed, interrupted or concurrent writer never
   leaves a partial or mixed set.
2. Structures and tensors are validated in one place (``aniso_nequip.data.validation``), with the
   same verdict everywhere; batch commands skip and list bad entries and fail only with
   ``--strict`` or when nothing valid is left.
3. Configs and runs fail early and clearly: config variables, fine-tuning mismatches, sweeps,
   screening options and re-runs, dataset statistics of undefined tensors.
"""

import contextlib
import errno
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from types import SimpleNamespace

import ase
import ase.build
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from pymatgen.io.ase import AseAtomsAdaptor

import aniso_nequip
import aniso_nequip.evaluation
import aniso_nequip.io
import aniso_nequip.plots
from aniso_nequip import errors
from aniso_nequip.data import DielectricDataModule, dataset_from_file
from aniso_nequip.data.matching import crystal_id
from aniso_nequip.data.pipeline import build_dataset, dataset_paths
from aniso_nequip.data.stats import dataset_statistics
from aniso_nequip.data.validation import (
    UntrainedElementWarning,
    structure_problem,
    tensor_problem,
)
from aniso_nequip.errors import InputError
from aniso_nequip.evaluation import evaluate
from aniso_nequip.io import output_lock
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.prediction import predict_files
from aniso_nequip.pretrained import model_paths
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.scripts.evaluate import main as evaluate_main
from aniso_nequip.sweep import SpecError, load_spec, run_and_report
from aniso_nequip.sweep.runner import _suggest, open_study
from aniso_nequip.train import SelfContainedCheckpoints
from aniso_nequip.variables import check_config
from helpers import BIN, ROOT, build_tiny, bundled, mp_document, sweep_spec

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


def test_out_convert_failed_rename_restores_the_previous_set(out_dataset, out_sources, monkeypatch):
    out, before = out_dataset
    _out_on_swap_rename(monkeypatch, 3, _out_raise(OSError(errno.EIO, "simulated I/O error")))
    with pytest.raises(OSError, match="simulated"):
        _out_convert(out_sources["other"], out, "--force")
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
    out_evaluation, out_sources, tmp_path, monkeypatch
):
    out, before = out_evaluation
    data = tmp_path / "three.extxyz"  # another run: other metrics
    ase.io.write(data, ase.io.read(out_sources["data"], ":3"))
    calls = _out_on_swap_rename(
        monkeypatch, 2, _out_raise(OSError(errno.ENOSPC, "simulated full disk"))
    )
    with pytest.raises(OSError, match="full disk"):
        _out_evaluate(data, out, "--force")
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


# ---- 2. structures and tensors validated in one place ----

VAL_EPS = np.diag([2.0, 2.5, 3.0])


def _val_nacl(name="nacl-ok", eps=VAL_EPS):
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64)
    atoms.info["entry_id"] = name
    atoms.calc = SinglePointCalculator(atoms, dielectric_tensor=np.reshape(eps, 9))
    return atoms


def _val_with(mutate, name):
    atoms = _val_nacl(name)
    mutate(atoms)
    return atoms


def _val_set_positions(atoms, positions):
    atoms.positions = positions


def _val_no_atoms(name):
    atoms = ase.Atoms(cell=[4.0] * 3, pbc=True)
    atoms.info["entry_id"] = name
    return atoms


def _val_molecule(name):
    atoms = ase.Atoms("NaCl", positions=[[0, 0, 0], [0, 0, 2.4]])
    atoms.info["entry_id"] = name
    return atoms


def _val_disordered(atoms):
    # what ASE's CIF reader records for a site shared by Na and K
    atoms.info["occupancy"] = {"0": {"Na": 0.5, "K": 0.5}, "1": {"Cl": 1.0}}


def _val_unknown(atoms):
    atoms.symbols[0] = "Pu"


# (id, structure maker taking a name, expected problem)
VAL_STRUCTURES = [
    ("no-atoms", _val_no_atoms, "structure has no atoms"),
    ("nan-position", lambda n: _val_with(lambda a: a.positions.__setitem__((0, 0), np.nan), n),
     "atom positions are not finite"),
    ("inf-cell", lambda n: _val_with(lambda a: a.cell.array.__setitem__((0, 0), np.inf), n),
     "cell is not finite"),
    ("no-cell", _val_molecule, "no periodic 3D cell"),
    ("singular-cell", lambda n: _val_with(
        lambda a: a.set_cell([[4, 0, 0], [0, 4, 0], [4, 4, 0]]), n), "cell is singular"),
    ("not-periodic", lambda n: _val_with(lambda a: a.set_pbc(False), n),
     "not periodic in all three directions"),
    ("overlapping", lambda n: _val_with(
        lambda a: _val_set_positions(a, [[0, 0, 0], [0.1, 0, 0]]), n), "atoms 0 and 1 are 0.100 A"),
    ("image-overlap", lambda n: _val_with(lambda a: a.set_cell([0.3, 4, 4], scale_atoms=True), n),
     "and its periodic image"),
    ("disordered", lambda n: _val_with(_val_disordered, n), "disordered sites (partial occupancy)"),
    ("unknown-element", lambda n: _val_with(_val_unknown, n), "element(s) Pu unknown to the model"),
]  # fmt: skip
VAL_STRUCTURE_IDS = [case[0] for case in VAL_STRUCTURES]

# (id, field, tensor, expected problem)
VAL_TENSORS = [
    ("shape", "dielectric_tensor", np.ones((2, 2)) + np.eye(2), "has shape (2, 2), expected 3x3"),
    ("non-finite", "dielectric_tensor", np.diag([2.0, np.nan, 3.0]), "non-finite values"),
    ("asymmetric", "dielectric_tensor", VAL_EPS + np.triu(np.ones((3, 3)), 1),
     "is not symmetric"),
    ("not-positive-definite", "dielectric_tensor", np.diag([2.0, -0.5, 3.0]),
     "not positive definite (smallest eigenvalue -0.5)"),
    ("ionic-negative", "dielectric_ionic_tensor", np.diag([1.0, -0.8, 2.0]),
     "not positive semi-definite"),
    ("born-shape", "born_effective_charges", np.ones((3, 3, 3)), "expected (2, 3, 3)"),
]  # fmt: skip


@pytest.mark.parametrize("case, make, problem", VAL_STRUCTURES, ids=VAL_STRUCTURE_IDS)
def test_structure_problem(case, make, problem):
    assert problem in structure_problem(make(case), type_names=["Na", "Cl", "K"])


@pytest.mark.parametrize(
    "case, field, tensor, problem", VAL_TENSORS, ids=[c[0] for c in VAL_TENSORS]
)
def test_tensor_problem(case, field, tensor, problem):
    assert problem in tensor_problem(tensor, field, n_atoms=2)


def test_valid_inputs_pass():
    assert structure_problem(_val_nacl(), ["Na", "Cl"]) is None
    assert tensor_problem(VAL_EPS + 1e-5 * np.triu(np.ones((3, 3)), 1)) is None  # rounding noise
    assert tensor_problem(np.diag([1.0, 0.0, -1e-3]), "dielectric_ionic_tensor") is None
    assert tensor_problem(np.full((2, 3, 3), -1.0), "born_effective_charges", n_atoms=2) is None


# ---- Python API: aniso_nequip.predict and the ASE calculator --------------------------------


@pytest.mark.parametrize("case, make, problem", VAL_STRUCTURES[1:], ids=VAL_STRUCTURE_IDS[1:])
def test_predict_api_names_the_structure(case, make, problem, equivariant_model):
    with pytest.raises(InputError) as err:
        aniso_nequip.predict([_val_nacl(), make(case)], equivariant_model, device="cpu")
    assert f"structure 1 ({case})" in str(err.value) and problem in str(err.value)


def test_predict_api_refuses_a_disordered_pymatgen_structure(equivariant_model):
    structure = AseAtomsAdaptor.get_structure(_val_nacl())
    structure.replace(0, {"Na": 0.5, "K": 0.5})
    with pytest.raises(InputError, match=r"structure 0 \(.*\): disordered sites"):
        aniso_nequip.predict([structure], equivariant_model, device="cpu")


@pytest.mark.parametrize(
    "case, make, problem",
    [
        c
        for c in VAL_STRUCTURES
        if c[0] in ("no-cell", "overlapping", "disordered", "unknown-element")
    ],
    ids=["no-cell", "overlapping", "disordered", "unknown-element"],
)
def test_calculator_names_the_crystal(case, make, problem, equivariant_model):
    atoms = make(case)
    atoms.calc = aniso_nequip.DielectricCalculator(equivariant_model)
    with pytest.raises(InputError) as err:
        atoms.calc.get_property("dielectric_tensor", atoms)
    assert str(err.value).startswith(f"{case}: ") and problem in str(err.value)


# ---- training data: dataset_from_file and the datamodule ------------------------------------


def _val_bad_frame(case):
    """A frame (with a valid tensor) for a structure case, or a valid structure with a bad
    tensor for a tensor case."""
    for name, make, problem in VAL_STRUCTURES:
        if name == case:
            return make(case), problem
    for name, field, tensor, problem in VAL_TENSORS:
        if name == case:
            atoms = _val_nacl(case)
            if field == "dielectric_ionic_tensor":
                atoms.info[field] = tensor.reshape(-1)
            else:
                atoms.calc = SinglePointCalculator(atoms, **{field: np.asarray(tensor)})
            return atoms, problem
    raise KeyError(case)


VAL_DATASET_CASES = [
    "nan-position", "no-cell", "overlapping", "unknown-element", "non-finite", "asymmetric",
    "not-positive-definite", "ionic-negative", "singular-cell",
]  # fmt: skip


def _val_transforms(type_names):
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper

    return [ChemicalSpeciesToAtomTypeMapper(model_type_names=type_names)]


@pytest.mark.parametrize("case", VAL_DATASET_CASES)
def test_dataset_loading_refuses_bad_frames(case, tmp_path):
    bad, problem = _val_bad_frame(case)
    path = tmp_path / "train.extxyz"
    ase.io.write(path, [_val_nacl("a"), _val_nacl("b"), bad])
    with pytest.raises(InputError) as err:
        dataset_from_file(
            str(path), _val_transforms(["Na", "Cl"]), include_keys=["dielectric_ionic_tensor"]
        )
    message = str(err.value)
    assert f"`{path}`" in message and "1 of 3 frame(s)" in message
    assert f"frame 2 ({case})" in message and problem in message


def test_datamodule_refuses_a_bad_training_file_before_training(tmp_path):
    from aniso_nequip.data import DielectricDataModule

    bad = tmp_path / "train.extxyz"
    good = tmp_path / "val.extxyz"
    ase.io.write(bad, [_val_nacl("a"), _val_bad_frame("overlapping")[0]])
    ase.io.write(good, [_val_nacl("b")])
    datamodule = DielectricDataModule(
        seed=0,
        train_file_path=str(bad),
        val_file_path=str(good),
        transforms=_val_transforms(["Na", "Cl"]),
        train_dataloader={"_target_": "torch.utils.data.DataLoader", "batch_size": 1},
        val_dataloader={"_target_": "torch.utils.data.DataLoader", "batch_size": 1},
    )
    with pytest.raises(Exception) as err:  # hydra wraps the InputError of dataset_from_file
        datamodule.setup("fit")
    assert isinstance(err.value.__cause__, InputError)
    assert f"`{bad}`" in str(err.value) and "frame 1 (overlapping): atoms 0 and 1" in str(err.value)


def test_valid_dataset_records_its_elements(tmp_path):
    from aniso_nequip.data.files import dataset_elements

    path = tmp_path / "train.extxyz"
    frames = bundled("mp_subset_train", ":6")
    ase.io.write(path, frames)
    dataset = dataset_from_file(str(path))
    assert dataset_elements([dataset]) == sorted({s for a in frames for s in a.symbols})


# ---- data convert: documents ---------------------------------------------------------------


def _val_doc(material_id, atoms=None, electronic=3 * np.eye(3), ionic=None):
    """A Materials Project dielectric document (a cubic crystal: isotropic tensors)."""
    atoms = atoms if atoms is not None else ase.build.bulk("MgO", "rocksalt", a=4.21)
    ionic = np.diag([1.0, 1.0, 1.0]) if ionic is None else ionic
    return {
        "material_id": material_id,
        "structure": AseAtomsAdaptor.get_structure(atoms).as_dict(),
        "electronic": np.asarray(electronic).tolist(),
        "ionic": np.asarray(ionic).tolist(),
        "total": (np.asarray(electronic) + ionic).tolist(),
    }


def _val_disordered_doc(material_id):
    doc = _val_doc(material_id)
    doc["structure"]["sites"][0]["species"] = [
        {"element": "Mg", "occu": 0.5},
        {"element": "Ca", "occu": 0.5},
    ]
    return doc


def _val_overlapping_doc(material_id):
    atoms = ase.build.bulk("MgO", "rocksalt", a=4.21)
    atoms.positions[1] = atoms.positions[0] + [0.2, 0, 0]
    return _val_doc(material_id, atoms)


# (id, bad document maker taking a material id, expected problem)
VAL_DOCUMENTS = [
    ("disordered", _val_disordered_doc, "disordered sites (partial occupancy) 0 (Mg:0.5 Ca:0.5)"),
    ("overlapping", _val_overlapping_doc, "atoms 0 and 1 are 0.200 A apart"),
    ("asymmetric", lambda m: _val_doc(m, electronic=3 * np.eye(3) + np.triu(np.ones((3, 3)), 1)),
     "`electronic` tensor is not symmetric"),
    ("not-positive-definite", lambda m: _val_doc(m, electronic=np.diag([2.0, -1.0, 2.0])),
     "`electronic` tensor is not positive definite"),
    ("ionic-negative", lambda m: _val_doc(m, ionic=np.diag([1.0, -2.0, 1.0])),
     "`ionic` tensor is not positive semi-definite"),
]  # fmt: skip


def _val_docs(tmp_path, bad):
    good = [_val_doc("mp-good-1"), _val_doc("mp-good-2", ase.build.bulk("NaCl", "rocksalt", a=5.6))]
    path = tmp_path / "docs.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump([good[0], bad, good[1]], f)
    return path


@pytest.mark.parametrize("case, make, problem", VAL_DOCUMENTS, ids=[c[0] for c in VAL_DOCUMENTS])
def test_convert_skips_and_reports_bad_documents(case, make, problem, tmp_path):
    report = build_dataset([_val_doc("mp-good-1"), make("mp-bad")], tmp_path / "out.extxyz",
                           split=None, drop_duplicates=False)  # fmt: skip
    assert report["kept"] == 1 and list(report["skipped"]) == ["mp-bad"]
    assert problem in report["skipped"]["mp-bad"]


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_convert_command_with_a_disordered_document(strict, tmp_path, capsys):
    src = _val_docs(tmp_path, _val_disordered_doc("mp-disordered"))
    out = tmp_path / "mp.extxyz"
    code = cli(["data", "convert", str(src), "--out", str(out), "--no-split"]
               + ["--strict"] * strict)  # fmt: skip
    printed = capsys.readouterr()
    if strict:
        assert code == 2 and not out.exists() and not (tmp_path / "mp_report.json").exists()
        assert "mp-disordered: disordered sites" in printed.err and "--strict" in printed.err
    else:
        assert code == 0 and len(ase.io.read(out, ":")) == 2
        assert "skipped mp-disordered: disordered sites" in printed.out


def test_convert_fails_when_no_document_is_valid(tmp_path, capsys):
    src = tmp_path / "docs.json"
    src.write_text(json.dumps([_val_disordered_doc("mp-1"), _val_overlapping_doc("mp-2")]))
    assert cli(["data", "convert", str(src), "--out", str(tmp_path / "x.extxyz")]) == 2
    err = capsys.readouterr().err
    assert "no crystal left" in err and "mp-2: atoms 0 and 1" in err
    assert list(tmp_path.iterdir()) == [src]


# ---- nequip-evaluate ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _val_eval_data(trained, tmp_path_factory):
    """Four test crystals; frame 1 with an asymmetric reference, frame 3 with overlapping atoms."""
    frames = ase.io.read(trained["files"]["test"], ":4")
    asym = np.reshape(frames[1].calc.results["dielectric_tensor"], (3, 3)).copy()
    asym[0, 1] += 1.0
    frames[1].calc = SinglePointCalculator(frames[1], dielectric_tensor=asym.reshape(9))
    frames[3].positions[1] = frames[3].positions[0] + [0.1, 0, 0]
    path = tmp_path_factory.mktemp("val_eval") / "test.extxyz"
    ase.io.write(path, frames)
    return path, frames


def test_evaluate_leaves_a_bad_reference_out_and_skips_a_bad_structure(
    trained, _val_eval_data, tmp_path
):
    path, frames = _val_eval_data
    out = tmp_path / "eval"
    metrics = evaluate(str(trained["dir"] / "best.ckpt"), [str(path)], out, quiet=True)
    assert metrics["n"] == 2  # frames 0 and 2
    (invalid,) = metrics["invalid_references"]
    assert (invalid["frame"], invalid["id"]) == (1, frames[1].info["entry_id"])
    assert "is not symmetric" in invalid["reason"]
    (skipped,) = metrics["skipped"]
    assert skipped["frame"] == 3 and "atoms 0 and 1 are 0.100 A apart" in skipped["reason"]
    report = (out / "metrics.md").read_text()
    assert f"{path} frame 1 ({frames[1].info['entry_id']}): `dielectric_tensor` is not" in report
    assert len(ase.io.read(out / "predictions.extxyz", ":")) == 3  # frame 1 is predicted


@pytest.mark.parametrize("case", ["nothing-valid", "strict"])
def test_evaluate_command_fails_cleanly(case, trained, tmp_path, capsys):
    plutonium = _val_bad_frame("unknown-element")[0]
    frames = [plutonium] if case == "nothing-valid" else [_val_nacl(), plutonium]
    data = tmp_path / "data.extxyz"
    ase.io.write(data, frames)
    out = tmp_path / "out"
    argv = ["--model", str(trained["dir"] / "best.ckpt"), "--data", str(data), "--out", str(out)]
    assert evaluate_main(argv + ["--strict"] * (case == "strict")) == 2
    err = capsys.readouterr().err
    index = len(frames) - 1
    assert f"{data} frame {index} (unknown-element): element(s) Pu unknown to the model" in err
    assert ("--strict: nothing written" in err) == (case == "strict")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


# ---- aniso-nequip predict -------------------------------------------------------------------

VAL_DISORDERED_CIF = """data_disordered
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Na1 Na 0 0 0 0.5
K1 K 0 0 0 0.5
Cl1 Cl 0.5 0.5 0.5 1.0
"""


def _val_predict_inputs(tmp_path):
    good = tmp_path / "nacl.cif"
    ase.io.write(good, _val_nacl())
    disordered = tmp_path / "disordered.cif"
    disordered.write_text(VAL_DISORDERED_CIF)
    overlapping = tmp_path / "overlapping.extxyz"
    ase.io.write(overlapping, [_val_nacl(), _val_bad_frame("overlapping")[0]])
    return [good, disordered, overlapping]


def test_predict_skips_and_lists_bad_structures(equivariant_model, tmp_path):
    good, disordered, overlapping = _val_predict_inputs(tmp_path)
    result = predict_files([str(p) for p in (good, disordered, overlapping)], equivariant_model)
    assert result.sources == [str(good), f"{overlapping}:0"]
    skipped = dict(result.skipped)
    assert "disordered sites (partial occupancy) 0 (Na:0.5 K:0.5)" in skipped[str(disordered)]
    assert "atoms 0 and 1 are 0.100 A apart" in skipped[f"{overlapping}:1"]


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_predict_command_strict(strict, packaged, tmp_path, capsys):
    inputs = [str(p) for p in _val_predict_inputs(tmp_path)]
    out = tmp_path / "out"
    code = cli(["predict", *inputs, "--model", str(packaged), "--out", str(out)]
               + ["--strict"] * strict)  # fmt: skip
    printed = capsys.readouterr()
    assert f"skipped {inputs[1]}: disordered sites" in printed.out
    if strict:
        assert code == 2 and "2 input(s) skipped (--strict: nothing written)" in printed.err
        assert not out.exists()
    else:
        assert code == 0 and (out / "predictions.csv").is_file()


# ---- aniso-nequip screen --------------------------------------------------------------------


def _val_pool(tmp_path):
    frames = bundled("phonondb_test", ":3")
    bad = [_val_bad_frame(c)[0] for c in ("overlapping", "no-cell", "unknown-element")]
    path = tmp_path / "pool.extxyz"
    ase.io.write(path, frames + bad)
    docs = tmp_path / "pool.json"
    docs.write_text(json.dumps([_val_disordered_doc("mp-disordered")]))
    return [str(path), str(docs)]


def test_screen_skips_and_lists_bad_structures(trained, tmp_path, capsys):
    out = tmp_path / "screen"
    argv = [
        "screen",
        "--quiet",
        "--no-dimensionality",
        "--model",
        str(trained["dir"] / "best.ckpt"),
    ]
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
    argv = [
        "screen",
        "--quiet",
        "--no-dimensionality",
        "--model",
        str(trained["dir"] / "best.ckpt"),
    ]
    argv += ["--structures", *structures, "--out", str(out)] + ["--strict"] * (case == "strict")
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "mp-disordered: disordered sites" in err
    assert not (out / "ranking.csv").exists()
    if case == "strict":
        assert "--strict: nothing written" in err and not out.exists()


# ---- elements the model never saw in training: a warning --------------------------------------


def test_untrained_elements_warn(trained, packaged, tmp_path):
    ckpt = aniso_nequip.load_model(trained["dir"] / "best.ckpt")
    package = aniso_nequip.load_model(packaged)
    seen = set(ckpt.training_elements)
    train = ase.io.read(trained["files"]["train"], ":")
    assert seen == {s for a in train for s in a.symbols} and package.training_elements == sorted(
        seen
    )
    unseen = next(e for e in ckpt.type_names if e not in seen)
    atoms = _val_nacl("exotic")
    atoms.symbols[0] = unseen
    with pytest.warns(
        UntrainedElementWarning, match=f"structure 0 \\(exotic\\): element\\(s\\) {unseen}"
    ):
        aniso_nequip.predict([atoms], ckpt, device="cpu")
    cif = tmp_path / "exotic.cif"
    ase.io.write(cif, atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedElementWarning)  # listed, not warned twice
        result = predict_files([str(cif)], [str(packaged)])
    assert result.warnings == [
        f"{cif}: element(s) {unseen} not in the model's training data (an extrapolation: treat "
        "the prediction with care)"
    ]


# ---- 3. configs and runs fail early ----

RUN_TYPE_NAMES = ["H", "Li", "O", "Si"]


def _run_builder(name, value):
    build_tiny(AnisoNetModel, type_names=RUN_TYPE_NAMES, **{name: value})


def _run_datamodule(name, value):
    DielectricDataModule(
        seed=0, train_file_path="never-read.extxyz", **{name: {"batch_size": value}}
    )


def _run_optimizer(name, value):
    module = SimpleNamespace(hparams={"optimizer": {name: value}, "model": {}})
    SelfContainedCheckpoints(RUN_TYPE_NAMES, 5.0).setup(None, module, "fit")


def _run_config(name, value):
    check_config({name: value})


RUN_VARIABLE_CASES = [
    # (where the value is used, variable, value, the message)
    (_run_builder, "r_max", -1, "`r_max` must be a number > 0, got -1"),
    (_run_builder, "r_max", "abc", "`r_max` must be a number > 0, got 'abc'"),
    (_run_builder, "l_max", -1, "`l_max` must be an integer >= 0, got -1"),
    (_run_builder, "l_max", 2.5, "`l_max` must be an integer >= 0, got 2.5"),
    (_run_builder, "num_layers", 0, "`num_layers` must be an integer >= 1, got 0"),
    (_run_builder, "num_features", 0, "`num_features` must be an integer >= 1, got 0"),
    (_run_builder, "num_basis", 0, "`num_basis` must be an integer >= 1, got 0"),
    (_run_builder, "radial_basis", "cosine",
     "`radial_basis` must be one of gaussian, bessel, got 'cosine'"),
    (_run_builder, "type_embed_num_features", 0,
     "`type_embed_num_features` must be an integer >= 1 (or null), got 0"),
    (_run_datamodule, "train_dataloader", 0,
     "`train_dataloader.batch_size` must be an integer >= 1, got 0"),
    (_run_datamodule, "val_dataloader", "8",
     "`val_dataloader.batch_size` must be an integer >= 1, got '8'"),
    (_run_optimizer, "lr", -1, "`lr` must be a number > 0, got -1"),
    (_run_optimizer, "lr", 0.0, "`lr` must be a number > 0, got 0.0"),
    (_run_optimizer, "weight_decay", -0.1, "`weight_decay` must be a number >= 0, got -0.1"),
    (_run_config, "batch_size", 0, "`batch_size` must be an integer >= 1, got 0"),
    (_run_config, "max_epochs", 0, "`max_epochs` must be an integer >= 1, got 0"),
    (_run_config, "early_stopping_patience", -1,
     "`early_stopping_patience` must be an integer >= 0, got -1"),
    (_run_config, "lr_decay", 0, "`lr_decay` must be a number > 0, got 0"),
    (_run_config, "loss_metric", "l2", "`loss_metric` must be one of mse, mae, got 'l2'"),
    (_run_config, "model_dtype", "float16",
     "`model_dtype` must be one of float32, float64, got 'float16'"),
    (_run_config, "physical_readout", "yes", "`physical_readout` must be true or false, got 'yes'"),
    (_run_config, "readout", "exp",
     "`readout` must be one of linear, square, log, local_field, got 'exp'"),
    (_run_builder, "readout", "pooled", "`readout` must be one of linear, square, log, "
     "local_field, got 'pooled'"),
    (_run_config, "num_workers", -1, "`num_workers` must be an integer >= 0, got -1"),
]  # fmt: skip


@pytest.mark.parametrize(
    "check, name, value, message",
    RUN_VARIABLE_CASES,
    ids=[f"{c[0].__name__[5:]}-{c[1]}={c[2]!r}" for c in RUN_VARIABLE_CASES],
)
def test_config_variable_out_of_range(check, name, value, message):
    with pytest.raises(InputError) as err:
        check(name, value)
    assert str(err.value) == message


def test_num_layers_may_be_zero_on_a_backbone():
    check_config({"backbone": "7net-0", "num_layers": 0})
    with pytest.raises(InputError, match="`num_layers` must be an integer >= 1, got 0"):
        check_config({"num_layers": 0})


@pytest.fixture(scope="module")
def _run_data(tmp_path_factory):
    """Small train/val/test files as ``key=value`` overrides of the tiny config."""
    tmp = tmp_path_factory.mktemp("runs_data")
    out = []
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        path = tmp / f"{split}.extxyz"
        ase.io.write(path, bundled(f"mp_subset_{split}", f":{n}"))
        out.append(f"{split}_file={path}")
    return out


def _run_train(args, tmp_path, **env):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [str(BIN / "nequip-train"), "-cn", "configs/tiny.yaml", f"hydra.run.dir={run_dir}", *args],
        cwd=ROOT, capture_output=True, text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore", **env),
    )  # fmt: skip
    return proc, run_dir


RUN_TRAIN_CASES = [
    (["l_max=-1"], "`l_max` must be an integer >= 0, got -1"),
    (["batch_size=0"], "`batch_size` must be an integer >= 1, got 0"),
    (["r_max=abc"], "`r_max` must be a number > 0, got 'abc'"),
]


@pytest.mark.parametrize(
    "args, message", RUN_TRAIN_CASES, ids=[" ".join(c[0]) for c in RUN_TRAIN_CASES]
)
def test_nequip_train_refuses_a_variable_in_one_line(args, message, tmp_path):
    """The config's check runs when nequip-train starts: one line, no run directory."""
    proc, run_dir = _run_train(args, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"nequip-train: error: {message}"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run_dir.exists()


def test_nequip_train_prints_a_builder_error_in_one_line(_run_data, tmp_path):
    """A value that reaches the builder unchecked (not a top-level variable) fails there, after
    the data statistics: Hydra and Lightning wrap it, the excepthook prints one line."""
    proc, _ = _run_train([*_run_data, "training_module.model.num_basis=0"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "nequip-train: error: `num_basis` must be an integer >= 1, got 0"
    assert "Traceback" not in proc.stderr


def _run_wrapped(error):
    """``error`` raised from within another exception, as Hydra wraps a builder's errors."""
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("Error in call to target 'AnisoNetModel'") from inner
    except RuntimeError as outer:
        return outer


RUN_HOOK_CASES = [
    # (error, ANISO_NEQUIP_TRACEBACK, one line expected)
    (InputError("`lr` must be a number > 0, got -1"), "", True),
    (InputError("`lr` must be a number > 0, got -1"), "1", False),
    (ValueError("a bug"), "", False),
]


@pytest.mark.parametrize(
    "error, env, one_line",
    RUN_HOOK_CASES,
    ids=["input-error", "input-error-traceback-asked", "other-error"],
)
def test_excepthook_prints_input_errors_only(error, env, one_line, monkeypatch, capsys):
    monkeypatch.setenv(errors.TRACEBACK_VARIABLE, env)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/nequip-train"])
    wrapped = _run_wrapped(error)
    errors._excepthook(type(wrapped), wrapped, wrapped.__traceback__, previous=sys.__excepthook__)
    err = capsys.readouterr().err
    if one_line:
        assert err == f"nequip-train: error: {error}\n"
    else:
        assert "Traceback" in err and str(error) in err


@pytest.fixture(scope="module")
def _run_source(tmp_path_factory):
    """A checkpoint as fine-tuning reads it: the source model's builder configuration."""
    path = tmp_path_factory.mktemp("runs_ft") / "source.ckpt"
    model = {"_target_": "aniso_nequip.model.AnisoNetModel", "type_names": RUN_TYPE_NAMES,
             "r_max": 5.0, "l_max": 2}  # fmt: skip
    torch.save({"hyper_parameters": {"model": model}}, path)
    return path


RUN_FINETUNE_CASES = [
    ([RUN_TYPE_NAMES[1], RUN_TYPE_NAMES[0], *RUN_TYPE_NAMES[2:]], 5.0,
     r"type_names \['H', 'Li', 'O', 'Si'\] but the data are mapped with model_type_names "
     r"\['Li', 'H', 'O', 'Si'\]"),
    (RUN_TYPE_NAMES, 4.0,
     r"has r_max 5.0 but the data's neighbour lists use r_max 4.0: set r_max=5.0"),
]  # fmt: skip


@pytest.mark.parametrize(
    "type_names, r_max, message", RUN_FINETUNE_CASES, ids=["reordered-elements", "other-r_max"]
)
def test_finetuning_refuses_another_element_order_or_cutoff(
    type_names, r_max, message, _run_source
):
    module = SimpleNamespace(
        hparams={"model": {"_target_": "nequip.model.saved_models.load_saved_model",
                           "input_path": str(_run_source)}}
    )  # fmt: skip
    SelfContainedCheckpoints(RUN_TYPE_NAMES, 5.0).setup(None, module, "fit")
    with pytest.raises(InputError, match=message) as err:
        SelfContainedCheckpoints(type_names, r_max).setup(None, module, "fit")
    assert str(_run_source) in str(err.value)


RUN_SWEEP_CASES = [
    # (spec changes, command-line overrides, error type, message)
    ({"metric": "val0_epoch/eps_poly_mea"}, [], SpecError,
     "`metric` 'val0_epoch/eps_poly_mea' is not logged by tiny.yaml; choose one of "
     "val0_epoch/irreps_mse, val0_epoch/component_mae, val0_epoch/eps_poly_mae"),
    ({"metric": "test0_epoch/eps_poly_mae"}, [], SpecError, "is not logged by tiny.yaml"),
    ({"overrides": ["max_epochs=0"]}, [], InputError,
     "`max_epochs` must be an integer >= 1, got 0"),
    ({}, ["batch_size=0"], InputError, "`batch_size` must be an integer >= 1, got 0"),
    ({}, ["--n-trials", "-1"], InputError, "`n_trials` must be >= 1, got -1"),
]  # fmt: skip


@pytest.mark.parametrize(
    "changes, args, kind, message",
    RUN_SWEEP_CASES,
    ids=["metric-typo", "metric-not-per-epoch", "spec-override", "cli-override", "n-trials"],
)
def test_sweep_checks_before_the_first_trial(
    changes, args, kind, message, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(ROOT)
    spec = sweep_spec(tmp_path, **changes)
    overrides = [a for a in args if "=" in a]
    n_trials = int(args[1]) if args[:1] == ["--n-trials"] else None
    with pytest.raises(kind, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_and_report(spec, n_trials=n_trials, overrides=overrides)
    assert cli(["sweep", str(spec), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists(), "nothing written, no study created"


def test_sweep_whose_trials_all_fail_exits_non_zero(_run_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    spec = sweep_spec(
        tmp_path,
        sampler={"name": "grid"},
        n_trials=None,
        pruner=None,
        parameters={"num_basis": {"choices": [0]}},
    )
    assert cli(["sweep", str(spec), *_run_data]) == 2
    err = capsys.readouterr().err
    assert "all 1 trials of sweep `s` failed" in err
    assert "`num_basis` must be an integer >= 1, got 0" in err
    assert "FAIL" in (tmp_path / "s" / "trials.csv").read_text()


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_seeded_sampler_draws_new_values(sampler, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_spec(sweep_spec(tmp_path, sampler={"name": sampler, "seed": 0}))

    def draw(spec):
        study = open_study(spec)  # a new study object on the same storage: a resumed sweep
        trial = study.ask()
        values = tuple(_suggest(trial, n, p) for n, p in spec.parameters.items())
        study.tell(trial, 1.0)
        return values

    first = [draw(spec), draw(spec)]
    assert first[0] != first[1], "the resumed sampler repeated the first trial's values"
    again = load_spec(sweep_spec(tmp_path, name="t", sampler={"name": sampler, "seed": 0}))
    assert [draw(again), draw(again)] == first, "a new study with the same seed repeats them"


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


def _run_tensor(kind):
    return {
        "nan": np.full((3, 3), np.nan),
        "inf": np.diag([2.0, np.inf, 3.0]),
        "negative": np.diag([2.0, 3.0, -1.0]),
    }[kind]


RUN_STATS_CASES = [
    ("nan", "non-finite entries (NaN or inf) in the `dielectric_tensor` of frame 1"),
    ("inf", "non-finite entries (NaN or inf) in the `dielectric_tensor` of frame 1"),
    ("negative", "an eigenvalue <= 0 (so a_r is undefined) in the `dielectric_tensor` of frame 1"),
]


@pytest.mark.parametrize("kind, message", RUN_STATS_CASES, ids=[c[0] for c in RUN_STATS_CASES])
def test_data_stats_names_the_frames_of_undefined_statistics(kind, message, tmp_path, capsys):
    frames = bundled("mp_subset_test", ":4")
    for i in (1, 3):
        frames[i].calc.results["dielectric_tensor"] = _run_tensor(kind).reshape(9)
    path = tmp_path / "data.extxyz"
    ase.io.write(path, frames)
    ids = [crystal_id(frames[i]) for i in (1, 3)]
    with pytest.raises(InputError) as err:
        dataset_statistics(path)
    assert message in str(err.value)
    assert f"frame 1 ({ids[0]}), frame 3 ({ids[1]})" in str(err.value)
    png = tmp_path / "stats.png"
    assert cli(["data", "stats", str(path), "--png", str(png)]) == 2
    assert "frame 3" in capsys.readouterr().err
    assert not png.exists()
