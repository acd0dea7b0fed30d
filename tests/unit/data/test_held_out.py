"""Held-out crystals left out of a dataset (``exclude_structures_in``: pre-training on phonondb
without the evaluation crystals; fine-tuning itself: tests/integration/test_pretraining.py)."""

import ase.io
import pytest

from aniso_nequip.data import dataset_from_file, write_frames
from helpers import bundled


@pytest.mark.parametrize("suffix", [".extxyz", ".h5"])
def test_exclude_structures_in_leaves_out_held_out_crystals(tmp_path, suffix):
    frames = bundled("mp_subset_train", ":12")
    data = tmp_path / f"data{suffix}"
    write_frames(frames, data)
    # one held-out crystal known by its id, one only by its structure (no id, shifted origin)
    by_structure = frames[7].copy()
    by_structure.info = {}
    by_structure.translate([0.3, -0.2, 0.1])
    by_structure.wrap()
    held_out = tmp_path / "held_out.extxyz"
    ase.io.write(held_out, [frames[3], by_structure])

    dataset = dataset_from_file(str(data), exclude_structures_in=[str(held_out)])
    assert len(dataset) == 10
    kept = sorted(int(dataset[i]["pos"].shape[0]) for i in range(len(dataset)))
    expected = sorted(len(f) for i, f in enumerate(frames) if i not in (3, 7))
    assert kept == expected
    assert len(dataset_from_file(str(data))) == 12

    with pytest.raises(FileNotFoundError, match="missing.extxyz"):
        dataset_from_file(str(data), exclude_structures_in=[str(tmp_path / "missing.extxyz")])
