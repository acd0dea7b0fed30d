"""Pre-training then fine-tuning: held-out crystals left out of a dataset, weights carried over."""

import ase.io
import numpy as np
import pytest

from aniso_nequip.data import dataset_from_file, write_frames
from conftest import bundled, predict

TINY = dict(r_max=5.0, l_max=2, num_layers=1, num_features=8, num_basis=6, seed=3)


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


def test_pretrained_model_starts_from_the_checkpoint(trained):
    from aniso_nequip.inference import load_model
    from aniso_nequip.model import AnisoNetModel

    ckpt = trained["dir"] / "best.ckpt"
    reference = load_model(ckpt)
    frames = bundled("mp_subset_test", ":6")
    # data statistics of the new training set differ; the pre-trained ones are carried over
    model = AnisoNetModel(
        type_names=reference.type_names, model_dtype="float32", avg_num_neighbors=3.0,
        isotropic_shift=0.0, isotropic_scale=1.0, anisotropic_scale=1.0, pretrained=str(ckpt),
        **TINY,
    ).eval()  # fmt: skip
    np.testing.assert_allclose(predict(model, frames), predict(reference, frames), atol=1e-5)
    fresh = AnisoNetModel(
        type_names=reference.type_names, model_dtype="float32", avg_num_neighbors=3.0, **TINY
    ).eval()
    assert np.abs(predict(fresh, frames) - predict(reference, frames)).max() > 0.1

    with pytest.raises(ValueError, match="does not fit"):
        AnisoNetModel(
            type_names=reference.type_names, model_dtype="float32", avg_num_neighbors=3.0,
            pretrained=str(ckpt), **{**TINY, "num_features": 4},
        )  # fmt: skip
