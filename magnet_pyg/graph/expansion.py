r"""Content-induced candidate expansion (MAGNET Eq. 2-3).

With the per-modality top-:math:`k` similarity matrices :math:`S^m` of Eq. 1
(:mod:`~magnet_pyg.graph.knn`), the item-item matrix

.. math::
    S = \frac{1}{|\mathcal M|} \sum_{m \in \mathcal M} S^m \qquad
    (\tfrac{1}{2}(S^A + S^S) \text{ for the paper's two modalities})

has :math:`S_{ij} = \frac{1}{|\mathcal M|}\sum_m s^m_{ij}`, where :math:`s^m_{ij}` counts
only when :math:`j \in \mathcal N^m(i)`. The candidate score of Eq. 2 is then a sparse
product with the binary training matrix :math:`R \in \{0,1\}^{U \times I}`:

.. math::
    c_{u,j} = \sum_{i \in \mathcal I_u} S_{ij} = (R\,S)_{uj},

and :math:`\mathcal C(u)` keeps the top-:math:`r` items :math:`j \notin \mathcal I_u`
among those reachable from :math:`\mathcal I_u` (the structural non-zeros of
:math:`(RS)_{u\cdot}`), so :math:`\mathcal E^+ = \{(u, j): j \in \mathcal C(u)\}` (Eq. 3).
Users without training items get no induced edge; a user with fewer than ``r``
reachable unobserved items gets all of them.

The product is a sparse-sparse ``torch.sparse.mm`` on CSR matrices in ``float64``, over
chunks of users (a bounded number of ``(u, i, j)`` products per chunk, never a dense
users x items matrix); observed pairs are removed exactly by multiplying with
:math:`S - \infty I` instead of :math:`S`. Candidates are ranked by
``(score desc, item id asc)`` on the ``float32`` score that is stored. The training
pairs are canonicalised (sorted, de-duplicated) first, so the result depends on the
training pairs as a set and on :math:`S` only; it is bit-for-bit reproducible run to run
on the same machine and thread count (the sparse kernel sums each row in a fixed order).
"""
from __future__ import annotations

import logging
import warnings
from typing import Sequence, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

__all__ = ["item_similarity", "expand_candidates", "check_r"]


def check_r(r: int, num_items: int) -> None:
    """``ValueError`` naming ``r`` unless ``1 <= r < num_items``."""
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"r must be a positive integer, got {r!r}")
    if r >= num_items:
        raise ValueError(f"r={r} must be smaller than the number of items ({num_items})")


def _segment_sum(key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor]:
    """Unique ``key`` (ascending) and the ``float64`` sum of ``value`` per key, added in
    the input order of each key's entries (stable sort: deterministic)."""
    key, order = key.sort(stable=True)
    value = value[order].double()
    uniq, counts = torch.unique_consecutive(key, return_counts=True)
    total = torch.segment_reduce(value, "sum", lengths=counts, unsafe=True)
    return uniq, total


def item_similarity(knn: Sequence[Tensor], num_items: int) -> Tensor:
    r"""Mean of the modality kNN matrices, :math:`S = \frac{1}{M}\sum_m S^m`.

    Args:
        knn: ``M`` sparse ``[I, I]`` matrices (COO or CSR), one per content modality,
            in a fixed modality order.
        num_items: ``I``.

    Returns:
        ``[I, I]`` ``torch.sparse_csr`` matrix (``float64`` values, columns sorted per row).
    """
    if len(knn) == 0:
        raise ValueError("item_similarity needs at least one modality kNN matrix")
    rows, cols, vals = [], [], []
    for s in knn:
        if tuple(s.shape) != (num_items, num_items):
            raise ValueError(f"kNN matrix of shape {tuple(s.shape)}, expected {(num_items, num_items)}")
        s = s.to_sparse_coo().coalesce() if s.layout != torch.sparse_coo else s.coalesce()
        rows.append(s.indices()[0])
        cols.append(s.indices()[1])
        vals.append(s.values().double())
    key = torch.cat(rows) * num_items + torch.cat(cols)
    uniq, total = _segment_sum(key, torch.cat(vals))
    total = total / len(knn)
    row, col = uniq // num_items, uniq % num_items
    crow = torch.zeros(num_items + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=num_items), 0)
    return _csr(crow, col, total, (num_items, num_items))


def _score_order_key(local_user: Tensor, score: Tensor) -> Tensor:
    """int64 key sorting by ``(local_user asc, score desc)`` (``score`` float32)."""
    b = score.contiguous().view(torch.int32).long()
    t = b ^ ((b >> 31) & 0x7FFFFFFF)            # monotone in the float value
    t.neg_().add_((1 << 31) - 1)                 # ... reversed, in [0, 2^32)
    return t.bitwise_or_(local_user << 32)


