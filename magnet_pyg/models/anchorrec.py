r"""AnchorRec (Jeong, Kang and Lee, SIGIR 2026 short paper, "Anchored Alignment: Preventing
Positional Collapse in Multimodal Recommender Systems"; seed 003)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import num_items, num_users, split_edge_index
from ..nn.adjacency import bipartite_normalized_adjacency, row_normalized, sparse_mm, transpose_csr
from ..nn.dual_view import DualViewEncoder
from ..nn.losses import bpr_loss, embedding_l2, view_infonce
from .base import Logs, Recommender, dot_score
from .freedom import check_in_channels, knn_normalized_adjacency, require_modalities

__all__ = ["AnchorRec", "AnchorGraph", "anchor_feature"]

ANCHOR = "mm"


def _mlp(i: int, h: int, o: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.ReLU(), torch.nn.Linear(h, o))


def anchor_feature(features: Mapping[str, Tensor]) -> Tensor:
    r"""Fallback multimodal anchor input :math:`\mathbf f^i_{mm}`: the concatenation of the
    row-L2-normalised modality features, ``[I, sum_m d_m]`` (each modality weighs the same in
    its cosine geometry whatever its scale)."""
    return torch.cat([F.normalize(x.float(), dim=-1) for x in features.values()], dim=-1)


@dataclass
class AnchorGraph:
    """What :meth:`AnchorRec.prepare` builds once."""
    adj: Tensor                    # [U+I, U+I] normalised training graph (LightGCN)
    user_item: Tensor              # [U, I] row-normalised (mean over the user's items)
    item_user: Tensor              # its transpose
    features: Dict[str, Tensor]    # {key: [I, d_key]} raw features, anchor "mm" first
    item_graphs: Dict[str, Tensor]  # {key: [I, I]} kNN matrices S_key
    item_graphs_t: Dict[str, Tensor]


class AnchorRec(Recommender):
    r"""AnchorRec: anchor-based indirect alignment in a lightweight projection domain.

    Notation: :math:`\mathcal K = \{mm\} \cup \mathcal M` are the feature keys (the anchor ``mm``
    and the content modalities :math:`\mathcal M`, any number >= 2 with any names), ``d`` the
    embedding size, ``I``/``U`` the numbers of items/users.

    * **ID encoder**: LightGCN (:class:`~magnet_pyg.nn.DualViewEncoder`, ``num_ui_layers``)
      gives :math:`\mathbf h^u_{id}, \mathbf h^i_{id}`.
    * **Collaborative refinement** (Sec. 3.2): :math:`\tilde{\mathbf h}^i_m = \mathbf e^i_{id}
      \odot \sigma(\mathrm{MLP}_m(\mathbf f^i_m))` (layer-0 item ID embedding gated by the
      feature; the MLP is two linear maps as in the public code), smoothed over the modality's
      frozen kNN graph: :math:`\mathbf h^i_m = (S_m^{L} \tilde{\mathbf h}_m)_i`, ``[I, d]``
      (:func:`~magnet_pyg.models.freedom.knn_normalized_adjacency`, ``knn_k``, ``num_ii_layers``).
      Users get modality views from their items, :math:`\mathbf h^u_m = \frac{1}{|\mathcal N_u|}
      \sum_{i\in\mathcal N_u}\mathbf h^i_m`.
    * **Projection domain**: :math:`\mathbf p^i_k = \mathrm{MLP}_k(\mathbf h^i_k)` for
      :math:`k \in \{id\} \cup \mathcal K`, ``[B, d]``; :math:`\mathbf p_{mm}` is the anchor and
      :math:`\mathbf p_{mix} = \sum_{m\in\mathcal M} \alpha_m \mathbf p_m` (the paper's
      :math:`\alpha p_t + (1-\alpha) p_v`; ``mix_weights``, default uniform).
    * **L_AAL** (Eq. 2): :math:`\mathrm{InfoNCE}(\mathbf p_{mm}, \mathbf p_{id}) +
      \mathrm{InfoNCE}(\mathbf p_{mm}, \mathbf p_{mix})` over the batch's unique positive items
      (symmetric in-batch InfoNCE, cosine, temperature ``tau``: :func:`~magnet_pyg.nn.view_infonce`).
    * **L_AMP** (Eq. 3): :math:`\sum_{k\in\mathcal K} \lambda_k \lVert C(H_k) - C(F_k)\rVert_F / B`
      with :math:`C` the ``[B, B]`` in-batch cosine-similarity matrix of the learned
      (:math:`\mathbf h^i_k`) and raw (:math:`\mathbf f^i_k`) item representations;
      :math:`\lambda_{mm} = 1` and :math:`\lambda_m` = ``amp_modality_weight`` (the public code
      uses 0.03 / 0.01 for text / vision).
    * **Fusion with anchor correction**: :math:`\mathbf h^i = \mathbf h^i_{id} + \sum_{k\in\mathcal K}
      \mathbf h^i_k + \lambda_{recon}\,\mathrm{MLP}(\mathbf p^i_{mm})` and
      :math:`\mathbf h^u = \mathbf h^u_{id} + \sum_{k} \mathbf h^u_k` (``user_modality_views``;
      the paper writes :math:`\mathbf h^u = \mathbf h^u_{id}`, its public code adds the users'
      modality views: both are available, the code's form is the default). Score
      :math:`\mathbf h^{u\top}\mathbf h^i`.
    * **Loss** (Eq. 1): :math:`\mathcal L_{BPR} + \lambda_{reg}\mathcal L_{L2} + \lambda_1
      \mathcal L_{AAL} + \lambda_2 \mathcal L_{AMP}`.

    **Anchor input (decision).** The paper's :math:`\mathbf f_{mm}` is a joint image+text encoder
    feature (BEiT-3). When the dataset has no such joint feature (``anchor_modality=None``, the
    default), :math:`\mathbf f_{mm}` is the concatenation of the available modality features,
    each row-L2-normalised (:func:`anchor_feature`). ``anchor_modality`` names a dataset
    modality to use as the joint feature instead (it then leaves :math:`\mathcal M`).

    The public code's extra terms (user-item cosine margin, graph-smoothness penalty) are not
    in the paper and are left out.

    Defaults (picked on TikTok's validation split, 1-2 seeds): :math:`\lambda_1 = \lambda_2 = 0.1`,
    :math:`\lambda_m = 0.1`, :math:`\tau = 0.5`, :math:`\lambda_{recon} = 0.1`, L2 1e-2, lr 5e-4,
    batch 2048. :math:`\lambda_1 = 1` collapses accuracy there (Recall@20 0.029 vs 0.063);
    the code's :math:`\lambda_{recon} = 5\cdot10^{-4}` and dropping the users' modality views are
    both slightly worse.

    Args:
        num_users: ``U``.
        num_items: ``I``.
        in_channels: ``{modality: feature size}`` in the dataset's order (>= 2 modalities).
        embedding_dim: ``d``.
        num_ui_layers: LightGCN layers (2).
        num_ii_layers: item-item smoothing layers (1).
        knn_k: neighbours per item in each kNN graph (10).
        aal_weight: :math:`\lambda_1`.
        amp_weight: :math:`\lambda_2`.
        amp_modality_weight: :math:`\lambda_m` of the single modalities (anchor: 1).
        tau: InfoNCE temperature.
        recon_weight: :math:`\lambda_{recon}` of the anchor correction.
        mix_weights: :math:`\alpha_m`, one per single modality (default uniform), renormalised.
        reg_weight: batch L2 on the layer-0 ID embeddings.
        user_modality_views: add the users' pooled modality views to the user representation.
        anchor_modality: dataset modality used as the joint anchor feature (default: none).
    """

    default_patience = 20
    #: training defaults used by the CLI (``--lr`` / ``--batch-size`` override them)
    default_train = {"lr": 5e-4, "batch_size": 2048}

    def __init__(self, num_users: int, num_items: int, in_channels: Mapping[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, num_ii_layers: int = 1,
                 knn_k: int = 10, aal_weight: float = 0.1, amp_weight: float = 0.1,
                 amp_modality_weight: float = 0.1, tau: float = 0.5, recon_weight: float = 0.1,
                 mix_weights: Optional[Sequence[float]] = None, reg_weight: float = 1e-2,
                 user_modality_views: bool = True, anchor_modality: Optional[str] = None):
        super().__init__()
        names = require_modalities(list(in_channels), "anchorrec")
        if anchor_modality is not None and anchor_modality not in names:
            raise ValueError(f"anchor_modality '{anchor_modality}' is not one of {names}")
        if ANCHOR in names and anchor_modality != ANCHOR:
            raise ValueError(f"a dataset modality is called '{ANCHOR}': pass anchor_modality='{ANCHOR}' "
                             "to use it as the joint feature")
        self.in_channels = {m: int(in_channels[m]) for m in names}
        self.anchor_modality = anchor_modality
        self.modalities: List[str] = [m for m in names if m != anchor_modality]
        if not self.modalities:
            raise ValueError("anchorrec needs at least one modality besides the anchor")
        if mix_weights is None:
            mix_weights = [1.0] * len(self.modalities)
        mix_weights = [float(w) for w in mix_weights]
        if len(mix_weights) != len(self.modalities) or min(mix_weights) < 0 or sum(mix_weights) <= 0:
            raise ValueError(f"mix_weights must be {len(self.modalities)} non-negative numbers "
                             f"(one per modality {self.modalities}), got {mix_weights}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.mix_weights = [w / sum(mix_weights) for w in mix_weights]
        anchor_dim = (self.in_channels[anchor_modality] if anchor_modality is not None
                      else sum(self.in_channels.values()))
        self.key_dims = {ANCHOR: anchor_dim, **{m: self.in_channels[m] for m in self.modalities}}
        self.keys: List[str] = list(self.key_dims)
        self.num_users, self.num_items, self.embedding_dim = num_users, num_items, embedding_dim
        self.num_ii_layers, self.knn_k = num_ii_layers, knn_k
        self.aal_weight, self.amp_weight, self.amp_modality_weight = aal_weight, amp_weight, amp_modality_weight
        self.tau, self.recon_weight, self.reg_weight = tau, recon_weight, reg_weight
        self.user_modality_views = user_modality_views
        d = embedding_dim
        self.encoder = DualViewEncoder(num_users, num_items, d, num_ui_layers)
        self.feat_proj = torch.nn.ModuleDict({k: torch.nn.Linear(c, d) for k, c in self.key_dims.items()})
        self.gate = torch.nn.ModuleDict({k: torch.nn.Linear(d, d) for k in self.keys})
        self.projection = torch.nn.ModuleDict({k: _mlp(d, d, d) for k in ["id"] + self.keys})
        self.decoder = _mlp(d, d, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        for mod in self.modules():
            if isinstance(mod, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(mod.weight)
                torch.nn.init.zeros_(mod.bias)

    # -- graph ---------------------------------------------------------------------------
    def prepare(self, data: HeteroData) -> AnchorGraph:
        device = self.encoder.embedding.weight.device
        feats = {m: x.to(device) for m, x in check_in_channels(self.in_channels, data, "anchorrec").items()}
        if self.anchor_modality is None:
            keyed = {ANCHOR: anchor_feature({m: feats[m] for m in self.modalities})}
        else:
            keyed = {ANCHOR: feats[self.anchor_modality]}
        keyed.update({m: feats[m] for m in self.modalities})
        U, I = num_users(data), num_items(data)
        ei = split_edge_index(data, "train").to(device)
        graphs = {k: knn_normalized_adjacency(x, self.knn_k) for k, x in keyed.items()}
        ui = row_normalized(ei, U, I)
        return AnchorGraph(adj=bipartite_normalized_adjacency(ei, U, I), user_item=ui,
                           item_user=transpose_csr(ui), features=keyed, item_graphs=graphs,
                           item_graphs_t={k: transpose_csr(s) for k, s in graphs.items()})

    # -- model ---------------------------------------------------------------------------
    def modality_embeddings(self, graph: AnchorGraph) -> Dict[str, Tensor]:
        r"""Refined item modality embeddings :math:`\mathbf h^i_k`, ``{key: [I, d]}``."""
        e_items = self.encoder.embedding.weight[self.num_users:]
        out = {}
        for k in self.keys:
            h = e_items * torch.sigmoid(self.gate[k](self.feat_proj[k](graph.features[k])))
            for _ in range(self.num_ii_layers):
                h = sparse_mm(graph.item_graphs[k], h, adj_t=graph.item_graphs_t[k])
            out[k] = h
        return out

    def forward(self, graph: AnchorGraph) -> Tuple[Tensor, Tensor, Tensor, Dict[str, Tensor]]:
        """``(user [U, d], item [I, d], item ID view h_id [I, d], {key: h_key [I, d]})``."""
        zu, zi = self.encoder.split(self.encoder.propagate(graph.adj))
        h = self.modality_embeddings(graph)
        h_sum = sum(h.values())
        item = zi + h_sum + self.recon_weight * self.decoder(self.projection[ANCHOR](h[ANCHOR]))
        user = zu
        if self.user_modality_views:
            user = zu + sparse_mm(graph.user_item, h_sum, adj_t=graph.item_user)
        return user, item, zi, h

    def projections(self, h_id: Tensor, h: Mapping[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        r"""``(p_mm, p_id, p_mix)``, each ``[B, d]``, from the (already batch-indexed) views."""
        p_mm = self.projection[ANCHOR](h[ANCHOR])
        p_id = self.projection["id"](h_id)
        p_mix = sum(a * self.projection[m](h[m]) for a, m in zip(self.mix_weights, self.modalities))
        return p_mm, p_id, p_mix

    @staticmethod
    def aal_loss(p_mm: Tensor, p_id: Tensor, p_mix: Tensor, tau: float) -> Tensor:
        r"""Anchor-aligned learning (Eq. 2): :math:`\mathrm{InfoNCE}(p_{mm}, p_{id}) +
        \mathrm{InfoNCE}(p_{mm}, p_{mix})`, each the symmetric in-batch InfoNCE
        (:func:`~magnet_pyg.nn.view_infonce`) over ``[B, d]`` rows."""
        return view_infonce(p_mm, p_id, tau) + view_infonce(p_mm, p_mix, tau)

    @staticmethod
    def amp_loss(learned: Mapping[str, Tensor], raw: Mapping[str, Tensor],
                 weights: Mapping[str, float]) -> Tensor:
        r"""Anchor-modality preservation (Eq. 3):
        :math:`\sum_k \lambda_k \lVert C(H_k) - C(F_k)\rVert_F / B`, :math:`C(X)_{ij} = \cos(x_i, x_j)`,
        with ``learned[k]`` ``[B, d]`` and ``raw[k]`` ``[B, d_k]`` the same ``B`` items."""
        total = 0.0
        for k, w in weights.items():
            a, b = F.normalize(learned[k], dim=-1), F.normalize(raw[k].float(), dim=-1)
            diff = a @ a.t() - b @ b.t()
            total = total + w * diff.pow(2).sum().clamp_min(1e-12).sqrt() / a.size(0)
        return total

    def loss(self, graph: AnchorGraph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        user, item, zi, h = self(graph)
        u = user[users]
        rec = bpr_loss((u * item[pos]).sum(-1), (u * item[neg]).sum(-1))
        e0 = self.encoder.embedding.weight
        reg = embedding_l2(e0[users], e0[self.num_users + pos], e0[self.num_users + neg])
        items = pos.unique()
        hb = {k: v[items] for k, v in h.items()}
        p_mm, p_id, p_mix = self.projections(zi[items], hb)
        aal = self.aal_loss(p_mm, p_id, p_mix, self.tau)
        weights = {k: (1.0 if k == ANCHOR else self.amp_modality_weight) for k in self.keys}
        amp = self.amp_loss(hb, {k: graph.features[k][items] for k in self.keys}, weights)
        total = rec + self.reg_weight * reg + self.aal_weight * aal + self.amp_weight * amp
        return total, {"bpr": rec.detach(), "reg": reg.detach(), "aal": aal.detach(), "amp": amp.detach()}

    @torch.no_grad()
    def inference(self, graph: AnchorGraph) -> Tuple[Tensor, Tensor]:
        user, item, _, _ = self(graph)
        return user, item

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)
