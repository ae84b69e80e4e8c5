r"""Raw interactions (+ item features and item text) -> an MMRec dataset folder.

:func:`prepare_dataset` reads a CSV, TSV or parquet file of (user, item[, rating][, time])
rows with raw IDs (any text or integers) and writes a folder that
:func:`~magnet_pyg.data.load_dataset` reads::

    OUT/
      <name>.inter        userID itemID [rating timestamp] x_label (tab-separated)
      u_id_mapping.csv    raw user ID -> userID (tab-separated, as MMRec's)
      i_id_mapping.csv    raw item ID -> itemID
      <modality>_feat.npy one float32 [num_items, d] matrix per feature or text source
      prepare.json        the options, the sources and the counts of every step

The steps, in order (the counts of each are logged and kept in ``prepare.json``):

1. **read and check** every input before any output is written or any text is encoded: a
   missing column (the columns found are listed), an empty ID, a non-numeric, NaN or
   infinite rating, an unparseable timestamp, ... is a :class:`DataFormatError` naming the
   file, the row and the field;
2. **rating filter** (``min_rating``): keep rows with ``rating >= min_rating``;
3. **duplicates**: of the rows of one (user, item) pair keep the earliest one (smallest
   timestamp; without timestamps, or on a tie, the first in the file);
4. **k-core** (``kcore = k > 0``): remove users and items with fewer than ``k``
   interactions, again until none is left (MMRec uses ``k = 5``);
5. **contiguous IDs**: users and items are numbered ``0 .. n - 1`` in the order in which
   they first appear in the file (as MMRec's ``pd.unique``);
6. **per-user split** (MMRec's rule, with ``ratios = (train, valid, test)``): a user's
   ``n`` interactions are ordered (``split="random"``: shuffled with ``seed``;
   ``split="time"``: by timestamp, earliest first, ties in file order) and the last
   ``h = floor(n * (valid + test))`` are held out, ``floor(h * valid / (valid + test))``
   for validation then the rest for test; a user with ``n >= 3`` interactions gets at least
   one validation and one test interaction (for 8:1:1 this is exactly MMRec's
   "``n < 10``: ``n - 2`` / 1 / 1" rule) and keeps at least one for training; a user with
   fewer than 3 keeps all of them in training;
7. **item features** (``item_features={name: path}``), keyed by raw item ID: a table
   (``.csv`` / ``.tsv`` / ``.parquet``) with the item column and one numeric column per
   dimension (or, in parquet, one list column), or an ``.npz`` holding ``ids`` (1-D raw IDs)
   and ``features`` (2-D); rows are re-ordered to the new item IDs, items removed by the
   filters are left out;
8. **item text** (``item_text={name: path}``): a table with the item column and a text
   column (``text_columns[name]``, default ``"text"``), encoded with ``text_encoder``
   (default: all-MiniLM-L6-v2, as MMRec's ``text_feat.npy``; see :mod:`.text`).

An item of the final catalogue without a feature row or with an empty text is an error
naming the first ones (``missing_features="error"``), or gets the mean of the other items'
rows (``"mean"``, as MMRec does for missing image features). A feature or text row whose
item ID never occurs in the interactions file is an error (a key mismatch; rows of items
that the filters removed are simply left out), and so is an item given twice.

The folder is written atomically: it is built in a hidden sibling folder and renamed into
place at the end, so after an error no partial output exists. An existing non-empty output
folder is refused unless ``overwrite=True``; it is then moved aside to
``<out>.replaced-<time>``, never mixed with the new one.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .idmap import ITEM_MAP, USER_MAP, IdMap
from .mmrec import DataFormatError, _check_file
from .tables import Table, parse_ids, parse_numbers, parse_timestamps, read_table, table_format
from .text import SentenceEncoder, TextEncoder

log = logging.getLogger(__name__)

__all__ = ["prepare_dataset", "kcore_filter", "split_labels", "MISSING_POLICIES", "SPLITS"]

PathLike = Union[str, Path]
SPLITS = ("random", "time")
MISSING_POLICIES = ("error", "mean")
#: users with fewer interactions keep all of them in training
MIN_SPLIT_INTERACTIONS = 3
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_EPS = 1e-9


# ----------------------------------------------------------------------------- the steps
def kcore_filter(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions left by the iterative ``k``-core filter: users and
    items with fewer than ``k`` interactions are removed until none is left (``k <= 1``: all
    kept). ``users`` / ``items`` are integer codes ``[n]``."""
    keep = np.ones(users.size, dtype=bool)
    if k <= 1:
        return keep
    nu, ni = int(users.max()) + 1, int(items.max()) + 1
    while True:
        du = np.bincount(users[keep], minlength=nu)
        di = np.bincount(items[keep], minlength=ni)
        bad = keep & ((du[users] < k) | (di[items] < k))
        if not bad.any():
            return keep
        keep &= ~bad


