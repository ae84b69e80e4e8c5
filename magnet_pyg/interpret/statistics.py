r"""Routing statistics of MAGNET's **dense** routing distribution :math:`\pi_{ui}` (paper
Sections 4.9 and 4.11, Eq. 33-34).

Everything here is computed from the dense :math:`\pi_{ui} \in \Delta^{E-1}` (Eq. 17), before
Top-K sparsification, as the paper prescribes for its analyses.

**Dataset-level profile** (Section 4.9), over the (user, item) interactions of an evaluation
split :math:`\mathcal D_{eval}`:

* :math:`\bar\pi = \mathbb E_{(u,i) \sim \mathcal D_{eval}}[\pi_{ui}]` (Eq. 33);
* :math:`H(\bar\pi) = -\sum_e \bar\pi_e \log \bar\pi_e` (natural log),
  :math:`N_{eff} = \exp H`, :math:`\mathrm{HHI} = \sum_e \bar\pi_e^2`,
  :math:`\mathrm{Div} = H / \log E \in [0, 1]` (Eq. 34; ``Div = 1`` when ``E = 1``);
* **modality reliance** ``group_mass[g]`` :math:`= \sum_{e:\ \mathrm{anchor}(e) = g} \bar\pi_e`
  (mass of the experts anchored on source ``g`` in ``[B, A, S]``) and the **content share**
  :math:`(A + S) = 1 - \text{group\_mass}[B]`;
* **family mass** ``family_mass[t]`` :math:`= \sum_{e:\ \mathrm{family}(e) = t} \bar\pi_e` for
  ``t`` in Dom / Bal / Com;
* ``source_weight[s]`` :math:`= \sum_e \bar\pi_e\, w_e[s]`, the template-weighted share of
  source ``s`` (how much of the fused input comes from ``s`` on average; our addition: it also
  counts the auxiliary slots, which ``group_mass`` ignores).

  **Caveat (why both are reported).** A Com expert anchored on ``g`` gives ``g`` only
  :math:`\epsilon` (Eq. 14): it is the expert that *avoids* ``g``. So ``group_mass`` (the
  paper's anchor aggregation) can be high for a source the router is steering away from:
  with one informative and one pure-noise modality, MAGNET routes most mass to
  ``noise-Com`` (5 % noise, 47.5 % informative, 47.5 % behaviour), i.e. ``group_mass[noise]``
  is the largest while ``source_weight[noise]`` drops far below the uniform-routing 1/3.
  ``source_weight`` is the quantity to read as "how much the fused input relies on ``s``".

**Per-pair decisiveness and load** (Section 4.11; the paper names these without formulas,
so the definitions below are ours). With :math:`\pi_{(1)} \ge \pi_{(2)} \ge \dots` the sorted
entries of one pair's :math:`\pi_{ui}`, averaged over the pairs:

* ``winner_share`` :math:`= \mathbb E[\pi_{(1)}]`  ("Top-1 routing probability", Fig. 8);
* ``top3_mass`` :math:`= \mathbb E[\pi_{(1)} + \pi_{(2)} + \pi_{(3)}]` (Top3Mass, "probability
  mass on the top-3 experts", Fig. 7; all of it when ``E <= 3``);
* ``top12_gap`` :math:`= \mathbb E[\pi_{(1)} - \pi_{(2)}]` (the top1-top2 confidence margin,
  Fig. 7 bottom right; 1 when ``E = 1``);
* ``pair_entropy_norm`` :math:`= \mathbb E[H(\pi_{ui}) / \log E]` (per-pair uncertainty);
* ``max_load`` :math:`= \max_e \bar\pi_e` (MaxLoad share, "the maximum expert traffic
  fraction", with traffic measured softly by the routing mass) and ``max_load_hard``
  :math:`= \max_e \Pr[\arg\max \pi_{ui} = e]` (traffic measured by each pair's winner);
* ``spec_score`` :math:`= 1 - \mathrm{Div}` (SpecScore, "the complement of the normalised
  routing entropy"). Over training (:func:`epoch_dynamics`) the entropy is the controller's
  mini-batch signal :math:`\tilde H(\bar\pi_{batch})` of Eq. 24, averaged over the epoch's steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..nn.templates import FAMILIES

__all__ = [
    "ExpertLayout", "concentration", "pair_summary", "RoutingAccumulator", "routing_profile",
    "routing_of_pairs", "split_routing_statistics", "epoch_dynamics",
]


# ----------------------------------------------------------------------------- expert layout
@dataclass(frozen=True)
class ExpertLayout:
    r"""Where each expert sits in the ``group x family`` grid, and its fusion weights.

    Attributes:
        labels: per-expert label (``"B-Dom"``, ``"image-Bal#1"``, ``"free-3"``).
        sources: source names in global order ``[B, A, S, ...]`` (also the group names).
        families: the template families present, in canonical order (a subset of Dom/Bal/Com).
        group_index: ``[E]`` index of each expert's anchor in ``sources`` (``None`` for free
            experts, which have no anchor).
        family_index: ``[E]`` index of each expert's family in ``families`` (``None`` likewise).
        weights: ``[E, n]`` fusion weights :math:`\mathbf w_e` over ``sources`` (the fixed
            templates, or the learned mixtures of free experts).
    """

    labels: Tuple[str, ...]
    sources: Tuple[str, ...]
    families: Tuple[str, ...]
    group_index: Optional[Tensor]
    family_index: Optional[Tensor]
    weights: Tensor

    @property
    def num_experts(self) -> int:
        return len(self.labels)

    @property
    def structured(self) -> bool:
        """Whether experts have an anchor group and a family (template pools)."""
        return self.group_index is not None

    @classmethod
    def from_model(cls, model: Any) -> "ExpertLayout":
        """Layout of a MAGNET model's head (or of a :class:`~magnet_pyg.nn.TripletMoEHead`)."""
        head = getattr(model, "head", model)
        if not hasattr(head, "expert_weights") or not hasattr(head, "router"):
            raise ValueError("routing statistics need MAGNET's triplet MoE head; this model has "
                             f"{type(head).__name__} (a model without the MoE head, moe=False, has no routing)")
        weights = head.expert_weights().detach().float().cpu()
        labels = tuple(head.expert_labels())
        pool = getattr(head, "pool", None)
        if pool is None:
            return cls(labels, tuple(head.sources), (), None, None, weights)
        fams = tuple(f for f in FAMILIES if f in set(pool.families))
        fam_idx = torch.tensor([fams.index(f) for f in pool.families], dtype=torch.long)
        return cls(labels, tuple(pool.sources), fams, pool.group_index.clone(), fam_idx, weights)

    def group_mass(self, pi: Tensor) -> Tensor:
        """``[..., G]`` mass per anchor group of ``pi [..., E]``."""
        self._need_structure()
        out = pi.new_zeros(*pi.shape[:-1], len(self.sources))
        return out.index_add_(-1, self.group_index.to(pi.device), pi)

    def family_mass(self, pi: Tensor) -> Tensor:
        """``[..., T]`` mass per family of ``pi [..., E]``."""
        self._need_structure()
        out = pi.new_zeros(*pi.shape[:-1], len(self.families))
        return out.index_add_(-1, self.family_index.to(pi.device), pi)

    def grid(self, pi: Tensor) -> Tensor:
        """``[..., G, T]`` group x family mass of ``pi [..., E]`` (replicas summed)."""
        self._need_structure()
        G, T = len(self.sources), len(self.families)
        cell = (self.group_index * T + self.family_index).to(pi.device)
        out = pi.new_zeros(*pi.shape[:-1], G * T).index_add_(-1, cell, pi)
        return out.view(*pi.shape[:-1], G, T)

    def source_weight(self, pi: Tensor) -> Tensor:
        r"""``[..., n]``: :math:`\sum_e \pi_e \mathbf w_e` (template-weighted source shares)."""
        return pi @ self.weights.to(pi.device, pi.dtype)

    def _need_structure(self) -> None:
        if not self.structured:
            raise ValueError("free experts (a model built with templates=False) have no anchor "
                             "group or family; only expert-level statistics are defined")


