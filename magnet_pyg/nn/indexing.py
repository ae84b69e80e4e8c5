r"""Row gathering with a deterministic backward pass.

``x[index]`` with a tensor ``index`` is differentiated by ``index_put_(..., accumulate=True)``,
which on a multi-threaded CPU adds the rows of the incoming gradient with atomic float
additions (PyTorch does so once the gradient has at least 32,768 elements and more than one
thread is in use). A row of ``x`` picked several times (a user or item that occurs more
than twice in a training batch) then receives its contributions in whatever order the
threads reach them, so the gradient, and every step after it, varies in its last bits from
run to run. :func:`gather_rows` gives the same forward result through
:func:`torch.nn.functional.embedding`, whose CPU backward assigns every row of ``x`` to one
thread and adds its contributions in index order: the gradient is bit-identical from run
to run, for any thread count, and equal to the single-threaded ``x[index]`` gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gather_rows"]


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    r"""``x[index]`` (rows of ``x`` along dim 0) with a deterministic backward pass.

    Args:
        x: ``[N, *]`` tensor (any number of trailing dimensions).
        index: integer tensor of row numbers in ``0..N-1`` (duplicates allowed), any shape.

    Returns:
        ``[*index.shape, *x.shape[1:]]``, equal to ``x[index]``; the gradient with respect
        to ``x`` sums the contributions of each row in the order of ``index`` (the result of
        a single-threaded ``x[index]`` backward).
    """
    if not (x.requires_grad and torch.is_grad_enabled()) or x.dim() == 0:
        return x[index]
    flat = x.reshape(x.size(0), -1)
    return F.embedding(index, flat).view(*index.shape, *x.shape[1:])
