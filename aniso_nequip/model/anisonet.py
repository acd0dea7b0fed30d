"""Model builders: AnisoNet (equivariant ``0e+2e`` readout) and its ``6x0e`` ablation."""

import math
import warnings
from typing import Callable, Dict, Optional, Sequence, Union

from e3nn import o3
from nequip.data import AtomicDataDict
from nequip.model import model_builder
from nequip.nn import AtomwiseLinear, ConvNetLayer, GraphModel, SequentialGraphNetwork
from nequip.nn.embedding import (
    BesselEdgeLengthEncoding,
    EdgeLengthNormalizer,
    NodeTypeEmbed,
    PolynomialCutoff,
    SphericalHarmonicEdgeAttrs,
)

from .. import _keys
from ..errors import InputError
from ..nn import (
    GaussianEdgeLengthEncoding,
    GraphMeanPool,
    IrrepsDropout,
    LocalFieldReadout,
    SymmetricTensorReadout,
)
from ..tensors import change_of_basis
from ..variables import check_variable, check_variables, num_layers_rule, resolve_readout


def _hidden_irreps(num_features: int, l_max: int, parity: bool) -> str:
    return repr(
        o3.Irreps(
            [
                (num_features, (l, p))
                for l in range(l_max + 1)
                for p in ((1, -1) if parity else ((-1) ** l,))
            ]
        )
    )


def _embeddings(
    r_max: float,
    type_names: Sequence[str],
    l_max: int,
    num_features: int,
    type_embed_num_features: Optional[int],
    radial_basis: str,
    num_basis: int,
    polynomial_cutoff_p: int,
) -> dict:
    """Type embedding, spherical harmonics up to ``l_max`` and radial basis of the edges."""
    if not all(tn.isalnum() for tn in type_names):
        raise ValueError(f"`type_names` must be alphanumeric, got {list(type_names)}")

    type_embed = NodeTypeEmbed(
        type_names=type_names,
        num_features=type_embed_num_features or num_features,
    )
    spharm = SphericalHarmonicEdgeAttrs(
        irreps_edge_sh=repr(o3.Irreps.spherical_harmonics(lmax=l_max)),
        irreps_in=type_embed.irreps_out,
    )
    edge_norm = EdgeLengthNormalizer(
        r_max=r_max, type_names=type_names, irreps_in=spharm.irreps_out
    )
    cutoff = PolynomialCutoff(polynomial_cutoff_p)
    if radial_basis == "gaussian":
        radial = GaussianEdgeLengthEncoding(
            cutoff=cutoff, num_basis=num_basis, irreps_in=edge_norm.irreps_out
        )
    else:
        radial = BesselEdgeLengthEncoding(
            cutoff=cutoff, num_bessels=num_basis, irreps_in=edge_norm.irreps_out
        )
    return {
        "type_embed": type_embed,
        "spharm": spharm,
        "edge_norm": edge_norm,
        "radial_basis": radial,
    }


def _convolutions(
    prev_irreps,
    last_layer: Sequence[str],
    type_names: Sequence[str],
    avg_num_neighbors: Union[float, Dict[str, float]],
    l_max: int,
    num_layers: int,
    num_features: int,
    parity: bool,
    radial_mlp_depth: int,
    radial_mlp_width: int,
    prefix: str = "layer",
    reads_embedding: bool = True,
):
    """``num_layers`` gated convolutions, the last keeping only ``last_layer`` irreps:
    ``(modules, irreps_out)``, named ``{prefix}{i}_convnet``. When the first one reads the type
    embedding (``reads_embedding``) it has no self-connection."""
    last_layer_irreps = "+".join(f"{num_features}x{ir}" for ir in last_layer)
    hidden = [_hidden_irreps(num_features, l_max, parity)] * (num_layers - 1)
    modules = {}
    for layer_i, irreps in enumerate(hidden + [last_layer_irreps]):
        first = reads_embedding and layer_i == 0
        layer = ConvNetLayer(
            irreps_in=prev_irreps,
            feature_irreps_hidden=irreps,
            convolution_kwargs={
                "radial_mlp_depth": radial_mlp_depth,
                "radial_mlp_width": radial_mlp_width,
                "use_sc": not first,
                "is_first_layer": first,
                "avg_num_neighbors": avg_num_neighbors,
                "type_names": type_names,
            },
        )
        prev_irreps = layer.irreps_out
        modules[f"{prefix}{layer_i}_convnet"] = layer
    return modules, prev_irreps


