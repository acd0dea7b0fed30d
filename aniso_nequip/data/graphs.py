"""``ase.Atoms`` -> batched nequip graphs, exactly as nequip's datamodules build them."""

from typing import List, Sequence

import ase
from nequip.data import AtomicDataDict, from_ase
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform


def atoms_to_graphs(
    structures: Sequence[ase.Atoms], type_names: List[str], r_max: float
) -> AtomicDataDict.Type:
    """Batch ``structures`` into one ``AtomicDataDict`` with atom types and neighbour lists.

    Reference tensors carried by the structures (e.g. ``dielectric_tensor`` in a
    ``SinglePointCalculator``) are kept, as nequip's ``ASEDataset`` keeps them.

    Args:
        structures: crystals as ``ase.Atoms``
        type_names: the model's type names (chemical symbols)
        r_max: neighbour-list cutoff (the model's ``r_max``)
    """
    mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=list(type_names))
    neighbors = NeighborListTransform(r_max=r_max)
    graphs = [neighbors(mapper(from_ase(atoms))) for atoms in structures]
    return AtomicDataDict.batched_from_list(graphs)
