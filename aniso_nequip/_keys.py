"""Field names that aniso-nequip adds to nequip's registry.

nequip already registers the electronic dielectric tensor
(``AtomicDataDict.DIELECTRIC_KEY = "dielectric_tensor"``, graph field, Cartesian ``ij=ji``) and the
Born effective charges (``AtomicDataDict.BORN_CHARGE_KEY = "born_effective_charges"``, node field,
Cartesian ``ij``); those names are reused, never redefined. Only what is missing is registered here.
"""

from typing import Final, Tuple

from nequip.data import AtomicDataDict, register_fields

DIELECTRIC_IONIC_KEY: Final[str] = "dielectric_ionic_tensor"
"""Ionic contribution to the static dielectric tensor (graph field, symmetric 3x3)."""

DIELECTRIC_IRREPS_KEY: Final[str] = "dielectric_tensor_irreps"
"""Model-internal: the pooled ``1x0e+1x2e`` (or ``6x0e``) coefficients of ``dielectric_tensor``."""

DIELECTRIC_IONIC_IRREPS_KEY: Final[str] = "dielectric_ionic_tensor_irreps"
"""Model-internal: pooled ``1x0e+1x2e`` coefficients of the square root of the ionic tensor."""

ATOMIC_DIELECTRIC_IRREPS_KEY: Final[str] = "atomic_dielectric_tensor_irreps"
ATOMIC_DIELECTRIC_IONIC_IRREPS_KEY: Final[str] = "atomic_dielectric_ionic_tensor_irreps"
"""Model-internal per-atom contributions, before mean pooling (multi-target model)."""

BORN_CHARGE_IRREPS_KEY: Final[str] = "born_effective_charges_irreps"
"""Model-internal: per-atom ``1x0e+1x1e+1x2e`` coefficients of the Born effective charges."""

BACKBONE_FEATURES_KEY: Final[str] = "backbone_features"
"""Training-time input: a frozen backbone's node features, read from the feature cache
(:class:`~aniso_nequip.train.BackboneFeatureCache`); a backbone module given them skips its own
computation."""

BACKBONE_FEATURES_ID_KEY: Final[str] = "backbone_features_id"
"""Training-time input (graph field, long): which backbone and settings ``backbone_features``
come from (:func:`~aniso_nequip.model.foundation.backbone_fingerprint`)."""

INVERSION_PARTNER_KEY: Final[str] = "inversion_partner"
"""Per-atom input (long): for a centrosymmetric crystal, the index of the atom each atom's inverse
image falls on (:func:`~aniso_nequip.data.symmetry.inversion_partners`), else -1; lets a
backbone symmetrized under inversion skip its second pass."""

PREDICTED_FIELDS: Final[Tuple[str, ...]] = (
    AtomicDataDict.DIELECTRIC_KEY,
    DIELECTRIC_IONIC_KEY,
    AtomicDataDict.BORN_CHARGE_KEY,
)
"""Physical fields a model may predict (what inference returns and evaluation writes)."""

register_fields(
    graph_fields=[
        DIELECTRIC_IONIC_KEY,
        DIELECTRIC_IRREPS_KEY,
        DIELECTRIC_IONIC_IRREPS_KEY,
        BACKBONE_FEATURES_ID_KEY,
    ],
    node_fields=[
        ATOMIC_DIELECTRIC_IRREPS_KEY,
        ATOMIC_DIELECTRIC_IONIC_IRREPS_KEY,
        BORN_CHARGE_IRREPS_KEY,
        BACKBONE_FEATURES_KEY,
        INVERSION_PARTNER_KEY,
    ],
    long_fields=[BACKBONE_FEATURES_ID_KEY, INVERSION_PARTNER_KEY],
    cartesian_tensor_fields={DIELECTRIC_IONIC_KEY: "ij=ji"},
)
