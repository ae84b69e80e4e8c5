"""LightGCN on Amazon Baby: one training epoch (batch 2048, exact full-graph propagation at
every step) and one full-ranking evaluation of all validation users.

    python benchmarks/bench_baby_lightgcn.py [--data PATH] [--repeats 5] [--layers 2]

Writes benchmarks/results/baby_lightgcn_<device>.json (median and all timings).
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_gb, sync, time_train_eval, write  # noqa: E402

from magnet_pyg.data import default_data_root, load_mmrec, num_items, num_users, split_edge_index
from magnet_pyg.evaluate import Evaluator
from magnet_pyg.models import LightGCN
from magnet_pyg.train import LinkSampler

p = argparse.ArgumentParser()
p.add_argument("--data", default=str(default_data_root() / "baby"))
p.add_argument("--repeats", type=int, default=5)
p.add_argument("--device", default="cpu")
p.add_argument("--layers", type=int, default=2, help="2 = MMRec default; 4 = our validation-selected setting")
args = p.parse_args()

data = load_mmrec(args.data)
dev = torch.device(args.device)
torch.manual_seed(0)
model = LightGCN(num_users(data), num_items(data), 64, args.layers).to(dev)
adj = model.prepare(data)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
sampler = LinkSampler(split_edge_index(data, "train"), num_items(data), 2048)
evaluator = Evaluator(data, ks=(10, 20, 50))


def epoch(e):
    g = torch.Generator().manual_seed(e)
    model.train()
    for u, i, j in sampler.epoch(g):
        loss, _ = model.loss(adj, u.to(dev), i.to(dev), j.to(dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(dev)


train_t, eval_t, res = time_train_eval(epoch, lambda: evaluator.evaluate(model, adj, "valid"),
                                       args.repeats, dev)
suffix = "" if args.layers == 2 else f"_L{args.layers}"
write(f"baby_lightgcn_{dev.type}{suffix}", {
    "dataset": "baby", "model": f"lightgcn (d=64, L={args.layers})", "batch_size": 2048,
    "steps_per_epoch": len(sampler), "valid_users_evaluated": res["num_users"],
    "train_epoch_seconds_median": statistics.median(train_t), "train_epoch_seconds": train_t,
    "eval_seconds_median": statistics.median(eval_t), "eval_seconds": eval_t,
    "peak_rss_gb": peak_rss_gb(),
})
