"""Bad inputs of the data entry points: the one validation module
(``aniso_nequip.data.validation``) and its verdicts on structures and tensors, training data
(``dataset_from_file`` and the datamodule), ``aniso-nequip data convert`` (documents are skipped and
listed, ``--strict`` refuses) and ``aniso-nequip data stats``.
"""

import gzip
import json

import ase
import ase.build
import ase.data
import ase.io
import numpy as np
import pytest

from aniso_nequip.data import DielectricDataModule, dataset_from_file, read_frames
from aniso_nequip.data.files import structure_file_problem
from aniso_nequip.data.matching import crystal_id
from aniso_nequip.data.pipeline import build_dataset
from aniso_nequip.data.stats import dataset_statistics
from aniso_nequip.data.symmetry import FRAME_TOLERANCE, point_group_deviation
from aniso_nequip.data.validation import (
    REFUSED_DISTANCE_RATIO,
    REFUSED_VACUUM,
    WARNED_DISTANCE_RATIO,
    WARNED_VACUUM,
    bonded_dimensionality,
    largest_gap,
    structure_problem,
    structure_warning,
    tensor_problem,
)
from aniso_nequip.errors import InputError
from aniso_nequip.model import AnisoNetModel
from aniso_nequip.prediction import predict_files
from aniso_nequip.scripts.cli import main as cli
from helpers import (
    ROOT,
    VAL_EPS,
    VAL_STRUCTURE_IDS,
    VAL_STRUCTURES,
    VAL_TENSORS,
    bad_frame,
    build_tiny,
    bundled,
    dielectric_doc,
    disordered_doc,
    mp_document,
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
    "nan-position",
    "no-cell",
    "overlapping",
    "unknown-element",
    "non-finite",
    "asymmetric",
    "not-positive-definite",
    "ionic-negative",
    "singular-cell",
]


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
    (
        "asymmetric",
        lambda m: dielectric_doc(m, electronic=3 * np.eye(3) + np.triu(np.ones((3, 3)), 1)),
        "`electronic` tensor is not symmetric",
    ),
    (
        "not-positive-definite",
        lambda m: dielectric_doc(m, electronic=np.diag([2.0, -1.0, 2.0])),
        "`electronic` tensor is not positive definite",
    ),
    (
        "ionic-negative",
        lambda m: dielectric_doc(m, ionic=np.diag([1.0, -2.0, 1.0])),
        "`ionic` tensor is not positive semi-definite",
    ),
]


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
    report = build_dataset(
        [dielectric_doc("mp-good-1"), make("mp-bad")],
        tmp_path / "out.extxyz",
        split=None,
        drop_duplicates=False,
    )
    assert report["kept"] == 1 and list(report["skipped"]) == ["mp-bad"]
    assert problem in report["skipped"]["mp-bad"]


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_convert_command_with_a_disordered_document(strict, tmp_path, capsys):
    src = _val_docs(tmp_path, disordered_doc("mp-disordered"))
    out = tmp_path / "mp.extxyz"
    code = cli(
        ["data", "convert", str(src), "--out", str(out), "--no-split"] + ["--strict"] * strict
    )
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
        "asymmetric": np.diag([2.0, 3.0, 4.0]) + np.triu(np.ones((3, 3)), 1),
        "2x2": np.diag([2.0, 3.0]),
        "6-component": np.array([2.0, 3.0, 4.0, 0.1, 0.0, 0.0]),
    }[kind]


RUN_STATS_CASES = [
    ("nan", "`dielectric_tensor` has non-finite values"),
    ("inf", "`dielectric_tensor` has non-finite values"),
    ("negative", "`dielectric_tensor` is not positive definite (smallest eigenvalue -1)"),
    ("asymmetric", "`dielectric_tensor` is not symmetric"),
    ("2x2", "`dielectric_tensor` has shape (4,), expected 3x3"),
    ("6-component", "`dielectric_tensor` has shape (6,), expected 3x3"),
]


