"""Foundation backbones: node features as their sources compute them, symmetry, freezing, the
``I + PSD`` readout, element errors (training and packaging:
tests/integration/test_foundation_training.py)."""

import sys

import ase.build
import ase.io
import numpy as np
import pytest
import spglib
import torch
from nequip.utils.dtype import torch_default_dtype

from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.model import AnisoNetModel, BackboneParamGroups, FoundationAnisoNetModel
from helpers import build_tiny, bundled, predict, rotated, rotation

SEVENNET_R_MAX = 5.0
# SevenNet-0 as a backbone: slow
pytestmark = pytest.mark.slow


def _foundation(type_names, **kwargs):
    args = dict(r_max=SEVENNET_R_MAX, avg_num_neighbors=30.0, backbone_layers=2, num_layers=1)
    args.update(isotropic_shift=4.0, anisotropic_scale=50.0)
    return build_tiny(FoundationAnisoNetModel, type_names=type_names, **{**args, **kwargs})


def _idealized(atoms):
    """The crystal with its symmetry made exact (spglib's idealized primitive cell)."""
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    lattice, positions, numbers = spglib.standardize_cell(cell, to_primitive=True, symprec=1e-3)
    return ase.Atoms(numbers=numbers, scaled_positions=positions, cell=lattice, pbc=True)


@pytest.fixture(scope="module")
def frames():
    """Small real crystals with mirror-only point groups (mm2, m) and a few others, their
    symmetry made exact."""
    mirrors = [
        f
        for f in bundled("mp_subset_val") + bundled("mp_subset_test")
        if len(f) <= 10 and _point_group(f) in ("mm2", "m")
    ]
    others = [f for f in bundled("mp_subset_test", ":40") if len(f) <= 8][:3]
    return [_idealized(f) for f in mirrors[:3] + others]


def _point_group(atoms):
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    return spglib.get_symmetry_dataset(cell, symprec=1e-3).pointgroup


@pytest.fixture(scope="module")
def names(frames, symmetric_cells):
    return sorted({s for f in frames + list(symmetric_cells.values()) for s in f.symbols})


@pytest.fixture(scope="module")
def model(names):
    # random heads give small anisotropic parts: scale them up so that symmetry checks bite
    return _foundation(names, anisotropic_scale=2000.0)


def _node_features(model, atoms):
    """The backbone's output for one crystal, as the model computes it inside its forward."""
    captured = {}
    backbone = model.model.backbone
    hook = backbone.register_forward_hook(
        lambda module, inputs, out: captured.update(x=out["node_features"].detach().clone())
    )
    predict(model, [atoms])
    hook.remove()
    return captured["x"]


