r"""Deterministic synthetic multimodal recommendation data (the built-in default dataset).

Users and items get latent factors :math:`U \in \mathbb{R}^{n_u \times f}`,
:math:`V \in \mathbb{R}^{n_i \times f}`; items get a Zipf popularity bias. Each user
draws its interactions without replacement from
:math:`\mathrm{softmax}(s\,U_u V^\top + b)` (Gumbel top-k), over all items for small
catalogues and over a popularity + uniform candidate pool for large ones. Each content
modality ``m`` is a random linear image of the item factors plus Gaussian noise of its
own level, ``x^m = V P_m + \sigma_m \varepsilon``, so the modalities carry the
collaborative signal with different reliability; they are written block by block into
one ``[n_i, sum_m d_m]`` matrix ``data["item"].x`` (see :mod:`.schema`). The interactions
are then split per user 8:1:1 (:func:`~magnet_pyg.data.split.per_user_split`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .schema import ITEM, USER, set_item_features, set_split_edges
from .split import per_user_split


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and signal levels of a synthetic dataset."""
    num_users: int = 3000
    num_items: int = 1500
    num_interactions: int = 36000
    latent_dim: int = 16
    modalities: Tuple[Tuple[str, int, float], ...] = (("image", 128, 0.5), ("text", 64, 1.0))
    signal: float = 2.5          # scale of U V^T in the interaction logits
    popularity: float = 0.8      # Zipf exponent of the item popularity bias
    min_per_user: int = 5
    candidates: int = 256        # candidate pool per user when num_items > dense_limit
    dense_limit: int = 4096


PRESETS: Dict[str, SyntheticSpec] = {
    "tiny": SyntheticSpec(num_users=120, num_items=80, num_interactions=1600,
                          modalities=(("image", 16, 0.3), ("text", 8, 1.0))),
    "small": SyntheticSpec(),
    "electronics": SyntheticSpec(num_users=192_403, num_items=63_001, num_interactions=1_689_188,
                                 latent_dim=32, modalities=(("image", 4096, 1.0), ("text", 384, 0.5))),
}


def _user_counts(spec: SyntheticSpec, cap: int, g: torch.Generator) -> Tensor:
    n_u, total = spec.num_users, spec.num_interactions
    lo = min(spec.min_per_user, cap)
    if not lo * n_u <= total <= cap * n_u:
        raise ValueError(f"num_interactions={total} impossible for {n_u} users with "
                         f"{lo}..{cap} interactions each")
    activity = torch.exp(torch.randn(n_u, generator=g, dtype=torch.float64))  # log-normal activity
    extra = torch.multinomial(activity, total - lo * n_u, replacement=True, generator=g)
    counts = lo + torch.bincount(extra, minlength=n_u)
    counts = counts.clamp(max=cap)
    while int(counts.sum()) < total:  # hand the clipped surplus to users below the cap
        room = (counts < cap).double()
        need = total - int(counts.sum())
        pick = torch.multinomial(room, min(need, int(room.sum())), replacement=False, generator=g)
        counts[pick] += 1
    return counts


def synthetic(spec: SyntheticSpec | str = "small", seed: int = 0, name: str | None = None) -> HeteroData:
    """Generate a synthetic dataset as a :class:`HeteroData` (see the module docstring).

    Args:
        spec: a :class:`SyntheticSpec` or a preset name (``tiny``, ``small``, ``electronics``).
        seed: everything (factors, interactions, features, split) is a function of it.
    """
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown synthetic preset '{spec}', expected one of {sorted(PRESETS)}")
        name = name or f"synthetic-{spec}"
        spec = PRESETS[spec]
    name = name or "synthetic"
    g = torch.Generator().manual_seed(int(seed))
    n_u, n_i, f = spec.num_users, spec.num_items, spec.latent_dim
    U = torch.randn(n_u, f, generator=g) / math.sqrt(f)
    V = torch.randn(n_i, f, generator=g)
    rank = torch.randperm(n_i, generator=g).double() + 1
    pop_bias = (-spec.popularity * torch.log(rank)).float()

    dense = n_i <= spec.dense_limit
    cap = n_i - 2 if dense else spec.candidates // 2
    counts = _user_counts(spec, cap, g)
    kmax = int(counts.max())
    chunk = max(1, (1 << 22) // n_i) if dense else max(1, (1 << 20) // spec.candidates)
    picked = []
    for s in range(0, n_u, chunk):
        u = torch.arange(s, min(s + chunk, n_u))
        if dense:
            cand = torch.arange(n_i).expand(u.numel(), n_i)
            logits = spec.signal * (U[u] @ V.t()) + pop_bias
        else:
            half = spec.candidates // 2
            pop = torch.multinomial(torch.exp(pop_bias.double()), u.numel() * half, replacement=True,
                                    generator=g).view(-1, half)
            uni = torch.randint(0, n_i, (u.numel(), spec.candidates - half), generator=g)
            cand = torch.cat([pop, uni], dim=1)
            logits = spec.signal * torch.einsum("bf,bcf->bc", U[u], V[cand]) + pop_bias[cand]
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=g).clamp_min(1e-12)))
        score = logits + gumbel
        if not dense:  # a candidate drawn twice competes once
            srt, idx = cand.sort(dim=1)
            dup = torch.zeros_like(srt, dtype=torch.bool)
            dup[:, 1:] = srt[:, 1:] == srt[:, :-1]
            score.scatter_(1, idx, torch.where(dup, float("-inf"), score.gather(1, idx)))
        top = score.topk(min(kmax, cand.size(1)), dim=1).indices
        items = cand.gather(1, top)
        keep = torch.arange(top.size(1)).unsqueeze(0) < counts[u].unsqueeze(1)
        picked.append(torch.stack([u.unsqueeze(1).expand_as(items)[keep], items[keep]]))
    edges = torch.cat(picked, dim=1)

    data = HeteroData()
    data[USER].num_nodes = n_u
    data[ITEM].num_nodes = n_i
    data.name = name
    data.modalities = []
    train, valid, test = per_user_split(edges, n_u, seed)
    set_split_edges(data, train, valid, test)
    dims = {m: dim for m, dim, _ in spec.modalities}
    if dims:  # written block by block into one [I, sum d] matrix (data["item"].x)
        x_all = None if len(dims) == 1 else torch.empty(n_i, sum(dims.values()))
        start = 0
        for m, dim, noise in spec.modalities:
            P = torch.randn(f, dim, generator=g) / math.sqrt(f)
            x = V @ P
            x += noise * torch.randn(n_i, dim, generator=g)
            if x_all is None:
                x_all = x
            else:
                x_all[:, start:start + dim] = x
            start += dim
            del x
        set_item_features(data, x_all, dims)
    data.latent_user = U  # ground truth, for analyses and tests
    data.latent_item = V
    return data
