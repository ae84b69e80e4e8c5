r"""AnchorRec (Jeong, Kang and Lee, SIGIR 2026 short paper, "Anchored Alignment: Preventing
Positional Collapse in Multimodal Recommender Systems"), following the paper and, where the
paper is silent or states less than its public code (``hun9008/AnchorRec``,
``src/models/anchorrec.py``), that code. ``docs/fidelity.md`` lists every mechanism,
loss term and hyperparameter against both."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.modalities import check_in_channels, require_modalities
from ..data.schema import num_items, num_users, split_edge_index
from ..graph.item_graph import knn_edge_index
from ..graph.sparse import coalesced_csr
from ..nn.adjacency import bipartite_normalized_adjacency, sparse_mm, transpose_csr
from ..nn.dual_view import DualViewEncoder
from ..nn.losses import bpr_loss, embedding_l2
from ..nn.pruning import degree_edge_probability
from .base import Logs, Recommender, dot_score
from .config import model_config

__all__ = ["AnchorRec", "AnchorGraph", "anchor_feature", "weighted_knn_adjacency", "text_role"]

ANCHOR = "mm"
AMP_SIMILARITIES = ("dot", "cosine")


def _mlp(i: int, h: int, o: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(i, h), torch.nn.ReLU(), torch.nn.Linear(h, o))


def anchor_feature(features: Mapping[str, Tensor]) -> Tensor:
    r"""Stand-in for the joint multimodal feature :math:`\mathbf f^i_{mm}` when the dataset has
    none: the concatenation of the row-L2-normalised modality features, ``[I, sum_m d_m]``. Its
    cosine similarity is the mean of the per-modality cosines, so every modality weighs the
    same in the anchor's kNN graph and in its L_AMP target, whatever its scale."""
    return torch.cat([F.normalize(x.float(), dim=-1) for x in features.values()], dim=-1)


def text_role(modalities: Sequence[str]) -> str:
    r"""The modality that plays the authors' text role ``t`` (the others play the vision role
    ``v``): the first whose name contains ``text`` or ``txt`` (case-insensitive), else the
    first that is not visual (``image``, ``img``, ``visual``, ``vision``, ``v``), else the
    first. TikTok ``[audio, image]`` -> ``audio``; Amazon ``[keyword, text]`` or
    ``[image, text]`` -> ``text``."""
    names = list(modalities)
    for m in names:
        if "text" in m.lower() or "txt" in m.lower():
            return m
    visual = ("image", "img", "visual", "vision", "v")
    return next((m for m in names if m.lower() not in visual), names[0])


