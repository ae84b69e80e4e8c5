"""Collect finished run folders into one summary JSON per dataset, and the markdown tables
generated from it.

    python benchmarks/collect.py --dataset sports --runs 'runs/sports/*/seed*' \
        [--json benchmarks/results/summary_sports.json] [--markdown docs/results.md]

Every run folder holding a ``results.json`` becomes one record: its row name (the folder
above ``seed<S>``), model, preset, full configuration, seed, selected epoch, validation and
test metrics at that epoch, and the median seconds per training epoch and per validation.
Rows aggregate the records of one name: mean and sample standard deviation over seeds.

``--from-sweep FILE ...`` adds the rows of aggregate files written by ``benchmarks/sweep.py
table`` (mean and std over seeds, selected epochs) for measurements whose run folders were not
kept; such rows carry ``"source"`` and have no per-run records.

The summary accumulates: the records and rows already in the output JSON are kept (run
folders are often gone when a later run is added), a run folder given now replaces the record
of the same row name and seed, and ``--fresh`` starts from nothing. A kept aggregate row whose
name a run folder now uses is an error (rename one of them), never a silent replacement.

``--markdown FILE`` replaces the text between ``<!-- summary:<block> -->`` and
``<!-- /summary:<block> -->`` in ``FILE`` with the table (``--block``, default the dataset's
name; ``--rows REGEX`` keeps the rows whose name matches), so tables in the docs are
generated from the JSON, never typed by hand.
"""
from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
from pathlib import Path
from typing import Any, Dict, List

METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")


def record(run_dir: Path) -> Dict[str, Any]:
    r = json.loads((run_dir / "results.json").read_text())
    cfg = r.get("config", {})
    opts = cfg.get("model_options") or {}
    train_s = [e["train_seconds"] for e in r["epochs"]]
    eval_s = [e["eval_seconds"] for e in r["epochs"] if "eval_seconds" in e]
    return {
        "name": run_dir.parent.name, "run": str(run_dir), "model": r["model"],
        "preset": cfg.get("preset", opts.get("preset")), "view": opts.get("view"), "seed": cfg.get("seed"),
        "init_from": cfg.get("init_from"), "best_epoch": r["best_epoch"],
        "epochs_trained": len(r["epochs"]),
        "finished_early": bool(r.get("finished_early")),
        "valid": {m: r["valid"][m] for m in METRICS}, "test": {m: r["test"][m] for m in METRICS},
        "epoch_seconds": statistics.median(train_s) if train_s else None,
        "eval_seconds": statistics.median(eval_s) if eval_s else None,
        "threads": r.get("environment", {}).get("torch_threads"),
        "machine": r.get("environment", {}).get("gpu", "cpu"),
        "config": cfg,
    }


