r"""Exact full-ranking evaluation over all items, in user chunks (MMRec protocol).

For every evaluated user the model scores **all** items, the user's training items (and
optionally other splits' items) are set to :math:`-\infty`, and the top-:math:`K_{max}`
list is compared with the user's target items:

* Recall@K = hits@K / |targets| (not min(K, |targets|), as in MMRec);
* NDCG@K with binary gains and the ideal DCG over min(|targets|, K) positions;
* Precision@K = hits@K / K;  HitRate@K = 1[hits@K > 0];

each averaged over the users that have at least one target. These are the definitions of
PyG's :class:`~torch_geometric.metrics.LinkPredRecall` / ``LinkPredNDCG`` /
``LinkPredPrecision`` / ``LinkPredHitRatio``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

from ..data.csr_index import CSRIndex

METRICS = ("recall", "ndcg", "precision", "hit")
ScoreFn = Callable[[Tensor], Tensor]  # users [B] -> scores [B, num_items]


def _metrics_from_hits(hits: Tensor, n_target: Tensor, ks: Sequence[int]) -> Dict[str, Tensor]:
    """Per-user metrics from a ``[B, K_max]`` 0/1 hit matrix and ``[B]`` target counts."""
    out: Dict[str, Tensor] = {}
    kmax = hits.size(1)
    discount = 1.0 / torch.log2(torch.arange(2, kmax + 2, dtype=torch.float64, device=hits.device))
    ideal_cum = torch.cumsum(discount, 0)
    hits = hits.double()
    n = n_target.double()
    for k in ks:
        h = hits[:, :k].sum(1)
        dcg = (hits[:, :k] * discount[:k]).sum(1)
        idcg = ideal_cum[(n.clamp(max=k) - 1).long()]
        out[f"recall@{k}"] = h / n
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"precision@{k}"] = h / k
        out[f"hit@{k}"] = (h > 0).double()
    return out


def masked_scores(score_fn: ScoreFn, users: Tensor, exclude: Sequence[CSRIndex] = (),
                  device: torch.device | str = "cpu") -> Tensor:
    """``[B, num_items]`` float scores of ``users`` with the items of every ``exclude`` split
    set to ``-inf`` (what :func:`full_ranking` ranks, and what ``recommend`` returns the top of)."""
    scores = score_fn(users.to(device)).float()
    if scores.dim() != 2 or scores.size(0) != users.numel():
        raise ValueError(f"score_fn returned shape {tuple(scores.shape)} for {users.numel()} users")
    for ex in exclude:
        r, c = ex.gather(users)
        scores[r.to(scores.device), c.to(scores.device)] = float("-inf")
    return scores


@torch.no_grad()
def full_ranking(
    score_fn: ScoreFn,
    target: CSRIndex,
    exclude: Sequence[CSRIndex] = (),
    ks: Sequence[int] = (10, 20, 50),
    batch_size: int = 4096,
    users: Optional[Tensor] = None,
    device: torch.device | str = "cpu",
    per_user: bool = False,
) -> Dict[str, object]:
    """Exact full-ranking metrics.

    Args:
        score_fn: maps a ``[B]`` tensor of user ids to ``[B, num_items]`` scores.
        target: the split's (user, item) pairs to retrieve.
        exclude: splits whose items are masked out of each user's ranking (training at least).
        ks: cut-offs.
        batch_size: users scored at a time (bounds memory to ``batch_size x num_items``).
        users: users to evaluate (default: every user with at least one target item).
        per_user: also return ``users`` and the per-user metric tensors.

    Returns:
        ``{"recall@20": float, ...}`` (means over evaluated users), plus ``"num_users"``,
        and ``"per_user"``: ``{"users": Tensor, "recall@20": Tensor, ...}`` when asked.
    """
    ks = sorted(set(int(k) for k in ks))
    if users is None:
        users = torch.nonzero(target.degree(torch.arange(target.num_users)) > 0).view(-1)
    kmax = ks[-1]
    parts: Dict[str, list] = {}
    for s in range(0, users.numel(), batch_size):
        u = users[s:s + batch_size]
        scores = masked_scores(score_fn, u, exclude, device)
        k = min(kmax, scores.size(1))
        top = scores.topk(k, dim=1).indices.cpu()
        r, c = target.gather(u)
        is_target = torch.zeros(u.numel(), scores.size(1), dtype=torch.bool)
        is_target[r, c] = True
        hits = is_target.gather(1, top)
        if k < kmax:
            hits = torch.cat([hits, hits.new_zeros(u.numel(), kmax - k)], 1)
        for name, v in _metrics_from_hits(hits, target.degree(u), ks).items():
            parts.setdefault(name, []).append(v)
    result: Dict[str, object] = {}
    cat = {name: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for name, v in parts.items()}
    for name, v in cat.items():
        result[name] = float(v.mean()) if v.numel() else 0.0
    result["num_users"] = int(users.numel())
    if per_user:
        result["per_user"] = {"users": users, **cat}
    return result
