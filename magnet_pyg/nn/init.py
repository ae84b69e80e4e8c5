"""Parameter initialisation helpers."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["xavier_user_item_"]


def xavier_user_item_(weight: Tensor, num_users: int) -> Tensor:
    r"""Xavier-uniform init of a joint ``[U+I, d]`` ID table as MMRec initialises its two
    separate tables ``[U, d]`` and ``[I, d]`` (bounds :math:`\sqrt{6/(U+d)}` and
    :math:`\sqrt{6/(I+d)}`)."""
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(weight[:num_users])
        torch.nn.init.xavier_uniform_(weight[num_users:])
    return weight
