"""Multi-target model: electronic and ionic dielectric tensors and Born effective charges."""

from typing import Optional

from nequip.data import AtomicDataDict
from nequip.model import model_builder
from nequip.nn import AtomwiseLinear, GraphModel, SequentialGraphNetwork

from .. import _keys
from ..nn import BornChargeReadout
from ..tensors import change_of_basis
from ..variables import resolve_readout
from .anisonet import _trunk, dielectric_head, readout_scales, tensor_head


@model_builder
def AnisoNetStaticModel(
    electronic: bool = True,
    ionic: bool = True,
    born_charges: bool = True,
    isotropic_shift: float = 0.0,
    isotropic_scale: float = 1.0,
    anisotropic_scale: float = 1.0,
    ionic_mean: float = 1.0,
    ionic_scale: float = 1.0,
    born_scale: float = 1.0,
    readout: str = "linear",
    physical_readout: Optional[bool] = None,
    **kwargs,
) -> GraphModel:
    """One :func:`~aniso_nequip.model.AnisoNetModel` trunk with up to three equivariant heads.

    - ``electronic``: ``dielectric_tensor`` exactly as ``AnisoNetModel``, with its ``readout``
      (``linear``, ``square``, ``log`` or ``local_field``; ``physical_readout``, the boolean of
      saved configs, as there);
    - ``ionic``: ``dielectric_ionic_tensor = S @ S`` with ``S`` a mean-pooled ``0e+2e`` symmetric
      tensor, so predictions are positive semi-definite like the DFPT ionic tensors; ``S`` starts
      at ``sqrt(ionic_mean) I`` and its coefficients are scaled so that ``ionic_scale`` is the
      scale of the ionic ``eps_poly`` (first order). This form whatever the ``readout``: ionic
      tensors vanish exactly (no IR-active mode: elemental crystals) or along some axes, which
      ``S @ S`` reaches and a log-space ``expm(L)`` only as ``L -> -inf``; and ionic screening is
      not the electronic local field of :class:`~aniso_nequip.nn.LocalFieldReadout`;
    - ``born_charges``: per-atom ``born_effective_charges`` from ``1x0e+1x1e+1x2e`` features
      (a general 3x3 tensor per atom), scaled by ``born_scale``, with the per-structure mean
      removed so that the acoustic sum rule ``sum_i Z*_i = 0`` holds exactly.

    The static tensor is ``dielectric_tensor + dielectric_ionic_tensor``. Other arguments
    (``l_max``, ``num_layers``, ``num_features``, ...) are those of ``AnisoNetModel``.
    """
    readout = resolve_readout(readout, physical_readout)
    if not (electronic or ionic or born_charges):
        raise ValueError("at least one of `electronic`, `ionic`, `born_charges` must be enabled")
    modules, prev_irreps = _trunk(
        last_layer=("0e", "2e", "1e") if born_charges else ("0e", "2e"), **kwargs
    )

    # each head reads the trunk's node features; irreps chain through the heads so that the
    # model's irreps_out lists every head's output
    def add(head):
        nonlocal prev_irreps
        modules.update(head)
        prev_irreps = list(head.values())[-1].irreps_out

    if electronic:
        add(
            dielectric_head(
                prev_irreps,
                isotropic_shift=isotropic_shift,
                isotropic_scale=isotropic_scale,
                anisotropic_scale=anisotropic_scale,
                readout=readout,
                names=("electronic_per_atom", "electronic_pool", "electronic_readout"),
                atomic_field=_keys.ATOMIC_DIELECTRIC_IRREPS_KEY,
            )
        )
    if ionic:
        add(
            tensor_head(
                names=("ionic_per_atom", "ionic_pool", "ionic_readout"),
                prev_irreps=prev_irreps,
                readout_irreps="1x0e+1x2e",
                atomic_field=_keys.ATOMIC_DIELECTRIC_IONIC_IRREPS_KEY,
                pooled_field=_keys.DIELECTRIC_IONIC_IRREPS_KEY,
                out_field=_keys.DIELECTRIC_IONIC_KEY,
                **readout_scales(ionic_mean, ionic_scale, ionic_scale, "square", floor=0.0),
            )
        )
    if born_charges:
        per_atom = AtomwiseLinear(
            field=AtomicDataDict.NODE_FEATURES_KEY,
            out_field=_keys.BORN_CHARGE_IRREPS_KEY,
            irreps_in=prev_irreps,
            irreps_out="1x0e+1x1e+1x2e",
        )
        readout = BornChargeReadout(
            field=_keys.BORN_CHARGE_IRREPS_KEY,
            out_field=AtomicDataDict.BORN_CHARGE_KEY,
            change_of_basis=change_of_basis(formula="ij"),
            scale=born_scale,
            irreps_in=per_atom.irreps_out,
        )
        add({"born_per_atom": per_atom, "born_readout": readout})
    return SequentialGraphNetwork(modules)
