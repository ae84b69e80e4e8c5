r"""Sparse adjacency helpers for LightGCN-style propagation.

* :func:`normalized_adjacency` builds the symmetric :math:`D^{-1/2} A D^{-1/2}` matrix
  (no self loops) used by LightGCN and MAGNET Eq. 4, as a ``torch.sparse_csr`` tensor.
* :func:`bipartite_normalized_adjacency` does the same from user-item pairs, in the
  homogeneous node space (users ``0..U-1``, items ``U..U+I-1``).
* :func:`row_normalized` builds a row-stochastic ``[rows, cols]`` matrix (mean
  aggregation, for example the history pooling of :class:`~magnet_pyg.nn.ModalityCues`).
* :func:`check_adjacency` is the input check of the layers that take such a matrix
  (:class:`~magnet_pyg.nn.DualViewEncoder`, :class:`~magnet_pyg.nn.ModalityCues`): they
  refuse a raw ``edge_index`` or an unnormalised matrix rather than propagate it.
* :func:`sparse_mm` is a sparse x dense product whose backward pass reuses a given
  transpose (or the matrix itself when it is symmetric) instead of letting autograd
  transpose the CSR matrix at every step: on a TikTok-sized augmented view
  (15k nodes, 2.9M non-zeros, d = 64, L = 2, two views) forward + backward is about
  4x faster than ``torch.sparse.mm`` / :class:`torch_geometric.nn.LGConv` on CPU.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torch_geometric.typing import SparseTensor

#: entries above ``1 + NORMALIZED_ATOL`` mark an adjacency as not normalised
NORMALIZED_ATOL = 1e-4

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


def _describe(adj: Any) -> str:
    name = type(adj).__name__ if isinstance(adj, Tensor) else f"{type(adj).__module__}.{type(adj).__name__}"
    article = "an" if name[0].lower() in "aeiou" else "a"
    if isinstance(adj, Tensor):
        return f"{article} {name} of shape {list(adj.shape)} and dtype {adj.dtype}"
    return f"{article} {name}"


def check_adjacency(
    adj: Any,
    num_rows: Optional[int],
    num_cols: int,
    where: str,
    build: str,
) -> None:
    r"""Refuse anything but a normalised sparse ``[num_rows, num_cols]`` matrix.

    Accepted: a ``torch.sparse`` tensor (COO, CSR, CSC) or a ``torch_sparse.SparseTensor``
    with floating-point values, of the expected shape, whose entries lie in ``[0, 1]`` and
    that is not binary (all entries 1 while some row holds several). Every matrix of
    :func:`normalized_adjacency`, :func:`bipartite_normalized_adjacency` and
    :func:`row_normalized` passes; a raw ``edge_index`` (a dense ``[2, E]`` tensor, also as
    :class:`~torch_geometric.EdgeIndex`), a dense matrix, a binary adjacency
    (``to_torch_csr_tensor(edge_index)``, a ``SparseTensor`` without values) or a weighted
    unnormalised one is refused. The check reads the values once (one host synchronisation
    on GPU); it does not prove normalisation, it catches the matrices that cannot be.

    Args:
        adj: the matrix to check.
        num_rows: expected rows (``None``: any).
        num_cols: expected columns.
        where: the layer and argument, for the message (``"DualViewEncoder: adj_ui"``).
        build: how to build the right matrix, for the message.

    Raises:
        ValueError: naming ``where``, what was given and ``build``.
    """
    want = f"[{'R' if num_rows is None else num_rows}, {num_cols}]"
    expected = (f"{where} must be a normalised sparse {want} matrix (torch.sparse CSR/COO/CSC, "
                f"or torch_sparse.SparseTensor with values)")
    if isinstance(adj, SparseTensor):
        shape = tuple(adj.sizes())
        vals = adj.storage.value()
        if vals is None:
            raise ValueError(f"{expected}; got a SparseTensor without values, i.e. the binary "
                             f"(unnormalised) adjacency. {build}")
        rows = adj.storage.row()
    elif isinstance(adj, Tensor) and adj.layout in (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc):
        shape = tuple(adj.shape)
        if adj.layout == torch.sparse_coo:
            vals, rows = adj._values(), adj._indices()[0]
        elif adj.layout == torch.sparse_csr:
            vals, rows = adj.values(), None
        else:
            vals, rows = adj.values(), adj.row_indices()
    elif isinstance(adj, Tensor):
        raw = adj.dim() == 2 and adj.size(0) == 2 and not adj.is_floating_point()
        what = ("a raw edge_index, which is not normalised (it would be propagated as an "
                "unweighted sum)" if raw else "a dense tensor")
        raise ValueError(f"{expected}; got {_describe(adj)}: {what}. {build}")
    else:
        raise ValueError(f"{expected}; got {_describe(adj)}. {build}")
    if len(shape) != 2 or (num_rows is not None and shape[0] != num_rows) or shape[1] != num_cols:
        raise ValueError(f"{expected}; got shape {list(shape)}")
    if not vals.is_floating_point():
        raise ValueError(f"{expected}; got {vals.dtype} values, i.e. not normalised. {build}")
    if vals.numel() == 0:
        return
    lo, hi = torch.stack([vals.min(), vals.max()]).tolist()
    if lo < 0 or hi > 1.0 + NORMALIZED_ATOL:
        raise ValueError(f"{expected}, whose entries lie in [0, 1]; got entries in [{lo:.4g}, "
                         f"{hi:.4g}], i.e. an unnormalised adjacency. {build}")
    if lo == hi == 1.0:
        if rows is None:  # CSR
            crow = adj.crow_indices()
            filled = int((crow[1:] > crow[:-1]).sum())
        else:
            filled = int(torch.unique(rows).numel())
        if vals.numel() > filled:
            raise ValueError(f"{expected}; got a binary matrix (every entry 1, rows with several "
                             f"entries), i.e. an unnormalised adjacency. {build}")


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