@torch.no_grad()
def weighted_knn_adjacency(x: Tensor, k: int) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The authors' frozen item-item graph (LATTICE's ``build_knn_normalized_graph``, sparse,
    ``norm_type='sym'``): each item keeps its top-``k`` cosine neighbours (itself included),
    **weighted by the cosine similarity**, normalised as :math:`D^{-1/2} A D^{-1/2}` with
    :math:`D` the row sums of the kept weights.

    Returns:
        ``(S, edge_index [2, E], value [E])``: ``S`` a ``[N, N]`` ``torch.sparse_csr`` tensor
        (not symmetric) and its entries as an edge list (row-major).
    """
    ei = knn_edge_index(x, k, include_self=True)
    xn = F.normalize(x.float(), dim=-1)
    w = (xn[ei[0]] * xn[ei[1]]).sum(-1)
    n = x.size(0)
    deg = torch.zeros(n, device=x.device, dtype=w.dtype).scatter_add_(0, ei[0], w)
    dis = deg.clamp_min(0).pow(-0.5).masked_fill_(deg <= 0, 0.0)
    value = dis[ei[0]] * w * dis[ei[1]]
    return coalesced_csr(ei[0], ei[1], value, (n, n)), ei, value


@dataclass
class AnchorGraph:
    """What :meth:`AnchorRec.prepare` builds once."""
    adj: Tensor                    # [U+I, U+I] normalised training graph (LightGCN)
    user_item: Tensor              # [U, I] D_u^-1/2 R D_i^-1/2 (user block of adj)
    item_user: Tensor              # its transpose
    features: Dict[str, Tensor]    # {key: [I, d_key]} raw features, anchor "mm" first
    item_graphs: Dict[str, Tensor]  # {key: [I, I]} weighted kNN matrices S_key
    item_graphs_t: Dict[str, Tensor]
    anchor_edges: Tensor           # [2, E] entries of S_mm (graph-smoothness term)
    anchor_edge_weight: Tensor     # [E] their values


class AnchorRec(Recommender):
    r"""AnchorRec: anchor-based indirect alignment in a lightweight projection domain.

    Notation: :math:`\mathcal K = \{mm\} \cup \mathcal M` are the feature keys (the anchor ``mm``
    and the content modalities :math:`\mathcal M`, any number >= 2 with any names), ``d`` the
    embedding size, ``I``/``U`` the numbers of items/users, ``B`` the batch size.

    **Roles of the modalities.** The authors have three features: a joint image+text feature
    ``mm`` (BEiT-3, the anchor), text ``t`` and vision ``v``; the roles differ (``t`` enters the
    final representation, weighs 0.75 in :math:`\mathbf p_{mix}` and 0.03 in L_AMP; ``v`` is
    not fused, weighs 0.25 and 0.01). Here one modality takes the ``t`` role (``text_modality``,
    default :func:`text_role`: a ``text`` modality, else the first non-visual one) and
    every other one the ``v`` role (the ``v`` weights are split equally among them).
    TikTok: ``t`` = audio, ``v`` = image; Amazon Sports: ``t`` = text, ``v`` = keyword.

    **Anchor input.** Without a joint feature in the dataset (``anchor_modality=None``, the
    default), :math:`\mathbf f_{mm}` is the concatenation of the row-L2-normalised modality
    features (:func:`anchor_feature`); ``anchor_modality`` names a dataset modality to use as
    the joint feature instead (it then leaves :math:`\mathcal M`).

    * **ID encoder**: LightGCN (``num_ui_layers`` = 2, layer mean) over Xavier-uniform user and
      item tables gives :math:`\mathbf h^u_{id}, \mathbf h^i_{id}`.
    * **Collaborative refinement**: :math:`\tilde{\mathbf h}^i_k = \mathbf e^i_{id} \odot
      \sigma(\mathbf W^g_k(\mathbf W^f_k \mathbf f^i_k + \mathbf b^f_k) + \mathbf b^g_k)`
      (layer-0 item ID gated by the raw feature), smoothed ``num_ii_layers`` times over the
      frozen kNN graph :math:`S_k` of the raw feature (cosine-weighted top-``knn_k``, symmetric
      degree normalisation: :func:`weighted_knn_adjacency`), giving :math:`\mathbf h^i_k`.
      Users: :math:`\mathbf h^u_k = \sum_{i \in \mathcal N_u} \mathbf h^i_k / \sqrt{|\mathcal
      N_u||\mathcal N_i|}` (the user block of the LightGCN adjacency).
    * **Fusion**: :math:`\mathbf h^u = \mathbf h^u_{id} + \mathbf h^u_{mm} + \mathbf h^u_t`,
      :math:`\mathbf h^i = \mathbf h^i_{id} + \mathbf h^i_{mm} + \mathbf h^i_t +
      \lambda_{recon} \mathrm{MLP}_{dec}(\mathbf p^i_{mm})`; score :math:`\mathbf h^{u\top}
      \mathbf h^i`. ``fuse_all_modalities`` adds every content modality (the paper's
      :math:`\sum_{m \in \mathcal M}`), ``user_modality_views=False`` gives the paper's
      :math:`\mathbf h^u = \mathbf h^u_{id}`. :meth:`views` returns the summands.
    * **Projection domain**: :math:`\mathbf p_{id} = \mathrm{MLP}_{id}(\mathbf h^i_{id})`,
      :math:`\mathbf p_{mm} = \mathrm{MLP}_{mm}(\mathbf h^i_{mm})` (the anchor),
      :math:`\mathbf p_m = \mathrm{MLP}_m(\mathbf f^i_m)` from the **raw** feature
      (``mix_from_features``; the paper writes :math:`\mathrm{MLP}_m(\mathbf h^i_m)`),
      :math:`\mathbf p_{mix} = \sum_m \alpha_m \mathbf p_m`.
    * **L_AAL**: :math:`\mathrm{NCE}(\mathbf p_{mm}, \mathbf p_{id}) +
      \mathrm{NCE}(\mathrm{sg}[\mathbf p_{mm}], \mathbf p_{mix})`, one-directional in-batch
      InfoNCE (the anchor is the query, cosine, temperature ``tau``), the anchor detached
      (``sg``) in the second term: that term only trains the ``MLP_m``.
    * **L_AMP**: :math:`\sum_k \lambda_k \lVert G(H_k) - C(F_k)\rVert_F / B` over the batch's
      positive items, :math:`C` the cosine-similarity matrix of the raw features and
      :math:`G(H) = HH^\top` (``amp_similarity="dot"``, the code) or the cosine matrix
      (``"cosine"``, the paper); :math:`\lambda_{mm} = 1`, ``amp_modality_weights``.
    * **Interaction terms** (the paper defers them to its code): BPR, the squared L2 norm of the
      batch's final user / positive / negative embeddings over ``2B`` (``reg_weight``), a
      margin ranking term on cosines with the user detached, :math:`\mathrm{relu}(\mu +
      \cos(\mathrm{sg}[\mathbf h^u], \mathbf h^{j}) - \cos(\mathrm{sg}[\mathbf h^u],
      \mathbf h^{i}))` (``ui_margin_weight``, :math:`\mu` = ``ui_margin``), and the smoothness
      of :math:`\mathbf h_{mm}` over :math:`S_{mm}`, mean over its entries of :math:`s_{ij}
      \lVert \mathbf h^i_{mm} - \mathbf h^j_{mm}\rVert^2` (``smooth_weight``).
    * **Loss**: :math:`\mathcal L_{BPR} + \lambda_{reg}\mathcal L_{L2} + \lambda_{ui}
      \mathcal L_{margin} + \lambda_{sm}\mathcal L_{smooth} + \lambda_1 \mathcal L_{AAL} +
      \lambda_2 \mathcal L_{AMP}`.

    Initialisation as the code: Xavier-uniform ID tables (users and items separately) and
    projection / decoder weights, PyTorch's default for the feature and gate layers and for
    every bias. The raw features are fine-tuned as in the code (``finetune_features``: a
    trained offset per feature; the kNN graphs stay as built, L_AMP and :math:`\mathbf p_m`
    read the moved features as constants); the paper calls them fixed, which measured the
    same on TikTok's validation split.

    **Departures from the authors in the default configuration** (reasons and measurements in
    ``docs/fidelity.md``): the joint BEiT-3 anchor feature is replaced by the
    normalised concatenation of the dataset's modalities (the data has no joint feature); the
    ``t`` / ``v`` roles go to the dataset's modalities as described above; no learning-rate
    decay (the code's :math:`0.96^{epoch/50}`, at most 8 % over its 100 epochs) and early
    stopping on the package's selection metric (the code trains 100 epochs and keeps the best
    validation Recall@20); negatives uniform over all items (the code: over the items seen in
    training); the code only gives grids for :math:`\lambda_1, \lambda_2, \tau`, the L2
    weight, the lr and ``num_ii_layers``: lr 1e-3 and :math:`\lambda_1` = 0.01 were chosen on
    TikTok's validation split, the others are single grid points (:math:`\lambda_2` 0.1,
    :math:`\tau` 0.5, L2 1e-2, one item-item layer).

    Args:
        num_users: ``U``.
        num_items: ``I``.
        in_channels: ``{modality: feature size}`` in the dataset's order (>= 2 modalities).
        embedding_dim: ``d`` (64).
        num_ui_layers: LightGCN layers (2).
        num_ii_layers: item-item smoothing layers (code grid 1, 2, 3).
        knn_k: neighbours per item in each kNN graph, itself included (10).
        aal_weight: :math:`\lambda_1`.
        amp_weight: :math:`\lambda_2`.
        amp_modality_weights: :math:`\lambda_m` per modality (dataset order; anchor: 1).
            Default: 0.03 for the ``t`` role, 0.01 split over the ``v`` roles.
        tau: InfoNCE temperature.
        recon_weight: :math:`\lambda_{recon}` of the anchor correction (5e-4).
        mix_weights: :math:`\alpha_m` per modality (dataset order), renormalised. Default:
            0.75 for the ``t`` role, 0.25 split over the ``v`` roles.
        reg_weight: L2 weight on the batch's final embeddings.
        ui_margin_weight: weight of the user-detached cosine margin term (0.01).
        ui_margin: its margin :math:`\mu` (0.2).
        smooth_weight: weight of the anchor-view graph smoothness (0.1).
        text_modality: modality in the ``t`` role (default :func:`text_role`).
        fuse_all_modalities: add every content modality to the final representations (the
            paper's sum) instead of only ``mm`` and ``t`` (the code).
        user_modality_views: add the users' ``mm`` / ``t`` views to the user representation
            (the code); ``False`` is the paper's :math:`\mathbf h^u = \mathbf h^u_{id}`.
        mix_from_features: :math:`\mathbf p_m` from the raw feature (the code) instead of the
            refined view :math:`\mathbf h^i_m` (the paper).
        amp_similarity: ``"dot"`` (code) or ``"cosine"`` (paper) for the learned side of L_AMP.
        finetune_features: train an additive offset of every raw feature, as the code's
            trainable ``nn.Embedding.from_pretrained(freeze=False)`` (kNN graphs stay frozen);
            ``False`` keeps the features fixed (the paper).
        anchor_modality: dataset modality used as the joint anchor feature (default: none).
    """

    default_patience = 20
    sampling_unsupported_reason = ("its modality views propagate over whole item kNN graphs and its "
                                   "alignment and smoothness losses read the full-graph representations")
    #: training defaults used by the CLI (``--lr`` / ``--batch-size`` override them)
    default_train = {"lr": 1e-3, "batch_size": 2048}

    def __init__(self, num_users: int, num_items: int, in_channels: Mapping[str, int],
                 embedding_dim: int = 64, num_ui_layers: int = 2, num_ii_layers: int = 1,
                 knn_k: int = 10, aal_weight: float = 0.01, amp_weight: float = 0.1,
                 amp_modality_weights: Optional[Sequence[float]] = None, tau: float = 0.5,
                 recon_weight: float = 5e-4, mix_weights: Optional[Sequence[float]] = None,
                 reg_weight: float = 1e-2, ui_margin_weight: float = 0.01, ui_margin: float = 0.2,
                 smooth_weight: float = 0.1, text_modality: Optional[str] = None,
                 fuse_all_modalities: bool = False, user_modality_views: bool = True,
                 mix_from_features: bool = True, amp_similarity: str = "dot",
                 finetune_features: bool = True, anchor_modality: Optional[str] = None):
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
        if text_modality is None:
            text_modality = text_role(self.modalities)
        if text_modality not in self.modalities:
            raise ValueError(f"text_modality '{text_modality}' is not one of {self.modalities}")
        self.text_modality = text_modality
        n_v = len(self.modalities) - 1
        self.mix_weights = self._weights("mix_weights", mix_weights, 0.75, 0.25, n_v, normalise=True)
        self.amp_modality_weights = self._weights("amp_modality_weights", amp_modality_weights,
                                                  0.03, 0.01, n_v, normalise=False)
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if amp_similarity not in AMP_SIMILARITIES:
            raise ValueError(f"amp_similarity must be one of {AMP_SIMILARITIES}, got '{amp_similarity}'")
        anchor_dim = (self.in_channels[anchor_modality] if anchor_modality is not None
                      else sum(self.in_channels.values()))
        self.key_dims = {ANCHOR: anchor_dim, **{m: self.in_channels[m] for m in self.modalities}}
        self.keys: List[str] = list(self.key_dims)
        self.fused: List[str] = [ANCHOR] + (list(self.modalities) if fuse_all_modalities
                                            else [text_modality])
        self.num_users, self.num_items, self.embedding_dim = num_users, num_items, embedding_dim
        self.num_ii_layers, self.knn_k = num_ii_layers, knn_k
        self.aal_weight, self.amp_weight, self.tau = aal_weight, amp_weight, tau
        self.recon_weight, self.reg_weight = recon_weight, reg_weight
        self.ui_margin_weight, self.ui_margin, self.smooth_weight = ui_margin_weight, ui_margin, smooth_weight
        self.fuse_all_modalities, self.user_modality_views = fuse_all_modalities, user_modality_views
        self.mix_from_features, self.amp_similarity = mix_from_features, amp_similarity
        self.finetune_features = finetune_features
        d = embedding_dim
        self.encoder = DualViewEncoder(num_users, num_items, d, num_ui_layers)
        self.feat_proj = torch.nn.ModuleDict({k: torch.nn.Linear(c, d) for k, c in self.key_dims.items()})
        self.gate = torch.nn.ModuleDict({k: torch.nn.Linear(d, d) for k in self.keys})
        proj = {"id": _mlp(d, d, d), ANCHOR: _mlp(d, d, d)}
        for m in self.modalities:
            proj[m] = _mlp(self.key_dims[m] if mix_from_features else d, d, d)
        self.projection = torch.nn.ModuleDict(proj)
        self.decoder = _mlp(d, d, d)
        self.feature_offset = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(torch.zeros(num_items, c)) for k, c in self.key_dims.items()}
            if finetune_features else {})
        self.reset_parameters()

    def _weights(self, name, given, t_value, v_total, n_v, normalise):
        if given is None:
            w = [t_value if m == self.text_modality else v_total / max(n_v, 1) for m in self.modalities]
        else:
            w = [float(x) for x in given]
            if len(w) != len(self.modalities) or min(w) < 0 or (normalise and sum(w) <= 0):
                raise ValueError(f"{name} must be {len(self.modalities)} non-negative numbers "
                                 f"(one per modality {self.modalities}), got {w}")
        if normalise:
            w = [x / sum(w) for x in w]
        return dict(zip(self.modalities, w))

    def reset_parameters(self) -> None:
        weight = self.encoder.embedding.weight
        with torch.no_grad():  # Xavier-uniform over each table, as two nn.Embedding in the code
            for part in (weight[: self.num_users], weight[self.num_users:]):
                bound = math.sqrt(6.0 / (part.size(0) + part.size(1)))
                part.uniform_(-bound, bound)
        for mod in self.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.reset_parameters()  # PyTorch default (feature / gate layers, all biases)
        for block in [*self.projection.values(), self.decoder]:
            for layer in block:
                if isinstance(layer, torch.nn.Linear):
                    torch.nn.init.xavier_uniform_(layer.weight)
        for p in self.feature_offset.values():
            torch.nn.init.zeros_(p)

    # -- graph ---------------------------------------------------------------------------
    def prepare(self, data: HeteroData) -> AnchorGraph:
        device = self.encoder.embedding.weight.device
        feats = {m: x.to(device).float() for m, x in
                 check_in_channels(self.in_channels, data, "anchorrec").items()}
        if self.anchor_modality is None:
            keyed = {ANCHOR: anchor_feature({m: feats[m] for m in self.modalities})}
        else:
            keyed = {ANCHOR: feats[self.anchor_modality]}
        keyed.update({m: feats[m] for m in self.modalities})
        U, I = num_users(data), num_items(data)
        ei = split_edge_index(data, "train").to(device)
        graphs, edges = {}, {}
        for k, x in keyed.items():
            graphs[k], e, w = weighted_knn_adjacency(x, self.knn_k)
            edges[k] = (e, w)
        ui = coalesced_csr(ei[0], ei[1], degree_edge_probability(ei, U, I).to(device), (U, I))
        return AnchorGraph(adj=bipartite_normalized_adjacency(ei, U, I), user_item=ui,
                           item_user=transpose_csr(ui), features=keyed, item_graphs=graphs,
                           item_graphs_t={k: transpose_csr(s) for k, s in graphs.items()},
                           anchor_edges=edges[ANCHOR][0], anchor_edge_weight=edges[ANCHOR][1])

    # -- model ---------------------------------------------------------------------------
    def features(self, graph: AnchorGraph) -> Dict[str, Tensor]:
        r"""The raw features :math:`\mathbf f_k` the model reads, ``{key: [I, d_key]}`` (plus the
        trained offsets with ``finetune_features``)."""
        if not self.finetune_features:
            return graph.features
        return {k: x + self.feature_offset[k] for k, x in graph.features.items()}

    def modality_embeddings(self, graph: AnchorGraph,
                            feats: Optional[Mapping[str, Tensor]] = None) -> Dict[str, Tensor]:
        r"""Refined item modality embeddings :math:`\mathbf h^i_k`, ``{key: [I, d]}``."""
        feats = self.features(graph) if feats is None else feats
        e_items = self.encoder.embedding.weight[self.num_users:]
        out = {}
        for k in self.keys:
            h = e_items * torch.sigmoid(self.gate[k](self.feat_proj[k](feats[k])))
            for _ in range(self.num_ii_layers):
                h = sparse_mm(graph.item_graphs[k], h, adj_t=graph.item_graphs_t[k])
            out[k] = h
        return out

    def views(self, graph: AnchorGraph, feats: Optional[Mapping[str, Tensor]] = None
              ) -> Tuple[Dict[str, Tensor], Dict[str, Tensor], Dict[str, Tensor]]:
        r"""The summands of the final representations and the refined views:
        ``(user {name: [U, d]}, item {name: [I, d]}, h {key: [I, d]})`` with
        ``sum(user.values())`` / ``sum(item.values())`` the scored embeddings. User names:
        ``id`` and, with ``user_modality_views``, the fused keys; item names: ``id``, the fused
        keys and ``recon`` (:math:`\lambda_{recon}\mathrm{MLP}_{dec}(\mathbf p_{mm})`)."""
        zu, zi = self.encoder.split(self.encoder.propagate(graph.adj))
        h = self.modality_embeddings(graph, feats)
        user, item = {"id": zu}, {"id": zi}
        for k in self.fused:
            item[k] = h[k]
            if self.user_modality_views:
                user[k] = sparse_mm(graph.user_item, h[k], adj_t=graph.item_user)
        item["recon"] = self.recon_weight * self.decoder(self.projection[ANCHOR](h[ANCHOR]))
        return user, item, h

    def forward(self, graph: AnchorGraph, feats: Optional[Mapping[str, Tensor]] = None
                ) -> Tuple[Tensor, Tensor, Tensor, Dict[str, Tensor]]:
        """``(user [U, d], item [I, d], item ID view h_id [I, d], {key: h_key [I, d]})``."""
        user, item, h = self.views(graph, feats)
        return sum(user.values()), sum(item.values()), item["id"], h

    def projections(self, h_id: Tensor, h: Mapping[str, Tensor], f: Mapping[str, Tensor]
                    ) -> Tuple[Tensor, Tensor, Tensor]:
        r"""``(p_mm, p_id, p_mix)``, each ``[B, d]``, from the (already batch-indexed) views
        ``h`` and raw features ``f``."""
        p_mm = self.projection[ANCHOR](h[ANCHOR])
        p_id = self.projection["id"](h_id)
        src = f if self.mix_from_features else h
        p_mix = sum(self.mix_weights[m] * self.projection[m](src[m]) for m in self.modalities)
        return p_mm, p_id, p_mix

    @staticmethod
    def info_nce(query: Tensor, key: Tensor, tau: float) -> Tensor:
        r"""One-directional in-batch InfoNCE: mean over rows ``n`` of
        :math:`-\log \frac{e^{s(q_n, k_n)/\tau}}{\sum_m e^{s(q_n, k_m)/\tau}}`, cosine ``s``."""
        q, k = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        logits = q @ k.t() / tau
        return F.cross_entropy(logits, torch.arange(q.size(0), device=q.device))

    @staticmethod
    def aal_loss(p_mm: Tensor, p_id: Tensor, p_mix: Tensor, tau: float) -> Tensor:
        r"""Anchor-aligned learning: :math:`\mathrm{NCE}(p_{mm}, p_{id}) +
        \mathrm{NCE}(\mathrm{sg}[p_{mm}], p_{mix})` (:meth:`info_nce`, anchor as the query;
        the anchor gets no gradient from the second term)."""
        return AnchorRec.info_nce(p_mm, p_id, tau) + AnchorRec.info_nce(p_mm.detach(), p_mix, tau)

    @staticmethod
    def amp_loss(learned: Mapping[str, Tensor], raw: Mapping[str, Tensor],
                 weights: Mapping[str, float], similarity: str = "dot") -> Tensor:
        r"""Anchor-modality preservation: :math:`\sum_k \lambda_k \lVert G(H_k) - C(F_k)\rVert_F
        / B`, :math:`C(X)_{ij} = \cos(x_i, x_j)` of the raw ``raw[k]`` ``[B, d_k]`` (a
        constant) and :math:`G` the dot products (``"dot"``) or cosines (``"cosine"``) of
        ``learned[k]`` ``[B, d]``, the same ``B`` items."""
        total = 0.0
        for k, w in weights.items():
            a = learned[k] if similarity == "dot" else F.normalize(learned[k], dim=-1)
            b = F.normalize(raw[k].float(), dim=-1).detach()
            diff = a @ a.t() - b @ b.t()
            total = total + w * diff.pow(2).sum().clamp_min(1e-12).sqrt() / a.size(0)
        return total

    def loss(self, graph: AnchorGraph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        feats = self.features(graph)
        user, item, zi, h = self(graph, feats)
        u, ip, ineg = user[users], item[pos], item[neg]
        rec = bpr_loss((u * ip).sum(-1), (u * ineg).sum(-1))
        reg = embedding_l2(u, ip, ineg)
        ud = u.detach()
        margin = F.relu(self.ui_margin + F.cosine_similarity(ud, ineg, dim=-1)
                        - F.cosine_similarity(ud, ip, dim=-1)).mean()
        hb = {k: v[pos] for k, v in h.items()}
        fb = {k: v[pos].detach() for k, v in feats.items()}  # read as constants, as the code
        aal = self.aal_loss(*self.projections(zi[pos], hb, fb), self.tau)
        weights = {ANCHOR: 1.0, **self.amp_modality_weights}
        amp = self.amp_loss(hb, fb, weights, self.amp_similarity)
        z, (r, c), s = h[ANCHOR], graph.anchor_edges, graph.anchor_edge_weight
        smooth = (s * (z[r] - z[c]).pow(2).sum(-1)).mean()
        total = (rec + self.reg_weight * reg + self.ui_margin_weight * margin
                 + self.smooth_weight * smooth + self.aal_weight * aal + self.amp_weight * amp)
        return total, {"bpr": rec.detach(), "reg": reg.detach(), "margin": margin.detach(),
                       "smooth": smooth.detach(), "aal": aal.detach(), "amp": amp.detach()}

    @torch.no_grad()
    def inference(self, graph: AnchorGraph) -> Tuple[Tensor, Tensor]:
        user, item, _, _ = self(graph)
        return user, item

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)


#: Hyper-parameters of :class:`AnchorRec`: its constructor's keyword arguments, with the
#: constructor's types and defaults (:func:`~magnet_pyg.models.config.model_config`).
AnchorRecConfig = model_config(AnchorRec, "AnchorRecConfig")