# ----------------------------------------------------------------------------- core statistics
def concentration(pibar: Tensor) -> Dict[str, float]:
    r"""Eq. 34 on a distribution ``pibar [E]``: ``entropy``, ``n_eff``, ``hhi``, ``div``
    (normalised entropy; 1 when ``E = 1``) and ``spec_score = 1 - div``."""
    p = pibar.detach().double().flatten()
    if p.numel() == 0:
        raise ValueError("empty routing distribution")
    p = p / p.sum()
    h = float(-torch.xlogy(p, p).sum())
    E = p.numel()
    div = h / math.log(E) if E > 1 else 1.0
    return {"num_experts": E, "entropy": h, "n_eff": math.exp(h), "hhi": float((p * p).sum()),
            "div": div, "spec_score": 1.0 - div}


def _sorted_desc(pi: Tensor) -> Tensor:
    return pi.sort(dim=-1, descending=True).values


def pair_summary(pi: Tensor) -> Dict[str, float]:
    r"""Per-pair decisiveness and load statistics of ``pi [B, E]`` (module docstring)."""
    acc = RoutingAccumulator(pi.size(-1))
    acc.update(pi)
    return acc.compute()


class RoutingAccumulator:
    r"""Streams dense routing batches ``pi [B, E]`` and returns every statistic of the module
    docstring over all pairs seen (float64 sums, so the order of the batches does not matter).

    :meth:`compute` returns ``num_pairs``, ``pibar`` (list of E floats, Eq. 33), the Eq. 34
    numbers of :func:`concentration` on ``pibar``, and ``winner_share``, ``top3_mass``,
    ``top12_gap``, ``pair_entropy_norm``, ``max_load``, ``max_load_hard``, ``top1_load``
    (fraction of pairs whose winner is each expert).
    """

    def __init__(self, num_experts: int):
        self.num_experts = int(num_experts)
        self.reset()

    def reset(self) -> None:
        E = self.num_experts
        self.n = 0
        self.sum_pi = torch.zeros(E, dtype=torch.float64)
        self.top1 = torch.zeros(E, dtype=torch.float64)
        self.sums = {"winner_share": 0.0, "top3_mass": 0.0, "top12_gap": 0.0,
                     "pair_entropy_norm": 0.0}

    @torch.no_grad()
    def update(self, pi: Tensor) -> None:
        if pi.dim() != 2 or pi.size(1) != self.num_experts:
            raise ValueError(f"pi must have shape [B, {self.num_experts}], got {tuple(pi.shape)}")
        if pi.size(0) == 0:
            return
        p = pi.detach().double().cpu()
        srt = _sorted_desc(p)
        E = self.num_experts
        self.n += p.size(0)
        self.sum_pi += p.sum(0)
        self.top1 += torch.bincount(p.argmax(1), minlength=E).double()
        self.sums["winner_share"] += float(srt[:, 0].sum())
        self.sums["top3_mass"] += float(srt[:, :3].sum())
        gap = srt[:, 0] - srt[:, 1] if E > 1 else torch.ones_like(srt[:, 0])
        self.sums["top12_gap"] += float(gap.sum())
        h = -torch.xlogy(p, p).sum(1)
        self.sums["pair_entropy_norm"] += float((h / math.log(E)).sum()) if E > 1 else float(p.size(0))

    def compute(self) -> Dict[str, Any]:
        if self.n == 0:
            raise ValueError("no routing distributions were accumulated")
        pibar = self.sum_pi / self.n
        top1 = self.top1 / self.n
        out: Dict[str, Any] = {"num_pairs": self.n, "pibar": [float(v) for v in pibar]}
        out.update(concentration(pibar))
        out.update({k: v / self.n for k, v in self.sums.items()})
        out["max_load"] = float(pibar.max())
        out["max_load_hard"] = float(top1.max())
        out["top1_load"] = [float(v) for v in top1]
        return out


