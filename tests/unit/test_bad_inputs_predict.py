"""Bad inputs of the prediction entry points: the Python API (``aniso_nequip.predict``), the
ASE calculator, ``nequip-evaluate`` and ``aniso-nequip predict``. Bad structures are named and
refused by the API, skipped and listed by the commands (``--strict`` refuses); untrained elements
and unusual structures warn; failed predictions (absurd eigenvalues) are NaN with a warning in the
API and listed, never results, by the commands; bad arguments and devices are one line.
"""

import warnings

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
from aniso_nequip.data.validation import (
    FailedPredictionWarning,
    UntrainedElementWarning,
)
from aniso_nequip.errors import InputError
from aniso_nequip.evaluation import evaluate
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.prediction import predict_files, prediction_table
from aniso_nequip.scripts.cli import main as cli
from aniso_nequip.scripts.evaluate import main as evaluate_main
from helpers import (
    VAL_STRUCTURE_IDS,
    VAL_STRUCTURES,
    bad_frame,
    build_tiny,
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
    code = cli(
        ["predict", *inputs, "--model", str(packaged), "--out", str(out)] + ["--strict"] * strict
    )
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


# ---- failed predictions: reported, never a result ---------------------------------------------


def _absurd_model(shift):
    """A tiny NaCl model whose tensors are ``shift * I`` (almost): -10 or 500 is no material's."""
    return build_tiny(
        AnisoNetModel,
        type_names=["Na", "Cl"],
        isotropic_shift=shift,
        isotropic_scale=0.01,
        anisotropic_scale=0.01,
    )


FAILED_CASES = [
    (-10.0, "eigenvalues -10 -10 -10 outside [0.5, 100]"),
    (500.0, "eigenvalues 500 500 500 outside [0.5, 100]"),
]


@pytest.mark.parametrize("shift, problem", FAILED_CASES, ids=["negative", "absurd"])
def test_failed_predictions_are_nan_and_warned_in_the_api(shift, problem):
    with pytest.warns(FailedPredictionWarning, match=r"structure 0 \(nacl-ok\): failed pred"):
        eps = aniso_nequip.predict([nacl_crystal()], _absurd_model(shift), device="cpu")
    assert np.isnan(eps).all()
    atoms = nacl_crystal("calc")
    atoms.calc = aniso_nequip.DielectricCalculator(_absurd_model(shift))
    with pytest.warns(FailedPredictionWarning, match=problem.replace("[", r"\[")):
        assert np.isnan(atoms.calc.get_property("dielectric_tensor", atoms)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FailedPredictionWarning)
        assert np.isfinite(aniso_nequip.predict([nacl_crystal()], _absurd_model(1.5))).all()


@pytest.mark.parametrize("shift, problem", FAILED_CASES, ids=["negative", "absurd"])
def test_predict_command_reports_failed_predictions_and_writes_none(shift, problem, tmp_path):
    cif = tmp_path / "nacl.cif"
    ase.io.write(cif, nacl_crystal())
    result = predict_files([str(cif)], _absurd_model(shift))
    assert result.sources == [] and result.members.shape == (1, 0, 3, 3)
    ((source, reason),) = result.failed
    assert source == str(cif) and reason.startswith(f"failed prediction: {problem}")
    assert f"failed {cif}: failed prediction: {problem}" in prediction_table(result)


def test_evaluate_leaves_failed_predictions_out(trained, _val_eval_data, tmp_path, monkeypatch):
    """A prediction with a negative eigenvalue is listed in metrics.json and metrics.md and left
    out of the metrics and predictions, whatever the readout produced it."""
    path, frames = _val_eval_data
    real = aniso_nequip.evaluation.predict

    def one_failed(*args, **kwargs):
        out, domain = real(*args, **kwargs)  # evaluate asks for the domain scores too
        out["dielectric_tensor"][0] = np.diag([-3e8, 2.0, 4e8])
        return out, domain

    monkeypatch.setattr(aniso_nequip.evaluation, "predict", one_failed)
    out = tmp_path / "eval"
    metrics = evaluate(str(trained["dir"] / "best.ckpt"), [str(path)], out, quiet=True)
    ((failed),) = metrics["failed"]
    assert (failed["frame"], failed["id"]) == (0, frames[0].info["entry_id"])
    assert failed["reason"].startswith("failed prediction: eigenvalues -3e+08 2 4e+08")
    assert metrics["n"] == 1  # frame 2 only (1: bad reference, 3: overlapping atoms)
    assert "1 failed prediction(s), left out" in (out / "metrics.md").read_text()
    assert len(ase.io.read(out / "predictions.extxyz", ":")) == 2


# ---- Python API arguments and devices ----------------------------------------------------------

API_ARGUMENT_CASES = [
    ({"batch_size": 0}, "`batch_size` must be an integer >= 1, got 0"),
    ({"batch_size": 2.5}, "`batch_size` must be an integer >= 1, got 2.5"),
    ({"batch_size": "4"}, "`batch_size` must be an integer >= 1, got '4'"),
    ({"device": "tpu"}, "device 'tpu' is not a torch device (cpu, cuda, cuda:1, mps, ...)"),
    ({"device": "cuda:99"}, "device 'cuda:99': "),
]


@pytest.mark.parametrize("kwargs, message", API_ARGUMENT_CASES, ids=lambda c: repr(c)[:20])
def test_predict_api_refuses_bad_arguments_in_one_line(kwargs, message, equivariant_model):
    with pytest.raises(InputError) as err:
        aniso_nequip.predict([nacl_crystal()], equivariant_model, **kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_in_the_api_and_the_commands(packaged, tmp_path, capsys):
    message = "device 'cuda': CUDA is not available"
    with pytest.raises(InputError, match=message):
        aniso_nequip.predict([nacl_crystal()], str(packaged), device="cuda")
    cif = tmp_path / "nacl.cif"
    ase.io.write(cif, nacl_crystal())
    assert cli(["predict", str(cif), "--model", str(packaged), "--device", "cuda"]) == 2
    assert (
        evaluate_main(
            [
                "--model",
                str(packaged),
                "--data",
                str(cif),
                "--out",
                str(tmp_path / "eval"),
                "--device",
                "cuda",
            ]
        )
        == 2
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 2 and all(message in line for line in lines), lines
    assert not (tmp_path / "eval").exists()
