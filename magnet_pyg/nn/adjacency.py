r"""Sparse adjacency helpers for LightGCN-style propagation.

* :func:`normalized_adjacency` builds the symmetric :math:`D^{-1/2} A D^{-1/2}` matrix
  (no self loops) used by LightGCN and MAGNET Eq. 4, as a ``torch.sparse_csr`` tensor.
* :func:`bipartite_normalized_adjacency` does the same from user-item pairs, in the
  homogeneous node space (users ``0..U-1``, items ``U..U+I-1``).
* :func:`row_normalized` builds a row-stochastic ``[rows, cols]`` matrix (mean
  aggregation, for example the history pooling of :class:`~magnet_pyg.nn.ModalityCues`).
* :func:`sparse_mm` is a sparse x dense product whose backward pass reuses a given
  transpose (or the matrix itself when it is symmetric) instead of letting autograd
  transpose the CSR matrix at every step: on a TikTok-sized augmented view
  (15k nodes, 2.9M non-zeros, d = 64, L = 2, two views) forward + backward is about
  4x faster than ``torch.sparse.mm`` / :class:`torch_geometric.nn.LGConv` on CPU.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..graph.sparse import coalesced_csr


def normalized_adjacency(
    edge_index: Tensor,
    num_nodes: int,
    edge_weight: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Symmetric normalised adjacency :math:`\hat A = D^{-1/2} A D^{-1/2}` (no self loops).

    This is the propagation matrix of LightGCN and of MAGNET Eq. 4:
    :math:`\hat A_{vw} = a_{vw} / \sqrt{\deg(v)\deg(w)}`, with
    :math:`\deg(v) = \sum_w a_{vw}`. It matches :func:`torch_geometric.nn.conv.gcn_conv.gcn_norm`
    with ``add_self_loops=False``: duplicate entries of ``edge_index`` are summed, nodes of
    degree zero get an all-zero row.

    Args:
        edge_index: ``[2, nnz]`` node pairs, **already containing both directions** of every
            undirected edge (the result is then symmetric).
        num_nodes: number of nodes ``N``.
        edge_weight: optional ``[nnz]`` non-negative weights (default: all ones).
        dtype: value dtype of the result.

    Returns:
        ``[N, N]`` ``torch.sparse_csr`` tensor on ``edge_index.device``.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, nnz], got {tuple(edge_index.shape)}")
    device = edge_index.device
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), dtype=dtype, device=device)
    else:
        if edge_weight.shape != (edge_index.size(1),):
            raise ValueError("edge_weight must have shape [nnz]")
        edge_weight = edge_weight.to(dtype)
    row, col = edge_index[0], edge_index[1]
    deg = torch.zeros(num_nodes, dtype=dtype, device=device).scatter_add_(0, col, edge_weight)
    dis = deg.pow(-0.5)
    dis.masked_fill_(torch.isinf(dis), 0.0)
    value = dis[row] * edge_weight * dis[col]
    return coalesced_csr(row, col, value, (num_nodes, num_nodes))


def bipartite_normalized_adjacency(
    ui_edge_index: Tensor,
    num_users: int,
    num_items: int,
    edge_weight: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r""":func:`normalized_adjacency` of a user-item graph in the homogeneous node space.

    Args:
        ui_edge_index: ``[2, nnz]`` (user, item) pairs, one direction only (row 0 users in
            ``0..U-1``, row 1 items in ``0..I-1``).
        num_users: ``U``.
        num_items: ``I``.
        edge_weight: optional ``[nnz]`` weights, used for both directions.

    Returns:
        ``[U + I, U + I]`` symmetric ``torch.sparse_csr`` tensor; items sit at ``U + i``.
    """
    u, i = ui_edge_index[0], ui_edge_index[1] + num_users
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    if edge_weight is not None:
        edge_weight = torch.cat([edge_weight, edge_weight])
    return normalized_adjacency(edge_index, num_users + num_items, edge_weight, dtype)


def row_normalized(
    edge_index: Tensor,
    num_rows: int,
    num_cols: int,
    edge_weight: Optional[Tensor] = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Row-stochastic matrix :math:`R_{uj} = a_{uj} / \sum_{j'} a_{uj'}` (mean aggregation).

    With the training (user, item) pairs, ``row_normalized(train, U, I) @ H`` is the mean
    of ``H`` over each user's training items (rows without entries stay zero).

    Args:
        edge_index: ``[2, nnz]`` (row, col) pairs.
        num_rows: number of rows.
        num_cols: number of columns.
        edge_weight: optional ``[nnz]`` non-negative weights.

    Returns:
        ``[num_rows, num_cols]`` ``torch.sparse_csr`` tensor.
    """
    device = edge_index.device
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), dtype=dtype, device=device)
    edge_weight = edge_weight.to(dtype)
    row, col = edge_index[0], edge_index[1]
    deg = torch.zeros(num_rows, dtype=dtype, device=device).scatter_add_(0, row, edge_weight)
    inv = deg.reciprocal()
    inv.masked_fill_(torch.isinf(inv), 0.0)
    return coalesced_csr(row, col, inv[row] * edge_weight, (num_rows, num_cols))


def transpose_csr(adj: Tensor) -> Tensor:
    """Transpose of a sparse matrix, returned in CSR layout (for :func:`sparse_mm`)."""
    return adj.to_sparse_coo().t().coalesce().to_sparse_csr()


class _SparseMM(torch.autograd.Function):
    """``A @ X`` with backward ``A^T @ G`` using a pre-built ``A^T`` (no grad for ``A``)."""

    @staticmethod
    def forward(ctx, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        grad_x = torch.sparse.mm(ctx.adj_t, grad) if ctx.needs_input_grad[2] else None
        return None, None, grad_x


def sparse_mm(adj: Tensor, x: Tensor, adj_t: Optional[Tensor] = None,
              symmetric: bool = False) -> Tensor:
    r"""Sparse-dense product :math:`A X` with a fast backward :math:`\partial X = A^\top G`.

    Args:
        adj: ``[N, M]`` ``torch.sparse`` matrix (CSR preferred), treated as a constant.
        x: ``[M, F]`` dense matrix.
        adj_t: optional pre-built ``[M, N]`` transpose used by the backward pass.
        symmetric: declare ``adj`` symmetric, so that ``adj`` itself serves as the transpose
            (true for :func:`normalized_adjacency`).

    Without ``adj_t`` and ``symmetric``, or when ``adj`` requires grad, this falls back to
    ``torch.sparse.mm`` (autograd then transposes ``adj`` itself, which is slower).

    Returns:
        ``[N, F]`` dense tensor.
    """
    if adj.requires_grad or (adj_t is None and not symmetric):
        return torch.sparse.mm(adj, x)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.sparse.mm(adj, x)
    return _SparseMM.apply(adj, adj if adj_t is None else adj_t, x)
