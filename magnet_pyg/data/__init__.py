"""Data layer: MMRec-format folders and synthetic data as PyG ``HeteroData``."""
import copy

import torch

from .csr_index import CSRIndex
from .modalities import ID_ONLY_MODELS, check_in_channels, require_modalities
from .mmrec import DataFormatError, default_data_root, describe, load_mmrec, resolve_dataset_path
from .idmap import IdMap, read_id_maps
from .link_split import split_graph, split_graphs
from .prepare import prepare_dataset
from .schema import (INDUCED, INDUCED_BY, ITEM, RATED_BY, RATES, USER, has_induced_edges,
                     modality_features, modality_names, num_items, num_users, set_item_features,
                     set_modalities, set_modality, split_edge_index, user_item_csr)
from .split import PAPER_SPLIT_SEEDS, per_user_split, resplit
from .synthetic import PRESETS, SyntheticSpec, synthetic


def load_dataset(name_or_path: str, seed: int = 0, drop_cold_start: bool = True,
                 modalities=None):
    """``synthetic`` / ``synthetic-<preset>`` (generated with ``seed``) or an MMRec folder
    (a path, or a dataset name under :func:`default_data_root`). ``modalities`` keeps only
    those content modalities, in that order (default: all, sorted by name)."""
    if name_or_path == "synthetic" or name_or_path.startswith("synthetic-"):
        data = synthetic(name_or_path[len("synthetic-"):] or "small", seed=seed) \
            if name_or_path != "synthetic" else synthetic("small", seed=seed)
        return data if modalities is None else keep_modalities(data, modalities)
    return load_mmrec(name_or_path, drop_cold_start=drop_cold_start,
                      modalities=None if modalities is None else list(modalities))


def keep_modalities(data, modalities):
    """A copy of ``data`` with only the item feature matrices of ``modalities``, in that order
    (an error names any modality the data does not have). The kept features are copied once
    into the copy's ``data["item"].x``; the dropped ones are not copied."""
    have = modality_names(data)
    missing = [m for m in modalities if m not in have]
    if missing:
        raise DataFormatError(f"modalities {missing} requested, the data has {have}")
    feats = modality_features(data)
    out = copy.copy(data)  # new stores sharing the tensors: drop the features before cloning
    set_modalities(out, {})
    out = out.clone()
    set_modalities(out, {m: feats[m].clone(memory_format=torch.contiguous_format)
                         if len(modalities) == 1 else feats[m] for m in modalities})
    return out


__all__ = [
    "CSRIndex", "ID_ONLY_MODELS", "check_in_channels", "require_modalities", "DataFormatError", "default_data_root", "describe", "load_mmrec",
    "resolve_dataset_path",
    "INDUCED", "INDUCED_BY", "ITEM", "RATED_BY", "RATES", "USER", "has_induced_edges",
    "modality_features", "modality_names", "num_items", "num_users", "set_modality",
    "set_modalities", "set_item_features", "split_graph", "split_graphs", "split_edge_index",
    "user_item_csr", "PAPER_SPLIT_SEEDS", "per_user_split", "resplit",
    "PRESETS", "SyntheticSpec", "synthetic", "load_dataset", "keep_modalities",
    "IdMap", "read_id_maps", "prepare_dataset",
]
