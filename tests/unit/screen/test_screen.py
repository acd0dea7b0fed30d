"""Screening pools for anisotropic dielectrics: `aniso-nequip screen`, `data mp-candidates`."""

import csv
import gzip
import json
import os
import subprocess
import sys

import ase
import ase.build
import ase.io
import numpy as np
import pytest
import torch
from ase.spacegroup import crystal
from pymatgen.io.ase import AseAtomsAdaptor

from aniso_nequip.data.matching import StructureIndex
from aniso_nequip.errors import InputError
from aniso_nequip.inference import load_model, predict, predict_members
from aniso_nequip.metrics import derived
from aniso_nequip.screen import runner
from aniso_nequip.screen.dimensionality import dimensionality
from aniso_nequip.screen.filters import PoolFilter, Thresholds
from aniso_nequip.screen.runner import exclusion_index
from aniso_nequip.screen.sources import count_structures, iter_structures, shard_size
from aniso_nequip.scripts.cli import main as cli
from helpers import BIN, ROOT, bundled


def _nacl(material_id=None, **info):
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64)
    if material_id:
        atoms.info["material_id"] = material_id
    atoms.info.update(info)
    return atoms


def _mos2():
    return crystal(
        ["Mo", "S"],
        basis=[(1 / 3, 2 / 3, 1 / 4), (1 / 3, 2 / 3, 0.621)],
        spacegroup=194,
        cellpar=[3.16, 3.16, 12.3, 90, 90, 120],
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_filters_apply_thresholds_skip_missing_metadata_and_report():
    pool = {
        "hull-high": _nacl("hull-high", energy_above_hull=0.08, band_gap=5.0),
        "hull-ok": _nacl("hull-ok", energy_above_hull=0.01, band_gap=5.0),
        "gap-low": _nacl("gap-low", energy_above_hull=0.0, band_gap=0.3),
        "no-meta": _nacl("no-meta"),
        "big": _nacl("big").repeat((4, 4, 3)),  # 96 sites
        "noble": ase.Atoms("XeH2", positions=[[0, 0, 0], [2, 0, 0], [0, 2, 0]], cell=[5] * 3),
    }
    pool["noble"].info["material_id"] = "noble"
    keep = PoolFilter(Thresholds())
    kept = [name for name, atoms in pool.items() if keep(atoms, f"pool:{name}")]
    assert kept == ["hull-ok", "no-meta"]
    rules = keep.report["rules"]
    assert "training_set" not in rules  # no --exclude: rule off
    assert rules["energy_above_hull"] == {
        "description": "energy above hull < 0.05 eV/atom",
        "applied": 3,
        "no_metadata": 3,
        "removed": ["hull-high"],
    }
    assert (rules["band_gap"]["applied"], rules["band_gap"]["no_metadata"]) == (2, 3)
    assert rules["band_gap"]["removed"] == ["gap-low"]
    assert rules["n_sites"]["removed"] == ["big"] and rules["n_sites"]["applied"] == 4
    assert rules["noble_gas_hydrogen"]["removed"] == ["noble"]
    assert keep.report["invalid"] == {}  # structures are checked before the filters
    # changed and switched-off thresholds
    loose = PoolFilter(Thresholds(0.1, None, 100))
    assert all(loose(pool[n], n) for n in ("hull-high", "gap-low", "big"))
    assert set(loose.report["rules"]) == {"energy_above_hull", "n_sites", "noble_gas_hydrogen"}


def test_exclusion_by_id_and_by_structure(tmp_path):
    training = [_nacl("mp-1"), ase.build.bulk("MgO", "rocksalt", a=4.21)]
    training[1].info["material_id"] = "mp-2"
    ids = tmp_path / "ids.txt"
    ids.write_text("mp-7\n\nmp-8\n")
    train_file = tmp_path / "train.extxyz"
    ase.io.write(train_file, training)
    index = exclusion_index([str(train_file), str(ids)])
    assert isinstance(index, StructureIndex) and exclusion_index([]) is None
    keep = PoolFilter(Thresholds(), index)
    mgo_supercell = ase.build.bulk("MgO", "rocksalt", a=4.215, cubic=True)  # another cell
    mgo_supercell.info["material_id"] = "mp-99"
    pool = [
        _nacl("mp-8"),  # id in the id list
        ase.build.bulk("Si", "diamond", a=5.43),  # new, no id
        mgo_supercell,  # same crystal as mp-2, other id
        ase.build.bulk("NaCl", "cesiumchloride", a=3.3),  # same formula, other structure
    ]
    pool[0].info["material_id"] = "mp-8"
    assert [keep(a, f"pool:{i}") for i, a in enumerate(pool)] == [False, True, False, True]
    rule = keep.report["rules"]["training_set"]
    assert rule["removed"] == ["mp-8", "mp-99"] and rule["applied"] == 4
    assert rule["matched"] == {"mp-8": "same id", "mp-99": "structure of mp-2"}


def test_dimensionality_of_known_cases():
    assert dimensionality(_mos2()) == 2  # van der Waals layers
    assert dimensionality(_nacl()) == 3
    assert dimensionality(ase.build.bulk("C", "diamond", a=3.57)) == 3


def test_sources_stream_shards_and_name_bad_input(tmp_path):
    frames = bundled("phonondb_test", ":5")
    xyz = tmp_path / "a.extxyz.gz"
    ase.io.write(xyz, frames)
    folder = tmp_path / "cifs"
    folder.mkdir()
    ase.io.write(folder / "nacl.cif", _nacl())
    ase.io.write(folder / "POSCAR_mos2", _mos2(), format="vasp")
    structure = AseAtomsAdaptor.get_structure(_nacl()).as_dict()
    docs = [{"material_id": "mp-1", "structure": structure, "band_gap": 5.0, "nsites": 2}]
    pool = tmp_path / "pool.json.gz"
    with gzip.open(pool, "wt") as f:
        json.dump(docs, f)
    inputs = [str(xyz), str(folder), str(pool)]
    everything = list(iter_structures(inputs))
    assert [i for i, *_ in everything] == list(range(8))
    assert all(problem is None for *_, problem in everything)
    assert [s for _, s, *_ in everything][4:] == [
        f"{xyz}:4",
        str(folder / "POSCAR_mos2"),
        str(folder / "nacl.cif"),
        f"{pool}#0",
    ]
    assert everything[6][2].info["entry_id"] == "nacl"
    assert everything[7][2].info == {"material_id": "mp-1", "band_gap": 5.0}
    np.testing.assert_allclose(everything[2][2].positions, frames[2].positions)
    # shard i of n holds index % n == i; together they are the pool
    shards = [[i for i, *_ in iter_structures(inputs, s, 3)] for s in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 7], [2, 5]]

    molecule = tmp_path / "molecule.extxyz"
    ase.io.write(molecule, ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    bad_doc = tmp_path / "bad.json"
    bad_doc.write_text(
        json.dumps([docs[0], {"material_id": "mp-2", "structure": {"sites": [{"x": 1}]}}])
    )
    # bad structures come with their problem (the runner skips and lists them), bad inputs raise
    (entry,) = iter_structures([str(molecule)])
    assert entry[1] == f"{molecule}:0" and "no periodic 3D cell" in entry[3]
    good, bad = iter_structures([str(bad_doc)])
    assert good[3] is None and bad[2] is None and bad[3].startswith("mp-2: malformed structure")
    with pytest.raises(InputError, match="does not exist"):
        list(iter_structures([str(tmp_path / "missing.extxyz")]))


@pytest.fixture(scope="module")
def models(trained, tmp_path_factory):
    """Two different tiny models: the trained checkpoint and a copy with perturbed weights."""
    best = trained["dir"] / "best.ckpt"
    other = tmp_path_factory.mktemp("models") / "perturbed.ckpt"
    ckpt = torch.load(best, weights_only=False)
    generator = torch.Generator().manual_seed(0)
    for name, value in ckpt["state_dict"].items():
        if name.endswith("weight") and value.is_floating_point():
            noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            ckpt["state_dict"][name] = value + 0.05 * noise * value.abs().mean()
    torch.save(ckpt, other)
    return [str(best), str(other)]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """14 real crystals, a layered MoS2 cell and a crystal with an element models do not know;
    the training set holds 2 of the crystals (one by id, one as a differently labelled copy)."""
    tmp = tmp_path_factory.mktemp("pool")
    frames = bundled("phonondb_test", ":14")
    mos2 = _mos2()
    mos2.info["entry_id"] = "mos2"
    unknown = ase.build.bulk("PuO2", "fluorite", a=5.4)
    unknown.info["entry_id"] = "puo2"
    ase.io.write(tmp / "pool.extxyz", frames + [mos2, unknown])
    copy = frames[5].copy()
    copy.info = {"entry_id": "train-copy"}
    copy.calc = frames[5].calc
    ase.io.write(tmp / "train.extxyz", [frames[3], copy])
    return {"pool": str(tmp / "pool.extxyz"), "train": str(tmp / "train.extxyz"), "frames": frames}


def test_ensemble_screen_ranks_and_resumed_shards_equal_unsharded(
    models, pool, tmp_path, monkeypatch, capsys
):
    base = ["screen", "--quiet", "--structures", pool["pool"], "--exclude", pool["train"]]
    base += ["--model", *models, "--top", "4"]
    whole = tmp_path / "whole"
    assert cli([*base, "--out", str(whole)]) == 0
    summary = json.loads((whole / "summary.json").read_text())
    assert (summary["read"], summary["predicted"]) == (16, 13)
    assert summary["invalid"] == {"puo2": "element(s) Pu unknown to the model"}
    ids = [a.info["entry_id"] for a in pool["frames"]]
    assert summary["rules"]["training_set"]["matched"] == {
        ids[3]: "same id",
        ids[5]: "structure of train-copy",
    }
    assert summary["training_set_size"] == 2  # the --exclude file carries tensors
    text = (whole / "summary.md").read_text()
    assert "puo2: element(s) Pu unknown" in text
    assert "| not in the training set (--exclude) | 15 | 0 | 2 |" in text
    for png in ("a_r_by_dimensionality.png", "a_r_histogram.png"):
        assert (whole / png).read_bytes()[:4] == b"\x89PNG"

    rows = _rows(whole / "ranking.csv")
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 14)]
    a_r_mean = np.array([float(r["a_r_mean"]) for r in rows])
    assert (np.diff(a_r_mean) <= 0).all()
    assert {r["id"]: r["dimensionality"] for r in rows}["mos2"] == "2"
    # ensemble statistics recomputed from each model's predictions
    by_id = {a.info["entry_id"]: a for a in ase.io.read(pool["pool"], ":")}
    structures = [by_id[r["id"]] for r in rows]
    per_model = np.stack([predict(structures, load_model(m), device="cpu") for m in models])
    a_r = np.stack([derived(t)["a_r"] for t in per_model])
    eps_poly = np.stack([derived(t)["eps_poly"] for t in per_model])
    assert np.abs(a_r[0] - a_r[1]).max() > 1e-4  # the two models differ
    for column, expected in (
        ("a_r_mean", a_r.mean(0)),
        ("a_r_std", a_r.std(0)),
        ("eps_poly_mean", eps_poly.mean(0)),
        ("eps_poly_std", eps_poly.std(0)),
        ("eps_xx", per_model.mean(0)[:, 0, 0]),
    ):
        np.testing.assert_allclose([float(r[column]) for r in rows], expected, rtol=1e-5)
    candidates = ase.io.read(whole / "candidates.extxyz", ":")
    assert [a.info["rank"] for a in candidates] == [1, 2, 3, 4]
    assert [a.info.get("entry_id") for a in candidates] == [r["id"] for r in rows[:4]]
    np.testing.assert_allclose(
        candidates[0].calc.results["dielectric_tensor"].reshape(3, 3),
        per_model[:, 0].mean(0),
        rtol=1e-6,
    )
    axes = candidates[0].info["principal_axes"].reshape(3, 3)
    eig = candidates[0].info["eigenvalues"]
    np.testing.assert_allclose(axes @ per_model[:, 0].mean(0) @ axes.T, np.diag(eig), atol=1e-6)

    # sharded, interrupted in shard 1, resumed, merged: the same ranking
    sharded = tmp_path / "sharded"
    assert cli([*base, "--out", str(sharded), "--shard", "0/2"]) == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "predict_members", interrupted)
    assert cli([*base, "--out", str(sharded), "--shard", "1/2"]) == 130
    assert sorted(p.name for p in (sharded / "shards").iterdir()) == [
        "settings.json",
        "shard-0-of-2.csv",
        "shard-0-of-2.extxyz",
        "shard-0-of-2.json",
    ]
    assert cli(["screen", "merge", str(sharded)]) == 2
    assert "shard(s) 1/2 not finished" in capsys.readouterr().err
    monkeypatch.undo()
    done = (sharded / "shards" / "shard-0-of-2.json").stat().st_mtime_ns
    for shard in ("0/2", "1/2"):
        assert cli([*base, "--out", str(sharded), "--shard", shard]) == 0
    assert "shard 0/2 had finished before" in capsys.readouterr().out
    assert (sharded / "shards" / "shard-0-of-2.json").stat().st_mtime_ns == done
    assert cli(["screen", "merge", str(sharded)]) == 0
    resumed = _rows(sharded / "ranking.csv")
    assert [r["id"] for r in resumed] == [r["id"] for r in rows]
    for column in ("a_r_mean", "a_r_std", "eps_poly_mean", "eig_3"):
        np.testing.assert_allclose(
            [float(r[column]) for r in resumed], [float(r[column]) for r in rows], rtol=1e-6
        )
    assert [r["dimensionality"] for r in resumed] == [r["dimensionality"] for r in rows]

    # other settings into the same folder are refused; --force discards the old shards
    assert cli([*base, "--out", str(whole), "--top", "2"]) == 2
    assert "other settings (top)" in capsys.readouterr().err
    upper = [*base, "--out", str(whole), "--rank-by", "upper", "--k", "2", "--no-dimensionality"]
    assert cli([*upper, "--force"]) == 0
    rows = _rows(whole / "ranking.csv")
    mean, std = (np.array([float(r[c]) for r in rows]) for c in ("a_r_mean", "a_r_std"))
    bound = np.array([float(r["a_r_upper"]) for r in rows])
    np.testing.assert_allclose(bound, mean + 2 * std)
    assert (np.diff(bound) <= 0).all() and {r["dimensionality"] for r in rows} == {""}
    assert not (whole / "a_r_by_dimensionality.png").exists()  # no stale outputs


