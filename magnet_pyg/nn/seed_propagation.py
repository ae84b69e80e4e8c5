r"""LightGCN propagation over a sampled subgraph restricted to what the seeds need
(MAGNET Section 3.2.3, the sampled counterpart of Eq. 4-6).

A sampled batch's loss reads the propagated embeddings of its seeds only (its users,
positives and negatives). Layer :math:`\ell` of an ``L``-layer propagation therefore only has
to update the nodes within :math:`L - \ell` hops of a seed, :math:`R_\ell`, from the previous
layer's rows :math:`R_{\ell-1}` (:math:`R_0`: every node of the subgraph), and the layer mean
(Eq. 5) only the seeds:

.. math::
    \mathbf X_\ell = A_\ell\,\mathbf X_{\ell-1}, \quad
    A_\ell \in \mathbb R^{|R_\ell| \times |R_{\ell-1}|}, \qquad
    \mathbf z_S = \tfrac{1}{L+1}\sum_{\ell=0}^{L} \mathbf X_\ell[S].

:func:`propagation_plan` builds the matrices :math:`A_\ell` (and their transposes for the
backward pass) of each view from the sampled subgraph alone, so that the neighbour sampler can
build them in its worker processes along with the subgraph
(:class:`~magnet_pyg.train.sampled.SubgraphSampler`); :func:`encode_seeds` runs the encoder
on them. The entries of every matrix are those of
:func:`~magnet_pyg.nn.subgraph.propagate_subgraph` (weights of
:func:`~magnet_pyg.nn.subgraph.view_subgraph`, rows in the same entry order), without the
rows that cannot reach a seed: each seed's embedding is the one of
:func:`~magnet_pyg.nn.subgraph.encode_batch`, bit for bit, at a fraction of the cost (the
``[N_sub, d]`` products, sums and their gradients of the unrestricted propagation dominate a
sampled step on large graphs).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .subgraph import VIEW_RELATIONS, SampledBatch, _order, encode_batch, hop_levels, view_subgraph

__all__ = ["LayerMatrices", "ViewPlan", "PropagationPlan", "propagation_plan", "encode_seeds"]


def _csr(crow: Tensor, col: Tensor, value: Tensor, shape: Tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, value, shape, check_invariants=False)


def _crow(row: Tensor, num_rows: int) -> Tensor:
    crow = torch.zeros(num_rows + 1, dtype=torch.long, device=row.device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=num_rows), 0)
    return crow


@dataclass
class LayerMatrices:
    """CSR parts of one layer's ``[n_out, n_in]`` matrix :math:`A_\\ell` (``crow``, ``col``,
    ``value``) and of its transpose (``crow_t``, ``col_t``, ``value_t``)."""
    crow: Tensor
    col: Tensor
    value: Tensor
    crow_t: Tensor
    col_t: Tensor
    value_t: Tensor
    num_out: int
    num_in: int

    def matrix(self) -> Tensor:
        """:math:`A_\\ell` as a sparse CSR tensor."""
        return _csr(self.crow, self.col, self.value, (self.num_out, self.num_in))

    def matrix_t(self) -> Tensor:
        """:math:`A_\\ell^\\top` as a sparse CSR tensor."""
        return _csr(self.crow_t, self.col_t, self.value_t, (self.num_in, self.num_out))

    def matrices(self) -> Tuple[Tensor, Tensor]:
        """``(A, A^T)`` as sparse CSR tensors (sharing these parts)."""
        return self.matrix(), self.matrix_t()

    def to(self, device, non_blocking: bool = False) -> "LayerMatrices":
        mv = lambda t: t.to(device, non_blocking=non_blocking)
        return LayerMatrices(mv(self.crow), mv(self.col), mv(self.value), mv(self.crow_t),
                             mv(self.col_t), mv(self.value_t), self.num_out, self.num_in)

    def pin_memory(self) -> "LayerMatrices":
        return LayerMatrices(self.crow.pin_memory(), self.col.pin_memory(), self.value.pin_memory(),
                             self.crow_t.pin_memory(), self.col_t.pin_memory(),
                             self.value_t.pin_memory(), self.num_out, self.num_in)


@dataclass
class ViewPlan:
    """The ``L`` layers of one view and, per layer ``l = 1..L-1``, the positions of the seeds
    among that layer's rows :math:`R_\\ell` (the rows of layer ``L`` are the seeds, in order)."""
    layers: List[LayerMatrices]
    seed_rows: List[Tensor]

    def to(self, device, non_blocking: bool = False) -> "ViewPlan":
        return ViewPlan([m.to(device, non_blocking) for m in self.layers],
                        [t.to(device, non_blocking=non_blocking) for t in self.seed_rows])

    def pin_memory(self) -> "ViewPlan":
        return ViewPlan([m.pin_memory() for m in self.layers], [t.pin_memory() for t in self.seed_rows])


