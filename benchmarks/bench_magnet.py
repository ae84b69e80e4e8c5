"""MAGNET on a real dataset (TikTok, Sports, ...): full-graph training epochs and one exact full-ranking
evaluation of all validation users, for MAGNET-DV and MAGNET-SV, with a breakdown of where a
training step spends its time.

    python benchmarks/bench_magnet.py [--data tiktok|sports|PATH] [--preset default] [--repeats 3]
        [--expand-r 150] [--views dual single] [--modalities keyword text]
    python benchmarks/bench_magnet.py --config configs/magnet/sports-scratch.yaml [--repeats 1]

Per view: the median epoch time over ``--repeats`` epochs (after one warm-up epoch), the median
evaluation time, and, over one instrumented epoch, the seconds spent in the backbone forward
(Eq. 4-6), the cues (Eq. 7-8), the head and losses (Eq. 9-32), the backward pass and the
optimiser step; plus the cost of one propagation (forward + backward) over each view's
adjacency, whose non-zeros are reported (the augmented view carries the ``r`` induced edges of
every user). The batch size and learning rate are the preset's. Writes
``benchmarks/results/magnet_<dataset>_<device>_r<r>.json``.

With ``--config`` the model, data, batch size and learning rate are those of a run
configuration file (the views are the file's unless ``--views`` is given), a model with a
behaviour warm-up also has its warm-up epochs timed (backbone objective only), and the output is
``benchmarks/results/magnet_<config file stem>_<device>.json``.
"""
import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_gb, sync, time_train_eval, write  # noqa: E402

from magnet_pyg.data import keep_modalities, load_dataset, modality_features, num_items, num_users  # noqa: E402
from magnet_pyg.data import split_edge_index  # noqa: E402
from magnet_pyg.evaluate import Evaluator  # noqa: E402
from magnet_pyg.graph import add_induced_edges  # noqa: E402
from magnet_pyg.models.magnet import MAGNET, PRESETS, MagnetOutput, resolve_switch_epoch  # noqa: E402
from magnet_pyg.nn.losses import embedding_l2  # noqa: E402
from magnet_pyg.train import LinkSampler  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data", default="tiktok", help="dataset name under the data root, or a folder")
p.add_argument("--modalities", nargs="+", default=None, help="content modalities (default: all)")
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--preset", default="default")
p.add_argument("--knn-k", type=int, default=None)
p.add_argument("--expand-r", type=int, default=None)
p.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
p.add_argument("--views", nargs="+", default=None, help="default: dual single (with --config: the file's)")
p.add_argument("--config", default=None, help="a MAGNET run configuration file (overrides --data, --preset, "
                                             "--modalities, --knn-k, --expand-r, --batch-size)")
p.add_argument("--device", default="cpu")
args = p.parse_args()
_FROM_CONFIG = ("data", "preset", "modalities", "knn_k", "expand_r", "batch_size")
if args.config and any(getattr(args, key) != p.get_default(key) for key in _FROM_CONFIG):
    p.error(f"--config sets the data, preset, modalities, kNN k, r and batch size: do not also give "
            f"{', '.join('--' + k.replace('_', '-') for k in _FROM_CONFIG if getattr(args, k) != p.get_default(k))}")

dev = torch.device(args.device)
if args.config:
    from magnet_pyg.config import load_run_config
    run_cfg = load_run_config(args.config)
    if run_cfg.model != "magnet":
        sys.exit(f"{args.config}: model {run_cfg.model!r}; this benchmark times MAGNET")
    options = run_cfg.model_options
    k, r, batch_size = options.knn_k, options.expand_r, run_cfg.train.batch_size
    lr, weight_decay, preset = run_cfg.train.lr, run_cfg.train.weight_decay, run_cfg.preset
    warmup_epochs = options.warmup_epochs
    views = args.views or [options.view]
    data = run_cfg.data.load()
    name, data_name = Path(args.config).stem, run_cfg.data.name
else:
    pre = PRESETS[args.preset]
    options, preset = None, args.preset
    k, r = args.knn_k or pre.config.knn_k, args.expand_r or pre.config.expand_r
    batch_size, lr, weight_decay = args.batch_size or pre.batch_size, pre.lr, pre.weight_decay
    warmup_epochs, views = 0, args.views or ["dual", "single"]
    data = load_dataset(args.data)
    if args.modalities:
        data = keep_modalities(data, args.modalities)
    name = data_name = Path(args.data).name
t0 = time.perf_counter()
data = add_induced_edges(data, k=k, r=r, backend="torch", cache_dir=None)
graph_seconds = time.perf_counter() - t0
dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
sampler = LinkSampler(split_edge_index(data, "train"), num_items(data), batch_size)
evaluator = Evaluator(data, ks=(10, 20))


