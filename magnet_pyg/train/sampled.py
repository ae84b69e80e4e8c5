r"""Neighbour-sampled mini-batches (paper Section 3.2.3, fanout :math:`F`) for any model whose
:meth:`~magnet_pyg.nn.protocol.Recommender.sampled_loss` consumes them.

Each mini-batch of link-prediction samples ``(user, positive, negative)`` (drawn by
:class:`~magnet_pyg.train.LinkSampler`, so negatives still avoid each user's training items)
is turned into the seed set {batch users} and {batch positives and negatives}, and its
``L``-hop neighbourhood is sampled over the :class:`HeteroData`, in the relations of the
model's structural views (:data:`~magnet_pyg.nn.subgraph.VIEW_RELATIONS`):

* view :math:`\mathcal G_{UI}`: relations :data:`~magnet_pyg.data.RATES` /
  :data:`~magnet_pyg.data.RATED_BY`;
* view :math:`\mathcal G_{UIG}`: the same plus :data:`~magnet_pyg.data.INDUCED` /
  :data:`~magnet_pyg.data.INDUCED_BY`.

One sampling call covers both views: the fanout ``F_l`` of hop ``l`` applies **per relation**
(PyG's heterogeneous semantics), so a node of the augmented view gets up to ``F_l`` observed and
up to ``F_l`` induced neighbours, and the observed-view computation tree is contained in the
sample. ``F_l = -1`` keeps every neighbour. The sampler
(:class:`~magnet_pyg.train.neighbor_sampler.HeteroNeighborSampler`) draws the subgraphs of
PyG's :class:`~torch_geometric.sampler.NeighborSampler` over ``torch-sparse`` (what
:class:`~torch_geometric.loader.LinkNeighborLoader` does with these seeds), draw for draw, in a
fraction of its time. The nodes carry the full-graph degrees of each view
(:func:`add_view_degrees`), with which :mod:`magnet_pyg.nn.subgraph` propagates exactly
(fanout ``-1``) or unbiasedly (rescaled sampled edges); the sampler's worker processes also
build the seed-restricted propagation matrices of each batch
(:mod:`magnet_pyg.nn.seed_propagation`), so that the training step only multiplies.

Typical use (what :class:`~magnet_pyg.train.Trainer` does with a fanout)::

    graph = prepare_sampled(model, data, fanout=[10, 10])
    for users, pos, neg in LinkSampler(train, num_items, 1024).epoch(gen):
        batch = graph.sampler.sample(users, pos, neg).to(device)
        loss, logs = sampled_loss(model, graph, batch)
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import (INDUCED, INDUCED_BY, ITEM, RATED_BY, RATES, USER, num_items, num_users,
                           split_edge_index)
from ..nn.cues import batch_cues
from ..nn.protocol import Logs, SamplingSpec
from ..nn.seed_propagation import encode_seeds, propagation_plan
from ..nn.subgraph import (VIEW_RELATIONS, SampledBatch, SampledGraph, encode_batch, hop_levels,
                           propagate_subgraph, view_subgraph)
from .neighbor_sampler import HeteroNeighborSampler

__all__ = ["VIEW_RELATIONS", "check_fanout", "check_fanout_layers", "check_sampling_backend",
           "add_view_degrees", "sampling_graph", "SampledBatch", "SubgraphSampler", "SampledGraph",
           "build_sampled_graph", "prepare_sampled", "sampled_loss", "view_subgraph", "hop_levels",
           "propagate_subgraph", "encode_batch", "encode_seeds", "batch_cues"]


# ----------------------------------------------------------------------------- validation
def check_fanout(fanout: Sequence[int], num_layers: Optional[int] = None) -> List[int]:
    """Validate a per-layer fanout list (each entry ``>= 1``, or ``-1`` for all neighbours)
    and return it as a list of ints; with ``num_layers``, also that it has one entry per
    propagation layer (:func:`check_fanout_layers`)."""
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
    if num_layers is not None:
        check_fanout_layers(out, num_layers)
    return out


def check_fanout_layers(fanout: Sequence[int], num_layers: int) -> None:
    """Refuse a fanout whose length is not the model's number of propagation layers."""
    if len(fanout) != int(num_layers):
        raise ValueError(f"fanout has {len(fanout)} entries ({list(fanout)}) but the model has "
                         f"{num_layers} propagation layers: give one fanout per layer (for example "
                         f"{[10] * max(int(num_layers), 1)})")


