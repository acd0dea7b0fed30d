"""Bad inputs of the prediction entry points: the Python API (``aniso_nequip.predict``), the
ASE calculator, ``nequip-evaluate`` and ``aniso-nequip predict``. Bad structures are named and
refused by the API, skipped and listed by the commands (``--strict`` refuses); untrained elements
warn.
"""

import warnings

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from pymatgen.io.ase import AseAtomsAdaptor

import aniso_nequip
import aniso_nequip.evaluation
import aniso_nequip.io
import aniso_nequip.plots
from aniso_nequip.data.validation import (
    UntrainedElementWarning,
)
from aniso_nequip.errors import InputError
from aniso_nequip.evaluation import evaluate
from aniso_nequip.prediction import predict_files
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.scripts.evaluate import main as evaluate_main
from helpers import (
    VAL_STRUCTURE_IDS,
    VAL_STRUCTURES,
    bad_frame,
    nacl_crystal,
)

# ---- Python API: aniso_nequip.predict and the ASE calculator --------------------------------


@pytest.mark.parametrize("case, make, problem", VAL_STRUCTURES[1:], ids=VAL_STRUCTURE_IDS[1:])
def test_predict_api_names_the_structure(case, make, problem, equivariant_model):
    with pytest.raises(InputError) as err:
        aniso_nequip.predict([nacl_crystal(), make(case)], equivariant_model, device="cpu")
    assert f"structure 1 ({case})" in str(err.value) and problem in str(err.value)


def test_predict_api_refuses_a_disordered_pymatgen_structure(equivariant_model):
    structure = AseAtomsAdaptor.get_structure(nacl_crystal())
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
    plutonium = bad_frame("unknown-element")[0]
    frames = [plutonium] if case == "nothing-valid" else [nacl_crystal(), plutonium]
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
    ase.io.write(good, nacl_crystal())
    disordered = tmp_path / "disordered.cif"
    disordered.write_text(VAL_DISORDERED_CIF)
    overlapping = tmp_path / "overlapping.extxyz"
    ase.io.write(overlapping, [nacl_crystal(), bad_frame("overlapping")[0]])
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
    atoms = nacl_crystal("exotic")
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
