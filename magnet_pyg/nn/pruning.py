r"""FREEDOM's degree-sensitive pruning of the user-item graph (FREEDOM Eq. 5-7), shared by
FREEDOM and CRANE (and AnchorRec's degree-weighted user-item matrix)."""
from __future__ import annotations

import torch
from torch import Tensor

from .adjacency import bipartite_normalized_adjacency

__all__ = ["degree_edge_probability", "degree_sensitive_prune"]


def degree_edge_probability(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    r""":math:`p_{ui} \propto 1/\sqrt{d_u d_i}` for every training edge (FREEDOM Eq. 6): the
    normalised-adjacency value of the edge, FREEDOM's sampling weight for edges to **keep**."""
    u, i = edge_index[0], edge_index[1]
    du = torch.bincount(u, minlength=num_users).float()
    di = torch.bincount(i, minlength=num_items).float()
    return (du[u] * di[i]).rsqrt()


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
