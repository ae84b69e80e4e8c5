"""Run many ``magnet-pyg train`` configurations (in parallel processes) and aggregate them.

    python benchmarks/sweep.py run  --grid GRID.json --out runs/sweep [--jobs 4]
    python benchmarks/sweep.py table --out runs/sweep [--json benchmarks/results/x.json]

``GRID.json`` is a list of ``{"name": str, "args": [cli args...], "seeds": [0, 1, 2]}``. Each
(name, seed) run writes ``OUT/<name>/seed<S>/results.json``. ``table`` prints, per name,
mean and sample standard deviation over seeds of the test metrics at the checkpoint
selected on validation, plus the selection metric itself, epoch time and evaluation time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")


def run(grid, out: Path, jobs: int, threads: int) -> None:
    todo = []
    for cfg in grid:
        for seed in cfg.get("seeds", [0]):
            d = out / cfg["name"] / f"seed{seed}"
            if (d / "results.json").exists():
                continue
            cmd = [sys.executable, "-m", "magnet_pyg", "train", *cfg["args"], "--seed", str(seed),
                   "--out", str(d), "--no-progress", "--threads", str(threads)]
            todo.append((d, cmd))

    def go(item):
        d, cmd = item
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "log.txt", "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        print(("ok  " if rc == 0 else f"FAIL({rc}) ") + " ".join(cmd[3:]), flush=True)

    with ThreadPoolExecutor(jobs) as ex:
        list(ex.map(go, todo))


def table(out: Path):
    rows = {}
    for res in sorted(out.glob("*/seed*/results.json")):
        r = json.loads(res.read_text())
        rows.setdefault(res.parent.parent.name, []).append(r)
    summary = {}
    for name, runs in rows.items():
        ent = {"seeds": len(runs), "model": runs[0]["model"], "dataset": runs[0]["dataset"]}
        for split in ("test", "valid"):
            for m in METRICS:
                vals = [r[split][m] for r in runs]
                ent[f"{split}_{m}"] = statistics.mean(vals)
                ent[f"{split}_{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        ep = [e["train_seconds"] for r in runs for e in r["epochs"][1:]] or \
             [e["train_seconds"] for r in runs for e in r["epochs"]]
        ev = [e["eval_seconds"] for r in runs for e in r["epochs"][1:] if "eval_seconds" in e] or \
             [e["eval_seconds"] for r in runs for e in r["epochs"] if "eval_seconds" in e]
        ent["epoch_seconds"] = statistics.median(ep)
        ent["eval_seconds"] = statistics.median(ev)
        ent["best_epochs"] = [r["best_epoch"] for r in runs]
        ent["device"] = runs[0].get("environment", {}).get("gpu", "cpu")
        summary[name] = ent
    print(f"{'name':<28}{'R@20 (test)':>20}{'N@20 (test)':>20}{'N@20 (valid)':>14}{'s/epoch':>9}{'s/eval':>8}  best epochs")
    for name, e in summary.items():
        print(f"{name:<28}{e['test_recall@20']:>12.4f} ± {e['test_recall@20_std']:.4f}"
              f"{e['test_ndcg@20']:>12.4f} ± {e['test_ndcg@20_std']:.4f}{e['valid_ndcg@20']:>14.4f}"
              f"{e['epoch_seconds']:>9.2f}{e['eval_seconds']:>8.2f}  {e['best_epochs']}")
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["run", "table"])
    p.add_argument("--grid")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 4))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the summary here")
    a = p.parse_args()
    if a.command == "run":
        run(json.loads(Path(a.grid).read_text()), Path(a.out), a.jobs, a.threads)
    s = table(Path(a.out))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(s, indent=2) + "\n")
