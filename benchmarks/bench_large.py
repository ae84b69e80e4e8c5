"""Large-graph benchmark on the CPU: the Electronics-scale synthetic dataset
(192,403 users, 63,001 items, 1.69M interactions, 4096-d image + 384-d text features).

Phases, each timed (wall clock) with the resident memory after it:

1. data: ``magnet_pyg.data.synthetic("electronics")``;
2. graph: content-induced edges with ``magnet_pyg.graph.add_induced_edges`` (Table 3
   Electronics column: k = 30, r = 200), or ``--graph random`` (r random items per user, the
   same size, for measuring the training side alone);
3. prepare: neighbour sampler (PyG CSC per relation) and per-view degrees;
4. train: ``--steps`` sampled MAGNET-DV steps (batch 1024, fanout 10 10, Adam), reporting
   samples per second;
5. eval: exact layer-wise inference of every user and item, then exact full ranking of
   ``--eval-users`` test users over all items (Recall/NDCG@10/20/50).

    python benchmarks/bench_large.py                       # the Done-when run
    python benchmarks/bench_large.py --preset small --steps 20 --eval-users 500   # smoke test

Writes ``benchmarks/results/large_<preset>_<view>.json``. Done-when (issue 5): total time
<= 15 minutes and peak RSS <= 12 GB on the 2-core CI machine.
"""
import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import peak_rss_gb, write  # noqa: E402

from magnet_pyg.data import (INDUCED, INDUCED_BY, modality_features, num_items, num_users,  # noqa: E402
                             split_edge_index, synthetic)
from magnet_pyg.evaluate import Evaluator  # noqa: E402
from magnet_pyg.evaluate.layerwise import layerwise_inference  # noqa: E402
from magnet_pyg.models.magnet import MAGNET, PRESETS  # noqa: E402
from magnet_pyg.train import Adam, LinkSampler  # noqa: E402
from magnet_pyg.train.sampled import check_fanout, prepare_sampled, sampled_loss  # noqa: E402


def rss_gb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2 ** 30
    except OSError:
        return float("nan")


