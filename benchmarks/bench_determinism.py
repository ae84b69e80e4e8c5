"""Cost of deterministic CPU training: one training epoch, before and after.

Multi-threaded CPU training was not bit-reproducible: the backward pass of advanced indexing
``x[index]`` (``index_put_`` with ``accumulate=True``) adds the gradient rows of repeated
indices with atomic float additions once the gradient has 32,768 elements and more than one
thread runs, so the order of the additions, and the last bits of the result, vary from run
to run. Two changes make training deterministic:

* MAGNET (and the sampled-training losses) gather batch rows with
  :func:`magnet_pyg.nn.gather_rows`, whose backward sums every row's contributions in index
  order on one thread;
* the trainers run their training steps under
  :func:`magnet_pyg.train.trainer.deterministic_cpu` (``torch.use_deterministic_algorithms``
  on the CPU), which makes ``index_put_`` accumulate serially for every other model.

This script times one training epoch (the trainer's ``train_seconds``, without evaluation)
under three variants, interleaved and repeated (5 times by default), and writes the medians to
``benchmarks/results/determinism_cpu.json``:

* ``before``: plain ``x[index]`` gathers and no deterministic mode (the code before the change);
* ``deterministic_mode_only``: plain gathers under the trainer's deterministic mode (what a
  model without :func:`~magnet_pyg.nn.gather_rows` pays);
* ``after``: the shipped code (``gather_rows`` and deterministic mode).

It also records the epoch losses of every run: the ``after`` runs must agree bit for bit.

    python benchmarks/bench_determinism.py                       # MAGNET, --data synthetic, 2 threads
    python benchmarks/bench_determinism.py --model lightgcn --repeats 5
"""
from __future__ import annotations

import os

# OpenMP threads that sleep instead of spinning while they wait: on a small shared machine
# (2 cores, other jobs running) spinning threads make some 2-thread epochs several times
# slower than others. Must be set before torch loads the OpenMP runtime; an explicit
# OMP_WAIT_POLICY in the environment wins. Recorded in the JSON.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import dataclasses
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write  # noqa: E402

import magnet_pyg.models.magnet as magnet_module  # noqa: E402
import magnet_pyg.train.trainer as trainer_module  # noqa: E402
from magnet_pyg.config import build_run, load_run_config  # noqa: E402
from magnet_pyg.train import TrainConfig, Trainer  # noqa: E402

VARIANTS = ("before", "deterministic_mode_only", "after")


def _plain_gather(x, index):
    return x[index]


@contextlib.contextmanager
def variant(name: str):
    """Patch the package into the state of ``name`` (see the module docstring)."""
    gather, mode = magnet_module.gather_rows, trainer_module.deterministic_cpu
    if name in ("before", "deterministic_mode_only"):
        magnet_module.gather_rows = _plain_gather
    if name == "before":
        trainer_module.deterministic_cpu = lambda device: contextlib.nullcontext()
    try:
        yield
    finally:
        magnet_module.gather_rows, trainer_module.deterministic_cpu = gather, mode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="magnet")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="determinism_cpu", help="results/<name>.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    run = load_run_config(model=args.model, overrides=[("data", args.data, "--data"), ("seed", args.seed, "--seed")])
    torch.manual_seed(args.seed)
    model0, data, run = build_run(run, run.data.load())
    opts = dataclasses.asdict(run.model_options)
    cfg = dict(epochs=1, batch_size=run.train.batch_size, lr=run.train.lr,
               weight_decay=run.train.weight_decay, seed=args.seed, progress=False)

    seconds = {v: [] for v in VARIANTS}
    losses = {v: [] for v in VARIANTS}
    runs = []
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for name in order:
            load = os.getloadavg()
            with variant(name):
                res = Trainer(TrainConfig(**cfg)).fit(copy.deepcopy(model0), data, args.model)
            ep = res["epochs"][0]
            seconds[name].append(ep["train_seconds"])
            losses[name].append(ep["loss"])
            runs.append({"repeat": r, "variant": name, "train_seconds": round(ep["train_seconds"], 3),
                         "loss": ep["loss"], "load_avg_1min": load[0]})
            print(f"repeat {r}  {name:24s} {ep['train_seconds']:7.2f}s  loss {ep['loss']!r}  "
                  f"load {load[0]:.2f}", flush=True)

    median = {v: round(statistics.median(s), 3) for v, s in seconds.items()}
    payload = {
        "what_changed": (
            "training-step row gathers x[index] -> magnet_pyg.nn.gather_rows (F.embedding, whose "
            "CPU backward adds each row's contributions in index order) in MAGNET and the sampled "
            "losses; the trainers' training steps on the CPU run under torch.use_deterministic_algorithms "
            "(warn_only, no memory filling), which makes index_put_(accumulate=True) serial for the "
            "other models. Before: x[index] backward = index_put_ with parallel atomic float adds "
            "(nondeterministic with >1 thread)."),
        "model": args.model,
        "data": args.data,
        "model_options": {k: v for k, v in opts.items() if isinstance(v, (int, float, str, bool, list))},
        "batch_size": cfg["batch_size"],
        "threads": args.threads,
        "repeats": args.repeats,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_avg": list(os.getloadavg()),
        "epoch_seconds_median": median,
        "before_seconds": median["before"],
        "after_seconds": median["after"],
        "after_over_before": round(median["after"] / median["before"], 3),
        "epoch_seconds": {v: [round(s, 3) for s in seconds[v]] for v in VARIANTS},
        "distinct_epoch_losses": {v: len(set(losses[v])) for v in VARIANTS},
        "after_bit_identical": len(set(losses["after"])) == 1,
        "runs": runs,
    }
    path = write(args.name, payload)
    print(f"before {median['before']:.2f}s  mode only {median['deterministic_mode_only']:.2f}s  "
          f"after {median['after']:.2f}s  -> {path}")


if __name__ == "__main__":
    main()
