"""Trainable copies of the raw item features (MMRec's fine-tuned feature tables)."""
from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import Tensor

__all__ = ["FeatureTables"]


class FeatureTables(torch.nn.Module):
    r"""Trainable copies of the raw item features, ``{m: [I, d_m]}``.

    MMRec's FREEDOM (and CRANE's public code) load the features with
    ``nn.Embedding.from_pretrained(feat, freeze=False)``: the raw features are fine-tuned. Here
    the tables are parameters of the model, filled with the dataset's features by the first
    :meth:`load_` (from the model's ``prepare``); ``loaded`` is saved with the weights, so a
    checkpoint that is loaded before or after ``prepare`` keeps its fine-tuned features.
    """

    def __init__(self, num_items: int, in_channels: Mapping[str, int]):
        super().__init__()
        self.tables = torch.nn.ParameterDict({m: torch.nn.Parameter(torch.zeros(num_items, int(c)))
                                              for m, c in in_channels.items()})
        self.register_buffer("loaded", torch.zeros((), dtype=torch.bool))

    def reset_parameters(self) -> None:
        """Forget the loaded features (the next :meth:`load_` fills them again)."""
        with torch.no_grad():
            for p in self.tables.values():
                p.zero_()
        self.loaded.fill_(False)

    @torch.no_grad()
    def load_(self, features: Mapping[str, Tensor]) -> None:
        if bool(self.loaded):
            return
        for m, p in self.tables.items():
            if tuple(features[m].shape) != tuple(p.shape):
                raise ValueError(f"feature '{m}' has shape {tuple(features[m].shape)}, "
                                 f"the model was built for {tuple(p.shape)}")
            p.copy_(features[m])
        self.loaded.fill_(True)

    def forward(self) -> Dict[str, Tensor]:
        return dict(self.tables.items())
