r"""RecGOAT (Lu et al., arXiv 2602.00682, "Graph Optimal Adaptive Transport for LLM-Enhanced
Multimodal Recommendation with Dual Semantic Alignment"; seed 002, with the details of the
authors' supplement and code: CMCL temperature, Sinkhorn settings, the z_m (T + Delta) map and
the learned fusion weights)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import GATConv

from ..data.schema import num_items, num_users, split_edge_index
from ..nn.adjacency import bipartite_normalized_adjacency, row_normalized
from ..nn.dual_view import DualViewEncoder
from ..nn.losses import bpr_loss, embedding_l2, view_infonce
from .base import Logs, Recommender, dot_score
from .freedom import check_in_channels, knn_edge_index, require_modalities

__all__ = ["RecGOAT", "RecGOATGraph", "sinkhorn", "transport_cost"]

PLAN_UPDATES = ("epoch", "step")


def transport_cost(x: Tensor, y: Tensor) -> Tensor:
    r"""Cost between the feature dimensions of ``x`` ``[N, d]`` and ``y`` ``[N, d']``:
    :math:`C_{ab} = \frac1N\sum_n (x_{na} - y_{nb})^2`, ``[d, d']``, computed as
    :math:`\overline{x_a^2} + \overline{y_b^2} - 2\,\overline{x_a y_b}` (no ``[N, d, d']`` tensor)."""
    n = x.size(0)
    c = x.pow(2).mean(0).unsqueeze(1) + y.pow(2).mean(0).unsqueeze(0) - 2.0 * (x.t() @ y) / n
    return c.clamp_min(0.0)


def sinkhorn(cost: Tensor, eps: float = 1e-2, num_iters: int = 100, tol: float = 1e-6,
             mu: Optional[Tensor] = None, nu: Optional[Tensor] = None) -> Tensor:
    r"""Entropic optimal-transport plan (Sinkhorn, log domain):

    .. math::
        T^\star = \arg\min_{T \in \Pi(\mu,\nu)} \langle T, C\rangle - \varepsilon H(T),\qquad
        T = \mathrm{diag}(e^{f/\varepsilon}) K \mathrm{diag}(e^{g/\varepsilon}),\ K = e^{-C/\varepsilon},

    iterating :math:`f \leftarrow \varepsilon\log\mu - \varepsilon\,\mathrm{LSE}_b((g_b - C_{ab})/\varepsilon)`
    and the same for :math:`g`, at most ``num_iters`` times or until the row marginals are
    within ``tol`` (checked every 10 iterations) (the column marginals are exact after every iteration). The log domain keeps
    small ``eps`` (1e-2) from underflowing :math:`K`.

    Args:
        cost: ``[n, m]`` cost matrix.
        eps: entropic regularisation :math:`\varepsilon`.
        num_iters: maximum iterations.
        tol: stop when :math:`\max_a |T\mathbf 1 - \mu|_a <` ``tol``.
        mu, nu: marginals (default uniform :math:`1/n`, :math:`1/m`).

    Returns:
        ``[n, m]`` plan with row sums :math:`\mu` and column sums :math:`\nu`.
    """
    n, m = cost.shape
    log_mu = (torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device) if mu is None
              else mu.log())
    log_nu = (torch.full((m,), -math.log(m), dtype=cost.dtype, device=cost.device) if nu is None
              else nu.log())
    k = -cost / eps
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for it in range(num_iters):
        f = log_mu - torch.logsumexp(k + g.unsqueeze(0), dim=1)
        g = log_nu - torch.logsumexp(k + f.unsqueeze(1), dim=0)
        if tol > 0 and (it + 1) % 10 == 0:  # check every 10 iterations (a host sync on GPUs)
            row = torch.logsumexp(k + f.unsqueeze(1) + g.unsqueeze(0), dim=1).exp()
            if float((row - log_mu.exp()).abs().max()) < tol:
                break
    return (k + f.unsqueeze(1) + g.unsqueeze(0)).exp()


@dataclass
class RecGOATGraph:
    """What :meth:`RecGOAT.prepare` builds once."""
    adj: Tensor                       # [U+I, U+I] normalised training graph (LightGCN)
    item_features: Dict[str, Tensor]  # {m: [I, d_m]}
    user_features: Dict[str, Tensor]  # {m: [U, d_m]} mean of the user's items' features
    item_edges: Dict[str, Tensor]     # {m: [2, I*k]} item-item kNN (source neighbour -> item)
    user_edges: Tensor                # [2, U*k] user-user kNN
    ui_edges: Tensor                  # [2, E] item -> user (bipartite message direction)


class RecGOAT(Recommender):
    r"""RecGOAT: graph-attention encoders plus dual-granularity (CMCL + OAT) multimodal-ID alignment.

    For every content modality :math:`m` (any number >= 2, any names):

    * **Item-item GAT**: :math:`\mathbf x^m_i \mapsto W_m\mathbf x^m_i` (features row-L2-normalised
      first, ``normalize_features``), then a
      :class:`~torch_geometric.nn.GATConv` layer over the modality's item kNN graph
      (``knn_k``, no self neighbour; GATConv adds self loops), with a residual:
      :math:`\mathbf h^m_i = W_m\mathbf x^m_i + \mathrm{GAT}^m_{II}(W_m\mathbf x^m)_i`, ``[I, d]``.
    * **User side (decision)**: without LLM user summaries, the user's semantic input is the mean
      of its training items' features, :math:`\bar{\mathbf x}^m_u`, projected by the same
      :math:`W_m`; the **user-user** graph is the kNN graph (``user_knn_k``) over the
      concatenation of the row-normalised :math:`\bar{\mathbf x}^m_u`; a user-user GAT then a
      bipartite **user-item** GAT (items -> users, attention over the user's history) give
      :math:`\mathbf h^m_u = \mathbf g^m_u + \mathrm{GAT}^m_{UI}((\mathbf h^m_I, \mathbf g^m_U))_u`
      with :math:`\mathbf g^m_u = W_m\bar{\mathbf x}^m_u + \mathrm{GAT}^m_{UU}(W_m\bar{\mathbf x}^m)_u`.
    * **ID side**: LightGCN over the user-item graph, :math:`\mathbf z^{id}_u, \mathbf z^{id}_i`.
    * **OAT** (distribution level): the entropic OT plan :math:`T_m \in \mathbb R^{d\times d}`
      (:func:`sinkhorn`, ``ot_eps`` = 1e-2, ``ot_iters`` = 100, uniform marginals) between the
      feature dimensions of the item modality embeddings and the item ID embeddings, cost
      :func:`transport_cost` divided by its maximum (so ``eps`` is relative to the cost range),
      treated as a constant (no gradient, as the authors' code) and, by default
      (``plan_update="epoch"``), recomputed once at the start of every epoch from the current
      weights and stored with them, so that training and evaluation use the same plan and a
      resumed run the same plans as an uninterrupted one (the authors' code recomputes it at
      every step, ``plan_update="step"``; on TikTok's validation split both give the same
      Recall@20, 0.066 / 0.065, the per-epoch plan about 15 % faster on CPU); modality
      embeddings are mapped
      as :math:`\mathbf z^m = \mathbf h^m (d\,T_m + \Delta_m)` for users and items, with a learned
      correction :math:`\Delta_m` (``[d, d]``, zero-initialised). :math:`d\,T_m` is doubly
      stochastic (the plan rescaled by ``d`` so the transport keeps the embeddings' scale; the
      authors' code uses the raw plan, whose rows sum to :math:`1/d`).
    * **Fusion**: :math:`\mathbf z = (1-\sum_m a_m)\mathbf z^{id} + \sum_m a_m\mathbf z^m` with
      learned :math:`(1-\sum_m a_m, a_1, \dots, a_M) = \mathrm{softmax}(\boldsymbol\theta)`
      (initially ``fusion_init`` for the ID view and the rest shared equally; ``None``:
      uniform); score :math:`\mathbf z_u^\top\mathbf z_i`.
    * **CMCL** (instance level): :math:`\frac1M\sum_m \big(\mathrm{InfoNCE}(\mathbf z^{id}_I, \mathbf z^m_I)
      + \mathrm{InfoNCE}(\mathbf z^{id}_U, \mathbf z^m_U)\big)` over the batch's unique positive
      items and users, temperature ``tau`` = 0.2 (:func:`~magnet_pyg.nn.view_infonce`).
    * **Loss**: :math:`\mathcal L_{BPR} + \lambda_{cl}\mathcal L_{CMCL} + \lambda_{reg}\mathcal L_{L2}`.

    Defaults (picked on TikTok's validation split, 1-2 seeds): ``cmcl_weight`` 1e-3,
    ``fusion_init`` 0.9, 2 heads, no attention dropout, lr 1e-3, batch 2048. On TikTok (weak
    audio/visual features) larger CMCL weights hurt (Recall@20 0.050 at 0.1 and 0.063 at 1e-3,
    with ``fusion_init`` 0.8), and uniform initial fusion weights make the content views
    dominate the ID view early (0.043-0.048).

    Args:
        num_users: ``U``.
        num_items: ``I``.
        in_channels: ``{modality: feature size}`` (>= 2 modalities).
        embedding_dim: ``d`` (divisible by ``heads``).
        num_ui_layers: LightGCN layers (2).
        knn_k: neighbours per item in each item-item graph (10).
        user_knn_k: neighbours per user in the user-user graph (10).
        heads: GAT attention heads (outputs concatenated to ``d``).
        dropout: GAT attention dropout.
        cmcl_weight: :math:`\lambda_{cl}`.
        tau: CMCL temperature (0.2).
        ot_eps: Sinkhorn :math:`\varepsilon` (1e-2, relative to the max cost).
        ot_iters: Sinkhorn iterations (100).
        reg_weight: batch L2 on the layer-0 ID embeddings.
        plan_update: ``"epoch"`` (plan refreshed at each epoch start and saved with the weights)
            or ``"step"`` (recomputed at every forward pass, as the authors' code).
        fusion_init: initial fusion weight of the ID view (``None``: uniform over ID and modalities).
        normalize_features: row-L2-normalise the raw item features before the projections (so
            the modality embeddings start on the scale of the ID embeddings; the kNN graphs are
            cosine either way).
    """

    default_patience = 20
    #: training defaults used by the CLI (``--lr`` / ``--batch-size`` override them)
    default_train = {"lr": 1e-3, "batch_size": 2048}

    def __init__(self, num_users: int, num_items: int, in_channels: Mapping[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, knn_k: int = 10,
                 user_knn_k: int = 10, heads: int = 2, dropout: float = 0.0,
                 cmcl_weight: float = 1e-3, tau: float = 0.2, ot_eps: float = 1e-2,
                 ot_iters: int = 100, reg_weight: float = 1e-4, normalize_features: bool = True,
                 fusion_init: Optional[float] = 0.9, plan_update: str = "epoch"):
        super().__init__()
        self.modalities: List[str] = require_modalities(list(in_channels), "recgoat")
        if heads < 1 or embedding_dim % heads:
            raise ValueError(f"heads must be >= 1 and divide embedding_dim={embedding_dim}")
        if tau <= 0 or ot_eps <= 0 or ot_iters < 1:
            raise ValueError("tau and ot_eps must be > 0 and ot_iters >= 1")
        self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
        self.num_users, self.num_items, self.embedding_dim = num_users, num_items, embedding_dim
        self.knn_k, self.user_knn_k = knn_k, user_knn_k
        self.cmcl_weight, self.tau, self.reg_weight = cmcl_weight, tau, reg_weight
        self.ot_eps, self.ot_iters = ot_eps, ot_iters
        self.normalize_features = normalize_features
        if fusion_init is not None and not 0.0 < fusion_init < 1.0:
            raise ValueError(f"fusion_init must be in (0, 1), got {fusion_init}")
        self.fusion_init = fusion_init
        if plan_update not in PLAN_UPDATES:
            raise ValueError(f"plan_update must be one of {PLAN_UPDATES}, got '{plan_update}'")
        self.plan_update = plan_update
        d, hd = embedding_dim, embedding_dim // heads
        self.encoder = DualViewEncoder(num_users, num_items, d, num_ui_layers)
        self.proj = torch.nn.ModuleDict({m: torch.nn.Linear(c, d) for m, c in self.in_channels.items()})
        self.item_gat = torch.nn.ModuleDict({m: GATConv(d, hd, heads, dropout=dropout) for m in self.modalities})
        self.user_gat = torch.nn.ModuleDict({m: GATConv(d, hd, heads, dropout=dropout) for m in self.modalities})
        self.ui_gat = torch.nn.ModuleDict({m: GATConv((d, d), hd, heads, dropout=dropout, add_self_loops=False)
                                           for m in self.modalities})
        self.delta = torch.nn.ParameterDict({m: torch.nn.Parameter(torch.zeros(d, d)) for m in self.modalities})
        self.fusion_logits = torch.nn.Parameter(torch.zeros(len(self.modalities) + 1))
        # OAT plans of the current epoch (plan_update="epoch"), saved with the weights
        self.register_buffer("plans", torch.zeros(len(self.modalities), d, d))
        self.register_buffer("plans_ready", torch.zeros((), dtype=torch.bool))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        for m in self.modalities:
            torch.nn.init.xavier_uniform_(self.proj[m].weight)
            torch.nn.init.zeros_(self.proj[m].bias)
            self.item_gat[m].reset_parameters()
            self.user_gat[m].reset_parameters()
            self.ui_gat[m].reset_parameters()
            torch.nn.init.zeros_(self.delta[m])
        with torch.no_grad():
            self.plans.zero_()
            self.plans_ready.fill_(False)
            self.fusion_logits.zero_()
            if self.fusion_init is not None:  # ID weight fusion_init, the rest shared equally
                rest = (1.0 - self.fusion_init) / len(self.modalities)
                self.fusion_logits[0] = math.log(self.fusion_init)
                self.fusion_logits[1:] = math.log(rest)

    # -- graph ---------------------------------------------------------------------------
    def prepare(self, data: HeteroData) -> RecGOATGraph:
        device = self.encoder.embedding.weight.device
        feats = {m: x.to(device) for m, x in check_in_channels(self.in_channels, data, "recgoat").items()}
        if self.normalize_features:
            feats = {m: F.normalize(x, dim=-1) for m, x in feats.items()}
        U, I = num_users(data), num_items(data)
        ei = split_edge_index(data, "train").to(device)
        mean = row_normalized(ei, U, I)
        users = {m: torch.sparse.mm(mean, x) for m, x in feats.items()}
        item_edges = {m: knn_edge_index(x, self.knn_k, include_self=False).flip(0) for m, x in feats.items()}
        joint = torch.cat([F.normalize(x, dim=-1) for x in users.values()], dim=-1)
        user_edges = knn_edge_index(joint, self.user_knn_k, include_self=False).flip(0)
        return RecGOATGraph(adj=bipartite_normalized_adjacency(ei, U, I), item_features=feats,
                            user_features=users, item_edges=item_edges, user_edges=user_edges,
                            ui_edges=ei.flip(0))

    # -- model ---------------------------------------------------------------------------
    def fusion_weights(self) -> Tensor:
        """``[M + 1]`` = ``(1 - sum_m a_m, a_1, ..., a_M)``."""
        return torch.softmax(self.fusion_logits, dim=0)

    def item_embeddings(self, graph: RecGOATGraph, m: str) -> Tensor:
        """Item-item graph-attention encoding ``h^m_I`` ``[I, d]`` of modality ``m``."""
        xi = self.proj[m](graph.item_features[m])
        return xi + self.item_gat[m](xi, graph.item_edges[m])

    def modality_embeddings(self, graph: RecGOATGraph, m: str,
                            users: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Graph-attention encodings ``(h^m_U [U', d], h^m_I [I, d])`` of modality ``m``; the user
        rows are all users, or those of ``users`` (in that order). With ``users`` only the edges
        into those users are used, which gives the same rows (attention normalises per target)."""
        hi = self.item_embeddings(graph, m)
        xu = self.proj[m](graph.user_features[m])
        uu, ui = graph.user_edges, graph.ui_edges
        if users is not None:
            keep = torch.zeros(self.num_users, dtype=torch.bool, device=xu.device)
            keep[users] = True
            uu, ui = uu[:, keep[uu[1]]], ui[:, keep[ui[1]]]
        gu = xu + self.user_gat[m](xu, uu)
        hu = gu + self.ui_gat[m]((hi, gu), ui)
        return (hu if users is None else hu[users]), hi

    @torch.no_grad()
    def transport_plan(self, h_items: Tensor, id_items: Tensor) -> Tensor:
        """OAT plan ``[d, d]`` between the dimensions of ``h_items`` and ``id_items`` (no gradient)."""
        cost = transport_cost(h_items, id_items)
        cost = cost / cost.max().clamp_min(1e-12)
        return sinkhorn(cost, self.ot_eps, self.ot_iters)

    def forward(self, graph: RecGOATGraph, users: Optional[Tensor] = None):
        """``(z_u, z_i, z^id_u, z^id_i, {m: (z^m_u, z^m_i)})``, ``[*, d]`` each; the user rows are
        all users, or those of ``users`` (in that order) when given."""
        zu_id, zi_id = self.encoder.split(self.encoder.propagate(graph.adj))
        if users is not None:
            zu_id = zu_id[users]
        w = self.fusion_weights()
        z_u, z_i = w[0] * zu_id, w[0] * zi_id
        views = {}
        for j, m in enumerate(self.modalities, start=1):
            hu, hi = self.modality_embeddings(graph, m, users)
            t = (self.plans[j - 1] if self.plan_update == "epoch" and bool(self.plans_ready)
                 else self.transport_plan(hi.detach(), zi_id.detach()))
            a = t * t.size(0) + self.delta[m]
            zu_m, zi_m = hu @ a, hi @ a
            views[m] = (zu_m, zi_m)
            z_u = z_u + w[j] * zu_m
            z_i = z_i + w[j] * zi_m
        return z_u, z_i, zu_id, zi_id, views

    @torch.no_grad()
    def refresh_plans(self, graph: RecGOATGraph) -> None:
        """Recompute and store the OAT plans from the current weights (in eval mode)."""
        was = self.training
        self.eval()
        try:
            _, zi_id = self.encoder.split(self.encoder.propagate(graph.adj))
            for j, m in enumerate(self.modalities):
                self.plans[j] = self.transport_plan(self.item_embeddings(graph, m), zi_id)
            self.plans_ready.fill_(True)
        finally:
            self.train(was)

    def on_epoch_start(self, graph: RecGOATGraph, epoch: int, generator: torch.Generator) -> RecGOATGraph:
        if self.plan_update == "epoch":
            self.refresh_plans(graph)
        return graph

    def cmcl_loss(self, id_users: Tensor, id_items: Tensor,
                  views: Mapping[str, Tuple[Tensor, Tensor]]) -> Tensor:
        r"""Cross-modal contrastive learning: :math:`\frac1M\sum_m [\mathrm{InfoNCE}(\mathbf z^{id}_I,
        \mathbf z^m_I) + \mathrm{InfoNCE}(\mathbf z^{id}_U, \mathbf z^m_U)]` over batch rows."""
        total = sum(view_infonce(id_items, zi, self.tau) + view_infonce(id_users, zu, self.tau)
                    for zu, zi in views.values())
        return total / len(views)

    def loss(self, graph: RecGOATGraph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        bu, inv = users.unique(return_inverse=True)
        z_u, z_i, zu_id, zi_id, views = self(graph, bu)
        u = z_u[inv]
        rec = bpr_loss((u * z_i[pos]).sum(-1), (u * z_i[neg]).sum(-1))
        e0 = self.encoder.embedding.weight
        reg = embedding_l2(e0[users], e0[self.num_users + pos], e0[self.num_users + neg])
        bi = pos.unique()
        cl = self.cmcl_loss(zu_id, zi_id[bi], {m: (zu, zi[bi]) for m, (zu, zi) in views.items()})
        total = rec + self.reg_weight * reg + self.cmcl_weight * cl
        logs = {"bpr": rec.detach(), "reg": reg.detach(), "cmcl": cl.detach()}
        return total, logs

    def epoch_logs(self) -> Logs:
        w = self.fusion_weights().detach()
        return {"fusion_id": float(w[0]), **{f"fusion_{m}": float(w[j + 1]) for j, m in enumerate(self.modalities)}}

    @torch.no_grad()
    def inference(self, graph: RecGOATGraph) -> Tuple[Tensor, Tensor]:
        z_u, z_i = self(graph)[:2]
        return z_u, z_i

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)