def _trunk(
    last_layer: Sequence[str],
    r_max: float,
    type_names: Sequence[str],
    avg_num_neighbors: Union[float, Dict[str, float]],
    l_max: int = 3,
    num_layers: int = 2,
    num_features: int = 48,
    parity: bool = True,
    type_embed_num_features: Optional[int] = None,
    radial_basis: str = "gaussian",
    num_basis: int = 15,
    polynomial_cutoff_p: int = 6,
    radial_mlp_depth: int = 1,
    radial_mlp_width: int = 64,
    head_dropout: float = 0.0,
    backbone: Optional[Callable] = None,
    head_input_features: Optional[int] = None,
):
    """Embeddings and convolutions shared by every model here: ``(modules, irreps_out)``.

    ``last_layer`` lists the irreps the last convolution keeps (``num_features`` of each), e.g.
    ``("0e", "2e")``; when it asks for ``2e`` and none can reach it, a warning says so.

    ``backbone`` (a function of the edge embedding's ``irreps_out``, or ``None`` when there are
    no convolutions, returning a module that writes node features) puts a pretrained network
    between the embeddings and the convolutions, named ``backbone``; its features replace the
    type embedding as the first convolution's input, and ``num_layers`` may then be 0.
    ``head_input_features`` (with a backbone) maps its features per atom to that many channels of
    each of its irreps first, named ``head_projection``: the convolutions' tensor products then
    run on that width, not the backbone's (``None``: no such module).

    ``head_dropout > 0`` ends the trunk with an :class:`~aniso_nequip.nn.IrrepsDropout` of the
    node features that the readout heads read, named ``head_dropout`` (while training only; at 0
    there is no such module, and the model is exactly the one without the variable).

    Every variable is checked first (:data:`aniso_nequip.variables.RULES`): a value out of its
    range raises :class:`~aniso_nequip.errors.InputError`.
    """
    check_variables(
        r_max=r_max,
        l_max=l_max,
        num_features=num_features,
        num_basis=num_basis,
        type_embed_num_features=type_embed_num_features,
        radial_basis=radial_basis,
        polynomial_cutoff_p=polynomial_cutoff_p,
        radial_mlp_depth=radial_mlp_depth,
        radial_mlp_width=radial_mlp_width,
        head_dropout=head_dropout,
        head_input_features=head_input_features,
    )
    check_variable("num_layers", num_layers, num_layers_rule(backbone is not None))
    if head_input_features and backbone is None:
        raise InputError("`head_input_features` maps a backbone's features: this model has none")
    modules = {}
    if num_layers:
        modules = _embeddings(
            r_max,
            type_names,
            l_max,
            num_features,
            type_embed_num_features,
            radial_basis,
            num_basis,
            polynomial_cutoff_p,
        )
    prev_irreps = modules["radial_basis"].irreps_out if modules else None
    if backbone is not None:
        modules["backbone"] = backbone(prev_irreps)
        prev_irreps = modules["backbone"].irreps_out
        if head_input_features:
            features = o3.Irreps(prev_irreps[AtomicDataDict.NODE_FEATURES_KEY])
            modules["head_projection"] = AtomwiseLinear(
                irreps_in=prev_irreps,
                irreps_out=o3.Irreps([(head_input_features, ir) for _, ir in features]).simplify(),
            )
            prev_irreps = modules["head_projection"].irreps_out
    if num_layers:
        convolutions, prev_irreps = _convolutions(
            prev_irreps,
            last_layer,
            type_names,
            avg_num_neighbors,
            l_max,
            num_layers,
            num_features,
            parity,
            radial_mlp_depth,
            radial_mlp_width,
            prefix="head" if backbone else "layer",
            reads_embedding=backbone is None,
        )
        modules.update(convolutions)
    if head_dropout:
        modules["head_dropout"] = IrrepsDropout(head_dropout, irreps_in=prev_irreps)
    node_irreps = o3.Irreps(prev_irreps[AtomicDataDict.NODE_FEATURES_KEY])
    # a model on a backbone refuses this case itself (FoundationAnisoNetModel)
    if (
        backbone is None
        and "2e" in last_layer
        and o3.Irrep("2e") not in [i for _, i in node_irreps]
    ):
        warnings.warn(
            f"with l_max={l_max} and num_layers={num_layers} no 2e feature reaches the readout, "
            "so the predicted tensors are isotropic; raise l_max or num_layers to learn anisotropy"
        )
    return modules, prev_irreps


