"""Graph-level readout: mean pooling over atoms and the symmetric Cartesian tensor head."""

import torch
from e3nn.o3._irreps import Irreps
from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin, scatter


class GraphMeanPool(GraphModuleMixin, torch.nn.Module):
    """Mean of a per-atom field over the atoms of each structure (an intensive readout).

    Implemented as a sum divided by the number of atoms, which is safe on batched data.

    Args:
        field (str): per-atom input field
        out_field (str): per-structure output field
    """

    def __init__(self, field: str, out_field: str, irreps_in=None):
        super().__init__()
        self.field = field
        self.out_field = out_field
        self._init_irreps(
            irreps_in=irreps_in,
            required_irreps_in=[field],
            irreps_out={out_field: irreps_in[field]},
        )

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        x = data[self.field]
        if AtomicDataDict.BATCH_KEY in data:
            num_frames = AtomicDataDict.num_frames(data)
            summed = scatter(
                x, data[AtomicDataDict.BATCH_KEY], dim=0, dim_size=num_frames, reduce="sum"
            )
            num_atoms = data[AtomicDataDict.NUM_NODES_KEY].reshape(-1, 1).to(x.dtype)
            data[self.out_field] = summed / num_atoms
        else:
            data[self.out_field] = x.mean(dim=0, keepdim=True)
        return data


class SymmetricTensorReadout(GraphModuleMixin, torch.nn.Module):
    r"""Six per-structure coefficients -> symmetric 3x3 tensor, with isotropic scale and shift.

    With coefficients ``y`` (``1x0e+1x2e`` for the equivariant model, ``6x0e`` for the ablation)
    and the orthonormal change of basis ``Q`` (``(6, 3, 3)``, ``Q[0] = I / sqrt(3)``):

    .. math::
        \varepsilon = (\text{shift} + \text{scale}_{iso}\, y_0)\, I
        + \text{scale}_{aniso} \sum_{k=1}^{5} y_k Q_k

    so ``tr(eps) / 3 = shift + scale_iso * y_0``: the isotropic part is standardized by training
    data statistics and the anisotropic (traceless) part by its own scale.

    Args:
        field (str): input graph field with 6 components
        out_field (str): output graph field (3x3)
        change_of_basis (torch.Tensor): ``(6, 3, 3)`` map from coefficients to Cartesian tensors
        isotropic_shift (float): added to the isotropic part (e.g. mean ``eps_poly`` of the data)
        isotropic_scale (float): scale of the isotropic coefficient (e.g. std of ``eps_poly``)
        anisotropic_scale (float): scale of the five traceless coefficients
        square (bool): output ``S @ S + floor * I`` for the tensor ``S`` above: every eigenvalue
            is at least ``floor`` by construction (``floor = 0``: the positive semi-definite
            ionic tensor; ``floor = 1``: an electronic tensor ``I + PSD``)
        floor (float): lower bound of the eigenvalues with ``square``
    """

    def __init__(
        self,
        field: str,
        out_field: str,
        change_of_basis: torch.Tensor,
        isotropic_shift: float = 0.0,
        isotropic_scale: float = 1.0,
        anisotropic_scale: float = 1.0,
        square: bool = False,
        floor: float = 0.0,
        irreps_in=None,
    ):
        super().__init__()
        self.field = field
        self.out_field = out_field
        self.square = square
        self.floor = float(floor)
        self._init_irreps(
            irreps_in=irreps_in,
            required_irreps_in=[field],
            irreps_out={out_field: None},
        )
        assert Irreps(self.irreps_in[field]).dim == 6, (
            f"`{field}` must have 6 components, got irreps {self.irreps_in[field]}"
        )
        assert change_of_basis.shape == (6, 3, 3)
        dtype = torch.get_default_dtype()
        scales = torch.tensor([isotropic_scale * 3.0**0.5] + [anisotropic_scale] * 5, dtype=dtype)
        # fold the scales into the basis: eps = einsum(y, scales[:, None, None] * Q) + shift * I
        self.register_buffer(
            "basis", (scales.view(6, 1, 1) * change_of_basis.to(dtype)).reshape(6, 9)
        )
        self.register_buffer("shift", (isotropic_shift * torch.eye(3, dtype=dtype)).reshape(1, 9))

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        y = data[self.field]
        tensor = torch.addmm(self.shift, y, self.basis).view(-1, 3, 3)
        if self.square:
            tensor = torch.bmm(tensor, tensor)
            if self.floor != 0.0:
                tensor = tensor + self.floor * torch.eye(3, dtype=y.dtype, device=y.device)
        data[self.out_field] = tensor
        return data


class BornChargeReadout(GraphModuleMixin, torch.nn.Module):
    """Per-atom ``1x0e+1x1e+1x2e`` coefficients -> Born effective charges ``(N, 3, 3)`` obeying
    the acoustic sum rule exactly: the per-structure mean is subtracted, so ``sum_i Z*_i = 0``.

    Args:
        field (str): per-atom input field with 9 components
        out_field (str): per-atom output field (3x3)
        change_of_basis (torch.Tensor): ``(9, 3, 3)`` map to general Cartesian tensors
        scale (float): scale of the output (e.g. the training RMS of the Born charges)
    """

    def __init__(
        self,
        field: str,
        out_field: str,
        change_of_basis: torch.Tensor,
        scale: float = 1.0,
        irreps_in=None,
    ):
        super().__init__()
        self.field = field
        self.out_field = out_field
        self._init_irreps(
            irreps_in=irreps_in, required_irreps_in=[field], irreps_out={out_field: None}
        )
        assert Irreps(self.irreps_in[field]).dim == 9 and change_of_basis.shape == (9, 3, 3)
        dtype = torch.get_default_dtype()
        self.register_buffer("basis", scale * change_of_basis.to(dtype).reshape(9, 9))

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        z = torch.mm(data[self.field], self.basis)  # (num_atoms, 9)
        if AtomicDataDict.BATCH_KEY in data:
            batch = data[AtomicDataDict.BATCH_KEY]
            total = scatter(z, batch, dim=0, dim_size=AtomicDataDict.num_frames(data), reduce="sum")
            mean = total / data[AtomicDataDict.NUM_NODES_KEY].reshape(-1, 1).to(z.dtype)
            z = z - torch.index_select(mean, 0, batch)
        else:
            z = z - z.mean(dim=0, keepdim=True)
        data[self.out_field] = z.view(-1, 3, 3)
        return data
