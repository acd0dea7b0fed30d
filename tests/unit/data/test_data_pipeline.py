"""Materials Project documents -> cleaned, split extxyz/HDF5 (``aniso-nequip data``)."""

import gzip
import json

import numpy as np
import pytest
from pymatgen.io.ase import AseAtomsAdaptor

from aniso_nequip.data import dataset_from_file, read_frames, write_frames
from aniso_nequip.data.cleaning import clean
from aniso_nequip.data.mp import (
    DocumentError,
    convert_documents,
    dielectric_documents,
    doc_to_atoms,
    download_candidates,
)
from aniso_nequip.data.pipeline import build_dataset, dataset_paths
from aniso_nequip.data.splits import split_frames
from aniso_nequip.data.stats import dataset_statistics
from aniso_nequip.errors import InputError
from aniso_nequip.io import OutputExistsError
from aniso_nequip.scripts.cli import main as cli
from helpers import bundled, mp_document, reference_tensors, rotation

SCHEMA_INFO = {"source", "entry_id", "crystal_system", "spacegroup", "dielectric_ionic_tensor"}


@pytest.fixture(scope="module")
def frames():
    return bundled("mp_subset_val", ":24")


@pytest.fixture(scope="module")
def docs(frames):
    return [mp_document(a) for a in frames]


def _dump(docs, path):
    with gzip.open(path, "wt") as f:
        json.dump(docs, f)
    return path


def test_document_round_trip_to_extxyz_and_nequip(frames, docs, tmp_path):
    src = _dump(docs, tmp_path / "docs.json.gz")
    out = tmp_path / "mp.extxyz"
    assert cli(["data", "convert", str(src), "--out", str(out), "--no-split"]) == 0
    converted = read_frames(out)
    report = json.loads((tmp_path / "mp_report.json").read_text())
    assert report["documents"] == 24 and report["kept"] == len(converted) == 24
    for atoms, ref in zip(converted, frames):
        assert SCHEMA_INFO <= set(atoms.info)
        assert atoms.info["material_id"] == ref.info["entry_id"]
        assert atoms.info["source"] == "mp-dfpt-pbe"
        assert atoms.info["crystal_system"] == ref.info["crystal_system"]
        assert int(atoms.info["spacegroup"]) == int(ref.info["spacegroup"])
        assert np.shape(atoms.calc.results["dielectric_tensor"]) == (9,)
        assert np.shape(atoms.info["dielectric_ionic_tensor"]) == (9,)
        for got, want in zip(reference_tensors(atoms), reference_tensors(ref)):
            np.testing.assert_allclose(got, want, atol=1e-12)
        np.testing.assert_allclose(atoms.positions, ref.positions, atol=1e-8)
        np.testing.assert_allclose(atoms.cell.array, ref.cell.array, atol=1e-8)
    # and nequip reads the same tensors from our file as from the bundled one
    ours, theirs = dataset_from_file(str(out)), frames
    for i in (0, 11, 23):
        np.testing.assert_allclose(
            ours[i]["dielectric_tensor"][0].numpy(), reference_tensors(theirs[i])[0], atol=1e-12
        )


def test_emmet_document_objects_are_accepted(frames):
    doc = mp_document(frames[0], as_dict=False)
    atoms = doc_to_atoms(doc)
    np.testing.assert_allclose(
        reference_tensors(atoms)[0], reference_tensors(frames[0])[0], atol=1e-12
    )
    assert atoms.info["frame_deviation"] < 1e-6


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda d: d.pop("electronic"), "missing `electronic` tensor"),
        (lambda d: d.update(electronic=[[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]]), "non-finite"),
        (lambda d: d.update(electronic=[[1, 0], [0, 1]]), "shape (2, 2), expected 3x3"),
        (lambda d: d["structure"].update(sites=[]), "empty structure"),
        (lambda d: d["structure"]["sites"][0]["species"][0].update(element="Xx"), "malformed"),
        (lambda d: d.pop("structure"), "missing `structure`"),
    ],
)
def test_bad_documents_are_reported_by_id_and_skipped(frames, mutate, problem, tmp_path):
    bad = mp_document(frames[0], material_id="mp-bad")
    mutate(bad)
    with pytest.raises(DocumentError, match="mp-bad") as err:
        doc_to_atoms(bad)
    assert problem in str(err.value)
    src = _dump([bad, mp_document(frames[1])], tmp_path / "docs.json.gz")
    out = tmp_path / "out.extxyz"
    assert cli(["data", "convert", str(src), "--out", str(out), "--no-split"]) == 0
    report = json.loads((tmp_path / "out_report.json").read_text())
    assert list(report["skipped"]) == ["mp-bad"] and problem in report["skipped"]["mp-bad"]
    assert len(read_frames(out)) == 1


