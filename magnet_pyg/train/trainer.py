"""One trainer for every model and every way of feeding it: BPR mini-batches, Adam, validation
early stopping, resume, weight averaging, on the full graph, on neighbour-sampled subgraphs
and across processes.

The trainer only talks to the :class:`~magnet_pyg.nn.protocol.Recommender` protocol, and it
has **one epoch loop**: where the batches come from is a :class:`~magnet_pyg.train.sources.BatchSource`
(full graph, neighbour-sampled, sharded across ranks), chosen by
:class:`~magnet_pyg.train.sources.ScaleConfig`. Early stopping, logging, checkpoints, resume,
the weight average, ``eval_every``, ``finish`` and deterministic CPU kernels are therefore the
same for all of them.

Every epoch ``e`` draws its shuffling and negatives from a generator seeded with ``(seed, e)``
and reseeds torch's global generator (dropout) the same way, and the last checkpoint (model,
optimiser, early-stopping state, history) is written atomically at the end of every epoch. A
run killed at any point (SIGKILL included) and restarted with ``resume=True`` therefore
continues from its last finished epoch and ends with exactly the metrics of an uninterrupted
run on the CPU.

On the CPU the training steps run under :func:`deterministic_cpu`, so that two runs with the
same seed and thread count give bit-identical losses and metrics (PyTorch's multi-threaded
CPU kernels otherwise accumulate some gradients with atomic additions in a varying order).

Under several processes (``torchrun``, or any launcher after
:func:`~magnet_pyg.train.process_group.init_distributed`), every rank draws the same global
batch (same generator), takes its contiguous shard of it and computes the loss on that shard;
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients, and each rank's
loss is scaled by ``world_size * n_rank / n_batch`` so that the update equals the one of a
single process on the whole batch for losses that are means over samples. Metrics,
checkpoints and ``results.json`` come from rank 0 only; the early-stopping decision and the
final results are broadcast to the other ranks.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from ..data.schema import num_items, split_edge_index
from ..evaluate import Evaluator
from ..evaluate.layerwise import LayerwiseGraph, layerwise_inference
from .averaging import WeightAverage, averaged
from .checkpoint import atomic_json_dump, atomic_torch_save, load_checkpoint, warm_start
from .device import check_device
from .process_group import check_world_size, rank_device, world_info
from .run_folder import RunFolder, data_fingerprint
from .sampling import LinkSampler
from .sources import BatchSource, ScaleConfig, ShardedSource, make_source

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation and protocol settings shared by all models.

    ``patience=None`` uses the model's own ``default_patience``; ``weight_decay`` is
    Adam's L2 penalty on all parameters (MAGNET's :math:`\\lambda`, Eq. 32).
    ``ema_decay > 0`` evaluates, selects and tests an exponential moving average of the
    parameters (:class:`~magnet_pyg.train.averaging.WeightAverage`) instead of the last
    iterate; ``0`` (default) is off. ``eval_every = n`` validates after every ``n``-th epoch
    and after the last one (MMRec's ``eval_step``); early stopping then counts validations
    without improvement, so ``patience`` validations span ``patience * n`` epochs.
    ``init_from`` (a run folder or checkpoint) warm-starts a fresh run from every tensor of
    that checkpoint whose name and shape match (:func:`~magnet_pyg.train.checkpoint.warm_start`),
    for example MAGNET's backbone from a LightGCN run. ``overwrite`` moves a run already in
    ``out_dir`` aside instead of refusing the folder (:class:`~magnet_pyg.train.run_folder.RunFolder`).
    ``finish`` (with ``resume``) ends a run now: no further epoch, the selected checkpoint is
    tested and ``results.json`` written, with ``"finished_early": true``.
    """
    epochs: int = 200
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: Optional[int] = None
    select_metric: str = "ndcg@20"
    ks: Tuple[int, ...] = (10, 20, 50)
    eval_batch_size: int = 4096
    mask_valid_in_test: bool = False
    seed: int = 0
    device: str = "cpu"
    out_dir: Optional[str] = None
    resume: bool = False
    progress: bool = True
    ema_decay: float = 0.0
    eval_every: int = 1
    init_from: Optional[str] = None
    overwrite: bool = False
    finish: bool = False

    def validates(self, epoch: int, min_epochs: int = 0) -> bool:
        """Whether epoch ``epoch`` (0-based) ends with a validation (see ``eval_every``);
        the last epoch and the last epoch of a model's warm-up (``min_epochs``) always do."""
        return ((epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs
                or epoch + 1 == min_epochs)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "ema_decay"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ValueError(f"metric cut-offs ks must be positive integers, got {list(self.ks)}")
        if self.finish and not self.resume:
            raise ValueError("finish ends a run being resumed: it needs resume")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        metric, _, k = self.select_metric.partition("@")
        if metric not in ("recall", "ndcg", "precision", "hit") or not k.isdigit() or int(k) not in self.ks:
            raise ValueError(f"select_metric '{self.select_metric}' must be <metric>@<k> with k in {self.ks}")
        if self.resume and not self.out_dir:
            raise ValueError("resume=True needs out_dir (where the checkpoint is)")
        check_device(self.device)


@contextmanager
def deterministic_cpu(device: torch.device) -> Iterator[None]:
    """Run the enclosed training steps with deterministic CPU kernels.

    On a CPU ``device`` this enables :func:`torch.use_deterministic_algorithms` (``warn_only``,
    without filling uninitialised memory) for the duration of the block and restores the
    previous settings afterwards; on any other device, or when deterministic algorithms are
    already enabled, it does nothing. The one CPU kernel it changes in this package's models
    is the backward of advanced indexing ``x[index]`` (``index_put_`` with
    ``accumulate=True``): with more than one thread it adds the gradient rows of repeated
    indices with atomic float additions in a varying order, in deterministic mode serially
    in index order (the single-threaded result). MAGNET gathers its batch rows with
    :func:`~magnet_pyg.nn.gather_rows`, deterministic without this switch.
    """
    if device.type != "cpu" or torch.are_deterministic_algorithms_enabled():
        yield
        return
    from torch.utils import deterministic
    fill = deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)
        deterministic.fill_uninitialized_memory = fill


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2 ** 63)


