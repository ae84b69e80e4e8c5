"""Bit-for-bit reproducible CPU training at 2 threads, and bit-exact resumption after SIGKILL.

With more than one thread, the backward pass of ``x[index]`` adds the gradient rows of
repeated indices with atomic float additions in a varying order; MAGNET gathers its batch
rows with :func:`magnet_pyg.nn.gather_rows` and the trainer runs its steps under
:func:`magnet_pyg.train.trainer.deterministic_cpu`, so the same seed and thread count give the
same bits.
"""
import copy
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import pytest
import torch

from magnet_pyg.cli import main
from magnet_pyg.config import build_run, load_run_config
from magnet_pyg.data import num_items, split_edge_index
from magnet_pyg.nn import gather_rows
from magnet_pyg.train import LinkSampler, TrainConfig, Trainer
from magnet_pyg.train.trainer import deterministic_cpu

THREADS = 2
ALL_MODELS = ("bpr", "lightgcn", "magnet", "freedom", "anchorrec", "crane", "recgoat")


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def _build(model: str, data: str = "synthetic-tiny"):
    """Model, (augmented) data and train configuration exactly as ``magnet-pyg train`` builds them."""
    run = load_run_config(model=model, overrides=[f"data={data}"])
    torch.manual_seed(0)
    model, data, run = build_run(run, run.data.load())
    return model, data, run.train


def _grads(model, graph, users, pos, neg):
    model.zero_grad(set_to_none=True)
    if hasattr(model, "schedule"):
        model.schedule.reset()
    loss, _ = model.loss(graph, users, pos, neg)
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------- kernels
def test_gather_rows_equals_indexing_with_a_reproducible_gradient(two_threads):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(300, 2, 64, generator=g)
    idx = torch.randint(0, 40, (1024,), generator=g)  # 131k gradient entries, many repeats
    up = torch.randn(1024, 2, 64, generator=g)
    grads = []
    for _ in range(10):
        x = x0.clone().requires_grad_()
        out = gather_rows(x, idx)
        assert torch.equal(out, x0[idx])
        out.backward(up)
        grads.append(x.grad)
    assert all(torch.equal(grads[0], gr) for gr in grads[1:])
    torch.set_num_threads(1)  # the single-threaded x[index] gradient, bit for bit
    x = x0.clone().requires_grad_()
    x[idx].backward(up)
    assert torch.equal(x.grad, grads[0])
    assert torch.equal(gather_rows(x0, idx.view(32, 32)), x0[idx.view(32, 32)])  # no grad: x[index]


