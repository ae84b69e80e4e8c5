"""Load an MMRec-format dataset folder into a :class:`HeteroData` (see :mod:`.schema`).

The folder holds ``<name>.inter`` (tab-separated, with a header: ``userID itemID
x_label`` or ``userID itemID rating timestamp x_label``; ``x_label`` 0/1/2 =
train/valid/test) and any number of ``<modality>_feat.npy`` item feature matrices
(row ``i`` is item ``i``). Every problem is reported with the file and the row or
field at fault; nothing is dropped without being counted in the log.

What is checked, before any graph or model is built (each failure is a
:class:`DataFormatError`, a :class:`ValueError`, naming the file):

* every file: it exists, is a regular file (not a folder), and can be read;
  hidden files (names starting with ``.``) are ignored;
* ``.inter``: UTF-8 or ASCII text (a UTF-8 byte-order mark is accepted; UTF-16/32,
  NUL bytes and invalid UTF-8 are refused); LF or CRLF line endings; the header;
  the same number of tab-separated fields on every row; ``userID``, ``itemID`` and
  ``x_label`` are non-negative integers written with the ASCII digits 0-9 that fit
  in int64; ``x_label`` is 0, 1 or 2. The ``rating`` and ``timestamp`` columns are
  read past, not used;
* ID ranges: users and items become the nodes ``0 .. max ID``, so IDs must be
  contiguous integers from 0. A file whose ``max ID + 1`` exceeds
  ``2 * (number of distinct IDs) + 1000`` (:data:`ID_RANGE_FACTOR`,
  :data:`ID_RANGE_SLACK`) is refused, with the largest ID and the distinct count,
  rather than silently allocating millions of empty nodes: remap the IDs first;
* ``*_feat.npy``: a real ``.npy`` file (not an ``.npz``/zip archive, a pickle, or
  text), not truncated, of a floating-point dtype (float16/32/64; stored as float32),
  2-D ``[num_items, dim]`` with ``dim >= 1`` and ``num_items`` rows, and finite
  (the first NaN/inf row is named; so is a float64 value that overflows float32).
"""
from __future__ import annotations

import codecs
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch_geometric.data import HeteroData

from .schema import ITEM, USER, set_modalities, set_split_edges

log = logging.getLogger(__name__)

DATA_ENV = "MAGNET_PYG_DATA"
REQUIRED = ("userID", "itemID", "x_label")
OPTIONAL = ("rating", "timestamp")
#: ``max ID + 1 > ID_RANGE_FACTOR * distinct IDs + ID_RANGE_SLACK`` is refused (IDs must be contiguous).
ID_RANGE_FACTOR = 2
ID_RANGE_SLACK = 1000
INT64_MAX = int(np.iinfo(np.int64).max)
NPY_MAGIC = b"\x93NUMPY"


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


# ----------------------------------------------------------------------------- files
def _check_file(path: Path, what: str) -> int:
    """Size in bytes of ``path``, which must be an existing, regular file."""
    try:
        if path.is_dir():
            raise DataFormatError(f"{path}: is a folder, expected the {what} file")
        if not path.exists():
            dangling = " (a broken symbolic link)" if path.is_symlink() else ""
            raise DataFormatError(f"{path}: no such file{dangling}, expected the {what} file")
        if not path.is_file():  # a FIFO or device would block or stream forever
            raise DataFormatError(f"{path}: is not a regular file, expected the {what} file")
        return path.stat().st_size
    except OSError as e:
        raise DataFormatError(f"{path}: cannot access the {what} file: {e.strerror or e}") from e


def _read_bytes(path: Path, what: str) -> bytes:
    _check_file(path, what)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read the {what} file: {e.strerror or e}") from e


def _visible(paths) -> List[Path]:
    return sorted(p for p in paths if not p.name.startswith("."))


