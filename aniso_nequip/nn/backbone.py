"""Pretrained interatomic potentials as feature extractors (foundation backbones).

Both modules write equivariant node features into ``node_features`` for a dielectric head. They
are assembled by :mod:`aniso_nequip.model.foundation` from a source model's own submodules (e3nn
and nequip classes only), so a packaged model loads without the source package installed.
"""

from typing import List, Optional

import torch
from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin, scatter
from nequip.nn.utils import with_edge_vectors_

_GRAPH_KEYS = (
    AtomicDataDict.POSITIONS_KEY,
    AtomicDataDict.EDGE_INDEX_KEY,
    AtomicDataDict.EDGE_CELL_SHIFT_KEY,
    AtomicDataDict.CELL_KEY,
    AtomicDataDict.BATCH_KEY,
    AtomicDataDict.NUM_NODES_KEY,
    AtomicDataDict.EDGE_VECTORS_KEY,
)


def _tracing() -> bool:
    """Whether the module is being traced (``torch.compile``/``torch.export``, or ``make_fx`` as
    nequip's compile mode does it)."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return torch.compiler.is_compiling() or get_proxy_mode() is not None


class CachedFeaturesMixin:
    """Lets a frozen backbone take its node features from the data (the training-time feature
    cache) instead of computing them.

    After :meth:`read_cached_features`, ``forward`` uses ``data[features_field]`` when it is
    there, the backbone is frozen and ``data[features_id_field]`` of every frame equals
    ``features_id`` (the fingerprint of this backbone and its settings); otherwise the backbone
    runs as usual, so the cache never changes a result (in a traced model, e.g. nequip's
    ``compile_mode: compile``, features of another fingerprint raise an error instead). Data
    without the field (inference, packaged or compiled models) always runs the backbone.
    """

    features_field: Optional[str] = None
    features_id_field: str = ""
    features_id: int = 0

    def read_cached_features(self, features_field: str, features_id_field: str, features_id: int):
        self.features_field = features_field
        self.features_id_field = features_id_field
        self.features_id = features_id
        return self

    def _cached_features(self, data: AtomicDataDict.Type) -> Optional[torch.Tensor]:
        field = self.features_field
        if field is None or field not in data or self.features_id_field not in data:
            return None
        if any(p.requires_grad for p in self.parameters()):
            return None
        same = torch.all(data[self.features_id_field] == self.features_id)
        if _tracing():
            # a traced graph (nequip's compile mode) cannot branch on data: features of another
            # backbone stop it instead of being recomputed
            torch._assert_async(same, "cached backbone features of another backbone")
        elif not bool(same):
            return None
        return data[field]


class SevenNetInteraction(torch.nn.Module):
    """One SevenNet interaction block (NequIP architecture), from its own e3nn submodules.

    ``x -> gate(linear_2(conv(linear_1(x))) / denominator + self_connection(x))``, where the
    convolution gathers ``tensor_product(x_j, Y(r_ij), weights(|r_ij|))`` (the caller passes
    ``weight_nn`` of the edge embedding as ``edge_weights``) from the neighbours ``j``
    of each centre ``i`` (``edge_index[0]`` the centres, ``edge_index[1]`` the neighbours, the
    convention of SevenNet and nequip alike).
    """

    def __init__(
        self,
        self_connection: torch.nn.Module,
        linear_1: torch.nn.Module,
        weight_nn: torch.nn.Module,
        tensor_product: torch.nn.Module,
        linear_2: torch.nn.Module,
        gate: torch.nn.Module,
        denominator: float,
    ):
        super().__init__()
        self.self_connection = self_connection
        self.linear_1 = linear_1
        self.weight_nn = weight_nn
        self.tensor_product = tensor_product
        self.linear_2 = linear_2
        self.gate = gate
        self.denominator = denominator

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_attr: torch.Tensor,
        edge_weights: torch.Tensor,
    ) -> torch.Tensor:
        skip = self.self_connection(x)
        h = self.linear_1(x)
        message = self.tensor_product(h[edge_index[1]], edge_attr, edge_weights)
        h = scatter(message, edge_index[0], dim=0, dim_size=x.shape[0], reduce="sum")
        h = self.linear_2(h / self.denominator)
        return self.gate(h + skip)


class SevenNetBackbone(CachedFeaturesMixin, GraphModuleMixin, torch.nn.Module):
    """Element embedding, edge embedding and the first interaction blocks of a SevenNet model.

    Edges and cells come from nequip's neighbour list (the same directed pairs and the same
    vector convention as SevenNet's); the model's atom types are mapped to the source model's
    element indices by ``type_map``. Edge lengths enter a Bessel basis (``bessel_coeffs``,
    trainable as in SevenNet) times the source model's envelope: an XPLOR switch from
    ``cutoff_on`` to ``r_max`` (SevenNet-0) or a polynomial of degree ``polynomial_p``
    (``7net-l3i5``).

    SevenNet's public models drop parity (``is_parity: false``: every feature is labelled even),
    so they are equivariant under rotations only, and a tensor read from them would break
    Neumann's principle for crystals whose symmetry includes mirrors (e.g. class ``mm2``). With
    ``symmetrize_inversion`` the blocks also run on the inverted crystal (edge harmonics times
    ``(-1)^l``) and the module writes ``(h(x) + h(-x)) / 2`` as even and ``(h(x) - h(-x)) / 2``
    as odd features: exactly O(3)-equivariant. The inverted pass costs less than a second pass:
    its first block is the crystal's with signs flipped (``first_layer_sign``), and
    centrosymmetric crystals skip it (``partner_field``).

    Args:
        type_map (torch.Tensor): source element index of each of this model's atom types
        embedding (torch.nn.Module): linear map of the one-hot element to the first features
        bessel_coeffs (torch.Tensor): frequencies of the Bessel basis
        r_max (float): the source model's cutoff
        envelope (str): ``xplor`` or ``polynomial``
        cutoff_on (float): where the XPLOR envelope starts to switch off
        polynomial_p (float): degree of the polynomial envelope
        spherical_harmonics (torch.nn.Module): edge spherical harmonics of the source model
        layers (List[SevenNetInteraction]): the interaction blocks to run
        irreps_out (str): irreps of the module's output (both parities with
            ``symmetrize_inversion``)
        num_species (int): number of elements of the source model
        inversion_sign (torch.Tensor): ``(-1)^l`` of each edge harmonic component; given, the
            module symmetrizes under inversion as described above
        first_layer_sign (torch.Tensor): ``(-1)^l`` of each output component of the first block,
            given when its input is scalars only: the inverse image's first block is then the
            crystal's times this sign (exactly), and runs once instead of twice
        partner_field (str): per-atom field (long) that, when the data has it, gives for each
            atom of a centrosymmetric crystal the index (within its crystal) of the atom its
            inverse image falls on (-1 for the atoms of other crystals): the inverse image of
            such a crystal is the crystal, so ``h(-x)`` is ``h(x)`` permuted, and only the
            other crystals run a second pass
    """

    def __init__(
        self,
        type_map: torch.Tensor,
        embedding: torch.nn.Module,
        bessel_coeffs: torch.Tensor,
        r_max: float,
        envelope: str,
        cutoff_on: float,
        polynomial_p: float,
        spherical_harmonics: torch.nn.Module,
        layers: List[SevenNetInteraction],
        irreps_out: str,
        num_species: int,
        inversion_sign: Optional[torch.Tensor] = None,
        first_layer_sign: Optional[torch.Tensor] = None,
        partner_field: Optional[str] = None,
        irreps_in=None,
    ):
        super().__init__()
        self.register_buffer("type_map", type_map.to(torch.long))
        self.num_species = num_species
        self.embedding = embedding
        self.bessel_coeffs = torch.nn.Parameter(bessel_coeffs.to(torch.get_default_dtype()))
        self.r_max = r_max
        assert envelope in ("xplor", "polynomial"), envelope
        self.envelope = envelope
        self.cutoff_on = cutoff_on
        self.polynomial_p = polynomial_p
        self.prefactor = 2.0 / r_max
        self.spherical_harmonics = spherical_harmonics
        self.layers = torch.nn.ModuleList(layers)
        self._output_dtype = torch.get_default_dtype()
        self.symmetrize_inversion = inversion_sign is not None
        if inversion_sign is not None:
            self.register_buffer("inversion_sign", inversion_sign.to(self._output_dtype))
        self.partner_field = partner_field
        self.share_first_layer = self.symmetrize_inversion and first_layer_sign is not None
        if self.share_first_layer:
            # not in the state dict: checkpoints of models built before it load unchanged
            sign = first_layer_sign.to(self._output_dtype)
            self.register_buffer("first_layer_sign", sign, persistent=False)
        self._init_irreps(
            irreps_in=irreps_in,
            required_irreps_in=[],
            irreps_out={AtomicDataDict.NODE_FEATURES_KEY: irreps_out},
        )

    def _edge_embedding(self, r: torch.Tensor) -> torch.Tensor:
        ur = r.unsqueeze(-1)
        bessel = self.prefactor * torch.sin(self.bessel_coeffs * ur) / ur
        if self.envelope == "xplor":
            r_sq, on_sq, cut_sq = r * r, self.cutoff_on**2, self.r_max**2
            switch = (cut_sq - r_sq) ** 2 * (cut_sq + 2 * r_sq - 3 * on_sq) / (cut_sq - on_sq) ** 3
            envelope = torch.where(r < self.cutoff_on, torch.ones_like(r), switch)
        else:
            p, x = self.polynomial_p, r / self.r_max
            envelope = (
                1.0
                - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p)
                + p * (p + 2.0) * torch.pow(x, p + 1.0)
                - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2.0)
            )
        return bessel * envelope.unsqueeze(-1)

    def _inversion_partners(self, data: AtomicDataDict.Type) -> Optional[torch.Tensor]:
        """``data[partner_field]`` (per structure) as indices into the batch, or ``None``."""
        field = self.partner_field
        if field is None or field not in data:
            return None
        local = data[field]
        if AtomicDataDict.BATCH_KEY not in data:
            return local
        num_nodes = data[AtomicDataDict.NUM_NODES_KEY]
        first = torch.cumsum(num_nodes, 0) - num_nodes
        return torch.where(local >= 0, local + first[data[AtomicDataDict.BATCH_KEY]], local)

    def _symmetrized(self, data, x, edge_index, edge_attr, edge_embedding) -> torch.Tensor:
        """``(h(x) + h(-x)) / 2`` and ``(h(x) - h(-x)) / 2``: the crystal and the inverse images
        still to compute (all, or those of the crystals without an inversion centre) run as one
        graph; a centrosymmetric crystal's ``h(-x)`` is its ``h(x)``, permuted."""
        num_nodes = x.shape[0]
        partner = self._inversion_partners(data)
        sub_nodes: Optional[torch.Tensor] = None
        sub_edges: Optional[torch.Tensor] = None
        sub_index, sub_attr = edge_index, edge_attr
        if partner is not None:
            needed = partner < 0
            sub_nodes = torch.nonzero(needed).view(-1)
            sub_edges = needed[edge_index[0]]
            renumber = torch.cumsum(needed.to(torch.long), 0) - 1
            sub_index, sub_attr = renumber[edge_index[:, sub_edges]], edge_attr[sub_edges]
        both_index = torch.cat([edge_index, sub_index + num_nodes], dim=1)
        both_attr = torch.cat([edge_attr, sub_attr * self.inversion_sign])
        for i, layer in enumerate(self.layers):
            # the radial weights are the same for a crystal and its inverse image
            weights = layer.weight_nn(edge_embedding)
            sub_weights = weights if sub_edges is None else weights[sub_edges]
            if i == 0 and self.share_first_layer:
                # scalar inputs: the inverse image's output is the crystal's, times (-1)^l
                direct = layer(x, edge_index, edge_attr, weights)
                inverted = direct * self.first_layer_sign
                x = torch.cat([direct, inverted if sub_nodes is None else inverted[sub_nodes]])
            else:
                if i == 0:
                    x = torch.cat([x, x if sub_nodes is None else x[sub_nodes]])
                x = layer(x, both_index, both_attr, torch.cat([weights, sub_weights]))
        direct, inverted = x[:num_nodes], x[num_nodes:]
        if partner is not None and sub_nodes is not None:
            inverted = direct[partner.clamp(min=0)].index_copy(0, sub_nodes, inverted)
        return torch.cat([direct + inverted, direct - inverted], dim=-1) * 0.5

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        cached = self._cached_features(data)
        if cached is not None:
            data[AtomicDataDict.NODE_FEATURES_KEY] = cached.to(self._output_dtype)
            return data
        data = with_edge_vectors_(data, with_lengths=False)
        # nequip computes edge vectors in float64; the backbone runs in the model's dtype
        edge_vec = data[AtomicDataDict.EDGE_VECTORS_KEY].to(self._output_dtype)
        edge_index = data[AtomicDataDict.EDGE_INDEX_KEY]
        edge_attr = self.spherical_harmonics(edge_vec)
        edge_embedding = self._edge_embedding(torch.linalg.norm(edge_vec, dim=-1))
        species = self.type_map[data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)]
        one_hot = torch.nn.functional.one_hot(species, self.num_species).to(edge_vec.dtype)
        x = self.embedding(one_hot)
        if not self.symmetrize_inversion:
            for layer in self.layers:
                x = layer(x, edge_index, edge_attr, layer.weight_nn(edge_embedding))
        else:
            x = self._symmetrized(data, x, edge_index, edge_attr, edge_embedding)
        data[AtomicDataDict.NODE_FEATURES_KEY] = x
        return data


