"""Mini-batches of link-prediction samples ``(user, positive, negative)`` for BPR training."""
from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torch import Tensor


class LinkSampler:
    """Shuffled training pairs with uniform negatives that avoid each user's training items.

    Negatives are drawn for the whole epoch at once and the rejected ones (items the user
    has in training) re-drawn until none is left: membership is a ``searchsorted`` over the
    sorted ``user * num_items + item`` keys, so there is no Python loop per sample or user.

    Args:
        edge_index: ``[2, n]`` training (user, item) pairs.
        num_items: catalogue size.
        batch_size: samples per mini-batch.
        drop_last: drop the last incomplete batch.
    """

    def __init__(self, edge_index: Tensor, num_items: int, batch_size: int = 2048, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.users = edge_index[0].long().contiguous()
        self.items = edge_index[1].long().contiguous()
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.keys = torch.sort(self.users * self.num_items + self.items).values
        deg = torch.bincount(self.users)
        if deg.numel() and int(deg.max()) >= self.num_items:
            u = int(deg.argmax())
            raise ValueError(f"user {u} has interacted with every item: no negative can be sampled")

    def __len__(self) -> int:
        n = self.users.numel()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        keys = users * self.num_items + items
        pos = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        return self.keys[pos] == keys

    def negatives(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """One uniform negative per user entry, rejecting the user's training items."""
        neg = torch.randint(0, self.num_items, users.shape, generator=generator)
        bad = self.is_positive(users, neg)
        while bool(bad.any()):
            idx = bad.nonzero().view(-1)
            neg[idx] = torch.randint(0, self.num_items, (idx.numel(),), generator=generator)
            bad[idx] = self.is_positive(users[idx], neg[idx])
        return neg

    def epoch(self, generator: torch.Generator) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
        """Yield ``(users, pos, neg)`` batches of one epoch, all drawn from ``generator``."""
        perm = torch.randperm(self.users.numel(), generator=generator)
        users, pos = self.users[perm], self.items[perm]
        neg = self.negatives(users, generator)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield users[sl], pos[sl], neg[sl]
