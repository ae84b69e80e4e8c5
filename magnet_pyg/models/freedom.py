r"""FREEDOM (Zhou and Shen, ACM MM 2023, "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation"), plus the small helpers the peer models share.

Helpers (used by :mod:`~magnet_pyg.models.anchorrec`, :mod:`~magnet_pyg.models.crane` and
:mod:`~magnet_pyg.models.recgoat` too):

* :func:`require_modalities` refuses datasets with fewer than two content modalities;
* :func:`knn_edge_index` turns :func:`magnet_pyg.graph.knn.knn_search` (exact torch top-k
  cosine, :math:`O(N^2 d)` once, chunked) into an edge list, optionally with self neighbours;
* :func:`knn_normalized_adjacency` turns it into FREEDOM's frozen, normalised item-item matrix;
  :func:`item_graph_weights` and :func:`modality_item_graph` weight and sum the modalities;
* :func:`degree_edge_probability` and :func:`degree_sensitive_prune` are FREEDOM's
  degree-sensitive pruning of the user-item graph;
* :func:`xavier_user_item_` and :class:`FeatureTables` reproduce the authors' initialisation of
  the ID tables and their fine-tuned raw features.

The fidelity table against the authors' code is ``docs/fidelity.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import modality_features, modality_names, num_items, num_users, split_edge_index
from ..nn.adjacency import _coalesced_csr, bipartite_normalized_adjacency, sparse_mm, transpose_csr
from ..nn.dual_view import DualViewEncoder
from ..nn.losses import triple_embedding_l2, bpr_loss
from .base import Logs, Recommender, dot_score
from .config import model_config

__all__ = ["FREEDOM", "FreedomGraph", "FeatureTables", "require_modalities", "check_in_channels",
           "knn_edge_index", "knn_normalized_adjacency", "item_graph_weights", "modality_item_graph",
           "degree_edge_probability", "degree_sensitive_prune", "xavier_user_item_"]

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


#: MMRec's ``mm_image_weight``: weight of the image (visual) modality in the item-item graph
MMREC_IMAGE_WEIGHT = 0.1
#: modality names read as MMRec's visual feature (``v_feat``, ``image_feat.npy``)
IMAGE_MODALITIES = ("image", "visual", "v")


def item_graph_weights(modalities: Sequence[str], mm_weights: Optional[Sequence[float]] = None,
                       image_weight: float = MMREC_IMAGE_WEIGHT) -> List[float]:
    r"""Weights :math:`w_m` of the frozen item-item graph :math:`S = \sum_m w_m S^m`, summing to 1.

    ``mm_weights`` (one non-negative number per modality) are renormalised. Without them the
    weights follow MMRec's FREEDOM (``mm_image_weight = 0.1``: :math:`0.1\,S^{v} + 0.9\,S^{t}`):
    an ``image`` modality gets ``image_weight`` and the other modalities share the rest equally;
    a dataset without an image modality gets equal weights.
    """
    modalities = list(modalities)
    if mm_weights is None:
        img = [m for m in modalities if m.lower() in IMAGE_MODALITIES]
        if len(img) != 1 or len(modalities) < 2:
            return [1.0 / len(modalities)] * len(modalities)
        rest = (1.0 - image_weight) / (len(modalities) - 1)
        return [image_weight if m == img[0] else rest for m in modalities]
    mm_weights = [float(w) for w in mm_weights]
    if len(mm_weights) != len(modalities) or min(mm_weights) < 0 or sum(mm_weights) <= 0:
        raise ValueError(f"mm_weights must be {len(modalities)} non-negative numbers "
                         f"(one per modality {modalities}), got {mm_weights}")
    total = sum(mm_weights)
    return [w / total for w in mm_weights]


def modality_item_graph(features: Mapping[str, Tensor], weights: Sequence[float], k: int) -> Tensor:
    r"""FREEDOM's frozen item-item graph :math:`S = \sum_m w_m S^m` (Eq. 1-4) of the raw
    features ``{m: [I, d_m]}`` (in the order of ``weights``), ``[I, I]`` ``torch.sparse_csr``."""
    mm = None
    for w, x in zip(weights, features.values()):
        s = knn_normalized_adjacency(x, k).to_sparse_coo() * w
        mm = s if mm is None else mm + s
    return mm.coalesce().to_sparse_csr()


def degree_sensitive_prune(edge_index: Tensor, edge_prob: Tensor, num_users: int, num_items: int,
                           dropout: float, generator: torch.Generator) -> Tensor:
    r"""Degree-sensitive edge pruning (FREEDOM Eq. 5-7, ``pre_epoch_processing``).

    Keeps :math:`\lfloor (1-\rho)|\mathcal E| \rfloor` of the training edges ``edge_index``
    (``[2, E]`` (user, item) pairs), drawn without replacement with probability proportional
    to ``edge_prob`` (:func:`degree_edge_probability`, :math:`1/\sqrt{d_u d_i}`), and returns
    the re-normalised ``[U+I, U+I]`` adjacency of the kept edges (on ``edge_index.device``).
    ``rho`` = ``dropout``; randomness comes only from ``generator``.
    """
    n_keep = max(1, int(edge_index.size(1) * (1.0 - dropout)))
    idx = torch.multinomial(edge_prob, n_keep, replacement=False, generator=generator)
    return bipartite_normalized_adjacency(edge_index[:, idx], num_users, num_items)


def xavier_user_item_(weight: Tensor, num_users: int) -> Tensor:
    r"""Xavier-uniform init of a joint ``[U+I, d]`` ID table as MMRec initialises its two
    separate tables ``[U, d]`` and ``[I, d]`` (bounds :math:`\sqrt{6/(U+d)}` and
    :math:`\sqrt{6/(I+d)}`)."""
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(weight[:num_users])
        torch.nn.init.xavier_uniform_(weight[num_users:])
    return weight


class FeatureTables(torch.nn.Module):
    r"""Trainable copies of the raw item features, ``{m: [I, d_m]}``.

    MMRec's FREEDOM (and CRANE's public code) load the features with
    ``nn.Embedding.from_pretrained(feat, freeze=False)``: the raw features are fine-tuned. Here
    the tables are parameters of the model, filled with the dataset's features by the first
    :meth:`load_` (from the model's ``prepare``); ``loaded`` is saved with the weights, so a
    checkpoint that is loaded before or after ``prepare`` keeps its fine-tuned features.
    """

    def __init__(self, num_items: int, in_channels: Mapping[str, int]):
        super().__init__()
        self.tables = torch.nn.ParameterDict({m: torch.nn.Parameter(torch.zeros(num_items, int(c)))
                                              for m, c in in_channels.items()})
        self.register_buffer("loaded", torch.zeros((), dtype=torch.bool))

    def reset_parameters(self) -> None:
        """Forget the loaded features (the next :meth:`load_` fills them again)."""
        with torch.no_grad():
            for p in self.tables.values():
                p.zero_()
        self.loaded.fill_(False)

    @torch.no_grad()
    def load_(self, features: Mapping[str, Tensor]) -> None:
        if bool(self.loaded):
            return
        for m, p in self.tables.items():
            if tuple(features[m].shape) != tuple(p.shape):
                raise ValueError(f"feature '{m}' has shape {tuple(features[m].shape)}, "
                                 f"the model was built for {tuple(p.shape)}")
            p.copy_(features[m])
        self.loaded.fill_(True)

    def forward(self) -> Dict[str, Tensor]:
        return dict(self.tables.items())


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
