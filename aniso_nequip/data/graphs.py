"""``ase.Atoms`` -> batched nequip graphs, exactly as nequip's datamodules build them."""

from typing import List, Sequence

import ase
from ase.calculators.calculator import all_properties
from nequip.data import AtomicDataDict, from_ase
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform


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
    """
    mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=list(type_names))
    neighbors = NeighborListTransform(r_max=r_max)
    exclude = None if with_references else list(all_properties)
    graphs = [neighbors(mapper(from_ase(atoms, exclude_keys=exclude))) for atoms in structures]
    return AtomicDataDict.batched_from_list(graphs)
