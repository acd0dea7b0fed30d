"""Bad structures and tensors at every entry point: one validation module
(``aniso_nequip.data.validation``), the same verdict everywhere.

Batch commands (``data convert``, ``nequip-evaluate``, ``screen``, ``predict``) skip and list each
bad entry with its reason and fail only with ``--strict`` or when nothing valid is left, writing
nothing then; dataset loading for training and the Python API (``predict``, the calculator) raise
``InputError`` naming the crystal (file and frame for datasets) and the problem.
"""

import gzip
import json
import warnings

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from pymatgen.io.ase import AseAtomsAdaptor

import aniso_nequip
from aniso_nequip.data import dataset_from_file
from aniso_nequip.data.pipeline import build_dataset
from aniso_nequip.data.validation import (
    UntrainedElementWarning,
    structure_problem,
    tensor_problem,
)
from aniso_nequip.errors import InputError
from aniso_nequip.evaluation import evaluate
from aniso_nequip.prediction import predict_files
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.scripts.evaluate import main as evaluate_main
from helpers import bundled

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