class NequIPBackbone(CachedFeaturesMixin, GraphModuleMixin, torch.nn.Module):
    """The embedding and first convolutions of a nequip model (checkpoint or package), run with
    this model's atom types mapped to the source model's (``type_map``).

    Args:
        trunk (torch.nn.Module): the source model's modules up to its last kept convolution
        type_map (torch.Tensor): source atom type of each of this model's atom types
    """

    def __init__(self, trunk: GraphModuleMixin, type_map: torch.Tensor, irreps_in=None):
        super().__init__()
        self.trunk = trunk
        self.register_buffer("type_map", type_map.to(torch.long))
        self._init_irreps(
            irreps_in=irreps_in,
            required_irreps_in=[],
            irreps_out={
                AtomicDataDict.NODE_FEATURES_KEY: trunk.irreps_out[AtomicDataDict.NODE_FEATURES_KEY]
            },
        )

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        cached = self._cached_features(data)
        if cached is not None:
            data[AtomicDataDict.NODE_FEATURES_KEY] = cached
            return data
        # the trunk sees only the graph, so its own embeddings do not replace the head's
        graph: AtomicDataDict.Type = {}
        for key in _GRAPH_KEYS:
            if key in data:
                graph[key] = data[key]
        graph[AtomicDataDict.ATOM_TYPE_KEY] = self.type_map[data[AtomicDataDict.ATOM_TYPE_KEY]]
        data[AtomicDataDict.NODE_FEATURES_KEY] = self.trunk(graph)[AtomicDataDict.NODE_FEATURES_KEY]
        return data
