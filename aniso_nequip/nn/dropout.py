"""Equivariant dropout of per-atom features."""

import torch
from e3nn.o3._irreps import Irreps
from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin


class IrrepsDropout(GraphModuleMixin, torch.nn.Module):
    """Dropout of whole irreps of a per-atom field while training: each feature (a scalar, the
    three components of a ``1o``, the five of a ``2e``, ...) of each atom is kept with
    probability ``1 - p`` and scaled by ``1 / (1 - p)``, or zeroed, all its components together,
    so that the layer commutes with rotations (as e3nn's ``Dropout``; dropping single components
    of an ``l > 0`` feature would not). In evaluation it is the identity.

    Args:
        p (float): probability of dropping a feature, ``0 <= p < 1``
        field (str): the per-atom field (default the node features), replaced in place
    """

    def __init__(self, p: float, field: str = AtomicDataDict.NODE_FEATURES_KEY, irreps_in=None):
        super().__init__()
        assert 0.0 <= p < 1.0, f"dropout probability must be in [0, 1), got {p}"
        self.p = float(p)
        self.field = field
        self._init_irreps(irreps_in=irreps_in, required_irreps_in=[field])
        irreps = Irreps(self.irreps_in[field])
        dims = torch.tensor([ir.dim for mul, ir in irreps for _ in range(mul)])
        self.num_features = len(dims)
        # feature index of each component
        self.register_buffer(
            "feature_of_component",
            torch.repeat_interleave(torch.arange(self.num_features), dims),
            persistent=False,
        )

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if self.training and self.p > 0.0:
            x = data[self.field]
            keep = torch.empty(x.shape[0], self.num_features, dtype=x.dtype, device=x.device)
            keep = keep.bernoulli_(1.0 - self.p) / (1.0 - self.p)
            data[self.field] = x * keep[:, self.feature_of_component]
        return data

    def extra_repr(self) -> str:
        return f"p={self.p}"
