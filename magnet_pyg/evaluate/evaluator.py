"""Evaluate any :class:`~magnet_pyg.models.base.Recommender` on a split of a dataset."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..data.schema import num_users, split_edge_index
from .ranking import CSRIndex, full_ranking


class Evaluator:
    """Exact full ranking of the validation or test split (MMRec protocol).

    Args:
        data: the dataset (:mod:`magnet_pyg.data.schema` layout).
        ks: cut-offs (default 10, 20, 50).
        batch_size: users per chunk.
        mask_valid_in_test: also mask each user's validation items when testing
            (MMRec does not; default ``False``).
    """

    def __init__(self, data: HeteroData, ks: Sequence[int] = (10, 20, 50), batch_size: int = 4096,
                 mask_valid_in_test: bool = False):
        n = num_users(data)
        self.ks = tuple(ks)
        self.batch_size = batch_size
        self.mask_valid_in_test = mask_valid_in_test
        self.index = {s: CSRIndex(split_edge_index(data, s), n) for s in ("train", "valid", "test")}

    def exclude(self, split: str):
        ex = [self.index["train"]]
        if split == "test" and self.mask_valid_in_test:
            ex.append(self.index["valid"])
        return ex

    @torch.no_grad()
    def evaluate(self, model, graph: Any, split: str = "valid", users: Optional[Tensor] = None,
                 per_user: bool = False, state: Any = None) -> Dict[str, object]:
        """Metrics of ``model`` on ``split`` (``model.inference`` is run unless ``state`` is given)."""
        was_training = model.training
        model.eval()
        try:
            if state is None:
                state = model.inference(graph)
            device = next(model.parameters()).device
            return full_ranking(lambda u: model.score(state, u), self.index[split], self.exclude(split),
                                self.ks, self.batch_size, users=users, device=device, per_user=per_user)
        finally:
            model.train(was_training)
