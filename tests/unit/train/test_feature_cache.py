"""The frozen-backbone feature cache: what it stores equals what the backbone computes, its keys
follow the structure and the backbone's settings, broken files are rebuilt (training with it:
tests/integration/test_feature_cache_training.py)."""

import ase.build
import ase.io
import h5py
import numpy as np
import pytest
import torch
from nequip.data import AtomicDataDict, from_ase
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
from nequip.utils.dtype import torch_default_dtype

from aniso_nequip import _keys
from aniso_nequip.model import FoundationAnisoNetModel
from aniso_nequip.model.foundation import backbone_fingerprint, frozen_backbone
from aniso_nequip.train import BackboneFeatureCache
from aniso_nequip.train.feature_cache import structure_key
from helpers import build_tiny, bundled

R_MAX = 5.0
# SevenNet-0 as a backbone: slow
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning:sevenn")]


@pytest.fixture(scope="module")
def crystals():
    return [f for f in bundled("mp_subset_test", ":30") if len(f) <= 6][:4]


@pytest.fixture(scope="module")
def names(crystals):
    return sorted({s for f in crystals for s in f.symbols})


@pytest.fixture(scope="module")
def model(names):
    return build_tiny(
        FoundationAnisoNetModel,
        type_names=names,
        r_max=R_MAX,
        backbone_layers=1,
        num_layers=1,
        model_dtype="float32",
        isotropic_shift=4.0,
        anisotropic_scale=50.0,
    )


def _cache(names, tmp_path, **kwargs):
    args = dict(
        backbone="7net-0",
        backbone_layers=1,
        r_max=R_MAX,
        type_names=names,
        model_dtype="float32",
        cache_dir=str(tmp_path / "cache"),
    )
    return BackboneFeatureCache(**{**args, **kwargs})


def _graphs(crystals, names, cache=None):
    mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=names)
    neighbours = NeighborListTransform(r_max=R_MAX)
    graphs = []
    for atoms in crystals:
        graph = neighbours(mapper(from_ase(atoms)))
        graphs.append(cache(graph) if cache else graph)
    return AtomicDataDict.batched_from_list(graphs)


def _predict(model, data):
    with torch.no_grad():
        return model(dict(data))["dielectric_tensor"].numpy()


def _features(model, data):
    captured = {}
    hook = model.model.backbone.register_forward_hook(
        lambda m, i, out: captured.update(x=out["node_features"].detach().clone())
    )
    _predict(model, data)
    hook.remove()
    return captured["x"]


def test_cached_features_are_the_backbones_and_change_no_prediction(
    model, crystals, names, tmp_path
):
    cached = _graphs(crystals, names, _cache(names, tmp_path))
    plain = _graphs(crystals, names)
    features = _features(model, plain)
    np.testing.assert_allclose(cached[_keys.BACKBONE_FEATURES_KEY], features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _predict(model, cached), _predict(model, plain), rtol=1e-5, atol=1e-6
    )
    # the model really reads them: features of another crystal change its prediction
    swapped = dict(cached)
    swapped[_keys.BACKBONE_FEATURES_KEY] = cached[_keys.BACKBONE_FEATURES_KEY].flip(0)
    assert not np.allclose(_predict(model, swapped), _predict(model, plain), atol=1e-3)
    # ... unless their fingerprint is not the backbone's own: then it computes them itself
    swapped[_keys.BACKBONE_FEATURES_ID_KEY] = swapped[_keys.BACKBONE_FEATURES_ID_KEY] + 1
    np.testing.assert_allclose(
        _predict(model, swapped), _predict(model, plain), rtol=1e-5, atol=1e-6
    )
    # a second cache on the same folder reads every entry from the file, computing nothing
    again = _cache(names, tmp_path)
    again._compute = None
    reread = _graphs(crystals, names, again)
    assert torch.equal(reread[_keys.BACKBONE_FEATURES_KEY], cached[_keys.BACKBONE_FEATURES_KEY])
    (path,) = (tmp_path / "cache").glob("*.h5")
    with h5py.File(path) as file:
        assert len(file) == len(crystals)


