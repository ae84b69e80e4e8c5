r"""FREEDOM (Zhou and Shen, ACM MM 2023, "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation"), plus the small helpers the peer models share.

Helpers (used by :mod:`~magnet_pyg.models.anchorrec`, :mod:`~magnet_pyg.models.crane` and
:mod:`~magnet_pyg.models.recgoat` too):

* :func:`require_modalities` refuses datasets with fewer than two content modalities;
* :func:`knn_edge_index` turns :func:`magnet_pyg.graph.knn.knn_search` (exact torch top-k
  cosine, :math:`O(N^2 d)` once, chunked) into an edge list, optionally with self neighbours;
* :func:`knn_normalized_adjacency` turns it into FREEDOM's frozen, normalised item-item matrix.

"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import modality_features, modality_names, num_items, num_users, split_edge_index
from ..nn.adjacency import _coalesced_csr, bipartite_normalized_adjacency, sparse_mm, transpose_csr
from ..nn.dual_view import DualViewEncoder
from ..nn.losses import bpr_loss, embedding_l2
from .base import Logs, Recommender, dot_score

__all__ = ["FREEDOM", "FreedomGraph", "require_modalities", "knn_edge_index",
           "knn_normalized_adjacency", "degree_edge_probability"]

#: models that need no content modality (named in the error of :func:`require_modalities`)
ID_ONLY_MODELS = ("bpr", "lightgcn")


# ----------------------------------------------------------------------------- helpers
def require_modalities(data_or_names, model: str, minimum: int = 2) -> List[str]:
    """Return the dataset's modality names, or raise a :class:`ValueError` that names the models
    which work without content features when there are fewer than ``minimum``."""
    names = (modality_names(data_or_names) if isinstance(data_or_names, HeteroData)
             else list(data_or_names))
    if len(names) < minimum:
        raise ValueError(
            f"{model} needs at least {minimum} content modalities (item feature matrices), but the "
            f"dataset has {len(names)}: {names}. Models that work without content features: "
            f"{', '.join(ID_ONLY_MODELS)}")
    return names


def check_in_channels(in_channels: Mapping[str, int], data: HeteroData, model: str) -> Dict[str, Tensor]:
    """The dataset's ``{name: [I, d_name]}`` features, checked against the model's ``in_channels``."""
    feats = modality_features(data)
    require_modalities(list(feats), model)
    if list(feats) != list(in_channels) or any(feats[m].size(1) != int(in_channels[m]) for m in feats):
        raise ValueError(f"{model} was built for modalities {dict(in_channels)}, the dataset has "
                         f"{ {m: int(x.size(1)) for m, x in feats.items()} }")
    return feats


@torch.no_grad()
def knn_edge_index(x: Tensor, k: int, include_self: bool = True) -> Tensor:
    r"""Exact top-``k`` cosine neighbours of every row of ``x`` as an edge list, via
    :func:`magnet_pyg.graph.knn.knn_search` (``torch`` backend: exact, chunked, ties broken by
    the smaller index, zero-norm rows without neighbours).

    Args:
        x: ``[N, d]`` features.
        k: neighbours per row (clipped to ``N`` or ``N - 1``).
        include_self: make row ``n`` one of its own ``k`` neighbours (FREEDOM and LATTICE take
            the plain top-``k`` of the similarity matrix, whose diagonal is the maximum): the
            row itself plus its top ``k - 1`` other rows. Otherwise the top ``k`` other rows.

    Returns:
        ``[2, E]`` long tensor of (row, neighbour) pairs, row-major, on ``x.device``
        (``E = N k`` unless rows have zero norm).
    """
    from ..graph.knn import knn_search
    n = x.size(0)
    k = min(int(k), n if include_self else n - 1)
    if k < 1:
        raise ValueError(f"k must be >= 1 (N = {n}, include_self={include_self})")
    rows = torch.arange(n, device=x.device)
    parts = [torch.stack([rows, rows])] if include_self else []
    others = k - 1 if include_self else k
    if others > 0:
        index, _ = knn_search(x.float(), others, backend="torch", device=x.device, progress=False)
        index = index.to(x.device)
        row = rows.unsqueeze(1).expand_as(index)
        ok = index >= 0
        parts.append(torch.stack([row[ok], index[ok]]))
    ei = torch.cat(parts, dim=1)
    return ei[:, torch.argsort(ei[0] * n + ei[1], stable=True)] if include_self else ei


def knn_normalized_adjacency(x: Tensor, k: int, include_self: bool = True) -> Tensor:
    r"""FREEDOM's frozen modality graph :math:`S^m` (its Eq. 1-3, as in LATTICE's code).

    The binary top-``k`` graph :math:`A` (:math:`a_{ij} = 1` iff ``j`` is among the ``k``
    most cosine-similar items of ``i``) normalised as :math:`D^{-1/2} A D^{-1/2}` with
    :math:`D` the **row** degree, exactly as FREEDOM's ``compute_normalized_laplacian``. With
    binary top-``k`` rows every degree is ``k``, so every non-zero equals :math:`1/k`.

    Returns:
        ``[N, N]`` ``torch.sparse_csr`` tensor (not symmetric).
    """
    ei = knn_edge_index(x, k, include_self)
    n = x.size(0)
    w = torch.ones(ei.size(1), dtype=torch.float32, device=x.device)
    deg = torch.zeros(n, device=x.device).scatter_add_(0, ei[0], w)
    dis = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
    value = dis[ei[0]] * dis[ei[1]]
    return _coalesced_csr(ei[0], ei[1], value, (n, n))


def degree_edge_probability(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    r""":math:`p_{ui} \propto 1/\sqrt{d_u d_i}` for every training edge (FREEDOM Eq. 6): the
    normalised-adjacency value of the edge, FREEDOM's sampling weight for edges to **keep**."""
    u, i = edge_index[0], edge_index[1]
    du = torch.bincount(u, minlength=num_users).float()
    di = torch.bincount(i, minlength=num_items).float()
    return (du[u] * di[i]).rsqrt()