def _metrics_only(res: Dict[str, Any]) -> Dict[str, float]:
    return {k: v for k, v in res.items() if "@" in k}


@dataclass
class RunState:
    """Where a run starts: fresh, or resumed from ``out/last.pt`` and ``out/best.pt``."""
    start: int
    history: List[Dict[str, Any]]
    best: Dict[str, Any]
    stopped: bool
    best_state: Optional[Dict[str, Tensor]]
    average: Optional[WeightAverage]

    @classmethod
    def open(cls, cfg: TrainConfig, model, optimizer, out: Optional[Path], device: torch.device,
             load_best: bool = True) -> "RunState":
        """Create the weight average (``cfg.ema_decay > 0``) and, with ``cfg.resume`` and a
        ``last.pt`` under ``out``, load the model, optimiser, average and early-stopping state
        from it (``best.pt`` too unless ``load_best=False``)."""
        average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        run = cls(0, [], {"value": float("-inf"), "epoch": -1, "valid": {}, "bad_epochs": 0}, False,
                  None, average)
        if not (cfg.resume and out is not None and (out / "last.pt").exists()):
            return run
        ck = load_checkpoint(out / "last.pt", map_location=device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if average is not None:
            if "average" not in ck:
                raise ValueError(f"{out / 'last.pt'} holds no weight average: it was trained "
                                 f"without ema_decay, resume it without one")
            average.load_state_dict(ck["average"])
        run.start, run.history, run.best, run.stopped = ck["epoch"] + 1, ck["history"], ck["best"], ck["stopped"]
        if load_best:
            run.best_state = load_checkpoint(out / "best.pt", map_location=device)["model"]
        log.info("resumed from %s at epoch %d", out / "last.pt", run.start)
        return run


def close_epoch(cfg: TrainConfig, model, optimizer, out: Optional[Path], record: Dict[str, Any],
                history: List[Dict[str, Any]], best: Dict[str, Any], patience: int,
                average: Optional[WeightAverage] = None):
    """End of a training epoch: append
    ``record`` (with its ``valid`` metrics) to ``history``, update the early-stopping state,
    log, and write ``best.pt`` / ``last.pt`` atomically under ``out``.

    With a weight ``average``, the selected state is the averaged one (what ``valid`` was
    measured on), and ``last.pt`` keeps the trained parameters and the average for resuming.

    Returns:
        ``(best, best_state, stopped)``; ``best_state`` is a copy of the model's state dict when
        this epoch is the new best, else ``None``.
    """
    history.append(record)
    epoch, valid = record["epoch"], record.get("valid")
    best_state = None
    if valid is None:  # an epoch without validation (eval_every > 1): checkpoint only
        value = None
    elif valid[cfg.select_metric] > best["value"]:
        value = valid[cfg.select_metric]
        best = {"value": value, "epoch": epoch, "valid": valid, "bad_epochs": 0}
        with averaged(average, model):
            best_state = copy.deepcopy(model.state_dict())
        if out is not None:
            atomic_torch_save({"model": best_state, "epoch": epoch}, out / "best.pt")
    else:
        value = valid[cfg.select_metric]
        best["bad_epochs"] += 1
    # a model may ask for a minimum number of epochs (MAGNET's behaviour warm-up); the
    # patience then counts from the end of it
    stopped = best["bad_epochs"] >= patience and epoch + 1 >= getattr(model, "min_epochs", 0) + patience
    msg = f"epoch {epoch:3d}  loss {record['loss']:.4f}  train {record['train_seconds']:.2f}s  "
    if value is not None:
        msg += (f"eval {record['eval_seconds']:.2f}s  valid {cfg.select_metric} {value:.4f}  "
                f"(best {best['value']:.4f} @ {best['epoch']})")
    if cfg.progress:
        tqdm.write(msg)
    log.info(msg)
    if out is not None:
        last = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": epoch, "history": history, "best": best, "stopped": stopped}
        if average is not None:
            last["average"] = average.state_dict()
        atomic_torch_save(last, out / "last.pt")
    return best, best_state, stopped


class _Step(torch.nn.Module):
    """The training loss of a batch as a module forward, so that DDP sees it (gradient hooks,
    buffers)."""

    def __init__(self, model, source: BatchSource):
        super().__init__()
        self.model = model
        self.source = source

    def forward(self, graph, batch):
        return self.source.loss(self.model, graph, batch)


class _Evaluation:
    """How the lead rank evaluates: the model's full-graph inference, or the exact layer-wise
    inference in node chunks (:mod:`magnet_pyg.evaluate.layerwise`)."""

    def __init__(self, evaluator: Evaluator, graph: Any = None, layerwise: Optional[LayerwiseGraph] = None,
                 chunk_size: int = 65536):
        self.evaluator, self.graph, self.layerwise, self.chunk_size = evaluator, graph, layerwise, chunk_size

    def __call__(self, model, split: str) -> Dict[str, float]:
        if self.layerwise is not None:
            state = layerwise_inference(model, self.layerwise, self.chunk_size)
            return _metrics_only(self.evaluator.evaluate(model, None, split, state=state))
        return _metrics_only(self.evaluator.evaluate(model, self.graph, split))


class Trainer:
    """Train and evaluate a recommender on a dataset (see the module docstring).

    Args:
        config: optimisation and protocol settings (``batch_size`` is the **global** batch,
            split across ranks under several processes).
        extra_config: recorded verbatim under ``config`` in ``results.json`` (model options).
        scale: neighbour sampling, evaluation inference and process-group options
            (recorded under ``config.scale``); ``None`` trains on the full graph.
        source: the batch source (default: from ``scale``,
            :func:`~magnet_pyg.train.sources.make_source`); wrapped in a
            :class:`~magnet_pyg.train.sources.ShardedSource` under several processes.
    """

    def __init__(self, config: TrainConfig, extra_config: Optional[Dict[str, Any]] = None,
                 scale: Optional[ScaleConfig] = None, source: Optional[BatchSource] = None):
        config.validate()
        self.config = config
        self.extra_config = dict(extra_config or {})
        self.scale = scale
        self.source = source
        #: per-step global losses of the last :meth:`fit` (all epochs), for analyses and tests
        self.step_losses: List[float] = []
        #: per-epoch parameter fingerprints (float64 sums per tensor) after the last step
        self.fingerprints: List[List[float]] = []

    def fit(self, model, data: HeteroData, model_name: str = "model") -> Dict[str, Any]:
        check_splits(data)
        cfg = self.config
        rank, _ = world_info()
        if rank != 0 or not cfg.out_dir:
            return self._fit(model, data, model_name)
        folder = RunFolder(cfg.out_dir, self.run_config(), data_fingerprint(data), cfg.resume, cfg.overwrite)
        with folder:  # rank 0 writes the run folder and holds its lock
            if folder.moved_to is not None:
                log.warning("the run that was in %s is now in %s", cfg.out_dir, folder.moved_to)
            return self._fit(model, data, model_name)

    def run_config(self) -> Dict[str, Any]:
        """Everything that defines the run (recorded in ``config.json`` and ``results.json``)."""
        out = {**asdict(self.config), **self.extra_config}
        if self.scale is not None:
            out["scale"] = asdict(self.scale)
        return out

    def _evaluation(self, model, data: HeteroData, graph: Any, source: BatchSource,
                    views: Optional[Tuple[str, ...]]) -> _Evaluation:
        cfg, scale = self.config, self._scale()
        evaluator = Evaluator(data, cfg.ks, cfg.eval_batch_size, cfg.mask_valid_in_test)
        if scale.inference_mode(model) == "layerwise":
            lw = graph.layerwise_graph() if source.sampled else LayerwiseGraph(data, views)
            return _Evaluation(evaluator, layerwise=lw, chunk_size=scale.chunk_size)
        # full-graph inference; sampled training has no full graph yet: build the model's once
        return _Evaluation(evaluator, graph=model.prepare(data) if source.sampled else graph)

    def _scale(self) -> ScaleConfig:
        return self.scale or getattr(self.source, "scale", None) or ScaleConfig()

    def _fit(self, model, data: HeteroData, model_name: str) -> Dict[str, Any]:
        cfg, scale = self.config, self._scale()
        rank, world = world_info()
        lead = rank == 0
        device = rank_device(cfg.device, world)
        train = split_edge_index(data, "train")
        check_world_size(world, cfg.batch_size, int(train.size(1)))
        source = self.source or make_source(self.scale)
        if world > 1:
            source = ShardedSource(source, rank, world)
        source.check(model)  # a model this source cannot train fails here, before anything heavy
        views = None  # of the layer-wise graph of a full-graph run
        if lead and scale.inference_mode(model) == "layerwise" and not source.sampled:
            views = model.sampling_spec().views
        out = Path(cfg.out_dir) if cfg.out_dir else None
        torch.manual_seed(cfg.seed)
        model.to(device)
        if cfg.init_from and not cfg.resume:
            log.info("warm start from %s: %s", cfg.init_from, warm_start(model, cfg.init_from, device))
        graph = source.prepare(model, data)
        evaluate = self._evaluation(model, data, graph, source, views) if lead else None
        sampler = LinkSampler(train, num_items(data), cfg.batch_size)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        patience = cfg.patience or model.default_patience
        min_epochs = getattr(model, "min_epochs", 0)
        runner = step = _Step(model, source)
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            runner = DistributedDataParallel(step, device_ids=None,
                                             find_unused_parameters=scale.find_unused_parameters)

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
            epoch_graph = source.epoch_graph(model, graph, epoch, gen)
            t0 = time.perf_counter()
            local, sums, steps = [], {}, 0
            bar = tqdm(source.batches(epoch_graph, sampler.epoch(gen), device), total=len(sampler),
                       desc=f"epoch {epoch}", leave=False, disable=not (cfg.progress and lead),
                       mininterval=1.0)
            with deterministic_cpu(device):
                for batch, weight in bar:
                    loss, logs = runner(epoch_graph, batch)
                    check_finite(loss, epoch, steps)
                    scaled = loss * (world * weight) if world > 1 else loss
                    optimizer.zero_grad(set_to_none=True)
                    scaled.backward()
                    optimizer.step()
                    if average is not None:
                        average.update(model)
                    local.append(loss.detach().float() * weight)
                    steps += 1
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
            step_losses = torch.stack(local).cpu() if local else torch.zeros(0)
            if world > 1:  # the global loss of every step: the sum of the weighted shard losses
                step_losses = step_losses.to(device)
                dist.all_reduce(step_losses)
                step_losses = step_losses.cpu()
            epoch_losses = [float(v) for v in step_losses]
            self.step_losses.extend(epoch_losses)
            self.fingerprints.append([float(p.detach().double().sum()) for p in model.parameters()])
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds = time.perf_counter() - t0
            if lead:
                record: Dict[str, Any] = {"epoch": epoch, "loss": sum(epoch_losses) / max(steps, 1),
                                          "train_seconds": train_seconds,
                                          **{k: v / max(steps, 1) for k, v in sums.items()},
                                          **model.epoch_logs()}
                if cfg.validates(epoch, min_epochs):
                    t1 = time.perf_counter()
                    with averaged(average, model):
                        record["valid"] = evaluate(model, "valid")
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
            test = evaluate(model, "test")
            results = self._results(model_name, data, patience, world, best, history, epoch, stopped,
                                    test, time.perf_counter() - t2)
            if out is not None:
                atomic_json_dump(results, out / "results.json")
        if world > 1:
            box = [results]
            dist.broadcast_object_list(box, src=0)
            results = box[0]
        return results

    def _results(self, model_name: str, data: HeteroData, patience: int, world: int, best: Dict[str, Any],
                 history: List[Dict[str, Any]], epoch: int, stopped: bool, test: Dict[str, float],
                 test_seconds: float) -> Dict[str, Any]:
        """The content of ``results.json``."""
        scaled = self.scale is not None or world > 1
        world_part = {"world_size": world} if scaled else {}
        return {
            "model": model_name,
            "dataset": getattr(data, "name", None),
            "config": {**self.run_config(), **world_part, "patience_used": patience},
            "best_epoch": best["epoch"],
            "stopped_epoch": history[-1]["epoch"] if history else epoch,
            "early_stopped": bool(stopped),
            "finished_early": bool(self.config.finish),
            "valid": best["valid"],
            "test": test,
            "test_eval_seconds": test_seconds,
            "epochs": history,
            "environment": {**environment(), **world_part},
        }


def check_splits(data: HeteroData) -> None:
    """Refuse a dataset whose training, validation or test split is empty (with the counts)."""
    counts = {split: int(split_edge_index(data, split).size(1)) for split in ("train", "valid", "test")}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty "
                         f"(train/valid/test pairs: {counts['train']}/{counts['valid']}/{counts['test']}); "
                         f"training needs pairs in all three (x_label 0/1/2 in an MMRec .inter file)")


def check_finite(loss: Tensor, epoch: int, step: int) -> None:
    """Stop a run whose loss is NaN or infinite, naming where (instead of training on)."""
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(f"the training loss is {float(loss.detach())} at epoch {epoch}, step {step}: "
                                 f"lower the learning rate or check the input features")


def environment() -> Dict[str, Any]:
    import os
    import platform

    import torch_geometric
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torch_geometric": torch_geometric.__version__, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "machine": platform.machine()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env
