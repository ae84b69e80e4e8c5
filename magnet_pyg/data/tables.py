"""Read raw tables (CSV, TSV or parquet, chosen by the file extension) column by column,
remembering where each value came from so that every error names file, row and field.

Rows are numbered as a text editor or spreadsheet shows them: row 1 is the header, row 2 the
first record (for parquet, which has no header line, row 2 is the first record as well).
CSV and TSV files are read with :mod:`csv` (quoted fields may hold the separator or a line
break) as UTF-8 (a byte-order mark is accepted); blank lines are skipped. Parquet needs
``pyarrow``.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .mmrec import DataFormatError, _check_file, _decode_text, _read_bytes

#: extension -> field separator (``None``: parquet)
FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".parquet": None, ".pq": None}


@dataclass
class Table:
    """Columns of a raw table. ``columns[name][k]`` is the value of record ``k`` (a ``str``
    for CSV/TSV, the stored Python value for parquet; ``None`` for a parquet null);
    ``rows[k]`` is its row number (1 = header)."""

    path: Path
    header: List[str]
    columns: Dict[str, List[Any]]
    rows: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.size)

    def where(self, k: int, column: Optional[str] = None) -> str:
        """``'<file>, row R, field 'F''`` of record ``k``."""
        field = f", field '{column}'" if column is not None else ""
        return f"{self.path}, row {int(self.rows[k])}{field}"


def table_format(path: Union[str, Path]) -> Optional[str]:
    """The field separator of ``path`` by its extension (``None`` for parquet); an unknown
    extension is a :class:`DataFormatError` listing the supported ones."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise DataFormatError(f"{path}: unsupported file type '{ext or path.name}': expected one of "
                              f"{sorted(FORMATS)} (CSV, TSV or parquet, chosen by the extension)")
    return FORMATS[ext]


def read_table(path: Union[str, Path], columns: Optional[Sequence[str]] = None, what: str = "table",
               roles: Optional[Dict[str, str]] = None) -> Table:
    """Read ``columns`` (all when ``None``) of a CSV, TSV or parquet file.

    Args:
        path: the file; its extension picks the format (:data:`FORMATS`).
        columns: the columns needed; a missing one is an error that lists the columns found.
        what: what the file is, for messages ("interactions", "item text", ...).
        roles: optional ``{column: role}`` ("user", "item", ...) named in the missing-column
            message.
    """
    path = Path(path)
    sep = table_format(path)
    if sep is None:
        return _read_parquet(path, columns, what, roles or {})
    raw = _read_bytes(path, what)
    text = _decode_text(path, raw)
    if not text.strip():
        raise DataFormatError(f"{path}: empty file (expected a header row and {what} rows)")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    records: List[List[str]] = []
    rows: List[int] = []
    header: Optional[List[str]] = None
    end = 0
    try:
        for rec in reader:
            start, end = end + 1, reader.line_num
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # a blank line
            if header is None:
                header = [h.strip() for h in rec]
                continue
            if len(rec) != len(header):
                hint = _sep_hint(rec, sep) if len(header) == 1 else ""
                raise DataFormatError(f"{path}, row {start}: expected {len(header)} fields "
                                      f"(as in the header), got {len(rec)}: {sep.join(rec)[:200]!r}{hint}")
            records.append(rec)
            rows.append(start)
    except csv.Error as e:
        raise DataFormatError(f"{path}, row {reader.line_num}: not readable as "
                              f"{'TSV' if sep == chr(9) else 'CSV'}: {e}") from None
    assert header is not None
    _check_header(path, header, sep)
    wanted = list(header) if columns is None else list(columns)
    _check_columns(path, header, wanted, what, roles or {}, sep)
    if not records:
        raise DataFormatError(f"{path}: no {what} rows after the header")
    out = {c: [r[header.index(c)] for r in records] for c in wanted}
    return Table(path, header, out, np.asarray(rows, dtype=np.int64))


def _sep_hint(fields: Sequence[str], sep: str) -> str:
    line = sep.join(fields)
    other = "\t" if sep == "," else ","
    if other in line:
        name = "tabs" if other == "\t" else "commas"
        return f" (the fields look separated by {name}: the extension decides the separator)"
    return ""


def _check_header(path: Path, header: List[str], sep: str) -> None:
    seen = set()
    for j, h in enumerate(header):
        if not h:
            raise DataFormatError(f"{path}, row 1 (header): column {j + 1} has no name")
        if h in seen:
            raise DataFormatError(f"{path}, row 1 (header): column name '{h}' appears twice")
        seen.add(h)


def _check_columns(path: Path, header: List[str], wanted: List[str], what: str,
                   roles: Dict[str, str], sep: Optional[str]) -> None:
    missing = [c for c in wanted if c not in header]
    if missing:
        named = ", ".join(f"'{c}'" + (f" ({roles[c]} column)" if c in roles else "") for c in missing)
        hint = _sep_hint(header, sep) if sep is not None and len(header) == 1 else ""
        raise DataFormatError(f"{path}, row 1 (header): no column {named} in the {what} file; "
                              f"columns found: {header}{hint}")