def test_unfrozen_backbone_ignores_cached_features(crystals, names, tmp_path):
    tuned = build_tiny(
        FoundationAnisoNetModel,
        type_names=names,
        r_max=R_MAX,
        backbone_layers=1,
        num_layers=1,
        model_dtype="float32",
        freeze_backbone=False,
    )
    cached = _graphs(crystals, names, _cache(names, tmp_path))
    cached[_keys.BACKBONE_FEATURES_KEY] = torch.zeros_like(cached[_keys.BACKBONE_FEATURES_KEY])
    np.testing.assert_allclose(
        _predict(tuned, cached), _predict(tuned, _graphs(crystals, names)), rtol=1e-5, atol=1e-6
    )
    assert not _cache(names, tmp_path, enabled=False).enabled


def test_structure_key_follows_numbers_positions_cell_and_pbc():
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64)
    base = structure_key(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
    assert base == structure_key(atoms.numbers, atoms.positions.copy(), atoms.cell.array, atoms.pbc)
    moved = atoms.positions.copy()
    moved[1, 0] += 1e-9
    changed = [
        (atoms.numbers[::-1], atoms.positions, atoms.cell.array, atoms.pbc),
        (atoms.numbers, moved, atoms.cell.array, atoms.pbc),
        (atoms.numbers, atoms.positions, atoms.cell.array * 1.01, atoms.pbc),
        (atoms.numbers, atoms.positions, atoms.cell.array, [True, True, False]),
    ]
    assert len({base, *(structure_key(*c) for c in changed)}) == 5


def test_fingerprint_follows_the_backbones_settings_not_the_type_order(names):
    def fingerprint(type_names=names, layers=1, dtype=torch.float32):
        with torch_default_dtype(dtype):
            return frozen_backbone("7net-0", type_names, R_MAX, layers).features_id

    base = fingerprint()
    assert base == fingerprint(type_names=names[::-1])
    assert len({base, fingerprint(layers=2), fingerprint(dtype=torch.float64)}) == 3
    with torch_default_dtype(torch.float32):
        module = frozen_backbone("7net-0", names, R_MAX, 1)
        with torch.no_grad():
            module.layers[0].linear_1.weight.add_(1e-3)
        assert backbone_fingerprint(module, R_MAX, 1) != base


def test_corrupt_or_stale_cache_files_are_rebuilt(crystals, names, tmp_path):
    good = _graphs(crystals, names, _cache(names, tmp_path))[_keys.BACKBONE_FEATURES_KEY]
    (path,) = (tmp_path / "cache").glob("*.h5")
    # an entry of the wrong shape is recomputed and replaced
    with h5py.File(path, "a") as file:
        key = next(iter(file))
        del file[key]
        file.create_dataset(key, data=np.zeros((1, 3), dtype=np.float32))
    again = _graphs(crystals, names, _cache(names, tmp_path))[_keys.BACKBONE_FEATURES_KEY]
    assert torch.equal(again, good)
    with h5py.File(path) as file:
        assert file[key].shape[0] > 1
    # a file of another backbone, or one that is not HDF5 at all, is rebuilt with a warning
    for damage in ("fingerprint", "garbage"):
        if damage == "fingerprint":
            with h5py.File(path, "a") as file:
                file.attrs["fingerprint"] = 1
        else:
            path.write_bytes(b"not an hdf5 file")
        with pytest.warns(UserWarning, match="unusable.*rebuilding"):
            rebuilt = _graphs(crystals, names, _cache(names, tmp_path))
        assert torch.equal(rebuilt[_keys.BACKBONE_FEATURES_KEY], good)
        with h5py.File(path) as file:
            assert len(file) == len(crystals)
