"""Multi-process data-parallel training (DDP, gloo on CPU): 2 spawned processes train with the
parameters in sync and the loss trajectory of 1 process at the same global batch and seed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from magnet_pyg.data import INDUCED, INDUCED_BY, modality_features, num_items, num_users, synthetic
from magnet_pyg.models import LightGCN
from magnet_pyg.models.magnet import MAGNET
from magnet_pyg.train import TrainConfig
from magnet_pyg.train.distributed import (LargeGraphTrainer, ScaleConfig, check_world_size,
                                          rank_device, shard)

HAS_SAMPLER = True
try:
    import torch_sparse  # noqa: F401
except ImportError:  # pragma: no cover
    HAS_SAMPLER = False

CFG = dict(epochs=2, batch_size=100, lr=5e-3, seed=7, progress=False, ks=(10, 20))


def _data(induced: bool = False):
    d = synthetic("tiny", seed=0)
    if induced:
        g = torch.Generator().manual_seed(1)
        users = torch.arange(num_users(d)).repeat_interleave(5)
        ei = torch.unique(torch.stack([users, torch.randint(0, num_items(d), (users.numel(),),
                                                            generator=g)]), dim=1)
        d[INDUCED].edge_index, d[INDUCED_BY].edge_index = ei, ei.flip(0)
    return d


def _lightgcn(d):
    torch.manual_seed(0)
    return LightGCN(num_users(d), num_items(d), 16, 2)


def _magnet(d):
    torch.manual_seed(0)
    dims = {m: int(x.size(1)) for m, x in modality_features(d).items()}
    return MAGNET(num_users(d), num_items(d), dims, embedding_dim=16, num_layers=2, view="dual")


RUNS = {  # name -> (model factory, needs induced edges, ScaleConfig kwargs, TrainConfig overrides)
    "full": (_lightgcn, False, {}, {}),
    "sampled": (_lightgcn, False, {"fanout": [-1, -1]}, {}),
    "magnet_sampled": (_magnet, True, {"fanout": [3, 3]}, {"epochs": 1}),
}


def _run(name: str):
    factory, induced, scale, over = RUNS[name]
    d = _data(induced)
    model = factory(d)
    t = LargeGraphTrainer(TrainConfig(**{**CFG, **over}), ScaleConfig(**scale))
    res = t.fit(model, d, name)
    return {"losses": t.step_losses, "fingerprints": t.fingerprints, "test": res["test"],
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def _worker(rank: int, world: int, init_file: str, out: str, names):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save({n: _run(n) for n in names}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    names = ["full"] + (["sampled", "magnet_sampled"] if HAS_SAMPLER else [])
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp), names), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", ["full", "sampled", "magnet_sampled"])
def test_two_processes_stay_in_sync(two_ranks, name):
    if name not in two_ranks[0]:
        pytest.skip("needs torch-sparse or pyg-lib")
    r0, r1 = two_ranks[0][name], two_ranks[1][name]
    assert r0["fingerprints"] == r1["fingerprints"]        # identical parameters after every epoch
    assert r0["losses"] == r1["losses"]                    # the all-reduced global loss
    assert r0["test"] == r1["test"]                        # metrics from rank 0, broadcast
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k


@pytest.mark.parametrize("name", ["full", "sampled"])
def test_two_processes_match_one_process(two_ranks, name):
    if name not in two_ranks[0]:
        pytest.skip("needs torch-sparse or pyg-lib")
    torch.set_num_threads(1)
    one = _run(name)
    two = two_ranks[0][name]
    assert len(one["losses"]) == len(two["losses"]) == 2 * 13
    assert torch.allclose(torch.tensor(one["losses"]), torch.tensor(two["losses"]), atol=1e-5)
    for a, b in zip(one["fingerprints"][-1], two["fingerprints"][-1]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a))


def test_shards_cover_the_batch_with_weights():
    u = torch.arange(7)
    parts = [shard(u, u, u, r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), u)
    assert sum(p[3] for p in parts) == pytest.approx(1.0)
    tiny = [shard(u[:2], u[:2], u[:2], r, 3) for r in range(3)]
    assert tiny[2][3] == 0.0 and tiny[2][0].numel() == 1     # empty shard: dummy with weight 0


def test_bad_world_sizes_and_devices(monkeypatch):
    with pytest.raises(ValueError, match="does not split evenly"):
        check_world_size(3, 1024)
    with pytest.raises(ValueError, match="smaller than the world size"):
        check_world_size(8, 4)
    with pytest.raises(ValueError, match="only 3 training samples"):
        check_world_size(4, 8, num_samples=3)
    check_world_size(4, 1024, 10_000)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            rank_device("cuda", 2)
    from magnet_pyg.cli import main
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["train", "--model", "lightgcn", "--data", "synthetic-tiny", "--batch-size", "100",
                 "--epochs", "1", "--no-progress"]) == 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--model", "lightgcn", "--data", "synthetic-tiny", "--epochs", "1",
                 "--no-progress"]) == 2      # torchrun variables missing: clear error, no hang


def test_torchrun_cli(tmp_path):
    """``torchrun --nproc_per_node 2 -m magnet_pyg train ...`` end to end (gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "magnet_pyg", "train", "--model", "lightgcn", "--data", "synthetic-tiny", "--epochs", "2",
           "--batch-size", "128", "--threads", "1", "--no-progress", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:  # take the launcher's workers down with it
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count("lightgcn on synthetic-tiny") == 1          # metrics printed once (rank 0)
    import json
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["config"]["world_size"] == 2 and "ndcg@20" in res["test"]
