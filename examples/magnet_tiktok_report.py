"""MAGNET on TikTok with its routing report, through magnet_pyg's public API.

    python examples/magnet_tiktok_report.py [--data PATH_TO/tiktok] [--epochs 5] [--out runs/tiktok]

Trains MAGNET-DV and MAGNET-SV for a few epochs on the same data and seed (lambda_ctr = 0 in
both, as in the paper's Section 4.10 comparison) while a :class:`RoutingMonitor` records the
per-pair routing statistics of every epoch, then writes into ``OUT/dual/report/``:

* ``dynamics.png`` / ``.pdf``: routing entropy / SpecScore, N_eff, lambda_cov / lambda_conf
  and the decisiveness statistics per epoch, stage switch marked (paper Fig. 7/8);
* ``usage.png`` / ``.pdf``: expert usage, modality reliance, family proportions on the test
  split (Fig. 5);
* ``dual_view.png`` / ``.pdf``: NDCG@20 gains of the dual view (DV) over the single view (SV)
  by visibility and user-activity bucket (Fig. 6);
* ``report.json``: every number drawn;
* ``explain_user<U>.json`` / ``.png`` / ``.pdf``: one user's top-10 with its routing
  attribution (Fig. 14).

Each figure's caption defines the terms it shows (docs/figures.md lists them all).

Both run folders are ordinary run folders, so the same report can be regenerated with
``magnet-pyg report --run OUT/dual --compare OUT/single`` and
``magnet-pyg explain --run OUT/dual --user U``. If :mod:`magnet_pyg.graph` (induced edges) is
not available, only the single-view run is trained and reported.
"""
import argparse
import dataclasses
from pathlib import Path

import torch

from magnet_pyg.config import build_run, load_run_config
from magnet_pyg.data import default_data_root, describe
from magnet_pyg.interpret import (RoutingMonitor, RunContext, format_explanation,
                                  write_explanation, write_report)
from magnet_pyg.train import Trainer

parser = argparse.ArgumentParser()
parser.add_argument("--data", default=str(default_data_root() / "tiktok"))
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--out", default="runs/magnet_tiktok")
parser.add_argument("--views", nargs="+", default=["dual", "single"], choices=["dual", "single"])
parser.add_argument("--user", type=int, default=0, help="user to explain")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=None)
parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)

# a few-epoch demo: the "default" preset (the "tiktok" preset's 60-epoch behaviour warm-up would
# leave the head untrained), without the view contrast as in the paper's Section 4.10
base = load_run_config(model="magnet", overrides=[
    ("data", args.data, "--data"), ("preset", "default", "example"), ("lambda_ctr", 0.0, "example"),
    ("epochs", args.epochs, "--epochs"), ("seed", args.seed, "--seed"), ("device", args.device, "--device")])
data = base.data.load()                # TikTok: image + audio features
print(describe(data))

views = list(args.views)
if "dual" in views:
    try:
        import magnet_pyg.graph  # noqa: F401
    except ImportError as e:           # the induced-edge builder is optional here
        print(f"no induced edges ({e}); training the single view only")
        views = ["single"]

runs = {}
for view in views:
    run = dataclasses.replace(base, model_options=dataclasses.replace(base.model_options, view=view))
    torch.manual_seed(args.seed)
    model, view_data, run = build_run(run, data)   # the model, and the induced edges of the dual view
    out = Path(args.out) / view
    config = dataclasses.replace(run.train, out_dir=str(out), progress=False)
    # the recorded configuration lets `magnet-pyg report --run OUT/<view>` rebuild the run
    with RoutingMonitor(model):        # per-pair routing statistics of every epoch
        results = Trainer(config, run.record(view_data)).fit(model, view_data, "magnet")
    print(f"MAGNET-{view[0].upper()}V: best epoch {results['best_epoch']}, test "
          f"recall@20 {results['test']['recall@20']:.4f} ndcg@20 {results['test']['ndcg@20']:.4f}")
    runs[view] = RunContext(model, view_data, model.prepare(view_data), results, out)

main_run = runs.get("dual", runs["single"])
report = write_report(main_run, compare=runs["single"] if "dual" in runs and "single" in runs else None,
                      split="test")
r = report["routing"]
print(f"test routing: N_eff {r['n_eff']:.2f} of {r['num_experts']}, HHI {r['hhi']:.3f}, "
      f"Div {r['div']:.3f}, content share (A+S) {r['content_share']:.3f}")
print("  modality reliance:", {k: round(v, 3) for k, v in r["group_mass"].items()})
print("  family mass:      ", {k: round(v, 3) for k, v in r["family_mass"].items()})
if "dual_view" in report:
    dv = report["dual_view"]
    for key in ("difficulty", "activity"):
        s = dv[key]
        print(f"  DV vs SV N@20 gain by {key}:",
              {b: (None if g is None else round(g, 1)) for b, g in zip(s["buckets"], s["gain_pct"])})
explanation = write_explanation(main_run, args.user, top_n=10)
print(format_explanation(explanation))
for name, path in report["files"].items():
    print(f"report {name}: {path}")
for name, path in explanation["files"].items():
    print(f"explanation {name}: {path}")
