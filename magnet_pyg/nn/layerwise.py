r"""Exact layer-wise propagation in node chunks, for inference on graphs whose full
adjacency should not be built at once.

For every layer :math:`\ell` and every chunk :math:`C` of destination nodes,

.. math::
    \mathbf e^{(\ell+1)}_C = \hat A_{C,\cdot}\, \mathbf e^{(\ell)} \qquad \text{(MAGNET Eq. 4)},

with the rows :math:`\hat A_{C,\cdot}` of the normalised bipartite adjacency sliced out of a CSR
structure kept on the CPU (:class:`BipartiteCSR`) and moved to the compute device one chunk at a
time (:func:`layerwise_propagate`); MAGNET's item cues are projected in item chunks and the
user cues pooled in user chunks (:func:`layerwise_cues`). Apart from the ``[N, d]`` embedding
matrices, the memory in use is bounded by the chunk (its rows' non-zeros and outputs). A
model's :meth:`~magnet_pyg.nn.protocol.Recommender.layerwise_inference` composes these into its
exact inference state (equal to its full-graph one up to float summation order).
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import INDUCED, modality_features, num_items, num_users, split_edge_index

__all__ = ["BipartiteCSR", "LayerwiseGraph", "layerwise_propagate", "layerwise_cues"]


class BipartiteCSR:
    r"""The two row-blocks of one view's bipartite adjacency, as CSR (CPU).

    ``user_rows`` is ``[U, I]`` (row ``u``: items of ``u``), ``item_rows`` ``[I, U]``; entries
    hold the pair multiplicity :math:`a_{ui}`; degrees :math:`\deg(v) = \sum_w a_{vw}`.

    Args:
        ui_edge_index: ``[2, n]`` (user, item) pairs of the view.
        num_users, num_items: ``U``, ``I``.
    """

    def __init__(self, ui_edge_index: Tensor, num_users: int, num_items: int):
        u, i = ui_edge_index[0].long().cpu(), ui_edge_index[1].long().cpu()
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.user_ptr, self.user_col, self.user_cnt = self._csr(u, i, self.num_users, self.num_items)
        self.item_ptr, self.item_col, self.item_cnt = self._csr(i, u, self.num_items, self.num_users)
        self.user_deg = torch.zeros(self.num_users).index_add_(
            0, torch.repeat_interleave(torch.arange(self.num_users), self.user_ptr.diff()), self.user_cnt)
        self.item_deg = torch.zeros(self.num_items).index_add_(
            0, torch.repeat_interleave(torch.arange(self.num_items), self.item_ptr.diff()), self.item_cnt)

    @staticmethod
    def _csr(row: Tensor, col: Tensor, n_rows: int, n_cols: int) -> Tuple[Tensor, Tensor, Tensor]:
        key = torch.sort(row * n_cols + col).values
        key, cnt = torch.unique_consecutive(key, return_counts=True)
        r = key // n_cols
        ptr = torch.zeros(n_rows + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(torch.bincount(r, minlength=n_rows), 0)
        return ptr, (key - r * n_cols), cnt.float()

    @property
    def nnz(self) -> int:
        return int(self.user_col.numel())

    def rows(self, side: str, start: int, end: int, values: str = "sym", device=None) -> Tensor:
        r"""Rows ``start:end`` of the ``side`` (``"user"`` or ``"item"``) block as a
        ``torch.sparse_csr`` tensor on ``device``, with values

        * ``"sym"``: :math:`a_{vw}/\sqrt{\deg(v)\deg(w)}` (Eq. 4);
        * ``"row"``: :math:`a_{vw}/\deg(v)` (row-normalised: mean over the neighbours).
        """
        ptr, col, cnt = ((self.user_ptr, self.user_col, self.user_cnt) if side == "user"
                         else (self.item_ptr, self.item_col, self.item_cnt))
        deg_r, deg_c = (self.user_deg, self.item_deg) if side == "user" else (self.item_deg, self.user_deg)
        n_cols = self.num_items if side == "user" else self.num_users
        a, b = int(ptr[start]), int(ptr[end])
        crow = ptr[start:end + 1] - a
        c = col[a:b]
        row = torch.repeat_interleave(torch.arange(start, end), crow.diff())
        if values == "sym":
            val = cnt[a:b] * _inv_sqrt(deg_r)[row] * _inv_sqrt(deg_c)[c]
        elif values == "row":
            inv = deg_r.reciprocal()
            inv.masked_fill_(torch.isinf(inv), 0.0)
            val = cnt[a:b] * inv[row]
        else:
            raise ValueError(f"values must be 'sym' or 'row', got '{values}'")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            return torch.sparse_csr_tensor(crow, c, val, (end - start, n_cols),
                                           check_invariants=False).to(device)


def _inv_sqrt(deg: Tensor) -> Tensor:
    out = deg.pow(-0.5)
    return out.masked_fill_(torch.isinf(out), 0.0)


class LayerwiseGraph:
    r"""CSR structures of the structural views (and the training history) for
    :func:`layerwise_inference`, built once on the CPU.

    Args:
        data: the dataset; ``"uig"`` needs :data:`~magnet_pyg.data.INDUCED` edges.
        views: ``("ui",)`` or ``("ui", "uig")``.
    """

    def __init__(self, data: HeteroData, views: Sequence[str] = ("ui",)):
        U, I = num_users(data), num_items(data)
        train = split_edge_index(data, "train")
        self.views = tuple(views)
        self.num_users, self.num_items = U, I
        self.adj: Dict[str, BipartiteCSR] = {"ui": BipartiteCSR(train, U, I)}
        if "uig" in self.views:
            if INDUCED not in data.edge_types:
                raise ValueError("view 'uig' needs content-induced edges on the data: call "
                                 "magnet_pyg.graph.add_induced_edges(data, k, r) first")
            both = torch.cat([train, data[INDUCED].edge_index], dim=1)
            self.adj["uig"] = BipartiteCSR(both, U, I)
            del both
        self.features = modality_features(data)
        #: the dataset itself (a model without a chunked inference builds its full graph from it)
        self.data = data


@torch.no_grad()
def layerwise_propagate(encoder, graph: LayerwiseGraph, view: str = "ui", chunk_size: int = 65536,
                        x: Optional[Tensor] = None) -> Tensor:
    r"""One view of :class:`~magnet_pyg.nn.DualViewEncoder` (Eq. 4-5) layer by layer in chunks
    of ``chunk_size`` destination nodes.

    Args:
        encoder: the model's :class:`~magnet_pyg.nn.DualViewEncoder`.
        graph: :class:`LayerwiseGraph`.
        view: ``"ui"`` or ``"uig"``.
        chunk_size: destination nodes per chunk (bounds the chunk's non-zeros and outputs).
        x: layer-0 embeddings ``[U+I, d]`` (default: the encoder's ID embeddings).

    Returns:
        ``[U+I, d]`` :math:`\mathbf z^v` on the encoder's device.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    adj = graph.adj[view]
    U, I = adj.num_users, adj.num_items
    x = encoder.embedding.weight.detach() if x is None else x
    device = x.device
    out = x.clone()
    for _ in range(encoder.num_layers):
        nxt = torch.empty_like(x)
        xu, xi = x[:U], x[U:]
        for s in range(0, U, chunk_size):
            e = min(s + chunk_size, U)
            nxt[s:e] = torch.sparse.mm(adj.rows("user", s, e, "sym", device), xi)
        for s in range(0, I, chunk_size):
            e = min(s + chunk_size, I)
            nxt[U + s:U + e] = torch.sparse.mm(adj.rows("item", s, e, "sym", device), xu)
        x = nxt
        out += x
    return out / (encoder.num_layers + 1)


@torch.no_grad()
def layerwise_cues(cues, graph: LayerwiseGraph, modalities: Sequence[str], chunk_size: int = 65536,
                   device=None, transform=None) -> Tuple[Tensor, Tensor]:
    r"""MAGNET's modality cues (Eq. 7-8 decision) in chunks: item projections in item chunks
    (features moved to ``device`` one chunk at a time), user history pooling in user chunks.

    Returns:
        ``(h_u [U, M, d], h_i [I, M, d])``.
    """
    I, U = graph.num_items, graph.num_users
    parts = []
    for s in range(0, I, chunk_size):
        sl = slice(s, min(s + chunk_size, I))
        xs = [graph.features[m][sl].to(device) for m in modalities]
        if transform is not None:  # the model's row-wise input transform (MAGNET.transform_features)
            xs = [transform(x) for x in xs]
        parts.append(cues.item_cues(xs))
    h_i = torch.cat(parts)
    m, d = h_i.shape[1:]
    flat = h_i.reshape(I, m * d)
    h_u = torch.empty(U, m * d, device=h_i.device, dtype=h_i.dtype)
    ui = graph.adj["ui"]
    for s in range(0, U, chunk_size):
        e = min(s + chunk_size, U)
        h_u[s:e] = torch.sparse.mm(ui.rows("user", s, e, "row", h_i.device), flat)
    return h_u.view(U, m, d), h_i
