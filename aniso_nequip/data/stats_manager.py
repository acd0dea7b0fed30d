"""Training-data statistics of dielectric models, as nequip's ``CommonDataStatisticsManager``
is for energy models.

.. code-block:: yaml

    data:
      stats_manager:
        _target_: aniso_nequip.data.DielectricStatisticsManager
        heads: [dielectric_tensor]
"""

from typing import Iterable, List, Optional

from nequip.data import (
    AtomicDataDict,
    DataStatisticsManager,
    Mean,
    NumNeighbors,
    RootMeanSquare,
    StandardDeviation,
)

from .._keys import DIELECTRIC_IONIC_KEY, PREDICTED_FIELDS
from .modifier import PolycrystallineConstant, SymmetricTensorIrreps


def check_heads(heads: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` unless ``heads`` names one or more of
    :data:`~aniso_nequip._keys.PREDICTED_FIELDS` (``what`` says whose heads they are)."""
    unknown = sorted(set(heads) - set(PREDICTED_FIELDS))
    if unknown or not heads:
        raise ValueError(
            f"{what} must name fields among {sorted(PREDICTED_FIELDS)}, got {sorted(heads)}"
        )


class StatisticsWithProgress(DataStatisticsManager):
    """nequip's :class:`~nequip.data.DataStatisticsManager` with a progress bar over the
    batches of its pass through the training data (the neighbour lists are built there: minutes
    for the bundled MP subset on a laptop CPU, silent without it)."""

    def get_statistics(self, data_source):
        from tqdm import tqdm

        total = len(data_source) if hasattr(data_source, "__len__") else None
        batches = tqdm(data_source, total=total, desc="training-data statistics", unit="batch")
        return super().get_statistics(batches)


def DielectricStatisticsManager(
    heads: Iterable[str] = (AtomicDataDict.DIELECTRIC_KEY,),
    dataloader_kwargs: Optional[dict] = None,
    type_names: Optional[List[str]] = None,
) -> DataStatisticsManager:
    """Training-data statistics that the model builders' shifts and scales interpolate
    (``${training_data_stats:NAME}``), computed with a progress bar
    (:class:`StatisticsWithProgress`):

    - always ``num_neighbors_mean``;
    - ``dielectric_tensor``: ``eps_poly_mean``, ``eps_poly_std``, ``eps_2e_rms`` (RMS of the
      ``2e`` coefficients);
    - ``dielectric_ionic_tensor``: ``ionic_eps_poly_mean``, ``ionic_eps_poly_std``;
    - ``born_effective_charges``: ``born_rms``.

    Args:
        heads (Iterable[str]): predicted fields, e.g. the keys of the loss ``coeffs``
            (default ``[dielectric_tensor]``)
        dataloader_kwargs (dict): of the statistics pass (default ``{batch_size: 32}``)
        type_names (List[str]): atom type names (for per-type statistics)
    """
    check_heads(heads, "statistics `heads`")
    stats = [("num_neighbors_mean", NumNeighbors(), Mean())]
    if AtomicDataDict.DIELECTRIC_KEY in heads:
        stats += [
            ("eps_poly_mean", PolycrystallineConstant(), Mean()),
            ("eps_poly_std", PolycrystallineConstant(), StandardDeviation()),
            ("eps_2e_rms", SymmetricTensorIrreps(irrep="2e"), RootMeanSquare()),
        ]
    if DIELECTRIC_IONIC_KEY in heads:
        ionic = PolycrystallineConstant(field=DIELECTRIC_IONIC_KEY)
        stats += [
            ("ionic_eps_poly_mean", ionic, Mean()),
            ("ionic_eps_poly_std", ionic, StandardDeviation()),
        ]
    if AtomicDataDict.BORN_CHARGE_KEY in heads:
        stats.append(("born_rms", AtomicDataDict.BORN_CHARGE_KEY, RootMeanSquare()))
    return StatisticsWithProgress(
        [{"name": name, "field": field, "metric": metric} for name, field, metric in stats],
        dataloader_kwargs=dataloader_kwargs or {"batch_size": 32},
        type_names=type_names,
    )