def test_deterministic_cpu_serialises_index_backward_and_restores_the_settings(two_threads):
    from torch.utils import deterministic
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(50, 64, generator=g)
    idx = torch.randint(0, 50, (2048,), generator=g)
    up = torch.randn(2048, 64, generator=g)
    grads, fill = [], deterministic.fill_uninitialized_memory
    with deterministic_cpu(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert deterministic.fill_uninitialized_memory is False
        for _ in range(10):
            x = x0.clone().requires_grad_()
            x[idx].backward(up)
            grads.append(x.grad)
    assert all(torch.equal(grads[0], gr) for gr in grads[1:])
    assert not torch.are_deterministic_algorithms_enabled()
    assert deterministic.fill_uninitialized_memory is fill
    with deterministic_cpu(torch.device("cuda")):  # other devices: untouched
        assert not torch.are_deterministic_algorithms_enabled()


def test_magnet_gradient_is_bit_identical_at_two_threads(two_threads):
    """One MAGNET step on the default preset (one batch holds all training pairs): the
    gradient of every parameter is the same bits at every call (with plain ``x[index]``
    gathers the embedding gradient differs at almost every call)."""
    model, data, train = _build("magnet")
    graph = model.prepare(data)
    sampler = LinkSampler(split_edge_index(data, "train"), num_items(data), train.batch_size)
    users, pos, neg = next(iter(sampler.epoch(torch.Generator().manual_seed(0))))
    model.train()
    ref = _grads(model, graph, users, pos, neg)
    for _ in range(10):
        assert _same(ref, _grads(model, graph, users, pos, neg))


def _records(res):
    """Per-epoch records without wall-clock times."""
    return [{k: v for k, v in e.items() if not k.endswith("_seconds")} for e in res["epochs"]]


def test_magnet_trained_twice_is_bit_identical(two_threads):
    """MAGNET-DV, default preset, trained twice: the same bits in every epoch's losses,
    routing statistics and validation metrics, and in the test metrics. Batches of 512
    (three steps an epoch) leave the gradients large enough for PyTorch's threaded kernels."""
    model, data, train = _build("magnet")
    runs = []
    for _ in range(2):
        cfg = TrainConfig(epochs=4, batch_size=512, lr=train.lr,
                          weight_decay=train.weight_decay, seed=5, progress=False, patience=50)
        runs.append(Trainer(cfg).fit(copy.deepcopy(model), data, "magnet"))
    a, b = runs
    assert _records(a) == _records(b)
    assert [e["loss"] for e in a["epochs"]] == [e["loss"] for e in b["epochs"]]
    assert [e["valid"] for e in a["epochs"]] == [e["valid"] for e in b["epochs"]]
    assert a["test"] == b["test"]


# ----------------------------------------------------------------------------- SIGKILL
def _argv(model: str, out: Path):
    return ["train", "--model", model, "--data", "synthetic-tiny", "--epochs", "6", "--batch-size", "512",
            "--seed", "5", "--threads", str(THREADS), "--patience", "50", "--graph-cache", "",
            "--no-progress", "--out", str(out)]


def _cli(argv, log: str) -> None:
    """Child process: ``magnet-pyg <argv>`` with its output in ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(main(argv))


@pytest.fixture(scope="module")
def cli_context():
    """Processes forked from a server that has already imported the package, so that the
    28 command-line runs below do not each pay the imports (several seconds). Their OpenMP
    threads sleep while they wait (two runs share the CPU: spinning threads would make them
    several times slower); this changes no result."""
    from multiprocessing import forkserver
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["magnet_pyg.cli"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")  # read when the server loads the OpenMP runtime
        forkserver.ensure_running()
    return ctx


def _stat(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _run(ctx, argv, log: Path, out: Path, rng: Optional[random.Random] = None,
         max_delay: float = 0.0) -> bool:
    """Run the command line in a child process. With ``rng``: once the child has written a
    new ``last.pt``, wait a random delay up to ``max_delay`` and SIGKILL it. True when it was
    killed before finishing, False when it finished (with exit code 0)."""
    before = _stat(out / "last.pt")
    proc = ctx.Process(target=_cli, args=(argv, str(log)))
    proc.start()
    deadline = time.time() + 600
    try:
        if rng is not None:
            while proc.exitcode is None and _stat(out / "last.pt") in (None, before):
                assert time.time() < deadline, f"no new checkpoint after 600 s: {log.read_text()[-2000:]}"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, max_delay))
            if proc.exitcode is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.join()
                return not (out / "results.json").exists()
        proc.join(max(deadline - time.time(), 1.0))
        assert proc.exitcode == 0, log.read_text()[-3000:]
        return False
    finally:
        if proc.exitcode is None:  # a failed check: leave no process behind
            proc.kill()
            proc.join()


def _reference(ctx, model: str, root: Path):
    out = root / f"{model}-reference"
    _run(ctx, _argv(model, out), root / f"{model}-reference.log", out)
    return json.loads((out / "results.json").read_text())


def _killed_twice(ctx, model: str, root: Path, seed: int):
    """A run killed with SIGKILL at two random points, each after a new checkpoint, and
    resumed to the end."""
    rng, max_delay = random.Random(seed), 0.3
    for attempt in range(6):
        out, log = root / f"{model}-{attempt}", root / f"{model}-{attempt}.log"
        argv = _argv(model, out)
        if (_run(ctx, argv, log, out, rng, max_delay)
                and _run(ctx, argv + ["--resume"], log, out, rng, max_delay)):
            _run(ctx, argv + ["--resume"], log, out)
            return json.loads((out / "results.json").read_text())
        max_delay /= 3  # it finished before the kill: kill sooner
    raise AssertionError(f"{model}: the run always finished before it could be killed twice")


@pytest.mark.slow
def test_every_model_resumes_bit_exactly_after_two_sigkills(tmp_path, cli_context):
    """Each model: a run killed with SIGKILL at two random points (each after a new
    checkpoint) and resumed ends with the results of an uninterrupted run, bit for bit."""
    seed = random.SystemRandom().randrange(2 ** 32)
    reference, killed = {}, {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # two runs at a time, a model's two together
        for i, m in enumerate(ALL_MODELS):
            reference[m] = pool.submit(_reference, cli_context, m, tmp_path)
            killed[m] = pool.submit(_killed_twice, cli_context, m, tmp_path, seed + i)
        reference = {m: f.result() for m, f in reference.items()}
        killed = {m: f.result() for m, f in killed.items()}
    differ = [m for m in ALL_MODELS
              if (killed[m]["valid"], killed[m]["test"], killed[m]["best_epoch"], _records(killed[m]))
              != (reference[m]["valid"], reference[m]["test"], reference[m]["best_epoch"],
                  _records(reference[m]))]
    assert not differ, f"resumed runs differ from uninterrupted ones: {differ} (kill seed {seed})"
    for m in ALL_MODELS:
        assert len(killed[m]["epochs"]) == 6 and killed[m]["environment"]["torch_threads"] == THREADS
