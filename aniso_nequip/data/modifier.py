"""Field modifiers for nequip's ``MetricsManager`` and ``DataStatisticsManager``.

Each turns a symmetric 3x3 graph field (default ``dielectric_tensor``) of an ``AtomicDataDict``
into the quantity a loss, metric or statistic is computed on, identically for predictions and
targets. Use them in YAML as ``field: {_target_: aniso_nequip.data.PolycrystallineConstant}``.
"""

from typing import Optional

import torch
from nequip.data import AtomicDataDict, BaseModifier

from .. import tensors

_IRREPS_SLICES = {None: slice(0, 6), "0e": slice(0, 1), "2e": slice(1, 6)}


class _SymmetricTensorModifier(BaseModifier):
    """Base: the symmetric graph tensor ``field`` (plus the tensor ``plus``, if given, e.g.
    ``field=dielectric_tensor, plus=dielectric_ionic_tensor`` for the static tensor)."""

    name: str = ""

    def __init__(
        self, field: str = AtomicDataDict.DIELECTRIC_KEY, plus: Optional[str] = None
    ) -> None:
        super().__init__(field)
        self.plus = plus

    def _func(self, data: AtomicDataDict.Type) -> torch.Tensor:
        tensor = data[self.field].reshape(-1, 3, 3)
        if self.plus is not None:
            tensor = tensor + data[self.plus].reshape(-1, 3, 3)
        return self._transform(tensor)

    def _transform(self, tensor: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __str__(self) -> str:
        plus = f"_plus_{self.plus}" if self.plus else ""
        return f"{self.field}{plus}_{self.name}"

    @property
    def type(self) -> str:
        return "graph"


class SymmetricTensorIrreps(_SymmetricTensorModifier):
    """``1x0e+1x2e`` coefficients of a symmetric tensor (the AnisoNet loss: MSE on these).

    Args:
        field (str): symmetric 3x3 graph field (default ``dielectric_tensor``)
        irrep (str): ``None`` for all six coefficients, ``"0e"`` for the isotropic one
            (``sqrt(3) * eps_poly``) or ``"2e"`` for the five traceless ones
    """

    def __init__(
        self,
        field: str = AtomicDataDict.DIELECTRIC_KEY,
        irrep: Optional[str] = None,
        plus: Optional[str] = None,
    ) -> None:
        if irrep not in _IRREPS_SLICES:
            raise ValueError(f"`irrep` must be one of {list(_IRREPS_SLICES)}, got `{irrep}`")
        super().__init__(field, plus)
        self.irrep = irrep
        self.name = "irreps" if irrep is None else f"irreps_{irrep}"

    def _transform(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensors.to_irreps(tensor)[:, _IRREPS_SLICES[self.irrep]]


class PolycrystallineConstant(_SymmetricTensorModifier):
    """Polycrystalline constant ``eps_poly = tr(eps) / 3`` (mean eigenvalue), shape ``(N,)``."""

    name = "eps_poly"

    def _transform(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensors.polycrystalline(tensor)


class AnisotropyRatio(_SymmetricTensorModifier):
    """Anisotropy ratio ``a_r = lambda_max / lambda_min``, shape ``(N,)``; NaN where
    ``lambda_min <= 0`` (e.g. an ionic tensor without IR-active modes), so that metrics with
    ``ignore_nan: true`` skip those crystals."""

    name = "a_r"

    def _transform(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensors.anisotropy_ratio(tensor)


class SortedEigenvalues(_SymmetricTensorModifier):
    """Eigenvalues in ascending order, shape ``(N, 3)``."""

    name = "eigenvalues"

    def _transform(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensors.eigenvalues(tensor)


class TensorIsotropicPart(BaseModifier):
    """Isotropic part ``tr(T) / 3`` of a per-atom 3x3 field, e.g. the Born effective charges'
    mean diagonal, shape ``(num_atoms,)``."""

    def __init__(self, field: str = AtomicDataDict.BORN_CHARGE_KEY) -> None:
        super().__init__(field)

    def _func(self, data: AtomicDataDict.Type) -> torch.Tensor:
        return torch.diagonal(data[self.field].reshape(-1, 3, 3), dim1=-2, dim2=-1).mean(-1)

    def __str__(self) -> str:
        return f"{self.field}_isotropic"
