"""GPU benchmark: time per training epoch and peak GPU memory of MAGNET-DV and MAGNET-SV,
full-graph and neighbour-sampled, on TikTok and the Electronics-scale synthetic dataset
(the paper's Table 7 measurements).

    python benchmarks/bench_gpu.py                                   # everything, full epochs
    python benchmarks/bench_gpu.py --datasets electronics --max-steps 200 --workers 8

For every (dataset, view, mode): the induced edges are built once per dataset on the GPU
(exact torch kNN, Table 3 k and r), the model is trained for one epoch (or ``--max-steps``
steps, the epoch time then extrapolated from the measured steps and flagged), and evaluated
with the exact full ranking of the validation users (full-graph inference, or the layer-wise
inference in node chunks for the sampled mode). Sampled subgraphs are prepared by
``--workers`` CPU DataLoader workers. Peak memory is ``torch.cuda.max_memory_allocated`` over
preparation, training and evaluation (model, data on the GPU, activations, optimiser state).

Writes ``benchmarks/results/gpu_<gpu>.json``. Without a CUDA GPU it prints why and exits with
status 2 before loading anything.
"""
import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["tiktok", "electronics"],
                   help="'tiktok' (MMRec folder under $MAGNET_PYG_DATA), 'electronics' (synthetic), "
                        "any synthetic preset name, or an MMRec path")
    p.add_argument("--views", nargs="+", choices=["dual", "single"], default=["dual", "single"])
    p.add_argument("--modes", nargs="+", choices=["full", "sampled"], default=["full", "sampled"])
    p.add_argument("--fanout", type=int, nargs="+", default=[10, 10])
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=8, help="CPU workers preparing sampled subgraphs")
    p.add_argument("--max-steps", type=int, default=None,
                   help="train this many steps and extrapolate the epoch time (default: a whole epoch)")
    p.add_argument("--eval-users", type=int, default=None, help="evaluate at most this many users")
    p.add_argument("--eval-batch-size", type=int, default=2048)
    p.add_argument("--chunk-size", type=int, default=1 << 17)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="result file name (default gpu_<gpu>)")
    return p.parse_args()


def load(name: str, seed: int):
    from magnet_pyg.data import default_data_root, load_mmrec, synthetic
    from magnet_pyg.data.synthetic import PRESETS as SYN
    if name in SYN:
        return synthetic(name, seed=seed), "paper-electronics" if name == "electronics" else "default"
    path = Path(name)
    if not path.exists():
        path = default_data_root() / name
    return load_mmrec(path), (f"paper-{name}" if name in ("baby", "sports", "clothing", "electronics") else "default")


