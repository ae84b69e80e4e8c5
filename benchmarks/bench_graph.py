"""Benchmark of the content-induced graph augmentation (MAGNET Eq. 1-3).

Builds the per-modality item kNN lists and the induced edges E+ and writes a JSON file
with seconds per stage (wall and process CPU), peak RSS, number of induced edges, the
kNN recall of approximate search against exact search, and the machine.

    # Electronics scale (synthetic generator: 192,403 users, 63,001 items, 4096-d + 384-d)
    python benchmarks/bench_graph.py --dataset electronics --k 30 --r 200
    # ... plus exact brute-force kNN (full recall, E+ agreement; about 10 minutes on 2 cores)
    python benchmarks/bench_graph.py --dataset electronics --k 30 --r 200 --exact
    # TikTok (real data under $MAGNET_PYG_DATA), exact search, with a cache round trip
    python benchmarks/bench_graph.py --dataset tiktok --k 20 --r 150 --cache-dir /tmp/graph-cache

Stage times of the build are measured around the library calls
(:func:`magnet_pyg.graph.knn_search`, :func:`~magnet_pyg.graph.item_similarity`,
:func:`~magnet_pyg.graph.expand_candidates`); the recall evaluation is a separate stage
(it is a measurement, not part of the build). ``build_peak_rss_gb`` is the peak resident
set during the build (the kernel's high-water mark is reset after the data is loaded).
"""
from __future__ import annotations

import os

# OpenMP threads that sleep instead of spinning while they wait: on a small shared machine
# (2 cores, other jobs running) spinning threads make 2-thread BLAS/FAISS calls 2-3x slower
# than 1 thread. Must be set before torch / faiss load the OpenMP runtime; an explicit
# OMP_WAIT_POLICY in the environment wins. Recorded in the JSON.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import platform
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from magnet_pyg.data import INDUCED, INDUCED_BY, load_mmrec, num_items, num_users, synthetic
from magnet_pyg.data import modality_features, split_edge_index
from magnet_pyg.graph import (ANNParams, expand_candidates, induced_edges, item_similarity,
                              knn_recall, knn_search, knn_to_sparse, resolve_backend)


