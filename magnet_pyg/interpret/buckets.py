r"""Dual-view diagnostics: where does MAGNET-DV beat MAGNET-SV? (paper Section 4.10, Fig. 6)

All bucket assignments are post-hoc and use the **training split only**.

* **Visibility / difficulty** of an evaluation interaction :math:`(u, i)`:

  .. math:: v(u, i) = \frac{\sum_{m=1}^{M} |\mathcal I_u \cap N^m(i)|}{M\,k} \in [0, 1],

  with :math:`\mathcal I_u` the user's training items and :math:`N^m(i)` the top-``k``
  cosine neighbours of item ``i`` under content modality ``m`` (Eq. 1; the item itself
  excluded). With the paper's two modalities this is exactly
  :math:`(|\mathcal I_u \cap N^A(i)| + |\mathcal I_u \cap N^S(i)|) / 2k`.
  **Easy** :math:`v \ge 0.5`, **Medium** :math:`0 < v < 0.5`, **Hard** :math:`v = 0`.
* **Activity** :math:`a_u = |\mathcal I_u|`: the evaluated users (those with at least one
  interaction in the split) are sorted by decreasing :math:`a_u` (ties by user id) and cut
  into three equal-sized buckets (sizes differ by at most one): **Head** (most active),
  **Mid**, **Tail**.
* **N@20 per bucket.** Activity buckets: the mean of the usual per-user NDCG@20 over the
  bucket's users. Difficulty buckets are sets of *interactions*: for bucket ``b`` a user's
  targets are its split items in ``b``, the ranking masks its training items (the protocol)
  **and its split items outside** ``b`` (so they neither count as hits nor push the bucket's
  targets down; our decision), and the bucket's NDCG@20 is the mean over users with at
  least one target in ``b``.
* **Relative gain** :math:`\Delta(\%) = (N_{DV} - N_{SV}) / N_{SV} \times 100` per bucket
  (``None`` when :math:`N_{SV} = 0`).
* **Composition** (Fig. 6b): the fraction of the split's interactions in each bucket (an
  activity bucket's interactions are the split interactions of its users, i.e. users weighted
  by their interaction counts).
* **Per-user gain** (Fig. 6c, d): :math:`N_{DV}(u) - N_{SV}(u)`, the *absolute* NDCG@20
  difference (a per-user relative gain is undefined for the many users with
  :math:`N_{SV}(u) = 0`); per activity bucket its mean, quartiles and the fraction of users
  improved / worsened, and the ECDF over all evaluated users.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor

from ..data.schema import modality_features, num_items, num_users, split_edge_index
from ..evaluate.ranking import CSRIndex, full_ranking

__all__ = ["DIFFICULTY", "ACTIVITY", "knn_neighbors", "visibility", "difficulty_buckets",
           "activity_buckets", "bucket_ndcg", "dual_view_gains"]

DIFFICULTY = ("Easy", "Medium", "Hard")
ACTIVITY = ("Head", "Mid", "Tail")


def knn_neighbors(x: Tensor, k: int) -> Tensor:
    r"""``[I, k]`` indices of each row's top-``k`` cosine neighbours, itself excluded: the
    exact item kNN of Eq. 1 (:func:`magnet_pyg.graph.knn_search`, ``torch`` backend, same
    tie-breaking as the induced edges); missing neighbours (zero rows) are ``-1``."""
    from ..graph.knn import knn_search
    n = x.size(0)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    index, _ = knn_search(x.float(), k, backend="torch", device="cpu", progress=False)
    return index


@torch.no_grad()
def visibility(data: Any, pairs: Tensor, k: int = 20,
               neighbors: Optional[Dict[str, Tensor]] = None) -> Tensor:
    r"""``[P]`` visibility :math:`v(u, i)` of ``pairs [2, P]`` (module docstring).

    Args:
        data: the dataset (training split and content features).
        pairs: ``[2, P]`` evaluation (user, item) pairs.
        k: neighbours per modality (the run's kNN ``k``).
        neighbors: precomputed ``{modality: [I, k]}`` from :func:`knn_neighbors`.
    """
    feats = modality_features(data)
    if neighbors is None:
        if not feats:
            raise ValueError("visibility needs content features (the dataset has none)")
        neighbors = {m: knn_neighbors(x, k) for m, x in feats.items()}
    I = num_items(data)
    train = split_edge_index(data, "train")
    keys = torch.unique(train[0].long() * I + train[1].long())
    u, i = pairs[0].long(), pairs[1].long()
    hits = torch.zeros(u.numel(), dtype=torch.float64)
    total = 0
    for nb in neighbors.values():
        nbi = nb[i]
        cand = u.unsqueeze(1) * I + nbi                        # [P, k]
        hits += (torch.isin(cand, keys) & (nbi >= 0)).sum(1).double()
        total += nb.size(1)
    return (hits / total).float()


def difficulty_buckets(v: Tensor) -> Tensor:
    """``[P]`` bucket ids into :data:`DIFFICULTY`: 0 Easy (v >= 0.5), 1 Medium, 2 Hard (v = 0)."""
    b = torch.ones_like(v, dtype=torch.long)
    b[v >= 0.5] = 0
    b[v <= 0] = 2
    return b


def activity_buckets(data: Any, users: Tensor) -> Tensor:
    """``[len(users)]`` bucket ids into :data:`ACTIVITY` (0 Head, 1 Mid, 2 Tail) of the given
    (evaluated) users, by training degree (module docstring)."""
    deg = torch.bincount(split_edge_index(data, "train")[0].long(), minlength=num_users(data))
    users = users.long()
    # sort by (-degree, user id): stable sort on user id first, then on degree
    by_id = torch.argsort(users, stable=True)
    order = by_id[torch.argsort(-deg[users[by_id]], stable=True)]
    out = torch.empty(users.numel(), dtype=torch.long)
    for b, part in enumerate(torch.tensor_split(order, 3)):
        out[part] = b
    return out


@torch.no_grad()
def bucket_ndcg(score_fn: Callable[[Tensor], Tensor], data: Any, split: str, pair_bucket: Tensor,
                num_buckets: int = 3, k: int = 20, mask_valid_in_test: bool = False,
                batch_size: int = 1024) -> Dict[str, Any]:
    r"""Per-user NDCG@k overall and per interaction bucket (module docstring).

    Args:
        score_fn: ``users [B] -> scores [B, I]`` (e.g. ``lambda u: model.score(state, u)``).
        data: the dataset.
        split: ``"valid"`` or ``"test"``.
        pair_bucket: ``[P]`` bucket id of each of the split's interactions (same order as
            ``split_edge_index(data, split)``).
        mask_valid_in_test: also mask validation items when ``split == "test"``.

    Returns:
        ``{"users": [n] evaluated users, "ndcg": [n] per-user NDCG@k,
        "buckets": [{"users": tensor, "ndcg": tensor}] * num_buckets}``.
    """
    U = num_users(data)
    pairs = split_edge_index(data, split)
    train = CSRIndex(split_edge_index(data, "train"), U)
    base_ex = [train]
    if split == "test" and mask_valid_in_test:
        base_ex.append(CSRIndex(split_edge_index(data, "valid"), U))
    target = CSRIndex(pairs, U)
    per_bucket = [(CSRIndex(pairs[:, pair_bucket == b], U),
                   CSRIndex(pairs[:, pair_bucket != b], U)) for b in range(num_buckets)]
    users = torch.nonzero(target.degree(torch.arange(U)) > 0).view(-1)
    res_all: List[Tensor] = []
    res_b: List[List[Tensor]] = [[] for _ in range(num_buckets)]
    users_b: List[List[Tensor]] = [[] for _ in range(num_buckets)]
    key = f"ndcg@{k}"
    for s in range(0, users.numel(), batch_size):
        u = users[s:s + batch_size]
        cached = score_fn(u).detach().float()
        pos = torch.full((U,), -1, dtype=torch.long)
        pos[u] = torch.arange(u.numel())
        fn = lambda q: cached[pos[q.cpu()].to(cached.device)]  # noqa: E731 (a copy: safe to mask)
        r = full_ranking(fn, target, base_ex, ks=(k,), batch_size=u.numel(), users=u,
                         per_user=True)
        res_all.append(r["per_user"][key])
        for b, (tgt, rest) in enumerate(per_bucket):
            ub = u[tgt.degree(u) > 0]
            if ub.numel() == 0:
                continue
            rb = full_ranking(fn, tgt, base_ex + [rest], ks=(k,), batch_size=ub.numel(), users=ub,
                              per_user=True)
            res_b[b].append(rb["per_user"][key])
            users_b[b].append(ub)
    cat = lambda xs, dt: torch.cat(xs) if xs else torch.zeros(0, dtype=dt)  # noqa: E731
    return {"users": users, "ndcg": cat(res_all, torch.float64),
            "buckets": [{"users": cat(users_b[b], torch.long), "ndcg": cat(res_b[b], torch.float64)}
                        for b in range(num_buckets)]}


def _rel_gain(dv: float, sv: float) -> Optional[float]:
    return None if sv == 0 else (dv - sv) / sv * 100.0


def _quantiles(x: Tensor) -> Dict[str, Optional[float]]:
    if x.numel() == 0:
        return {"mean": None, "q25": None, "median": None, "q75": None,
                "frac_improved": None, "frac_worse": None, "num_users": 0}
    q = torch.quantile(x.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return {"mean": float(x.mean()), "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2]),
            "frac_improved": float((x > 0).double().mean()),
            "frac_worse": float((x < 0).double().mean()), "num_users": int(x.numel())}


def dual_view_gains(dv_score: Callable[[Tensor], Tensor], sv_score: Callable[[Tensor], Tensor],
                    data: Any, split: str = "test", k: int = 20, knn_k: int = 20,
                    mask_valid_in_test: bool = False, batch_size: int = 1024) -> Dict[str, Any]:
    r"""Fig. 6 numbers for two models on the same data (module docstring).

    Args:
        dv_score, sv_score: ``users -> [B, I]`` full-ranking scores of MAGNET-DV and -SV (or
            of any two models: "dv" is the one whose gain is measured).
        data: the shared dataset.
        split: evaluation split.
        k: the NDCG cut-off (20).
        knn_k: neighbours per modality for the visibility (the DV run's kNN ``k``).

    Returns:
        JSON-ready dict: ``difficulty`` and ``activity``, each with ``buckets`` (names),
        ``ndcg_dv``, ``ndcg_sv``, ``gain_pct``, ``num_users``, ``interactions`` and
        ``composition``; ``activity`` also ``per_user_gain`` (per bucket quantiles) and
        ``degree_range``; ``overall`` (N@k of both, gain) and ``ecdf`` (``x`` sorted per-user
        gains, ``y`` cumulative fractions); ``visibility`` (mean and thresholds).
    """
    pairs = split_edge_index(data, split)
    if pairs.size(1) == 0:
        raise ValueError(f"split '{split}' has no interactions")
    v = visibility(data, pairs, k=knn_k)
    pb = difficulty_buckets(v)
    dv = bucket_ndcg(dv_score, data, split, pb, 3, k, mask_valid_in_test, batch_size)
    sv = bucket_ndcg(sv_score, data, split, pb, 3, k, mask_valid_in_test, batch_size)
    if not torch.equal(dv["users"], sv["users"]):
        raise ValueError("the two runs evaluate different users: are they on the same data?")
    P = pairs.size(1)
    diff: Dict[str, Any] = {"buckets": list(DIFFICULTY), "ndcg_dv": [], "ndcg_sv": [], "gain_pct": [],
                            "num_users": [], "interactions": [], "composition": []}
    for b in range(3):
        nd, ns = dv["buckets"][b]["ndcg"], sv["buckets"][b]["ndcg"]
        md = float(nd.mean()) if nd.numel() else 0.0
        ms = float(ns.mean()) if ns.numel() else 0.0
        cnt = int((pb == b).sum())
        diff["ndcg_dv"].append(md)
        diff["ndcg_sv"].append(ms)
        diff["gain_pct"].append(_rel_gain(md, ms) if nd.numel() else None)
        diff["num_users"].append(int(nd.numel()))
        diff["interactions"].append(cnt)
        diff["composition"].append(cnt / P)

    users = dv["users"]
    ab = activity_buckets(data, users)
    deg = torch.bincount(split_edge_index(data, "train")[0].long(), minlength=num_users(data))
    n_split = torch.bincount(pairs[0].long(), minlength=num_users(data))
    gain_u = dv["ndcg"] - sv["ndcg"]
    act: Dict[str, Any] = {"buckets": list(ACTIVITY), "ndcg_dv": [], "ndcg_sv": [], "gain_pct": [],
                           "num_users": [], "interactions": [], "composition": [],
                           "degree_range": [], "per_user_gain": []}
    for b in range(3):
        m = ab == b
        md, ms = float(dv["ndcg"][m].mean()), float(sv["ndcg"][m].mean())
        cnt = int(n_split[users[m]].sum())
        d = deg[users[m]]
        act["ndcg_dv"].append(md)
        act["ndcg_sv"].append(ms)
        act["gain_pct"].append(_rel_gain(md, ms))
        act["num_users"].append(int(m.sum()))
        act["interactions"].append(cnt)
        act["composition"].append(cnt / P)
        act["degree_range"].append([int(d.min()), int(d.max())])
        act["per_user_gain"].append(_quantiles(gain_u[m]))
    od, osv = float(dv["ndcg"].mean()), float(sv["ndcg"].mean())
    xs = gain_u.sort().values
    return {
        "split": split, "metric": f"ndcg@{k}", "knn_k": knn_k,
        "overall": {"ndcg_dv": od, "ndcg_sv": osv, "gain_pct": _rel_gain(od, osv),
                    "num_users": int(users.numel()), "interactions": P},
        "difficulty": diff, "activity": act,
        "visibility": {"mean": float(v.mean()), "easy_threshold": 0.5},
        "ecdf": {"x": [float(x) for x in xs],
                 "y": [(j + 1) / xs.numel() for j in range(xs.numel())]},
    }