def _read_parquet(path: Path, columns: Optional[Sequence[str]], what: str,
                  roles: Dict[str, str]) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFormatError(f"{path}: reading parquet files needs pyarrow "
                              f"(pip install pyarrow), or save the {what} as CSV or TSV") from None
    if _check_file(path, what) == 0:
        raise DataFormatError(f"{path}: empty file (0 bytes), expected a parquet {what} table")
    try:
        pf = pq.ParquetFile(path)
        header = list(pf.schema_arrow.names)
    except Exception as e:  # untrusted bytes: any failure is a format error
        raise DataFormatError(f"{path}: not a readable parquet file ({e})") from None
    _check_header(path, header, "")
    wanted = list(header) if columns is None else list(columns)
    _check_columns(path, header, wanted, what, roles, None)
    try:
        tab = pf.read(columns=wanted)
    except Exception as e:
        raise DataFormatError(f"{path}: corrupt parquet data ({e})") from None
    if tab.num_rows == 0:
        raise DataFormatError(f"{path}: no {what} rows")
    out = {c: tab.column(c).to_pylist() for c in wanted}
    return Table(path, header, out, np.arange(2, tab.num_rows + 2, dtype=np.int64))


# ----------------------------------------------------------------------------- values
def parse_ids(table: Table, column: str) -> np.ndarray:
    """Raw IDs of ``column`` as text (``str`` array; surrounding blanks removed). Empty IDs,
    IDs holding a tab or a line break, and non-integer numbers (parquet floats) are errors."""
    vals = table.columns[column]
    if all(type(v) is str for v in vals):  # CSV / TSV: vectorised; errors located below
        ids = np.char.strip(np.asarray(vals, dtype=str))
        if (np.char.str_len(ids) > 0).all() and not any(
                (np.char.find(ids, c) >= 0).any() for c in ("\t", "\n", "\r")):
            return ids
    out = []
    for k, v in enumerate(table.columns[column]):
        if isinstance(v, bool) or not isinstance(v, (str, int, np.integer)):
            if isinstance(v, float) and v.is_integer():
                v = int(v)  # a parquet float column holding whole numbers
            else:
                got = "an empty value" if v is None else f"{type(v).__name__} {v!r}"
                raise DataFormatError(f"{table.where(k, column)}: expected an ID (text or integer), "
                                      f"got {got}")
        s = str(v).strip()
        if not s:
            raise DataFormatError(f"{table.where(k, column)}: the ID is empty")
        if "\t" in s or "\n" in s or "\r" in s:
            raise DataFormatError(f"{table.where(k, column)}: the ID {s!r} holds a tab or a line "
                                  f"break (IDs are written to tab-separated mapping files)")
        out.append(s)
    return np.asarray(out, dtype=str)


def parse_numbers(table: Table, column: str, what: str = "number") -> np.ndarray:
    """``column`` as finite float64 values; empty, NaN, infinite or non-numeric values are errors."""
    fast = _fast_floats(table.columns[column])
    if fast is not None:
        return fast
    out = np.empty(len(table), dtype=np.float64)
    for k, v in enumerate(table.columns[column]):
        x = _to_float(v)
        if x is None:
            got = "the field is empty" if v is None or (isinstance(v, str) and not v.strip()) \
                else f"got {v!r}"
            raise DataFormatError(f"{table.where(k, column)}: expected a {what}, {got}")
        if not math.isfinite(x):
            raise DataFormatError(f"{table.where(k, column)}: expected a finite {what}, got {v!r}")
        out[k] = x
    return out


def _fast_floats(vals: List[Any]) -> Optional[np.ndarray]:
    """All of ``vals`` as finite float64 in one numpy conversion, or ``None`` (then the caller
    walks the values to name the row at fault)."""
    if isinstance(vals[0], (bool, np.bool_)):
        return None
    try:
        x = np.asarray(vals, dtype=np.float64) if not isinstance(vals[0], str) else \
            np.asarray(vals, dtype=str).astype(np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    return x if x.ndim == 1 and np.isfinite(x).all() else None


def _to_float(v: Any) -> Optional[float]:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def parse_timestamps(table: Table, column: str) -> np.ndarray:
    """``column`` as float64 seconds: numbers (any epoch unit: only the order matters) or
    ISO 8601 date-times (``2014-03-01``, ``2014-03-01T12:00:00``, with or without a zone;
    a date-time without a zone is taken as UTC). Every value must be of the kind of the first
    one; an empty or unparseable value is an error naming its row."""
    vals = table.columns[column]
    if not isinstance(vals[0], date):
        fast = _fast_floats(vals)
        if fast is not None:
            return fast
    out = np.empty(len(vals), dtype=np.float64)
    numeric: Optional[bool] = None
    for k, v in enumerate(vals):
        x: Optional[float] = None
        if isinstance(v, date):  # parquet timestamp / date values
            x, kind = _epoch(v if isinstance(v, datetime) else datetime.combine(v, time())), False
        else:
            x, kind = _to_float(v), True
            if x is None and isinstance(v, str) and v.strip():
                x, kind = _iso(v.strip()), False
        if x is None or not math.isfinite(x):
            got = "the field is empty" if v is None or (isinstance(v, str) and not v.strip()) \
                else f"got {v!r}"
            raise DataFormatError(f"{table.where(k, column)}: expected a timestamp (a number or "
                                  f"an ISO 8601 date-time such as 2014-03-01T12:00:00), {got}")
        if numeric is None:
            numeric = kind
        elif numeric != kind:
            first = "numbers" if numeric else "date-times"
            raise DataFormatError(f"{table.where(k, column)}: {v!r} mixes timestamp kinds: the "
                                  f"first row holds {first}")
        out[k] = x
    return out


def _epoch(d: datetime) -> float:
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _iso(s: str) -> Optional[float]:
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        return _epoch(datetime.fromisoformat(s))
    except ValueError:
        return None
