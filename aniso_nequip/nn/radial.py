"""Gaussian edge-length basis (the AnisoNet paper's radial encoding)."""

import torch
from e3nn.o3._irreps import Irreps
from e3nn.util.jit import compile_mode
from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin
from nequip.utils.compile import conditional_torchscript_jit

RADIAL_BASES = ("gaussian", "bessel")
"""Edge-length bases of a model: this module's :class:`GaussianEdgeLengthEncoding` (the paper's)
and nequip's ``BesselEdgeLengthEncoding``."""

MIN_NUM_BASIS = 2
"""Fewest radial basis functions: the Gaussians' spacing is ``1 / (num_basis - 1)``."""

MIN_POLYNOMIAL_CUTOFF_P = 2
"""Smallest exponent of nequip's ``PolynomialCutoff``, the envelope the radial bases are
multiplied by (it asserts ``p >= 2``)."""


@compile_mode("script")
class GaussianEdgeLengthEncoding(GraphModuleMixin, torch.nn.Module):
    r"""Gaussian edge-length basis times a smooth cutoff.

    ``num_basis`` Gaussians with centres evenly spaced on ``[0, 1]`` (edge length divided by
    ``r_max``) and width equal to their spacing, as e3nn's
    ``soft_one_hot_linspace(basis="gaussian")`` used by AnisoNet, multiplied by ``cutoff`` so
    that features vanish smoothly at ``r_max``.
    A drop-in alternative to nequip's :class:`~nequip.nn.embedding.BesselEdgeLengthEncoding`.

    Args:
        cutoff (torch.nn.Module): cutoff envelope acting on the normalized length
        num_basis (int): number of Gaussians
        edge_invariant_field (str): output field for the basis
        norm_length_field (str): input field holding edge length / ``r_max``
    """

    def __init__(
        self,
        cutoff: torch.nn.Module,
        num_basis: int = 15,
        edge_invariant_field: str = AtomicDataDict.EDGE_EMBEDDING_KEY,
        norm_length_field: str = AtomicDataDict.NORM_LENGTH_KEY,
        irreps_in=None,
    ):
        super().__init__()
        assert num_basis >= MIN_NUM_BASIS, (
            f"`num_basis` must be at least {MIN_NUM_BASIS}, got {num_basis}"
        )
        self.cutoff = conditional_torchscript_jit(cutoff)
        self.num_basis = num_basis
        self.edge_invariant_field = edge_invariant_field
        self.norm_length_field = norm_length_field
        centers = torch.linspace(0.0, 1.0, num_basis, dtype=torch.get_default_dtype())
        self.register_buffer("centers", centers.unsqueeze(0))  # (1, num_basis)
        self.inv_width = float(num_basis - 1)
        self._init_irreps(
            irreps_in=irreps_in,
            irreps_out={
                self.edge_invariant_field: Irreps([(num_basis, (0, 1))]),
                AtomicDataDict.EDGE_CUTOFF_KEY: "0e",
            },
        )
        self._output_dtype = torch.get_default_dtype()

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}"

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        x = data[self.norm_length_field].to(self._output_dtype)  # (num_edges, 1)
        # 1.12 normalizes the second moment of the basis, as in e3nn
        gauss = torch.exp(-(((x - self.centers) * self.inv_width) ** 2)) / 1.12
        cutoff = self.cutoff(x).to(self._output_dtype)
        data[AtomicDataDict.EDGE_CUTOFF_KEY] = cutoff
        data[self.edge_invariant_field] = gauss * cutoff
        return data
