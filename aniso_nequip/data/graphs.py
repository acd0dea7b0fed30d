"""``ase.Atoms`` -> batched nequip graphs, exactly as nequip's datamodules build them."""

from typing import List, Sequence

import ase
import torch
from ase.calculators.calculator import all_properties
from nequip.data import AtomicDataDict, from_ase
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

from .._keys import INVERSION_PARTNER_KEY
from .symmetry import inversion_partners


def atoms_to_graphs(
    structures: Sequence[ase.Atoms],
    type_names: List[str],
    r_max: float,
    with_references: bool = True,
) -> AtomicDataDict.Type:
    """Batch ``structures`` into one ``AtomicDataDict`` with atom types and neighbour lists.

    Args:
        structures: crystals as ``ase.Atoms``
        type_names: the model's type names (chemical symbols)
        r_max: neighbour-list cutoff (the model's ``r_max``)
        with_references: keep the reference properties the structures carry (e.g.
            ``dielectric_tensor`` in a ``SinglePointCalculator``), as nequip's ``ASEDataset``
            does; ``False`` keeps only the structure, so frames with and without references
            batch together (inference)

    Each structure's atoms also get ``inversion_partner``
    (:func:`~aniso_nequip.data.symmetry.inversion_partners`, -1 without an inversion centre),
    which spares a backbone symmetrized under inversion its second pass on centrosymmetric
    crystals.
    """
    mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=list(type_names))
    neighbors = NeighborListTransform(r_max=r_max)
    exclude = None if with_references else list(all_properties)
    graphs = []
    for atoms in structures:
        graph = neighbors(mapper(from_ase(atoms, exclude_keys=exclude)))
        partners = inversion_partners(atoms)
        graph[INVERSION_PARTNER_KEY] = torch.full((len(atoms),), -1, dtype=torch.long)
        if partners is not None:
            graph[INVERSION_PARTNER_KEY] = torch.as_tensor(partners, dtype=torch.long)
        graphs.append(graph)
    return AtomicDataDict.batched_from_list(graphs)