def readout_scales(
    shift: float, isotropic_scale: float, anisotropic_scale: float, form: str, floor: float
) -> dict:
    """Shift, scales and form of a :class:`~aniso_nequip.nn.SymmetricTensorReadout` whose tensor
    has isotropic mean ``shift`` and scales ``isotropic_scale`` / ``anisotropic_scale``.

    - ``linear``: ``S`` itself;
    - ``square``: ``floor * I + S @ S`` (every eigenvalue >= ``floor``); ``S`` starts at
      ``sqrt(shift - floor) I`` and its coefficients are scaled by ``1 / (2 sqrt(shift - floor))``
      so that the given scales hold to first order;
    - ``exp``: ``floor * I + expm(S)`` (log space, every eigenvalue > ``floor``); ``S`` starts at
      ``log(shift - floor) I`` and its coefficients are scaled by ``1 / (shift - floor)``: the
      first-order (delta-method) mean and scales of ``log(eps - floor * I)`` from those of ``eps``.
    """
    if form == "linear":
        return dict(
            isotropic_shift=shift,
            isotropic_scale=isotropic_scale,
            anisotropic_scale=anisotropic_scale,
        )
    excess = max(shift - floor, 1e-2)
    if form == "square":
        centre, slope = excess**0.5, 2 * excess**0.5
    else:
        centre, slope = math.log(excess), excess
    return dict(
        isotropic_shift=centre,
        isotropic_scale=isotropic_scale / slope,
        anisotropic_scale=anisotropic_scale / slope,
        form=form,
        floor=floor,
    )


def local_field_scales(shift: float, isotropic_scale: float, anisotropic_scale: float) -> dict:
    """Shift and scales of a :class:`~aniso_nequip.nn.LocalFieldReadout` for a tensor of
    isotropic mean ``shift`` and scales ``isotropic_scale`` / ``anisotropic_scale``: the
    Clausius-Mossotti polarisability of ``eps = shift`` in units of the volume per atom,
    ``log(3 x / (4 pi))`` with ``x = (shift - 1) / (shift + 2)``, and the scales of
    ``log(eps - 1)`` (as for the ``exp`` form of :func:`readout_scales`) times
    ``d log(alpha) / d log(eps - 1) = 1 - x`` at that point."""
    excess = max(shift - 1.0, 1e-2)
    x = excess / (excess + 3.0)
    slope = (1.0 - x) / excess
    return dict(
        isotropic_shift=math.log(3.0 * x / (4.0 * math.pi)),
        isotropic_scale=isotropic_scale * slope,
        anisotropic_scale=anisotropic_scale * slope,
    )


