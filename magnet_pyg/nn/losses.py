"""Training losses shared by the models (each usable alone)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor, reduction: str = "mean") -> Tensor:
    r"""BPR loss :math:`-\log\sigma(\hat y_{ui} - \hat y_{uj})` over a batch (MAGNET Eq. 27).

    Args:
        pos_scores: ``[B]`` scores of observed pairs.
        neg_scores: ``[B]`` scores of sampled negatives.
        reduction: ``"mean"`` (default, as LightGCN and MMRec) or ``"sum"`` (Eq. 27 and
            Algorithm 2 of MAGNET, which accumulate over the batch; against batch-mean terms
            such as the routing regularisers, the sum weighs the ranking term ``B`` times more).
    """
    loss = F.softplus(neg_scores - pos_scores)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'mean' or 'sum', got '{reduction}'")


def embedding_l2(*tensors: Tensor) -> Tensor:
    r"""LightGCN-style regulariser on the layer-0 embeddings of a batch:
    :math:`\sum_t \|t\|_2^2 / (2B)`, ``B`` = first dimension of the first tensor."""
    return sum(t.pow(2).sum() for t in tensors) / (2 * tensors[0].size(0))


def triple_embedding_l2(embedding: Tensor, num_users: int, users: Tensor, pos: Tensor,
                        neg: Tensor) -> Tensor:
    r""":func:`embedding_l2` of the layer-0 rows of a batch of BPR triples ``(u, i, j)`` in a
    joint ``[U + I, d]`` table (users first, items offset by ``num_users``; LightGCN's batch L2,
    one reading of MAGNET Eq. 32's :math:`\lambda\|\Theta\|^2`). Rows are gathered with
    :func:`~magnet_pyg.nn.indexing.gather_rows`, so the gradient is deterministic on the CPU."""
    from .indexing import gather_rows
    return embedding_l2(gather_rows(embedding, users), gather_rows(embedding, num_users + pos),
                        gather_rows(embedding, num_users + neg))


def coverage_loss(pi: Tensor) -> Tensor:
    r"""Coverage (load-balancing) regulariser of stage 1 (MAGNET Eq. 29):
    :math:`\mathcal L_{cov} = \sum_{e=1}^{E} (\bar\pi_e - 1/E)^2`, :math:`\bar\pi` = batch mean.

    Args:
        pi: ``[B, E]`` dense routing distributions.

    Returns:
        scalar; 0 exactly when the batch-mean routing is uniform.
    """
    pibar = pi.mean(dim=0)
    return (pibar - 1.0 / pi.size(-1)).pow(2).sum()


def confidence_loss(pi: Tensor) -> Tensor:
    r"""Confidence (sharpness) regulariser of stage 2 (MAGNET Eq. 30):
    :math:`\mathcal L_{conf} = \frac1B \sum_{(u,i)} H(\pi_{ui})`, natural log.

    Args:
        pi: ``[B, E]`` dense routing distributions.

    Returns:
        scalar mean per-sample entropy (0 for one-hot routing, :math:`\log E` for uniform).
        Entries that underflow to 0 contribute 0 with a finite gradient.
    """
    tiny = torch.finfo(pi.dtype).tiny
    return -(pi * pi.clamp_min(tiny).log()).sum(dim=-1).mean()


def view_infonce(z_a: Tensor, z_b: Tensor, tau: float = 0.5) -> Tensor:
    r"""Symmetric in-batch InfoNCE between two views of the same nodes (MAGNET Eq. 28a-c).

    .. math::
        \tfrac12\Big(\tfrac1N\sum_n -\log\frac{e^{s(a_n, b_n)/\tau}}{\sum_{m} e^{s(a_n, b_m)/\tau}}
        + \tfrac1N\sum_n -\log\frac{e^{s(b_n, a_n)/\tau}}{\sum_{m} e^{s(b_n, a_m)/\tau}}\Big),

    with cosine similarity :math:`s`. Row ``n`` of both inputs is the same node (positive
    pair); the other rows are the negatives. MAGNET applies it separately to the batch-unique
    users and items: ``L_ctr = view_infonce(zu_UI, zu_UIG) + view_infonce(zi_UI, zi_UIG)``
    equals Eq. 28a with :math:`L^{a\to b} = L^{a\to b}_U + L^{a\to b}_I`.

    Args:
        z_a: ``[N, d]`` embeddings in view a (e.g. :math:`\mathbf z^{UI}` of unique batch users).
        z_b: ``[N, d]`` the same nodes in view b (:math:`\mathbf z^{UIG}`).
        tau: temperature :math:`\tau > 0`.

    Returns:
        scalar loss.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"z_a and z_b must both be [N, d], got {tuple(z_a.shape)} "
                         f"and {tuple(z_b.shape)}")
    a = F.normalize(z_a, dim=-1)
    b = F.normalize(z_b, dim=-1)
    logits = a @ b.t() / tau
    target = torch.arange(a.size(0), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