def test_truncated_json_fails_cleanly_and_writes_nothing(docs, tmp_path, capsys):
    text = json.dumps(docs[:3])
    src = tmp_path / "docs.json"
    src.write_text(text[: len(text) // 2])
    out = tmp_path / "mp.extxyz"
    assert cli(["data", "convert", str(src), "--out", str(out)]) == 2
    assert "docs.json` is not valid JSON" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [src]


def test_failed_write_leaves_no_partial_file(frames, tmp_path, monkeypatch):
    import ase.io

    def broken(path, *args, **kwargs):
        with open(path, "w") as f:
            f.write("half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ase.io, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        write_frames(frames[:2], tmp_path / "x.extxyz")
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_are_not_overwritten(docs, tmp_path, capsys):
    src = _dump(docs[:12], tmp_path / "docs.json.gz")
    out = tmp_path / "mp.extxyz"
    (tmp_path / "mp_train.extxyz").write_text("mine")
    assert cli(["data", "convert", str(src), "--out", str(out)]) == 2
    assert "outputs exist" in capsys.readouterr().err
    assert (tmp_path / "mp_train.extxyz").read_text() == "mine" and not out.exists()
    assert cli(["data", "convert", str(src), "--out", str(out), "--force"]) == 0
    sizes = [len(read_frames(tmp_path / f"mp_{s}.extxyz")) for s in ("train", "val", "test")]
    assert sizes == [10, 1, 1]


def _with_id(atoms, material_id, eps=None):
    from ase.calculators.singlepoint import SinglePointCalculator

    tensor = reference_tensors(atoms)[0] if eps is None else np.asarray(eps)
    atoms = atoms.copy()
    atoms.info.update(material_id=material_id, entry_id=material_id, frame_deviation=0.0)
    atoms.calc = SinglePointCalculator(atoms, dielectric_tensor=tensor.reshape(9))
    return atoms


def test_crystals_without_ids_are_never_duplicates_by_id(frames):
    distinct = [_with_id(a, None) for a in frames[:3]]
    for atoms in distinct:
        del atoms.info["material_id"], atoms.info["entry_id"]
    copy = distinct[0].copy()
    copy.calc = distinct[0].calc
    kept, report = clean([*distinct, copy])
    assert kept == distinct
    assert report["removed"]["duplicate_id"] == []
    assert report["removed"]["duplicate_structure"] == ["<frame 3>"]


def test_documents_without_material_id_are_all_kept(frames, tmp_path):
    docs = [mp_document(a) for a in frames[:3]]
    for doc in docs:
        doc["material_id"] = None
    broken = {**docs[0], "electronic": None}
    converted, skipped = convert_documents([*docs, broken])
    assert skipped == {"<document 3>": "missing `electronic` tensor"}
    assert all("material_id" not in a.info for a in converted)
    report = build_dataset([*docs, broken], tmp_path / "noid.extxyz", split=None)
    assert report["kept"] == 3 and report["removed"]["duplicate_id"] == []
    assert len(read_frames(tmp_path / "noid.extxyz")) == 3


def test_build_dataset_writes_its_report_and_refuses_existing_outputs(docs, tmp_path):
    out = tmp_path / "mp.extxyz.gz"
    report = build_dataset(docs[:12], out, split=(0.5, 0.25, 0.25), seed=3)
    paths = dataset_paths(out)
    assert {p.name for p in paths.values()} == {
        "mp.extxyz.gz",
        "mp_report.json",
        "mp_train.extxyz.gz",
        "mp_val.extxyz.gz",
        "mp_test.extxyz.gz",
    }
    assert json.loads(paths["report"].read_text()) == json.loads(json.dumps(report))
    assert report["split"] == {
        "fractions": [0.5, 0.25, 0.25],
        "seed": 3,
        "stratify": False,
        "train": 6,
        "val": 3,
        "test": 3,
    }
    assert [len(read_frames(paths[s])) for s in ("all", "train", "val", "test")] == [12, 6, 3, 3]
    with pytest.raises(OutputExistsError, match="outputs exist"):
        build_dataset(docs[:12], out)
    with pytest.raises(InputError, match="no crystal left"):
        build_dataset(docs[:2], tmp_path / "none.extxyz", max_eps_poly=0.5)


def test_dataset_statistics():
    from helpers import DATASETS

    stats = dataset_statistics(DATASETS / "mp_subset_test.extxyz.gz")
    assert stats.n_frames == len(stats.eps_poly) == len(stats.a_r) == 111
    counts = list(stats.crystal_systems.values())
    assert stats.crystal_systems["orthorhombic"] == 24 and sum(counts) == 111
    assert counts == sorted(counts, reverse=True)
    assert (stats.a_r >= 1).all() and "a_r: mean" in stats.summary()
    with pytest.raises(InputError, match="does not exist"):
        dataset_statistics("missing.extxyz")


def test_mp_downloads_use_the_cache_and_refuse_existing_outputs(docs, tmp_path, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    cache = _dump(docs[:3], tmp_path / "docs.json.gz")
    assert dielectric_documents(cache) == (docs[:3], False)
    with pytest.raises(InputError, match="MP_API_KEY is not set"):
        dielectric_documents(cache, refresh=True)
    with pytest.raises(OutputExistsError, match="pass --force"):
        download_candidates(cache)  # refused before any download is tried


def test_each_cleaning_rule(frames):
    good = [_with_id(a, f"mp-{i}") for i, a in enumerate(frames[:6])]
    candidates = good + [
        _with_id(frames[0], "mp-0"),  # repeated material id
        _with_id(frames[1], "mp-copy"),  # same structure as mp-1
        _with_id(frames[7], "mp-lowdiag", eps=np.diag([0.9, 3.0, 3.0])),
        _with_id(frames[8], "mp-big", eps=16.0 * np.eye(3)),
    ]
    bad_frame = _with_id(frames[9], "mp-frame")
    bad_frame.info["frame_deviation"] = 0.2
    candidates.append(bad_frame)
    kept, report = clean(candidates)
    assert [a.info["material_id"] for a in kept] == [f"mp-{i}" for i in range(6)]
    assert report["removed"] == {
        "frame": ["mp-frame"],
        "duplicate_id": ["mp-0"],
        "min_diagonal": ["mp-lowdiag"],
        "max_eps_poly": ["mp-big"],
        "duplicate_structure": ["mp-copy"],
    }
    assert report["input"] == 11 and report["kept"] == 6
    kept, report = clean(
        candidates,
        frame_tolerance=None,
        min_diagonal=None,
        max_eps_poly=None,
        drop_duplicate_ids=False,
        drop_duplicate_structures=False,
    )
    assert len(kept) == 11 and report["removed"] == {}


def test_tensor_paired_with_rotated_structure_is_caught(frames, tmp_path):
    atoms = next(a for a in frames if a.info["crystal_system"] in ("hexagonal", "tetragonal"))
    doc = mp_document(atoms, material_id="mp-rotated")
    rot = rotation(5)
    structure = AseAtomsAdaptor.get_structure(atoms)
    rotated = structure.copy()
    rotated.lattice = type(structure.lattice)(structure.lattice.matrix @ rot.T)
    doc["structure"] = json.loads(rotated.to_json())
    converted = doc_to_atoms(doc)
    assert converted.info["frame_deviation"] > 0.05
    assert doc_to_atoms(mp_document(atoms)).info["frame_deviation"] < 1e-6
    src = _dump([doc, mp_document(frames[1])], tmp_path / "docs.json.gz")
    out = tmp_path / "mp.extxyz"
    assert cli(["data", "convert", str(src), "--out", str(out), "--no-split"]) == 0
    report = json.loads((tmp_path / "mp_report.json").read_text())
    assert report["removed"]["frame"] == ["mp-rotated"]
    assert report["frame_check_failed"][0][0] == "mp-rotated"
    assert len(read_frames(out)) == 1


def test_splits_sizes_determinism_and_stratification(frames):
    many = [_with_id(frames[i % len(frames)], f"mp-{i}") for i in range(50)]
    a = split_frames(many, seed=3)
    b = split_frames(many, seed=3)
    c = split_frames(many, seed=4)
    assert [len(a[s]) for s in ("train", "val", "test")] == [40, 5, 5]
    ids = {s: [x.info["material_id"] for x in a[s]] for s in a}
    assert ids == {s: [x.info["material_id"] for x in b[s]] for s in b}
    assert ids != {s: [x.info["material_id"] for x in c[s]] for s in c}
    assert sorted(sum(ids.values(), [])) == sorted(x.info["material_id"] for x in many)
    strat = split_frames(many, fractions=(0.6, 0.2, 0.2), seed=0, stratify_by="crystal_system")
    for system in {x.info["crystal_system"] for x in many}:
        total = sum(x.info["crystal_system"] == system for x in many)
        in_train = sum(x.info["crystal_system"] == system for x in strat["train"])
        assert abs(in_train - 0.6 * total) <= 1
    with pytest.raises(ValueError, match="sum"):
        split_frames(many, fractions=(0.5, 0.2, 0.2))


def test_hdf5_equals_extxyz(frames, tmp_path):
    write_frames(frames, tmp_path / "a.extxyz")
    write_frames(frames, tmp_path / "a.h5")
    x, h = read_frames(tmp_path / "a.extxyz"), read_frames(tmp_path / "a.h5")
    assert len(h) == len(x) == 24
    for p, q in zip(x, h):
        assert p.info["entry_id"] == q.info["entry_id"]
        assert p.info["crystal_system"] == q.info["crystal_system"]
        np.testing.assert_array_equal(p.numbers, q.numbers)
        np.testing.assert_allclose(p.positions, q.positions)
        for key in ("dielectric_tensor", "born_effective_charges"):
            np.testing.assert_allclose(p.calc.results[key], q.calc.results[key])
        np.testing.assert_allclose(
            p.info["dielectric_ionic_tensor"], q.info["dielectric_ionic_tensor"]
        )
    dx = dataset_from_file(str(tmp_path / "a.extxyz"), include_keys=["dielectric_ionic_tensor"])
    dh = dataset_from_file(str(tmp_path / "a.h5"), include_keys=["dielectric_ionic_tensor"])
    # nequip's HDF5Dataset groups frames by atom count: match them by atom count and position
    order = sorted(range(24), key=lambda i: (len(frames[i]), i))
    keys = ("pos", "cell", "dielectric_tensor", "dielectric_ionic_tensor", "born_effective_charges")
    for j, i in enumerate(order):
        for key in keys:
            np.testing.assert_allclose(dx[i][key].numpy(), dh[j][key].numpy(), err_msg=key)


def test_dataset_from_file_excluding_every_optional_tensor(frames, tmp_path):
    """Excluding the ionic tensor (never loaded unless included) and the Born charges leaves
    the electronic tensor, for either format."""
    for suffix in (".extxyz", ".h5"):
        write_frames(frames[:3], tmp_path / f"b{suffix}")
        exclude = ["born_effective_charges", "dielectric_ionic_tensor"]
        data = dataset_from_file(str(tmp_path / f"b{suffix}"), exclude_keys=exclude)
        assert len(data) == 3 and data[0]["dielectric_tensor"].shape == (1, 3, 3)
        assert not set(exclude) & set(data[0])


def test_mp_command_needs_a_key_and_uses_the_cache(docs, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MP_API_KEY", raising=False)
    out = tmp_path / "mp.extxyz"
    cache = tmp_path / "raw" / "docs.json.gz"
    assert cli(["data", "mp", "--out", str(out), "--cache", str(cache)]) == 2
    assert "MP_API_KEY is not set" in capsys.readouterr().err
    assert not out.exists()
    # a failing download never shows the key
    import mp_api.client

    class Failing:
        def __init__(self, api_key):
            raise RuntimeError(f"401 for key {api_key}")

    monkeypatch.setattr(mp_api.client, "MPRester", Failing)
    monkeypatch.setenv("MP_API_KEY", "s3cr3t-key")
    assert cli(["data", "mp", "--out", str(out), "--cache", str(cache)]) == 2
    err = capsys.readouterr()
    assert "s3cr3t-key" not in err.err + err.out and "could not download" in err.err
    # with a cached download the command works offline
    cache.parent.mkdir()
    _dump(docs[:12], cache)
    assert cli(["data", "mp", "--out", str(out), "--cache", str(cache), "--no-split"]) == 0
    assert len(read_frames(out)) == 12


def test_stats_command(tmp_path, capsys):
    png = tmp_path / "stats.png"
    from helpers import DATASETS

    assert (
        cli(["data", "stats", str(DATASETS / "mp_subset_test.extxyz.gz"), "--png", str(png)]) == 0
    )
    text = capsys.readouterr().out
    assert "111 crystals" in text and "orthorhombic: 24" in text and "a_r: mean" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("suffix", [".extxyz", ".h5"])
def test_configs_read_hdf5_and_split_single_files(frames, tmp_path, suffix):
    """The configs' datamodule reads either format, and the single-file config splits by seed."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from helpers import CONFIGS

    data_file = tmp_path / f"all{suffix}"
    write_frames(frames[:20], data_file)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        single = compose(config_name="anisonet_single_file", overrides=[f"data_file={data_file}"])
        plain = compose(
            config_name="anisonet", overrides=[f"train_file={data_file}", f"val_file={data_file}"]
        )
    sizes = {}
    for name, cfg in (("single", single), ("plain", plain)):
        datamodule = instantiate(OmegaConf.to_container(cfg.data, resolve=True), _recursive_=False)
        datamodule.setup("fit")
        sizes[name] = (len(datamodule.train_dataset[0]), len(datamodule.val_dataset[0]))
        batch = next(iter(datamodule.train_dataloader()))
        assert batch["dielectric_tensor"].shape[1:] == (3, 3)
        assert "born_effective_charges" not in batch
    assert sizes == {"single": (16, 2), "plain": (20, 20)}


@pytest.mark.parametrize("suffix", [".extxyz", ".h5"])
def test_read_frames_names_an_unreadable_file(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_text("this is not a structure file\n")
    with pytest.raises(InputError, match=f"cannot read `{path}`"):
        read_frames(path)
