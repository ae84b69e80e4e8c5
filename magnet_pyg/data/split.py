"""Per-user random train/valid/test splitting (the MAGNET paper's five-split protocol)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from .schema import set_split_edges, split_edge_index

PAPER_SPLIT_SEEDS = (9, 672, 5368, 12784, 2025)


def per_user_split(edge_index: Tensor, num_users: int, seed: int,
                   ratios: Tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Tuple[Tensor, Tensor, Tensor]:
    """Split ``[2, n]`` (user, item) pairs per user into train/valid/test.

    Each user with ``n >= 3`` interactions gets ``max(1, round(n * ratios[1]))`` validation
    and ``max(1, round(n * ratios[2]))`` test items, chosen uniformly at random with ``seed``;
    the rest (at least one) is training. Users with fewer than three interactions keep
    everything in training. Fully vectorised; deterministic for a given ``seed``.
    """
    if abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {ratios}")
    g = torch.Generator().manual_seed(int(seed))
    users = edge_index[0]
    noise = torch.rand(users.numel(), generator=g, dtype=torch.float64)
    order = torch.argsort(users.double() * 2.0 + noise, stable=True)  # group by user, random within
    sorted_users = users[order]
    counts = torch.bincount(users, minlength=num_users)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(users.numel()) - starts[sorted_users]
    n = counts[sorted_users].double()
    n_val = torch.clamp(torch.round(n * ratios[1]), min=1)
    n_test = torch.clamp(torch.round(n * ratios[2]), min=1)
    small = n < 3
    is_test = ~small & (rank >= n - n_test)
    is_val = ~small & ~is_test & (rank >= n - n_test - n_val)
    label = torch.zeros(users.numel(), dtype=torch.long)
    label[order[is_val]] = 1
    label[order[is_test]] = 2
    return edge_index[:, label == 0], edge_index[:, label == 1], edge_index[:, label == 2]


def resplit(data: HeteroData, seed: int, ratios: Tuple[float, float, float] = (0.8, 0.1, 0.1)) -> HeteroData:
    """A copy of ``data`` whose three splits are re-drawn per user from all interactions."""
    out = data.clone()
    all_edges = torch.cat([split_edge_index(data, s) for s in ("train", "valid", "test")], dim=1)
    tr, va, te = per_user_split(all_edges, int(data["user"].num_nodes), seed, ratios)
    set_split_edges(out, tr, va, te)
    for et in list(out.edge_types):  # induced edges depend on the training split: drop them
        if et[1] in ("induced", "induced_by"):
            del out[et]
    return out
