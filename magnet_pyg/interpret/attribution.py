r"""Per-recommendation routing attribution (paper Section 5.3, Fig. 14).

For one (user, item) pair with dense routing :math:`\pi_{ui}` (Eq. 17), selected experts
:math:`\Gamma_{ui}` (Eq. 18) and renormalised weights :math:`\tilde\pi_{ui}` (Eq. 19):

* ``grid``: the ``group x family`` routing mass, :math:`M[g, t] = \sum_{e:\ (g_e, t_e) = (g,
  t)} \pi_{ui,e}`, normalised so the cells sum to 1 (Fig. 14's 3x3 heatmap; replicas of
  split experts are summed); ``group_mass`` / ``family_mass`` are its row / column marginals
  (Fig. 14's "modality mass" and "family mass" bars);
* ``n_eff`` :math:`= \exp H(\pi_{ui})` and ``hhi`` :math:`= \sum_e \pi_{ui,e}^2` of the pair's
  dense routing (Eq. 34 applied to one pair);
* ``top_experts``: the ``K`` experts that produced the score (:math:`\Gamma_{ui}`), by
  decreasing :math:`\pi`, each with its dense :math:`\pi` and its renormalised weight
  :math:`\tilde\pi`;
* ``modality_contribution[s]`` :math:`= \sum_{e \in \Gamma_{ui}} \tilde\pi_e\, w_e[s]`: the share
  of source ``s`` in the fused input actually used for the score (template weight
  :math:`w_e[s]`, Eq. 12-15, of each selected expert, weighted by how much that expert counts);
  it sums to 1 over the sources. ``modality_contribution_dense`` is the same with the dense
  :math:`\pi` over all experts.

A user's top-N list (:func:`explain_user`) is the exact full ranking (training items masked),
each recommendation with its attribution, plus the list-level profile of the mean routing
over the N pairs.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from .statistics import ExpertLayout, concentration, routing_of_pairs, routing_profile

__all__ = ["attribute_pairs", "explain_user"]


def _attribution(layout: ExpertLayout, user: int, item: int, score: float, pi: Tensor,
                 idx: Tensor, weight: Tensor) -> Dict[str, Any]:
    p = pi.double()
    p = p / p.sum()
    c = concentration(p)
    labels = layout.labels
    order = sorted(range(idx.numel()), key=lambda k: -float(p[int(idx[k])]))
    top = []
    for k in order:
        e = int(idx[k])
        rec = {"expert": labels[e], "index": e, "pi": float(p[e]), "weight": float(weight[k])}
        if layout.structured:
            rec["group"] = layout.sources[int(layout.group_index[e])]
            rec["family"] = layout.families[int(layout.family_index[e])]
        top.append(rec)
    sparse = torch.zeros_like(p)
    sparse[idx.long()] = weight.double()
    out: Dict[str, Any] = {
        "user": int(user), "item": int(item), "score": float(score),
        "pi": [float(v) for v in p],
        "n_eff": c["n_eff"], "hhi": c["hhi"], "div": c["div"],
        "top_experts": top,
        "modality_contribution": {s: float(v) for s, v in
                                  zip(layout.sources, layout.source_weight(sparse))},
        "modality_contribution_dense": {s: float(v) for s, v in
                                        zip(layout.sources, layout.source_weight(p))},
    }
    if layout.structured:
        grid = layout.grid(p)
        grid = grid / grid.sum()
        out["grid"] = [[float(v) for v in row] for row in grid]
        out["group_mass"] = {s: float(v) for s, v in zip(layout.sources, grid.sum(1))}
        out["family_mass"] = {f: float(v) for f, v in zip(layout.families, grid.sum(0))}
    return out


def attribute_pairs(model: Any, users: Sequence[int] | Tensor, items: Sequence[int] | Tensor,
                    state: Any = None, graph: Any = None) -> List[Dict[str, Any]]:
    r"""Attribution (module docstring) of each ``(users[k], items[k])`` pair.

    Args:
        model: a trained :class:`~magnet_pyg.models.MAGNET` (MoE head).
        users, items: equally long id lists.
        state: ``model.inference(graph)`` if already computed (else ``graph`` is needed).
        graph: ``model.prepare(data)``.

    Returns:
        one JSON-ready dict per pair: ``user``, ``item``, ``score``, ``pi``, ``grid``,
        ``group_mass``, ``family_mass``, ``n_eff``, ``hhi``, ``div``, ``top_experts``,
        ``modality_contribution``, ``modality_contribution_dense``.
    """
    layout = ExpertLayout.from_model(model)
    u = torch.as_tensor(users, dtype=torch.long).view(-1)
    i = torch.as_tensor(items, dtype=torch.long).view(-1)
    if u.numel() != i.numel():
        raise ValueError(f"users and items must have the same length, got {u.numel()} and {i.numel()}")
    score, pi, idx, w = routing_of_pairs(model, torch.stack([u, i]), state=state, graph=graph)
    return [_attribution(layout, int(u[k]), int(i[k]), float(score[k]), pi[k], idx[k], w[k])
            for k in range(u.numel())]


@torch.no_grad()
def explain_user(model: Any, data: Any, user: int, top_n: int = 10, state: Any = None,
                 graph: Any = None, items: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    r"""A user's top-``top_n`` recommendations with their routing attribution.

    The list is the exact full ranking of :meth:`MAGNET.score` with the user's training items
    masked (the evaluation protocol). ``items`` explains those items instead (ranks are still
    reported). Each entry carries :func:`attribute_pairs`' fields plus ``rank`` (1-based, among
    the non-training items), ``in_valid`` / ``in_test`` (whether it is one of the user's
    held-out interactions). ``list`` is :func:`~magnet_pyg.interpret.routing_profile` of the
    mean dense routing over the explained pairs (``grid`` normalised to sum to 1, marginals,
    ``n_eff``, ``hhi``, ``div``, mean ``modality_contribution``).
    """
    from ..data.schema import num_items, num_users, split_edge_index
    U, I = num_users(data), num_items(data)
    if not 0 <= int(user) < U:
        raise ValueError(f"user {user} out of range [0, {U})")
    if top_n < 1:
        raise ValueError(f"top must be >= 1, got {top_n}")
    if state is None:
        graph = graph if graph is not None else model.prepare(data)
        was = model.training
        model.eval()
        state = model.inference(graph)
        model.train(was)
    was = model.training
    model.eval()
    try:
        device = state.z.device
        scores = model.score(state, torch.tensor([int(user)], device=device)).view(-1).cpu().double()
    finally:
        model.train(was)

    def items_of(split: str) -> set:
        ei = split_edge_index(data, split)
        return set(ei[1, ei[0] == int(user)].tolist())

    train, valid, test = items_of("train"), items_of("valid"), items_of("test")
    masked = scores.clone()
    if train:
        masked[torch.tensor(sorted(train))] = float("-inf")
    order = masked.argsort(descending=True, stable=True)
    rank = torch.empty(I, dtype=torch.long)
    rank[order] = torch.arange(1, I + 1)
    if items is None:
        chosen = order[:min(top_n, I - len(train))].tolist()
    else:
        chosen = [int(i) for i in items]
        bad = [i for i in chosen if not 0 <= i < I]
        if bad:
            raise ValueError(f"items {bad} out of range [0, {I})")
    attrs = attribute_pairs(model, [int(user)] * len(chosen), chosen, state=state)
    for a in attrs:
        it = a["item"]
        a["rank"] = None if it in train else int(rank[it])
        a["in_train"], a["in_valid"], a["in_test"] = it in train, it in valid, it in test
    layout = ExpertLayout.from_model(model)
    out: Dict[str, Any] = {"user": int(user), "mode": "top_n" if items is None else "pairs",
                           "top_n": len(chosen), "history_size": len(train),
                           "num_valid": len(valid), "num_test": len(test),
                           "labels": list(layout.labels), "sources": list(layout.sources),
                           "families": list(layout.families), "items": attrs}
    if attrs:
        mean_pi = torch.tensor([a["pi"] for a in attrs], dtype=torch.float64).mean(0)
        prof = routing_profile(mean_pi, layout)
        if "grid" in prof:
            g = torch.tensor(prof["grid"], dtype=torch.float64)
            prof["grid"] = [[float(v) for v in row] for row in g / g.sum()]
        prof["modality_contribution"] = {
            s: float(sum(a["modality_contribution"][s] for a in attrs) / len(attrs))
            for s in layout.sources}
        out["list"] = prof
    return out
