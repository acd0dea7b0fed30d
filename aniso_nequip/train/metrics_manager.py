"""Loss and metrics of dielectric models, as nequip's ``EnergyForceLoss`` and
``EnergyForceMetrics`` are for energy models (the data statistics:
:mod:`aniso_nequip.data.stats_manager`).

A config names the predicted fields (heads) and their weights; everything else follows:

.. code-block:: yaml

    training_module:
      loss:
        _target_: aniso_nequip.train.DielectricLoss
        coeffs: {dielectric_tensor: 1.0}
        metric: mae
"""

from typing import Dict, List, Optional

from nequip.data import AtomicDataDict
from nequip.train import MeanAbsoluteError, MeanSquaredError, MetricsManager

from .._keys import DIELECTRIC_IONIC_KEY
from ..data.modifier import (
    AnisotropyRatio,
    PolycrystallineConstant,
    SortedEigenvalues,
    SymmetricTensorIrreps,
    TensorIsotropicPart,
)
from ..data.stats_manager import check_heads
from ..errors import InputError
from ..variables import check_variable
from .log_metrics import LogMeanAbsoluteError, LogMeanSquaredError
from .ranking import SpearmanCorrelation

HEADS = {
    AtomicDataDict.DIELECTRIC_KEY: "",
    DIELECTRIC_IONIC_KEY: "ionic_",
    AtomicDataDict.BORN_CHARGE_KEY: "born_",
}
"""Fields a dielectric model may predict (:data:`aniso_nequip._keys.PREDICTED_FIELDS`), with the
prefix of their loss and metric names."""

LOSS_METRICS = {
    "mse": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "log_mse": LogMeanSquaredError,
    "log_mae": LogMeanAbsoluteError,
}
"""``loss_metric`` -> metric; ``log_*`` compare ``logm(eps - I)`` (:mod:`.log_metrics`)."""

_DEFAULT_HEADS = {AtomicDataDict.DIELECTRIC_KEY: 1.0}


def _error_entry(field: str, coeff: Optional[float], metric: str) -> dict:
    """The ``{prefix}irreps_{metric}`` (symmetric tensors) or ``born_{metric}`` entry."""
    check_variable("loss_metric", metric)
    if metric.startswith("log_"):
        if field != AtomicDataDict.DIELECTRIC_KEY:
            raise InputError(
                f"`loss_metric: {metric}` compares logm(eps - I) of the electronic "
                f"`dielectric_tensor` only; `{field}` has no such logarithm (use mse or mae)"
            )
        name, modified = f"irreps_{metric}", field
    elif field == AtomicDataDict.BORN_CHARGE_KEY:
        name, modified = f"born_{metric}", field
    else:
        name, modified = f"{HEADS[field]}irreps_{metric}", SymmetricTensorIrreps(field=field)
    return {"name": name, "field": modified, "coeff": coeff, "metric": LOSS_METRICS[metric]()}


def DielectricLoss(
    coeffs: Dict[str, float] = _DEFAULT_HEADS,
    metric: str = "mse",
    anisotropic_coeff: float = 0.0,
    type_names: Optional[List[str]] = None,
) -> MetricsManager:
    """The training loss: ``metric`` (``mse``, the paper's, or ``mae``) of each predicted field,
    weighted by ``coeffs`` (which ``MetricsManager`` normalises to sum 1); ``log_mse`` and
    ``log_mae`` compare the coefficients of ``logm(eps - I)`` instead (``irreps_log_mse``,
    :mod:`~aniso_nequip.train.log_metrics`; ``dielectric_tensor`` alone).

    Symmetric tensors (``dielectric_tensor``, ``dielectric_ionic_tensor``) are compared on their
    ``1x0e+1x2e`` coefficients (entries ``irreps_mse``, ``ionic_irreps_mse``), Born charges
    component-wise (``born_mse``).

    Args:
        coeffs (Dict[str, float]): predicted field -> weight (default ``{dielectric_tensor: 1}``)
        metric (str): ``mse``, ``mae``, ``log_mse`` or ``log_mae``
        anisotropic_coeff (float): weight of an extra term on the ``2e`` (anisotropic)
            coefficients of ``dielectric_tensor`` (``anisotropic_{metric}``; default 0: none)
        type_names (List[str]): atom type names (nequip's training module passes them)
    """
    check_heads(coeffs, "loss `coeffs`")
    entries = [_error_entry(field, coeff, metric) for field, coeff in coeffs.items()]
    if anisotropic_coeff:
        if metric.startswith("log_"):
            raise InputError(f"`anisotropic_coeff` needs `loss_metric` mse or mae, got {metric}")
        entries.append(
            {
                "name": f"anisotropic_{metric}",
                "field": SymmetricTensorIrreps(irrep="2e"),
                "coeff": anisotropic_coeff,
                "metric": LOSS_METRICS[metric](),
            }
        )
    return MetricsManager(entries, type_names=type_names)