def test_unphysical_predictions_rank_last_unless_kept(models, pool, tmp_path, monkeypatch, capsys):
    """A crystal predicted with an eigenvalue below 1 (and so the largest a_r) ranks after all
    physical ones and stays out of the candidates of every shard, unless --keep-unphysical (an
    eigenvalue below 0.5 would be a failed prediction, never ranked: test_bad_inputs)."""
    bad = pool["frames"][0].info["entry_id"]

    def unphysical(structures, model, *args, **kwargs):
        tensors = predict_members(structures, model, *args, **kwargs)
        for i, atoms in enumerate(structures):
            if atoms.info.get("entry_id") == bad:
                tensors[:, i] = np.diag([0.8, 32.0, 32.0])
        return tensors

    monkeypatch.setattr(runner, "predict_members", unphysical)
    base = ["screen", "--quiet", "--model", models[0], "--structures", pool["pool"]]
    base += ["--exclude", pool["train"], "--top", "3", "--no-dimensionality"]
    out = tmp_path / "out"
    for shard in ("0/2", "1/2"):
        assert cli([*base, "--out", str(out), "--shard", shard, "--merge"]) == 0
    rows = _rows(out / "ranking.csv")
    assert [r["physical"] for r in rows] == ["True"] * (len(rows) - 1) + ["False"]
    assert rows[-1]["id"] == bad and float(rows[-1]["eig_1"]) == pytest.approx(0.8)
    a_r = np.array([float(r["a_r"]) for r in rows])
    assert a_r[-1] == pytest.approx(40.0) and a_r[-1] > a_r[:-1].max()
    assert (np.diff(a_r[:-1]) <= 0).all()
    candidates = ase.io.read(out / "candidates.extxyz", ":")
    assert [a.info["entry_id"] for a in candidates] == [r["id"] for r in rows[:3]]
    assert all(a.info["physical"] is True for a in candidates)
    summary = json.loads((out / "summary.json").read_text())
    unphysical_summary = summary["unphysical"]
    assert (unphysical_summary["count"], unphysical_summary["ranked_last"]) == (1, True)
    (listed,) = unphysical_summary["listed"]
    assert (listed["id"], listed["formula"]) == (bad, rows[-1]["formula"])
    assert listed["eig_1"] == pytest.approx(0.8)
    assert bad not in [r["id"] for r in summary["top"]]
    text = (out / "summary.md").read_text()
    assert "## Unphysical predictions" in text and "eps_inf eigenvalues are >= 1" in text
    assert f"- {bad} ({listed['formula']}): smallest eigenvalue 0.800" in text

    keep = [*base, "--out", str(out), "--keep-unphysical"]
    assert cli(keep) == 2
    assert "keep_unphysical" in capsys.readouterr().err
    assert cli([*keep, "--force"]) == 0
    rows = _rows(out / "ranking.csv")
    assert (rows[0]["id"], rows[0]["physical"]) == (bad, "False")
    candidates = ase.io.read(out / "candidates.extxyz", ":")
    assert candidates[0].info["entry_id"] == bad and candidates[0].info["physical"] is False
    summary = json.loads((out / "summary.json").read_text())
    assert summary["top"][0]["id"] == bad and summary["unphysical"]["ranked_last"] is False