@pytest.mark.parametrize("kind, message", RUN_STATS_CASES, ids=[c[0] for c in RUN_STATS_CASES])
def test_data_stats_names_the_frames_of_undefined_statistics(kind, message, tmp_path, capsys):
    """`data stats` judges the tensors with the validation module, as every entry point does."""
    frames = bundled("mp_subset_test", ":4")
    for i in (1, 3):
        frames[i].calc = None
        frames[i].info["dielectric_tensor"] = _run_tensor(kind).reshape(-1)
    path = tmp_path / "data.extxyz"
    ase.io.write(path, frames)
    ids = [crystal_id(frames[i]) for i in (1, 3)]
    with pytest.raises(InputError) as err:
        dataset_statistics(path)
    assert f"`{path}`: 2 frame(s) with an unusable `dielectric_tensor`" in str(err.value)
    assert f"frame 1 ({ids[0]}): {message}" in str(err.value)
    assert f"frame 3 ({ids[1]}): {message}" in str(err.value)
    png = tmp_path / "stats.png"
    assert cli(["data", "stats", str(path), "--png", str(png)]) == 2
    assert f"frame 3 ({ids[1]}): {message}" in capsys.readouterr().err
    assert not png.exists()


# ---- physical checks: distances against covalent radii, fragments in vacuum ----------------

SI_RADII = 2 * ase.data.covalent_radii[14]  # the sum of two silicon covalent radii, 2.22 A


def _si_at_ratio(ratio):
    """Diamond silicon whose nearest neighbours are ``ratio`` of the sum of their covalent
    radii apart (the bond length is ``a sqrt(3) / 4``)."""
    atoms = ase.build.bulk("Si", "diamond", a=4 * ratio * SI_RADII / np.sqrt(3))
    atoms.info["entry_id"] = f"si-{ratio}"
    return atoms


# (ratio, refused, warned): both sides of REFUSED_DISTANCE_RATIO (0.5) and
# WARNED_DISTANCE_RATIO (0.65); real silicon is at 1.06, the closest bundled pair at 0.683
PHYS_DISTANCE_CASES = [
    (0.2, True, True),
    (0.49, True, True),
    (0.51, False, True),
    (0.64, False, True),
    (0.66, False, False),
    (1.06, False, False),
]


@pytest.mark.parametrize("ratio, refused, warned", PHYS_DISTANCE_CASES)
def test_distances_are_judged_against_covalent_radii(ratio, refused, warned):
    atoms = _si_at_ratio(ratio)
    problem, warning = structure_problem(atoms), structure_warning(atoms)
    assert (problem is not None, warning is not None) == (refused, warned), (problem, warning)
    if refused:
        assert "atom 0 and its periodic image" in problem or "atoms 0 and 1" in problem
        assert f"(Si-Si: {ratio:.2f} of the sum of their covalent radii, 2.22 A)" in problem
        assert "no crystal has atoms closer than 0.5 of it" in problem
    elif warned:
        assert f"{ratio:.2f} of the sum of their covalent radii" in warning
        assert "closer than in any crystal of the bundled data" in warning


def test_distance_limits_leave_the_bundled_data_alone():
    assert REFUSED_DISTANCE_RATIO < WARNED_DISTANCE_RATIO < 0.683  # the bundled closest pair
    closest = next(
        a for a in bundled("mp_subset_test", ":4") if a.info["entry_id"] == "mf-test-0001"
    )
    assert structure_problem(closest) is None and structure_warning(closest) is None


def _slab():
    """Rock-salt NaCl, two conventional cells thick, with 20 A of vacuum above."""
    slab = ase.build.bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((1, 1, 2))
    slab.cell[2, 2] += 20.0
    return slab


def _in_box(atoms, size):
    atoms = atoms.copy()
    atoms.set_cell([size] * 3)
    atoms.center()
    atoms.pbc = True
    return atoms


def _graphite():
    return ase.Atoms(
        "C4",
        scaled_positions=[[0, 0, 0.25], [1 / 3, 2 / 3, 0.25], [0, 0, 0.75], [2 / 3, 1 / 3, 0.75]],
        cell=[[2.46, 0, 0], [-1.23, 2.13, 0], [0, 0, 6.70]],
        pbc=True,
    )


# (id, structure, refused: fragment kind and vacuum in the message, or None for bulk)
PHYS_VACUUM_CASES = [
    (
        "slab-20A-vacuum",
        _slab,
        "layers (a slab) separated by 22.8 A of vacuum across lattice vector c",
    ),
    (
        "water-in-a-box",
        lambda: _in_box(ase.build.molecule("H2O"), 12.0),
        "molecules or lone atoms separated by 12.0 A of vacuum",
    ),
    (
        "lone-atom-8.1A",
        lambda: ase.Atoms("Ne", cell=[8.1] * 3, pbc=True),
        "molecules or lone atoms separated by 8.1 A of vacuum",
    ),
    ("lone-atom-7.9A", lambda: ase.Atoms("Ne", cell=[7.9] * 3, pbc=True), None),
    ("graphite", _graphite, None),
    ("MoS2-2H", lambda: ase.io.read(ROOT / "examples" / "MoS2_2H_layered.cif"), None),
    ("solid-neon", lambda: ase.build.bulk("Ne", "fcc", a=4.46), None),
]


