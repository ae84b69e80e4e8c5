"""A peer's authors' code beside this package's implementation, from the authors' run logs.

The authors' code runs outside this repository (docs/fidelity.md gives the commands and the
patches for each model); this script reads its logs, applies two selection rules to the
per-epoch validation curve and writes one JSON with the test metrics at each selected epoch:

- ``authors``: the code's own rule (MMRec-style code keeps the epoch of best validation
  Recall@20 over its whole epoch budget);
- ``package``: this package's rule (best validation NDCG@20, early stopping after
  ``--patience`` evaluations without improvement).

Beside them it puts the package's runs of the same model from a summary JSON of
``collect.py`` (``--summary``/``--row``) or from run folders (``--package-run``). Curves keep
the @20 metrics. Two log formats are read: MMRec's (AnchorRec's release, MMRec's FREEDOM:
``epoch N evaluating`` then ``valid result:`` and ``test result:`` lines) and RecGOAT's release
(``[Test@N] {'recall': array([...]), 'ndcg': array([...])}``, one cut-off)::

    python benchmarks/authors_code.py --name anchorrec_vs_authors_tiktok --model anchorrec \\
        --log seed0=logs/anchorrec_seed0.log --log seed1=... \\
        --summary benchmarks/results/summary_tiktok.json --row tiktok-anchorrec
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

_EPOCH = re.compile(r"epoch (\d+) evaluating")
_METRIC = re.compile(r"([a-z]+@\d+): ([0-9.]+)")
_RECGOAT = re.compile(r"\[Test@(\d+)\] \{'recall': array\(\[([^\]]+)\]\), 'ndcg': array\(\[([^\]]+)\]\)\}")


def parse_mmrec(text: str) -> List[Dict]:
    """Per-epoch ``{"epoch", "valid", "test"}`` from an MMRec-style log."""
    curve: List[Dict] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _EPOCH.search(line)
        if not m:
            continue
        row = {"epoch": int(m.group(1))}
        for j in range(i + 1, min(i + 8, len(lines))):
            if _EPOCH.search(lines[j]):
                break
            for split in ("valid", "test"):
                if split not in row and lines[j].rstrip().endswith(f"{split} result:") and j + 1 < len(lines):
                    row[split] = {k: float(v) for k, v in _METRIC.findall(lines[j + 1])}
        if "valid" not in row or "test" not in row:
            raise ValueError(f"log line {i + 1}: epoch {row['epoch']} has no valid/test result lines")
        curve.append(row)
    return curve


def parse_recgoat(text: str, k: int) -> List[Dict]:
    """Per-evaluation ``{"epoch", "valid"}`` from a RecGOAT-release log whose test file holds
    the validation split (the code reads no validation file), at its single cut-off ``k``."""
    return [{"epoch": int(m.group(1)),
             "valid": {f"recall@{k}": float(m.group(2)), f"ndcg@{k}": float(m.group(3))}}
            for m in _RECGOAT.finditer(text)]


def select(curve: List[Dict], metric: str, patience: Optional[int]) -> Dict:
    """The first evaluation of best validation ``metric``; with ``patience``, the curve is cut
    where ``patience`` evaluations in a row have not improved on the best (early stopping)."""
    best, since = None, 0
    for row in curve:
        if best is None or row["valid"][metric] > best["valid"][metric]:
            best, since = row, 0
        else:
            since += 1
            if patience is not None and since >= patience:
                break
    if best is None:
        raise ValueError("empty curve")
    return best


def _at20(metrics: Dict[str, float]) -> Dict[str, float]:
    return {k: v for k, v in metrics.items() if k.endswith("@20")}


def _label_path(p: argparse.ArgumentParser, flag: str, spec: str) -> Tuple[str, Path]:
    label, _, path = spec.partition("=")
    if not label or not path:
        p.error(f"{flag} {spec!r}: expected LABEL=PATH")
    return label, Path(path)


def _mean_std(values: List[float]) -> Dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="output benchmarks/results/NAME.json")
    p.add_argument("--model", required=True)
    p.add_argument("--format", choices=("mmrec", "recgoat"), default="mmrec")
    p.add_argument("--log", action="append", required=True, metavar="LABEL=PATH")
    p.add_argument("--k", type=int, default=20, help="cut-off of a RecGOAT-release log")
    p.add_argument("--patience", type=int, default=20, help="the package's early-stopping patience")
    p.add_argument("--summary", help="a collect.py summary JSON with the package's runs")
    p.add_argument("--row", help="the row of --summary to put beside the authors' code")
    p.add_argument("--package-run", action="append", default=[], metavar="LABEL=RUN",
                   help="a run folder of this package: its per-epoch validation curve goes beside")
    p.add_argument("--note", default="", help="how the authors' code was run (commands, patches)")
    a = p.parse_args()
    runs = {}
    for spec in a.log:
        label, path = _label_path(p, "--log", spec)
        text = path.read_text()
        curve = parse_mmrec(text) if a.format == "mmrec" else parse_recgoat(text, a.k)
        if not curve:
            p.error(f"--log {path}: no evaluation lines in the {a.format} format")
        run = {"epochs_evaluated": len(curve),
               "curve": [{**r, **{s: _at20(r[s]) for s in ("valid", "test") if s in r}} for r in curve]}
        if a.format == "mmrec":
            for rule, metric, patience in (("authors", "recall@20", None), ("package", "ndcg@20", a.patience)):
                best = select(curve, metric, patience)
                run[rule] = {"selection": f"validation {metric}" + (f", patience {patience}" if patience else
                                                                    ", whole budget"),
                             "epoch": best["epoch"], "valid": best["valid"], "test": best["test"]}
        runs[label] = run
    out = {"model": a.model, "note": a.note, "authors_code": runs}
    if a.format == "mmrec":
        out["authors_code_mean"] = {
            rule: {f"{split} {m}": _mean_std([r[rule][split][m] for r in runs.values()])
                   for split in ("valid", "test") for m in ("recall@20", "ndcg@20")}
            for rule in ("authors", "package")}
    if a.summary:
        rows = [r for r in json.loads(Path(a.summary).read_text())["runs"] if r["name"] == a.row]
        if not rows:
            p.error(f"--row {a.row!r} is not in {a.summary}")
        out["magnet_pyg"] = {
            "row": a.row, "summary": a.summary,
            "runs": [{k: r[k] for k in ("seed", "best_epoch", "epochs_trained", "valid", "test")} for r in rows],
            "mean": {f"{split} {m}": _mean_std([r[split][m] for r in rows])
                     for split in ("valid", "test") for m in ("recall@20", "ndcg@20")}}
    for spec in a.package_run:
        label, path = _label_path(p, "--package-run", spec)
        res = json.loads((path / "results.json").read_text())
        out.setdefault("magnet_pyg_runs", {})[label] = {
            "run": str(path), "best_epoch": res["best_epoch"], "valid": res["valid"], "test": res["test"],
            "curve": [{"epoch": e["epoch"], "valid": _at20(e["valid"])} for e in res["epochs"] if "valid" in e]}
    write(a.name, out)


if __name__ == "__main__":
    main()
