"""A run folder holds exactly one run: its configuration, data fingerprint, checkpoints and
results, written by one process at a time.

* A fresh run refuses a folder that already holds a run (``config.json``, ``last.pt``,
  ``best.pt`` or ``results.json``) unless ``overwrite=True``; the old run is then moved aside
  to ``<folder>.replaced-<time>``, never mixed with the new one.
* ``resume=True`` continues the run with the configuration it was started with: any option
  that differs (other than those in :data:`RESUME_SAFE`, and a larger epoch budget) is an
  error listing the differences, and so is a different dataset (fingerprint).
* A lock file (``.lock``, holding the writer's PID) stops a second process from writing into
  a folder in use; a lock left by a process that no longer exists is taken over.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from .checkpoint import atomic_json_dump

#: options that may change between a run and its resumption without changing its results
RESUME_SAFE = frozenset({"resume", "progress", "out_dir", "device", "eval_batch_size", "overwrite", "finish"})

RUN_FILES = ("config.json", "last.pt", "best.pt", "results.json")


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (it holds another run, is locked, or its
    configuration differs from the one a resume asks for)."""


def data_fingerprint(data) -> str:
    """SHA-256 over the node counts, the train/valid/test pairs and the item features of a
    :class:`~torch_geometric.data.HeteroData` dataset (first 16 hex digits)."""
    from ..data.schema import modality_features, num_items, num_users, split_edge_index
    h = hashlib.sha256(f"{num_users(data)}:{num_items(data)}".encode())
    for split in ("train", "valid", "test"):
        h.update(split_edge_index(data, split).contiguous().cpu().numpy().tobytes())
    for name, x in modality_features(data).items():
        h.update(name.encode())
        h.update(x.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def config_differences(saved: Dict[str, Any], current: Dict[str, Any],
                       safe: Iterable[str] = RESUME_SAFE) -> List[str]:
    """``"key: saved -> current"`` for every differing key outside ``safe``; ``epochs`` may
    grow, not shrink. Mappings (``model_options``) are compared key by key (``"model_options.tau:
    0.5 -> 0.2"``)."""
    saved, current, safe = _jsonable(saved), _jsonable(current), set(safe)
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if key not in safe and isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in config_differences(a, b, ())]
            saved.pop(key), current.pop(key)
    for key in sorted(set(saved) | set(current)):
        if key in safe:
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if key == "epochs" and isinstance(a, int) and isinstance(b, int) and b >= a:
            continue
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return sorted(out)


class RunFolder:
    """Open ``path`` for one run (see the module docstring); use as a context manager, which
    holds the lock until the run ends.

    Args:
        path: the run folder.
        config: the run's full configuration (recorded in ``config.json``; compared on resume).
        fingerprint: :func:`data_fingerprint` of the dataset.
        resume: continue the run in ``path``.
        overwrite: move a run already in ``path`` aside instead of refusing.
    """

    def __init__(self, path, config: Dict[str, Any], fingerprint: Optional[str] = None,
                 resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.config = _jsonable(config)
        self.fingerprint = fingerprint
        self.resume = resume
        self.overwrite = overwrite
        self.moved_to: Optional[Path] = None
        self._locked = False

    # ------------------------------------------------------------------ checks
    def holds_run(self) -> bool:
        return any((self.path / f).exists() for f in RUN_FILES)

    def check(self) -> None:
        """Refuse before anything heavy starts (see the module docstring)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"run folder {self.path} is a file, not a folder")
        if self.resume:
            saved_path = self.path / "config.json"
            if not saved_path.exists():
                if (self.path / "last.pt").exists():
                    return  # a run from before config.json was recorded: nothing to compare
                return      # nothing to resume: a fresh start in this folder
            try:
                saved = json.loads(saved_path.read_text())
            except (OSError, ValueError) as e:
                raise RunFolderError(f"{saved_path}: unreadable run configuration ({e})") from None
            from ..config import comparable_record  # a record of the earlier layout, translated
            diffs = config_differences(comparable_record(saved.get("config", {}), self.config), self.config)
            if self.fingerprint and saved.get("data_fingerprint") not in (None, self.fingerprint):
                diffs.append(f"data fingerprint: {saved['data_fingerprint']} -> {self.fingerprint} "
                             f"(another dataset or split)")
            if diffs:
                raise RunFolderError(
                    f"cannot resume the run in {self.path}: options differ from the ones it was "
                    f"started with:\n  " + "\n  ".join(diffs)
                    + "\nresume with the same options, or start a new run in another folder")
        elif self.holds_run() and not self.overwrite:
            raise RunFolderError(
                f"{self.path} already holds a run ({', '.join(f for f in RUN_FILES if (self.path / f).exists())}); "
                f"resume it, choose another folder, or overwrite it (the old run is moved aside)")

    # ------------------------------------------------------------------ lock
    def _lock(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / ".lock"
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(lock.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RunFolderError(f"{self.path} is in use by process {pid} (lock {lock}); "
                                         f"wait for it or use another folder") from None
                lock.unlink(missing_ok=True)  # stale lock of a process that no longer exists
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._locked = True
            return
        raise RunFolderError(f"could not take the lock {lock}")

    def __enter__(self) -> "RunFolder":
        self.check()
        self._lock()
        try:
            if not self.resume and self.holds_run():  # overwrite: move the old run aside
                stamp = time.strftime("%Y%m%d-%H%M%S")
                self.moved_to = self.path.with_name(f"{self.path.name}.replaced-{stamp}")
                self.moved_to.mkdir()
                for f in self.path.iterdir():
                    if f.name != ".lock":
                        f.rename(self.moved_to / f.name)
            if not (self.resume and (self.path / "config.json").exists()):
                atomic_json_dump({"config": self.config, "data_fingerprint": self.fingerprint},
                                 self.path / "config.json")
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._locked:
            (self.path / ".lock").unlink(missing_ok=True)
            self._locked = False

    def __exit__(self, *exc) -> None:
        self.release()
