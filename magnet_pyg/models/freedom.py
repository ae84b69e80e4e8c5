r"""FREEDOM (Zhou and Shen, ACM MM 2023, "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation").

Its building blocks are shared with the peer models and live below the models: the frozen
item-item graph in :mod:`magnet_pyg.graph.item_graph`, the degree-sensitive pruning in
:mod:`magnet_pyg.nn.pruning`, the fine-tuned feature tables in :mod:`magnet_pyg.nn.feature_tables`,
the ID-table initialisation in :mod:`magnet_pyg.nn.init` and the modality checks in
:mod:`magnet_pyg.data.modalities`.

The fidelity table against the authors' code is ``docs/fidelity.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.modalities import check_in_channels, require_modalities
from ..data.schema import num_items, num_users, split_edge_index
from ..graph.item_graph import item_graph_weights, modality_item_graph
from ..nn.adjacency import bipartite_normalized_adjacency, sparse_mm, transpose_csr
from ..nn.dual_view import DualViewEncoder
from ..nn.feature_tables import FeatureTables
from ..nn.init import xavier_user_item_
from ..nn.losses import triple_embedding_l2, bpr_loss
from ..nn.pruning import degree_edge_probability, degree_sensitive_prune
from .base import Logs, Recommender, dot_score
from .config import model_config

__all__ = ["FREEDOM", "FreedomGraph"]


# ----------------------------------------------------------------------------- FREEDOM
@dataclass
class FreedomGraph:
    """What :meth:`FREEDOM.prepare` builds once (``train_adj`` is replaced every epoch)."""
    adj: Tensor                  # [U+I, U+I] full normalised training graph (inference)
    train_adj: Tensor            # [U+I, U+I] this epoch's pruned graph (training)
    mm_adj: Tensor               # [I, I] frozen weighted item-item graph S
    mm_adj_t: Tensor             # its transpose (fast backward)
    features: Dict[str, Tensor]  # {m: [I, d_m]} raw item features (as loaded; frozen copy)
    edge_index: Tensor           # [2, E] training (user, item) pairs, on the CPU
    edge_prob: Tensor            # [E] 1/sqrt(d_u d_i), on the CPU


class FREEDOM(Recommender):
    r"""FREEDOM: a frozen item-item graph plus a denoised (pruned) user-item graph, following
    the authors' code (MMRec ``src/models/freedom.py`` with ``configs/model/FREEDOM.yaml`` and
    ``configs/overall.yaml``).

    * **Frozen item-item graph** (Eq. 1-4). For each content modality :math:`m` the binary
      top-``k`` cosine kNN graph of the raw features (self included), normalised
      (:func:`knn_normalized_adjacency`, every entry :math:`1/k`), combined as
      :math:`S = \sum_m w_m S^m` (:func:`item_graph_weights`: MMRec's :math:`0.1\,S^{v} +
      0.9\,S^{t}`, i.e. 0.1 on the image modality and the rest shared by the others; equal
      weights without an image modality; or ``mm_weights``), built once.
      Item ID embeddings are propagated over it for ``num_mm_layers`` layers:
      :math:`\tilde{\mathbf h}_i = (S^{L_m} \mathbf e^{(0)}_I)_i`, ``[I, d]``.
    * **Degree-sensitive edge pruning** (Eq. 5-7). Before every epoch
      (:meth:`on_epoch_start`, :func:`degree_sensitive_prune`),
      :math:`\lfloor (1-\rho)|\mathcal E| \rfloor` training edges are sampled without
      replacement with probability :math:`\propto 1/\sqrt{d_u d_i}` (``rho`` =
      ``edge_dropout`` = MMRec's ``dropout``, grid 0.8 / 0.9, i.e. keeps 20 % / 10 % of the
      edges); the kept graph is re-normalised. Randomness comes only from the trainer's
      per-epoch generator, so a resumed run prunes exactly as an uninterrupted one. Inference
      uses the full graph.
    * **LightGCN** (Eq. 8) over the (pruned) user-item graph, ``num_ui_layers`` layers, layer
      mean: :math:`(\bar{\mathbf h}_u, \bar{\mathbf h}_i)`, each ``[*, d]``.
    * **Fusion** (Eq. 9): :math:`\mathbf z_u = \bar{\mathbf h}_u`,
      :math:`\mathbf z_i = \bar{\mathbf h}_i + \tilde{\mathbf h}_i`; score
      :math:`\mathbf z_u^\top \mathbf z_i`.
    * **Loss** (Eq. 10-11): :math:`\mathcal L = \mathcal L_{BPR}(\mathbf z_u, \mathbf z_i) +
      \lambda \sum_m \mathcal L_{BPR}(\mathbf z_u, W_m \mathbf x_i^m + \mathbf b_m)` (batch
      means), the second term scoring users against the projected raw features
      (``feat_weight`` = MMRec's ``reg_weight``, grid 0 / 1e-5 / 1e-4 / 1e-3). No embedding
      L2 and no weight decay (``reg_weight`` here is an optional batch L2, 0 as in MMRec).
    * **Initialisation**: the user and item ID tables are Xavier-uniform each on its own
      (:func:`xavier_user_item_`, as MMRec's two ``nn.Embedding``), the projections
      :math:`W_m` keep PyTorch's default ``nn.Linear`` init, and the raw features are
      trainable copies (:class:`FeatureTables`, MMRec's ``from_pretrained(freeze=False)``)
      when ``finetune_features`` (default).

    Defaults equal MMRec's configuration: d = 64, k = 10, 1 item-graph layer, 2 LightGCN
    layers, prune 80 %, image weight 0.1, lr 1e-3, batch 2048, Adam without weight decay,
    early-stopping patience 20. MMRec grid-searches ``dropout`` x ``reg_weight`` on the
    validation split; one point of the grid is the default here (0.8, 1e-4).

    Departures (see ``docs/fidelity.md``): features of any number (>= 2) of modalities
    with any names (the image weight applies to a modality named ``image``); negatives are drawn
    by the package's trainer (uniform over all items, rejecting the user's training items;
    MMRec draws from the items seen in training); the CLI selects on ``--select-metric``
    (MMRec: Recall@20) and trains ``--epochs`` (MMRec: up to 1000).

    Args:
        num_users: ``U``.
        num_items: ``I``.
        in_channels: ``{modality: feature size}`` in the dataset's modality order (>= 2).
        embedding_dim: ``d`` (MMRec's ``embedding_size`` = ``feat_embed_dim``).
        num_ui_layers: LightGCN layers on the user-item graph (2).
        num_mm_layers: propagation layers on the item-item graph (1).
        knn_k: neighbours per item in each modality graph (10).
        mm_weights: one weight per modality for :math:`S`, renormalised (default: MMRec's
            0.1 image / rest shared, see :func:`item_graph_weights`).
        edge_dropout: fraction of training edges pruned each epoch (0.8).
        feat_weight: weight :math:`\lambda` of the projected-feature BPR terms (1e-4).
        reg_weight: batch L2 on the layer-0 ID embeddings (0, as MMRec).
        finetune_features: train the raw feature tables (MMRec); ``False`` keeps them frozen.
    """

    default_patience = 20
    sampling_unsupported_reason = ("its item-item graph propagation and the degree-sensitive pruning of "
                                   "the user-item graph (a new whole-graph draw every epoch) are defined "
                                   "on the full graphs")
    #: training defaults used by the CLI (``--lr`` / ``--batch-size`` override them)
    default_train = {"lr": 1e-3, "batch_size": 2048}

    def __init__(self, num_users: int, num_items: int, in_channels: Mapping[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, num_mm_layers: int = 1,
                 knn_k: int = 10, mm_weights: Optional[Sequence[float]] = None,
                 edge_dropout: float = 0.8, feat_weight: float = 1e-4, reg_weight: float = 0.0,
                 finetune_features: bool = True):
        super().__init__()
        self.modalities = require_modalities(list(in_channels), "freedom")
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
        if knn_k < 1 or num_mm_layers < 0:
            raise ValueError("knn_k must be >= 1 and num_mm_layers >= 0")
        self.mm_weights = item_graph_weights(self.modalities, mm_weights)
        self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
        self.num_users, self.num_items = num_users, num_items
        self.num_mm_layers, self.knn_k = num_mm_layers, knn_k
        self.edge_dropout, self.feat_weight, self.reg_weight = edge_dropout, feat_weight, reg_weight
        self.finetune_features = finetune_features
        self.encoder = DualViewEncoder(num_users, num_items, embedding_dim, num_ui_layers)
        self.proj = torch.nn.ModuleDict({m: torch.nn.Linear(c, embedding_dim)
                                         for m, c in self.in_channels.items()})
        self.feature_tables = FeatureTables(num_items, self.in_channels) if finetune_features else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        xavier_user_item_(self.encoder.embedding.weight, self.num_users)
        for lin in self.proj.values():
            lin.reset_parameters()  # PyTorch's default nn.Linear init, as MMRec's image_trs / text_trs
        if self.feature_tables is not None:
            self.feature_tables.reset_parameters()

    # -- graph ---------------------------------------------------------------------------
    def prepare(self, data: HeteroData) -> FreedomGraph:
        device = self.encoder.embedding.weight.device
        feats = {m: x.to(device) for m, x in check_in_channels(self.in_channels, data, "freedom").items()}
        U, I = num_users(data), num_items(data)
        ei = split_edge_index(data, "train").cpu()
        adj = bipartite_normalized_adjacency(ei, U, I).to(device)
        mm = modality_item_graph(feats, self.mm_weights, self.knn_k)
        if self.feature_tables is not None:
            self.feature_tables.load_(feats)
        return FreedomGraph(adj=adj, train_adj=adj, mm_adj=mm, mm_adj_t=transpose_csr(mm),
                            features=feats, edge_index=ei, edge_prob=degree_edge_probability(ei, U, I))

    def prune(self, graph: FreedomGraph, generator: torch.Generator) -> Tensor:
        r"""This epoch's pruned, re-normalised training graph (:func:`degree_sensitive_prune`)."""
        return degree_sensitive_prune(graph.edge_index, graph.edge_prob, self.num_users, self.num_items,
                                      self.edge_dropout, generator).to(graph.adj.device)

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

    def item_features(self, graph: FreedomGraph) -> Dict[str, Tensor]:
        """The raw item features the model uses, ``{m: [I, d_m]}`` (trainable or frozen)."""
        return self.feature_tables() if self.feature_tables is not None else graph.features

    def projected_features(self, graph: FreedomGraph, items: Tensor) -> Dict[str, Tensor]:
        r""":math:`W_m \mathbf x_i^m + \mathbf b_m` for the given items, ``{m: [B, d]}``."""
        feats = self.item_features(graph)
        return {m: self.proj[m](feats[m][items]) for m in self.modalities}

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
            reg = triple_embedding_l2(e0, self.num_users, users, pos, neg)
            total = total + self.reg_weight * reg
            logs["reg"] = reg.detach()
        return total, logs

    @torch.no_grad()
    def inference(self, graph: FreedomGraph) -> Tuple[Tensor, Tensor]:
        return self(graph.adj, graph)

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)


#: Hyper-parameters of :class:`FREEDOM`: its constructor's keyword arguments, with the
#: constructor's types and defaults (:func:`~magnet_pyg.models.config.model_config`).
FreedomConfig = model_config(FREEDOM, "FreedomConfig")