class Clock:
    def __init__(self):
        self.t = {}

    def lap(self, key, t0):
        sync(dev)
        now = time.perf_counter()
        self.t[key] = self.t.get(key, 0.0) + now - t0
        return now


def plain_epoch(model, graph, opt, e):
    """One training epoch through the model's own loss (the trainer's path)."""
    model.train()
    for u, i, j in sampler.epoch(torch.Generator().manual_seed(e)):
        loss, _ = model.loss(graph, u.to(dev), i.to(dev), j.to(dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(dev)


def run(view):
    torch.manual_seed(0)
    if options is not None:
        config = resolve_switch_epoch(replace(options, view=view), len(sampler))
        model = MAGNET.from_config(num_users(data), num_items(data), dims, config).to(dev)
    else:
        model = MAGNET.from_preset(num_users(data), num_items(data), dims, args.preset, view=view).to(dev)
    graph = model.prepare(data)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    timings = {}
    if warmup_epochs > 0:  # the backbone-only epochs first, then the head's
        model.on_epoch_start(graph, 0, torch.Generator())
        train_t, _, _ = time_train_eval(lambda e: plain_epoch(model, graph, opt, e), lambda: None, args.repeats, dev)
        timings = {"warmup_epoch_seconds_median": statistics.median(train_t), "warmup_epoch_seconds": train_t}
    model.on_epoch_start(graph, warmup_epochs, torch.Generator())

    def epoch(e, clock=None):
        if clock is None:
            return plain_epoch(model, graph, opt, e)
        model.train()
        for u, i, j in sampler.epoch(torch.Generator().manual_seed(e)):
            u, i, j = u.to(dev), i.to(dev), j.to(dev)
            t = time.perf_counter()
            z, z_ui, z_uig = model.encoder(graph.adj_ui, graph.adj_uig)
            t = clock.lap("backbone_forward", t)
            h_u, h_i = model.cues(list(graph.features), graph.user_item, graph.item_user)
            t = clock.lap("cues_forward", t)
            out = MagnetOutput(z, z_ui, z_uig, h_u, h_i)
            ctr = model.view_contrast(out, u, i) if model.uses_view_contrast(out) else None
            h = model.triple_user_cues(out, u, i, graph.user_degree)
            e0, nu = model.encoder.embedding.weight, model.encoder.num_users
            reg = embedding_l2(e0[u], e0[nu + i], e0[nu + j]) if model.reg_weight > 0 else None
            loss, _ = model.objective(model.pair_scores(out, u, i, h), model.pair_scores(out, u, j, h), ctr, reg)
            t = clock.lap("head_and_losses_forward", t)
            opt.zero_grad()
            loss.backward()
            t = clock.lap("backward", t)
            opt.step()
            clock.lap("optimizer", t)
        sync(dev)

    train_t, eval_t, _ = time_train_eval(epoch, lambda: evaluator.evaluate(model, graph, "valid"),
                                         args.repeats, dev)
    clock = Clock()
    epoch(100, clock)
    props = {}
    for name, adj in (("G_UI", graph.adj_ui), ("G_UIG", graph.adj_uig)):
        if adj is None:
            continue
        x = model.encoder.embedding.weight
        t = time.perf_counter()
        model.encoder.propagate(adj, x).sum().backward()
        sync(dev)
        props[name] = {"nnz": int(adj._nnz() if adj.layout == torch.sparse_coo else adj.values().numel()),
                       "propagation_fwd_bwd_seconds": time.perf_counter() - t}
        model.zero_grad()
    return {**timings, "train_epoch_seconds_median": statistics.median(train_t), "train_epoch_seconds": train_t,
            "eval_seconds_median": statistics.median(eval_t), "eval_seconds": eval_t,
            "instrumented_epoch_breakdown_seconds": {k: round(v, 3) for k, v in clock.t.items()},
            "adjacency": props}


results = {view: run(view) for view in views}
write(f"magnet_{name}_{dev.type}" if args.config else f"magnet_{name}_{dev.type}_r{r}", {
    "dataset": str(data_name), "config": args.config, "modalities": list(dims), "preset": preset,
    "warmup_epochs": warmup_epochs, "knn_k": k, "expand_r": r,
    "induced_edges": int(data["user", "induced", "item"].num_edges), "graph_build_seconds": graph_seconds,
    "batch_size": batch_size, "lr": lr, "steps_per_epoch": len(sampler), "valid_users": int(
        torch.unique(split_edge_index(data, "valid")[0]).numel()),
    "views": results, "peak_rss_gb": peak_rss_gb(),
})