def _tensor_metrics(field: str) -> List[dict]:
    prefix, ionic = HEADS[field], field == DIELECTRIC_IONIC_KEY
    # how the crystals rank by a_r (checkpoint selection for discovery; the electronic tensor)
    ranking = [
        {"name": "a_r_spearman", "field": AnisotropyRatio(field), "metric": SpearmanCorrelation()}
    ]
    return [
        {"name": f"{prefix}component_mae", "field": field, "metric": MeanAbsoluteError()},
        {
            "name": f"{prefix}eps_poly_mae",
            "field": PolycrystallineConstant(field=field),
            "metric": MeanAbsoluteError(),
        },
        {
            # an ionic tensor may vanish, where its anisotropy ratio is undefined
            "name": f"{prefix}a_r_mae",
            "field": AnisotropyRatio(field=field),
            "metric": MeanAbsoluteError(),
            "ignore_nan": ionic,
        },
        {
            "name": f"{prefix}eigenvalue_mae",
            "field": SortedEigenvalues(field=field),
            "metric": MeanAbsoluteError(),
        },
    ] + ([] if ionic else ranking)


def DielectricMetrics(
    heads: Dict[str, float] = _DEFAULT_HEADS, type_names: Optional[List[str]] = None
) -> MetricsManager:
    """Validation and test metrics of the predicted fields ``heads``.

    Each field's MSE entry (as in :func:`DielectricLoss`) carries its ``heads`` weight, so the
    logged ``weighted_sum`` (what checkpointing and early stopping monitor) is the paper's MSE
    for one head. For each symmetric tensor the MAEs of the components, ``eps_poly``, ``a_r``
    and the sorted eigenvalues follow (``component_mae``, ``eps_poly_mae``, ``a_r_mae``,
    ``eigenvalue_mae``, prefixed ``ionic_`` for the ionic tensor), and for ``dielectric_tensor``
    the Spearman rank correlation of ``a_r`` over the epoch (``a_r_spearman``, what a screen
    for anisotropic crystals needs: :mod:`~aniso_nequip.train.ranking`); with both tensors,
    those of the static tensor (``static_eps_poly_mae``, ``static_a_r_mae``); for Born charges
    the MAE of the components and of their isotropic part (``born_mae``,
    ``born_isotropic_mae``).

    Args:
        heads (Dict[str, float]): predicted field -> weight (default ``{dielectric_tensor: 1}``)
        type_names (List[str]): atom type names (nequip's training module passes them)
    """
    check_heads(heads, "metrics `heads`")
    entries = [_error_entry(field, coeff, "mse") for field, coeff in heads.items()]
    for field in heads:
        if field != AtomicDataDict.BORN_CHARGE_KEY:
            entries += _tensor_metrics(field)
    if {AtomicDataDict.DIELECTRIC_KEY, DIELECTRIC_IONIC_KEY} <= set(heads):
        static = dict(field=AtomicDataDict.DIELECTRIC_KEY, plus=DIELECTRIC_IONIC_KEY)
        entries += [
            {
                "name": "static_eps_poly_mae",
                "field": PolycrystallineConstant(**static),
                "metric": MeanAbsoluteError(),
            },
            {
                "name": "static_a_r_mae",
                "field": AnisotropyRatio(**static),
                "metric": MeanAbsoluteError(),
                "ignore_nan": True,
            },
        ]
    if AtomicDataDict.BORN_CHARGE_KEY in heads:
        entries += [
            {
                "name": "born_mae",
                "field": AtomicDataDict.BORN_CHARGE_KEY,
                "metric": MeanAbsoluteError(),
            },
            {
                "name": "born_isotropic_mae",
                "field": TensorIsotropicPart(),
                "metric": MeanAbsoluteError(),
            },
        ]
    return MetricsManager(entries, type_names=type_names)
