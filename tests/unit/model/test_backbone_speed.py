"""The inversion-symmetrized backbone's shortcuts change no feature: the first block shared by a
crystal and its inverse image, and centrosymmetric crystals that skip the inverted pass."""

import ase.build
import numpy as np
import pytest
import torch
from nequip.utils.dtype import torch_default_dtype

from aniso_nequip import _keys
from aniso_nequip.data import atoms_to_graphs
from aniso_nequip.data.symmetry import inversion_partners
from aniso_nequip.model.sevennet_backbone import sevennet_backbone
from helpers import bundled

# SevenNet-0 as a backbone: slow
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning:sevenn")]


def test_inversion_partners_map_each_atom_to_its_inverse_image():
    rocksalt = ase.build.bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    rocksalt.positions += 0.37  # the inversion centres are off the origin
    partners = inversion_partners(rocksalt)
    assert sorted(partners) == list(range(len(rocksalt)))
    assert (rocksalt.numbers[partners] == rocksalt.numbers).all()
    frac = rocksalt.get_scaled_positions(wrap=False)
    centre = frac[0] + frac[partners[0]]
    d = centre - frac - frac[partners]
    np.testing.assert_allclose(d - np.round(d), 0, atol=1e-12)
    assert inversion_partners(ase.build.bulk("ZnO", "wurtzite", a=3.25, c=5.2, u=0.38)) is None
    rattled = rocksalt.copy()
    rattled.positions[0] += [1e-4, 0, 0]
    assert inversion_partners(rattled) is None
    assert inversion_partners(ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shortcuts_change_no_feature(dtype):
    frames = [f for f in bundled("mp_subset_test", ":40") if len(f) <= 12][:10]
    partners = [inversion_partners(f) for f in frames]
    assert 0 < sum(p is not None for p in partners) < len(frames)  # both kinds in one batch
    names = sorted({s for f in frames for s in f.symbols})
    with torch_default_dtype(dtype):
        backbone = sevennet_backbone("7net-0", names, 5.0, 2).eval()
    data = atoms_to_graphs(frames, names, 5.0)

    def features(share, with_partners):
        backbone.share_first_layer = share
        graph = dict(data)
        if not with_partners:
            graph.pop(_keys.INVERSION_PARTNER_KEY)
        with torch.no_grad():
            return backbone(graph)["node_features"]

    plain = features(False, False)
    assert torch.equal(features(True, False), plain)  # sign flips are exact
    tol = dict(rtol=0, atol=1e-5 * float(plain.abs().max()))
    np.testing.assert_allclose(features(True, True), plain, **tol)
    np.testing.assert_allclose(features(False, True), plain, **tol)