def random_induced(data, r: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    U, I = num_users(data), num_items(data)
    users = torch.arange(U).repeat_interleave(r)
    items = torch.randint(0, I, (U * r,), generator=g)
    ei = torch.stack([users, items])
    data[INDUCED].edge_index = ei
    data[INDUCED_BY].edge_index = ei.flip(0)
    return data


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="electronics", help="synthetic preset (electronics | small | tiny)")
    p.add_argument("--view", choices=["dual", "single"], default="dual")
    p.add_argument("--graph", choices=["build", "random"], default="build",
                   help="induced edges from magnet_pyg.graph (build) or r random items per user")
    p.add_argument("--knn-backend", default="auto")
    p.add_argument("--graph-cache", default=None, help="cache folder of the graph builder (default: none)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--fanout", type=int, nargs="+", default=[10, 10])
    p.add_argument("--workers", type=int, default=1,
                   help="sampling worker processes (overlap sampling with the training step)")
    p.add_argument("--eval-users", type=int, default=5000)
    p.add_argument("--eval-batch-size", type=int, default=1024)
    p.add_argument("--chunk-size", type=int, default=65536)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads outside the training loop (default: all cores)")
    p.add_argument("--train-threads", type=int, default=None,
                   help="torch threads in the training loop (default: threads - workers, at least 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.threads = args.threads or os.cpu_count() or 1
    args.train_threads = args.train_threads or max(1, args.threads - args.workers)
    torch.set_num_threads(args.threads)
    pre = PRESETS["paper-electronics"]
    check_fanout(args.fanout, pre.config.num_layers)
    phases, t_start, load_start = {}, time.perf_counter(), os.getloadavg()

    def phase(name, t0):
        phases[name] = {"seconds": round(time.perf_counter() - t0, 2), "rss_gb": round(rss_gb(), 2)}
        print(f"[{time.perf_counter() - t_start:7.1f}s] {name}: {phases[name]}", flush=True)

    t0 = time.perf_counter()
    data = synthetic(args.preset, seed=args.seed)
    phase("data", t0)

    t0 = time.perf_counter()
    graph_info = {"mode": args.graph, "k": pre.config.knn_k, "r": pre.config.expand_r}
    if args.view == "dual":
        if args.graph == "build":
            from magnet_pyg.graph import add_induced_edges
            data = add_induced_edges(data, k=pre.config.knn_k, r=pre.config.expand_r, backend=args.knn_backend,
                                     cache_dir=args.graph_cache)
        else:
            data = random_induced(data, pre.config.expand_r, args.seed)
        graph_info["induced_edges"] = int(data[INDUCED].edge_index.size(1))
    phase("graph", t0)

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
    model = MAGNET.from_preset(num_users(data), num_items(data), dims, "paper-electronics", view=args.view)
    graph = prepare_sampled(model, data, args.fanout, num_workers=args.workers)
    sampler = LinkSampler(split_edge_index(data, "train"), num_items(data), args.batch_size)
    opt = Adam(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    phase("prepare", t0)

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    batches = []
    while len(batches) < args.steps:
        for b in sampler.epoch(gen):
            batches.append(b)
            if len(batches) == args.steps:
                break
    model.train()
    torch.set_num_threads(args.train_threads)
    losses, bprs, nodes, edges, samples = [], [], [], [], 0
    t_loop = time.perf_counter()
    for batch in graph.sampler.iterate(batches):
        loss, logs = sampled_loss(model, graph, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bprs.append(float(logs["bpr"]))
        samples += batch.users.numel()
        sub = batch.subgraph
        nodes.append(sum(int(sub[t].num_nodes) for t in sub.node_types))
        edges.append(sum(int(sub[et].num_edges) for et in sub.edge_types))
    train_seconds = time.perf_counter() - t_loop
    torch.set_num_threads(args.threads)
    phase("train", t0)

    t0 = time.perf_counter()
    state = layerwise_inference(model, graph.layerwise_graph(), args.chunk_size)
    inference_seconds = time.perf_counter() - t0
    evaluator = Evaluator(data, ks=(10, 20, 50), batch_size=args.eval_batch_size)
    test_users = torch.unique(split_edge_index(data, "test")[0])
    g = torch.Generator().manual_seed(args.seed)
    users = test_users[torch.randperm(test_users.numel(), generator=g)[:args.eval_users]].sort().values
    t1 = time.perf_counter()
    metrics = evaluator.evaluate(model, None, "test", users=users, state=state)
    ranking_seconds = time.perf_counter() - t1
    phase("eval", t0)

    total = time.perf_counter() - t_start
    peak = peak_rss_gb()
    payload = {
        "dataset": getattr(data, "name", args.preset),
        "num_users": num_users(data), "num_items": num_items(data),
        "train_interactions": int(split_edge_index(data, "train").size(1)),
        "model": f"MAGNET-{'DV' if args.view == 'dual' else 'SV'}",
        "settings": {"steps": args.steps, "batch_size": args.batch_size, "fanout": args.fanout,
                     "workers": args.workers, "threads": args.threads,
                     "train_threads": args.train_threads, "dim": pre.config.embedding_dim,
                     "layers": pre.config.num_layers, "eval_users": int(users.numel()),
                     "eval_items": num_items(data), "chunk_size": args.chunk_size},
        "graph": graph_info,
        "phases": phases,
        "train_seconds": round(train_seconds, 2),
        "samples_per_second": round(samples / train_seconds, 1),
        "steps_per_second": round(len(losses) / train_seconds, 3),
        "mean_subgraph_nodes": round(sum(nodes) / len(nodes), 1),
        "mean_subgraph_edges": round(sum(edges) / len(edges), 1),
        "loss_first_last": [losses[0], losses[-1]],
        "bpr_first10_last10": [sum(bprs[:10]) / len(bprs[:10]), sum(bprs[-10:]) / len(bprs[-10:])],
        "inference_seconds": round(inference_seconds, 2),
        "ranking_seconds": round(ranking_seconds, 2),
        "metrics": {k: v for k, v in metrics.items() if "@" in k},
        "total_seconds": round(total, 1),
        "load_avg_start_end": [load_start, os.getloadavg()],
        "peak_rss_gb_children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20, 2),
        "peak_rss_gb": round(peak, 2),
        "done_when": {"total_minutes_max": 15, "peak_rss_gb_max": 12,
                      "passed": bool(total <= 900 and peak <= 12)},
    }
    write(f"large_{args.preset}_{'dv' if args.view == 'dual' else 'sv'}"
          + ("" if args.graph == "build" else "_randomgraph"), payload)


if __name__ == "__main__":
    main()