@dataclass
class PropagationPlan:
    """What :func:`encode_seeds` multiplies for one sampled batch: a :class:`ViewPlan` per view,
    for ``num_layers`` layers and the edge weights of ``rescale``. Layer 1 reads the
    ``[U + I, d]`` embedding table itself: its columns (the rows of its transpose) are the
    global node ids (users ``0..U-1``, items ``U..U+I-1``). ``seeds`` are the batch's
    :meth:`~magnet_pyg.nn.subgraph.SampledBatch.seeds` (local rows), ``seed_ids`` their
    global ids."""
    views: Dict[str, ViewPlan]
    num_layers: int
    rescale: bool
    num_users: int
    num_items: int
    seeds: Tensor
    seed_ids: Tensor

    def covers(self, views: Sequence[str], num_layers: int, rescale: bool, num_users: int,
               num_items: int) -> bool:
        """Whether the plan serves these views, layers, rescaling and embedding table."""
        return (int(num_layers) == self.num_layers and bool(rescale) == self.rescale
                and (int(num_users), int(num_items)) == (self.num_users, self.num_items)
                and all(v in self.views for v in views))

    def _apply(self, fn) -> "PropagationPlan":
        return PropagationPlan({v: fn(p) for v, p in self.views.items()}, self.num_layers,
                               self.rescale, self.num_users, self.num_items, fn(self.seeds),
                               fn(self.seed_ids))

    def to(self, device, non_blocking: bool = False) -> "PropagationPlan":
        return self._apply(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "PropagationPlan":
        return self._apply(lambda x: x.pin_memory())


def _stable_order(key: Tensor) -> Tensor:
    """Stable ascending order of a non-negative integer key (sorted as 32 bits when it fits)."""
    if key.numel() and int(key.max()) < 2 ** 31:
        key = key.to(torch.int32)
    return torch.sort(key, stable=True)[1]


def _view_plan(edge_index: Tensor, weight: Tensor, node_ids: Tensor, num_global: int, seeds: Tensor,
               num_layers: int, forward: Tensor, backward_1: Tensor) -> ViewPlan:
    """The :class:`ViewPlan` of one view's edges, given their (destination, source) order
    ``forward`` and, for layer 1, their (global source id, destination) order ``backward_1``."""
    src, dst = edge_index
    num_nodes = node_ids.numel()
    # hop distance of every node to the seeds, exact up to L - 1 (farther: L)
    level = hop_levels(num_nodes, edge_index, seeds, num_layers - 1)
    dst_level = level.index_select(0, dst)
    layers, seed_rows = [], []
    prev: Optional[Tensor] = None          # positions in R_{l-1} (None: R_0, every node)
    num_in = num_nodes
    for l in range(1, num_layers + 1):
        keep = level <= num_layers - l    # R_l
        pos = torch.cumsum(keep, 0) - 1
        num_out = int(keep.sum())
        into = dst_level <= num_layers - l   # the edges into R_l (their sources lie in R_{l-1})
        every = bool(into.all())
        e_f = forward if every else forward[into.index_select(0, forward)]
        row_f, col_f = pos.index_select(0, dst.index_select(0, e_f)), src.index_select(0, e_f)
        if prev is None:                  # layer 1 reads the embedding table's rows
            e_b = backward_1 if every else backward_1[into.index_select(0, backward_1)]
            col_f, row_b = node_ids.index_select(0, col_f), node_ids.index_select(0, src.index_select(0, e_b))
            num_in = num_global
        else:                             # rows of R_{l-1}, in the order of their local ids
            e_b = e_f.index_select(0, _stable_order(col_f))
            col_f, row_b = prev.index_select(0, col_f), prev.index_select(0, src.index_select(0, e_b))
        col_b = pos.index_select(0, dst.index_select(0, e_b))
        layers.append(LayerMatrices(_crow(row_f, num_out), col_f, weight.index_select(0, e_f),
                                    _crow(row_b, num_in), col_b, weight.index_select(0, e_b),
                                    num_out, num_in))
        if l < num_layers:
            seed_rows.append(pos.index_select(0, seeds))
        prev, num_in = pos, num_out
    return ViewPlan(layers, seed_rows)


def propagation_plan(batch: SampledBatch, views: Sequence[str], num_layers: int, rescale: bool,
                     num_users: int, num_items: int) -> PropagationPlan:
    """The :class:`PropagationPlan` of ``batch`` (see the module docstring) for an embedding
    table of ``num_users + num_items`` rows: the edges and weights of each view
    (:func:`~magnet_pyg.nn.subgraph.view_subgraph`), ordered as in
    :func:`~magnet_pyg.nn.subgraph.propagate_subgraph` (the observed view's entries being a
    prefix of the augmented view's, both share one sort), restricted layer by layer to the
    rows that reach a seed."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    sub = batch.subgraph
    n = batch.num_sub_users + int(sub["item"].num_nodes)
    seeds = batch.seeds()
    node_ids = batch.node_ids(num_users)
    edges = {v: view_subgraph(sub, v, rescale) for v in views}

    def orders(ei: Tensor) -> Tuple[Tensor, Tensor]:
        forward = _order(ei[1], ei[0], n)
        return forward, forward.index_select(
            0, _stable_order(node_ids.index_select(0, ei[0].index_select(0, forward))))

    shared: Dict[str, Tuple[Tensor, Tensor]] = {}
    if "ui" in edges and "uig" in edges:
        (ei_a, _), (ei_b, _) = edges["ui"], edges["uig"]
        e = ei_a.size(1)
        if ei_b.size(1) >= e and torch.equal(ei_b[:, :e], ei_a):
            p_f, p_b = orders(ei_b)
            shared = {"ui": (p_f[p_f < e], p_b[p_b < e]), "uig": (p_f, p_b)}
    plans = {}
    for v, (ei, w) in edges.items():
        p_f, p_b = shared.get(v) or orders(ei)
        plans[v] = _view_plan(ei, w, node_ids, num_users + num_items, seeds, num_layers, p_f, p_b)
    return PropagationPlan(plans, int(num_layers), bool(rescale), int(num_users), int(num_items),
                           seeds, node_ids.index_select(0, seeds))


def _mm(a: Tensor, x: Tensor) -> Tensor:
    """``a @ x`` for a sparse CSR ``a``, written straight into its result (``torch.sparse.mm``
    fills a zero matrix and copies it into the result first; the product is the same)."""
    out = torch.empty(a.size(0), x.size(1), dtype=x.dtype, device=x.device)
    return torch.addmm(out, a, x, beta=0, out=out)


class _SeedPropagation(torch.autograd.Function):
    r"""The layers and layer means of :func:`encode_seeds` for every view, reading the layer-0
    rows straight from the ``[U + I, d]`` embedding table (layer 1 multiplies the table, no
    ``[N_sub, d]`` gather), and writing the table's gradient in one product per view. It adds
    the gradient contributions in the order in which autograd adds them for
    :func:`~magnet_pyg.nn.subgraph.encode_batch` (per view, the augmented one first: the
    layer-0 rows of the layer mean, then :math:`A_1^\top \mathbf g_1`), so that the gradient
    is bit-identical to it."""

    @staticmethod
    def forward(ctx, weight: Tensor, plan: "PropagationPlan",  # type: ignore[override]
                views: Tuple[str, ...]) -> Tuple[Tensor, ...]:
        num_layers = plan.num_layers
        x0_seeds = weight.index_select(0, plan.seed_ids)
        outs = []
        for v in views:
            vp = plan.views[v]
            x, out = weight, x0_seeds
            for l, layer in enumerate(vp.layers):
                x = _mm(layer.matrix(), x)
                out = out + (x if l == num_layers - 1 else x.index_select(0, vp.seed_rows[l]))
            outs.append(out / (num_layers + 1))
        ctx.plan, ctx.views = plan, views
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None
        plan, num_layers = ctx.plan, ctx.plan.num_layers
        grad_weight: Optional[Tensor] = None              # [U + I, d]
        for v, grad in reversed(list(zip(ctx.views, grads))):
            vp = plan.views[v]
            grad_out = grad / (num_layers + 1)
            grad_x = grad_out                             # layer L: the seeds
            for l in range(num_layers - 1, 0, -1):        # layers L-1..1, rows R_l
                grad_x = _mm(vp.layers[l].matrix_t(), grad_x)
                grad_x.index_add_(0, vp.seed_rows[l - 1], grad_out)
            if grad_weight is None:
                grad_weight = _mm(vp.layers[0].matrix_t(), grad_x).index_add_(0, plan.seed_ids, grad_out)
            else:   # (previous + layer-0 rows) + A_1^T g_1, the product summed before it is added
                grad_weight.index_add_(0, plan.seed_ids, grad_out)
                torch.addmm(grad_weight, vp.layers[0].matrix_t(), grad_x, out=grad_weight)
        return grad_weight, None, None


def encode_seeds(encoder, batch: SampledBatch, views: Sequence[str] = ("ui",), rescale: bool = True
                 ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""Dual-view encoder (Eq. 4-6) of :class:`~magnet_pyg.nn.DualViewEncoder` on the seeds of
    ``batch``: the rows :meth:`~magnet_pyg.nn.subgraph.SampledBatch.seeds` of
    :func:`~magnet_pyg.nn.subgraph.encode_batch`, and the gradient of the embedding table, bit
    for bit (index the rows with :meth:`~magnet_pyg.nn.subgraph.SampledBatch.seed_index`).
    Uses the batch's :attr:`~magnet_pyg.nn.subgraph.SampledBatch.plan` when it covers
    ``views``, the encoder's layers and ``rescale``, else builds one (:func:`propagation_plan`).
    An encoder with ``propagation="lgconv"`` goes through
    :func:`~magnet_pyg.nn.subgraph.encode_batch`.

    Returns:
        ``(z, z_ui, z_uig)``, each ``[S, d]``; ``z_uig`` is ``None`` and ``z`` is ``z_ui`` for
        one view.
    """
    unknown = [v for v in views if v not in VIEW_RELATIONS]
    if unknown:
        raise ValueError(f"unknown views {unknown}, expected some of {sorted(VIEW_RELATIONS)}")
    num_layers = encoder.num_layers
    if encoder.propagation != "spmm" or num_layers == 0:
        seeds = batch.seeds()
        return tuple(None if z is None else z[seeds] for z in encode_batch(encoder, batch, views, rescale))
    weight = encoder.embedding.weight
    num_users, num_items = encoder.num_users, weight.size(0) - encoder.num_users
    plan = batch.plan
    if plan is None or not plan.covers(views, num_layers, rescale, num_users, num_items):
        plan = propagation_plan(batch, views, num_layers, rescale, num_users, num_items)
    zs = _SeedPropagation.apply(weight, plan, tuple(views))
    if len(zs) == 1:
        return zs[0], zs[0], None
    return 0.5 * (zs[0] + zs[1]), zs[0], zs[1]
