r"""Per-pair Top-K expert mixture over ``[E, B, C]`` score blocks (Eq. 18-20), the inner loop of
exact full ranking with a Mixture-of-Experts head
(:meth:`~magnet_pyg.nn.moe.TripletMoEHead.score_all`).

For every pair ``(b, c)`` with router logits :math:`\ell_{e,bc}` and expert scores
:math:`s_{e,bc}`:

.. math::
    y_{bc} = \sum_{e \in \Gamma_{bc}} \frac{\exp(\ell_{e,bc})}
             {\sum_{e' \in \Gamma_{bc}} \exp(\ell_{e',bc})}\, s_{e,bc},
    \qquad \Gamma_{bc} = \mathrm{TopK}_e(\ell_{e,bc}).
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["topk_mix"]


def topk_mix(logits: Tensor, scores: Tensor, top_k: int) -> Tensor:
    r"""``[B, C]`` mixture of ``scores [E, B, C]`` under the renormalised Top-``top_k`` softmax
    of ``logits [E, B, C]`` over dim 0 (Eq. 18-20), with elementwise ops only (much faster than
    ``topk`` + ``softmax`` on a tiny last dimension). The ``K``-th largest logit is found by
    ``K - 1`` rounds of removing the running maximum; exact ties between logits (a measure-zero
    event) may then select more than ``K`` experts. Differentiable in ``logits`` and ``scores``;
    blocks that fit in the CPU cache run fastest (the passes over dim 0 then stay in cache)."""
    num_experts = logits.size(0)
    if top_k < 1 or top_k > num_experts:
        raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
    top = logits.amax(dim=0)
    kth = top
    if top_k < num_experts:
        cur = logits
        for _ in range(top_k - 1):
            cur = cur.masked_fill(cur >= kth, float("-inf"))
            kth = cur.amax(dim=0)
    weight = (logits - top).exp()
    if top_k < num_experts:
        weight = weight.masked_fill(logits < kth, 0.0)
    return (weight * scores).sum(0) / weight.sum(0)
