r"""CRANE (arXiv 2601.11151, "Cross-Modal Attention Network with Dual Graph Learning in
Multimodal Recommendation"; seed 004), as the paper describes it.

The public code differs from the paper (it is FREEDOM plus one attention module that attends
across all items, :math:`O(I^2)`); this implementation follows the paper: attention runs
**per entity across its M modality tokens** (attention matrices ``[N, H, M, M]``), so its cost
is :math:`O(N M^2 d)`, linear in the number of users and items.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import num_items, num_users, split_edge_index, user_item_csr
from ..nn.adjacency import bipartite_normalized_adjacency, row_normalized, sparse_mm, transpose_csr
from ..nn.dual_view import DualViewEncoder
from ..nn.losses import bpr_loss, embedding_l2, view_infonce
from .base import Logs, Recommender, dot_score
from .freedom import check_in_channels, knn_normalized_adjacency, require_modalities

__all__ = ["CRANE", "CraneGraph", "RecursiveCrossModalAttention"]

PROFILES = ("sum", "mean")


class RecursiveCrossModalAttention(torch.nn.Module):
    r"""Recursive cross-modal attention (CRANE's RCA), per entity across its modalities.

    The ``M`` modality tokens of each entity, :math:`X^{(0)} \in \mathbb R^{N \times M \times d}`,
    are refined for ``R`` rounds with shared weights and residual updates (pre-norm):

    .. math::
        Y = \mathrm{LN}(X^{(r)}),\quad
        A^{(r)} = \mathrm{softmax}\Big(\frac{(Y W_Q)(Y W_K)^\top}{\sqrt{d/H}}\Big) \in \mathbb R^{N\times H\times M\times M},
        \quad X^{(r+1)} = X^{(r)} + (A^{(r)} Y W_V) W_O.

    Row ``n`` of :math:`A` is the ``M x M`` cross-modal correlation of entity ``n`` alone: no
    entity attends to another, so time and memory are :math:`O(R\,N M^2 d)`.

    Args:
        dim: token size ``d`` (divisible by ``num_heads``).
        num_rounds: ``R`` (3 in the paper; more degrades).
        num_heads: ``H``.
        dropout: dropout on the attention weights.

    Shapes:
        - **input:** ``[N, M, d]``.
        - **output:** ``[N, M, d]`` (and the ``R`` attention tensors ``[N, H, M, M]`` with
          ``return_attention=True``).
    """

    def __init__(self, dim: int, num_rounds: int = 3, num_heads: int = 1, dropout: float = 0.0):
        super().__init__()
        if num_rounds < 0 or num_heads < 1 or dim % num_heads:
            raise ValueError(f"need num_rounds >= 0 and num_heads >= 1 dividing dim={dim}")
        self.dim, self.num_rounds, self.num_heads, self.dropout = dim, num_rounds, num_heads, dropout
        self.norm = torch.nn.LayerNorm(dim)
        self.q = torch.nn.Linear(dim, dim, bias=False)
        self.k = torch.nn.Linear(dim, dim, bias=False)
        self.v = torch.nn.Linear(dim, dim, bias=False)
        self.out = torch.nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        for lin in (self.q, self.k, self.v, self.out):
            torch.nn.init.xavier_uniform_(lin.weight)
        torch.nn.init.zeros_(self.out.bias)

    def _heads(self, x: Tensor) -> Tensor:  # [N, M, d] -> [N, H, M, d/H]
        n, m, _ = x.shape
        return x.view(n, m, self.num_heads, -1).transpose(1, 2)

    def round(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """One round: ``(X^{(r+1)} [N, M, d], A^{(r)} [N, H, M, M])``."""
        n, m, d = x.shape
        y = self.norm(x)
        q, k, v = self._heads(self.q(y)), self._heads(self.k(y)), self._heads(self.v(y))
        # [N, H, M, M]; broadcasting instead of N tiny batched matmuls (much faster for small M)
        scores = (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1) / math.sqrt(d // self.num_heads)
        att = F.dropout(torch.softmax(scores, dim=-1), p=self.dropout, training=self.training)
        upd = (att.unsqueeze(-1) * v.unsqueeze(2)).sum(3).transpose(1, 2).reshape(n, m, d)
        return x + self.out(upd), att

    def forward(self, x: Tensor, return_attention: bool = False):
        if x.dim() != 3:
            raise ValueError(f"expected [N, M, d] tokens, got {tuple(x.shape)}")
        atts = []
        for _ in range(self.num_rounds):
            x, att = self.round(x)
            atts.append(att)
        return (x, atts) if return_attention else x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_rounds={self.num_rounds}, num_heads={self.num_heads}"


@dataclass
class CraneGraph:
    """What :meth:`CRANE.prepare` builds once."""
    adj: Tensor                        # [U+I, U+I] normalised training graph G_UI
    item_adj: Tensor                   # [I, I] item-item semantic graph G_II
    item_adj_t: Tensor
    item_features: Dict[str, Tensor]   # {m: [I, d_m]}
    user_features: Dict[str, Tensor]   # {m: [U, d_m]} user multimodal profiles


class CRANE(Recommender):
    r"""CRANE: recursive cross-modal attention and dual (user-item + item-item) graph learning.

    * **User multimodal profiles**: :math:`\mathbf x^m_u = \sum_{i\in\mathcal N_u}\mathbf x^m_i`
      (``profile="sum"``, the paper's choice; ``"mean"`` is available), built once. With
      ``normalize_features`` (default) the item features are row-L2-normalised first, so that
      the content tokens start on the scale of the ID embeddings instead of that of the raw
      features (TikTok's have norms around 30).
    * **Tokens and RCA**: every user and item gets ``M`` tokens
      :math:`W_m\mathbf x^m + \mathbf b_m \in \mathbb R^d` (projections shared by users and
      items), refined by :class:`RecursiveCrossModalAttention` (``num_rounds`` R = 3) and
      averaged over modalities into the semantic input :math:`\mathbf s \in \mathbb R^{(U+I)\times d}`.
    * **Behavioural view** (:math:`\mathcal G_{UI}`, ``num_ui_layers`` = 2): LightGCN over the
      ID embeddings, :math:`\mathbf e_u, \mathbf e_i`.
    * **Semantic view** (:math:`\mathcal G_{II}`, ``num_ii_layers`` = 1): the frozen item-item kNN
      graph of the raw features (:math:`S = \frac1M\sum_m S^m`, FREEDOM-style, ``knn_k``),
      :math:`\mathbf h_i = (S^{L}\mathbf s_I)_i`; users keep their refined profile,
      :math:`\mathbf h_u = \mathbf s_u`. With ``id_on_item_graph`` the layer-0 item ID
      embeddings are propagated over :math:`\mathcal G_{II}` too,
      :math:`\mathbf h_i = (S^{L}(\mathbf s_I + \mathbf e^{(0)}_I))_i` (as FREEDOM, on which
      CRANE's public code is built).
    * **Prediction**: :math:`\mathbf z = \mathbf e + \mathbf h`, score :math:`\mathbf z_u^\top\mathbf z_i`.
    * **Loss**: :math:`\mathcal L_{BPR} + \lambda_{cl}\big(\mathrm{InfoNCE}(\mathbf e_U, \mathbf h_U) +
      \mathrm{InfoNCE}(\mathbf e_I, \mathbf h_I)\big) + \lambda_{reg}\mathcal L_{L2}`, the InfoNCE
      terms over the batch's unique users and unique positive items, positives =
      the two views of the same node (:func:`~magnet_pyg.nn.view_infonce`, temperature ``tau``).

    The only super-linear step is building the item kNN graph once (exact top-k, chunked;
    the same as FREEDOM's). In training, the semantic view is computed for the batch's users
    only (plus all items), which gives the same rows as the full computation.

    Defaults (picked on TikTok's validation split, 1-2 seeds): R = 3, sum profiles,
    :math:`\lambda_{cl} = 0.01`, :math:`\tau = 0.2`, lr 1e-3, batch 1024. On TikTok,
    :math:`\lambda_{cl} = 0.1` collapses accuracy (Recall@20 0.018), R = 1 and mean profiles
    roughly halve it (0.032 / 0.031 vs 0.059 at batch 2048), which matches the paper's
    ablations (R = 3, summation).

    Args:
        num_users: ``U``.
        num_items: ``I``.
        in_channels: ``{modality: feature size}`` (>= 2 modalities).
        embedding_dim: ``d``.
        num_ui_layers: layers on :math:`\mathcal G_{UI}` (2).
        num_ii_layers: layers on :math:`\mathcal G_{II}` (1).
        num_rounds: RCA rounds R (3).
        num_heads: RCA heads (1).
        knn_k: neighbours per item in each modality graph (10).
        cl_weight: :math:`\lambda_{cl}`.
        tau: InfoNCE temperature.
        reg_weight: batch L2 on the layer-0 ID embeddings.
        profile: ``"sum"`` or ``"mean"`` user profiles.
        attention_dropout: dropout on the RCA attention weights.
        normalize_features: row-L2-normalise the raw item features (the kNN graph is cosine
            either way).
        id_on_item_graph: also propagate the item ID embeddings over :math:`\mathcal G_{II}`.
    """

    default_patience = 20
    #: training defaults used by the CLI (``--lr`` / ``--batch-size`` override them)
    default_train = {"lr": 1e-3, "batch_size": 1024}

    def __init__(self, num_users: int, num_items: int, in_channels: Mapping[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, num_ii_layers: int = 1,
                 num_rounds: int = 3, num_heads: int = 1, knn_k: int = 10, cl_weight: float = 0.01,
                 tau: float = 0.2, reg_weight: float = 1e-4, profile: str = "sum",
                 attention_dropout: float = 0.0, normalize_features: bool = True,
                 id_on_item_graph: bool = False):
        super().__init__()
        self.modalities = require_modalities(list(in_channels), "crane")
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got '{profile}'")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
        self.num_users, self.num_items = num_users, num_items
        self.num_ii_layers, self.knn_k = num_ii_layers, knn_k
        self.cl_weight, self.tau, self.reg_weight, self.profile = cl_weight, tau, reg_weight, profile
        self.normalize_features, self.id_on_item_graph = normalize_features, id_on_item_graph
        self.encoder = DualViewEncoder(num_users, num_items, embedding_dim, num_ui_layers)
        self.proj = torch.nn.ModuleDict({m: torch.nn.Linear(c, embedding_dim)
                                         for m, c in self.in_channels.items()})
        self.rca = RecursiveCrossModalAttention(embedding_dim, num_rounds, num_heads, attention_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.rca.reset_parameters()
        for lin in self.proj.values():
            torch.nn.init.xavier_uniform_(lin.weight)
            torch.nn.init.zeros_(lin.bias)

    # -- graph ---------------------------------------------------------------------------
    def prepare(self, data: HeteroData) -> CraneGraph:
        device = self.encoder.embedding.weight.device
        feats = {m: x.to(device) for m, x in check_in_channels(self.in_channels, data, "crane").items()}
        knn_feats = feats
        if self.normalize_features:
            feats = {m: F.normalize(x, dim=-1) for m, x in feats.items()}
        U, I = num_users(data), num_items(data)
        ei = split_edge_index(data, "train").to(device)
        pool = (user_item_csr(ei.cpu(), U, I).to(device) if self.profile == "sum"
                else row_normalized(ei, U, I))
        users = {m: torch.sparse.mm(pool, x) for m, x in feats.items()}
        s = None
        for m in self.modalities:
            sm = knn_normalized_adjacency(knn_feats[m], self.knn_k).to_sparse_coo() / len(self.modalities)
            s = sm if s is None else s + sm
        s = s.coalesce().to_sparse_csr()
        return CraneGraph(adj=bipartite_normalized_adjacency(ei, U, I), item_adj=s,
                          item_adj_t=transpose_csr(s), item_features=feats, user_features=users)

    # -- model ---------------------------------------------------------------------------
    def tokens(self, graph: CraneGraph, users: Optional[Tensor] = None) -> Tensor:
        """``[U' + I, M, d]`` modality tokens of the users (all, or ``users``), then all items."""
        return torch.stack([
            self.proj[m](torch.cat([graph.user_features[m] if users is None else graph.user_features[m][users],
                                    graph.item_features[m]]))
            for m in self.modalities], dim=1)

    def semantic(self, graph: CraneGraph, users: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        r"""Semantic view ``(h_u [U', d], h_i [I, d])``: RCA, modality mean, then :math:`S^{L}` on
        items. ``users`` restricts the user rows (training needs only the batch's users; the
        result for them is the same as with all users, since RCA never mixes entities)."""
        s = self.rca(self.tokens(graph, users)).mean(dim=1)
        n_u = self.num_users if users is None else users.numel()
        h_u, h_i = s[:n_u], s[n_u:]
        if self.id_on_item_graph:
            h_i = h_i + self.encoder.embedding.weight[self.num_users:]
        for _ in range(self.num_ii_layers):
            h_i = sparse_mm(graph.item_adj, h_i, adj_t=graph.item_adj_t)
        return h_u, h_i

    def forward(self, graph: CraneGraph, users: Optional[Tensor] = None):
        """``(z_u, z_i, e_u, e_i, h_u, h_i)``: final, behavioural and semantic views; the user
        rows are all users, or those of ``users`` (in that order) when given."""
        e_u, e_i = self.encoder.split(self.encoder.propagate(graph.adj))
        if users is not None:
            e_u = e_u[users]
        h_u, h_i = self.semantic(graph, users)
        return e_u + h_u, e_i + h_i, e_u, e_i, h_u, h_i

    def alignment_loss(self, e_u: Tensor, h_u: Tensor, e_i: Tensor, h_i: Tensor) -> Tensor:
        r""":math:`\mathrm{InfoNCE}(\mathbf e_U, \mathbf h_U) + \mathrm{InfoNCE}(\mathbf e_I, \mathbf h_I)`
        over batch rows (``[B_u, d]`` and ``[B_i, d]``)."""
        return view_infonce(e_u, h_u, self.tau) + view_infonce(e_i, h_i, self.tau)

    def loss(self, graph: CraneGraph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        bu, inv = users.unique(return_inverse=True)
        z_u, z_i, e_u, e_i, h_u, h_i = self(graph, bu)
        u = z_u[inv]
        rec = bpr_loss((u * z_i[pos]).sum(-1), (u * z_i[neg]).sum(-1))
        e0 = self.encoder.embedding.weight
        reg = embedding_l2(e0[users], e0[self.num_users + pos], e0[self.num_users + neg])
        bi = pos.unique()
        cl = self.alignment_loss(e_u, h_u, e_i[bi], h_i[bi])
        total = rec + self.reg_weight * reg + self.cl_weight * cl
        return total, {"bpr": rec.detach(), "reg": reg.detach(), "cl": cl.detach()}

    @torch.no_grad()
    def inference(self, graph: CraneGraph) -> Tuple[Tensor, Tensor]:
        z_u, z_i = self(graph)[:2]
        return z_u, z_i

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)
