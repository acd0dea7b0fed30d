"""Transformed frames kept in memory across epochs (``data.keep_in_memory``): the transforms run
once per frame, every later access gets the same tensors, and a caller's changes to a frame do
not reach the kept one."""

import ase.io
import torch
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

from aniso_nequip.data import dataset_from_file
from aniso_nequip.data.datamodule import TransformedInMemory
from helpers import bundled


class Counting:
    """A transform that counts its calls and passes the frame through."""

    def __init__(self):
        self.calls = 0

    def __call__(self, data):
        self.calls += 1
        return data


def test_frames_are_transformed_once_and_kept(tmp_path):
    frames = bundled("mp_subset_test", ":5")
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, frames)
    names = sorted({s for f in frames for s in f.symbols})
    counting = Counting()
    transforms = [
        ChemicalSpeciesToAtomTypeMapper(model_type_names=names),
        NeighborListTransform(r_max=5.0),
    ]
    plain = dataset_from_file(str(path), transforms=transforms)
    kept = TransformedInMemory(dataset_from_file(str(path), transforms=[*transforms, counting]))
    assert len(kept) == 5 and kept.frame_elements == plain.frame_elements
    first = kept.__getitems__([3, 1, 3])
    assert counting.calls == 2  # frames 3 and 1, once each
    for epoch in range(2):
        again = [kept[i] for i in range(5)]
        assert counting.calls == 5  # only the three new frames
        for i, frame in enumerate(again):
            expected = plain[i]
            assert set(frame) == set(expected)
            for key, value in expected.items():
                assert torch.equal(frame[key], value), key
    assert first[0]["edge_index"] is again[3]["edge_index"]  # the same tensors, not recomputed
    first[0]["pos"] = first[0]["pos"] + 1.0  # a caller's change to its copy of the frame
    assert torch.equal(kept[3]["pos"], plain[3]["pos"])
