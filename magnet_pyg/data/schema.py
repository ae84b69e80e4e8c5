r"""How a recommendation dataset is laid out inside a PyG :class:`HeteroData`.

Every loader and generator in :mod:`magnet_pyg.data` returns this shape, and every
other part of the package reads it through the helpers below:

* node types ``"user"`` and ``"item"`` with ``num_nodes`` set;
* one item feature matrix per content modality, stored as ``data["item"]["x_<name>"]``
  (shape ``[num_items, d_name]``, ``float32``), with the ordered modality names in
  ``data.modalities`` (for example ``["image", "text"]`` or ``["image", "audio"]``);
* the training interactions as the edge type :data:`RATES` ``('user', 'rates', 'item')``
  plus its reverse :data:`RATED_BY` (``edge_index`` rows: source, destination);
* the validation and test interactions, never part of the message-passing graph, as
  global attributes ``data.valid_edge_index`` and ``data.test_edge_index``
  (shape ``[2, n]``, row 0 users, row 1 items);
* content-induced edges (MAGNET's :math:`\mathcal{E}^+`, added by
  :mod:`magnet_pyg.graph`) as :data:`INDUCED` ``('user', 'induced', 'item')`` with
  ``edge_weight`` = candidate score, plus its reverse :data:`INDUCED_BY`.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

USER = "user"
ITEM = "item"
RATES = (USER, "rates", ITEM)
RATED_BY = (ITEM, "rated_by", USER)
INDUCED = (USER, "induced", ITEM)
INDUCED_BY = (ITEM, "induced_by", USER)
SPLITS = ("train", "valid", "test")


def num_users(data: HeteroData) -> int:
    return int(data[USER].num_nodes)


def num_items(data: HeteroData) -> int:
    return int(data[ITEM].num_nodes)


def modality_names(data: HeteroData) -> List[str]:
    """Ordered content-modality names of ``data`` (may be empty)."""
    return list(getattr(data, "modalities", None) or [])


def modality_features(data: HeteroData) -> Dict[str, Tensor]:
    """``{name: [num_items, d_name] tensor}`` for every content modality, in order."""
    return {name: data[ITEM][f"x_{name}"] for name in modality_names(data)}


def set_modality(data: HeteroData, name: str, x: Tensor) -> None:
    """Add (or replace) the item feature matrix of modality ``name``."""
    if x.dim() != 2 or x.size(0) != num_items(data):
        raise ValueError(
            f"modality '{name}': expected a [{num_items(data)}, d] matrix, got shape {tuple(x.shape)}")
    if x.size(1) == 0:
        raise ValueError(f"modality '{name}': the feature matrix has zero columns (shape "
                         f"{tuple(x.shape)}); a modality with zero columns is an error for every model")
    data[ITEM][f"x_{name}"] = x
    names = modality_names(data)
    if name not in names:
        data.modalities = names + [name]


def split_edge_index(data: HeteroData, split: str) -> Tensor:
    """``[2, n]`` (user, item) pairs of ``split`` in ``{'train', 'valid', 'test'}``."""
    if split == "train":
        return data[RATES].edge_index
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")
    return getattr(data, f"{split}_edge_index")


def set_split_edges(data: HeteroData, train: Tensor, valid: Tensor, test: Tensor) -> HeteroData:
    """Store the three splits (each ``[2, n]`` user/item pairs) on ``data``."""
    data[RATES].edge_index = train
    data[RATED_BY].edge_index = train.flip(0)
    data.valid_edge_index = valid
    data.test_edge_index = test
    return data


def has_induced_edges(data: HeteroData) -> bool:
    return INDUCED in data.edge_types and data[INDUCED].num_edges > 0


def user_item_csr(edge_index: Tensor, num_users: int, num_items: int) -> Tensor:
    """Binary ``[num_users, num_items]`` CSR matrix (``torch.sparse_csr``) of the pairs."""
    values = torch.ones(edge_index.size(1), dtype=torch.float32)
    coo = torch.sparse_coo_tensor(edge_index, values, (num_users, num_items)).coalesce()
    return coo.to_sparse_csr()