def run_one(data, preset, view, mode, args, dev):
    from magnet_pyg.data import modality_features, num_items, num_users, split_edge_index
    from magnet_pyg.evaluate import Evaluator
    from magnet_pyg.evaluate.layerwise import layerwise_inference
    from magnet_pyg.models.magnet import MAGNET, PRESETS
    from magnet_pyg.train import LinkSampler
    from magnet_pyg.train.sampled import prepare_sampled, sampled_loss

    pre = PRESETS[preset]
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.manual_seed(args.seed)
    dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
    model = MAGNET.from_preset(num_users(data), num_items(data), dims, preset, view=view).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    t0 = time.perf_counter()
    if mode == "full":
        graph = model.prepare(data)
    else:
        graph = prepare_sampled(model, data, args.fanout, num_workers=args.workers)
    torch.cuda.synchronize(dev)
    prepare_seconds = time.perf_counter() - t0
    sampler = LinkSampler(split_edge_index(data, "train"), num_items(data), args.batch_size)
    steps_per_epoch = len(sampler)
    batches = list(sampler.epoch(torch.Generator().manual_seed(args.seed)))
    if args.max_steps:
        batches = batches[:args.max_steps]
    model.train()
    it = (graph.sampler.iterate(batches, pin_memory=True) if mode == "sampled" else iter(batches))
    # the first step (CUDA context, cuSPARSE handles, worker start) is timed separately
    t0 = time.perf_counter()
    steps = 0
    t_first = None
    for b in it:
        if mode == "sampled":
            loss, _ = sampled_loss(model, graph, b.to(dev, non_blocking=True))
        else:
            loss, _ = model.loss(graph, *(t.to(dev, non_blocking=True) for t in b))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        if steps == 1:
            torch.cuda.synchronize(dev)
            t_first = time.perf_counter()
    torch.cuda.synchronize(dev)
    t_end = time.perf_counter()
    first_step = (t_first - t0) if t_first is not None else None
    measured = t_end - t_first if steps > 1 else t_end - t0
    per_step = measured / max(steps - 1, 1)
    epoch_seconds = (first_step or 0.0) + per_step * (steps_per_epoch - 1)
    train_peak = torch.cuda.max_memory_allocated(dev)

    evaluator = Evaluator(data, ks=(10, 20, 50), batch_size=args.eval_batch_size)
    users = None
    if args.eval_users:
        vu = torch.unique(split_edge_index(data, "valid")[0])
        g = torch.Generator().manual_seed(args.seed)
        users = vu[torch.randperm(vu.numel(), generator=g)[:args.eval_users]].sort().values
    t0 = time.perf_counter()
    if mode == "full":
        res = evaluator.evaluate(model, graph, "valid", users=users)
    else:
        state = layerwise_inference(model, graph.layerwise_graph(), args.chunk_size)
        res = evaluator.evaluate(model, None, "valid", users=users, state=state)
    torch.cuda.synchronize(dev)
    eval_seconds = time.perf_counter() - t0
    out = {
        "dataset": getattr(data, "name", None), "view": view, "mode": mode,
        "fanout": args.fanout if mode == "sampled" else None,
        "batch_size": args.batch_size, "steps_per_epoch": steps_per_epoch, "steps_run": steps,
        "epoch_extrapolated": steps < steps_per_epoch,
        "first_step_seconds": round(first_step, 3) if first_step is not None else None,
        "seconds_per_step": round(per_step, 5),
        "epoch_seconds": round(epoch_seconds, 2),
        "samples_per_second": round(args.batch_size / per_step, 1),
        "prepare_seconds": round(prepare_seconds, 2),
        "eval_seconds": round(eval_seconds, 2), "eval_users": res["num_users"],
        "valid_ndcg@20": res["ndcg@20"], "valid_recall@20": res["recall@20"],
        "peak_gpu_gb_train": round((train_peak - base) / 2 ** 30, 3),
        "peak_gpu_gb": round((torch.cuda.max_memory_allocated(dev) - base) / 2 ** 30, 3),
        "peak_gpu_reserved_gb": round(torch.cuda.max_memory_reserved(dev) / 2 ** 30, 3),
        "loss_last": float(loss.detach()),
    }
    del model, graph, opt
    return out


def main():
    args = parse()
    if not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA GPU visible to torch {torch.__version__} (cuda build: "
              f"{torch.version.cuda}); run it on a GPU machine. Nothing was measured.", file=sys.stderr)
        return 2
    from magnet_pyg.train.sampled import check_fanout, check_sampling_backend
    from magnet_pyg.models.magnet import PRESETS
    if "sampled" in args.modes:
        check_sampling_backend()
        check_fanout(args.fanout, PRESETS["paper-electronics"].config.num_layers)
    from common import write
    dev = torch.device(args.device)
    if dev.type != "cuda":
        print(f"bench_gpu: --device must be a CUDA device, got '{args.device}'", file=sys.stderr)
        return 2
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(dev)
    gpu = torch.cuda.get_device_name(dev)
    rows, graphs = [], {}
    for name in args.datasets:
        t0 = time.perf_counter()
        data, preset = load(name, args.seed)
        load_seconds = time.perf_counter() - t0
        pre = PRESETS[preset]
        info = {"dataset": name, "preset": preset, "load_seconds": round(load_seconds, 2)}
        if "dual" in args.views:
            from magnet_pyg.graph import add_induced_edges
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            data = add_induced_edges(data, k=pre.config.knn_k, r=pre.config.expand_r, backend="torch", device=dev, progress=False)
            torch.cuda.synchronize(dev)
            info.update(graph_seconds=round(time.perf_counter() - t0, 2),
                        induced_edges=int(data["user", "induced", "item"].edge_index.size(1)), k=pre.config.knn_k, r=pre.config.expand_r)
        graphs[name] = info
        print(info, flush=True)
        for view in args.views:
            for mode in args.modes:
                try:
                    row = run_one(data, preset, view, mode, args, dev)
                except torch.cuda.OutOfMemoryError as e:
                    row = {"dataset": name, "view": view, "mode": mode, "error": f"out of memory: {e}"[:300]}
                    torch.cuda.empty_cache()
                rows.append(row)
                print(row, flush=True)
        del data
    write(args.name or f"gpu_{gpu.replace(' ', '_')}",
          {"gpu": gpu, "settings": {k: v for k, v in vars(args).items()}, "graphs": graphs, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