# ----------------------------------------------------------------------------- FREEDOM
@dataclass
class FreedomGraph:
    """What :meth:`FREEDOM.prepare` builds once (``train_adj`` is replaced every epoch)."""
    adj: Tensor                  # [U+I, U+I] full normalised training graph (inference)
    train_adj: Tensor            # [U+I, U+I] this epoch's pruned graph (training)
    mm_adj: Tensor               # [I, I] frozen weighted item-item graph S
    mm_adj_t: Tensor             # its transpose (fast backward)
    features: Dict[str, Tensor]  # {m: [I, d_m]} raw item features (frozen)
    edge_index: Tensor           # [2, E] training (user, item) pairs, on the CPU
    edge_prob: Tensor            # [E] 1/sqrt(d_u d_i), on the CPU


class FREEDOM(Recommender):
    r"""FREEDOM: a frozen item-item graph plus a denoised (pruned) user-item graph.

    * **Frozen item-item graph** (Eq. 1-4). For each content modality :math:`m` the binary
      top-``k`` cosine kNN graph of the raw features, normalised (:func:`knn_normalized_adjacency`),
      combined as :math:`S = \sum_m w_m S^m` (FREEDOM: :math:`0.1\,S^{v} + 0.9\,S^{t}`; here any
      modalities, weights ``mm_weights`` renormalised to sum to 1, default equal), built once.
      Item ID embeddings are propagated over it for ``num_mm_layers`` layers:
      :math:`\tilde{\mathbf h}_i = (S^{L_m} \mathbf e^{(0)}_I)_i`, ``[I, d]``.
    * **Degree-sensitive edge pruning** (Eq. 5-7). Before every epoch
      (:meth:`on_epoch_start`), :math:`\lfloor (1-\rho)|\mathcal E| \rfloor` training edges are
      sampled without replacement with probability :math:`\propto 1/\sqrt{d_u d_i}` (``rho`` =
      ``edge_dropout``, FREEDOM uses 0.8-0.9, i.e. keeps 10-20 % of the edges); the kept graph is
      re-normalised. Randomness comes only from the trainer's per-epoch generator, so a resumed
      run prunes exactly as an uninterrupted one. Inference uses the full graph.
    * **LightGCN** (Eq. 8) over the (pruned) user-item graph, ``num_ui_layers`` layers, layer
      mean: :math:`(\bar{\mathbf h}_u, \bar{\mathbf h}_i)`, each ``[*, d]``.
    * **Fusion** (Eq. 9): :math:`\mathbf z_u = \bar{\mathbf h}_u`,
      :math:`\mathbf z_i = \bar{\mathbf h}_i + \tilde{\mathbf h}_i`; score
      :math:`\mathbf z_u^\top \mathbf z_i`.
    * **Loss** (Eq. 10-11): :math:`\mathcal L = \mathcal L_{BPR}(\mathbf z_u, \mathbf z_i) +
      \lambda \sum_m \mathcal L_{BPR}(\mathbf z_u, W_m \mathbf x_i^m + \mathbf b_m)`, the second term
      scoring users against the projected raw features (``feat_weight`` = FREEDOM's
      ``reg_weight``, grid 0-1e-3), plus an optional batch L2 on the layer-0 embeddings
      (``reg_weight``, 0 in FREEDOM).

    Departure: FREEDOM fine-tunes the raw feature tables (``nn.Embedding.from_pretrained(...,
    freeze=False)``); here raw features stay frozen inside the prepared graph and only the
    projections :math:`W_m` learn, so the model's parameters do not depend on the dataset
    object and ``prepare`` builds no parameter.

    Defaults are FREEDOM's (k = 10, 1 item-graph layer, 2 LightGCN layers, prune 80 %, lr 1e-3,
    batch 2048) with equal modality weights; on TikTok's validation split (1 seed) the
    alternatives tried (prune 90 %, feature-BPR weight 0 / 1e-3 / 1e-2, weights 0.1/0.9 and
    0.9/0.1, batch 1024) were all within 0.005 Recall@20 of them.

    Args:
        num_users: ``U``.
        num_items: ``I``.
        in_channels: ``{modality: feature size}`` in the dataset's modality order (>= 2).
        embedding_dim: ``d``.
        num_ui_layers: LightGCN layers on the user-item graph (2).
        num_mm_layers: propagation layers on the item-item graph (1).
        knn_k: neighbours per item in each modality graph (10).
        mm_weights: one weight per modality for :math:`S` (default equal), renormalised.
        edge_dropout: fraction of training edges pruned each epoch (0.8).
        feat_weight: weight :math:`\lambda` of the projected-feature BPR terms.
        reg_weight: batch L2 on the layer-0 ID embeddings (0, as FREEDOM).
    """

    default_patience = 20
    #: training defaults used by the CLI (``--lr`` / ``--batch-size`` override them)
    default_train = {"lr": 1e-3, "batch_size": 2048}

    def __init__(self, num_users: int, num_items: int, in_channels: Mapping[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, num_mm_layers: int = 1,
                 knn_k: int = 10, mm_weights: Optional[Sequence[float]] = None,
                 edge_dropout: float = 0.8, feat_weight: float = 1e-4, reg_weight: float = 0.0):
        super().__init__()
        self.modalities = require_modalities(list(in_channels), "freedom")
        if mm_weights is None:
            mm_weights = [1.0] * len(self.modalities)
        mm_weights = [float(w) for w in mm_weights]
        if len(mm_weights) != len(self.modalities) or min(mm_weights) < 0 or sum(mm_weights) <= 0:
            raise ValueError(f"mm_weights must be {len(self.modalities)} non-negative numbers "
                             f"(one per modality {self.modalities}), got {mm_weights}")
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        if knn_k < 1 or num_mm_layers < 0:
            raise ValueError("knn_k must be >= 1 and num_mm_layers >= 0")
        total = sum(mm_weights)
        self.mm_weights = [w / total for w in mm_weights]
        self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
        self.num_users, self.num_items = num_users, num_items
        self.num_mm_layers, self.knn_k = num_mm_layers, knn_k
        self.edge_dropout, self.feat_weight, self.reg_weight = edge_dropout, feat_weight, reg_weight
        self.encoder = DualViewEncoder(num_users, num_items, embedding_dim, num_ui_layers)
        self.proj = torch.nn.ModuleDict({m: torch.nn.Linear(c, embedding_dim)
                                         for m, c in self.in_channels.items()})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        for lin in self.proj.values():
            torch.nn.init.xavier_uniform_(lin.weight)
            torch.nn.init.zeros_(lin.bias)

    # -- graph ---------------------------------------------------------------------------
    def prepare(self, data: HeteroData) -> FreedomGraph:
        device = self.encoder.embedding.weight.device
        feats = check_in_channels(self.in_channels, data, "freedom")
        U, I = num_users(data), num_items(data)
        ei = split_edge_index(data, "train").cpu()
        adj = bipartite_normalized_adjacency(ei, U, I).to(device)
        mm = None
        for w, m in zip(self.mm_weights, self.modalities):
            s = knn_normalized_adjacency(feats[m].to(device), self.knn_k).to_sparse_coo()
            mm = s * w if mm is None else mm + s * w
        mm = mm.coalesce().to_sparse_csr()
        return FreedomGraph(adj=adj, train_adj=adj, mm_adj=mm, mm_adj_t=transpose_csr(mm),
                            features={m: x.to(device) for m, x in feats.items()},
                            edge_index=ei, edge_prob=degree_edge_probability(ei, U, I))

    def prune(self, graph: FreedomGraph, generator: torch.Generator) -> Tensor:
        r"""Degree-sensitive pruning (FREEDOM Eq. 5-7): the normalised adjacency of
        :math:`\lfloor(1-\rho)|\mathcal E|\rfloor` edges drawn without replacement,
        :math:`P(u,i) \propto 1/\sqrt{d_u d_i}`."""
        n_keep = max(1, int(graph.edge_index.size(1) * (1.0 - self.edge_dropout)))
        idx = torch.multinomial(graph.edge_prob, n_keep, replacement=False, generator=generator)
        kept = graph.edge_index[:, idx]
        return bipartite_normalized_adjacency(kept, self.num_users, self.num_items).to(graph.adj.device)

    def on_epoch_start(self, graph: FreedomGraph, epoch: int, generator: torch.Generator) -> FreedomGraph:
        if self.edge_dropout <= 0:
            return graph
        return replace(graph, train_adj=self.prune(graph, generator))

    # -- model ---------------------------------------------------------------------------
    def forward(self, adj: Tensor, graph: FreedomGraph) -> Tuple[Tensor, Tensor]:
        """``([U, d], [I, d])`` fused user and item embeddings over the user-item ``adj``."""
        e0 = self.encoder.embedding.weight
        h = e0[self.num_users:]
        for _ in range(self.num_mm_layers):
            h = sparse_mm(graph.mm_adj, h, adj_t=graph.mm_adj_t)
        zu, zi = self.encoder.split(self.encoder.propagate(adj))
        return zu, zi + h

    def projected_features(self, graph: FreedomGraph, items: Tensor) -> Dict[str, Tensor]:
        r""":math:`W_m \mathbf x_i^m + \mathbf b_m` for the given items, ``{m: [B, d]}``."""
        return {m: self.proj[m](graph.features[m][items]) for m in self.modalities}

    @staticmethod
    def feature_bpr_loss(u: Tensor, feat_pos: Dict[str, Tensor], feat_neg: Dict[str, Tensor]) -> Tensor:
        r"""FREEDOM Eq. 10's modality terms :math:`\sum_m \mathcal L_{BPR}(\mathbf z_u, W_m\mathbf x^m)`."""
        return sum(bpr_loss((u * feat_pos[m]).sum(-1), (u * feat_neg[m]).sum(-1)) for m in feat_pos)

    def loss(self, graph: FreedomGraph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        zu, zi = self(graph.train_adj, graph)
        u = zu[users]
        rec = bpr_loss((u * zi[pos]).sum(-1), (u * zi[neg]).sum(-1))
        feat = self.feature_bpr_loss(u, self.projected_features(graph, pos),
                                     self.projected_features(graph, neg))
        total = rec + self.feat_weight * feat
        logs = {"bpr": rec.detach(), "feat_bpr": feat.detach()}
        if self.reg_weight > 0:
            e0 = self.encoder.embedding.weight
            reg = embedding_l2(e0[users], e0[self.num_users + pos], e0[self.num_users + neg])
            total = total + self.reg_weight * reg
            logs["reg"] = reg.detach()
        return total, logs

    @torch.no_grad()
    def inference(self, graph: FreedomGraph) -> Tuple[Tensor, Tensor]:
        return self(graph.adj, graph)

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)