@pytest.mark.parametrize(
    "case, make, refused", PHYS_VACUUM_CASES, ids=[c[0] for c in PHYS_VACUUM_CASES]
)
def test_fragments_in_vacuum_are_refused_and_layered_crystals_pass(case, make, refused):
    atoms = make()
    problem = structure_problem(atoms)
    if refused is None:
        assert problem is None, problem
        gap = largest_gap(atoms)[0]
        assert (structure_warning(atoms) is None) == (gap <= WARNED_VACUUM), gap
    else:
        assert problem.startswith("not a bulk crystal: ") and refused in problem, problem
        assert "the tensor of such a cell depends on the vacuum" in problem
        # kept, with the same verdict as a warning, where the data bring their own reference
        assert structure_problem(atoms, bulk=False) is None
        assert structure_warning(atoms, bulk=False) == problem


def test_vacuum_limits_against_the_bundled_crystals():
    """Bundled crystals (layered ones included) pass without a warning, except the three MP
    cells that are monolayers or a bilayer in vacuum (benchmarks/input_limits.py checks all)."""
    frames = bundled("mp_subset_train", ":30") + bundled("mp_subset_test", ":3")
    slabs = {"mf-test-0007": 22.2, "mf-test-0014": 14.2, "mf-test-0036": 14.1}
    for atoms in frames:
        name = atoms.info["entry_id"]
        if name in slabs:
            assert f"layers (a slab) separated by {slabs[name]} A" in structure_problem(atoms)
        else:
            assert structure_problem(atoms) is None and structure_warning(atoms) is None, name
    assert sum(a.info["entry_id"] in slabs for a in frames) == 3
    assert bonded_dimensionality(_graphite()) == 2 and WARNED_VACUUM < REFUSED_VACUUM


# ---- files that are not what their name says, or are cut ------------------------------------


