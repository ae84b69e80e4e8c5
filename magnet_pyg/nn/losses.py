"""Training losses shared by the models (each usable alone)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    r"""Mean BPR loss :math:`-\log\sigma(\hat y_{ui} - \hat y_{uj})` (MAGNET Eq. 27).

    Args:
        pos_scores: ``[B]`` scores of observed pairs.
        neg_scores: ``[B]`` scores of sampled negatives.
    """
    return F.softplus(neg_scores - pos_scores).mean()


def embedding_l2(*tensors: Tensor) -> Tensor:
    r"""LightGCN-style regulariser on the layer-0 embeddings of a batch:
    :math:`\sum_t \|t\|_2^2 / (2B)`, ``B`` = first dimension of the first tensor."""
    return sum(t.pow(2).sum() for t in tensors) / (2 * tensors[0].size(0))