def routing_profile(pibar: Tensor, layout: ExpertLayout) -> Dict[str, Any]:
    r"""Section 4.9 profile of a mean routing vector ``pibar [E]`` (renormalised to sum to 1):
    Eq. 34 numbers, the mass per
    expert, per modality group (with the content share ``A + S``), per family, and the
    template-weighted source shares (see the module docstring)."""
    p = torch.as_tensor(pibar, dtype=torch.float64).flatten()
    if p.numel() != layout.num_experts:
        raise ValueError(f"pibar has {p.numel()} entries, the layout {layout.num_experts} experts")
    p = p / p.sum()   # exact simplex (float32 routings sum to 1 only up to rounding)
    out: Dict[str, Any] = dict(concentration(p))
    out["uniform_expert_mass"] = 1.0 / layout.num_experts        # reference lines of the figure
    out["uniform_source_share"] = 1.0 / len(layout.sources)
    flat = torch.full((layout.num_experts,), 1.0 / layout.num_experts, dtype=torch.float64)
    out["source_weight_uniform_routing"] = {s: float(v) for s, v in
                                            zip(layout.sources, layout.source_weight(flat))}
    out["expert_mass"] = {lab: float(v) for lab, v in zip(layout.labels, p)}
    out["source_weight"] = {s: float(v) for s, v in zip(layout.sources, layout.source_weight(p))}
    if layout.structured:
        gm = layout.group_mass(p)
        out["group_mass"] = {s: float(v) for s, v in zip(layout.sources, gm)}
        out["content_share"] = float(gm[1:].sum())
        out["family_mass"] = {f: float(v) for f, v in zip(layout.families, layout.family_mass(p))}
        out["grid"] = [[float(v) for v in row] for row in layout.grid(p)]
    return out


