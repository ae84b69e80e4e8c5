"""Run many ``magnet-pyg train`` configurations (in parallel processes) and aggregate them.

    python benchmarks/sweep.py run  --grid benchmarks/grids/GRID.yaml --out runs/sweep [--jobs 4]
    python benchmarks/sweep.py table --out runs/sweep [--json benchmarks/results/x.json]

``GRID.yaml`` is a list of entries, each a run configuration with overrides
(docs/configuration.md)::

    - name: tiktok-magnet-sv-detach            # runs go to OUT/<name>/seed<S>
      config: configs/magnet/tiktok.yaml       # relative to the repository root
      set: {view: single}                      # magnet-pyg train --set KEY=VALUE (optional)
      args: [--graph-cache, ""]                # further train flags (optional)
      seeds: [0, 1, 2]

In ``set`` values, ``{seed}`` stands for the run's seed (for example ``train.init_from:
runs/sports/lightgcn/seed{seed}``: each seed warm-starts from the same seed's run). Every entry is resolved before the first run starts, so a wrong key fails at once. Runs start in
grid order (``--jobs 1`` runs them one after the other, as an entry warm-started from another
entry's run needs). Each (name, seed) run writes ``OUT/<name>/seed<S>/results.json``. ``table``
prints, per name, mean and sample standard deviation over seeds of the test metrics at the
checkpoint selected on validation, plus the selection metric itself, epoch time and evaluation
time.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from magnet_pyg.config import load_run_config, parse_value, read_yaml  # noqa: E402

METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")
ENTRY_KEYS = ("name", "config", "set", "args", "seeds")


def override_text(key: str, value) -> str:
    """``key=value`` that ``--set`` reads back as ``value`` (YAML)."""
    text = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, str) and parse_value(value) != value:
        text = json.dumps(value)
    return f"{key}={text}"


def seed_overrides(overrides: list, seed: int) -> list:
    """``overrides`` with ``{seed}`` replaced by ``seed``."""
    return [o.replace("{seed}", str(seed)) for o in overrides]


def load_grid(path: Path) -> list:
    """The entries of a grid file, each checked and its configuration resolved."""
    grid = read_yaml(path)
    if not isinstance(grid, list):
        raise SystemExit(f"{path}: a grid is a list of entries")
    names = set()
    for i, e in enumerate(grid):
        where = f"{path}: entry {i} ({e.get('name', '?') if isinstance(e, dict) else e!r})"
        if not isinstance(e, dict) or "name" not in e or "config" not in e:
            raise SystemExit(f"{where}: needs 'name' and 'config'")
        bad = [k for k in e if k not in ENTRY_KEYS]
        if bad or "seed" in (e.get("set") or {}):
            raise SystemExit(f"{where}: unknown keys {bad or ['set.seed']} (the seeds are 'seeds')")
        if e["name"] in names:
            raise SystemExit(f"{where}: the name is used twice")
        names.add(e["name"])
        e["overrides"] = [override_text(k, v) for k, v in (e.get("set") or {}).items()]
        try:
            for seed in e.get("seeds", [0]):
                load_run_config(ROOT / e["config"], seed_overrides(e["overrides"], seed))
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f"{where}: {err}")
    return grid


def run(grid, out: Path, jobs: int, threads: int) -> None:
    todo = []
    for cfg in grid:
        for seed in cfg.get("seeds", [0]):
            d = out / cfg["name"] / f"seed{seed}"
            if (d / "results.json").exists():
                continue
            cmd = [sys.executable, "-m", "magnet_pyg", "train", "--config", str(ROOT / cfg["config"]),
                   *[a for o in seed_overrides(cfg["overrides"], seed) for a in ("--set", o)], *[str(a) for a in cfg.get("args", [])],
                   "--seed", str(seed), "--out", str(d), "--no-progress", "--threads", str(threads)]
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
        run(load_grid(Path(a.grid)), Path(a.out), a.jobs, a.threads)
    s = table(Path(a.out))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(s, indent=2) + "\n")
