r"""Dual-view LightGCN backbone of MAGNET (paper Section 3.2.3, Eq. 4-6)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.nn import LGConv

from .adjacency import (bipartite_normalized_adjacency, check_adjacency, normalized_adjacency,
                        sparse_mm)

__all__ = ["DualViewEncoder", "normalized_adjacency", "bipartite_normalized_adjacency"]

_PROPAGATIONS = ("spmm", "lgconv")


class DualViewEncoder(torch.nn.Module):
    r"""Shared-ID LightGCN encoder over one or two structural views (MAGNET Eq. 4-6).

    Layer-0 ID embeddings :math:`\mathbf{e}^{(0)} \in \mathbb{R}^{(U+I) \times d}` are shared by
    both views. For each view :math:`v \in \{UI, UIG\}` with symmetric normalised adjacency
    :math:`\hat A_v` (Eq. 4, see :func:`normalized_adjacency`)

    .. math::
        \mathbf{e}^{(\ell+1),v} = \hat A_v\, \mathbf{e}^{(\ell),v}, \qquad
        \mathbf{z}^v = \frac{1}{L+1}\sum_{\ell=0}^{L} \mathbf{e}^{(\ell),v} \quad (5), \qquad
        \mathbf{z} = \tfrac12(\mathbf{z}^{UI} + \mathbf{z}^{UIG}) \quad (6).

    In single-view mode (MAGNET-SV, :math:`\mathcal{E}^+ = \emptyset`) the second adjacency is
    ``None`` and :math:`\mathbf{z} = \mathbf{z}^{UI}`.

    Node space is homogeneous: users ``0..U-1``, items ``U..U+I-1`` (see
    :func:`bipartite_normalized_adjacency`).

    Args:
        num_users: number of users ``U``.
        num_items: number of items ``I``.
        embedding_dim: ``d``.
        num_layers: ``L`` (propagation layers per view).
        propagation: ``"spmm"`` (default) multiplies a ``torch.sparse`` adjacency with a
            custom autograd product whose backward reuses the (symmetric) adjacency, about
            4x faster than autograd's own transpose on CPU; ``"lgconv"`` applies
            :class:`torch_geometric.nn.LGConv` ``(normalize=False)``. Both give identical
            results. A ``torch_sparse.SparseTensor`` adjacency always goes through
            :class:`~torch_geometric.nn.LGConv`.
        symmetric: the adjacencies are symmetric (true for :func:`normalized_adjacency` of an
            undirected graph). Set ``False`` for directed matrices: ``"spmm"`` then uses
            ``torch.sparse.mm`` with autograd's transpose.

    The adjacencies must be **normalised** sparse matrices: a raw ``edge_index`` (also as
    :class:`~torch_geometric.EdgeIndex`), a binary or an otherwise unnormalised matrix is
    refused with a :class:`ValueError` (:func:`~magnet_pyg.nn.check_adjacency`) instead of
    being propagated as an unweighted sum. Build them with
    :func:`~magnet_pyg.nn.bipartite_normalized_adjacency` (from ``(user, item)`` pairs) or
    :func:`~magnet_pyg.nn.normalized_adjacency` (from node pairs holding both directions).

    Shapes:
        - **input:** ``adj_ui``, ``adj_uig``: ``[U+I, U+I]`` sparse, pre-normalised.
        - **output:** ``(z, z_ui, z_uig)``, each ``[U+I, d]`` (``z_uig`` is ``None`` in SV).
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        num_layers: int = 2,
        propagation: str = "spmm",
        symmetric: bool = True,
    ) -> None:
        super().__init__()
        if num_users < 1 or num_items < 1:
            raise ValueError("num_users and num_items must be positive")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if propagation not in _PROPAGATIONS:
            raise ValueError(f"propagation must be one of {_PROPAGATIONS}, got '{propagation}'")
        self.num_users = num_users
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.num_layers = num_layers
        self.propagation = propagation
        self.symmetric = symmetric
        self.embedding = torch.nn.Embedding(num_users + num_items, embedding_dim)
        self.conv = LGConv(normalize=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Xavier-uniform ID embeddings (as :class:`torch_geometric.nn.models.LightGCN`)."""
        torch.nn.init.xavier_uniform_(self.embedding.weight)

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    def _prop(self, adj, x: Tensor) -> Tensor:
        if (self.propagation == "spmm" and isinstance(adj, Tensor)
                and adj.layout != torch.strided):
            return sparse_mm(adj, x, symmetric=self.symmetric)
        return self.conv(x, adj)

    def check_adjacency(self, adj, num_nodes: Optional[int] = None, name: str = "adj") -> None:
        """Raise a :class:`ValueError` unless ``adj`` is a normalised sparse ``[N, N]`` matrix
        (``N = num_nodes``, default ``U + I``); see :func:`~magnet_pyg.nn.check_adjacency`."""
        n = self.num_nodes if num_nodes is None else int(num_nodes)
        check_adjacency(adj, n, n, f"DualViewEncoder: {name}",
                        f"Build it with magnet_pyg.nn.bipartite_normalized_adjacency(edge_index, "
                        f"num_users={self.num_users}, num_items={self.num_items}) from [2, E] "
                        f"(user, item) pairs, or magnet_pyg.nn.normalized_adjacency(edge_index, "
                        f"num_nodes={n}) from node pairs holding both directions")

    def propagate(self, adj, x: Optional[Tensor] = None) -> Tensor:
        r"""One view: Eq. 4 for ``L`` layers, then the layer mean of Eq. 5.

        Args:
            adj: ``[N, N]`` pre-normalised sparse adjacency.
            x: layer-0 features ``[N, d]`` (default: the ID embeddings).

        Returns:
            :math:`\mathbf{z}^v`, ``[N, d]``.
        """
        x = self.embedding.weight if x is None else x
        self.check_adjacency(adj, x.size(0))
        return self._layer_mean(adj, x)

    def _layer_mean(self, adj, x: Tensor) -> Tensor:
        out = x
        for _ in range(self.num_layers):
            x = self._prop(adj, x)
            out = out + x
        return out / (self.num_layers + 1)

    def forward(self, adj_ui, adj_uig=None) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        r"""Encode both views (Eq. 4-6).

        Args:
            adj_ui: normalised adjacency of the observed view :math:`\mathcal{G}_{UI}`.
            adj_uig: normalised adjacency of the augmented view :math:`\mathcal{G}_{UIG}`,
                or ``None`` for single view.

        Returns:
            ``(z, z_ui, z_uig)``: fused, observed-view and augmented-view embeddings,
            each ``[U+I, d]``; ``z_uig`` is ``None`` and ``z`` is ``z_ui`` in single view.
        """
        self.check_adjacency(adj_ui, name="adj_ui")
        if adj_uig is not None:
            self.check_adjacency(adj_uig, name="adj_uig")
        z_ui = self._layer_mean(adj_ui, self.embedding.weight)
        if adj_uig is None:
            return z_ui, z_ui, None
        z_uig = self._layer_mean(adj_uig, self.embedding.weight)
        return 0.5 * (z_ui + z_uig), z_ui, z_uig

    def split(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        """Split a ``[U+I, d]`` node matrix into ``([U, d] users, [I, d] items)``."""
        return z[: self.num_users], z[self.num_users:]

    def extra_repr(self) -> str:
        return (f"num_users={self.num_users}, num_items={self.num_items}, "
                f"embedding_dim={self.embedding_dim}, num_layers={self.num_layers}, "
                f"propagation='{self.propagation}'")