def _csr(crow: Tensor, col: Tensor, val: Tensor, shape) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def _with_masked_diagonal(crow: Tensor, col: Tensor, val: Tensor, n: int) -> Tensor:
    r""":math:`S - \infty\,\mathrm{I}` as CSR: :math:`(R(S - \infty I))_{uj} = -\infty` exactly
    for the observed pairs, and is :math:`(RS)_{uj}` elsewhere."""
    row = torch.repeat_interleave(torch.arange(n), crow[1:] - crow[:-1])
    diag = torch.arange(n)
    key = torch.cat([row * n + col, diag * n + diag])
    uniq, total = _segment_sum(key, torch.cat([val, torch.full((n,), float("-inf"),
                                                                dtype=torch.float64)]))
    crow2 = torch.zeros(n + 1, dtype=torch.long)
    crow2[1:] = torch.cumsum(torch.bincount(uniq // n, minlength=n), 0)
    return _csr(crow2, uniq % n, total, (n, n))


@torch.no_grad()
def expand_candidates(train_edge_index: Tensor, similarity: Tensor, num_users: int, r: int,
                      chunk_entries: int = 1 << 22,
                      progress: bool = True) -> Tuple[Tensor, Tensor]:
    r"""Induced edges :math:`\mathcal E^+` and their scores :math:`c_{u,j}` (Eq. 2-3).

    :math:`C = R\,S` is a sparse-sparse product (``torch.sparse.mm`` on CSR, ``float64``)
    over chunks of users; observed pairs are removed exactly by multiplying with
    :math:`S - \infty I` instead of :math:`S` (they come out as :math:`-\infty`).

    Args:
        train_edge_index: ``[2, E]`` training (user, item) pairs (duplicates ignored).
        similarity: ``[I, I]`` sparse :math:`S` from :func:`item_similarity`.
        num_users: ``U``.
        r: candidates kept per user, ``1 <= r < I``.
        chunk_entries: bound on the expanded ``(u, i, j)`` products per chunk of users,
            hence on the chunk's memory (one user is never split).
        progress: show a tqdm bar over users.

    Returns:
        ``(edge_index [2, E+] long, score [E+] float32)``: per user the ``r`` best items
        by ``(score desc, item id asc)``, sorted by ``(user asc, score desc, item asc)``.
    """
    num_items = similarity.size(0)
    check_r(r, num_items)
    if similarity.layout != torch.sparse_csr:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            similarity = similarity.to_sparse_csr()
    crow = similarity.crow_indices().long()
    scol = similarity.col_indices().long()
    sval = similarity.values().double()
    deg = crow[1:] - crow[:-1]
    s_masked = _with_masked_diagonal(crow, scol, sval, num_items)

    tr = train_edge_index.long().cpu()
    if tr.numel() and (int(tr[0].max()) >= num_users or int(tr[1].max()) >= num_items
                       or int(tr.min()) < 0):
        raise ValueError("train_edge_index holds ids outside [0, num_users) x [0, num_items)")
    key = torch.unique(tr[0] * num_items + tr[1])             # canonical: sorted, no duplicates
    users, items = key // num_items, key % num_items
    user_ptr = torch.zeros(num_users + 1, dtype=torch.long)
    user_ptr[1:] = torch.cumsum(torch.bincount(users, minlength=num_users), 0)
    cost_ptr = torch.zeros(num_users + 1, dtype=torch.long)
    cost_ptr[1:] = torch.cumsum(torch.bincount(users, weights=deg[items].double() + 1,
                                               minlength=num_users).long(), 0)

    out_ei, out_sc = [], []
    ua = 0
    with tqdm(total=num_users, desc="candidate expansion", unit="user", disable=not progress,
              leave=False) as bar:
        while ua < num_users:
            # largest ub with cost(ua..ub) <= chunk_entries (at least one user)
            ub = int(torch.searchsorted(cost_ptr, cost_ptr[ua] + chunk_entries, right=True)) - 1
            ub = min(num_users, max(ub, ua + 1))
            ea, eb = int(user_ptr[ua]), int(user_ptr[ub])
            if eb > ea:
                rc = _csr(user_ptr[ua:ub + 1] - ea, items[ea:eb],
                          torch.ones(eb - ea, dtype=torch.float64), (ub - ua, num_items))
                lu, j, sc = _top_r(torch.sparse.mm(rc, s_masked), r)
                out_ei.append(torch.stack([lu + ua, j]))
                out_sc.append(sc)
            bar.update(ub - ua)
            ua = ub
    if not out_ei:
        return torch.empty(2, 0, dtype=torch.long), torch.empty(0, dtype=torch.float32)
    edge_index, score = torch.cat(out_ei, dim=1), torch.cat(out_sc)
    log.info("candidate expansion: %d induced edges for %d users (r=%d)", edge_index.size(1),
             int(torch.unique_consecutive(edge_index[0]).numel()), r)
    return edge_index, score


def _top_r(product: Tensor, r: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(local user, item, float32 score)`` of the top-``r`` unobserved candidates per
    row of a chunk's CSR product, sorted by ``(user asc, score desc, item asc)`` (the
    kernel's column order within a row is not relied upon).

    Observed pairs (``-inf``) sort last in their row; the few that survive the top-``r``
    cut (rows with fewer than ``r`` candidates) are dropped afterwards."""
    crow = product.crow_indices().long()
    n_rows = crow.numel() - 1
    count = crow[1:] - crow[:-1]
    u = torch.repeat_interleave(torch.arange(n_rows), count)
    col = product.col_indices()
    score = product.values().float()
    key, order = _score_order_key(u, score).sort()              # (user asc, score desc)
    del u
    tie = key[1:] == key[:-1]
    if bool(tie.any()):  # equal (user, score): order those runs by item id
        run = torch.zeros(key.numel(), dtype=torch.bool)
        run[1:] |= tie
        run[:-1] |= tie
        idx = run.nonzero().view(-1)
        sub = order[idx]
        p = col[sub].sort(stable=True).indices
        p2 = key[idx][p].sort(stable=True).indices
        order[idx] = sub[p][p2]
    rank = torch.arange(key.numel()) - torch.repeat_interleave(crow[:-1], count)
    sel = rank < r                                               # top-r per user
    u, order = key[sel] >> 32, order[sel]
    col, score = col[order].long(), score[order]
    keep = score > float("-inf")                                 # drop observed pairs
    if not bool(keep.all()):
        u, col, score = u[keep], col[keep], score[keep]
    return u, col, score