@pytest.mark.parametrize("layers", [1, 2])
def test_sevennet_features_equal_the_source_models_own_forward(frames, names, layers):
    import sevenn._keys as KEY
    import sevenn.util
    from sevenn.atom_graph_data import AtomGraphData
    from sevenn.train.dataload import unlabeled_atoms_to_graph

    model = _foundation(names, model_dtype="float32", backbone_layers=layers, num_layers=0)
    with torch_default_dtype(torch.float32):
        source, _ = sevenn.util.model_from_checkpoint(sevenn.util.pretrained_name_to_path("7net-0"))
    source.eval()
    captured = {}
    source._modules[f"{layers - 1}_equivariant_gate"].register_forward_hook(
        lambda module, inputs, out: captured.update(x=out[KEY.NODE_FEATURE].detach().clone())
    )
    for atoms in frames[:3]:
        # SevenNet's own graph (its neighbour list, cell shifts and element map)
        graph = unlabeled_atoms_to_graph(atoms, SEVENNET_R_MAX, with_shift=True)
        data = AtomGraphData.from_numpy_dict(graph)
        data[KEY.BATCH] = torch.zeros(len(atoms), dtype=torch.long)
        source(data)
        ours = _node_features(model, atoms)
        # ours: even and odd parts under inversion; their sum is the source's feature
        half = ours.shape[1] // 2
        assert ours.shape == (len(atoms), 2 * captured["x"].shape[1])
        scale = captured["x"].abs().max()
        torch.testing.assert_close(
            ours[:, :half] + ours[:, half:], captured["x"], rtol=0, atol=1e-5 * scale
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_rotation_equivariant_and_inversion_invariant(model, frames, seed):
    rot = rotation(seed)
    eps = predict(model, frames)
    eps_rot = predict(model, [rotated(f, rot) for f in frames])
    np.testing.assert_allclose(eps_rot, rot @ eps @ rot.T, atol=1e-8, rtol=0)
    inverted = []
    for f in frames:
        g = f.copy()
        g.positions = -f.positions
        g.set_cell(-f.cell.array, scale_atoms=False)
        inverted.append(g)
    np.testing.assert_allclose(predict(model, inverted), eps, atol=1e-10, rtol=0)
    assert np.abs(eps - eps.transpose(0, 2, 1)).max() < 1e-12


def test_neumann_forms_including_mirror_only_point_groups(model, frames, symmetric_cells):
    """Every point-group operation R of a crystal, mirrors included, leaves its predicted tensor
    unchanged (R eps R^T = eps): SevenNet's parity-free features alone would not do that for
    classes mm2 and m, whose only symmetries besides the identity are (or include) mirrors."""
    eps = predict(model, frames)
    for i, (atoms, e) in enumerate(zip(frames, eps)):
        cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
        lattice = atoms.cell.array.T  # columns: lattice vectors
        operations = spglib.get_symmetry(cell, symprec=1e-5)["rotations"]
        if i < 3:  # mirrors but no inversion centre
            assert any(np.linalg.det(w) < 0 for w in operations)
            assert not any((w == -np.eye(3)).all() for w in operations)
        for w in operations:
            r = lattice @ w @ np.linalg.inv(lattice)
            np.testing.assert_allclose(r @ e @ r.T, e, atol=1e-8, rtol=0)
        assert np.abs(e - np.trace(e) / 3 * np.eye(3)).max() > 1e-4  # not trivially isotropic

    cubic = predict(model, [symmetric_cells["rocksalt"], symmetric_cells["diamond"]])
    for e in cubic:
        np.testing.assert_allclose(e, np.trace(e) / 3 * np.eye(3), atol=1e-8)
    (wurtzite,) = predict(model, [symmetric_cells["wurtzite"]])
    values, vectors = np.linalg.eigh(wurtzite)
    gaps = np.abs(np.diff(values))
    assert gaps.min() < 1e-8 < gaps.max()  # uniaxial: two equal eigenvalues
    unique = vectors[:, 0] if gaps[0] > gaps[1] else vectors[:, 2]
    np.testing.assert_allclose(abs(unique[2]), 1.0, atol=1e-8)  # its axis along c


def test_frozen_backbone_gets_no_gradient_and_keeps_its_weights(names, frames):
    model = _foundation(names, model_dtype="float32", freeze_backbone=True)
    backbone = model.model.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_before = model.model.per_atom_readout.linear.weight.clone()
    groups = BackboneParamGroups(model, backbone_lr=1e-3)
    assert len(groups) == 1  # only the head trains
    optimizer = torch.optim.AdamW(groups, lr=0.01, weight_decay=0.03)
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        out = model(atoms_to_graphs(frames, names, SEVENNET_R_MAX))
        out["dielectric_tensor"].square().sum().backward()
        assert all(p.grad is None for p in backbone.parameters())
        optimizer.step()
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not torch.equal(model.model.per_atom_readout.linear.weight, head_before)


def test_fine_tuning_puts_the_backbone_in_its_own_group(names):
    model = _foundation(names, model_dtype="float32", freeze_backbone=False)
    groups = BackboneParamGroups(model, backbone_lr=3e-4)
    assert [g.get("lr") for g in groups] == [None, 3e-4]
    backbone_ids = {id(p) for p in model.model.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == backbone_ids
    assert not backbone_ids & {id(p) for p in groups[0]["params"]}
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_head_projection_narrows_the_head_and_keeps_the_symmetry(names, frames, symmetric_cells):
    """``head_input_features``: the backbone's features mapped to that many channels of each of
    its irreps, the head's tensor product on that width; symmetry as without it."""
    narrow = _foundation(names, head_input_features=4, anisotropic_scale=2000.0)
    wide = _foundation(names)
    projection = narrow.model.head_projection
    assert str(projection.irreps_out["node_features"]) == "4x0e+4x1e+4x2e+4x0o+4x1o+4x2o"
    assert "head_projection" not in dict(wide.model.named_children())

    def trainable(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    assert trainable(narrow) < trainable(wide)
    rot = rotation(2)
    eps = predict(narrow, frames)
    np.testing.assert_allclose(
        predict(narrow, [rotated(f, rot) for f in frames]), rot @ eps @ rot.T, atol=1e-8, rtol=0
    )
    assert np.abs(eps - np.trace(eps, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)).max() > 1e-4
    for e in predict(narrow, [symmetric_cells["rocksalt"], symmetric_cells["diamond"]]):
        np.testing.assert_allclose(e, np.trace(e) / 3 * np.eye(3), atol=1e-8)
    with pytest.raises(ValueError, match="head_input_features.*>= 1"):
        _foundation(names, head_input_features=0)


def test_head_projection_needs_a_backbone(type_names):
    with pytest.raises(ValueError, match="head_input_features.*has none"):
        build_tiny(AnisoNetModel, type_names=type_names, head_input_features=8)


@pytest.mark.parametrize("readout", ["square", "log"])
@pytest.mark.parametrize("builder", [AnisoNetModel, FoundationAnisoNetModel])
def test_positive_readouts_eigenvalues_at_least_one(builder, readout, names, frames, type_names):
    rng = np.random.default_rng(0)
    # square: a mean close to 1 and a large scale; log: its delta-method scales (divided by
    # the mean - 1) would make these overflow expm, so ordinary statistics
    scales = (1.05, 30.0) if readout == "square" else (5.0, 1.0)
    kwargs = dict(seed=3, readout=readout, isotropic_shift=scales[0], anisotropic_scale=scales[1])
    if builder is AnisoNetModel:
        model = build_tiny(AnisoNetModel, type_names=type_names, **kwargs)
        structures = bundled("mp_subset_test", ":60")
        structures = [f for f in structures if set(f.get_chemical_symbols()) <= set(type_names)]
    else:
        model = _foundation(names, **kwargs)
        structures = frames
    with torch.no_grad():  # random weights, pushed far from the mean
        for p in model.parameters():
            p.add_(torch.as_tensor(rng.normal(0, 0.5, p.shape), dtype=p.dtype))
    eps = predict(model, structures)
    values = np.linalg.eigvalsh(eps)
    assert values.min() >= 1.0 - 1e-10
    assert values.max() - values.min() > 0.1  # far from a trivial isotropic output


def test_unknown_elements_are_named(names, frames):
    with pytest.raises(ValueError, match="does not know the element.*Am"):
        _foundation(names + ["Am"])
    import aniso_nequip

    model = _foundation(names)
    element = next(e for e in ("Au", "Pt", "Ir", "Os") if e not in names)
    odd = ase.build.bulk(element, "fcc", a=4.1)  # an element outside this model's type names
    with pytest.raises(
        ValueError, match=rf"structure 1 \({element}\): element\(s\) {element} unknown"
    ):
        aniso_nequip.predict([frames[0], odd], model)


def test_missing_extra_names_it(names, monkeypatch):
    monkeypatch.setitem(sys.modules, "sevenn", None)
    monkeypatch.setitem(sys.modules, "sevenn.util", None)
    with pytest.raises(ImportError, match=r"aniso-nequip\[foundation\]"):
        _foundation(names)


def test_bad_backbone_settings_are_refused(names):
    with pytest.raises(ValueError, match="backbone_layers.*1..5"):
        _foundation(names, backbone_layers=6)
    with pytest.raises(ValueError, match="no 2e feature"):
        _foundation(names, backbone_layers=5, num_layers=0)
    with pytest.raises(ValueError, match="cutoff 5.0"):
        _foundation(names, r_max=4.0)
    with pytest.raises(ValueError, match="neither a file nor a SevenNet"):
        _foundation(names, backbone="7net-nonexistent")


@pytest.mark.parametrize("source", ["checkpoint", "package"])
def test_nequip_backbone_equals_the_source_models_own_features(trained, packaged, source):
    from nequip.model import ModelFromCheckpoint, ModelFromPackage

    path = str(trained["dir"] / "best.ckpt") if source == "checkpoint" else str(packaged)
    loader = ModelFromCheckpoint if source == "checkpoint" else ModelFromPackage
    original = loader(path)["sole_model"].eval()
    frames = bundled("mp_subset_train", ":4")
    # another element order than the source's: atom types are mapped to the source's
    names = sorted(original.type_names, reverse=True)
    model = FoundationAnisoNetModel(
        seed=0,
        model_dtype="float32",
        r_max=float(original.metadata["r_max"]),
        type_names=names,
        avg_num_neighbors=10.0,
        backbone=path,
        backbone_layers=1,
        num_layers=1,
        num_features=4,
    ).eval()
    captured = {}
    original.model.layer0_convnet.register_forward_hook(
        lambda module, inputs, out: captured.update(x=out["node_features"].detach().clone())
    )
    for atoms in frames:
        predict(original, [atoms])
        torch.testing.assert_close(_node_features(model, atoms), captured["x"])
    with pytest.raises(ValueError, match="r_max"):
        FoundationAnisoNetModel(
            seed=0,
            model_dtype="float32",
            r_max=6.0,
            type_names=names,
            avg_num_neighbors=10.0,
            backbone=path,
        )