def test_document_pool_filters_by_metadata(models, tmp_path):
    frames = bundled("phonondb_test", ":6")
    metadata = [
        {"energy_above_hull": 0.0, "band_gap": 3.0},
        {"energy_above_hull": 0.2, "band_gap": 3.0},
        {"energy_above_hull": 0.01, "band_gap": 0.1},
        {},
        {"band_gap": 2.0},
        {"energy_above_hull": 0.04},
    ]
    docs = [
        {
            "material_id": f"mp-{i}",
            "structure": json.loads(AseAtomsAdaptor.get_structure(a).to_json()),
            **meta,
        }
        for i, (a, meta) in enumerate(zip(frames, metadata))
    ]
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(docs))
    out = tmp_path / "out"
    args = ["screen", "--quiet", "--model", models[0], "--structures", str(path)]
    assert cli([*args, "--out", str(out), "--no-dimensionality", "--min-band-gap", "0.05"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rules = summary["rules"]
    assert (rules["energy_above_hull"]["applied"], rules["energy_above_hull"]["no_metadata"]) == (
        4,
        2,
    )
    assert rules["energy_above_hull"]["removed"] == ["mp-1"]
    assert rules["band_gap"]["removed"] == [] and rules["band_gap"]["no_metadata"] == 2
    ranked = {r["id"]: r for r in _rows(out / "ranking.csv")}
    assert set(ranked) == {"mp-0", "mp-2", "mp-3", "mp-4", "mp-5"}
    assert ranked["mp-2"]["band_gap"] == "0.1" and ranked["mp-3"]["energy_above_hull"] == ""


def test_screen_refuses_foreign_output_dir(models, pool, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["screen", "--model", models[0], "--structures", pool["pool"], "--out", str(out)]
    assert cli(args) == 2
    assert "is not empty" in capsys.readouterr().err
    assert cli(["screen", "--model", models[0], "--out", str(out)]) == 2
    assert "needs --structures and --out" in capsys.readouterr().err
    missing = tmp_path / "missing.ckpt"
    assert cli(["screen", "--model", str(missing), "--structures", pool["pool"], "--out", "x"]) == 2
    assert f"`{missing}` does not exist" in capsys.readouterr().err


def test_mp_candidates_queries_the_summary_endpoint(tmp_path, monkeypatch, capsys):
    import mp_api.client
    from emmet.core.summary import SummaryDoc

    structures = [AseAtomsAdaptor.get_structure(a) for a in (_nacl(), _mos2())]
    calls = []

    class Summary:
        def search(self, **kwargs):
            calls.append(kwargs)
            return [
                SummaryDoc.from_structure(
                    meta_structure=s,
                    material_id=f"mp-{i + 1}",
                    energy_above_hull=0.01 * i,
                    band_gap=2.0 + i,
                    deprecated=False,
                )
                for i, s in enumerate(structures)
            ]

    class FakeRester:
        def __init__(self, api_key):
            assert api_key == "s3cr3t-key"
            self.materials = type("Materials", (), {"summary": Summary()})()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(mp_api.client, "MPRester", FakeRester)
    monkeypatch.setenv("MP_API_KEY", "s3cr3t-key")
    out = tmp_path / "pool.json.gz"
    assert cli(["data", "mp-candidates", "--out", str(out), "--max-sites", "20"]) == 0
    (call,) = calls
    assert call["energy_above_hull"] == (0, 0.05) and call["band_gap"] == (0.5, None)
    assert call["nsites"] == (None, 20)
    assert {"material_id", "structure", "energy_above_hull", "band_gap"} <= set(call["fields"])
    printed = capsys.readouterr()
    assert "s3cr3t-key" not in printed.out + printed.err
    entries = list(iter_structures([str(out)]))
    assert [a.info["band_gap"] for _, _, a, _ in entries] == [2.0, 3.0]
    assert [a.info["energy_above_hull"] for _, _, a, _ in entries] == [0.0, 0.01]
    assert [len(a) for _, _, a, _ in entries] == [2, 6]
    assert cli(["data", "mp-candidates", "--out", str(out)]) == 2  # exists: needs --force


@pytest.mark.slow
def test_report_and_layout_do_not_import_the_runner():
    code = (
        "import sys, aniso_nequip.screen.report, aniso_nequip.screen.layout; "
        "print('aniso_nequip.screen.runner' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_screen_function_runs_resumes_and_merges_shards(models, pool, tmp_path):
    from aniso_nequip.screen.layout import Settings
    from aniso_nequip.screen.report import console_summary
    from aniso_nequip.screen.runner import screen

    settings = Settings(models=[models[0]], structures=[pool["pool"]], dimensionality=False)
    out = tmp_path / "one"
    first = screen(out, settings, device="cpu", progress=False)
    assert first.ran and first.missing == [] and first.summary["predicted"] == 15
    assert "ranking.csv" in first.summary["files"] and (out / "ranking.csv").is_file()
    again = screen(out, settings, device="cpu", progress=False)
    assert not again.ran and again.summary["top"] == first.summary["top"]
    assert "16 structures read, 15 screened" in console_summary(again.summary, out)

    sharded = Settings(**{**settings.__dict__, "shards": 2})
    out = tmp_path / "two"
    assert screen(out, sharded, shard=1, device="cpu", progress=False) == runner.ScreenResult(True)
    waiting = screen(out, sharded, shard=1, device="cpu", progress=False, merge_when_done=True)
    assert not waiting.ran and waiting.missing == [0] and waiting.summary is None
    done = screen(out, sharded, shard=0, device="cpu", progress=False, merge_when_done=True)
    assert done.summary["top"] == first.summary["top"]
    with pytest.raises(InputError, match="missing.ckpt` does not exist"):
        screen(out, Settings(models=["missing.ckpt"], structures=[pool["pool"]]))


KILLED_AFTER = """
import os, signal, sys
from aniso_nequip.screen import runner

real, calls = runner.predict_members, []


def predict(structures, *args, **kwargs):
    calls.extend(structures)
    if len(calls) >= {calls}:
        os.kill(os.getpid(), signal.SIGKILL)  # a kill mid-chunk: no clean-up runs
    return real(structures, *args, **kwargs)


runner.predict_members = predict
from aniso_nequip.scripts.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_killed_screen_resumes_to_the_uninterrupted_result(models, pool, tmp_path):
    """SIGKILL in the middle of the fourth chunk, then the same command again: it continues after
    the three finished chunks (its progress bar starts there) and gives byte for byte the outputs
    of a run that was never interrupted."""
    argv = [
        "screen",
        "--model",
        models[0],
        "--structures",
        pool["pool"],
        "--exclude",
        pool["train"],
        "--chunk-size",
        "3",
        "--batch-size",
        "2",
    ]
    whole = tmp_path / "whole"
    assert cli([*argv, "--out", str(whole), "--quiet"]) == 0

    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    script = KILLED_AFTER.replace("{calls}", "10")  # 10th kept crystal: structure 11 of 16
    killed = subprocess.run(
        [sys.executable, "-c", script, *argv, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "/16 [" in killed.stderr and "structure/s" in killed.stderr  # total, rate, time left
    chunks = sorted(p.name for p in (out / "shards" / "shard-0-of-1").iterdir())
    assert chunks == [f"chunk-00000{c}.{s}" for c in range(3) for s in ("csv", "extxyz", "json")]
    assert not (out / "ranking.csv").exists()

    command = [str(BIN / "aniso-nequip"), *argv, "--out", str(out)]
    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert " 9/16 [" in resumed.stderr and "16/16 [" in resumed.stderr
    for name in ("ranking.csv", "candidates.extxyz"):
        assert (out / name).read_text() == (whole / name).read_text()
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (out, whole))
    for key in ("read", "predicted", "ranked", "rules", "invalid", "top", "duplicates"):
        assert summary[key] == expected[key]
    assert summary["peak_rss_mb"] > 50 and "peak memory" in resumed.stdout
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        "settings.json",
        "shard-0-of-1.csv",
        "shard-0-of-1.extxyz",
        "shard-0-of-1.json",
    ]


def test_slurm_job_array_scripts_rank_as_one_run(models, pool, tmp_path):
    """examples/slurm/: three array tasks (ids 1-3, started together) running the shard script
    as separate processes with SLURM's environment, then the merge script: the ranking of one
    unsharded run."""
    whole = tmp_path / "whole"
    options = ["--no-dimensionality", "--chunk-size", "2"]
    argv = [
        "screen",
        "--quiet",
        "--model",
        models[0],
        "--structures",
        pool["pool"],
        "--exclude",
        pool["train"],
        *options,
    ]
    assert cli([*argv, "--out", str(whole)]) == 0

    out = tmp_path / "array"
    env = dict(
        os.environ,
        POOL=pool["pool"],
        EXCLUDE=pool["train"],
        OUT=str(out),
        MODEL=models[0],
        SCREEN_ARGS=" ".join(options),
        PYTHONWARNINGS="ignore",
        PATH=f"{BIN}:{os.environ['PATH']}",
        SLURM_ARRAY_TASK_MIN="1",
        SLURM_ARRAY_TASK_COUNT="3",
        SLURM_CPUS_PER_TASK="1",
    )
    slurm = ROOT / "examples" / "slurm"
    tasks = [
        subprocess.Popen(
            ["bash", str(slurm / "screen_shard.sbatch")],
            cwd=tmp_path,
            env={**env, "SLURM_ARRAY_TASK_ID": str(i)},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in (1, 2, 3)
    ]
    for task in tasks:
        stdout, stderr = task.communicate()
        assert task.returncode == 0, stderr[-3000:]
        assert "done; `aniso-nequip screen merge" in stdout
    shards = sorted(p.name for p in (out / "shards").glob("*.json"))
    assert shards == ["settings.json"] + [f"shard-{i}-of-3.json" for i in range(3)]
    merged = subprocess.run(
        ["bash", str(slurm / "screen_merge.sbatch")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert merged.returncode == 0, merged.stderr[-3000:]
    rows, expected = _rows(out / "ranking.csv"), _rows(whole / "ranking.csv")
    assert [r["id"] for r in rows] == [r["id"] for r in expected] and len(rows) == 13
    for column in ("a_r", "eps_poly", "eig_1", "eps_xy"):
        got, want = ([float(r[column]) for r in x] for x in (rows, expected))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert [r["fingerprint"] for r in rows] == [r["fingerprint"] for r in expected]


def test_count_structures_for_the_progress_bar(pool, tmp_path):
    frames = ase.io.read(pool["pool"], ":")
    gz = tmp_path / "pool.extxyz.gz"
    with gzip.open(gz, "wt") as f:
        ase.io.write(f, frames, format="extxyz")
    folder = tmp_path / "cifs"
    folder.mkdir()
    for atoms in frames[:2]:
        ase.io.write(folder / f"{atoms.info['entry_id']}.cif", atoms)
    docs = tmp_path / "docs.json"
    docs.write_text(json.dumps([{"material_id": "mp-1"}, {"material_id": "mp-2"}]))
    assert count_structures([pool["pool"], gz, folder, docs]) == 16 + 16 + 2 + 2
    assert [shard_size(16, i, 3) for i in range(3)] == [6, 5, 5]
    cut = tmp_path / "cut.extxyz"
    cut.write_text("".join(open(pool["pool"]).readlines()[:-1]))  # a frame cut short
    assert count_structures([cut]) is None
    assert count_structures([tmp_path / "pool.cif"]) is None  # other formats: not counted


def test_domain_reference_file_is_built_once_for_all_shards(models, pool, tmp_path, monkeypatch):
    """A --domain-reference training file is turned into a reference by the first shard only
    (saved in OUT/shards); the other shard reads it, and both score their crystals with it."""
    from aniso_nequip.screen.layout import Settings, reference_path
    from aniso_nequip.screen.runner import screen

    real, built = runner.resolve_reference, []

    def counted(models, reference, *args, **kwargs):
        built.append(reference)
        return real(models, reference, *args, **kwargs)

    monkeypatch.setattr(runner, "resolve_reference", counted)
    settings = Settings(
        models=[models[0]],
        structures=[pool["pool"]],
        dimensionality=False,
        shards=2,
        domain_reference=pool["train"],
    )
    out = tmp_path / "out"
    for shard in (0, 1):
        screen(out, settings, shard=shard, device="cpu", progress=False, merge_when_done=True)
    assert built == [pool["train"]] and reference_path(out).is_file()
    rows = {r["id"]: r for r in _rows(out / "ranking.csv")}
    scores = [float(r["domain_score"]) for r in rows.values()]
    assert len(scores) == 15 and np.isfinite(scores).all()
    trained_id = pool["frames"][3].info["entry_id"]  # a training crystal: its own nearest
    assert rows[trained_id]["nearest_training_id"] == trained_id
    assert float(rows[trained_id]["domain_score"]) < 1e-2 < max(scores)
