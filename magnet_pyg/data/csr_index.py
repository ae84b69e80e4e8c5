"""Compressed-row index of (user, item) pairs: each user's items, gathered for many users at
once without a Python loop (the training history of the evaluator's masking, of MAGNET's
sampled history pooling and of the serving code)."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

__all__ = ["CSRIndex"]


class CSRIndex:
    """Compressed-row index of (user, item) pairs with vectorised row gathering.

    Args:
        edge_index: ``[2, n]`` (user, item) pairs.
        num_users: number of rows.
    """

    def __init__(self, edge_index: Tensor, num_users: int):
        users, items = edge_index[0].long(), edge_index[1].long()
        width = int(items.max()) + 1 if items.numel() else 1
        order = torch.argsort(users * width + items)
        self.col = items[order].contiguous()
        counts = torch.bincount(users, minlength=num_users)
        self.rowptr = torch.zeros(num_users + 1, dtype=torch.long)
        self.rowptr[1:] = torch.cumsum(counts, 0)
        self.num_users = num_users

    def degree(self, users: Tensor) -> Tensor:
        return self.rowptr[users + 1] - self.rowptr[users]

    def gather(self, users: Tensor) -> Tuple[Tensor, Tensor]:
        """``(row, col)``: for each listed user (``row`` = its position in ``users``), its items."""
        users = users.cpu()
        deg = self.degree(users)
        row = torch.repeat_interleave(torch.arange(users.numel()), deg)
        start = torch.repeat_interleave(self.rowptr[users], deg)
        offset = torch.arange(int(deg.sum())) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        return row, self.col[start + offset]
