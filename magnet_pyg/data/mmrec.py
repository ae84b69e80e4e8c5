"""Load an MMRec-format dataset folder into a :class:`HeteroData` (see :mod:`.schema`).

The folder holds ``<name>.inter`` (tab-separated, with a header: ``userID itemID
x_label`` or ``userID itemID rating timestamp x_label``; ``x_label`` 0/1/2 =
train/valid/test) and any number of ``<modality>_feat.npy`` item feature matrices
(row ``i`` is item ``i``). Every problem is reported with the file and the row or
field at fault; nothing is dropped without being counted in the log.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .schema import ITEM, USER, set_modality, set_split_edges

log = logging.getLogger(__name__)

DATA_ENV = "MAGNET_PYG_DATA"
REQUIRED = ("userID", "itemID", "x_label")
OPTIONAL = ("rating", "timestamp")


class DataFormatError(ValueError):
    """An input file does not follow the MMRec format; the message names file and row."""


def default_data_root() -> Path:
    """``$MAGNET_PYG_DATA`` if set, else ``../shared/data`` next to the checkout."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def resolve_dataset_path(name_or_path: Union[str, Path]) -> Path:
    """A folder path as given, or a dataset name looked up under :func:`default_data_root`."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    q = default_data_root() / str(name_or_path)
    if q.is_dir():
        return q
    raise FileNotFoundError(
        f"dataset '{name_or_path}' not found: neither '{p}' nor '{q}' is a folder "
        f"(set ${DATA_ENV} to the folder holding the datasets)")


def read_inter(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """Parse and validate an ``.inter`` file; returns ``userID``/``itemID``/``x_label`` arrays."""
    path = Path(path)
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise DataFormatError(f"{path}: empty file (expected a header row)")
    header = lines[0].split("\t")
    missing = [c for c in REQUIRED if c not in header]
    extra = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or extra or len(header) not in (3, 5) or len(set(header)) != len(header):
        raise DataFormatError(
            f"{path}, row 1 (header): expected the 3 columns {list(REQUIRED)} or the 5 columns "
            f"{['userID', 'itemID', 'rating', 'timestamp', 'x_label']}, got {header}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
    ncol = len(header)
    body = [ln for ln in lines[1:]]
    while body and not body[-1].strip():  # tolerate trailing blank lines only
        body.pop()
    rows = [ln.split("\t") for ln in body]
    bad = next((k for k, r in enumerate(rows) if len(r) != ncol), None)
    if bad is not None:
        raise DataFormatError(
            f"{path}, row {bad + 2}: expected {ncol} tab-separated fields, got {len(rows[bad])}: {body[bad]!r}")
    if not rows:
        raise DataFormatError(f"{path}: no interaction rows after the header")
    table = np.asarray(rows, dtype=str)
    out: Dict[str, np.ndarray] = {}
    for col in REQUIRED:
        j = header.index(col)
        vals = np.char.strip(table[:, j])
        ok = np.char.isdigit(vals)
        if not ok.all():
            k = int(np.flatnonzero(~ok)[0])
            raise DataFormatError(
                f"{path}, row {k + 2}, field '{col}': expected a non-negative integer, got {vals[k]!r}")
        out[col] = vals.astype(np.int64)
    lab = out["x_label"]
    bad_lab = np.flatnonzero((lab < 0) | (lab > 2))
    if bad_lab.size:
        k = int(bad_lab[0])
        raise DataFormatError(f"{path}, row {k + 2}, field 'x_label': expected 0, 1 or 2, got {lab[k]}")
    return out


def read_features(path: Union[str, Path], num_items: int) -> torch.Tensor:
    """Load a ``*_feat.npy`` matrix, checking its shape and values against the catalogue."""
    path = Path(path)
    x = np.load(path, allow_pickle=False)
    if x.ndim != 2:
        raise DataFormatError(f"{path}: expected a 2-D [num_items, dim] array, got shape {x.shape}")
    if x.shape[0] != num_items:
        raise DataFormatError(
            f"{path}: has {x.shape[0]} rows but the interactions define {num_items} items "
            f"(row i must be item i)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        n_bad = int((~finite.all(axis=1)).sum())
        raise DataFormatError(
            f"{path}: row {r}, column {c} is {x[r, c]} ({n_bad} rows hold NaN or inf values)")
    return torch.from_numpy(x)


def find_modalities(folder: Union[str, Path]) -> Dict[str, Path]:
    """``{modality: path}`` for every ``<modality>_feat.npy`` in ``folder``, sorted by name."""
    folder = Path(folder)
    return {p.name[: -len("_feat.npy")]: p for p in sorted(folder.glob("*_feat.npy"))}


def load_mmrec(
    folder: Union[str, Path],
    name: Optional[str] = None,
    modalities: Optional[Sequence[str]] = None,
    drop_cold_start: bool = True,
) -> HeteroData:
    r"""Load an MMRec-format folder as a :class:`HeteroData`.

    Args:
        folder: the dataset folder (or a dataset name under :func:`default_data_root`).
        name: basename of the ``.inter`` file (default: the only ``*.inter`` in the folder).
        modalities: which ``<modality>_feat.npy`` files to load (default: all found).
        drop_cold_start: drop valid/test rows whose user has no training row, as MMRec does.
    """
    folder = resolve_dataset_path(folder)
    if name is None:
        inters = sorted(folder.glob("*.inter"))
        if len(inters) != 1:
            raise DataFormatError(f"{folder}: expected exactly one *.inter file, found {[p.name for p in inters]}")
        inter_path = inters[0]
        name = inter_path.stem
    else:
        inter_path = folder / f"{name}.inter"
    cols = read_inter(inter_path)
    users, items, labels = cols["userID"], cols["itemID"], cols["x_label"]
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1

    # Duplicate (user, item) rows: keep the first occurrence, warn with the count.
    key = users * n_items + items
    _, first = np.unique(key, return_index=True)
    if first.size != key.size:
        keep = np.zeros(key.size, dtype=bool)
        keep[first] = True
        dup_rows = np.flatnonzero(~keep)
        msg = (f"{inter_path}: {dup_rows.size} duplicate (userID, itemID) rows removed, keeping the "
               f"first occurrence (first duplicate at row {int(dup_rows[0]) + 2})")
        warnings.warn(msg)
        log.warning(msg)
        users, items, labels = users[keep], items[keep], labels[keep]

    train = labels == 0
    if not train.any():
        raise DataFormatError(f"{inter_path}: the training split (x_label = 0) is empty")
    data = HeteroData()
    data[USER].num_nodes = n_users
    data[ITEM].num_nodes = n_items
    data.name = name
    data.modalities = []
    ei = torch.from_numpy(np.stack([users, items]))
    tr = torch.from_numpy(train)
    va = torch.from_numpy(labels == 1)
    te = torch.from_numpy(labels == 2)
    if drop_cold_start:
        has_train = torch.zeros(n_users, dtype=torch.bool)
        has_train[ei[0, tr]] = True
        for split, mask in (("valid", va), ("test", te)):
            cold = mask & ~has_train[ei[0]]
            n = int(cold.sum())
            if n:
                log.info("%s: dropped %d cold-start %s rows (%d users without training rows)",
                         inter_path, n, split, int(ei[0, cold].unique().numel()))
            mask &= ~cold
    set_split_edges(data, ei[:, tr], ei[:, va], ei[:, te])

    found = find_modalities(folder)
    wanted = list(found) if modalities is None else list(modalities)
    for m in wanted:
        if m not in found:
            raise DataFormatError(f"{folder}: modality '{m}' requested but {m}_feat.npy is missing "
                                  f"(found: {sorted(found)})")
        set_modality(data, m, read_features(found[m], n_items))
    log.info("loaded %s: %d users, %d items, %d/%d/%d train/valid/test, modalities %s", name,
             n_users, n_items, int(tr.sum()), data.valid_edge_index.size(1),
             data.test_edge_index.size(1), wanted)
    return data


def describe(data: HeteroData) -> Dict[str, object]:
    """Summary counts of a dataset (for logs and ``results.json``)."""
    from .schema import modality_features, num_items, num_users, split_edge_index
    return {
        "name": getattr(data, "name", None),
        "users": num_users(data),
        "items": num_items(data),
        **{f"{s}_edges": int(split_edge_index(data, s).size(1)) for s in ("train", "valid", "test")},
        "modalities": {k: int(v.size(1)) for k, v in modality_features(data).items()},
    }

