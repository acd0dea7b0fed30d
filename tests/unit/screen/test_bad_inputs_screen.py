"""Bad pools for ``aniso-nequip screen`` (issue 26's open faults): filters that remove every
crystal, the same crystal twice, one id for different crystals. Each case runs the command as a
user would and asserts the exit code, the ranking, what the summaries and the console say, and
that a re-run of the same command (resumed) gives the same outputs.
"""

import csv
import json

import ase.io
import numpy as np
import pytest

from aniso_nequip.scripts.cli import main as cli
from helpers import bundled, rotated, rotation


def _crystals():
    """Four bundled bulk crystals (distinct structures, at most 39 sites: the screen's default
    filter), without their tensors. The test split's third crystal (mf-test-0007, C8) is a
    graphene bilayer in 22 A of vacuum, which the screen refuses as no bulk crystal."""
    ids = ("mf-test-0001", "mf-test-0003", "mf-test-0016", "mf-test-0057")
    frames = [a for a in bundled("mp_subset_test", ":8") if a.info["entry_id"] in ids]
    for atoms in frames:
        atoms.calc = None
    return frames


def _ids(frames):
    return [a.info["entry_id"] for a in frames]


def _renamed(atoms, name):
    copy = atoms.copy()
    copy.info = {**atoms.info, "entry_id": name}
    return copy


def _rotated_supercell(atoms, name):
    copy = rotated(atoms.repeat((2, 1, 1)), rotation(3))
    copy.translate([0.3, -0.2, 0.1])
    copy.wrap()
    copy.info = {"entry_id": name}
    return copy


def _pool(case):
    """The frames of each case's pool, its training set (``None``: no ``--exclude``)."""
    frames = _crystals()
    ids = _ids(frames)
    pools = {
        "filters-remove-all": (frames, None),
        "training-set-removes-all": (frames, frames[::-1]),
        "filters-remove-all-sharded": (frames, None),
        "same-entry-twice": (frames + [frames[1]], None),
        "rotated-supercell-copy": (frames + [_rotated_supercell(frames[2], "copy")], None),
        "copy-in-the-other-shard": (frames + [_renamed(frames[1], "copy")], None),
        "one-id-two-crystals": (frames[:3] + [_renamed(frames[3], ids[0])], None),
    }
    return pools[case]


# case, extra options, sharded (2 shards), ranked ids (by index in the pool), duplicates
# {kept: [dropped]}, id clashes {id: n sources}, a line the console must print
EMPTY = "Nothing to rank: none of the 4 structures read passed the filters"
SCREEN_POOL_CASES = [
    ("filters-remove-all", ["--max-sites", "1"], False, [], {}, {}, EMPTY),
    ("filters-remove-all-sharded", ["--max-sites", "1"], True, [], {}, {}, EMPTY),
    ("training-set-removes-all", [], False, [], {}, {}, EMPTY),
    ("same-entry-twice", [], False, [0, 1, 2, 3], {1: [4]}, {}, "1 duplicate(s) ranked once"),
    ("rotated-supercell-copy", [], False, [0, 1, 2, 3], {2: [4]}, {}, "copy = "),
    ("copy-in-the-other-shard", [], True, [0, 1, 2, 3], {1: [4]}, {}, "copy = "),
    ("one-id-two-crystals", [], False, [0, 1, 2, 3], {}, {0: 2}, "names 2 different crystals"),
]


def _screen(argv, shards):
    """Run the command (each shard of a sharded run, merging with the last); its exit code."""
    if not shards:
        return cli(argv)
    codes = [cli([*argv, "--shard", f"{i}/2", *(["--merge"] if i else [])]) for i in range(2)]
    return max(codes)


@pytest.mark.parametrize(
    "case, options, sharded, ranked, duplicates, clashes, printed",
    SCREEN_POOL_CASES,
    ids=[c[0] for c in SCREEN_POOL_CASES],
)
def test_screen_bad_pools(
    case, options, sharded, ranked, duplicates, clashes, printed, trained, tmp_path, capsys
):
    frames, training = _pool(case)
    ids = _ids(frames)
    pool = tmp_path / "pool.extxyz"
    ase.io.write(pool, frames)
    out = tmp_path / "screen"
    argv = ["screen", "--quiet", "--model", str(trained["dir"] / "best.ckpt")]
    argv += ["--structures", str(pool), "--out", str(out), "--chunk-size", "2", *options]
    if training is not None:
        train = tmp_path / "train.extxyz"
        ase.io.write(train, training)
        argv += ["--exclude", str(train)]
    assert _screen(argv, sharded) == 0
    console = capsys.readouterr().out
    assert printed in console
    with open(out / "ranking.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in sorted(rows, key=lambda r: int(r["index"]))] == ranked
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, len(ranked) + 1)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ranked"] == len(ranked)
    groups = {
        g["kept"]["index"]: [c["index"] for c in g["dropped"]]
        for g in summary["duplicates"]["groups"]
    }
    assert groups == duplicates
    assert summary["duplicates"]["count"] == sum(map(len, duplicates.values()))
    assert {name: len(sources) for name, sources in summary["id_clashes"].items()} == {
        ids[i]: n for i, n in clashes.items()
    }
    text = (out / "summary.md").read_text()
    files = {p.name for p in out.iterdir()}
    if not ranked:
        assert "**Nothing to rank" in text and "ranking.csv holds its header only" in text
        assert (out / "ranking.csv").read_text().startswith("rank,id,formula")
        assert files == {"ranking.csv", "summary.md", "summary.json", "shards"}
    else:
        assert "candidates.extxyz" in files
        kept = {a.info["index"] for a in ase.io.read(out / "candidates.extxyz", ":")}
        assert kept == set(ranked)  # a dropped copy is no candidate either
    for kept_index, dropped in duplicates.items():
        assert f"- {ids[kept_index]} ({pool}:{kept_index}); dropped: " in text
        assert all(f"{ids[i]} ({pool}:{i})" in text for i in dropped)
    for i in clashes:
        assert f"- {ids[i]}: {pool}:{i}, {pool}:3" in text

    # the same command again resumes: nothing recomputed, the same outputs
    before = (out / "ranking.csv").read_text()
    assert _screen(argv, sharded) == 0
    assert "had finished before" in capsys.readouterr().out
    assert (out / "ranking.csv").read_text() == before


def test_duplicate_copies_get_the_same_prediction_and_fingerprint(trained, tmp_path):
    """The premise of ranking a copy once: a rotated, shifted supercell copy is predicted the
    same (the model is invariant) and gets the same fingerprint; a rattled copy does not."""
    from aniso_nequip.inference import load_model, predict
    from aniso_nequip.metrics import derived
    from aniso_nequip.screen.duplicates import fingerprint

    atoms = _crystals()[2]
    copy = _rotated_supercell(atoms, "copy")
    rattled = atoms.copy()
    rattled.rattle(0.02, seed=0)
    assert fingerprint(copy) == fingerprint(atoms) != fingerprint(rattled)
    model = load_model(trained["dir"] / "best.ckpt")
    a_r = derived(predict([atoms, copy], model, device="cpu"))["a_r"]
    np.testing.assert_allclose(a_r[0], a_r[1], rtol=1e-4)
