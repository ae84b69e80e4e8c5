r"""RecGOAT (Lu et al., arXiv 2602.00682, "RecGOAT: Graph Optimal Adaptive Transport for
LLM-Enhanced Multimodal Recommendation with Dual Semantic Alignment").

The paper's abstract and supplementary material (the CMCL InfoNCE of Lemma 3.3, Sec. 3.3.2; the
LLM user profiles of Sec. 3.1.3) fix the structure; where they are silent the defaults follow the
authors' public code (``model_v1.py``, ``parse.py`` and the run commands of its README). The
mechanism-by-mechanism comparison is in ``docs/fidelity.md``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.nn import GATConv
from torch_geometric.utils import to_undirected

from ..data.modalities import check_in_channels, require_modalities
from ..data.schema import num_items, num_users, split_edge_index
from ..graph.item_graph import knn_edge_index
from ..nn.adjacency import bipartite_normalized_adjacency, row_normalized
from ..nn.dual_view import DualViewEncoder
from ..nn.losses import bpr_loss
from .base import Logs, Recommender, dot_score
from .config import model_config

__all__ = ["RecGOAT", "RecGOATGraph", "SlotView", "sinkhorn", "transport_cost", "info_nce",
           "text_modality_of"]

PLAN_UPDATES = ("epoch", "step")
#: name of the fusion slot that the item ID embedding fills when no modality is text-like
ID_SLOT = "id_fill"
_TEXT_MARKERS = ("text", "txt")


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
    within ``tol`` (checked every 10 iterations) (the column marginals are exact after every
    iteration). The log domain keeps a small ``eps`` from underflowing :math:`K` (the plain
    domain's :math:`K = e^{-C/\varepsilon}` is 0 in float32 once :math:`C/\varepsilon > 104`).

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


def info_nce(a: Tensor, b: Tensor, tau: float) -> Tensor:
    r"""One-directional in-batch InfoNCE with cosine similarity (Lemma 3.3 of the paper's
    supplement; the authors' ``InfoNCE``):
    :math:`\frac1B\sum_n -\log\frac{e^{s(a_n,b_n)/\tau}}{\sum_{m=1}^{B} e^{s(a_n,b_m)/\tau}}`.

    Args:
        a, b: ``[B, d]``; row ``n`` of both is a positive pair, the other rows of ``b`` the
            negatives of ``a_n`` (repeated rows included, as in the authors' batches).
        tau: temperature > 0.
    """
    logits = (F.normalize(a, dim=-1) / tau) @ F.normalize(b, dim=-1).t()  # [B, B]
    return F.cross_entropy(logits, torch.arange(a.size(0), device=a.device))


def text_modality_of(modalities: Sequence[str]) -> Optional[str]:
    """The first modality whose name contains ``text`` or ``txt`` (case-insensitive), else ``None``:
    the one that takes the authors' text weight by default."""
    for m in modalities:
        if any(t in m.lower() for t in _TEXT_MARKERS):
            return m
    return None


@dataclass
class RecGOATGraph:
    """What :meth:`RecGOAT.prepare` builds once."""
    adj: Tensor                                 # [U+I, U+I] normalised training graph (LightGCN)
    item_features: Dict[str, Tensor]            # {m: [I, d_m]}
    item_edges: Dict[str, Tensor]               # {m: [2, E_m]} symmetric item-item kNN graph
    user_features: Optional[Dict[str, Tensor]] = None  # {m: [U, d_m]} (user_content only)
    user_edges: Optional[Tensor] = None         # [2, U*k] user-user kNN (user_content only)
    ui_edges: Optional[Tensor] = None           # [2, E] item -> user (user_content only)


class SlotView(NamedTuple):
    """One fusion slot: encoder output ``h`` (before OAT) and OAT-mapped ``z``, for users
    (``None`` unless ``user_content``) and items."""
    h_user: Optional[Tensor]
    h_item: Tensor
    z_user: Optional[Tensor]
    z_item: Tensor


class RecGOAT(Recommender):
    r"""RecGOAT: graph-attention item encoders, OAT (distribution-level) and CMCL
    (instance-level) multimodality-ID alignment, fused into a unit-norm item vector.

    Default configuration (the authors' code; :math:`d` = ``embedding_dim``):

    * **ID side**: LightGCN over the training graph (``num_ui_layers`` = 3), layer-0 embeddings
      :math:`\mathcal N(0, 0.1^2)` (``id_init_std``), layer mean
      :math:`\mathbf z^{id}_u, \mathbf z^{id}_i`, ``[U, d]``, ``[I, d]``.
    * **Item modality encoders** (the "item-item" graph attention of the abstract), per content
      modality :math:`m`: :math:`\mathbf h^m = W_m\mathbf x^m + b_m` on the raw features
      (``normalize_features=False``; PyTorch's default :class:`~torch.nn.Linear` init), then
      ``num_item_layers`` (1) blocks
      :math:`\mathbf h \leftarrow \mathrm{drop}(\mathrm{LeakyReLU}_{0.2}(\mathrm{GAT}(\mathrm{drop}(\mathbf h))))`
      of a :class:`~torch_geometric.nn.GATConv` (``heads`` = 8 heads of size :math:`d/8`,
      concatenated; attention dropout ``dropout`` = 0.1; self loops) over the modality's
      symmetrised cosine kNN graph (``knn_k`` = 20), ``[I, d]``.
    * **Fusion slots**: the authors fuse an image and a text slot. Here every content modality
      is a slot; the text-like one (:func:`text_modality_of`, or ``text_modality``) gets the
      authors' text weight ``text_weight`` = 0.8 and every other modality the image weight
      ``image_weight`` = 0.05 (``modality_weights`` sets them explicitly). When no modality
      is text-like (``fill_missing_text``), the text slot (named ``"id_fill"``) is filled by the
      item ID embedding, :math:`\mathbf h^{id} = \mathbf z^{id}_i`, as the authors' code does for
      a missing modality. TikTok (audio, image): ID 0.1, audio 0.05, image 0.05, ``id_fill``
      0.8; Sports (keyword, text): ID 0.15, keyword 0.05, text 0.8.
    * **OAT** (distribution level): per slot :math:`s`, the entropic OT plan
      :math:`T_s \in \mathbb R^{d\times d}` between the feature dimensions of
      :math:`\mathbf h^s` and :math:`\mathbf z^{id}_i` (:func:`sinkhorn`; cost
      :func:`transport_cost` times ``ot_cost_scale`` = 100, ``ot_eps`` = 1e-2, ``ot_iters`` =
      100, uniform marginals :math:`1/d`, no gradient, recomputed at every step,
      ``plan_update="step"``), and :math:`\mathbf z^s = \mathbf h^s (T_s + \Delta_s)` with a
      learned :math:`\Delta_s` ``[d, d]`` (Xavier-uniform init). :math:`T_s` is the raw plan
      (rows sum to :math:`1/d`).
    * **Unified item representation**:
      :math:`\mathbf z_i = \frac{\mathrm{drop}(\mathrm{LN}(\mathbf x_i))}{\|\mathrm{drop}(\mathrm{LN}(\mathbf x_i))\|_2}`,
      :math:`\mathbf x_i = (1 - \sum_s a_s)\,\mathbf z^{id}_i + \sum_s a_s \mathbf z^s_i`, with
      learned unconstrained scalars :math:`a_s` (initialised as above), a
      :class:`~torch.nn.LayerNorm` and dropout 0.1 (``fusion_dropout``); ``[I, d]``, unit rows.
    * **Users**: :math:`\mathbf z_u = \mathbf z^{id}_u` (no content branch, ``user_content=False``);
      score :math:`\mathbf z_u^\top \mathbf z_i`.
    * **CMCL** (instance level, Lemma 3.3 of the supplement; :func:`info_nce`, one direction,
      ``tau`` = 0.2, over the batch rows):
      :math:`\mathcal L_{CMCL} = (1-\mu)\,\mathrm{NCE}(\mathbf z_{u}, \mathbf z_{i^+}) +
      \mu\,\overline{\mathrm{NCE}}` with :math:`\mu` = ``modality_consistency`` = 0.5 and
      :math:`\overline{\mathrm{NCE}}` the mean of :math:`\mathrm{NCE}(\mathbf h^a, \mathbf h^b)`
      over the pairs (ID, :math:`s`) and (:math:`s`, :math:`s'`), :math:`s < s'`, of the
      positive and of the negative items (:math:`\mathbf h^{id} = \mathbf z^{id}_i`, the
      encoders' outputs before OAT).
    * **Loss**: :math:`\mathcal L_{BPR} + \lambda_{reg}\frac1B\sum_b(\|\mathbf e^{(0)}_{u_b}\|^2
      + \|\mathbf e^{(0)}_{i^+_b}\|^2 + \|\mathbf e^{(0)}_{i^-_b}\|^2) + \lambda_{cl}\mathcal L_{CMCL}`,
      :math:`\lambda_{reg}` = ``reg_weight`` = 1e-4, :math:`\lambda_{cl}` = ``cmcl_weight`` = 0.01;
      Adam, lr 8e-4, batch 4096, no weight decay (``default_train``).

    Departures of the default configuration from the authors' code (see
    ``docs/fidelity.md``): the CMCL modality terms are minimised InfoNCE losses (the
    authors minimise :math:`1 - \mathrm{InfoNCE}`, which pushes the views apart); the Sinkhorn
    plan is computed in the log domain (the authors' plain-domain :math:`K` underflows, giving
    :math:`T \approx 0`); every content modality is fused (the authors fuse image and text
    only; their audio branch is built but unused); models are selected on validation, not on
    test; negatives skip the user's training items (the trainer's sampler); :math:`d` = 64 (the
    authors' default; their runs use 200-800); PyG's :class:`~torch_geometric.nn.GATConv`
    replaces DGL's (Glorot init instead of Xavier-normal with gain :math:`\sqrt2`). Without LLM user summaries the paper's user
    content side (Sec. 3.1.3: user-user and user-item graph attention from LLM-inferred
    preferences) is available only as an option, ``user_content=True``, whose user input is the
    mean of the user's training items' features; the user views then go through the same OAT
    maps, fusion, LayerNorm and L2 normalisation.

    Args:
        num_users: ``U``.
        num_items: ``I``.
        in_channels: ``{modality: feature size}`` (>= 2 modalities, any names).
        embedding_dim: ``d`` (divisible by ``heads``).
        num_ui_layers: LightGCN layers (3).
        knn_k: neighbours per item in each item-item graph (20).
        num_item_layers: graph-attention layers of each item encoder (1).
        heads: GAT attention heads, outputs concatenated to ``d`` (8).
        dropout: GAT feature and attention dropout and dropout after each GAT layer (0.1).
        fusion_dropout: dropout on the LayerNorm output of the fused item vector (0.1).
        text_weight: initial fusion weight of the text slot (0.8, the authors' ``beta``).
        image_weight: initial fusion weight of every other modality (0.05, the authors' ``alpha``).
        text_modality: modality that takes ``text_weight`` (default: :func:`text_modality_of`).
        modality_weights: explicit initial weights, one per modality in ``in_channels`` order
            (overrides ``text_weight`` / ``image_weight`` for the modalities).
        fill_missing_text: without a text-like modality, fill the text slot with the item ID
            embedding (weight ``text_weight``), as the authors' code.
        learn_fusion: learn the slot weights (the authors' ``alpha``, ``beta`` are parameters).
        cmcl_weight: :math:`\lambda_{cl}` (0.01).
        modality_consistency: :math:`\mu`, share of the modality pairs in CMCL (0.5).
        tau: CMCL temperature (0.2).
        ot_eps: Sinkhorn :math:`\varepsilon` (1e-2).
        ot_cost_scale: factor on the transport cost (100); ``None`` divides it by its maximum.
        ot_iters: Sinkhorn iterations (100).
        plan_update: ``"step"`` (plan recomputed at every forward pass, as the authors' code) or
            ``"epoch"`` (refreshed at each epoch start, in eval mode, and saved with the weights).
        reg_weight: :math:`\lambda_{reg}` (1e-4).
        id_init_std: std of the normal init of the ID embeddings (0.1); ``None``: Xavier-uniform.
        normalize_features: row-L2-normalise the raw item features before the projections.
        user_content: add the user content branch described above.
        user_knn_k: neighbours per user in the user-user graph (``user_content`` only).

    Shapes:
        - **forward:** ``(z_u [U', d], z_i [I, d], z^id_u [U', d], z^id_i [I, d], {slot: SlotView})``,
          ``U'`` = all users or the given ``users``.
        - **inference:** ``(z_u [U, d], z_i [I, d])``.
    """

    default_patience = 20
    sampling_unsupported_reason = ("its graph attention runs over the whole item kNN and user-item "
                                   "graphs and its transport plan is computed from all items' embeddings")
    #: training defaults used by the CLI (the authors' README runs: Adam lr 8e-4, batch 4096)
    default_train = {"lr": 8e-4, "batch_size": 4096, "weight_decay": 0.0}

    def __init__(self, num_users: int, num_items: int, in_channels: Mapping[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 3, knn_k: int = 20,
                 num_item_layers: int = 1, heads: int = 8, dropout: float = 0.1,
                 fusion_dropout: float = 0.1, text_weight: float = 0.8, image_weight: float = 0.05,
                 text_modality: Optional[str] = None,
                 modality_weights: Optional[Sequence[float]] = None,
                 fill_missing_text: bool = True, learn_fusion: bool = True,
                 cmcl_weight: float = 0.01, modality_consistency: float = 0.5, tau: float = 0.2,
                 ot_eps: float = 1e-2, ot_cost_scale: Optional[float] = 100.0, ot_iters: int = 100,
                 plan_update: str = "step", reg_weight: float = 1e-4,
                 id_init_std: Optional[float] = 0.1, normalize_features: bool = False,
                 user_content: bool = False, user_knn_k: int = 10):
        super().__init__()
        self.modalities: List[str] = require_modalities(list(in_channels), "recgoat")
        if heads < 1 or embedding_dim % heads:
            raise ValueError(f"heads must be >= 1 and divide embedding_dim={embedding_dim}")
        if tau <= 0 or ot_eps <= 0 or ot_iters < 1:
            raise ValueError("tau and ot_eps must be > 0 and ot_iters >= 1")
        if ot_cost_scale is not None and ot_cost_scale <= 0:
            raise ValueError(f"ot_cost_scale must be > 0 or None, got {ot_cost_scale}")
        if plan_update not in PLAN_UPDATES:
            raise ValueError(f"plan_update must be one of {PLAN_UPDATES}, got '{plan_update}'")
        if not 0.0 <= modality_consistency <= 1.0:
            raise ValueError(f"modality_consistency must be in [0, 1], got {modality_consistency}")
        if num_item_layers < 0:
            raise ValueError(f"num_item_layers must be >= 0, got {num_item_layers}")
        if ID_SLOT in self.modalities:
            raise ValueError(f"a modality may not be named '{ID_SLOT}'")
        self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
        self.num_users, self.num_items, self.embedding_dim = num_users, num_items, embedding_dim
        self.knn_k, self.user_knn_k = knn_k, user_knn_k
        self.dropout, self.fusion_dropout = dropout, fusion_dropout
        self.cmcl_weight, self.modality_consistency, self.tau = cmcl_weight, modality_consistency, tau
        self.reg_weight, self.id_init_std = reg_weight, id_init_std
        self.ot_eps, self.ot_cost_scale, self.ot_iters = ot_eps, ot_cost_scale, ot_iters
        self.plan_update, self.normalize_features = plan_update, normalize_features
        self.user_content = user_content

        # fusion slots and their initial weights
        if text_modality is not None and text_modality not in self.modalities:
            raise ValueError(f"text_modality '{text_modality}' is not one of {self.modalities}")
        self.text_modality = text_modality if text_modality is not None else text_modality_of(self.modalities)
        if modality_weights is not None:
            if len(modality_weights) != len(self.modalities):
                raise ValueError(f"modality_weights needs one weight per modality {self.modalities}, "
                                 f"got {list(modality_weights)}")
            init = [float(w) for w in modality_weights]
        else:
            init = [text_weight if m == self.text_modality else image_weight for m in self.modalities]
        self.slots: List[str] = list(self.modalities)
        if fill_missing_text and self.text_modality is None:
            self.slots.append(ID_SLOT)
            init.append(text_weight)
        self.initial_weights = init
        self.learn_fusion = learn_fusion
        if learn_fusion:
            self.slot_weights = torch.nn.Parameter(torch.tensor(init))
        else:
            self.register_buffer("slot_weights", torch.tensor(init))

        d, hd = embedding_dim, embedding_dim // heads
        self.encoder = DualViewEncoder(num_users, num_items, d, num_ui_layers)
        self.proj = torch.nn.ModuleDict({m: torch.nn.Linear(c, d) for m, c in self.in_channels.items()})
        self.item_gat = torch.nn.ModuleDict({
            m: torch.nn.ModuleList([GATConv(d, hd, heads, dropout=dropout) for _ in range(num_item_layers)])
            for m in self.modalities})
        if user_content:
            self.user_gat = torch.nn.ModuleDict({m: GATConv(d, hd, heads, dropout=dropout) for m in self.modalities})
            self.ui_gat = torch.nn.ModuleDict({m: GATConv((d, d), hd, heads, dropout=dropout, add_self_loops=False)
                                               for m in self.modalities})
        self.delta = torch.nn.ParameterDict({s: torch.nn.Parameter(torch.empty(d, d)) for s in self.slots})
        self.norm = torch.nn.LayerNorm(d)
        # OAT plans of the current epoch (plan_update="epoch"), saved with the weights
        self.register_buffer("plans", torch.zeros(len(self.slots), d, d))
        self.register_buffer("plans_ready", torch.zeros((), dtype=torch.bool))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        if self.id_init_std is not None:
            torch.nn.init.normal_(self.encoder.embedding.weight, std=self.id_init_std)
        for m in self.modalities:
            self.proj[m].reset_parameters()  # PyTorch's default Linear init, as the authors'
            for conv in self.item_gat[m]:
                conv.reset_parameters()
            if self.user_content:
                self.user_gat[m].reset_parameters()
                self.ui_gat[m].reset_parameters()
        for s in self.slots:
            torch.nn.init.xavier_uniform_(self.delta[s])
        self.norm.reset_parameters()
        with torch.no_grad():
            self.slot_weights.copy_(torch.tensor(self.initial_weights))
            self.plans.zero_()
            self.plans_ready.fill_(False)

    # -- graph ---------------------------------------------------------------------------
    def prepare(self, data: HeteroData) -> RecGOATGraph:
        device = self.encoder.embedding.weight.device
        feats = {m: x.to(device) for m, x in check_in_channels(self.in_channels, data, "recgoat").items()}
        if self.normalize_features:
            feats = {m: F.normalize(x, dim=-1) for m, x in feats.items()}
        U, I = num_users(data), num_items(data)
        ei = split_edge_index(data, "train").to(device)
        # cosine top-k (self excluded), symmetrised and deduplicated; GATConv adds self loops
        item_edges = {m: to_undirected(knn_edge_index(x, self.knn_k, include_self=False), num_nodes=I)
                      for m, x in feats.items()}
        graph = RecGOATGraph(adj=bipartite_normalized_adjacency(ei, U, I), item_features=feats,
                             item_edges=item_edges)
        if self.user_content:
            mean = row_normalized(ei, U, I)
            users = {m: torch.sparse.mm(mean, x) for m, x in feats.items()}
            joint = torch.cat([F.normalize(x, dim=-1) for x in users.values()], dim=-1)
            graph.user_features = users
            graph.user_edges = knn_edge_index(joint, self.user_knn_k, include_self=False).flip(0)
            graph.ui_edges = ei.flip(0)
        return graph

    # -- model ---------------------------------------------------------------------------
    def fusion_weights(self) -> Tensor:
        """``[S + 1]`` = ``(1 - sum_s a_s, a_1, ..., a_S)`` in the order ``["id view", *slots]``."""
        a = self.slot_weights
        return torch.cat([(1.0 - a.sum()).unsqueeze(0), a])

    def item_embeddings(self, graph: RecGOATGraph, m: str) -> Tensor:
        """Graph-attention encoding ``h^m_I`` ``[I, d]`` of modality ``m`` (before OAT)."""
        h = self.proj[m](graph.item_features[m])
        for conv in self.item_gat[m]:
            h = F.dropout(h, self.dropout, self.training)
            h = F.leaky_relu(conv(h, graph.item_edges[m]), 0.2)
            h = F.dropout(h, self.dropout, self.training)
        return h

    def user_embeddings(self, graph: RecGOATGraph, m: str, h_items: Tensor,
                        users: Optional[Tensor] = None) -> Tensor:
        """User content encoding ``h^m_U`` ``[U', d]`` (``user_content`` only): user-user then
        user-item graph attention over the mean of the users' items' features; with ``users``
        only the edges into those users are used (same rows: attention normalises per target)."""
        xu = self.proj[m](graph.user_features[m])
        uu, ui = graph.user_edges, graph.ui_edges
        if users is not None:
            keep = torch.zeros(self.num_users, dtype=torch.bool, device=xu.device)
            keep[users] = True
            uu, ui = uu[:, keep[uu[1]]], ui[:, keep[ui[1]]]
        gu = xu + self.user_gat[m](xu, uu)
        hu = gu + self.ui_gat[m]((h_items, gu), ui)
        return hu if users is None else hu[users]

    def modality_embeddings(self, graph: RecGOATGraph, m: str,
                            users: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Tensor]:
        """``(h^m_U or None, h^m_I)`` of modality ``m`` (users only with ``user_content``)."""
        hi = self.item_embeddings(graph, m)
        hu = self.user_embeddings(graph, m, hi, users) if self.user_content else None
        return hu, hi

    @torch.no_grad()
    def transport_plan(self, h_items: Tensor, id_items: Tensor) -> Tensor:
        """OAT plan ``[d, d]`` between the dimensions of ``h_items`` and ``id_items`` (no gradient;
        raw plan, rows sum to ``1/d``)."""
        cost = transport_cost(h_items, id_items)
        cost = (cost / cost.max().clamp_min(1e-12) if self.ot_cost_scale is None
                else cost * self.ot_cost_scale)
        return sinkhorn(cost, self.ot_eps, self.ot_iters)

    def mix(self, z_id: Tensor, z_slots: Sequence[Tensor]) -> Tensor:
        r""":math:`\mathbf x = (1-\sum_s a_s)\mathbf z^{id} + \sum_s a_s\mathbf z^s` (before LayerNorm)."""
        w = self.fusion_weights()
        x = w[0] * z_id
        for j, z in enumerate(z_slots, start=1):
            x = x + w[j] * z
        return x

    def unify(self, x: Tensor) -> Tensor:
        """LayerNorm, dropout and L2 normalisation of the mixed vector (unit rows)."""
        return F.normalize(F.dropout(self.norm(x), self.fusion_dropout, self.training), dim=-1)

    def forward(self, graph: RecGOATGraph, users: Optional[Tensor] = None):
        """``(z_u, z_i, z^id_u, z^id_i, {slot: SlotView})``; the user rows are all users, or
        those of ``users`` (in that order) when given."""
        zu_id, zi_id = self.encoder.split(self.encoder.propagate(graph.adj))
        if users is not None:
            zu_id = zu_id[users]
        views: Dict[str, SlotView] = {}
        for j, s in enumerate(self.slots):
            if s == ID_SLOT:
                hu, hi = (zu_id if self.user_content else None), zi_id
            else:
                hu, hi = self.modality_embeddings(graph, s, users)
            t = (self.plans[j] if self.plan_update == "epoch" and bool(self.plans_ready)
                 else self.transport_plan(hi.detach(), zi_id.detach()))
            a = t + self.delta[s]
            views[s] = SlotView(hu, hi, None if hu is None else hu @ a, hi @ a)
        z_i = self.unify(self.mix(zi_id, [v.z_item for v in views.values()]))
        z_u = (self.unify(self.mix(zu_id, [v.z_user for v in views.values()])) if self.user_content
               else zu_id)
        return z_u, z_i, zu_id, zi_id, views

    @torch.no_grad()
    def refresh_plans(self, graph: RecGOATGraph) -> None:
        """Recompute and store the OAT plans from the current weights (in eval mode)."""
        was = self.training
        self.eval()
        try:
            _, zi_id = self.encoder.split(self.encoder.propagate(graph.adj))
            for j, s in enumerate(self.slots):
                h = zi_id if s == ID_SLOT else self.item_embeddings(graph, s)
                self.plans[j] = self.transport_plan(h, zi_id)
            self.plans_ready.fill_(True)
        finally:
            self.train(was)

    def on_epoch_start(self, graph: RecGOATGraph, epoch: int, generator: torch.Generator) -> RecGOATGraph:
        if self.plan_update == "epoch":
            self.refresh_plans(graph)
        return graph

    def cmcl_loss(self, users: Tensor, pos_items: Tensor, pos_views: Sequence[Tensor],
                  neg_views: Sequence[Tensor]) -> Tensor:
        r"""Cross-modal contrastive learning over batch rows:
        :math:`(1-\mu)\,\mathrm{NCE}(\mathbf z_u, \mathbf z_{i^+}) + \mu\,\overline{\mathrm{NCE}}`.

        Args:
            users: ``[B, d]`` user vectors of the batch.
            pos_items: ``[B, d]`` unified vectors of the positive items.
            pos_views, neg_views: ``[z^id, h^1, ..., h^S]``, each ``[B, d]``: the ID view and the
                slots' encoder outputs for the positive / negative items; the modality term
                averages :func:`info_nce` over the pairs (ID, slot) and (slot, later slot) of both.
        """
        mu = self.modality_consistency
        ui = info_nce(users, pos_items, self.tau)
        terms = []
        for views in (pos_views, neg_views):
            hs = list(views)
            terms += [info_nce(hs[a], hs[b], self.tau) for a in range(len(hs)) for b in range(a + 1, len(hs))]
        modal = torch.stack(terms).mean() if terms else ui.new_zeros(())
        return (1.0 - mu) * ui + mu * modal

    def loss(self, graph: RecGOATGraph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        if self.user_content:
            bu, inv = users.unique(return_inverse=True)
            z_u, z_i, _, zi_id, views = self(graph, bu)
            u = z_u[inv]
        else:
            z_u, z_i, _, zi_id, views = self(graph)
            u = z_u[users]
        ip, ineg = z_i[pos], z_i[neg]
        rec = bpr_loss((u * ip).sum(-1), (u * ineg).sum(-1))
        e0 = self.encoder.embedding.weight
        reg = (e0[users].pow(2).sum(-1) + e0[self.num_users + pos].pow(2).sum(-1)
               + e0[self.num_users + neg].pow(2).sum(-1)).mean()
        pv = [zi_id[pos]] + [v.h_item[pos] for v in views.values()]
        nv = [zi_id[neg]] + [v.h_item[neg] for v in views.values()]
        cl = self.cmcl_loss(u, ip, pv, nv)
        total = rec + self.reg_weight * reg + self.cmcl_weight * cl
        logs = {"bpr": rec.detach(), "reg": reg.detach(), "cmcl": cl.detach()}
        return total, logs

    def epoch_logs(self) -> Logs:
        w = self.fusion_weights().detach()
        return {"fusion_id": float(w[0]), **{f"fusion_{s}": float(w[j + 1]) for j, s in enumerate(self.slots)}}

    @torch.no_grad()
    def inference(self, graph: RecGOATGraph) -> Tuple[Tensor, Tensor]:
        z_u, z_i = self(graph)[:2]
        return z_u, z_i

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)


#: Hyper-parameters of :class:`RecGOAT`: its constructor's keyword arguments, with the
#: constructor's types and defaults (:func:`~magnet_pyg.models.config.model_config`).
RecGoatConfig = model_config(RecGOAT, "RecGoatConfig")