# ----------------------------------------------------------------------------- machine / memory
def _status(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in GB (0 when /proc is unavailable)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 0.0


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine() -> dict:
    import faiss
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = set()
    try:
        flags = set(next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    mem = 0.0
    try:
        mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) / 1e6
    except (OSError, StopIteration):
        pass
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "simd": sorted(f for f in flags if f in ("avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16")),
        "ram_gb": round(mem, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "cuda_gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "faiss_gpus": faiss.get_num_gpus(),
        "platform": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


class Stage:
    """Wall and process-CPU seconds of a block."""
    def __init__(self, record: dict, name: str):
        self.record, self.name = record, name

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.record[self.name] = {"wall_s": round(time.perf_counter() - self.w, 3),
                                  "cpu_s": round(time.process_time() - self.c, 3)}
        print(f"  {self.name}: {self.record[self.name]}", flush=True)


def load(name: str, seed: int):
    if name == "tiktok":
        return load_mmrec("tiktok")
    return synthetic(name, seed=seed)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="electronics", help="electronics | small | tiny | tiktok")
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--r", type=int, default=200)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--reduce-dim", type=int, default=ANNParams.reduce_dim)
    ap.add_argument("--refine-factor", type=float, default=ANNParams.refine_factor)
    ap.add_argument("--nlist", type=int, default=ANNParams.nlist)
    ap.add_argument("--nprobe", type=int, default=ANNParams.nprobe)
    ap.add_argument("--hnsw-m", type=int, default=ANNParams.hnsw_m)
    ap.add_argument("--ef-search", type=int, default=ANNParams.ef_search)
    ap.add_argument("--recall-sample", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact", action="store_true",
                    help="also run exact brute-force kNN (torch): time, full recall, E+ agreement")
    ap.add_argument("--cache-dir", default=None, help="also time a cold and a warm cached build")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/graph_<dataset>.json)")
    args = ap.parse_args(argv)

    import faiss
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    out_path = Path(args.out or Path(__file__).parent / "results" / f"graph_{args.dataset}.json")
    rec: dict = {"dataset": args.dataset, "k": args.k, "r": args.r, "machine": machine(),
                 "loadavg_start": os.getloadavg(), "stages": {}}
    st = rec["stages"]
    print(f"graph benchmark: {args.dataset}, k={args.k}, r={args.r}, threads={args.threads}", flush=True)

    with Stage(st, "load_data"):
        data = load(args.dataset, args.seed)
    feats = modality_features(data)
    train = split_edge_index(data, "train")
    U, I = num_users(data), num_items(data)
    rec["data"] = {"users": U, "items": I, "train_edges": int(train.size(1)),
                   "modalities": {m: list(x.shape) for m, x in feats.items()}}
    rec["rss_after_load_gb"] = round(_status("VmRSS"), 3)
    rec["peak_rss_reset"] = reset_peak_rss()
    ann = ANNParams(reduce_dim=args.reduce_dim, refine_factor=args.refine_factor, nlist=args.nlist,
                    nprobe=args.nprobe, hnsw_m=args.hnsw_m, ef_search=args.ef_search, seed=args.seed)
    rec["ann"] = asdict(ann)

    # ---- the build: kNN per modality (Eq. 1), S, expansion (Eq. 2-3), views
    knn, backends = {}, {}
    for m, x in feats.items():
        backends[m] = resolve_backend(args.backend, x.size(0), x.size(1))
        with Stage(st, f"knn_{m}"):
            knn[m] = knn_search(x, args.k, backends[m], ann, name=m)
    with Stage(st, "similarity"):
        sim = item_similarity([knn_to_sparse(i, s, I) for i, s in knn.values()], I)
    with Stage(st, "expansion"):
        ei, w = expand_candidates(train, sim, U, args.r)
    with Stage(st, "add_to_heterodata"):
        aug = copy.copy(data)
        aug[INDUCED].edge_index, aug[INDUCED].edge_weight = ei, w
        aug[INDUCED_BY].edge_index, aug[INDUCED_BY].edge_weight = ei.flip(0), w
    build = [f"knn_{m}" for m in feats] + ["similarity", "expansion", "add_to_heterodata"]
    rec["build_wall_s"] = round(sum(st[s]["wall_s"] for s in build), 3)
    rec["build_cpu_s"] = round(sum(st[s]["cpu_s"] for s in build), 3)
    rec["build_peak_rss_gb"] = round(_status("VmHWM"), 3)
    rec["backend"] = backends
    per_user = torch.bincount(ei[0], minlength=U)
    rec["induced_edges"] = int(ei.size(1))
    rec["users_with_induced_edges"] = int((per_user > 0).sum())
    rec["induced_per_user_mean"] = round(float(per_user.float().mean()), 2)
    print(f"  build: {rec['build_wall_s']} s wall, {rec['build_cpu_s']} s cpu, "
          f"peak RSS {rec['build_peak_rss_gb']} GB, {rec['induced_edges']} induced edges", flush=True)

    # ---- recall of approximate search against exact search (sampled)
    rec["recall"] = {}
    for m, x in feats.items():
        if backends[m] in ("torch", "faiss"):
            rec["recall"][m] = {"value": 1.0, "note": "exact backend (not sampled)"}
            continue
        with Stage(st, f"recall_eval_{m}"):
            val = knn_recall(x, knn[m][0], sample=args.recall_sample, seed=args.seed, name=m)
        rec["recall"][m] = {"value": round(val, 5), "sample": min(args.recall_sample, I),
                            "definition": f"mean |approx top-{args.k} & exact top-{args.k}| / {args.k}"}
        print(f"  recall {m}: {val:.4f}", flush=True)

    recall_eval = [f"recall_eval_{m}" for m in feats if f"recall_eval_{m}" in st]
    rec["build_plus_recall_eval_wall_s"] = round(rec["build_wall_s"] + sum(st[s]["wall_s"] for s in recall_eval), 3)
    recalls = [v["value"] for v in rec["recall"].values()]
    if args.dataset == "electronics":  # limits the Electronics-scale build is checked against
        rec["targets"] = {"build_wall_s_max": 120, "build_peak_rss_gb_max": 8, "recall_min": 0.95,
                          "met": bool(rec["build_wall_s"] <= 120 and rec["build_peak_rss_gb"] <= 8
                                      and min(recalls) >= 0.95)}

    # ---- exact brute force (optional): time, full recall, agreement of E+
    if args.exact:
        ex = rec["exact"] = {"backend": "torch", "stages": {}}
        exact_knn = {}
        for m, x in feats.items():
            with Stage(ex["stages"], f"knn_{m}"):
                exact_knn[m] = knn_search(x, args.k, "torch", name=m)
            a, e = knn[m][0], exact_knn[m][0]
            hit = (a.unsqueeze(2) == e.unsqueeze(1)).any(1) & (e >= 0)
            ex[f"full_recall_{m}"] = round(float(hit.sum()) / max(1, int((e >= 0).sum())), 5)
        with Stage(ex["stages"], "similarity"):
            sim_e = item_similarity([knn_to_sparse(i, s, I) for i, s in exact_knn.values()], I)
        with Stage(ex["stages"], "expansion"):
            ei_e, w_e = expand_candidates(train, sim_e, U, args.r)
        ex["build_wall_s"] = round(sum(v["wall_s"] for v in ex["stages"].values()), 3)
        ex["induced_edges"] = int(ei_e.size(1))
        key_a = ei[0] * I + ei[1]
        key_e = ei_e[0] * I + ei_e[1]
        common = int(torch.isin(key_a, key_e).sum())
        ex["induced_edges_shared_with_approx"] = common
        ex["induced_edges_jaccard"] = round(common / (key_a.numel() + key_e.numel() - common), 5)
        print(f"  exact: {ex}", flush=True)

    # ---- cache round trip through the public API (optional)
    if args.cache_dir:
        cache = {}
        with Stage(cache, "cold_build_with_cache"):
            a = induced_edges(data, args.k, args.r, args.backend, args.cache_dir, ann,
                              recall_sample=0)
        with Stage(cache, "warm_load_from_cache"):
            b = induced_edges(data, args.k, args.r, args.backend, args.cache_dir, ann,
                              recall_sample=0)
        cache["warm_cache_hit"] = bool(b["info"]["cache_hit"])
        cache["identical"] = bool(torch.equal(a["edge_index"], b["edge_index"])
                                  and torch.equal(a["edge_weight"], b["edge_weight"]))
        cache["same_as_benchmark_build"] = bool(torch.equal(a["edge_index"], ei)
                                                and torch.equal(a["edge_weight"], w))
        rec["cache"] = cache

    # whole process, data generation and the optional exact comparison included
    rec["process_peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
    rec["loadavg_end"] = os.getloadavg()
    rec["command"] = " ".join([Path(sys.executable).name] + sys.argv)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(rec, indent=2))
    print(f"wrote {out_path}", flush=True)
    return rec


if __name__ == "__main__":
    main()
