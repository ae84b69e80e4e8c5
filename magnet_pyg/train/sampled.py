r"""Neighbour-sampled mini-batch training of LightGCN and MAGNET (paper Section 3.2.3, fanout
:math:`F`), driven by PyG's :class:`~torch_geometric.loader.LinkNeighborLoader`.

Each mini-batch of link-prediction samples ``(user, positive, negative)`` (drawn by
:class:`~magnet_pyg.train.LinkSampler`, so negatives still avoid each user's training items)
is turned into the seed set {batch users} and {batch positives and negatives}, and PyG samples
its ``L``-hop neighbourhood over the :class:`HeteroData`:

* view :math:`\mathcal G_{UI}`: relations :data:`~magnet_pyg.data.RATES` /
  :data:`~magnet_pyg.data.RATED_BY`;
* view :math:`\mathcal G_{UIG}`: the same plus :data:`~magnet_pyg.data.INDUCED` /
  :data:`~magnet_pyg.data.INDUCED_BY`.

One sampling call covers both views: the fanout ``F_l`` of hop ``l`` applies **per relation**
(PyG's heterogeneous semantics), so a node of the augmented view gets up to ``F_l`` observed and
up to ``F_l`` induced neighbours, and the observed-view computation tree is contained in the
sample. ``F_l = -1`` keeps every neighbour.

The LightGCN layers (Eq. 4) then run on the sampled subgraph with the **full-graph**
degrees, stored per view as node attributes (``data[t].deg_ui``, ``data[t].deg_uig``, see
:func:`add_view_degrees`):

.. math::
    \mathbf e_v^{(\ell+1)} = \sum_{r} \frac{|N_r(v)|}{|S_r(v)|} \sum_{w \in S_r(v)}
    \frac{\mathbf e_w^{(\ell)}}{\sqrt{|N(v)|\,|N(w)|}},

where :math:`S_r(v)` are the sampled neighbours of :math:`v` through relation :math:`r` and
:math:`N(\cdot)` the full neighbourhoods in the view. The factor :math:`|N_r(v)|/|S_r(v)|`
(``rescale=True``, default) makes the sampled sum an unbiased estimate of the exact one;
with ``rescale=False`` sampled edges keep their plain full-graph weight. With fanout ``-1``
both are exactly the full-graph propagation, so the seed embeddings (users, positives,
negatives) equal those of :meth:`~magnet_pyg.models.MAGNET.forward` (see ``tests/test_sampled.py``).
Only the seeds' outputs are computed exactly: layer ``l`` is evaluated only on nodes within
``L - l`` hops of a seed (the other rows of the returned matrices are not meaningful).

MAGNET's user cues (mean of the item cues over the user's training items) need no sampling:
they are computed exactly for the batch users from the user's training rows
(:func:`batch_cues`), and the MoE head consumes the seed embeddings.

Typical use (what :class:`~magnet_pyg.train.distributed.LargeGraphTrainer` does)::

    graph = prepare_sampled(model, data, fanout=[10, 10])
    for users, pos, neg in LinkSampler(train, num_items, 1024).epoch(gen):
        batch = graph.sampler.sample(users, pos, neg).to(device)
        loss, logs = sampled_loss(model, graph, batch)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import (INDUCED, INDUCED_BY, ITEM, RATED_BY, RATES, USER, modality_features,
                           num_items, num_users, split_edge_index)
from ..evaluate.ranking import CSRIndex
from ..nn.cues import ModalityCues
from ..nn.indexing import gather_rows
from ..nn.losses import bpr_loss, embedding_l2, view_infonce

__all__ = ["VIEW_RELATIONS", "check_fanout", "check_sampling_backend", "add_view_degrees",
           "sampling_graph", "SampledBatch", "SubgraphSampler", "view_subgraph", "hop_levels",
           "propagate_subgraph", "encode_batch", "batch_cues", "SampledGraph", "prepare_sampled",
           "sampled_loss", "lightgcn_sampled_loss", "magnet_sampled_loss", "model_views",
           "SAMPLED_MODELS"]

#: relations (edge types, messages flow source -> destination) of each structural view
VIEW_RELATIONS: Dict[str, Tuple[Tuple[str, str, str], ...]] = {
    "ui": (RATES, RATED_BY),
    "uig": (RATES, RATED_BY, INDUCED, INDUCED_BY),
}
#: models with a sampled training mode
SAMPLED_MODELS = ("lightgcn", "magnet")


# ----------------------------------------------------------------------------- validation
def check_fanout(fanout: Sequence[int], num_layers: int) -> List[int]:
    """Validate a per-layer fanout list (one entry per propagation layer, each ``>= 1`` or
    ``-1`` for all neighbours) and return it as a list of ints."""
    if isinstance(fanout, (int, str)) or fanout is None:
        raise ValueError(f"fanout must be a list with one entry per layer, got {fanout!r}")
    out = []
    for f in fanout:
        if isinstance(f, bool) or int(f) != f:
            raise ValueError(f"fanout entries must be integers, got {list(fanout)}")
        f = int(f)
        if f == 0 or f < -1:
            raise ValueError(f"fanout entries must be >= 1, or -1 for all neighbours; got {list(fanout)}")
        out.append(f)
    if len(out) != int(num_layers):
        raise ValueError(f"fanout has {len(out)} entries ({out}) but the model has {num_layers} "
                         f"propagation layers: give one fanout per layer (for example "
                         f"--fanout {' '.join(['10'] * max(int(num_layers), 1))})")
    return out


def check_sampling_backend() -> None:
    """Raise a clear error when PyG has no neighbour-sampling backend (pyg-lib or torch-sparse)."""
    import torch_geometric.typing as tgt
    if not (tgt.WITH_PYG_LIB or tgt.WITH_TORCH_SPARSE):
        raise ValueError("sampled training (--fanout) needs PyG's neighbour-sampling backend: install "
                         "'pyg-lib' or 'torch-sparse' (see README, ../shared/wheels)")


# ----------------------------------------------------------------------------- graph
def model_views(model) -> Tuple[str, ...]:
    """``("ui",)`` for LightGCN and MAGNET-SV, ``("ui", "uig")`` for MAGNET-DV."""
    return ("ui", "uig") if getattr(model, "view", None) == "dual" else ("ui",)


def _reverse(data: HeteroData, et, rev) -> Tensor:
    if rev in data.edge_types and data[rev].num_edges == data[et].num_edges:
        return data[rev].edge_index
    return data[et].edge_index.flip(0)


def add_view_degrees(data: HeteroData, views: Sequence[str] = ("ui", "uig")) -> HeteroData:
    r"""Store the full-graph node degrees of each view as node attributes, in place.

    ``data["user"].deg_ui`` ``[U]`` and ``data["item"].deg_ui`` ``[I]`` count training
    interactions; ``deg_uig`` adds the induced edges (:math:`\mathcal E \cup \mathcal E^+`).
    Duplicate pairs count with their multiplicity, as in
    :func:`~magnet_pyg.nn.adjacency.bipartite_normalized_adjacency`. Float32.

    Returns:
        ``data``.
    """
    U, I = num_users(data), num_items(data)
    train = split_edge_index(data, "train")
    du = torch.bincount(train[0], minlength=U).float()
    di = torch.bincount(train[1], minlength=I).float()
    data[USER].deg_ui, data[ITEM].deg_ui = du, di
    if "uig" in views:
        if INDUCED not in data.edge_types:
            raise ValueError("the augmented view needs content-induced edges on the data: call "
                             "magnet_pyg.graph.add_induced_edges(data, k, r) first, or use view='single'")
        ind = data[INDUCED].edge_index
        data[USER].deg_uig = du + torch.bincount(ind[0], minlength=U).float()
        data[ITEM].deg_uig = di + torch.bincount(ind[1], minlength=I).float()
    return data


def sampling_graph(data: HeteroData, views: Sequence[str] = ("ui",)) -> HeteroData:
    """Structure-only :class:`HeteroData` that the neighbour sampler reads: node counts, the
    per-view degrees (:func:`add_view_degrees`) and the edge types of ``views`` (sharing the
    ``edge_index`` tensors of ``data``; no item features, so that sampled batches carry none)."""
    add_view_degrees(data, views)
    g = HeteroData()
    for t in (USER, ITEM):
        g[t].num_nodes = data[t].num_nodes
        for v in views:
            g[t][f"deg_{v}"] = data[t][f"deg_{v}"]
    g[RATES].edge_index = data[RATES].edge_index
    g[RATED_BY].edge_index = _reverse(data, RATES, RATED_BY)
    if "uig" in views:
        g[INDUCED].edge_index = data[INDUCED].edge_index
        g[INDUCED_BY].edge_index = _reverse(data, INDUCED, INDUCED_BY)
    return g


# ----------------------------------------------------------------------------- batches
@dataclass
class SampledBatch:
    """One mini-batch of ``B`` (user, positive, negative) samples and its sampled subgraph.

    Attributes:
        users, pos, neg: ``[B]`` global ids.
        subgraph: sampled :class:`HeteroData` (``n_id`` per node type, local ``edge_index``
            per relation, ``deg_<view>`` node attributes); seeds are the batch's users and items.
        users_local, pos_local, neg_local: ``[B]`` positions of the samples in
            ``subgraph["user"]`` / ``subgraph["item"]``.
    """
    users: Tensor
    pos: Tensor
    neg: Tensor
    subgraph: HeteroData
    users_local: Tensor
    pos_local: Tensor
    neg_local: Tensor

    @property
    def num_sub_users(self) -> int:
        return int(self.subgraph[USER].num_nodes)

    def to(self, device, non_blocking: bool = False) -> "SampledBatch":
        mv = lambda t: t.to(device, non_blocking=non_blocking)
        return SampledBatch(mv(self.users), mv(self.pos), mv(self.neg),
                            self.subgraph.to(device, non_blocking=non_blocking),
                            mv(self.users_local), mv(self.pos_local), mv(self.neg_local))


Triplet = Tuple[Tensor, Tensor, Tensor]


class SubgraphSampler:
    r"""Samples the ``L``-hop subgraph of (user, positive, negative) mini-batches with PyG.

    Wraps one :class:`torch_geometric.sampler.NeighborSampler` built once over
    :func:`sampling_graph` and serves batches through
    :class:`~torch_geometric.loader.LinkNeighborLoader` (``edge_label_index`` =
    ``[users, users; pos, neg]`` per batch, no PyG negative sampling: negatives come from
    :class:`~magnet_pyg.train.LinkSampler`).

    Args:
        data: the dataset (induced edges needed for ``"uig"``).
        num_neighbors: fanout per hop, ``-1`` = all (``len`` = number of layers).
        views: ``("ui",)`` or ``("ui", "uig")``.
        num_workers: CPU worker processes of the loader (0: sample in the main process).
    """

    def __init__(self, data: HeteroData, num_neighbors: Sequence[int], views: Sequence[str] = ("ui",),
                 num_workers: int = 0):
        check_sampling_backend()
        from torch_geometric.sampler import NeighborSampler
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.views = tuple(views)
        self.num_neighbors = [int(f) for f in num_neighbors]
        self.num_workers = int(num_workers)
        self.graph = sampling_graph(data, self.views)
        with warnings.catch_warnings():  # torch-sparse backend: PyG asks for pyg-lib
            warnings.filterwarnings("ignore", message=".*without a 'pyg-lib' installation.*")
            self.neighbor_sampler = NeighborSampler(self.graph, num_neighbors=self.num_neighbors,
                                                    share_memory=self.num_workers > 0)

    def loader(self, batches: Sequence[Triplet], **kwargs):
        """A :class:`~torch_geometric.loader.LinkNeighborLoader` yielding one sampled
        :class:`HeteroData` per triplet batch, in order (``kwargs`` go to the DataLoader)."""
        from torch_geometric.loader import LinkNeighborLoader
        cols, index, start = [], [], 0
        for users, pos, neg in batches:
            b = users.numel()
            cols.append(torch.stack([torch.cat([users, users]), torch.cat([pos, neg])]))
            index.append(list(range(start, start + 2 * b)))
            start += 2 * b
        eli = torch.cat(cols, dim=1) if cols else torch.zeros(2, 0, dtype=torch.long)
        kwargs.setdefault("num_workers", self.num_workers)
        if kwargs["num_workers"] > 0:
            kwargs.setdefault("persistent_workers", False)
        return LinkNeighborLoader(self.graph, self.num_neighbors, edge_label_index=(RATES, eli),
                                  batch_sampler=index, neighbor_sampler=self.neighbor_sampler,
                                  **kwargs)

    def iterate(self, batches: Sequence[Triplet], **kwargs) -> Iterator[SampledBatch]:
        """Yield a :class:`SampledBatch` per ``(users, pos, neg)`` batch, in order (sampled by
        the loader's workers ahead of use when ``num_workers > 0``)."""
        batches = [tuple(t.long() for t in b) for b in batches]
        if not batches:
            return
        for (users, pos, neg), sub in zip(batches, self.loader(batches, **kwargs)):
            eli = sub[RATES].edge_label_index
            b = users.numel()
            yield SampledBatch(users, pos, neg, sub, eli[0, :b], eli[1, :b], eli[1, b:])

    def sample(self, users: Tensor, pos: Tensor, neg: Tensor) -> SampledBatch:
        """Sample one batch synchronously (in the calling process)."""
        return next(self.iterate([(users, pos, neg)], num_workers=0))


# ----------------------------------------------------------------------------- encoder
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
        w = dis[src] * dis[dst]
        if rescale:
            cnt = torch.bincount(ei[1], minlength=int(sub[et[2]].num_nodes)).to(w.dtype)
            w = w * (_relation_degree(sub, et)[ei[1]] / cnt[ei[1]])
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


def _sorted_csr(row: Tensor, col: Tensor, value: Tensor, n: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Order the entries of an ``[n, n]`` matrix by (row, col): ``(perm, row, col, value)``."""
    perm = torch.argsort(row * n + col)
    return perm, row[perm], col[perm], value[perm]


def _csr(row: Tensor, col: Tensor, value: Tensor, n: int) -> Tensor:
    """``[n, n]`` CSR tensor from entries already sorted by row."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, value, (n, n), check_invariants=False)


def propagate_subgraph(conv, x: Tensor, edge_index: Tensor, edge_weight: Tensor, num_layers: int,
                       seeds: Optional[Tensor] = None, spmm: bool = True) -> Tensor:
    r"""LightGCN layers (Eq. 4) and layer mean (Eq. 5) on a sampled subgraph.

    Args:
        conv: a message-passing layer called as ``conv(x, edge_index, edge_weight)``
            (:class:`~torch_geometric.nn.LGConv` ``(normalize=False)``), used when
            ``spmm=False``.
        x: ``[N, d]`` layer-0 embeddings of the subgraph nodes.
        edge_index, edge_weight: ``[2, E]`` / ``[E]`` from :func:`view_subgraph`.
        num_layers: ``L``.
        seeds: when given, layer ``l`` only updates nodes within ``L - l`` hops of the seeds
            (exact for the seeds, fewer messages); otherwise every node is updated.
        spmm: multiply with a per-layer CSR matrix (and its pre-built transpose in the
            backward pass, :func:`~magnet_pyg.nn.adjacency.sparse_mm`) instead of the
            gather-scatter of ``conv``; same result, several times faster on CPU.

    Returns:
        ``[N, d]`` :math:`\frac{1}{L+1}\sum_l \mathbf e^{(l)}` (exact on the seeds' rows).
    """
    masks: List[Optional[Tensor]] = [None] * num_layers
    if seeds is not None and num_layers > 1:
        level = hop_levels(x.size(0), edge_index, seeds, num_layers)
        dst_level = level[edge_index[1]]
        masks = [dst_level <= num_layers - l for l in range(1, num_layers + 1)]
    n = x.size(0)
    if spmm and num_layers > 0:
        from ..nn.adjacency import sparse_mm
        src, dst = edge_index
        p_f, r_f, c_f, v_f = _sorted_csr(dst, src, edge_weight, n)      # A[v, w]: messages w -> v
        p_b, r_b, c_b, v_b = _sorted_csr(src, dst, edge_weight, n)      # A^T for the backward pass
    out = x
    for m in masks:
        if spmm:
            if m is None:
                a, a_t = _csr(r_f, c_f, v_f, n), _csr(r_b, c_b, v_b, n)
            else:
                kf, kb = m[p_f], m[p_b]
                a, a_t = _csr(r_f[kf], c_f[kf], v_f[kf], n), _csr(r_b[kb], c_b[kb], v_b[kb], n)
            x = sparse_mm(a, x, adj_t=a_t)
        else:
            ei, w = (edge_index, edge_weight) if m is None else (edge_index[:, m], edge_weight[m])
            x = conv(x, ei, w)
        out = out + x
    return out / (num_layers + 1)


def _seed_nodes(batch: SampledBatch) -> Tensor:
    nu = batch.num_sub_users
    return torch.cat([batch.users_local, nu + batch.pos_local, nu + batch.neg_local]).unique()


def encode_batch(encoder, batch: SampledBatch, views: Sequence[str] = ("ui",), rescale: bool = True,
                 trim: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""Dual-view encoder (Eq. 4-6) of :class:`~magnet_pyg.nn.DualViewEncoder` on the sampled
    subgraph of ``batch``.

    Returns:
        ``(z, z_ui, z_uig)``, each ``[N_sub, d]`` in the local node space (users first, then
        items; exact on the seed rows); ``z_uig`` is ``None`` and ``z`` is ``z_ui`` for one view.
    """
    sub = batch.subgraph
    ids = torch.cat([sub[USER].n_id, encoder.num_users + sub[ITEM].n_id])
    x0 = encoder.embedding.weight[ids]
    seeds = _seed_nodes(batch) if trim else None
    zs = []
    for view in views:
        ei, w = view_subgraph(sub, view, rescale)
        zs.append(propagate_subgraph(encoder.conv, x0, ei, w, encoder.num_layers, seeds,
                                     spmm=encoder.propagation == "spmm"))
    if len(zs) == 1:
        return zs[0], zs[0], None
    return 0.5 * (zs[0] + zs[1]), zs[0], zs[1]


# ----------------------------------------------------------------------------- cues
def batch_cues(cues, features: Sequence[Tensor], history: CSRIndex, users: Tensor,
               items: Sequence[Tensor]) -> Tuple[Tensor, List[Tensor]]:
    r"""Exact modality cues of the batch (MAGNET Eq. 7-8 decision): item cues
    :math:`\mathbf h_i^m = W_m\mathbf x_i^m + \mathbf b_m` and the user history pooling
    :math:`\mathbf h_u^m = \frac{1}{|\mathcal I_u|}\sum_{i\in\mathcal I_u}\mathbf h_i^m`, computed
    only for the batch users and the items they need (the users' training items and ``items``).
    Dropout (training mode) is drawn once per needed item, shared by pooling and scoring.

    Args:
        cues: :class:`~magnet_pyg.nn.ModalityCues`.
        features: per modality ``[I, d_m]`` (on the model's device).
        history: :class:`~magnet_pyg.evaluate.CSRIndex` of the training pairs.
        users: ``[B]`` global user ids.
        items: item id tensors (for example ``pos``, ``neg``) whose cues are returned.

    Returns:
        ``h_u`` ``[B, M, d]`` and one ``[len(t), M, d]`` tensor per entry of ``items``.
    """
    device = users.device
    uu, u_inv = torch.unique(users, return_inverse=True)
    row, hist = history.gather(uu.cpu())
    deg = history.degree(uu.cpu()).clamp(min=1).float()
    row, hist, wgt = row.to(device), hist.to(device), (1.0 / deg)[row].to(device)
    sizes = [t.numel() for t in items]
    needed, inv = torch.unique(torch.cat([*items, hist]), return_inverse=True)
    h = cues.item_cues([f[needed] for f in features])                       # [K, M, d]
    k, m, d = h.shape
    n_items = sum(sizes)
    h_hist = gather_rows(h, inv[n_items:]).reshape(-1, m * d) * wgt.unsqueeze(1)
    h_u = torch.zeros(uu.numel(), m * d, device=device, dtype=h.dtype).index_add_(0, row, h_hist)
    h_u = gather_rows(h_u.view(-1, m, d), u_inv)
    outs, start = [], 0
    for s in sizes:
        outs.append(gather_rows(h, inv[start:start + s]))
        start += s
    return h_u, outs


# ----------------------------------------------------------------------------- context
@dataclass
class SampledGraph:
    """What :func:`prepare_sampled` builds once (the ``graph`` of sampled training).

    Attributes:
        sampler: the :class:`SubgraphSampler`.
        views: structural views of the model.
        rescale: edge rescaling of :func:`view_subgraph`.
        features: per-modality item features on the model's device (MAGNET).
        history: training pairs as a :class:`~magnet_pyg.evaluate.CSRIndex` (MAGNET cues).
        data: the dataset (layer-wise inference builds its graph from it on demand).
    """
    sampler: SubgraphSampler
    views: Tuple[str, ...]
    rescale: bool = True
    features: Tuple[Tensor, ...] = ()
    history: Optional[CSRIndex] = None
    data: Optional[HeteroData] = None
    layerwise: object = field(default=None, repr=False)

    def layerwise_graph(self):
        """The exact :class:`~magnet_pyg.evaluate.layerwise.LayerwiseGraph` (built once)."""
        if self.layerwise is None:
            from ..evaluate.layerwise import LayerwiseGraph
            self.layerwise = LayerwiseGraph(self.data, self.views)
        return self.layerwise


def _model_kind(model) -> str:
    from ..models.lightgcn import LightGCN
    from ..models.magnet import MAGNET
    if isinstance(model, MAGNET):
        return "magnet"
    if isinstance(model, LightGCN):
        return "lightgcn"
    raise ValueError(f"sampled training supports {SAMPLED_MODELS}, not {type(model).__name__}")


def prepare_sampled(model, data: HeteroData, fanout: Sequence[int], num_workers: int = 0,
                    rescale: bool = True) -> SampledGraph:
    """Build the sampled-training context of ``model`` (LightGCN or MAGNET) on ``data``
    without materialising any full-graph adjacency."""
    kind = _model_kind(model)
    fanout = check_fanout(fanout, model.encoder.num_layers)
    if getattr(model, "induced_weight", 1.0) != 1.0:
        raise ValueError(f"neighbour-sampled training samples the plain union G_UI + E+; "
                         f"induced_weight={model.induced_weight} is only supported in full-graph training "
                         f"(drop --fanout or use --induced-weight 1)")
    if getattr(model, "warmup_epochs", 0) > 0:
        raise ValueError(f"warmup_epochs={model.warmup_epochs} is only supported in full-graph training "
                         f"(drop --fanout or use --warmup-epochs 0)")
    views = model_views(model)
    sampler = SubgraphSampler(data, fanout, views, num_workers)
    device = model.encoder.embedding.weight.device
    feats: Tuple[Tensor, ...] = ()
    history = None
    if kind == "magnet":
        all_feats = modality_features(data)
        missing = [m for m in model.modalities if m not in all_feats]
        if missing:
            raise ValueError(f"the data has no features for modalities {missing} (it has {list(all_feats)})")
        feats = tuple(model.transform_features(all_feats[m].to(device)) for m in model.modalities)
        history = CSRIndex(split_edge_index(data, "train"), num_users(data))
    return SampledGraph(sampler, views, rescale, feats, history, data)


# ----------------------------------------------------------------------------- losses
def lightgcn_sampled_loss(model, graph: SampledGraph, batch: SampledBatch) -> Tuple[Tensor, Dict]:
    """:meth:`LightGCN.loss <magnet_pyg.models.LightGCN.loss>` on the sampled subgraph
    (BPR + layer-0 L2 of the batch)."""
    z, _, _ = encode_batch(model.encoder, batch, ("ui",), graph.rescale)
    nu = batch.num_sub_users
    u, p, n = (gather_rows(z, batch.users_local), gather_rows(z, nu + batch.pos_local),
               gather_rows(z, nu + batch.neg_local))
    rec = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
    e0 = model.encoder.embedding.weight
    U = model.encoder.num_users
    reg = embedding_l2(gather_rows(e0, batch.users), gather_rows(e0, U + batch.pos),
                       gather_rows(e0, U + batch.neg))
    return rec + model.reg_weight * reg, {"bpr": rec.detach(), "reg": reg.detach()}


def _unique_rows(glob: Tensor, local: Tensor) -> Tensor:
    """Local rows of the unique global ids of ``glob`` (sorted by global id)."""
    uniq, inv = torch.unique(glob, return_inverse=True)
    return torch.zeros(uniq.numel(), dtype=local.dtype, device=local.device).scatter_(0, inv, local)


def magnet_sampled_loss(model, graph: SampledGraph, batch: SampledBatch) -> Tuple[Tensor, Dict]:
    """:meth:`MAGNET.loss <magnet_pyg.models.magnet.MAGNET.loss>` (Eq. 32) on the sampled
    subgraph: BPR through the MoE head on the seed embeddings and exact batch cues, the view
    contrast (Eq. 28) on the batch-unique users and positives, and the routing schedule."""
    z, z_ui, z_uig = encode_batch(model.encoder, batch, graph.views, graph.rescale)
    nu = batch.num_sub_users
    zu, zp, zn = (gather_rows(z, batch.users_local), gather_rows(z, nu + batch.pos_local),
                  gather_rows(z, nu + batch.neg_local))
    h_u, (h_p, h_n) = batch_cues(model.cues, graph.features, graph.history, batch.users,
                                 [batch.pos, batch.neg])
    ctr = None
    if model.lambda_ctr > 0 and z_uig is not None:
        u = _unique_rows(batch.users, batch.users_local)
        i = nu + _unique_rows(batch.pos, batch.pos_local)
        ctr = (view_infonce(z_ui[u], z_uig[u], model.tau) + view_infonce(z_ui[i], z_uig[i], model.tau))
    reg = None
    if model.reg_weight > 0:
        e0, U = model.encoder.embedding.weight, model.encoder.num_users
        reg = embedding_l2(gather_rows(e0, batch.users), gather_rows(e0, U + batch.pos),
                           gather_rows(e0, U + batch.neg))
    if model.exclude_target:   # the triple's user cue without the positive (MAGNET.triple_user_cues)
        h_u = ModalityCues.leave_one_out(h_u, h_p, graph.history.degree(batch.users.cpu()).to(h_u.device))
    return model.objective(model.head(zu, zp, h_u, h_p), model.head(zu, zn, h_u, h_n), ctr, reg)

def sampled_loss(model, graph: SampledGraph, batch: SampledBatch) -> Tuple[Tensor, Dict]:
    """Training loss of ``model`` (LightGCN or MAGNET) on a sampled mini-batch."""
    if _model_kind(model) == "magnet":
        return magnet_sampled_loss(model, graph, batch)
    return lightgcn_sampled_loss(model, graph, batch)

