"""Bad inputs of the data entry points: the one validation module
(``aniso_nequip.data.validation``) and its verdicts on structures and tensors, training data
(``dataset_from_file`` and the datamodule), ``aniso-nequip data convert`` (documents are skipped and
listed, ``--strict`` refuses) and ``aniso-nequip data stats``.
"""

import gzip
import json

import ase
import ase.build
import ase.io
import numpy as np
import pytest

from aniso_nequip.data import DielectricDataModule, dataset_from_file
from aniso_nequip.data.matching import crystal_id
from aniso_nequip.data.pipeline import build_dataset
from aniso_nequip.data.stats import dataset_statistics
from aniso_nequip.data.validation import (
    structure_problem,
    tensor_problem,
)
from aniso_nequip.errors import InputError
from aniso_nequip.scripts.cli import main as cli
from helpers import (
    VAL_EPS,
    VAL_STRUCTURE_IDS,
    VAL_STRUCTURES,
    VAL_TENSORS,
    bad_frame,
    bundled,
    dielectric_doc,
    disordered_doc,
    nacl_crystal,
)


@pytest.mark.parametrize("case, make, problem", VAL_STRUCTURES, ids=VAL_STRUCTURE_IDS)
def test_structure_problem(case, make, problem):
    assert problem in structure_problem(make(case), type_names=["Na", "Cl", "K"])


@pytest.mark.parametrize(
    "case, field, tensor, problem", VAL_TENSORS, ids=[c[0] for c in VAL_TENSORS]
)
def test_tensor_problem(case, field, tensor, problem):
    assert problem in tensor_problem(tensor, field, n_atoms=2)


def test_valid_inputs_pass():
    assert structure_problem(nacl_crystal(), ["Na", "Cl"]) is None
    assert tensor_problem(VAL_EPS + 1e-5 * np.triu(np.ones((3, 3)), 1)) is None  # rounding noise
    assert tensor_problem(np.diag([1.0, 0.0, -1e-3]), "dielectric_ionic_tensor") is None
    assert tensor_problem(np.full((2, 3, 3), -1.0), "born_effective_charges", n_atoms=2) is None


# ---- training data: dataset_from_file and the datamodule ------------------------------------


VAL_DATASET_CASES = [
    "nan-position", "no-cell", "overlapping", "unknown-element", "non-finite", "asymmetric",
    "not-positive-definite", "ionic-negative", "singular-cell",
]  # fmt: skip


def _val_transforms(type_names):
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper

    return [ChemicalSpeciesToAtomTypeMapper(model_type_names=type_names)]


@pytest.mark.parametrize("case", VAL_DATASET_CASES)
def test_dataset_loading_refuses_bad_frames(case, tmp_path):
    bad, problem = bad_frame(case)
    path = tmp_path / "train.extxyz"
    ase.io.write(path, [nacl_crystal("a"), nacl_crystal("b"), bad])
    with pytest.raises(InputError) as err:
        dataset_from_file(
            str(path), _val_transforms(["Na", "Cl"]), include_keys=["dielectric_ionic_tensor"]
        )
    message = str(err.value)
    assert f"`{path}`" in message and "1 of 3 frame(s)" in message
    assert f"frame 2 ({case})" in message and problem in message


def test_datamodule_refuses_a_bad_training_file_before_training(tmp_path):

    bad = tmp_path / "train.extxyz"
    good = tmp_path / "val.extxyz"
    ase.io.write(bad, [nacl_crystal("a"), bad_frame("overlapping")[0]])
    ase.io.write(good, [nacl_crystal("b")])
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


def _val_overlapping_doc(material_id):
    atoms = ase.build.bulk("MgO", "rocksalt", a=4.21)
    atoms.positions[1] = atoms.positions[0] + [0.2, 0, 0]
    return dielectric_doc(material_id, atoms)


# (id, bad document maker taking a material id, expected problem)


VAL_DOCUMENTS = [
    ("disordered", disordered_doc, "disordered sites (partial occupancy) 0 (Mg:0.5 Ca:0.5)"),
    ("overlapping", _val_overlapping_doc, "atoms 0 and 1 are 0.200 A apart"),
    ("asymmetric",
     lambda m: dielectric_doc(m, electronic=3 * np.eye(3) + np.triu(np.ones((3, 3)), 1)),
     "`electronic` tensor is not symmetric"),
    ("not-positive-definite", lambda m: dielectric_doc(m, electronic=np.diag([2.0, -1.0, 2.0])),
     "`electronic` tensor is not positive definite"),
    ("ionic-negative", lambda m: dielectric_doc(m, ionic=np.diag([1.0, -2.0, 1.0])),
     "`ionic` tensor is not positive semi-definite"),
]  # fmt: skip


def _val_docs(tmp_path, bad):
    good = [
        dielectric_doc("mp-good-1"),
        dielectric_doc("mp-good-2", ase.build.bulk("NaCl", "rocksalt", a=5.6)),
    ]
    path = tmp_path / "docs.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump([good[0], bad, good[1]], f)
    return path


@pytest.mark.parametrize("case, make, problem", VAL_DOCUMENTS, ids=[c[0] for c in VAL_DOCUMENTS])
def test_convert_skips_and_reports_bad_documents(case, make, problem, tmp_path):
    report = build_dataset([dielectric_doc("mp-good-1"), make("mp-bad")], tmp_path / "out.extxyz",
                           split=None, drop_duplicates=False)  # fmt: skip
    assert report["kept"] == 1 and list(report["skipped"]) == ["mp-bad"]
    assert problem in report["skipped"]["mp-bad"]


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_convert_command_with_a_disordered_document(strict, tmp_path, capsys):
    src = _val_docs(tmp_path, disordered_doc("mp-disordered"))
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
    src.write_text(json.dumps([disordered_doc("mp-1"), _val_overlapping_doc("mp-2")]))
    assert cli(["data", "convert", str(src), "--out", str(tmp_path / "x.extxyz")]) == 2
    err = capsys.readouterr().err
    assert "no crystal left" in err and "mp-2: atoms 0 and 1" in err
    assert list(tmp_path.iterdir()) == [src]


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
