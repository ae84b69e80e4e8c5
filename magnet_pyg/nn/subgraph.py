r"""LightGCN propagation over neighbour-sampled subgraphs (MAGNET Section 3.2.3, fanout :math:`F`).

A :class:`SampledBatch` is one mini-batch of link-prediction samples ``(user, positive,
negative)`` with its sampled ``L``-hop subgraph, a :class:`HeteroData` whose relations are
those of the structural views (:data:`VIEW_RELATIONS`) and whose nodes carry the
**full-graph** degrees of each view (``deg_ui``, ``deg_uig``). The LightGCN layers (Eq. 4) run
on the subgraph with those degrees:

.. math::
    \mathbf e_v^{(\ell+1)} = \sum_{r} \frac{|N_r(v)|}{|S_r(v)|} \sum_{w \in S_r(v)}
    \frac{\mathbf e_w^{(\ell)}}{\sqrt{|N(v)|\,|N(w)|}},

where :math:`S_r(v)` are the sampled neighbours of :math:`v` through relation :math:`r` and
:math:`N(\cdot)` the full neighbourhoods in the view. The factor :math:`|N_r(v)|/|S_r(v)|`
(``rescale=True``, default) makes the sampled sum an unbiased estimate of the exact one; with
``rescale=False`` sampled edges keep their plain full-graph weight. With fanout ``-1`` both are
exactly the full-graph propagation, so the seed embeddings (users, positives, negatives) equal
the full-graph ones. Only the seeds' outputs are exact: layer ``l`` is evaluated only on
nodes within ``L - l`` hops of a seed.

A model's :meth:`~magnet_pyg.nn.protocol.Recommender.sampled_loss` receives the batch and the
:class:`SampledGraph` of the run; :func:`batch_embeddings` and :func:`propagate_batch` (any
``[U + I, d]`` embedding table) or :func:`encode_batch` (a
:class:`~magnet_pyg.nn.DualViewEncoder`) give its seed rows (:meth:`SampledBatch.seed_rows`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import INDUCED, INDUCED_BY, ITEM, RATED_BY, RATES, USER
from .adjacency import sparse_mm
from .indexing import gather_rows

__all__ = ["VIEW_RELATIONS", "SampledBatch", "SampledGraph", "view_subgraph", "hop_levels",
           "propagate_subgraph", "propagation_orders", "batch_embeddings", "propagate_batch", "encode_batch",
           "unique_rows", "triple_rows"]

#: relations (edge types, messages flow source -> destination) of each structural view
VIEW_RELATIONS: Dict[str, Tuple[Tuple[str, str, str], ...]] = {
    "ui": (RATES, RATED_BY),
    "uig": (RATES, RATED_BY, INDUCED, INDUCED_BY),
}


@dataclass
class SampledBatch:
    """One mini-batch of ``B`` (user, positive, negative) samples and its sampled subgraph.

    Attributes:
        users, pos, neg: ``[B]`` global ids.
        subgraph: sampled :class:`HeteroData` (``n_id`` per node type, local ``edge_index``
            per relation, ``deg_<view>`` node attributes); seeds are the batch's users and items.
        users_local, pos_local, neg_local: ``[B]`` positions of the samples in
            ``subgraph["user"]`` / ``subgraph["item"]``.
        plan: the seed-restricted propagation matrices of the subgraph
            (:class:`~magnet_pyg.nn.seed_propagation.PropagationPlan`) when the sampler built
            them, else ``None`` (:func:`~magnet_pyg.nn.seed_propagation.encode_seeds` then
            builds them).
    """
    users: Tensor
    pos: Tensor
    neg: Tensor
    subgraph: HeteroData
    users_local: Tensor
    pos_local: Tensor
    neg_local: Tensor
    plan: Any = None

    @property
    def num_sub_users(self) -> int:
        return int(self.subgraph[USER].num_nodes)

    def node_ids(self, num_users: int) -> Tensor:
        """``[N_sub]`` ids of the subgraph's nodes in the homogeneous node space (users
        ``0..U-1``, items ``U..U+I-1``), in the local order (users first, then items)."""
        sub = self.subgraph
        return torch.cat([sub[USER].n_id, num_users + sub[ITEM].n_id])

    def seed_rows(self) -> Tuple[Tensor, Tensor, Tensor]:
        """``[B]`` rows of the users, positives and negatives in the local homogeneous node
        space (the rows of :func:`propagate_batch` / :func:`encode_batch` outputs)."""
        nu = self.num_sub_users
        return self.users_local, nu + self.pos_local, nu + self.neg_local

    def seeds(self) -> Tensor:
        """Sorted unique local rows of all seeds."""
        if self.plan is not None:
            return self.plan.seeds
        return torch.cat(self.seed_rows()).unique()

    def seed_index(self) -> Tuple[Tensor, Tensor, Tensor]:
        """``[B]`` positions of the users, positives and negatives among :meth:`seeds` (the
        rows of :func:`~magnet_pyg.nn.seed_propagation.encode_seeds` outputs)."""
        seeds = self.seeds()
        return tuple(torch.searchsorted(seeds, r) for r in self.seed_rows())

    def to(self, device, non_blocking: bool = False) -> "SampledBatch":
        mv = lambda t: t.to(device, non_blocking=non_blocking)
        return SampledBatch(mv(self.users), mv(self.pos), mv(self.neg),
                            self.subgraph.to(device, non_blocking=non_blocking),
                            mv(self.users_local), mv(self.pos_local), mv(self.neg_local),
                            None if self.plan is None else self.plan.to(device, non_blocking))

    def pin_memory(self) -> "SampledBatch":
        """The batch in page-locked memory (what a ``DataLoader`` with ``pin_memory=True`` calls)."""
        return SampledBatch(self.users.pin_memory(), self.pos.pin_memory(), self.neg.pin_memory(),
                            self.subgraph.pin_memory(), self.users_local.pin_memory(),
                            self.pos_local.pin_memory(), self.neg_local.pin_memory(),
                            None if self.plan is None else self.plan.pin_memory())


@dataclass
class SampledGraph:
    """The ``graph`` of neighbour-sampled training, built once per run
    (:func:`magnet_pyg.train.sampled.prepare_sampled`).

    Attributes:
        views: structural views sampled (the model's
            :meth:`~magnet_pyg.nn.protocol.Recommender.sampling_spec`).
        rescale: edge rescaling of :func:`view_subgraph`.
        context: what the model's :meth:`~magnet_pyg.nn.protocol.Recommender.prepare_sampled`
            returned. Its attributes are readable on the graph itself (``graph.features`` is
            ``graph.context.features``).
        sampler: the subgraph sampler (:class:`~magnet_pyg.train.sampled.SubgraphSampler`).
        data: the dataset (the layer-wise inference builds its graph from it on demand).
    """
    views: Tuple[str, ...]
    rescale: bool = True
    context: Any = None
    sampler: Any = None
    data: Optional[HeteroData] = None
    layerwise: Any = field(default=None, repr=False)

    def __getattr__(self, name: str):
        # only reached when the dataclass has no such attribute: look in the model's context
        if name.startswith("__") or name == "context":
            raise AttributeError(name)
        context = self.__dict__.get("context")
        try:
            return getattr(context, name)
        except AttributeError:
            raise AttributeError(f"'SampledGraph' object has no attribute '{name}' (nor has its "
                                 f"model context, {type(context).__name__})") from None

    def layerwise_graph(self):
        """The exact :class:`~magnet_pyg.nn.layerwise.LayerwiseGraph` of the views (built once)."""
        if self.layerwise is None:
            from .layerwise import LayerwiseGraph
            self.layerwise = LayerwiseGraph(self.data, self.views)
        return self.layerwise


# ----------------------------------------------------------------------------- edges
def _relation_degree(sub: HeteroData, et) -> Tensor:
    """Full-graph degree of each destination node of ``et`` through that relation only."""
    dst = sub[et[2]]
    if et in (RATES, RATED_BY):
        return dst.deg_ui
    return dst.deg_uig - dst.deg_ui


def view_subgraph(sub: HeteroData, view: str, rescale: bool = True) -> Tuple[Tensor, Tensor]:
    r"""Edges of one view of a sampled subgraph in the homogeneous local node space (users
    ``0..n_u-1``, items ``n_u..``), with full-degree LightGCN weights (Eq. 4).

    Args:
        sub: sampled subgraph (``deg_<view>`` node attributes, local ``edge_index`` per relation).
        view: ``"ui"`` or ``"uig"``.
        rescale: multiply each sampled edge into ``v`` through relation ``r`` by
            :math:`|N_r(v)| / |S_r(v)|` (unbiased estimate; 1 when nothing was dropped).

    Returns:
        ``edge_index`` ``[2, E]`` (source, destination) and ``edge_weight`` ``[E]``:
        :math:`w_{wv} = 1/\sqrt{\deg(w)\deg(v)}` (times the rescale factor).
    """
    if view not in VIEW_RELATIONS:
        raise ValueError(f"unknown view '{view}', expected one of {sorted(VIEW_RELATIONS)}")
    nu = int(sub[USER].num_nodes)
    deg = torch.cat([sub[USER][f"deg_{view}"], sub[ITEM][f"deg_{view}"]])
    dis = deg.pow(-0.5)
    dis.masked_fill_(torch.isinf(dis), 0.0)
    eis, ws = [], []
    for et in VIEW_RELATIONS[view]:
        if et not in sub.edge_types or "edge_index" not in sub[et] or sub[et].num_edges == 0:
            continue
        ei = sub[et].edge_index
        src = ei[0] + (0 if et[0] == USER else nu)
        dst = ei[1] + (0 if et[2] == USER else nu)
        w = dis.index_select(0, src) * dis.index_select(0, dst)
        if rescale:
            cnt = torch.bincount(ei[1], minlength=int(sub[et[2]].num_nodes)).to(w.dtype)
            w = w * (_relation_degree(sub, et) / cnt).index_select(0, ei[1])
        eis.append(torch.stack([src, dst]))
        ws.append(w)
    if not eis:
        dev = deg.device
        return torch.zeros(2, 0, dtype=torch.long, device=dev), torch.zeros(0, device=dev)
    return torch.cat(eis, dim=1), torch.cat(ws)


def hop_levels(num_nodes: int, edge_index: Tensor, seeds: Tensor, num_hops: int) -> Tensor:
    """``[N]`` hop distance from ``seeds`` against the message direction (a node at level
    ``h`` sends to a node at level ``h - 1``); ``num_hops + 1`` for nodes not reached."""
    level = torch.full((num_nodes,), num_hops + 1, dtype=torch.long, device=edge_index.device)
    level[seeds] = 0
    src, dst = edge_index
    for h in range(1, num_hops + 1):
        s = src[level[dst] == h - 1]
        level[s] = torch.clamp(level[s], max=h)
    return level


# ----------------------------------------------------------------------------- propagation
def _order(row: Tensor, col: Tensor, n: int) -> Tensor:
    """Permutation ordering the entries of an ``[n, n]`` matrix by (row, col), equal entries in
    their given order (stable)."""
    if n >= 2 ** 31:
        return torch.sort(row * n + col, stable=True)[1]
    # two stable passes over 32-bit keys (faster than one over 64-bit row * n + col)
    by_col = torch.sort(col.to(torch.int32), stable=True)[1]
    return by_col.index_select(0, torch.sort(row.index_select(0, by_col).to(torch.int32), stable=True)[1])


def _csr(row: Tensor, col: Tensor, value: Tensor, n: int) -> Tensor:
    """``[n, n]`` CSR tensor from entries already sorted by row."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, value, (n, n), check_invariants=False)


