r"""MAGNET (Dai, Fang and Cai, arXiv 2602.20723, 2026): modality-guided mixture of graph experts with
entropy-triggered routing, composed from :mod:`magnet_pyg.nn`.

* dual-view LightGCN backbone over :math:`\mathcal{G}_{UI}` and
  :math:`\mathcal{G}_{UIG} = \mathcal{G}_{UI} \cup \mathcal{E}^+` (Eq. 4-6,
  :class:`~magnet_pyg.nn.DualViewEncoder`; :math:`\mathcal{E}^+` from
  :func:`magnet_pyg.graph.add_induced_edges`, Eq. 1-3);
* modality cues :math:`\mathbf h^m` (item projections, user history pooling,
  :class:`~magnet_pyg.nn.ModalityCues`);
* triplet-template MoE head (Eq. 9-21, :class:`~magnet_pyg.nn.TripletMoEHead`);
* entropy-triggered two-stage routing regularisation (Eq. 22-26, 29-31,
  :class:`~magnet_pyg.nn.EntropySchedule`) and view contrast (Eq. 28);
* objective Eq. 32 (the :math:`\lambda\|\Theta\|^2` term is the optimiser's weight decay).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.csr_index import CSRIndex
from ..data.schema import INDUCED, modality_features, num_items, num_users, split_edge_index
from ..nn.adjacency import bipartite_normalized_adjacency, row_normalized, transpose_csr
from ..nn.cues import ModalityCues, batch_cues
from ..nn.dual_view import DualViewEncoder
from ..nn.indexing import gather_rows
from ..nn.layerwise import LayerwiseGraph, layerwise_cues, layerwise_propagate
from ..nn.losses import triple_embedding_l2, bpr_loss, confidence_loss, coverage_loss, view_infonce
from ..nn.moe import FusionHead, MoEOutput, TripletMoEHead
from ..nn.routing import EntropySchedule, routing_statistics
from ..nn.seed_propagation import encode_seeds
from ..nn.subgraph import SampledBatch, SampledGraph, unique_rows
from .base import Logs, Recommender, SamplingSpec

from .config import constructor_kwargs, model_config, suggestion, unknown_key_message


class MagnetGraph(NamedTuple):
    """What :meth:`MAGNET.prepare` builds once from the dataset."""
    adj_ui: Tensor                 # [U+I, U+I] normalised adjacency of G_UI
    adj_uig: Optional[Tensor]      # [U+I, U+I] normalised adjacency of G_UIG (None in SV)
    user_item: Tensor              # [U, I] row-normalised training matrix (history pooling)
    item_user: Tensor              # its transpose
    features: Tuple[Tensor, ...]   # per modality [I, d_m], in ``modalities`` order
    user_degree: Tensor            # [U] number of training items per user


class MagnetSampledGraph(NamedTuple):
    """What :meth:`MAGNET.prepare_sampled` builds once (no adjacency)."""
    features: Tuple[Tensor, ...]   # per modality [I, d_m], transformed, on the model's device
    history: CSRIndex              # training pairs (exact batch history pooling)


class MagnetOutput(NamedTuple):
    z: Tensor                      # [U+I, d] fused behaviour embeddings (Eq. 6)
    z_ui: Tensor                   # [U+I, d] observed view (Eq. 5)
    z_uig: Optional[Tensor]        # [U+I, d] augmented view (None in SV)
    h_u: Tensor                    # [U, M, d] user cues
    h_i: Tensor                    # [I, M, d] item cues


class MAGNET(Recommender):
    r"""MAGNET (see the module docstring).

    Args:
        num_users: ``U``.
        num_items: ``I``.
        modality_dims: ``{modality name: feature size}`` of the ``M >= 1`` content
            modalities, in the order of the expert groups after behaviour (``[B, A, S]`` for
            ``M = 2``, the paper's case; ``n = 1 + M`` sources and ``E = 3n`` experts in
            general, see :mod:`magnet_pyg.nn.templates`).
        embedding_dim: ``d``.
        num_layers: ``L`` propagation layers per view.
        view: ``"dual"`` (MAGNET-DV) or ``"single"`` (MAGNET-SV, :math:`\mathcal{E}^+ = \emptyset`).
        moe: ``True`` for the triplet MoE head, ``False`` for the "w/o MoE" fusion head.
        templates: ``False`` is the "w/o Templates" (free experts) ablation.
        num_experts: number of free experts (``templates=False`` only; default: pool size).
        top_k, families, split, alpha, beta, delta, eps: MoE head options
            (:class:`~magnet_pyg.nn.TripletMoEHead`).
        dropout: dropout on the modality cues and inside the experts.
        threshold, window, lambda_r, strategy, routing, switch_at: routing schedule
            (:class:`~magnet_pyg.nn.EntropySchedule`; ``routing`` is its ``mode``:
            ``entropy``, ``fixed``, ``coverage``, ``confidence`` or ``off``).
        lambda_ctr: weight of the view contrast (Eq. 28; dual view only).
        tau: InfoNCE temperature.
        expert_type, residual, detach_router: expert maps, behaviour residual and router
            gradient stop of the head (:class:`~magnet_pyg.nn.TripletMoEHead`).
        reg_weight: LightGCN-style L2 penalty on the layer-0 embeddings of the batch's users
            and items (one reading of Eq. 32's :math:`\lambda\|\Theta\|^2`; the optimiser's
            weight decay is the other, and both may be used).
        exclude_target: ``True`` (default) pools the user cues of a BPR triple
            :math:`(u, i, j)` over the history without the positive :math:`i`, for both the
            positive and the negative (:meth:`triple_user_cues`), so the cue products cannot
            fit training pairs through the positive's self-match and the user side is the
            same for both items; ``False`` pools the full history (the paper is silent).
        induced_weight: weight of every content-induced edge in :math:`\mathcal G_{UIG}`
            relative to an observed edge (weight 1) before the symmetric normalisation;
            ``1.0`` (default) is the paper's plain union. With ``r`` candidates per user and
            only a handful of observed items, a smaller weight keeps the augmented view
            anchored on behaviour when the content is weak.
        bpr_reduction: ``"mean"`` (default) or ``"sum"`` over the batch for the BPR term
            (Eq. 27 and Algorithm 2 sum; the ``paper-*`` presets do). The routing
            regularisers and the view contrast are batch means either way, so with the mean
            they weigh about ``B`` times more against the ranking term than in the paper.
        warmup_epochs: behaviour warm-up (the paper is silent on it). During the first
            ``warmup_epochs`` training epochs only the backbone learns, on the BPR loss of the
            plain dot product :math:`\mathbf z_u^\top\mathbf z_i` (plus the view contrast and
            the batch L2); the head, the cues and the routing schedule (its step counter
            included) start afterwards. Needs ``residual=True``, whose zero-initialised Score
            head makes the model's score during the warm-up exactly that dot product, so that
            evaluation and checkpoint selection see the model being trained. Without it, the
            router commits to content-dominant experts while the ID embeddings are still
            random (observed on TikTok, whose content alone ranks far below popularity).
        feature_norm: ``"l2"`` (default) scales every item's raw modality vector to unit
            norm before the projection (the cosine geometry of Eq. 1), so that raw feature
            magnitudes (TikTok's visual features reach 13) cannot swamp the ID embeddings in
            the expert dot products; ``"none"`` feeds the raw features.

    The defaults are the ``default`` preset (:data:`PRESETS`); :data:`MagnetConfig` holds the
    same arguments as a typed configuration.
    """

    default_patience = 5

    def __init__(
        self,
        num_users: int,
        num_items: int,
        modality_dims: Dict[str, int],
        embedding_dim: int = 64,
        num_layers: int = 2,
        view: str = "dual",
        moe: bool = True,
        templates: bool = True,
        num_experts: Optional[int] = None,
        top_k: int = 4,
        families: Union[str, Sequence[str]] = "full",
        split: int = 1,
        alpha: float = 0.6,
        beta: float = 0.2,
        delta: float = 0.5,
        eps: float = 0.05,
        dropout: float = 0.0,
        threshold: float = 0.9,
        window: int = 3,
        lambda_r: float = 0.3,
        strategy: str = "lin",
        routing: str = "entropy",
        switch_at: Optional[int] = None,
        lambda_ctr: float = 0.01,
        tau: float = 0.5,
        feature_norm: str = "l2",
        expert_type: str = "linear",
        residual: bool = False,
        detach_router: bool = False,
        reg_weight: float = 1e-4,
        exclude_target: bool = True,
        induced_weight: float = 1.0,
        warmup_epochs: int = 0,
        bpr_reduction: str = "mean",
    ):
        super().__init__()
        if len(modality_dims) < 1:
            raise ValueError(
                "MAGNET needs at least one content modality, the dataset has none; use the "
                "lightgcn or bpr model for interaction-only data")
        if bpr_reduction not in ("mean", "sum"):
            raise ValueError(f"bpr_reduction must be 'mean' or 'sum', got '{bpr_reduction}'")
        self.bpr_reduction = bpr_reduction
        if view not in ("dual", "single"):
            raise ValueError(f"view must be 'dual' or 'single', got '{view}'")
        for name, v in (("lambda_ctr", lambda_ctr), ("dropout", dropout), ("reg_weight", reg_weight)):
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if feature_norm not in ("l2", "none"):
            raise ValueError(f"feature_norm must be 'l2' or 'none', got '{feature_norm}'")
        self.feature_norm = feature_norm
        self.modalities = list(modality_dims)
        self.view = view
        self.lambda_ctr = lambda_ctr
        self.tau = tau
        self.reg_weight = reg_weight
        self.exclude_target = exclude_target
        if induced_weight <= 0:
            raise ValueError(f"induced_weight must be > 0, got {induced_weight}")
        self.induced_weight = induced_weight
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if warmup_epochs > 0 and not (moe and residual):
            raise ValueError("warmup_epochs > 0 needs the MoE head (moe=True) with residual=True: "
                             "only then is the model's score during the warm-up the backbone's")
        self.warmup_epochs = int(warmup_epochs)
        self._warming = False
        self.encoder = DualViewEncoder(num_users, num_items, embedding_dim, num_layers)
        self.cues = ModalityCues(modality_dims, embedding_dim, dropout=dropout)
        if moe:
            self.head = TripletMoEHead(embedding_dim, self.modalities, top_k=top_k, families=families,
                                       split=split, alpha=alpha, beta=beta, delta=delta, eps=eps,
                                       templates=templates, num_experts=num_experts, dropout=dropout,
                                       expert_type=expert_type, residual=residual,
                                       detach_router=detach_router)
        else:
            self.head = FusionHead(embedding_dim, len(self.modalities), dropout=dropout)
        self.moe = moe
        self.schedule = EntropySchedule(threshold, window, lambda_r, strategy, routing, switch_at)
        self._epoch_pi: list = []

    @classmethod
    def from_config(cls, num_users: int, num_items: int, modality_dims: Dict[str, int],
                    config: "MagnetConfig") -> "MAGNET":
        """A model with the constructor arguments held by ``config`` (a :data:`MagnetConfig`;
        its graph options ``knn_k``, ``expand_r``, ``knn_backend`` are for
        :func:`magnet_pyg.graph.add_induced_edges`). A ``switch_epoch`` must have been turned
        into ``switch_at`` first (:func:`resolve_switch_epoch`)."""
        if config.switch_epoch is not None and config.switch_at is None:
            raise ValueError("switch_epoch is given in epochs: turn it into switch_at steps with "
                             "resolve_switch_epoch(config, steps_per_epoch) first")
        return cls(num_users, num_items, modality_dims, **constructor_kwargs(config))

    @classmethod
    def from_preset(cls, num_users: int, num_items: int, modality_dims: Dict[str, int],
                    preset: str = "default", **overrides) -> "MAGNET":
        """A model with the hyper-parameters of :data:`PRESETS` ``[preset]``; keyword
        arguments override single fields of its :data:`MagnetConfig`."""
        return cls.from_config(num_users, num_items, modality_dims, preset_config(preset, **overrides))

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.cues.reset_parameters()
        self.head.reset_parameters()
        self.schedule.reset()

    @property
    def min_epochs(self) -> int:
        """Early stopping waits for the end of the warm-up (see ``warmup_epochs``)."""
        return self.warmup_epochs

    def on_epoch_start(self, graph: MagnetGraph, epoch: int, generator: torch.Generator) -> MagnetGraph:
        self._warming = epoch < self.warmup_epochs
        return graph

    # ------------------------------------------------------------------ graph
    def prepare(self, data: HeteroData) -> MagnetGraph:
        """Normalised adjacencies of both views, the history-pooling matrix and the features.

        The dual view needs the induced edges (:data:`~magnet_pyg.data.INDUCED`) on ``data``:
        build them with :func:`magnet_pyg.graph.add_induced_edges`.
        """
        device = self.encoder.embedding.weight.device
        U, I = num_users(data), num_items(data)
        train = split_edge_index(data, "train")
        adj_ui = bipartite_normalized_adjacency(train, U, I).to(device)
        adj_uig = None
        if self.view == "dual":
            if INDUCED not in data.edge_types:
                raise ValueError("view='dual' needs content-induced edges on the data: call "
                                 "magnet_pyg.graph.add_induced_edges(data, k, r) first, or use view='single'")
            induced = data[INDUCED].edge_index
            both = torch.cat([train, induced], dim=1)
            weight = None
            if self.induced_weight != 1.0:
                weight = torch.cat([torch.ones(train.size(1)), torch.full((induced.size(1),), self.induced_weight)])
            adj_uig = bipartite_normalized_adjacency(both, U, I, weight).to(device)
        user_item = row_normalized(train, U, I)
        feats = modality_features(data)
        missing = [m for m in self.modalities if m not in feats]
        if missing:
            raise ValueError(f"the data has no features for modalities {missing} (it has {list(feats)})")
        xs = [self.transform_features(feats[m].to(device)) for m in self.modalities]
        degree = torch.bincount(train[0], minlength=U).to(device)
        return MagnetGraph(adj_ui, adj_uig, user_item.to(device), transpose_csr(user_item).to(device),
                           tuple(xs), degree)

    def transform_features(self, x: Tensor) -> Tensor:
        """Row-wise input transform of a raw ``[N, d_m]`` modality matrix (``feature_norm``);
        row-wise, so it may be applied to any chunk of items."""
        if self.feature_norm == "l2":
            return torch.nn.functional.normalize(x, dim=1)  # zero rows stay zero
        return x

    def forward(self, graph: MagnetGraph) -> MagnetOutput:
        """Backbone (Eq. 4-6) and modality cues for all users and items."""
        z, z_ui, z_uig = self.encoder(graph.adj_ui, graph.adj_uig)
        h_u, h_i = self.cues(list(graph.features), graph.user_item, graph.item_user)
        return MagnetOutput(z, z_ui, z_uig, h_u, h_i)

    def pair_scores(self, out: MagnetOutput, users: Tensor, items: Tensor,
                    user_cues: Optional[Tensor] = None) -> MoEOutput:
        """Head output (Eq. 16-21) for ``B`` (user, item) pairs; ``user_cues`` (``[B, M, d]``)
        replaces the users' pooled cues (see :meth:`triple_user_cues`). Rows are gathered with
        :func:`~magnet_pyg.nn.gather_rows` (deterministic backward on a multi-threaded CPU)."""
        zu, zi = self.encoder.split(out.z)
        h_u = gather_rows(out.h_u, users) if user_cues is None else user_cues
        return self.head(gather_rows(zu, users), gather_rows(zi, items), h_u, gather_rows(out.h_i, items))

    def triple_user_cues(self, out: MagnetOutput, users: Tensor, pos: Tensor, degree: Tensor) -> Tensor:
        r"""User cues of the BPR triples :math:`(u, i, j)`: pooled over
        :math:`\mathcal I_u \setminus \{i\}` when ``exclude_target`` is set
        (:meth:`~magnet_pyg.nn.ModalityCues.leave_one_out`), else over :math:`\mathcal I_u`.
        The same cue scores the positive and the negative, so the user side of a triple
        carries no trace of which item is the positive."""
        h_u = gather_rows(out.h_u, users)
        if not self.exclude_target:
            return h_u
        return ModalityCues.leave_one_out(h_u, gather_rows(out.h_i, pos), degree[users])

    # ------------------------------------------------------------------ training
    def view_contrast(self, out: MagnetOutput, users: Tensor, items: Tensor) -> Tensor:
        """Eq. 28: symmetric InfoNCE between the views, over batch users plus batch items."""
        if out.z_uig is None:
            return out.z.new_zeros(())
        U = self.encoder.num_users
        u, i = torch.unique(users), torch.unique(items) + U
        return (view_infonce(out.z_ui[u], out.z_uig[u], self.tau)
                + view_infonce(out.z_ui[i], out.z_uig[i], self.tau))

    def uses_view_contrast(self, out: MagnetOutput) -> bool:
        return self.lambda_ctr > 0 and out.z_uig is not None

    def objective(self, pos: MoEOutput, neg: MoEOutput, ctr: Optional[Tensor] = None,
                  reg: Optional[Tensor] = None) -> Tuple[Tensor, Logs]:
        r"""Eq. 32 (the optimiser applies the weight decay) from the head outputs of the
        positive and negative pairs, the view contrast (Eq. 28, or ``None``) and the batch
        embedding penalty (:func:`~magnet_pyg.nn.losses.embedding_l2` of the layer-0 rows,
        weighted by ``reg_weight``, or ``None``). Advances the routing schedule with the
        positives' dense routings (Alg. 2, :math:`\Pi`)."""
        loss, logs = self._ranking_terms(bpr_loss(pos.score, neg.score, self.bpr_reduction), ctr, reg)
        if self.moe:
            sched = self.schedule.update(pos.pi)
            if sched["lambda_cov"] > 0:
                cov = coverage_loss(pos.pi)
                loss = loss + sched["lambda_cov"] * cov
                logs["cov"] = cov.detach()
            if sched["lambda_conf"] > 0:
                conf = confidence_loss(pos.pi)
                loss = loss + sched["lambda_conf"] * conf
                logs["conf"] = conf.detach()
            logs.update({k: sched[k] for k in ("entropy_norm", "n_eff", "lambda_cov", "lambda_conf",
                                               "stage", "counter")})
            self._epoch_pi.append(pos.pi.detach().mean(0))
        return loss, logs

    def loss(self, graph: MagnetGraph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        """Eq. 32 on a full-graph forward (see :meth:`objective`)."""
        out = self(graph)
        ctr = self.view_contrast(out, users, pos) if self.uses_view_contrast(out) else None
        e0, U = self.encoder.embedding.weight, self.encoder.num_users
        reg = triple_embedding_l2(e0, U, users, pos, neg) if self.reg_weight > 0 else None
        if self._warming:
            return self.backbone_objective(out, users, pos, neg, ctr, reg)
        h_u = self.triple_user_cues(out, users, pos, graph.user_degree)
        return self.objective(self.pair_scores(out, users, pos, h_u), self.pair_scores(out, users, neg, h_u),
                              ctr, reg)

    def backbone_objective(self, out: MagnetOutput, users: Tensor, pos: Tensor, neg: Tensor,
                           ctr: Optional[Tensor] = None, reg: Optional[Tensor] = None) -> Tuple[Tensor, Logs]:
        """Warm-up objective: BPR on the backbone dot product (Eq. 6 embeddings), plus the
        view contrast and the batch L2; the head and the schedule are left untouched."""
        zu, zi = self.encoder.split(out.z)
        pos_score = (gather_rows(zu, users) * gather_rows(zi, pos)).sum(-1)
        neg_score = (gather_rows(zu, users) * gather_rows(zi, neg)).sum(-1)
        loss, logs = self._ranking_terms(bpr_loss(pos_score, neg_score, self.bpr_reduction), ctr, reg)
        logs["warmup"] = 1.0
        return loss, logs

    def _ranking_terms(self, rec: Tensor, ctr: Optional[Tensor], reg: Optional[Tensor]) -> Tuple[Tensor, Logs]:
        """BPR plus the weighted view contrast and batch L2 (the part of Eq. 32 shared by the
        warm-up and the full objective)."""
        loss, logs = rec, {"bpr": rec.detach()}
        if reg is not None and self.reg_weight > 0:
            loss = loss + self.reg_weight * reg
            logs["reg"] = reg.detach()
        if ctr is not None:
            loss = loss + self.lambda_ctr * ctr
            logs["ctr"] = ctr.detach()
        return loss, logs

    def epoch_logs(self) -> Logs:
        """End-of-epoch schedule state and the epoch's routing statistics."""
        if not self.moe:
            return {}
        logs: Logs = {"stage_end": float(self.schedule.stage), "counter_end": float(self.schedule.counter),
                      "switch_step": float(self.schedule.switch_step),
                      "step_end": float(self.schedule.step)}
        if self._epoch_pi:
            stats = routing_statistics(torch.stack(self._epoch_pi))
            logs["epoch_n_eff"] = float(stats["n_eff"])
            logs["epoch_entropy_norm"] = float(stats["entropy_norm"])
            mean_pi = torch.stack(self._epoch_pi).mean(0)
            logs["expert_mass"] = [float(v) for v in mean_pi]
        self._epoch_pi = []
        return logs

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference(self, graph: MagnetGraph) -> MagnetOutput:
        return self(graph)

    def score(self, state: MagnetOutput, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        """Exact ``[B, I]`` full-ranking scores (factorised head) or ``[B]`` pair scores."""
        zu, zi = self.encoder.split(state.z)
        if self._warming and self.moe:
            # during the warm-up the head is untrained (Score head v = 0): its residual score
            # is exactly the dot product (up to the constant bias b), computed here directly
            b = self.head.score.bias
            return (zu[users] @ zi.t() if items is None else (zu[users] * zi[items]).sum(-1)) + b
        if items is None:
            return self.head.score_all(zu[users], state.h_u[users], zi, state.h_i)
        return self.head(zu[users], zi[items], state.h_u[users], state.h_i[items]).score

    # ------------------------------------------------------------------ sampled subgraphs
    def sampling_spec(self) -> SamplingSpec:
        r"""The observed view (and the augmented one in DV), one fanout per layer. The sampler
        draws the plain union :math:`\mathcal G_{UI} \cup \mathcal E^+` and the head scores from
        the first step, so ``induced_weight != 1`` and a warm-up are full-graph only."""
        if self.induced_weight != 1.0:
            raise ValueError(f"neighbour-sampled training samples the plain union G_UI + E+; "
                             f"induced_weight={self.induced_weight} is only supported in full-graph "
                             f"training (use induced_weight=1)")
        if self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} is only supported in full-graph "
                             f"training (use warmup_epochs=0)")
        return SamplingSpec(("ui", "uig") if self.view == "dual" else ("ui",), self.encoder.num_layers)

    def prepare_sampled(self, data: HeteroData) -> MagnetSampledGraph:
        """The transformed item features on the model's device and the training history
        (:class:`~magnet_pyg.data.CSRIndex`); no adjacency."""
        device = self.encoder.embedding.weight.device
        feats = modality_features(data)
        missing = [m for m in self.modalities if m not in feats]
        if missing:
            raise ValueError(f"the data has no features for modalities {missing} (it has {list(feats)})")
        xs = tuple(self.transform_features(feats[m].to(device)) for m in self.modalities)
        return MagnetSampledGraph(xs, CSRIndex(split_edge_index(data, "train"), num_users(data)))

    def sampled_loss(self, graph: SampledGraph, batch: SampledBatch) -> Tuple[Tensor, Logs]:
        """:meth:`loss` (Eq. 32) on the batch's sampled subgraph: BPR through the MoE head on
        the seed embeddings and exact batch cues (:func:`~magnet_pyg.nn.cues.batch_cues`), the
        view contrast (Eq. 28) on the batch-unique users and positives, and the routing
        schedule; equal to :meth:`loss` with fanout ``-1``."""
        z, z_ui, z_uig = encode_seeds(self.encoder, batch, graph.views, graph.rescale)
        rows = batch.seed_index()
        zu, zp, zn = (gather_rows(z, r) for r in rows)
        ctx = graph.context
        h_u, (h_p, h_n) = batch_cues(self.cues, ctx.features, ctx.history, batch.users, [batch.pos, batch.neg])
        ctr = None
        if self.lambda_ctr > 0 and z_uig is not None:
            u = unique_rows(batch.users, rows[0])
            i = unique_rows(batch.pos, rows[1])
            ctr = (view_infonce(z_ui[u], z_uig[u], self.tau) + view_infonce(z_ui[i], z_uig[i], self.tau))
        reg = None
        if self.reg_weight > 0:
            reg = triple_embedding_l2(self.encoder.embedding.weight, self.encoder.num_users,
                                      batch.users, batch.pos, batch.neg)
        if self.exclude_target:   # the triple's user cue without the positive (triple_user_cues)
            h_u = ModalityCues.leave_one_out(h_u, h_p, ctx.history.degree(batch.users.cpu()).to(h_u.device))
        return self.objective(self.head(zu, zp, h_u, h_p), self.head(zu, zn, h_u, h_n), ctr, reg)

    @torch.no_grad()
    def layerwise_inference(self, graph: LayerwiseGraph, chunk_size: int = 65536) -> MagnetOutput:
        """:meth:`inference` computed layer by layer in node chunks (``graph`` built with the
        views of :meth:`sampling_spec`)."""
        z_ui = layerwise_propagate(self.encoder, graph, "ui", chunk_size)
        z_uig = None
        if self.view == "dual":
            if "uig" not in graph.adj:
                raise ValueError("MAGNET-DV needs a LayerwiseGraph built with views=('ui', 'uig')")
            z_uig = layerwise_propagate(self.encoder, graph, "uig", chunk_size)
        z = z_ui if z_uig is None else 0.5 * (z_ui + z_uig)
        h_u, h_i = layerwise_cues(self.cues, graph, self.modalities, chunk_size, z.device,
                                  transform=self.transform_features)
        return MagnetOutput(z, z_ui, z_uig, h_u, h_i)

# ----------------------------------------------------------------------------- configuration
MagnetConfig = model_config(MAGNET, "MagnetConfig", extra=[
    ("knn_k", int, 20),
    ("expand_r", int, 10),
    ("knn_backend", str, "auto"),
    ("switch_epoch", Optional[int], None),
], doc="""Hyper-parameters of :class:`MAGNET`: its constructor's keyword arguments (types and
defaults from the constructor, which are the ``default`` preset), plus the options of the
dual view's content-induced graph (:func:`magnet_pyg.graph.add_induced_edges`): ``knn_k``
(item kNN neighbours k, Eq. 1), ``expand_r`` (candidates per user r, Eq. 2-3) and
``knn_backend`` (``auto``, ``torch``, ``faiss``, ``faiss-pca``, ``faiss-ivf``, ``faiss-hnsw``);
and ``switch_epoch``, the ``routing="fixed"`` switch given in epochs (counted after the
warm-up) instead of steps, which :func:`resolve_switch_epoch` turns into ``switch_at``.""")


@dataclass(frozen=True)
class MagnetPreset:
    """A named :data:`MagnetConfig` with the optimiser settings it was chosen with (the
    :class:`~magnet_pyg.train.TrainConfig` fields ``lr``, ``weight_decay``, ``batch_size``)."""
    config: Any  # MagnetConfig
    lr: float
    weight_decay: float
    batch_size: int

    def train_defaults(self) -> Dict[str, Any]:
        """The :class:`~magnet_pyg.train.TrainConfig` fields this preset sets."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "batch_size": self.batch_size}


def _paper(k: int, r: int, dim: int, delta: float, beta: float, threshold: float, window: int,
           lambda_r: float, lr: float, weight_decay: float, dropout: float, tau: float) -> MagnetPreset:
    """One column of the paper's Table 3 with Section 4.3's protocol (batch 1024, 1:1 negatives,
    Adam, patience 5, at most 200 epochs) and none of this package's additions: raw features
    (no L2 row normalisation), history pooling over every training item (no leave-one-out),
    BPR summed over the batch (Eq. 27, Algorithm 2), no batch L2 (the weight decay is Eq. 32's
    lambda), no residual head, no warm-up, no router gradient stop."""
    cfg = MagnetConfig(knn_k=k, expand_r=r, embedding_dim=dim, delta=delta, beta=beta,
                       threshold=threshold, window=window, lambda_r=lambda_r, dropout=dropout, tau=tau,
                       reg_weight=0.0, feature_norm="none", exclude_target=False, bpr_reduction="sum")
    return MagnetPreset(cfg, lr=lr, weight_decay=weight_decay, batch_size=1024)


_DEFAULT = MagnetPreset(MagnetConfig(), lr=1e-3, weight_decay=0.0, batch_size=2048)

#: the paper's Table 3 (``paper-*``) and this package's presets, each chosen on a dataset's
#: validation split; ``docs/fidelity.md`` lists how each departs from the paper.
PRESETS: Dict[str, MagnetPreset] = {
    # Table 3 of the paper, one column each, as _paper describes
    "paper-baby": _paper(20, 150, 64, 0.5, 0.2, 0.90, 3, 0.30, 1e-3, 2e-5, 0.10, 0.5),
    "paper-sports": _paper(20, 200, 64, 0.4, 0.2, 0.87, 4, 0.30, 1.5e-3, 2e-5, 0.20, 1.5),
    "paper-clothing": _paper(30, 200, 48, 0.8, 0.1, 0.90, 5, 0.40, 1e-3, 4e-5, 0.20, 0.2),
    "paper-electronics": _paper(30, 200, 48, 0.6, 0.2, 0.87, 5, 0.30, 1e-3, 2e-4, 0.15, 0.2),
    # any other dataset: MAGNET's defaults (MagnetConfig()): Table 3's template and schedule
    # values with a LightGCN-style optimiser (batch 2048, batch-embedding L2 1e-4 instead of
    # weight decay, no dropout) and r = 10, chosen on TikTok's validation split (r = 40 and 150
    # were worse there)
    "default": _DEFAULT,
    # TikTok (not in Table 3): the defaults plus a 60-epoch behaviour warm-up (about where
    # LightGCN peaks on validation there) under the residual head, and a router whose
    # gradient stops at the behaviour embeddings, both chosen on TikTok's validation split:
    # without the warm-up the router commits to content experts on random IDs; without the
    # gradient stop the confidence loss that sharpens the routing after the switch also
    # reshapes the warmed-up embeddings
    "tiktok": replace(_DEFAULT, config=replace(_DEFAULT.config, residual=True, warmup_epochs=60,
                                               detach_router=True)),
    # the ``tiktok`` preset without its warm-up, for a backbone warm-started from a trained
    # LightGCN run (TrainConfig.init_from): the warm-up's objective is LightGCN's, so for the
    # single view this is the warm-up done once and shared between runs
    "warm-start": replace(_DEFAULT, config=replace(_DEFAULT.config, residual=True, detach_router=True)),
    # the built-in synthetic dataset (``synthetic`` is ``synthetic-small``): the defaults with
    # diagonal ("lightweight") experts and Quad-Ent weights (Table 6), chosen on its validation
    # split; Quad-Ent's weaker confidence pressure once routing has sharpened slows the collapse
    # onto a single expert
    "synthetic-small": replace(_DEFAULT, config=replace(_DEFAULT.config, expert_type="diag", strategy="quad")),
}


def preset_config(preset: str = "default", **overrides) -> Any:
    """The :data:`MagnetConfig` of :data:`PRESETS` ``[preset]`` with single fields replaced."""
    if preset not in PRESETS:
        raise ValueError(f"unknown MAGNET preset '{preset}'; {suggestion(preset, sorted(PRESETS))}")
    fields = MagnetConfig.__dataclass_fields__
    for key in overrides:
        if key not in fields:
            raise ValueError(unknown_key_message(key, list(fields), "not a MagnetConfig field"))
    return replace(PRESETS[preset].config, **overrides)


def resolve_switch_epoch(config: Any, steps_per_epoch: int) -> Any:
    """``config`` with ``switch_at`` set from ``switch_epoch`` (``routing="fixed"``): the
    schedule switches at the start of that epoch, ``max(1, switch_epoch * steps_per_epoch)``
    steps after the warm-up. Unchanged when ``switch_epoch`` is ``None``."""
    if config.switch_epoch is None:
        return config
    if config.routing != "fixed":
        raise ValueError(f"switch_epoch is the switch of routing='fixed', but routing is '{config.routing}'")
    if config.switch_epoch < 0:
        raise ValueError(f"switch_epoch must be >= 0, got {config.switch_epoch}")
    steps = max(1, int(config.switch_epoch) * int(steps_per_epoch))
    if config.switch_at is not None and config.switch_at != steps:
        raise ValueError(f"switch_epoch {config.switch_epoch} ({steps} steps) and switch_at "
                         f"{config.switch_at} disagree: give one of them")
    return replace(config, switch_at=steps)
