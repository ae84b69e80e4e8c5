r"""Large-graph training: neighbour-sampled mini-batches, exact layer-wise evaluation and
multi-process data parallelism (:class:`torch.nn.parallel.DistributedDataParallel`).

:class:`LargeGraphTrainer` follows :class:`~magnet_pyg.train.Trainer` (same per-epoch seeding,
BPR batches from :class:`~magnet_pyg.train.LinkSampler`, Adam, validation early stopping,
atomic checkpoints, ``resume``, ``results.json``) and adds

* **sampled training** (``ScaleConfig.fanout``): each batch brings its sampled ``L``-hop
  subgraph (:mod:`magnet_pyg.train.sampled`), prepared by CPU DataLoader workers when
  ``sampling_workers > 0``; evaluation then uses the exact layer-wise inference
  (:mod:`magnet_pyg.evaluate.layerwise`), so no full-graph adjacency is ever built;
* **data parallelism** under ``torchrun`` (or any launcher that initialises
  :mod:`torch.distributed`): every rank draws the same global batch (same generator), takes
  its contiguous shard of it and computes the loss on that shard (full-graph propagation or
  its own sampled subgraph); DDP averages the gradients, and each rank's loss is scaled by
  ``world_size * n_rank / n_batch`` so that the update equals the one of a single process on
  the whole batch for losses that are means over samples (BPR, the L2 penalty). Metrics,
  checkpoints and ``results.json`` come from rank 0 only; the early-stopping decision and the
  final results are broadcast to the other ranks. Backends: ``gloo`` on CPU, ``nccl`` on GPU
  (one GPU per rank, ``cuda:LOCAL_RANK``).

Batch-level terms that are not means over samples (MAGNET's in-batch view contrast, the
coverage regulariser on the batch-mean routing and the entropy statistics of the schedule) are
computed on each rank's shard, as usual under DDP; the schedule state (a module buffer) follows
rank 0, since DDP broadcasts buffers at every forward.

Command line::

    torchrun --nproc_per_node 2 -m magnet_pyg train --model lightgcn --data synthetic --threads 1
    magnet-pyg train --model magnet --data synthetic-electronics --fanout 10 10 --sampling-workers 2
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from ..data.schema import num_items, split_edge_index
from ..evaluate import Evaluator
from .averaging import averaged
from .checkpoint import atomic_json_dump, warm_start
from .sampling import LinkSampler
from .run_folder import RunFolder, data_fingerprint
from .trainer import (RunState, TrainConfig, _epoch_seed, _metrics_only, check_device, check_finite,
                      check_splits, close_epoch, deterministic_cpu, environment)

log = logging.getLogger(__name__)

__all__ = ["ScaleConfig", "LargeGraphTrainer", "world_info", "env_world_size", "init_distributed",
           "check_world_size", "rank_device", "shard", "check_scale_options", "make_trainer"]


@dataclass
class ScaleConfig:
    """Large-graph options of :class:`LargeGraphTrainer`.

    Attributes:
        fanout: neighbours sampled per layer and relation (``-1`` = all); ``None`` trains on the
            full graph.
        sampling_workers: CPU DataLoader workers preparing the sampled subgraphs.
        rescale: unbiased rescaling of sampled edges (:func:`~magnet_pyg.train.sampled.view_subgraph`).
        chunk_size: nodes per chunk of the layer-wise inference.
        inference: ``"auto"`` (layer-wise when sampled, else the model's own full-graph
            inference), ``"full"`` or ``"layerwise"`` (LightGCN / MAGNET only).
        backend: ``"auto"`` (``nccl`` on CUDA, ``gloo`` on CPU), ``"gloo"`` or ``"nccl"``.
        find_unused_parameters: passed to DDP.
    """
    fanout: Optional[List[int]] = None
    sampling_workers: int = 0
    rescale: bool = True
    chunk_size: int = 65536
    inference: str = "auto"
    backend: str = "auto"
    find_unused_parameters: bool = False

    def validate(self, num_layers: Optional[int] = None) -> None:
        from .sampled import check_fanout
        if self.fanout is not None and num_layers is not None:
            check_fanout(self.fanout, num_layers)
        elif self.fanout is not None:
            check_fanout(self.fanout, len(self.fanout))
        if self.sampling_workers < 0:
            raise ValueError(f"sampling_workers must be >= 0, got {self.sampling_workers}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.inference not in ("auto", "full", "layerwise"):
            raise ValueError(f"inference must be 'auto', 'full' or 'layerwise', got '{self.inference}'")
        if self.backend not in ("auto", "gloo", "nccl"):
            raise ValueError(f"backend must be 'auto', 'gloo' or 'nccl', got '{self.backend}'")

    @property
    def sampled(self) -> bool:
        return self.fanout is not None


# ----------------------------------------------------------------------------- process group
def env_world_size() -> int:
    """``WORLD_SIZE`` set by ``torchrun`` (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got '{os.environ.get('WORLD_SIZE')}'")


def world_info() -> Tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _resolve_backend(backend: str, device: str) -> str:
    if backend == "auto":
        return "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl" and torch.device(device).type != "cuda":
        raise ValueError("the nccl backend needs --device cuda; use gloo on CPU")
    return backend


def rank_device(device: str, world_size: int) -> torch.device:
    """The device of this rank: ``device`` itself in one process, ``cuda:LOCAL_RANK`` for
    ``device="cuda"`` under a multi-process launch (one GPU per rank)."""
    dev = check_device(device)
    if dev.type != "cuda" or world_size <= 1:
        return dev
    if dev.index is not None:
        raise ValueError(f"--device {device} names one GPU, but {world_size} processes each need "
                         f"their own: use --device cuda (rank r takes cuda:LOCAL_RANK)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    n_gpu = torch.cuda.device_count()
    if local_world > n_gpu:
        raise ValueError(f"{local_world} processes on this machine but only {n_gpu} CUDA GPU(s): "
                         f"use --nproc_per_node {n_gpu} or fewer")
    return torch.device("cuda", local_rank)


def check_world_size(world_size: int, batch_size: int, num_samples: Optional[int] = None) -> None:
    """Clear errors for a world size that does not split the work sensibly: the global batch
    must divide into equal non-empty shards, and every rank must get training samples."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if world_size == 1:
        return
    if batch_size < world_size:
        raise ValueError(f"batch size {batch_size} is smaller than the world size {world_size}: "
                         f"some ranks would get no samples; use --batch-size >= {world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} does not split evenly over {world_size} processes "
                         f"(the global batch is sharded across ranks); use a multiple of {world_size}, "
                         f"e.g. --batch-size {batch_size - batch_size % world_size or world_size}")
    if num_samples is not None and num_samples < world_size:
        raise ValueError(f"only {num_samples} training samples for {world_size} processes")


def init_distributed(device: str = "cpu", backend: str = "auto", timeout_s: float = 7200.0
                     ) -> Tuple[int, int]:
    """Join the process group of a multi-process launch (``WORLD_SIZE > 1``, e.g. ``torchrun``)
    if it is not joined yet; returns ``(rank, world_size)``. The group is left at exit."""
    world = env_world_size()
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return world_info()
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed support")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ValueError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun "
                             f"--nproc_per_node N -m magnet_pyg train ...")
    backend = _resolve_backend(backend, device)
    dev = rank_device(device, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    import atexit
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return world_info()


def shard(users: Tensor, pos: Tensor, neg: Tensor, rank: int, world_size: int
          ) -> Tuple[Tensor, Tensor, Tensor, float]:
    """This rank's contiguous shard of a global batch and its weight ``n_rank / n_batch``.
    An empty shard (a last batch smaller than the world size) becomes the batch's first
    sample with weight 0, so that every rank still takes part in the gradient all-reduce."""
    n = users.numel()
    if world_size == 1:
        return users, pos, neg, 1.0
    idx = torch.tensor_split(torch.arange(n), world_size)[rank]
    if idx.numel() == 0:
        return users[:1], pos[:1], neg[:1], 0.0
    return users[idx], pos[idx], neg[idx], idx.numel() / n


# ----------------------------------------------------------------------------- trainer
class _Step(torch.nn.Module):
    """The training loss as a module forward, so that DDP sees it (gradient hooks, buffers)."""

    def __init__(self, model, sampled: bool):
        super().__init__()
        self.model = model
        self.sampled = sampled

    def forward(self, graph, batch):
        if self.sampled:
            from .sampled import sampled_loss
            return sampled_loss(self.model, graph, batch)
        users, pos, neg = batch
        return self.model.loss(graph, users, pos, neg)


class LargeGraphTrainer:
    """Trainer for large graphs and several processes (see the module docstring).

    Args:
        config: optimisation and protocol settings (as for :class:`~magnet_pyg.train.Trainer`;
            ``batch_size`` is the **global** batch, split across ranks).
        scale: sampling / inference / distributed options.
        extra_config: recorded under ``config`` in ``results.json``.
    """

    def __init__(self, config: TrainConfig, scale: Optional[ScaleConfig] = None,
                 extra_config: Optional[Dict[str, Any]] = None):
        config.validate()
        self.config = config
        self.scale = scale or ScaleConfig()
        self.scale.validate()
        self.extra_config = dict(extra_config or {})
        #: per-step global losses of the last :meth:`fit` (all epochs), for analyses and tests
        self.step_losses: List[float] = []
        #: per-epoch parameter fingerprints (float64 sums per tensor) after the last step
        self.fingerprints: List[List[float]] = []

    # ------------------------------------------------------------------ pieces
    def _inference_mode(self, model) -> str:
        mode = self.scale.inference
        if mode == "auto":
            return "layerwise" if self.scale.sampled else "full"
        return mode

    def _evaluate(self, model, graph, evaluator: Evaluator, split: str, lw_graph) -> Dict[str, float]:
        if lw_graph is not None:
            from ..evaluate.layerwise import layerwise_inference
            state = layerwise_inference(model, lw_graph, self.scale.chunk_size)
            return _metrics_only(evaluator.evaluate(model, None, split, state=state))
        return _metrics_only(evaluator.evaluate(model, graph, split))

    def _steps(self, graph, sampler: LinkSampler, gen: torch.Generator, rank: int, world: int,
               device: torch.device) -> Iterator[Tuple[Any, float]]:
        shards = [shard(u, p, n, rank, world) for u, p, n in sampler.epoch(gen)]
        weights = [s[3] for s in shards]
        if self.scale.sampled:
            batches = graph.sampler.iterate([s[:3] for s in shards])
            for batch, w in zip(batches, weights):
                yield batch.to(device), w
        else:
            for (u, p, n, w) in shards:
                yield (u.to(device), p.to(device), n.to(device)), w

    # ------------------------------------------------------------------ fit
    def fit(self, model, data: HeteroData, model_name: str = "model") -> Dict[str, Any]:
        check_splits(data)
        rank, _ = world_info()
        if rank != 0 or not self.config.out_dir:
            return self._fit(model, data, model_name)
        config = {**asdict(self.config), **self.extra_config, "scale": asdict(self.scale)}
        folder = RunFolder(self.config.out_dir, config, data_fingerprint(data), self.config.resume,
                           self.config.overwrite)
        with folder:  # rank 0 writes the run folder and holds its lock
            return self._fit(model, data, model_name)

    def _fit(self, model, data: HeteroData, model_name: str) -> Dict[str, Any]:
        cfg, sc = self.config, self.scale
        rank, world = world_info()
        device = rank_device(cfg.device, world)
        train = split_edge_index(data, "train")
        check_world_size(world, cfg.batch_size, int(train.size(1)))
        if sc.sampled:
            sc.validate(model.encoder.num_layers if hasattr(model, "encoder") else None)
        out = Path(cfg.out_dir) if cfg.out_dir else None
        lead = rank == 0
        torch.manual_seed(cfg.seed)
        model.to(device)
        if cfg.init_from and not cfg.resume:
            log.info("warm start from %s: %s", cfg.init_from, warm_start(model, cfg.init_from, device))
        lw_graph = None
        if sc.sampled:
            from .sampled import prepare_sampled
            graph = prepare_sampled(model, data, sc.fanout, sc.sampling_workers, sc.rescale)
        else:
            graph = model.prepare(data)
        if lead and self._inference_mode(model) == "layerwise":
            from ..evaluate.layerwise import LayerwiseGraph
            from .sampled import model_views
            lw_graph = graph.layerwise_graph() if sc.sampled else LayerwiseGraph(data, model_views(model))
        sampler = LinkSampler(train, num_items(data), cfg.batch_size)
        evaluator = Evaluator(data, cfg.ks, cfg.eval_batch_size, cfg.mask_valid_in_test) if lead else None
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        patience = cfg.patience or model.default_patience
        step = _Step(model, sc.sampled)
        runner = step
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            runner = DistributedDataParallel(step, device_ids=None,
                                             find_unused_parameters=sc.find_unused_parameters)

        # every rank keeps the average (the parameters agree after each step); rank 0 evaluates it
        run = RunState.open(cfg, model, optimizer, out, device, load_best=lead)
        average, start, history, best = run.average, run.start, run.history, run.best
        best_state, stopped = run.best_state, run.stopped

        self.step_losses, self.fingerprints = [], []
        epoch = start - 1
        for epoch in range(start, cfg.epochs):
            if stopped or cfg.finish:
                break
            gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
            torch.manual_seed(_epoch_seed(cfg.seed + 1, epoch))
            model.train()
            epoch_graph = graph if sc.sampled else model.on_epoch_start(graph, epoch, gen)
            t0 = time.perf_counter()
            local, sums, steps = [], {}, 0
            bar = tqdm(self._steps(epoch_graph, sampler, gen, rank, world, device), total=len(sampler),
                       desc=f"epoch {epoch}", leave=False, disable=not (cfg.progress and lead),
                       mininterval=1.0)
            with deterministic_cpu(device):
                for batch, w in bar:
                    loss, logs = runner(epoch_graph, batch)
                    check_finite(loss, epoch, steps)
                    scaled = loss * (world * w) if world > 1 else loss
                    optimizer.zero_grad(set_to_none=True)
                    scaled.backward()
                    optimizer.step()
                    if average is not None:
                        average.update(model)
                    local.append(loss.detach().float() * w)
                    steps += 1
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
            step_losses = torch.stack(local).cpu() if local else torch.zeros(0)
            if world > 1:
                step_losses = step_losses.to(device)
                dist.all_reduce(step_losses)
                step_losses = step_losses.cpu()
            epoch_losses = [float(v) for v in step_losses]
            self.step_losses.extend(epoch_losses)
            self.fingerprints.append([float(p.detach().double().sum()) for p in model.parameters()])
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - t0
            record: Dict[str, Any] = {}
            if lead:
                record = {"epoch": epoch, "loss": sum(epoch_losses) / max(steps, 1),
                          "train_seconds": train_seconds,
                          **{k: v / max(steps, 1) for k, v in sums.items()}, **model.epoch_logs()}
                if cfg.validates(epoch, getattr(model, "min_epochs", 0)):
                    t1 = time.perf_counter()
                    with averaged(average, model):
                        record["valid"] = self._evaluate(model, graph, evaluator, "valid", lw_graph)
                    record["eval_seconds"] = time.perf_counter() - t1
                if world > 1:
                    record["world_size"] = world
                best, new_best, stopped = close_epoch(cfg, model, optimizer, out, record, history, best,
                                                      patience, average)
                best_state = new_best if new_best is not None else best_state
            else:
                model.epoch_logs()  # keep per-epoch model state (e.g. MAGNET routing) in step
            if world > 1:
                flag = torch.tensor([int(stopped)], device=device)
                dist.broadcast(flag, src=0)
                stopped = bool(flag.item())

        results: Optional[Dict[str, Any]] = None
        if lead:
            if best_state is None:
                raise RuntimeError("no epoch was trained (epochs=0 or the checkpoint is already past it)")
            model.load_state_dict(best_state)
        if world > 1:  # every rank ends with the selected weights
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)
        if lead:
            t2 = time.perf_counter()
            test = self._evaluate(model, graph, evaluator, "test", lw_graph)
            test_seconds = time.perf_counter() - t2
            results = {
                "model": model_name,
                "dataset": getattr(data, "name", None),
                "config": {**asdict(cfg), **self.extra_config, "scale": asdict(sc),
                           "world_size": world, "patience_used": patience},
                "best_epoch": best["epoch"],
                "stopped_epoch": history[-1]["epoch"] if history else epoch,
                "early_stopped": bool(stopped),
                "finished_early": bool(cfg.finish),
                "valid": best["valid"],
                "test": test,
                "test_eval_seconds": test_seconds,
                "epochs": history,
                "environment": {**environment(), "world_size": world},
            }
            if out is not None:
                atomic_json_dump(results, out / "results.json")
        if world > 1:
            box = [results]
            dist.broadcast_object_list(box, src=0)
            results = box[0]
        return results


# ----------------------------------------------------------------------------- CLI glue
def check_scale_options(args) -> Optional[ScaleConfig]:
    """Validate the large-graph options of ``magnet-pyg train`` before anything heavy and join
    the process group of a ``torchrun`` launch. Returns the :class:`ScaleConfig`, or ``None``
    when neither sampling nor several processes are asked for (the plain trainer is used)."""
    fanout = getattr(args, "fanout", None)
    workers = getattr(args, "sampling_workers", 0) or 0
    chunk = getattr(args, "chunk_size", 65536)
    backend = getattr(args, "dist_backend", "auto") or "auto"
    world = env_world_size()
    check_device(args.device)
    if fanout is not None:
        from .sampled import SAMPLED_MODELS, check_fanout, check_sampling_backend
        if args.model not in SAMPLED_MODELS:
            raise ValueError(f"--fanout (sampled training) supports --model {' / '.join(SAMPLED_MODELS)}, "
                             f"not '{args.model}'")
        check_fanout(fanout, getattr(args, "layers", None) or len(fanout))
        check_sampling_backend()
    scale = ScaleConfig(fanout=list(fanout) if fanout is not None else None, sampling_workers=workers,
                        chunk_size=chunk, backend=backend)
    scale.validate()
    if world > 1:
        default_batch = 1024 if args.model == "magnet" else 2048
        check_world_size(world, args.batch_size or default_batch)
        _resolve_backend(backend, args.device)
        rank_device(args.device, world)
        init_distributed(args.device, backend)
    if fanout is None and world <= 1:
        return None
    return scale


def make_trainer(cfg: TrainConfig, extra: Dict[str, Any], scale: Optional[ScaleConfig]):
    """The plain :class:`~magnet_pyg.train.Trainer`, or a :class:`LargeGraphTrainer` when
    ``scale`` is given (sampling or several processes)."""
    if scale is None:
        from .trainer import Trainer
        return Trainer(cfg, extra)
    return LargeGraphTrainer(cfg, scale, extra)