def tensor_head(
    names: Sequence[str],
    prev_irreps,
    readout_irreps: str,
    atomic_field: str,
    pooled_field: str,
    out_field: str,
    **readout_options,
) -> dict:
    """Per-atom linear to ``readout_irreps`` (6 components) -> mean over atoms -> symmetric
    Cartesian tensor (:class:`~aniso_nequip.nn.SymmetricTensorReadout`), as three modules named
    ``names``."""
    per_atom = AtomwiseLinear(
        field=AtomicDataDict.NODE_FEATURES_KEY,
        out_field=atomic_field,
        irreps_in=prev_irreps,
        irreps_out=readout_irreps,
    )
    pool = GraphMeanPool(field=atomic_field, out_field=pooled_field, irreps_in=per_atom.irreps_out)
    readout = SymmetricTensorReadout(
        field=pooled_field,
        out_field=out_field,
        change_of_basis=change_of_basis(),
        irreps_in=pool.irreps_out,
        **readout_options,
    )
    return dict(zip(names, (per_atom, pool, readout)))


READOUT_FORMS = {"linear": "linear", "square": "square", "log": "exp"}
"""``readout`` -> form of the pooled :class:`~aniso_nequip.nn.SymmetricTensorReadout`
(``local_field`` has no pooling: :class:`~aniso_nequip.nn.LocalFieldReadout`)."""


def dielectric_head(
    prev_irreps,
    isotropic_shift: float,
    isotropic_scale: float,
    anisotropic_scale: float,
    readout: str,
    equivariant_readout: bool = True,
    names: Sequence[str] = ("per_atom_readout", "mean_pool", "tensor_readout"),
    atomic_field: str = AtomicDataDict.NODE_FEATURES_KEY,
) -> dict:
    """The ``dielectric_tensor`` head of ``readout`` (:data:`aniso_nequip.variables.READOUTS`):
    :func:`tensor_head` (``linear``: the paper's; ``square``: ``I + S @ S``; ``log``:
    ``I + expm(L)``), or a per-atom linear and :class:`~aniso_nequip.nn.LocalFieldReadout`
    (``local_field``, modules ``names[0]`` and ``names[2]``)."""
    readout_irreps = "1x0e+1x2e" if equivariant_readout else "6x0e"
    if readout == "local_field":
        per_atom = AtomwiseLinear(
            field=AtomicDataDict.NODE_FEATURES_KEY,
            out_field=atomic_field,
            irreps_in=prev_irreps,
            irreps_out=readout_irreps,
        )
        tensor = LocalFieldReadout(
            field=atomic_field,
            out_field=AtomicDataDict.DIELECTRIC_KEY,
            change_of_basis=change_of_basis(),
            irreps_in=per_atom.irreps_out,
            **local_field_scales(isotropic_shift, isotropic_scale, anisotropic_scale),
        )
        return {names[0]: per_atom, names[2]: tensor}
    return tensor_head(
        names=names,
        prev_irreps=prev_irreps,
        readout_irreps=readout_irreps,
        atomic_field=atomic_field,
        pooled_field=_keys.DIELECTRIC_IRREPS_KEY,
        out_field=AtomicDataDict.DIELECTRIC_KEY,
        **readout_scales(
            isotropic_shift,
            isotropic_scale,
            anisotropic_scale,
            READOUT_FORMS[readout],
            floor=1.0,
        ),
    )