def _cut_inside_frame(path, frames):
    """Write ``frames`` to ``path`` and cut it after the first atom row of frame 2."""
    ase.io.write(path, frames, format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    start = sum(len(a) + 2 for a in frames[:2])
    path.write_text("".join(lines[: start + 3]))


def _missing_row(path, frames):
    ase.io.write(path, frames, format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    del lines[len(frames[0]) + 2 + 3]  # an atom row of frame 1
    path.write_text("".join(lines))


def _cut_row(path, frames):
    ase.io.write(path, frames, format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    lines[4] = " ".join(lines[4].split()[:3]) + "\n"  # atom 2 of frame 0 keeps 3 values
    path.write_text("".join(lines))


def _cut_last_line(path, frames):
    ase.io.write(path, frames, format="extxyz")
    path.write_text(path.read_text()[:-10])  # the last number loses its tail: read silently


def _extxyz_as_cif(path, frames):
    ase.io.write(path, frames[:1], format="extxyz")


def _folder(path, frames):
    path.mkdir()


# (id, file name, writer, message)
FILE_CASES = [
    (
        "cut-inside-a-frame",
        "data.extxyz",
        _cut_inside_frame,
        "frame 2 (line {line}) is cut short: 8 atoms announced, 1 row(s) present",
    ),
    (
        "missing-row",
        "data.extxyz",
        _missing_row,
        "frame 1 (line {line}) has 13 atom row(s) where 14 are announced",
    ),
    ("cut-row", "data.extxyz", _cut_row, "frame 0, atom 2 (line 5) has 3 values instead of 13"),
    (
        "cut-last-line",
        "data.extxyz",
        _cut_last_line,
        "its last line (frame 3) ends without an end of line: the file is cut",
    ),
    (
        "extxyz-named-cif",
        "data.cif",
        _extxyz_as_cif,
        "its name says CIF but it holds extxyz: rename it `.extxyz`",
    ),
    ("folder", "data.extxyz", _folder, "it is a folder, not a file"),
]


@pytest.mark.parametrize("case, name, write, message", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_damaged_or_misnamed_files_are_reported_with_the_frame(
    case, name, write, message, tmp_path
):
    frames = bundled("mp_subset_test", ":4")  # 14, 14, 8 and 12 atoms
    path = tmp_path / name
    write(path, frames)
    line = {"cut-inside-a-frame": 33, "missing-row": 17}.get(case)
    expected = f"cannot read `{path}`: " + message.format(line=line)
    with pytest.raises(InputError) as err:
        read_frames(path)
    assert str(err.value).startswith(expected), str(err.value)
    if case != "folder":  # aniso-nequip predict skips and lists it with the same reason
        model = build_tiny(AnisoNetModel, type_names=sorted({s for a in frames for s in a.symbols}))
        (skipped,) = predict_files([str(path)], model).skipped
        assert skipped[0] == str(path)
        assert skipped[1].startswith("cannot be read: " + message.format(line=line)), skipped


def _poscar(path, counts):
    ase.io.write(path, nacl_crystal(), format="vasp")
    lines = path.read_text().splitlines(keepends=True)
    lines[6] = counts + "\n"
    path.write_text("".join(lines))


@pytest.mark.parametrize(
    "counts, message",
    [
        ("4 5", "the atom counts (line 7: 4 5) sum to 9 but 2 coordinate row(s) follow"),
        ("1", "2 species (Na Cl, line 6) but 1 atom count(s) (1, line 7)"),
    ],
    ids=["counts-too-large", "fewer-counts-than-species"],
)
def test_poscar_with_wrong_atom_counts(counts, message, tmp_path):
    path = tmp_path / "POSCAR"
    _poscar(path, counts)
    assert structure_file_problem(path) == message
    (skipped,) = predict_files(
        [str(path)], build_tiny(AnisoNetModel, type_names=["Na", "Cl"])
    ).skipped
    assert skipped == (str(path), f"cannot be read: {message}")


# ---- the frame check: a tensor rotated away from its crystal's frame --------------------------

FRAME_SYSTEMS = [
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
]


@pytest.fixture(scope="module")
def frame_crystals():
    """The most anisotropic crystal of each crystal system among 300 bundled MP crystals."""
    best = {}
    for atoms in bundled("mp_subset_train", ":300"):
        eps = np.linalg.eigvalsh(np.reshape(atoms.calc.results["dielectric_tensor"], (3, 3)))
        system = atoms.info["crystal_system"]
        if system not in best or eps[-1] / eps[0] > best[system][0]:
            best[system] = (eps[-1] / eps[0], atoms)
    return {system: atoms for system, (_, atoms) in best.items()}


def _rotated_tensor(atoms, angle=0.7):
    """The crystal's tensor rotated by ``angle`` about the (1, 1, 1) direction: no symmetry
    axis of a non-cubic crystal in its standard setting."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_rotvec(angle * np.ones(3) / np.sqrt(3)).as_matrix()
    eps = np.reshape(atoms.calc.results["dielectric_tensor"], (3, 3))
    return rot @ eps @ rot.T


@pytest.mark.parametrize("system", FRAME_SYSTEMS)
def test_frame_check_refuses_a_rotated_tensor_in_every_crystal_system(system, frame_crystals):
    """Refused in every system with symmetry operations that a rotation breaks; a cubic
    crystal's isotropic tensor is unchanged by rotation and a triclinic crystal has no rotation
    to test against, so both pass (rightly: nothing is wrong with them)."""
    atoms = frame_crystals[system]
    own = point_group_deviation(atoms, atoms.calc.results["dielectric_tensor"])
    rotated = point_group_deviation(atoms, _rotated_tensor(atoms))
    assert own <= FRAME_TOLERANCE
    if system in ("cubic", "triclinic"):
        assert rotated <= FRAME_TOLERANCE
    else:
        assert rotated > FRAME_TOLERANCE, (atoms.info["entry_id"], rotated)


def test_convert_reports_a_rotated_trigonal_tensor(frame_crystals, tmp_path):
    """The issue's case: a trigonal crystal's tensor rotated by 0.7 rad (deviation ~0.02) is
    refused with the default tolerance; the unrotated one is kept."""
    atoms = frame_crystals["trigonal"]
    good, bad = mp_document(atoms, "mp-good"), mp_document(atoms, "mp-rotated")
    bad["electronic"] = _rotated_tensor(atoms).tolist()
    bad["total"] = (np.asarray(bad["electronic"]) + np.asarray(bad["ionic"])).tolist()
    report = build_dataset([good, bad], tmp_path / "out.extxyz", split=None, drop_duplicates=False)
    failed = dict(report["frame_check_failed"])
    assert list(failed) == ["mp-rotated"] and failed["mp-rotated"] > FRAME_TOLERANCE
    assert report["kept"] == 1