def split_labels(users: np.ndarray, order_key: np.ndarray,
                 ratios: Tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Tuple[np.ndarray, np.ndarray]:
    """Per-user split (module docstring, step 6).

    Args:
        users: ``[n]`` user codes.
        order_key: ``[n]`` sort key within a user (timestamps, or random numbers); ties keep
            the input order.
        ratios: train, valid, test shares.

    Returns:
        ``(labels [n], rank [n])``: ``x_label`` 0/1/2 of every interaction and its position
        in its user's order.
    """
    n_all = users.size
    order = np.lexsort((np.arange(n_all), order_key, users))
    su = users[order]
    counts = np.bincount(users)
    starts = np.cumsum(counts) - counts
    rank_sorted = np.arange(n_all) - starts[su]
    n = counts[su]
    rv, rt = float(ratios[1]), float(ratios[2])
    hold = np.minimum(np.floor(n * (rv + rt) + _EPS).astype(np.int64), n - 1)
    n_val = np.floor(hold * (rv / (rv + rt)) + _EPS).astype(np.int64) if rv + rt > 0 else hold * 0
    n_test = hold - n_val
    big = n >= MIN_SPLIT_INTERACTIONS
    if rv > 0:
        n_val = np.where(big, np.maximum(n_val, 1), n_val)
    if rt > 0:
        n_test = np.where(big, np.maximum(n_test, 1), n_test)
    over = np.maximum(n_val + n_test - (n - 1), 0)  # keep one training interaction
    test_larger = n_test >= n_val
    n_test = n_test - np.where(test_larger, over, 0)
    n_val = n_val - np.where(test_larger, 0, over)
    n_val, n_test = np.where(big, n_val, 0), np.where(big, n_test, 0)
    lab_sorted = np.zeros(n_all, dtype=np.int64)
    lab_sorted[rank_sorted >= n - n_test - n_val] = 1
    lab_sorted[rank_sorted >= n - n_test] = 2
    labels = np.empty(n_all, dtype=np.int64)
    rank = np.empty(n_all, dtype=np.int64)
    labels[order] = lab_sorted
    rank[order] = rank_sorted
    return labels, rank


def _first_appearance_codes(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(codes [n], uniques)``: ``values`` numbered 0.. in order of first appearance."""
    uniq, first, inv = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    return rank[inv.reshape(-1)], uniq[order]


# ----------------------------------------------------------------------------- checks
def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{what} {name!r} is not usable as a file name: use letters, digits and "
                         f"'_', '.', '+', '-' (not starting with '.' or '-')")


def _check_ratios(ratios: Sequence[float]) -> Tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or not all(math.isfinite(x) and x >= 0 for x in r) or abs(sum(r) - 1) > 1e-6:
        raise ValueError(f"split ratios must be three non-negative numbers (train, valid, test) "
                         f"summing to 1, got {list(ratios)}")
    if r[0] <= 0:
        raise ValueError(f"the training share of the split ratios must be > 0, got {list(ratios)}")
    return r  # type: ignore[return-value]


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ValueError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            raise ValueError(f"{out}: the output folder exists and is not empty; choose another "
                             f"folder, or overwrite (the old one is then moved aside)")


def _check_source(path: PathLike, what: str) -> Path:
    path = Path(path)
    _check_file(path, what)
    return path


def _named_sources(sources: Optional[Mapping[str, PathLike]], what: str) -> Dict[str, Path]:
    out = {}
    for name, path in (sources or {}).items():
        _check_name(name, f"{what} name")
        out[name] = Path(path)
    return out


# ----------------------------------------------------------------------------- item side files
class _Side:
    """Rows of one feature or text source, keyed by raw item ID. ``where(k, field)`` names
    the file, row (or ``.npz`` entry) and field of row ``k``."""

    def __init__(self, kind: str, name: str, path: Path, ids: np.ndarray, where, row_of, values):
        self.kind, self.name, self.path = kind, name, path
        self.ids, self.where, self.row_of, self.values = ids, where, row_of, values


def _check_side_ids(side: _Side, raw_items: set, id_field: str) -> Dict[str, int]:
    pos: Dict[str, int] = {}
    for k, r in enumerate(side.ids.tolist()):
        if r in pos:
            raise DataFormatError(f"{side.where(k, id_field)}: item {r!r} is given twice (first at "
                                  f"{side.row_of(pos[r])})")
        if r not in raw_items:
            raise DataFormatError(f"{side.where(k, id_field)}: item {r!r} does not occur in the "
                                  f"interactions file (the {side.kind} must be keyed by the same raw "
                                  f"item IDs; remove rows of items without interactions)")
        pos[r] = k
    return pos


def _read_features(name: str, path: Path, item_col: str) -> _Side:
    ext = path.suffix.lower()
    if ext == ".npz":
        return _read_npz(name, path)
    if ext == ".npy":
        raise DataFormatError(f"{path}: a bare .npy matrix has no item IDs: save the raw item IDs "
                              f"with it, numpy.savez(path, ids=raw_ids, features=matrix), or a "
                              f"table with the item column")
    tab = read_table(path, None, f"'{name}' item features", {item_col: "item"})
    if item_col not in tab.header:
        raise DataFormatError(f"{path}, row 1 (header): no item column '{item_col}' in the item "
                              f"feature file; columns found: {tab.header}")
    ids = parse_ids(tab, item_col)
    cols = [c for c in tab.header if c != item_col]
    if not cols:
        raise DataFormatError(f"{path}, row 1 (header): no feature column besides the item "
                              f"column '{item_col}'")
    first = tab.columns[cols[0]][0]
    if len(cols) == 1 and isinstance(first, (list, tuple, np.ndarray)):
        x = _list_column(tab, cols[0])
    else:
        x = np.stack([parse_numbers(tab, c, "feature value") for c in cols], axis=1)
    return _Side("features", name, path, ids, tab.where, lambda k: f"row {int(tab.rows[k])}", x)


def _list_column(tab: Table, col: str) -> np.ndarray:
    vals = tab.columns[col]
    d = None
    out = []
    for k, v in enumerate(vals):
        if not isinstance(v, (list, tuple, np.ndarray)) or (d is not None and len(v) != d):
            got = "an empty value" if v is None else f"{len(v)} values" \
                if isinstance(v, (list, tuple, np.ndarray)) else repr(v)
            raise DataFormatError(f"{tab.where(k, col)}: expected a list of {d or 'd'} numbers, got {got}")
        d = len(v)
        try:
            row = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataFormatError(f"{tab.where(k, col)}: the list holds non-numeric values") from None
        if not np.isfinite(row).all():
            raise DataFormatError(f"{tab.where(k, col)}: NaN or infinite value at position "
                                  f"{int(np.flatnonzero(~np.isfinite(row))[0])}")
        out.append(row)
    if not d:
        raise DataFormatError(f"{tab.where(0, col)}: the feature lists are empty")
    return np.stack(out)


def _read_npz(name: str, path: Path) -> _Side:
    import zipfile
    if _check_file(path, "item feature") == 0:
        raise DataFormatError(f"{path}: empty file (0 bytes)")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = sorted(z.files)
            if "ids" not in keys or "features" not in keys:
                raise DataFormatError(f"{path}: expected the arrays 'ids' (raw item IDs) and "
                                      f"'features' ([n, d]), found {keys}")
            ids_arr, x = z["ids"], z["features"]
    except DataFormatError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataFormatError(f"{path}: not a readable .npz archive of 'ids' and 'features' "
                              f"(written by numpy.savez without object arrays): {e}") from None
    where = lambda k, field=None: f"{path}, entry {k} of '{field or 'ids'}'"
    if ids_arr.ndim != 1 or ids_arr.dtype.kind not in "iuUS":
        raise DataFormatError(f"{path}: 'ids' must be a 1-D array of integers or strings, got "
                              f"shape {ids_arr.shape} of {ids_arr.dtype}")
    if x.ndim != 2 or x.dtype.kind != "f" or x.shape[1] == 0:
        raise DataFormatError(f"{path}: 'features' must be a 2-D float matrix [n, d >= 1], got "
                              f"shape {x.shape} of {x.dtype}")
    if x.shape[0] != ids_arr.shape[0]:
        raise DataFormatError(f"{path}: 'features' has {x.shape[0]} rows but 'ids' holds "
                              f"{ids_arr.shape[0]} IDs")
    ids = np.char.strip(ids_arr.astype(str))
    empty = np.flatnonzero(np.char.str_len(ids) == 0)
    if empty.size:
        raise DataFormatError(f"{where(int(empty[0]))}: the ID is empty")
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        raise DataFormatError(f"{path}, entry {r} of 'features', column {c}: {x[r, c]} is not finite")
    return _Side("features", name, path, ids, where, lambda k: f"entry {k}", x.astype(np.float64))


def _read_text(name: str, path: Path, item_col: str, text_col: str) -> _Side:
    tab = read_table(path, [item_col, text_col], f"'{name}' item text",
                     {item_col: "item", text_col: "text"})
    ids = parse_ids(tab, item_col)
    texts = []
    for k, v in enumerate(tab.columns[text_col]):
        if v is not None and not isinstance(v, str):
            raise DataFormatError(f"{tab.where(k, text_col)}: expected text, got "
                                  f"{type(v).__name__} {v!r}")
        texts.append(v if v is not None else "")
    return _Side("item text", name, path, ids, tab.where, lambda k: f"row {int(tab.rows[k])}", texts)


def _align(side: _Side, raw_items: List[str], pos: Dict[str, int], policy: str,
           text_col: Optional[str] = None) -> Tuple[List[int], List[int]]:
    """``(rows, items)``: the source row of every final item that has one, and the final items
    without one (no row, or an empty text); the latter are an error under ``"error"``."""
    rows, missing = [], []
    empty_at = None
    for j, r in enumerate(raw_items):
        k = pos.get(r)
        if k is not None and text_col is not None and not side.values[k].strip():
            empty_at = empty_at if empty_at is not None else k
            k = None
        if k is None:
            missing.append(j)
        else:
            rows.append(k)
    if missing and policy == "error":
        if empty_at is not None:
            raise DataFormatError(f"{side.where(empty_at, text_col)}: the text of item "
                                  f"{str(side.ids[empty_at])!r} is empty ({len(missing)} items of the "
                                  f"dataset have no text; they may get the mean of the others)")
        some = ", ".join(repr(raw_items[j]) for j in missing[:5])
        raise DataFormatError(f"{side.path}: no {side.kind} row for {len(missing)} of the "
                              f"{len(raw_items)} items of the dataset, e.g. {some} (every item "
                              f"needs a row; or they may get the mean of the others)")
    if len(missing) == len(raw_items):
        raise DataFormatError(f"{side.path}: none of the {len(raw_items)} items of the dataset "
                              f"has a {side.kind} row")
    return rows, missing


def _fill(x_have: np.ndarray, have: List[int], missing: List[int], n: int) -> np.ndarray:
    x = np.empty((n, x_have.shape[1]), dtype=np.float64)
    keep = np.ones(n, dtype=bool)
    keep[missing] = False
    x[keep] = x_have
    if missing:
        x[missing] = x_have.mean(axis=0)
    return x


def _to_float32(x: np.ndarray, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        y = x.astype(np.float32)
    if not np.isfinite(y).all():
        r = int(np.flatnonzero(~np.isfinite(y).all(axis=1))[0])
        raise DataFormatError(f"{what}: row {r} holds values outside the float32 range")
    return y


# ----------------------------------------------------------------------------- output
def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 2 ** 63 else repr(float(x))


def _write_inter(path: Path, users, items, labels, rating=None, ts=None) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        if rating is not None and ts is not None:
            f.write("userID\titemID\trating\ttimestamp\tx_label\n")
            f.writelines(f"{u}\t{i}\t{_number(r)}\t{_number(t)}\t{l}\n"
                         for u, i, r, t, l in zip(users.tolist(), items.tolist(), rating.tolist(),
                                                  ts.tolist(), labels.tolist()))
        else:
            f.write("userID\titemID\tx_label\n")
            f.writelines(f"{u}\t{i}\t{l}\n" for u, i, l in zip(users.tolist(), items.tolist(),
                                                                 labels.tolist()))


def _make_parents(path: Path) -> List[Path]:
    made = []
    p = path.parent
    while not p.exists():
        made.append(p)
        p = p.parent
    for d in reversed(made):
        d.mkdir()
    return made


def _install(tmp: Path, out: Path, overwrite: bool) -> Optional[Path]:
    """Rename the finished ``tmp`` folder to ``out``; an existing non-empty ``out`` is moved
    aside (``overwrite``) and its new name returned."""
    moved = None
    if out.exists():
        _check_out(out, overwrite)
        if any(out.iterdir()):
            moved = out.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            n = 1
            while moved.exists():
                moved = moved.with_name(f"{out.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
                n += 1
            os.rename(out, moved)
        else:
            out.rmdir()
    os.rename(tmp, out)
    return moved


# ----------------------------------------------------------------------------- entry point
def prepare_dataset(
    interactions: PathLike,
    out_dir: PathLike,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    rating_col: Optional[str] = None,
    time_col: Optional[str] = None,
    min_rating: Optional[float] = None,
    kcore: int = 0,
    split: str = "random",
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    item_features: Optional[Mapping[str, PathLike]] = None,
    item_text: Optional[Mapping[str, PathLike]] = None,
    text_columns: Optional[Mapping[str, str]] = None,
    content_item_col: Optional[str] = None,
    missing_features: str = "error",
    text_encoder: Union[None, str, TextEncoder] = None,
    name: Optional[str] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    r"""Turn raw interactions into an MMRec dataset folder (module docstring).

    Args:
        interactions: ``.csv``, ``.tsv`` or ``.parquet`` file with a header.
        out_dir: the dataset folder to write (must not exist, or be empty, unless
            ``overwrite``).
        user_col, item_col: raw ID columns (text or integers; compared as text).
        rating_col: optional rating column (numbers), written to the ``.inter`` file with the
            timestamps when both are given.
        time_col: optional timestamp column: numbers (any unit) or ISO 8601 date-times.
        min_rating: keep rows with ``rating >= min_rating`` (needs ``rating_col``).
        kcore: iterative k-core filter on users and items (0: off).
        split: ``"random"`` (per user, shuffled with ``seed``) or ``"time"`` (per user by
            timestamp, the latest to test; needs ``time_col``).
        ratios: ``(train, valid, test)`` shares, summing to 1.
        seed: seed of the random split.
        item_features: ``{modality: path}`` of item feature sources keyed by raw item ID.
        item_text: ``{modality: path}`` of item text tables, encoded into ``<modality>_feat.npy``.
        text_columns: ``{modality: column}`` text column of each ``item_text`` table (default
            ``"text"``).
        content_item_col: item column of the feature and text tables (default ``item_col``).
        missing_features: ``"error"`` or ``"mean"`` for dataset items without a feature row
            or with an empty text.
        text_encoder: a :class:`~magnet_pyg.data.text.TextEncoder` object, or a
            sentence-transformers model name or folder for
            :class:`~magnet_pyg.data.text.SentenceEncoder` (default: all-MiniLM-L6-v2).
        name: dataset name, the stem of the ``.inter`` file (default: the folder's name).
        overwrite: replace an existing non-empty ``out_dir`` (moved aside to
            ``<out_dir>.replaced-<time>``).

    Returns:
        the summary written to ``prepare.json`` (counts of every step, the sources, the
        modalities and their sizes), with ``"path"`` the output folder.

    Raises:
        DataFormatError: bad input (file, row and field named), before any output exists.
        ValueError: bad options.
    """
    # ---- options (cheap, before reading anything)
    out = Path(out_dir)
    name = name if name is not None else out.resolve().name
    _check_name(name, "dataset name")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "time" and time_col is None:
        raise ValueError("a time split needs the timestamp column")
    if min_rating is not None and rating_col is None:
        raise ValueError("a minimum rating needs the rating column")
    if min_rating is not None and not math.isfinite(float(min_rating)):
        raise ValueError(f"the minimum rating must be a finite number, got {min_rating}")
    if int(kcore) != kcore or kcore < 0:
        raise ValueError(f"kcore must be a non-negative integer, got {kcore}")
    ratios = _check_ratios(ratios)
    if missing_features not in MISSING_POLICIES:
        raise ValueError(f"missing_features must be one of {MISSING_POLICIES}, got {missing_features!r}")
    cols = [c for c in (user_col, item_col, rating_col, time_col) if c is not None]
    if len(set(cols)) != len(cols):
        raise ValueError(f"the user, item, rating and time columns must differ, got {cols}")
    feats = _named_sources(item_features, "feature")
    texts = _named_sources(item_text, "text")
    clash = sorted(set(feats) & set(texts))
    if clash:
        raise ValueError(f"modality names {clash} are given both as features and as text")
    text_columns = dict(text_columns or {})
    stray = sorted(set(text_columns) - set(texts))
    if stray:
        raise ValueError(f"text columns given for {stray}, which are not item text sources {sorted(texts)}")
    if text_encoder is not None and not texts:
        raise ValueError("a text encoder was given but no item text")
    side_col = content_item_col or item_col
    src = _check_source(interactions, "interactions")
    table_format(src)
    for n_, p in list(feats.items()) + list(texts.items()):
        _check_source(p, f"'{n_}' item {'features' if n_ in feats else 'text'}")
        if n_ in texts or p.suffix.lower() not in (".npz", ".npy"):
            table_format(p)
    _check_out(out, overwrite)
    encoder: Optional[TextEncoder] = None
    if texts:
        encoder = text_encoder if text_encoder is not None and not isinstance(text_encoder, str) \
            else SentenceEncoder(text_encoder)
        if not callable(getattr(encoder, "encode", None)):
            raise ValueError(f"text_encoder must have an encode(texts) method, got {type(encoder).__name__}")

    # ---- interactions
    roles = {user_col: "user", item_col: "item"}
    if rating_col:
        roles[rating_col] = "rating"
    if time_col:
        roles[time_col] = "timestamp"
    tab = read_table(src, cols, "interactions", roles)
    u_raw, i_raw = parse_ids(tab, user_col), parse_ids(tab, item_col)
    rating = parse_numbers(tab, rating_col, "rating") if rating_col else None
    ts = parse_timestamps(tab, time_col) if time_col else None
    stats: Dict[str, Any] = {"raw_rows": len(tab)}
    raw_item_set = set(i_raw.tolist())

    # ---- item side files: read and key-checked now, aligned after the filters
    sides: Dict[str, Tuple[_Side, Dict[str, int]]] = {}
    for mod, p in feats.items():
        side = _read_features(mod, p, side_col)
        sides[mod] = (side, _check_side_ids(side, raw_item_set, side_col if p.suffix.lower() != ".npz" else "ids"))
    for mod, p in texts.items():
        side = _read_text(mod, p, side_col, text_columns.get(mod, "text"))
        sides[mod] = (side, _check_side_ids(side, raw_item_set, side_col))

    # ---- filters
    idx = np.arange(len(tab))
    if min_rating is not None:
        idx = idx[rating[idx] >= float(min_rating)]
        stats["below_min_rating"] = int(len(tab) - idx.size)
        if idx.size == 0:
            raise DataFormatError(f"{src}: no row has a rating >= {min_rating}")
    uc, _ = _first_appearance_codes(u_raw[idx])
    ic, uniq_items = _first_appearance_codes(i_raw[idx])
    key = uc * np.int64(uniq_items.size) + ic
    order = np.lexsort((idx, ts[idx])) if ts is not None else np.arange(idx.size)
    _, first = np.unique(key[order], return_index=True)
    kept = np.sort(order[first])
    stats["duplicates_removed"] = int(idx.size - kept.size)
    idx, uc, ic = idx[kept], uc[kept], ic[kept]
    mask = kcore_filter(uc, ic, int(kcore))
    stats["kcore_removed"] = int((~mask).sum())
    idx = idx[mask]
    if idx.size == 0:
        raise DataFormatError(f"{src}: the {kcore}-core filter leaves no interaction "
                              f"(no user and item set with at least {kcore} interactions each)")

    # ---- contiguous IDs, split
    users, user_ids = _first_appearance_codes(u_raw[idx])
    items, item_ids = _first_appearance_codes(i_raw[idx])
    if split == "time":
        key_within = ts[idx]
    else:
        key_within = np.random.default_rng(int(seed)).random(idx.size)
    labels, rank = split_labels(users, key_within, ratios)
    out_order = np.lexsort((rank, users))
    users, items, labels, idx = users[out_order], items[out_order], labels[out_order], idx[out_order]
    n_users, n_items = int(user_ids.size), int(item_ids.size)
    stats.update(users=n_users, items=n_items, interactions=int(idx.size),
                 train=int((labels == 0).sum()), valid=int((labels == 1).sum()),
                 test=int((labels == 2).sum()))
    raw_items = item_ids.tolist()

    # ---- align side files (every check before the text is encoded)
    aligned: Dict[str, Tuple[List[int], List[int]]] = {}
    for mod, (side, pos) in sides.items():
        text_col = text_columns.get(mod, "text") if mod in texts else None
        aligned[mod] = _align(side, raw_items, pos, missing_features, text_col)
    matrices: Dict[str, np.ndarray] = {}
    modalities: Dict[str, Any] = {}
    for mod, (side, _) in sides.items():
        rows, missing = aligned[mod]
        if mod in feats:
            x_have = side.values[rows]
        else:
            x_have = _encode(encoder, [side.values[k] for k in rows], side.path)
        matrices[mod] = _to_float32(_fill(x_have, rows, missing, n_items), str(side.path))
        modalities[mod] = {"source": str(side.path.resolve()), "kind": side.kind,
                           "dim": int(matrices[mod].shape[1]), "filled_with_mean": len(missing)}
        if mod in texts:
            modalities[mod].update(column=text_columns.get(mod, "text"),
                                   encoder=getattr(encoder, "name", type(encoder).__name__))

    summary: Dict[str, Any] = {
        "name": name, "source": str(src.resolve()),
        "options": {"user_col": user_col, "item_col": item_col, "rating_col": rating_col,
                    "time_col": time_col, "min_rating": min_rating, "kcore": int(kcore),
                    "split": split, "ratios": list(ratios), "seed": int(seed) if split == "random" else None,
                    "content_item_col": side_col if sides else None,
                    "missing_features": missing_features, "duplicates": "keep the earliest"},
        "counts": stats, "modalities": modalities,
    }

    # ---- write: hidden sibling folder, renamed into place
    made = _make_parents(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.prepare-"))
    try:
        with_rt = rating is not None and ts is not None
        _write_inter(tmp / f"{name}.inter", users, items, labels,
                     rating[idx] if with_rt else None, ts[idx] if with_rt else None)
        IdMap("user", user_ids.tolist()).write(tmp / USER_MAP)
        IdMap("item", raw_items).write(tmp / ITEM_MAP)
        for mod, x in matrices.items():
            np.save(tmp / f"{mod}_feat.npy", x)
        (tmp / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        moved = _install(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in made:
            try:
                d.rmdir()
            except OSError:
                break
        raise
    if moved is not None:
        log.warning("%s: the previous folder was moved to %s", out, moved)
        summary["replaced_to"] = str(moved)
    log.info("prepared %s: %s", out, stats)
    summary["path"] = str(out)
    return summary


def _encode(encoder: TextEncoder, texts: List[str], path: Path) -> np.ndarray:
    log.info("encoding %d texts of %s with %r", len(texts), path, encoder)
    x = np.asarray(encoder.encode(list(texts)), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(texts) or x.shape[1] == 0:
        raise ValueError(f"the text encoder returned shape {x.shape} for {len(texts)} texts of "
                         f"{path}, expected [{len(texts)}, d]")
    if not np.isfinite(x).all():
        raise ValueError(f"the text encoder returned NaN or infinite values for {path}")
    return x