# ----------------------------------------------------------------------------- .inter
_UNICODE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                 (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_SAVE_AS = "save it as UTF-8 (or ASCII) text"


def _row_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _decode_text(path: Path, raw: bytes) -> str:
    """``raw`` as UTF-8 text (a UTF-8 byte-order mark is dropped); any other encoding is an error."""
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    for bom, enc in _UNICODE_BOMS:
        if raw.startswith(bom):
            raise DataFormatError(f"{path}: the file is {enc}-encoded (it starts with a {enc} "
                                  f"byte-order mark); {_SAVE_AS}")
    nul = raw.find(b"\x00", skip)
    if nul >= 0:
        raise DataFormatError(
            f"{path}, row {_row_of(raw, nul)}: NUL byte at byte offset {nul}: the file "
            f"looks UTF-16/UTF-32-encoded (without a byte-order mark) or binary; {_SAVE_AS}")
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = e.start + skip
        raise DataFormatError(
            f"{path}, row {_row_of(raw, at)}: byte 0x{raw[at]:02x} at byte offset {at} is "
            f"not valid UTF-8 (a Latin-1 or Windows-1252 file?); {_SAVE_AS}") from None


def _locate(text: str, pos: int, header: List[str]) -> str:
    """``row R, field 'F'`` of character offset ``pos`` in ``text`` (rows count from 1 = header)."""
    row = text.count("\n", 0, pos) + 1
    line_start = text.rfind("\n", 0, pos) + 1
    j = text.count("\t", line_start, pos)
    field = f", field '{header[j]}'" if row > 1 and j < len(header) else ""
    return f"row {row}{field}"


def _split_hint(line: str) -> str:
    if "\t" not in line and (" " in line.strip() or "," in line or ";" in line):
        return " (fields must be separated by tabs, not spaces or commas)"
    return ""


def read_inter(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """Parse and validate an ``.inter`` file; returns ``userID``/``itemID``/``x_label`` arrays.

    Raises :class:`DataFormatError` naming the file (and row and field) for every problem
    listed in the module docstring, including non-contiguous ID ranges."""
    path = Path(path)
    text = _decode_text(path, _read_bytes(path, ".inter"))
    text = text.replace("\r\n", "\n")
    cr = text.find("\r")
    if cr >= 0:
        raise DataFormatError(f"{path}, row {text.count(chr(10), 0, cr) + 1}: a carriage return "
                              f"(CR) inside a line; line endings must be LF or CRLF")
    if not text.strip():
        raise DataFormatError(f"{path}: empty file (expected a header row "
                              f"'{chr(9).join(REQUIRED)}' and interaction rows)")
    lines = text.split("\n")
    header = [h.strip() for h in lines[0].split("\t")]
    missing = [c for c in REQUIRED if c not in header]
    extra = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or extra or len(header) not in (3, 5) or len(set(header)) != len(header):
        raise DataFormatError(
            f"{path}, row 1 (header): expected the 3 columns {list(REQUIRED)} or the 5 columns "
            f"{['userID', 'itemID', 'rating', 'timestamp', 'x_label']}, got {header}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
            + _split_hint(lines[0]))
    ncol = len(header)
    body = lines[1:]
    while body and not body[-1].strip():  # tolerate trailing blank lines only
        body.pop()
    if not body:
        raise DataFormatError(f"{path}: no interaction rows after the header")
    m = _NON_ASCII.search(text)
    if m is not None:
        ch = m.group()
        raise DataFormatError(
            f"{path}, {_locate(text, m.start(), header)}: non-ASCII character {ch!r} (U+{ord(ch):04X}); "
            f"IDs and labels must be written with the ASCII digits 0-9")
    rows = [ln.split("\t") for ln in body]
    bad = next((k for k, r in enumerate(rows) if len(r) != ncol), None)
    if bad is not None:
        raise DataFormatError(
            f"{path}, row {bad + 2}: expected {ncol} tab-separated fields, got {len(rows[bad])}: "
            f"{body[bad]!r}" + _split_hint(body[bad]))
    table = np.asarray(rows, dtype=str)
    out: Dict[str, np.ndarray] = {}
    for col in REQUIRED:
        j = header.index(col)
        vals = np.char.strip(table[:, j])
        ok = np.char.isdigit(vals)  # ASCII-only by now: digits 0-9, no sign, no point
        if not ok.all():
            k = int(np.flatnonzero(~ok)[0])
            got = f"got {str(vals[k])!r}" if vals[k] else "the field is empty"
            raise DataFormatError(
                f"{path}, row {k + 2}, field '{col}': expected a non-negative integer, {got}")
        for k in np.flatnonzero(np.char.str_len(vals) > 18):
            if int(vals[k]) > INT64_MAX:
                raise DataFormatError(
                    f"{path}, row {int(k) + 2}, field '{col}': {vals[k]} is too large "
                    f"(more than the int64 maximum {INT64_MAX})")
        out[col] = vals.astype(np.int64)
    lab = out["x_label"]
    bad_lab = np.flatnonzero((lab < 0) | (lab > 2))
    if bad_lab.size:
        k = int(bad_lab[0])
        raise DataFormatError(f"{path}, row {k + 2}, field 'x_label': expected 0, 1 or 2, got {lab[k]}")
    for col in ("userID", "itemID"):
        check_id_range(out[col], col, path)
    return out


def check_id_range(ids: np.ndarray, col: str, path: Union[str, Path]) -> None:
    """Refuse IDs that are far from contiguous: ``max + 1 > ID_RANGE_FACTOR * distinct + ID_RANGE_SLACK``
    (the loader makes ``max + 1`` nodes, so one stray large ID would allocate that many)."""
    k = int(np.argmax(ids))
    top = int(ids[k])
    distinct = int(np.unique(ids).size)
    if top + 1 > ID_RANGE_FACTOR * distinct + ID_RANGE_SLACK:
        raise DataFormatError(
            f"{path}, row {k + 2}, field '{col}': the largest {col} is {top} but only {distinct} "
            f"distinct {col} values occur; IDs must be contiguous integers from 0 (0 .. number of "
            f"distinct IDs - 1): remap them first (max ID + 1 > {ID_RANGE_FACTOR} x distinct + "
            f"{ID_RANGE_SLACK} is refused, as it would create {top + 1} nodes)")


# ----------------------------------------------------------------------------- *_feat.npy
def _read_npy_header(f, version):
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    try:  # version 3.0 (UTF-8 header) has no public reader
        from numpy.lib._format_impl import _read_array_header
    except ImportError:  # numpy < 2
        from numpy.lib.format import _read_array_header
    return _read_array_header(f, version)


def _not_npy(path: Path, head: bytes, size: int) -> DataFormatError:
    if NPY_MAGIC.startswith(head):
        return DataFormatError(f"{path}: truncated .npy file ({size} bytes, too short for the header)")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        kind = "a ZIP archive (an .npz from np.savez, or a torch.save file)"
    elif head[:1] == b"\x80":
        kind = "a Python pickle"
    elif head.startswith(b"\x1f\x8b"):
        kind = "gzip-compressed"
    elif all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        kind = "a text file"
    else:
        kind = "not a .npy file"
    what = kind if kind.startswith("not") else f"{kind}, not a .npy array"
    return DataFormatError(f"{path}: {what} (it does not start with the .npy magic "
                           f"'\\x93NUMPY'); save one [num_items, dim] float matrix with "
                           f"numpy.save")


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.names is not None:
        why = f"a structured (record) dtype {dtype}"
    elif dtype.hasobject:
        why = "an object dtype (Python objects)"
    elif dtype.kind == "f":
        return
    else:
        why = {"c": "a complex dtype", "b": "a boolean dtype", "i": "an integer dtype",
               "u": "an unsigned integer dtype", "U": "a string dtype", "S": "a bytes dtype",
               "M": "a datetime dtype", "m": "a timedelta dtype"}.get(dtype.kind, "a non-numeric dtype")
        why += f" ({dtype})"
    raise DataFormatError(f"{path}: {why}; item features must be a floating-point matrix "
                          f"(float16, float32 or float64; convert it with .astype('float32'))")


def read_features(path: Union[str, Path], num_items: int) -> torch.Tensor:
    """Load a ``*_feat.npy`` matrix, checking container, dtype, shape (from the header, before the
    data is read) and values against the catalogue; returns a float32 tensor."""
    path = Path(path)
    size = _check_file(path, "feature")
    if size == 0:
        raise DataFormatError(f"{path}: empty file (0 bytes), expected a .npy float matrix")
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
            if head != NPY_MAGIC:
                raise _not_npy(path, head, size)
            f.seek(0)
            try:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = _read_npy_header(f, version)
            except Exception as e:  # the header is untrusted bytes: any parse failure is a format error
                raise DataFormatError(f"{path}: corrupt or truncated .npy header, not readable as "
                                      f"written by numpy.save ({e})") from None
            data_start = f.tell()
            _check_dtype(path, dtype)
            if len(shape) != 2:
                raise DataFormatError(
                    f"{path}: expected a 2-D [num_items, dim] array, got shape {tuple(shape)}")
            if shape[1] == 0:
                raise DataFormatError(
                    f"{path}: the feature matrix has zero columns (shape {tuple(shape)}); a modality "
                    f"with zero columns is an error for every model: remove the file or give it features")
            if shape[0] != num_items:
                raise DataFormatError(
                    f"{path}: has {shape[0]} rows but the interactions define {num_items} items "
                    f"(row i must be item i)")
            need = int(shape[0]) * int(shape[1]) * dtype.itemsize
            if size - data_start < need:
                raise DataFormatError(
                    f"{path}: truncated: the header declares shape {tuple(shape)} of {dtype} "
                    f"({need} data bytes) but the file holds only {size - data_start}")
            f.seek(0)
            try:
                x = np.lib.format.read_array(f, allow_pickle=False)
            except Exception as e:
                raise DataFormatError(f"{path}: corrupt .npy data ({e})") from None
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read the feature file: {e.strerror or e}") from e
    _check_finite(path, x, "is")
    with np.errstate(over="ignore"):  # reported below, with the row
        y = np.ascontiguousarray(x, dtype=np.float32)
    if y.dtype != x.dtype:
        _check_finite(path, y, "overflows float32:", original=x)
    return torch.from_numpy(y)


def _check_finite(path: Path, x: np.ndarray, verb: str, original: Optional[np.ndarray] = None) -> None:
    finite = np.isfinite(x)
    if finite.all():
        return
    r, c = (int(v) for v in np.argwhere(~finite)[0])
    n_bad = int((~finite.all(axis=1)).sum())
    value = x[r, c] if original is None else original[r, c]
    what = "NaN or inf values" if original is None else "values outside the float32 range"
    raise DataFormatError(
        f"{path}: row {r}, column {c} {verb} {value} ({n_bad} rows hold {what}; row i is item i)")


def find_modalities(folder: Union[str, Path]) -> Dict[str, Path]:
    """``{modality: path}`` for every ``<modality>_feat.npy`` in ``folder``, sorted by name
    (hidden files are ignored)."""
    folder = Path(folder)
    return {p.name[: -len("_feat.npy")]: p for p in _visible(folder.glob("*_feat.npy"))}


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
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataFormatError(f"{folder}: cannot list the dataset folder (permission denied)")
    if name is None:
        inters = _visible(folder.glob("*.inter"))
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
    features = {}
    for m in wanted:
        if m == "" and m in found:
            raise DataFormatError(f"{found[m]}: the modality name is empty: name the file "
                                  f"<modality>_feat.npy, for example image_feat.npy")
        if m not in found:
            raise DataFormatError(f"{folder}: modality '{m}' requested but {m}_feat.npy is missing "
                                  f"(found: {sorted(found)})")
        features[m] = read_features(found[m], n_items)
    set_modalities(data, features)  # one [I, sum d] data["item"].x, modalities are views of it
    del features
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

