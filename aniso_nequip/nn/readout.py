"""Graph-level readouts: mean pooling over atoms, the symmetric Cartesian tensor head and the
local-field head."""

import torch
from e3nn.o3._irreps import Irreps
from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin, scatter
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from .dipole import local_field_tensor

FORMS = ("linear", "square", "exp")
"""Forms of :class:`SymmetricTensorReadout`: ``S``, ``floor I + S @ S``, ``floor I + expm(S)``."""


def _init_coefficient_head(
    module,
    field,
    out_field,
    irreps_in,
    change_of_basis,
    isotropic_shift,
    isotropic_scale,
    anisotropic_scale,
) -> None:
    """Set up a head reading the 6 coefficients ``field`` into the 3x3 tensor ``out_field``: its
    irreps (the input must have 6 components) and the buffers of the linear map
    ``eps = y @ basis + shift`` (``basis`` the scaled change of basis ``(6, 9)``, ``shift`` the
    isotropic shift ``(1, 9)``)."""
    module.field = field
    module.out_field = out_field
    module._init_irreps(
        irreps_in=irreps_in, required_irreps_in=[field], irreps_out={out_field: None}
    )
    assert Irreps(module.irreps_in[field]).dim == 6, (
        f"`{field}` must have 6 components, got irreps {module.irreps_in[field]}"
    )
    dtype = torch.get_default_dtype()
    module.register_buffer(
        "basis", _scaled_basis(change_of_basis, isotropic_scale, anisotropic_scale)
    )
    module.register_buffer("shift", (isotropic_shift * torch.eye(3, dtype=dtype)).reshape(1, 9))