def _layer_masks(num_nodes: int, edge_index: Tensor, seeds: Optional[Tensor],
                 num_layers: int) -> List[Optional[Tensor]]:
    """Per layer ``l``, the edges into nodes within ``L - l`` hops of the seeds (``None``: all
    edges, also when every edge qualifies, as in layer 1 of a sampled ``L``-hop subgraph)."""
    if seeds is None or num_layers <= 1:
        return [None] * num_layers
    # levels up to L - 1 decide every mask (nodes farther away are excluded from all of them)
    dst_level = hop_levels(num_nodes, edge_index, seeds, num_layers - 1)[edge_index[1]]
    masks: List[Optional[Tensor]] = []
    for l in range(1, num_layers + 1):
        m = dst_level <= num_layers - l
        masks.append(None if bool(m.all()) else m)
    return masks


def propagation_orders(edge_index: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    """``(forward, backward)`` entry orders of :func:`propagate_subgraph`'s sparse products:
    by (destination, source) and by (source, destination). The orders of the first ``E'``
    entries alone are the entries ``< E'`` of these, in the same order (a view whose edges
    are a prefix of another's shares its orders, see :func:`encode_batch`)."""
    src, dst = edge_index
    forward = _order(dst, src, num_nodes)
    # a stable sort of the forward order by source alone is the (source, destination) order
    by_src = src.index_select(0, forward)
    if num_nodes < 2 ** 31:
        by_src = by_src.to(torch.int32)  # sorts faster than int64
    return forward, forward.index_select(0, torch.sort(by_src, stable=True)[1])


def propagate_subgraph(conv, x: Tensor, edge_index: Tensor, edge_weight: Tensor, num_layers: int,
                       seeds: Optional[Tensor] = None, spmm: bool = True,
                       orders: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
    r"""LightGCN layers (Eq. 4) and layer mean (Eq. 5) on a sampled subgraph.

    Args:
        conv: a message-passing layer called as ``conv(x, edge_index, edge_weight)``
            (:class:`~torch_geometric.nn.LGConv` ``(normalize=False)``), used when
            ``spmm=False`` (may be ``None`` otherwise).
        x: ``[N, d]`` layer-0 embeddings of the subgraph nodes.
        edge_index, edge_weight: ``[2, E]`` / ``[E]`` from :func:`view_subgraph`.
        num_layers: ``L``.
        seeds: when given, layer ``l`` only updates nodes within ``L - l`` hops of the seeds
            (exact for the seeds, fewer messages); otherwise every node is updated.
        spmm: multiply with a per-layer CSR matrix (and its pre-built transpose in the
            backward pass, :func:`~magnet_pyg.nn.adjacency.sparse_mm`) instead of the
            gather-scatter of ``conv``; same result, several times faster on CPU.
        orders: :func:`propagation_orders` of ``edge_index`` when already known.

    Returns:
        ``[N, d]`` :math:`\frac{1}{L+1}\sum_l \mathbf e^{(l)}` (exact on the seeds' rows).
    """
    n = x.size(0)
    masks = _layer_masks(n, edge_index, seeds, num_layers)
    if spmm and num_layers > 0:
        src, dst = edge_index
        p_f, p_b = orders if orders is not None else propagation_orders(edge_index, n)
        r_f, c_f, v_f = dst[p_f], src[p_f], edge_weight[p_f]      # A[v, w]: messages w -> v
        r_b, c_b, v_b = src[p_b], dst[p_b], edge_weight[p_b]      # A^T for the backward pass
        full = None
    out = x
    for m in masks:
        if spmm:
            if m is None:
                if full is None:
                    full = _csr(r_f, c_f, v_f, n), _csr(r_b, c_b, v_b, n)
                a, a_t = full
            else:
                kf, kb = m[p_f], m[p_b]
                a, a_t = _csr(r_f[kf], c_f[kf], v_f[kf], n), _csr(r_b[kb], c_b[kb], v_b[kb], n)
            x = sparse_mm(a, x, adj_t=a_t)
        else:
            ei, w = (edge_index, edge_weight) if m is None else (edge_index[:, m], edge_weight[m])
            x = conv(x, ei, w)
        out = out + x
    return out / (num_layers + 1)


def batch_embeddings(weight: Tensor, num_users: int, batch: SampledBatch) -> Tensor:
    """``[N_sub, d]`` rows of a joint ``[U + I, d]`` embedding table for the nodes of the
    batch's subgraph, in its local order (users first, then items)."""
    return weight[batch.node_ids(num_users)]


def propagate_batch(x: Tensor, batch: SampledBatch, view: str, num_layers: int,
                    rescale: bool = True, trim: bool = True, conv=None) -> Tensor:
    r"""LightGCN layers and layer mean (Eq. 4-5) of one view over the batch's subgraph.

    Args:
        x: ``[N_sub, d]`` layer-0 embeddings of the subgraph nodes (:func:`batch_embeddings`).
        batch: the sampled batch.
        view: ``"ui"`` or ``"uig"``.
        num_layers: ``L`` (at most the number of sampled hops).
        rescale: see :func:`view_subgraph`.
        trim: update only the nodes that can still reach a seed (exact for the seeds).
        conv: use this message-passing layer (``conv(x, edge_index, edge_weight)``) instead of
            the sparse product.

    Returns:
        ``[N_sub, d]``, exact on the seed rows (:meth:`SampledBatch.seed_rows`).
    """
    ei, w = view_subgraph(batch.subgraph, view, rescale)
    return propagate_subgraph(conv, x, ei, w, num_layers, batch.seeds() if trim else None,
                              spmm=conv is None)


def encode_batch(encoder, batch: SampledBatch, views: Sequence[str] = ("ui",), rescale: bool = True,
                 trim: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""Dual-view encoder (Eq. 4-6) of :class:`~magnet_pyg.nn.DualViewEncoder` on the sampled
    subgraph of ``batch``. The observed view's edges are the first ones of the augmented
    view's (:func:`view_subgraph`), so both views share one sort of their entries.

    Returns:
        ``(z, z_ui, z_uig)``, each ``[N_sub, d]`` in the local node space (users first, then
        items; exact on the seed rows); ``z_uig`` is ``None`` and ``z`` is ``z_ui`` for one view.
    """
    x0 = batch_embeddings(encoder.embedding.weight, encoder.num_users, batch)
    conv = None if encoder.propagation == "spmm" else encoder.conv
    seeds = batch.seeds() if trim else None
    edges = [view_subgraph(batch.subgraph, view, rescale) for view in views]
    orders: List[Optional[Tuple[Tensor, Tensor]]] = [None] * len(views)
    if conv is None and len(views) == 2:
        (ei_a, _), (ei_b, _) = edges
        e = ei_a.size(1)
        if ei_b.size(1) >= e and torch.equal(ei_b[:, :e], ei_a):
            p_f, p_b = propagation_orders(ei_b, x0.size(0))
            orders = [(p_f[p_f < e], p_b[p_b < e]), (p_f, p_b)]
    zs = [propagate_subgraph(conv, x0, ei, w, encoder.num_layers, seeds, spmm=conv is None, orders=o)
          for (ei, w), o in zip(edges, orders)]
    if len(zs) == 1:
        return zs[0], zs[0], None
    return 0.5 * (zs[0] + zs[1]), zs[0], zs[1]


def unique_rows(glob: Tensor, local: Tensor) -> Tensor:
    """Local rows of the unique global ids of ``glob`` (sorted by global id), e.g. the
    batch-unique users of :attr:`SampledBatch.users` / :attr:`SampledBatch.users_local`."""
    uniq, inv = torch.unique(glob, return_inverse=True)
    return torch.zeros(uniq.numel(), dtype=local.dtype, device=local.device).scatter_(0, inv, local)


def triple_rows(z: Tensor, batch: SampledBatch) -> Tuple[Tensor, Tensor, Tensor]:
    """``[B, d]`` rows of the users, positives and negatives of ``z [N_sub, d]`` (gathered with
    :func:`~magnet_pyg.nn.gather_rows`: deterministic backward on a multi-threaded CPU)."""
    u, p, n = batch.seed_rows()
    return gather_rows(z, u), gather_rows(z, p), gather_rows(z, n)
