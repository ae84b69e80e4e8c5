"""Checks of a dataset's content modalities against what a model needs."""
from __future__ import annotations

from typing import Dict, List, Mapping

from torch import Tensor
from torch_geometric.data import HeteroData

from .schema import modality_features, modality_names

__all__ = ["ID_ONLY_MODELS", "require_modalities", "check_in_channels"]

#: models that need no content modality (named in the error of :func:`require_modalities`)
ID_ONLY_MODELS = ("bpr", "lightgcn")


def require_modalities(data_or_names, model: str, minimum: int = 2) -> List[str]:
    """Return the dataset's modality names, or raise a :class:`ValueError` that names the models
    which work without content features when there are fewer than ``minimum``."""
    names = (modality_names(data_or_names) if isinstance(data_or_names, HeteroData)
             else list(data_or_names))
    if len(names) < minimum:
        raise ValueError(
            f"{model} needs at least {minimum} content modalities (item feature matrices), but the "
            f"dataset has {len(names)}: {names}. Models that work without content features: "
            f"{', '.join(ID_ONLY_MODELS)}")
    return names


def check_in_channels(in_channels: Mapping[str, int], data: HeteroData, model: str) -> Dict[str, Tensor]:
    """The dataset's ``{name: [I, d_name]}`` features, checked against the model's ``in_channels``."""
    feats = modality_features(data)
    require_modalities(list(feats), model)
    if list(feats) != list(in_channels) or any(feats[m].size(1) != int(in_channels[m]) for m in feats):
        raise ValueError(f"{model} was built for modalities {dict(in_channels)}, the dataset has "
                         f"{ {m: int(x.size(1)) for m, x in feats.items()} }")
    return feats
