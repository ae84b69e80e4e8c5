"""Data layer: MMRec-format folders and synthetic data as PyG ``HeteroData``."""
from .mmrec import DataFormatError, default_data_root, describe, load_mmrec, resolve_dataset_path
from .schema import (INDUCED, INDUCED_BY, ITEM, RATED_BY, RATES, USER, has_induced_edges,
                     modality_features, modality_names, num_items, num_users, set_modality,
                     split_edge_index, user_item_csr)
from .split import PAPER_SPLIT_SEEDS, per_user_split, resplit
from .synthetic import PRESETS, SyntheticSpec, synthetic


def load_dataset(name_or_path: str, seed: int = 0, drop_cold_start: bool = True):
    """``synthetic`` / ``synthetic-<preset>`` (generated with ``seed``) or an MMRec folder
    (a path, or a dataset name under :func:`default_data_root`)."""
    if name_or_path == "synthetic":
        return synthetic("small", seed=seed)
    if name_or_path.startswith("synthetic-"):
        return synthetic(name_or_path[len("synthetic-"):], seed=seed)
    return load_mmrec(name_or_path, drop_cold_start=drop_cold_start)


__all__ = [
    "DataFormatError", "default_data_root", "describe", "load_mmrec", "resolve_dataset_path",
    "INDUCED", "INDUCED_BY", "ITEM", "RATED_BY", "RATES", "USER", "has_induced_edges",
    "modality_features", "modality_names", "num_items", "num_users", "set_modality",
    "split_edge_index", "user_item_csr", "PAPER_SPLIT_SEEDS", "per_user_split", "resplit",
    "PRESETS", "SyntheticSpec", "synthetic", "load_dataset",
]