# ----------------------------------------------------------------------------- from a model
@torch.no_grad()
def routing_of_pairs(model: Any, pairs: Tensor, state: Any = None, graph: Any = None,
                     batch_size: int = 16384) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Evaluation-mode head outputs of a MAGNET model for ``pairs [2, P]`` (user, item).

    Args:
        model: a trained :class:`~magnet_pyg.models.MAGNET`.
        pairs: ``[2, P]`` user and item ids.
        state: ``model.inference(graph)`` if already computed (else ``graph`` is needed).
        graph: ``model.prepare(data)``.

    Returns:
        ``(score [P], pi [P, E], topk_index [P, K], topk_weight [P, K])`` on the CPU.
    """
    was_training = model.training
    model.eval()
    try:
        if state is None:
            if graph is None:
                raise ValueError("give either state (model.inference(graph)) or graph")
            state = model.inference(graph)
        device = state.z.device
        parts: List[Tuple[Tensor, ...]] = []
        for s in range(0, pairs.size(1), batch_size):
            u = pairs[0, s:s + batch_size].to(device)
            i = pairs[1, s:s + batch_size].to(device)
            o = model.pair_scores(state, u, i)
            parts.append(tuple(t.detach().cpu() for t in (o.score, o.pi, o.topk_index, o.topk_weight)))
    finally:
        model.train(was_training)
    if not parts:
        E = ExpertLayout.from_model(model).num_experts
        K = int(getattr(model.head, "top_k", 1))
        return (torch.zeros(0), torch.zeros(0, E), torch.zeros(0, K, dtype=torch.long),
                torch.zeros(0, K))
    return tuple(torch.cat([p[k] for p in parts]) for k in range(4))  # type: ignore[return-value]


def split_routing_statistics(model: Any, data: Any, split: str = "test", state: Any = None,
                             graph: Any = None, batch_size: int = 16384) -> Dict[str, Any]:
    r"""Section 4.9 statistics of ``model`` over the interactions of ``split``.

    Returns :func:`routing_profile` of :math:`\bar\pi` (Eq. 33) plus the per-pair statistics
    of :class:`RoutingAccumulator` (``winner_share``, ``top3_mass``, ``top12_gap``, ``max_load``,
    ...), ``split``, ``num_pairs``, ``labels``, ``sources`` and ``families``.
    """
    from ..data.schema import split_edge_index
    pairs = split_edge_index(data, split)
    if pairs.size(1) == 0:
        raise ValueError(f"split '{split}' has no interactions")
    if state is None and graph is None:
        graph = model.prepare(data)
    layout = ExpertLayout.from_model(model)
    _, pi, _, _ = routing_of_pairs(model, pairs, state=state, graph=graph, batch_size=batch_size)
    acc = RoutingAccumulator(layout.num_experts)
    acc.update(pi)
    stats = acc.compute()
    out: Dict[str, Any] = {"split": split, "labels": list(layout.labels),
                           "sources": list(layout.sources), "families": list(layout.families)}
    out.update(routing_profile(torch.tensor(stats["pibar"], dtype=torch.float64), layout))
    out.update({k: v for k, v in stats.items() if k not in out})
    return out


# ----------------------------------------------------------------------------- over training
_MONITORED = ("winner_share", "top3_mass", "top12_gap", "max_load_hard", "pair_entropy_norm")


def _switch_position(history: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Where the stage switch happened, on the epoch axis (see :func:`epoch_dynamics`)."""
    switch_step = None
    for rec in history:
        if "switch_step" in rec and float(rec["switch_step"]) >= 0:
            switch_step = int(rec["switch_step"])
            break
    if switch_step is None:
        return {"step": None, "epoch": None, "position": None}
    prev_end = 0
    for rec in history:
        end = int(rec.get("step_end", 0))
        if end >= switch_step:
            span = max(end - prev_end, 1)
            frac = min(max((switch_step - prev_end) / span, 0.0), 1.0)
            return {"step": switch_step, "epoch": int(rec["epoch"]),
                    "position": float(rec["epoch"]) - 0.5 + frac}
        prev_end = end
    return {"step": switch_step, "epoch": None, "position": None}