def check_sampling_backend() -> None:
    """Raise a clear error when PyG has no neighbour-sampling backend (pyg-lib or torch-sparse)."""
    import torch_geometric.typing as tgt
    if not (tgt.WITH_PYG_LIB or tgt.WITH_TORCH_SPARSE):
        raise ValueError("neighbour-sampled training needs PyG's neighbour-sampling backend: install "
                         "'pyg-lib' or 'torch-sparse' (see README, ../shared/wheels)")


# ----------------------------------------------------------------------------- graph
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
    unknown = [v for v in views if v not in VIEW_RELATIONS]
    if unknown:
        raise ValueError(f"unknown views {unknown}, expected some of {sorted(VIEW_RELATIONS)}")
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


# ----------------------------------------------------------------------------- sampler
Triplet = Tuple[Tensor, Tensor, Tensor]


class _Triplets(torch.utils.data.Dataset):
    """The ``(users, pos, neg)`` batches of an epoch as a map-style dataset (one item each)."""

    def __init__(self, batches: Sequence[Triplet]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Triplet:
        return self.batches[i]


class SubgraphSampler:
    r"""Samples the ``L``-hop subgraph of (user, positive, negative) mini-batches.

    The seeds of a batch are its unique users and its unique positives and negatives (as
    PyG's :class:`~torch_geometric.loader.LinkNeighborLoader` seeds an ``edge_label_index`` of
    ``[users, users; pos, neg]``; no PyG negative sampling: negatives come from
    :class:`~magnet_pyg.train.LinkSampler`); their neighbourhood is drawn by a
    :class:`~magnet_pyg.train.neighbor_sampler.HeteroNeighborSampler` over
    :func:`sampling_graph`, the same subgraph, draw for draw, as PyG's
    :class:`~torch_geometric.sampler.NeighborSampler` over ``torch-sparse``. A
    :class:`torch.utils.data.DataLoader` serves the batches (:meth:`loader`), sampled ahead of
    use by ``num_workers`` worker processes; each batch holds only what the sampled losses
    read (``n_id``, ``num_nodes`` and ``deg_<view>`` per node type, ``edge_index`` per
    relation) and, with ``rescale``, the seed-restricted propagation matrices of its views
    (:func:`~magnet_pyg.nn.seed_propagation.propagation_plan`), which are then built by the
    workers instead of the training step.

    Args:
        data: the dataset (induced edges needed for ``"uig"``).
        num_neighbors: fanout per hop, ``-1`` = all (``len`` = number of layers).
        views: ``("ui",)`` or ``("ui", "uig")``.
        num_workers: CPU worker processes of the loader (0: sample in the main process).
        rescale: when given, attach to every batch the propagation plan of ``views`` over
            ``len(num_neighbors)`` layers with this edge rescaling
            (:func:`~magnet_pyg.nn.subgraph.view_subgraph`); ``None``: no plan.
    """

    def __init__(self, data: HeteroData, num_neighbors: Sequence[int], views: Sequence[str] = ("ui",),
                 num_workers: int = 0, rescale: Optional[bool] = None):
        check_sampling_backend()
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.views = tuple(views)
        self.num_neighbors = [int(f) for f in num_neighbors]
        self.num_workers = int(num_workers)
        self.rescale = rescale
        self.graph = sampling_graph(data, self.views)
        self.neighbor_sampler = HeteroNeighborSampler(self.graph, self.num_neighbors,
                                                      share_memory=self.num_workers > 0)

    def collate(self, batch: Triplet) -> SampledBatch:
        """Sample the subgraph of one ``(users, pos, neg)`` batch (what the loader's workers
        run)."""
        users, pos, neg = (t.long() for t in batch)
        b = users.numel()
        seed_users, users_local = torch.unique(users, return_inverse=True)
        seed_items, items_local = torch.unique(torch.cat([pos, neg]), return_inverse=True)
        nodes, edges = self.neighbor_sampler.sample({USER: seed_users, ITEM: seed_items})
        sub = HeteroData()
        for t in (USER, ITEM):
            sub[t].n_id = nodes[t]
            sub[t].num_nodes = nodes[t].numel()
            for v in self.views:
                sub[t][f"deg_{v}"] = self.graph[t][f"deg_{v}"][nodes[t]]
        for et, ei in edges.items():
            sub[et].edge_index = ei
        out = SampledBatch(users, pos, neg, sub, users_local, items_local[:b], items_local[b:])
        if self.rescale is not None:
            out.plan = propagation_plan(out, self.views, len(self.num_neighbors), self.rescale,
                                        self.neighbor_sampler.num_nodes[USER],
                                        self.neighbor_sampler.num_nodes[ITEM])
        return out

    def loader(self, batches: Sequence[Triplet], **kwargs) -> torch.utils.data.DataLoader:
        """A :class:`~torch.utils.data.DataLoader` yielding one
        :class:`~magnet_pyg.nn.subgraph.SampledBatch` per triplet batch, in order (``kwargs``
        go to the DataLoader)."""
        kwargs.setdefault("num_workers", self.num_workers)
        if kwargs["num_workers"] > 0:
            kwargs.setdefault("persistent_workers", False)
        return torch.utils.data.DataLoader(_Triplets(batches), batch_size=None, collate_fn=self.collate,
                                           **kwargs)

    def iterate(self, batches: Sequence[Triplet], **kwargs) -> Iterator[SampledBatch]:
        """Yield a :class:`~magnet_pyg.nn.subgraph.SampledBatch` per ``(users, pos, neg)``
        batch, in order (sampled by the loader's workers ahead of use when ``num_workers > 0``)."""
        batches = [tuple(t.long() for t in b) for b in batches]
        if not batches:
            return
        yield from self.loader(batches, **kwargs)

    def sample(self, users: Tensor, pos: Tensor, neg: Tensor) -> SampledBatch:
        """Sample one batch synchronously (in the calling process)."""
        return next(self.iterate([(users, pos, neg)], num_workers=0))


# ----------------------------------------------------------------------------- context
def build_sampled_graph(model, spec: SamplingSpec, data: HeteroData, fanout: Sequence[int],
                        num_workers: int = 0, rescale: bool = True) -> SampledGraph:
    """The :class:`~magnet_pyg.nn.subgraph.SampledGraph` of ``model`` on ``data`` for an already
    validated ``fanout`` and the model's ``spec``: the subgraph sampler over the spec's views
    and the model's :meth:`~magnet_pyg.nn.protocol.Recommender.prepare_sampled` context. No
    full-graph adjacency is built."""
    sampler = SubgraphSampler(data, fanout, spec.views, num_workers, rescale)
    return SampledGraph(tuple(spec.views), rescale, model.prepare_sampled(data), sampler, data)


def prepare_sampled(model, data: HeteroData, fanout: Sequence[int], num_workers: int = 0,
                    rescale: bool = True) -> SampledGraph:
    """Check that ``model`` trains on sampled subgraphs with this ``fanout``
    (:meth:`~magnet_pyg.nn.protocol.Recommender.sampling_spec`, one fanout per layer) and build
    its :class:`~magnet_pyg.nn.subgraph.SampledGraph` (:func:`build_sampled_graph`)."""
    spec = model.sampling_spec()
    fanout = check_fanout(fanout, spec.num_layers)
    return build_sampled_graph(model, spec, data, fanout, num_workers, rescale)


def sampled_loss(model, graph: SampledGraph, batch: SampledBatch) -> Tuple[Tensor, Logs]:
    """Training loss of ``model`` on a sampled mini-batch
    (:meth:`~magnet_pyg.nn.protocol.Recommender.sampled_loss`)."""
    return model.sampled_loss(graph, batch)