def rows(records: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for name in dict.fromkeys(r["name"] for r in records):
        rs = sorted((r for r in records if r["name"] == name), key=lambda r: r["seed"])
        row = {"model": rs[0]["model"], "preset": rs[0]["preset"], "view": rs[0]["view"],
               "seeds": [r["seed"] for r in rs], "best_epochs": [r["best_epoch"] for r in rs],
               "finished_early": [r["finished_early"] for r in rs],
               "epochs_trained": [r["epochs_trained"] for r in rs]}
        for split in ("valid", "test"):
            for m in METRICS:
                vals = [r[split][m] for r in rs]
                row[f"{split}_{m}"] = statistics.mean(vals)
                row[f"{split}_{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        row["epoch_seconds"] = statistics.median([r["epoch_seconds"] for r in rs if r["epoch_seconds"]] or [0])
        row["eval_seconds"] = statistics.median([r["eval_seconds"] for r in rs if r["eval_seconds"]] or [0])
        out[name] = row
    return out


def merge_records(kept: List[Dict[str, Any]], new: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``kept`` with every record of the same (row name, seed) as one of ``new`` replaced by it."""
    by_key = {(r["name"], r["seed"]): r for r in kept}
    for r in new:
        if (r["name"], r["seed"]) in by_key:
            print(f"replacing the kept record {r['name']} seed {r['seed']} by {r['run']}")
        by_key[(r["name"], r["seed"])] = r
    return sorted(by_key.values(), key=lambda r: (r["name"], r["seed"]))


def sweep_rows(path: Path) -> Dict[str, Dict[str, Any]]:
    """Summary rows from an aggregate ``sweep.py table`` JSON (one entry per row name)."""
    out = {}
    for name, r in json.loads(path.read_text()).items():
        n = int(r["seeds"])
        row = {"model": r["model"], "preset": r.get("preset"), "view": r.get("view"),
               "seeds": list(range(n)), "best_epochs": list(r.get("best_epochs") or []),
               "finished_early": [False] * n, "epochs_trained": [None] * n, "source": str(path)}
        for split in ("valid", "test"):
            for m in METRICS:
                row[f"{split}_{m}"] = r[f"{split}_{m}"]
                row[f"{split}_{m}_std"] = r.get(f"{split}_{m}_std") if n > 1 else None
        row["epoch_seconds"], row["eval_seconds"] = r.get("epoch_seconds"), r.get("eval_seconds")
        out[name] = row
    return out


def _pm(row: Dict[str, Any], key: str) -> str:
    std = row[f"{key}_std"]
    return f"{row[key]:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _s(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def markdown(summary: Dict[str, Dict[str, Any]]) -> str:
    lines = ["| row | model | preset | seeds | R@20 (test) | N@20 (test) | N@20 (valid) | R@20 (valid) "
             "| s/epoch | s/eval | selected epochs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = sorted(summary.items(), key=lambda kv: -kv[1]["valid_ndcg@20"])
    for name, r in order:
        lines.append(f"| {name} | {r['model']}{'-' + r['view'][0].upper() + 'V' if r['view'] else ''} "
                     f"| {r['preset'] or '-'} | {len(r['seeds'])} | {_pm(r, 'test_recall@20')} "
                     f"| {_pm(r, 'test_ndcg@20')} | {_pm(r, 'valid_ndcg@20')} | {_pm(r, 'valid_recall@20')} "
                     f"| {_s(r['epoch_seconds'])} | {_s(r['eval_seconds'])} "
                     f"| {', '.join(f'{b}' + (f' (of {n}, stopped early)' if f else '') for b, n, f in zip(r['best_epochs'], r['epochs_trained'], r['finished_early']))} |")
    best = order[0][0] if order else None
    if best:
        lines.append("")
        lines.append(f"Rows are sorted by mean validation NDCG@20; the validation rule picks **{best}**.")
    return "\n".join(lines)


def replace_block(path: Path, dataset: str, text: str) -> None:
    start, end = f"<!-- summary:{dataset} -->", f"<!-- /summary:{dataset} -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path}: markers {start} ... {end} not found")
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--runs", nargs="+", default=[], help="run folders or glob patterns")
    p.add_argument("--from-sweep", nargs="+", default=[], help="aggregate JSON files of sweep.py table")
    p.add_argument("--json", default=None, help="default: benchmarks/results/summary_<dataset>.json")
    p.add_argument("--markdown", default=None, help="replace the summary block of this file")
    p.add_argument("--block", default=None, help="marker name of the markdown block (default: the dataset)")
    p.add_argument("--rows", default=None, help="regular expression: only matching rows go into the table")
    p.add_argument("--fresh", action="store_true",
                   help="do not keep the records and rows already in the output JSON")
    a = p.parse_args(argv)
    out = Path(a.json or Path(__file__).parent / "results" / f"summary_{a.dataset}.json")
    dirs = sorted({Path(d) for pat in a.runs for d in glob.glob(pat) if (Path(d) / "results.json").exists()})
    if not dirs and not a.from_sweep and (a.fresh or not out.exists()):
        raise SystemExit(f"no finished run (results.json) matches {a.runs}")
    kept_records, kept_rows = [], {}
    if out.exists() and not a.fresh:
        old = json.loads(out.read_text())
        if old.get("dataset") != a.dataset:
            raise SystemExit(f"{out} summarises dataset '{old.get('dataset')}', not '{a.dataset}'")
        kept_records = old.get("runs", [])
        kept_rows = {n: r for n, r in old.get("rows", {}).items() if "source" in r}
    records = merge_records(kept_records, [record(d) for d in dirs])
    summary = rows(records)
    sources = dict(kept_rows)
    for f in a.from_sweep:
        sources.update(sweep_rows(Path(f)))
    for name, row in sources.items():
        if name in summary:
            raise SystemExit(f"row '{name}' has run records and is also an aggregate of {row['source']}: "
                             f"rename one of them")
        summary[name] = row
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"dataset": a.dataset, "rows": summary, "runs": records}, indent=1) + "\n")
    tmp.replace(out)
    shown = {n: r for n, r in summary.items() if a.rows is None or re.search(a.rows, n)}
    if not shown:
        raise SystemExit(f"no row matches --rows {a.rows!r}")
    table = markdown(shown)
    print(table)
    if a.markdown:
        replace_block(Path(a.markdown), a.block or a.dataset, table)


if __name__ == "__main__":
    main()