def epoch_dynamics(history: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    r"""Per-epoch routing dynamics from the ``epochs`` entries of a run's ``results.json``.

    Per epoch ``e`` (lists aligned with ``epoch``):

    * ``entropy_norm``: mean over the epoch's steps of the controller's mini-batch
      :math:`\tilde H(\bar\pi_{batch})` (Eq. 24); ``spec_score = 1 - entropy_norm`` (SpecScore);
    * ``n_eff``: mean over steps of the mini-batch :math:`N_{eff}` (Eq. 25); ``epoch_n_eff``,
      ``epoch_hhi``: Eq. 34 on the epoch's mean routing vector ``expert_mass``;
      ``n_eff_norm = (N_eff - 1)/(E - 1)`` and ``hhi_norm = (HHI - 1/E)/(1 - 1/E)`` put these on
      ``[0, 1]`` (Fig. 8's "normalised" curves; a fixed theoretical range, not a per-curve
      min-max, so runs stay comparable);
    * ``lambda_cov``, ``lambda_conf``: step means of the regulariser weights; ``stage_end``:
      the stage (1 coverage / 2 confidence) at the end of the epoch;
    * ``max_load = max(expert_mass)`` (MaxLoad share, soft traffic);
    * ``winner_share``, ``top3_mass``, ``top12_gap``: per-pair means over the epoch's observed
      training pairs when the run was recorded with :class:`~magnet_pyg.interpret.RoutingMonitor`
      (``basis = "pair"``); otherwise the same formulas applied to the epoch's mean routing
      vector ``expert_mass`` (``basis = "mean"``; then ``winner_share == max_load``). Which one
      was used is stated in ``basis``.

    ``switch``: ``{"step", "epoch", "position"}`` of the switch to stage 2 (``None`` if it
    never happened): the training step, the epoch it fell in, and its position on the epoch
    axis, where epoch ``e`` spans ``[e - 0.5, e + 0.5]`` and the position is
    ``e - 0.5 + (fraction of epoch e's steps taken before the switch)``.
    ``steps``: step-level traces (``spec_score``, ``stage``) when recorded by the monitor.
    """
    recs = [r for r in history if "expert_mass" in r]
    if not recs:
        raise ValueError("the run's epochs carry no routing statistics (expert_mass): "
                         "was it trained with MAGNET's MoE head?")
    E = len(recs[0]["expert_mass"])
    monitored = all(f"routing_{k}" in r for r in recs for k in _MONITORED)
    out: Dict[str, Any] = {"num_experts": E, "basis": "pair" if monitored else "mean"}
    keys = ("epoch", "entropy_norm", "spec_score", "n_eff", "epoch_n_eff", "n_eff_norm",
            "epoch_hhi", "hhi_norm", "lambda_cov", "lambda_conf", "stage_end", "max_load",
            "winner_share", "top3_mass", "top12_gap", "valid_ndcg@20")
    cols: Dict[str, List[Optional[float]]] = {k: [] for k in keys}
    for r in recs:
        m = torch.tensor(r["expert_mass"], dtype=torch.float64)
        c = concentration(m)
        srt = _sorted_desc(m)
        h = float(r.get("entropy_norm", r.get("epoch_entropy_norm", c["div"])))
        cols["epoch"].append(int(r["epoch"]))
        cols["entropy_norm"].append(h)
        cols["spec_score"].append(1.0 - h)
        cols["n_eff"].append(float(r.get("n_eff", c["n_eff"])))
        cols["epoch_n_eff"].append(c["n_eff"])
        cols["n_eff_norm"].append((c["n_eff"] - 1.0) / (E - 1) if E > 1 else 0.0)
        cols["epoch_hhi"].append(c["hhi"])
        cols["hhi_norm"].append((c["hhi"] - 1.0 / E) / (1.0 - 1.0 / E) if E > 1 else 1.0)
        cols["lambda_cov"].append(float(r.get("lambda_cov", 0.0)))
        cols["lambda_conf"].append(float(r.get("lambda_conf", 0.0)))
        cols["stage_end"].append(float(r["stage_end"]) if "stage_end" in r else None)
        cols["max_load"].append(float(srt[0]))
        if monitored:
            cols["winner_share"].append(float(r["routing_winner_share"]))
            cols["top3_mass"].append(float(r["routing_top3_mass"]))
            cols["top12_gap"].append(float(r["routing_top12_gap"]))
        else:
            cols["winner_share"].append(float(srt[0]))
            cols["top3_mass"].append(float(srt[:3].sum()))
            cols["top12_gap"].append(float(srt[0] - srt[1]) if E > 1 else 1.0)
        nd = r.get("valid", {}).get("ndcg@20")
        cols["valid_ndcg@20"].append(None if nd is None else float(nd))
    out.update(cols)
    out["switch"] = _switch_position(history)
    steps = [r for r in recs if "routing_steps_spec_score" in r]
    if steps and len(steps) == len(recs):
        spec, stage, pos = [], [], []
        for r in steps:
            n = len(r["routing_steps_spec_score"])
            spec += [float(v) for v in r["routing_steps_spec_score"]]
            stage += [float(v) for v in r["routing_steps_stage"]]
            pos += [float(r["epoch"]) - 0.5 + (k + 1) / n for k in range(n)]
        out["steps"] = {"position": pos, "spec_score": spec, "stage": stage}
    return out
