"""BPR-MF (Rendle et al., 2009): matrix factorisation trained with the BPR loss."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..nn.losses import bpr_loss, embedding_l2
from .base import Logs, Recommender, dot_score
from .config import model_config


class BPRMF(Recommender):
    r"""Matrix factorisation :math:`\hat y_{ui} = \mathbf{p}_u^\top \mathbf{q}_i` with BPR.

    Args:
        num_users: number of users ``U``.
        num_items: number of items ``I``.
        embedding_dim: ``d``.
        reg_weight: weight of the batch L2 penalty on the sampled embeddings.
    """

    default_patience = 20
    sampling_unsupported_reason = ("it propagates over no graph: its loss reads only the batch's own "
                                   "embedding rows, which costs a full-graph step no more")

    def __init__(self, num_users: int, num_items: int, embedding_dim: int = 64, reg_weight: float = 1e-4):
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        self.reg_weight = reg_weight
        self.user_emb = torch.nn.Embedding(num_users, embedding_dim)
        self.item_emb = torch.nn.Embedding(num_items, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.xavier_uniform_(self.user_emb.weight)
        torch.nn.init.xavier_uniform_(self.item_emb.weight)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """``[B]`` scores of (user, item) pairs."""
        return (self.user_emb(users) * self.item_emb(items)).sum(-1)

    def loss(self, graph, users: Tensor, pos: Tensor, neg: Tensor) -> Tuple[Tensor, Logs]:
        u, p, n = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)
        rec = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = embedding_l2(u, p, n)
        return rec + self.reg_weight * reg, {"bpr": rec.detach(), "reg": reg.detach()}

    @torch.no_grad()
    def inference(self, graph) -> Tuple[Tensor, Tensor]:
        return self.user_emb.weight, self.item_emb.weight

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        return dot_score(state, users, items)


#: Hyper-parameters of :class:`BPRMF`: its constructor's keyword arguments, with the
#: constructor's types and defaults (:func:`~magnet_pyg.models.config.model_config`).
BPRConfig = model_config(BPRMF, "BPRConfig")
