"""Raw ID <-> dataset index maps, stored beside the ``.inter`` file as MMRec does.

``u_id_mapping.csv`` and ``i_id_mapping.csv`` are tab-separated (despite the ``.csv`` name, as
in MMRec) with a header and two columns: the raw ID (any column name: ``raw_user_id`` /
``raw_item_id`` when written by :func:`~magnet_pyg.data.prepare.prepare_dataset`, ``user_id``
/ ``asin`` in MMRec's own files) and the index, a column named ``userID`` / ``itemID``.
A map may cover only part of the users or items (MMRec's Sports user map leaves out 20 users
that share an item set); an index without a raw ID cannot be translated.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import numpy as np

from .mmrec import DataFormatError, _decode_text, _read_bytes

__all__ = ["IdMap", "USER_MAP", "ITEM_MAP", "read_id_maps"]

USER_MAP = "u_id_mapping.csv"
ITEM_MAP = "i_id_mapping.csv"
_INDEX_COLUMN = {"user": "userID", "item": "itemID"}


@dataclass
class IdMap:
    """The raw IDs of the users or the items of a dataset.

    Args:
        kind: ``"user"`` or ``"item"``.
        raw: ``raw[i]`` is the raw ID of index ``i`` (``None``: not in the map).
        path: the file it was read from, for messages.
    """

    kind: str
    raw: List[Optional[str]]
    path: Optional[Path] = None
    _index: Dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in _INDEX_COLUMN:
            raise ValueError(f"kind must be 'user' or 'item', got {self.kind!r}")
        self._index = {r: i for i, r in enumerate(self.raw) if r is not None}

    def __len__(self) -> int:
        return len(self.raw)

    def where(self) -> str:
        return str(self.path) if self.path is not None else f"the {self.kind} ID map"

    def to_index(self, raw_ids: Iterable[object]) -> List[int]:
        """Indices of ``raw_ids`` (compared as text); an unknown raw ID is a ``ValueError``."""
        out = []
        for r in raw_ids:
            i = self._index.get(str(r).strip())
            if i is None:
                raise ValueError(f"{self.kind} '{r}' is not in {self.where()} "
                                 f"({len(self._index)} raw {self.kind} IDs)")
            out.append(i)
        return out

    def to_raw(self, indices) -> np.ndarray:
        """Raw IDs (a ``str`` array of the shape of ``indices``); an index without a raw ID is a
        ``ValueError``."""
        idx = np.asarray(indices, dtype=np.int64)
        table = np.asarray([r if r is not None else "" for r in self.raw], dtype=object)
        bad = idx[(idx < 0) | (idx >= len(self.raw))]
        if bad.size:
            raise ValueError(f"{self.kind} index {int(bad[0])} is outside {self.where()} "
                             f"(indices 0..{len(self.raw) - 1})")
        out = table[idx]
        missing = [int(i) for i in idx.reshape(-1) if self.raw[int(i)] is None]
        if missing:
            raise ValueError(f"{self.where()} has no raw ID for {self.kind} index {missing[0]}")
        return out.astype(str)

    def write(self, path: Union[str, Path]) -> Path:
        """Write the map (rows in index order, indices without a raw ID left out)."""
        path = Path(path)
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        w.writerow([f"raw_{self.kind}_id", _INDEX_COLUMN[self.kind]])
        w.writerows([r, i] for i, r in enumerate(self.raw) if r is not None)
        path.write_text(buf.getvalue(), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Union[str, Path], kind: str, size: Optional[int] = None) -> "IdMap":
        """Read a map file; ``size`` (the number of users or items) bounds the indices. Errors
        (:class:`DataFormatError`) name the file and row: a bad header, a non-integer or
        out-of-range index, a raw ID or an index given twice."""
        path = Path(path)
        col = _INDEX_COLUMN[kind]
        text = _decode_text(path, _read_bytes(path, f"{kind} ID map"))
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t"))
        if not rows or len(rows[0]) != 2 or rows[0][1].strip() != col:
            got = rows[0] if rows else "an empty file"
            raise DataFormatError(f"{path}, row 1 (header): expected two tab-separated columns, "
                                  f"the raw ID and '{col}', got {got}")
        pairs: Dict[int, str] = {}
        seen: Dict[str, int] = {}
        for r, rec in enumerate(rows[1:], start=2):
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue
            if len(rec) != 2:
                raise DataFormatError(f"{path}, row {r}: expected 2 tab-separated fields, got {len(rec)}")
            raw, idx = rec[0].strip(), rec[1].strip()
            if not idx.isdigit() or (size is not None and int(idx) >= size):
                bound = f" in 0..{size - 1}" if size is not None else ""
                raise DataFormatError(f"{path}, row {r}, field '{col}': expected an index{bound}, "
                                      f"got {idx!r}")
            i = int(idx)
            if i in pairs:
                raise DataFormatError(f"{path}, row {r}, field '{col}': index {i} appears twice")
            if raw in seen:
                raise DataFormatError(f"{path}, row {r}: raw {kind} ID {raw!r} appears twice "
                                      f"(indices {seen[raw]} and {i})")
            pairs[i] = raw
            seen[raw] = i
        n = size if size is not None else (max(pairs) + 1 if pairs else 0)
        return cls(kind, [pairs.get(i) for i in range(n)], path)


def read_id_maps(folder: Union[str, Path], num_users: Optional[int] = None,
                 num_items: Optional[int] = None) -> Optional[Dict[str, IdMap]]:
    """``{"user": IdMap, "item": IdMap}`` of a dataset folder holding both map files, else
    ``None``."""
    folder = Path(folder)
    if not ((folder / USER_MAP).is_file() and (folder / ITEM_MAP).is_file()):
        return None
    return {"user": IdMap.read(folder / USER_MAP, "user", num_users),
            "item": IdMap.read(folder / ITEM_MAP, "item", num_items)}