def _scaled_basis(
    change_of_basis: torch.Tensor, isotropic_scale: float, anisotropic_scale: float
) -> torch.Tensor:
    """``(6, 9)`` map from coefficients to flattened tensors, the scales folded in."""
    assert change_of_basis.shape == (6, 3, 3)
    dtype = torch.get_default_dtype()
    scales = torch.tensor([isotropic_scale * 3.0**0.5] + [anisotropic_scale] * 5, dtype=dtype)
    return (scales.view(6, 1, 1) * change_of_basis.to(dtype)).reshape(6, 9)


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
    data statistics and the anisotropic (traceless) part by its own scale. ``form`` then maps
    this symmetric tensor ``S`` to the output: ``linear`` (``S``), ``square``
    (``floor * I + S @ S``) or ``exp`` (``floor * I + expm(S)``, the log-space readout: ``S`` is
    ``log(eps - floor * I)``); both of the last two have every eigenvalue above ``floor``.

    Args:
        field (str): input graph field with 6 components
        out_field (str): output graph field (3x3)
        change_of_basis (torch.Tensor): ``(6, 3, 3)`` map from coefficients to Cartesian tensors
        isotropic_shift (float): added to the isotropic part (e.g. mean ``eps_poly`` of the data)
        isotropic_scale (float): scale of the isotropic coefficient (e.g. std of ``eps_poly``)
        anisotropic_scale (float): scale of the five traceless coefficients
        form (str): ``linear``, ``square`` or ``exp`` (``floor = 0``: the positive semi-definite
            ionic tensor; ``floor = 1``: an electronic tensor ``I + PSD``)
        floor (float): lower bound of the eigenvalues with ``square`` and ``exp``
    """

    def __init__(
        self,
        field: str,
        out_field: str,
        change_of_basis: torch.Tensor,
        isotropic_shift: float = 0.0,
        isotropic_scale: float = 1.0,
        anisotropic_scale: float = 1.0,
        form: str = "linear",
        floor: float = 0.0,
        irreps_in=None,
    ):
        super().__init__()
        assert form in FORMS, f"`form` must be one of {FORMS}, got {form!r}"
        self.form = form
        self.floor = float(floor)
        _init_coefficient_head(
            self,
            field,
            out_field,
            irreps_in,
            change_of_basis,
            isotropic_shift,
            isotropic_scale,
            anisotropic_scale,
        )

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        y = data[self.field]
        tensor = torch.addmm(self.shift, y, self.basis).view(-1, 3, 3)
        if self.form != "linear":
            if self.form == "square":
                tensor = torch.bmm(tensor, tensor)
            else:
                tensor = torch.linalg.matrix_exp(tensor)
            if self.floor != 0.0:
                tensor = tensor + self.floor * torch.eye(3, dtype=y.dtype, device=y.device)
        data[self.out_field] = tensor
        return data


class LocalFieldReadout(GraphModuleMixin, torch.nn.Module):
    r"""Per-atom polarisabilities -> dielectric tensor of coupled induced dipoles (local field).

    Atom ``i`` of a structure with volume ``V`` and ``N`` atoms gets the symmetric positive
    definite polarisability

    .. math::
        \alpha_i = \frac{V}{N} \exp\!\Big((\text{shift} + \text{scale}_{iso}\, y_{i,0})\, I
        + \text{scale}_{aniso} \sum_{k=1}^{5} y_{i,k} Q_k\Big)

    from its six coefficients ``y_i`` (``expm`` of a symmetric matrix: positive definite, rotating
    with it); its induced dipole answers the applied field plus the field of every other dipole,
    summed over the lattice (:func:`~aniso_nequip.nn.dipole.local_field_tensor`, Gaussian dipoles
    with ``damping``):

    .. math::
        \varepsilon = I + \frac{4\pi}{V} J^T (A - T)^{-1} J, \quad
        A = \mathrm{blockdiag}(\alpha_i^{-1})

    Every eigenvalue is > 1 for any input (with ``damping``). The unit ``V / N`` makes the shift
    dimensionless: ``shift = log(3 x / (4 pi))`` with ``x = (m - 1) / (m + 2)`` gives a simple
    cubic crystal of point dipoles ``eps = m`` (Clausius-Mossotti). One dense ``3N x 3N`` solve per
    structure (structures of a batch one after the other). Not exportable by ``nequip-compile``
    (data-dependent numbers of lattice terms): it says so.

    Args:
        field (str): per-atom input field with 6 components
        out_field (str): output graph field (3x3)
        change_of_basis (torch.Tensor): ``(6, 3, 3)`` map from coefficients to Cartesian tensors
        isotropic_shift (float): of ``log(alpha_i N / V)``'s isotropic part
        isotropic_scale (float): scale of the isotropic coefficient
        anisotropic_scale (float): scale of the five traceless coefficients
        damping (bool): Gaussian dipoles whose widths follow ``alpha_i`` (default ``True``; without
            it, close and highly polarisable atoms may reach the polarisation catastrophe)
        accuracy (float): of the Ewald sums (``erfc(accuracy)``-small errors)
    """

    def __init__(
        self,
        field: str,
        out_field: str,
        change_of_basis: torch.Tensor,
        isotropic_shift: float = 0.0,
        isotropic_scale: float = 1.0,
        anisotropic_scale: float = 1.0,
        damping: bool = True,
        accuracy: float = 4.0,
        irreps_in=None,
    ):
        super().__init__()
        self.damping = damping
        self.accuracy = float(accuracy)
        _init_coefficient_head(
            self,
            field,
            out_field,
            irreps_in,
            change_of_basis,
            isotropic_shift,
            isotropic_scale,
            anisotropic_scale,
        )

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if torch.compiler.is_compiling() or get_proxy_mode() is not None:  # nequip-compile traces
            raise RuntimeError(
                "a model with `readout: local_field` cannot be compiled (nequip-compile): its "
                "lattice sums take as many terms as each cell needs (data-dependent shapes); "
                "use its checkpoint or nequip-package archive"
            )
        log_alpha = torch.addmm(self.shift, data[self.field], self.basis).view(-1, 3, 3)
        # positions and cells may be in nequip's float64 while the model is float32
        positions = data[AtomicDataDict.POSITIONS_KEY].to(log_alpha.dtype)
        cells = data[AtomicDataDict.CELL_KEY].view(-1, 3, 3).to(log_alpha.dtype)
        if AtomicDataDict.BATCH_KEY in data:
            sizes = data[AtomicDataDict.NUM_NODES_KEY].reshape(-1).tolist()
        else:
            sizes = [positions.shape[0]]
        outputs = []
        for cell, pos, log_a in zip(
            cells.unbind(0), positions.split(sizes), log_alpha.split(sizes)
        ):
            per_atom_volume = torch.abs(torch.linalg.det(cell)) / pos.shape[0]
            alpha = per_atom_volume * torch.linalg.matrix_exp(log_a)
            outputs.append(
                local_field_tensor(pos, cell, alpha, damping=self.damping, accuracy=self.accuracy)
            )
        data[self.out_field] = torch.stack(outputs)
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
