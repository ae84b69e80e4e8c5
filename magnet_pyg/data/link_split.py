r"""The train / validation / test splits in PyG's link-prediction layout.

PyG's :class:`~torch_geometric.transforms.RandomLinkSplit` returns three
:class:`~torch_geometric.data.HeteroData` objects, one per split, each holding the pairs to
score as ``edge_label_index`` (``[2, n]``) and their targets as ``edge_label`` (``[n]``) on
the supervised edge type. One :class:`HeteroData` cannot hold three such pairs of
attributes, so the datasets of this package keep their three splits (see
:mod:`.schema`) and :func:`split_graph` derives the PyG view of one split on demand:

* ``view[RATES].edge_label_index``: the split's ``(user, item)`` pairs, exactly
  :func:`~magnet_pyg.data.split_edge_index` ``(data, split)`` (the same tensor, no copy);
* ``view[RATES].edge_label``: ``[n]`` ``float32`` ones: every pair is an observed
  interaction. No negatives are stored: the ranking protocol scores every item the user has
  not interacted with in training, so the negatives are implicit (PyG's
  ``RandomLinkSplit(neg_sampling_ratio=0.0)`` layout);
* ``view[RATES].edge_index`` / ``view[RATED_BY].edge_index``: the **training** graph, in
  every view. Unlike ``RandomLinkSplit``'s default, the validation pairs are not added to
  the message-passing graph of the test view: the MMRec protocol propagates over the
  training interactions only;
* the graph-level ``valid_edge_index`` / ``test_edge_index`` are not in the view (it
  describes one split); everything else (features, induced edges, names) is shared with
  ``data`` without copying.

:func:`split_graphs` returns the three views, like ``RandomLinkSplit``::

    train_data, val_data, test_data = split_graphs(data)
    loader = LinkNeighborLoader(val_data, num_neighbors=[10, 10],
                                edge_label_index=(RATES, val_data[RATES].edge_label_index),
                                edge_label=val_data[RATES].edge_label, batch_size=1024)
"""
from __future__ import annotations

import copy
from typing import Tuple

import torch
from torch_geometric.data import HeteroData

from .schema import RATES, SPLITS, split_edge_index

__all__ = ["split_graph", "split_graphs"]

_SPLIT_ATTRS = ("valid_edge_index", "test_edge_index")


def split_graph(data: HeteroData, split: str) -> HeteroData:
    r"""PyG link-prediction view of one split (see the module docstring).

    Args:
        data: a dataset in the layout of :mod:`magnet_pyg.data.schema`.
        split: ``"train"``, ``"valid"`` or ``"test"``.

    Returns:
        A shallow copy of ``data`` (tensors shared) with
        ``[RATES].edge_label_index`` ``[2, n]`` (row 0 users, row 1 items) and
        ``[RATES].edge_label`` ``[n]`` ``float32`` ones, ``n`` the size of ``split``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}', expected one of {SPLITS}")
    pairs = split_edge_index(data, split)
    out = copy.copy(data)
    for attr in _SPLIT_ATTRS:
        if attr in out:
            delattr(out, attr)
    store = out[RATES]
    store.edge_label_index = pairs
    store.edge_label = torch.ones(pairs.size(1), dtype=torch.float32, device=pairs.device)
    return out


def split_graphs(data: HeteroData) -> Tuple[HeteroData, HeteroData, HeteroData]:
    """``(train_data, val_data, test_data)``: :func:`split_graph` of the three splits, the
    return layout of :class:`~torch_geometric.transforms.RandomLinkSplit`."""
    return tuple(split_graph(data, s) for s in SPLITS)  # type: ignore[return-value]
