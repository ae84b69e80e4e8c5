r"""Per-pair Top-K expert mixture over ``[E, B, C]`` score blocks (Eq. 18-20), the inner loop of
exact full ranking with a Mixture-of-Experts head
(:meth:`~magnet_pyg.nn.moe.TripletMoEHead.score_all`).

For every pair ``(b, c)`` with router logits :math:`\ell_{e,bc}` and expert scores
:math:`s_{e,bc}`:

.. math::
    y_{bc} = \sum_{e \in \Gamma_{bc}} \frac{\exp(\ell_{e,bc})}
             {\sum_{e' \in \Gamma_{bc}} \exp(\ell_{e',bc})}\, s_{e,bc},
    \qquad \Gamma_{bc} = \mathrm{TopK}_e(\ell_{e,bc}).

The computation is a dozen elementwise passes and reductions over dim 0; in eager PyTorch each
pass reads and writes the whole block. :func:`topk_mix` fuses them with :func:`torch.compile`
(one loop over the pairs, ``E`` in registers) when the block is large, no gradient is needed and
compilation works on this machine; otherwise, and whenever compilation fails (no C++
compiler, an unsupported backend), it runs the eager kernel :func:`topk_mix_eager`. Both give
the same selection; the mixed values agree up to float rounding (the fused kernel sums in
another order). :func:`set_compile` switches the fused path off (or on) for the process; the
environment variable ``MAGNET_PYG_COMPILE=0`` does the same at import.
"""
from __future__ import annotations

import os
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["topk_mix", "topk_mix_eager", "set_compile", "compile_enabled", "COMPILE_MIN_NUMEL"]

#: blocks with fewer elements than this run eagerly (compiling costs seconds once per process)
COMPILE_MIN_NUMEL = 1 << 22

_state = {"enabled": os.environ.get("MAGNET_PYG_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off"),
          "kernel": None, "failed": False}


def set_compile(enabled: bool) -> None:
    """Use (``True``, the default) or never use (``False``) the compiled kernel in this process."""
    _state["enabled"] = bool(enabled)


def compile_enabled() -> bool:
    """Whether :func:`topk_mix` may use the compiled kernel (on, and not failed before)."""
    return _state["enabled"] and not _state["failed"]


def topk_mix_eager(logits: Tensor, scores: Tensor, top_k: int) -> Tensor:
    r"""``[B, C]`` mixture of ``scores [E, B, C]`` under the renormalised Top-``top_k`` softmax
    of ``logits [E, B, C]`` over dim 0 (Eq. 18-20), with elementwise ops only (much faster than
    ``topk`` + ``softmax`` on a tiny last dimension). The ``K``-th largest logit is found by
    ``K - 1`` rounds of removing the running maximum; exact ties between logits (a measure-zero
    event) may then select more than ``K`` experts. Differentiable in ``logits`` and ``scores``."""
    num_experts = logits.size(0)
    top = logits.amax(dim=0)
    kth = top
    if top_k < num_experts:
        cur = logits
        for _ in range(top_k - 1):
            cur = cur.masked_fill(cur >= kth, float("-inf"))
            kth = cur.amax(dim=0)
    weight = torch.sub(logits, top).exp()
    if top_k < num_experts:
        weight = weight.masked_fill(logits < kth, 0.0)
    return (weight * scores).sum(0) / weight.sum(0)


def _kernel() -> Optional[Callable]:
    if _state["kernel"] is None and not _state["failed"]:
        try:
            _state["kernel"] = torch.compile(topk_mix_eager, dynamic=True)
        except Exception as e:  # noqa: BLE001 - any backend problem means: run eagerly
            _fail(e)
    return _state["kernel"]


def _fail(e: Exception) -> None:
    _state["failed"] = True
    warnings.warn(f"torch.compile of the Top-K expert mixture failed ({type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''}); full ranking runs eagerly "
                  f"(same results, slower)", RuntimeWarning, stacklevel=3)


def topk_mix(logits: Tensor, scores: Tensor, top_k: int) -> Tensor:
    """:func:`topk_mix_eager`, fused by :func:`torch.compile` for large blocks without
    gradient (see the module docstring)."""
    if top_k < 1 or top_k > logits.size(0):
        raise ValueError(f"top_k must be in [1, {logits.size(0)}], got {top_k}")
    needs_grad = torch.is_grad_enabled() and (logits.requires_grad or scores.requires_grad)
    if needs_grad or logits.numel() < COMPILE_MIN_NUMEL or not compile_enabled():
        return topk_mix_eager(logits, scores, top_k)
    kernel = _kernel()
    if kernel is None:
        return topk_mix_eager(logits, scores, top_k)
    try:
        return kernel(logits, scores, int(top_k))
    except Exception as e:  # noqa: BLE001 - compilation happens at the first call
        _fail(e)
        return topk_mix_eager(logits, scores, top_k)