@model_builder
def AnisoNetModel(
    isotropic_shift: float = 0.0,
    isotropic_scale: float = 1.0,
    anisotropic_scale: float = 1.0,
    equivariant_readout: bool = True,
    readout: str = "linear",
    physical_readout: Optional[bool] = None,
    **kwargs,
) -> GraphModel:
    """Equivariant dielectric-tensor model (AnisoNet, Lou & Ganose 2025) on nequip's blocks.

    Type embedding (node features and node attributes), spherical harmonics up to ``l_max``,
    Gaussian (or Bessel) radial basis with a polynomial cutoff, ``num_layers`` gated NequIP
    convolutions with ``num_features`` channels per irrep (both parities if ``parity``), the last
    layer keeping only ``0e`` and ``2e``, a per-atom linear map to ``1x0e+1x2e``, mean pooling over
    atoms and a symmetric Cartesian readout into ``dielectric_tensor``. Because the readout is
    built from irreps, the predicted tensor obeys the crystal's point-group symmetry exactly
    (Neumann's principle) for any weights.

    Args:
        seed (int): seed for reproducibility
        model_dtype (str): ``float32`` or ``float64``
        r_max (float): cutoff radius (Angstrom)
        type_names (Sequence[str]): atom type names
        avg_num_neighbors (float): normalization of the neighbour sums (from data statistics,
            ``${training_data_stats:num_neighbors_mean}``)
        l_max (int): maximum rotation order of edge and node features (default ``3``)
        num_layers (int): number of gated convolutions (default ``2``)
        num_features (int): multiplicity of every hidden irrep (default ``48``)
        parity (bool): keep features of both parities (default ``True``)
        type_embed_num_features (int): type embedding length (default ``num_features``)
        radial_basis (str): ``gaussian`` (the paper's) or ``bessel`` (nequip's)
        num_basis (int): number of radial basis functions (default ``15``)
        polynomial_cutoff_p (int): exponent of the polynomial cutoff envelope (default ``6``)
        radial_mlp_depth (int): hidden layers of the radial MLPs (default ``1``)
        radial_mlp_width (int): width of the radial MLPs (default ``64``)
        head_dropout (float): probability of dropping each node feature (a whole irrep) that
            the readout reads, while training (default ``0``: none;
            :class:`~aniso_nequip.nn.IrrepsDropout`)
        isotropic_shift (float): shift of ``tr(eps)/3``, e.g. the training mean of ``eps_poly``
        isotropic_scale (float): scale of ``tr(eps)/3``, e.g. the training std of ``eps_poly``
        anisotropic_scale (float): scale of the traceless part, e.g. the training RMS of its
            ``2e`` coefficients
        equivariant_readout (bool): ``True`` for the ``1x0e+1x2e`` readout; ``False`` gives the
            ``6x0e`` ablation (see :func:`ScalarAnisoNetModel`)
        readout (str): how the per-atom ``0e+2e`` features become the tensor (default
            ``linear``, the paper's: mean-pooled ``S``); ``square``: ``I + S @ S`` of the pooled
            ``S``, every eigenvalue >= 1 like a physical electronic tensor; ``log``: the pooled
            ``L = log(eps - I)``, ``eps = I + expm(L)`` (a geometric mean over atoms, every
            eigenvalue > 1); ``local_field``: per-atom polarisabilities coupled by the crystal's
            dipole field (:class:`~aniso_nequip.nn.LocalFieldReadout`)
        physical_readout (bool): the boolean this replaced, as saved configs hold it (``true``:
            ``readout=square``, ``false``: ``linear``)
    """
    readout = resolve_readout(readout, physical_readout)
    modules, prev_irreps = _trunk(
        last_layer=("0e", "2e") if equivariant_readout else ("0e",), **kwargs
    )
    modules.update(
        dielectric_head(
            prev_irreps,
            isotropic_shift=isotropic_shift,
            isotropic_scale=isotropic_scale,
            anisotropic_scale=anisotropic_scale,
            readout=readout,
            equivariant_readout=equivariant_readout,
        )
    )
    return SequentialGraphNetwork(modules)


@model_builder
def ScalarAnisoNetModel(**kwargs) -> GraphModel:
    """The paper's non-equivariant ``6x0e`` ablation of :func:`AnisoNetModel`.

    Same trunk, but the last layer keeps only scalars and the per-atom readout is ``6x0e``: six
    rotation-*invariant* numbers taken as the six independent components of the tensor (in the
    orthonormal basis of :func:`aniso_nequip.tensors.change_of_basis`). The prediction therefore
    does not rotate with the crystal and need not obey its point-group symmetry.

    Arguments are those of :func:`AnisoNetModel` (``equivariant_readout`` is fixed to ``False``).
    """
    return AnisoNetModel(**kwargs, equivariant_readout=False)
