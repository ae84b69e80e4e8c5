"""The model protocol is all the trainers need: a model defined here, implementing only
:class:`magnet_pyg.nn.protocol.Recommender`, trains on the full graph, on neighbour-sampled
subgraphs and in 2 processes (DDP, gloo) through the unchanged trainer; every package model
either trains sampled or says why not, before anything heavy starts."""
import os
from typing import Optional, Tuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from magnet_pyg import models
from magnet_pyg.data import num_items, num_users, split_edge_index, synthetic
from magnet_pyg.nn import (Recommender, SampledTrainingUnsupported, SamplingSpec, batch_embeddings,
                           bipartite_normalized_adjacency, bpr_loss, dot_score, propagate_batch,
                           sparse_mm, triple_rows)
from magnet_pyg.train import ScaleConfig, TrainConfig, Trainer

from conftest import HAS_SAMPLER, modality_dims, needs_sampler

pytestmark = pytest.mark.usefixtures("one_thread")


class BiasedGCN(Recommender):
    """One LightGCN layer (layer mean) over the training graph, plus a learned item bias:
    :math:`s_{ui} = \\mathbf z_u^\\top \\mathbf z_i + b_i`. Implements only the protocol."""

    default_patience = 3

    def __init__(self, num_users: int, num_items: int, dim: int = 8):
        super().__init__()
        self.num_users = num_users
        self.emb = torch.nn.Embedding(num_users + num_items, dim)
        self.bias = torch.nn.Parameter(torch.zeros(num_items))
        torch.nn.init.normal_(self.emb.weight, std=0.1)
        self.prepared = 0

    # full graph
    def prepare(self, data):
        self.prepared += 1
        adj = bipartite_normalized_adjacency(split_edge_index(data, "train"), num_users(data), num_items(data))
        return adj.to(self.emb.weight.device)

    def _z(self, adj) -> Tuple[Tensor, Tensor]:
        x = self.emb.weight
        z = 0.5 * (x + sparse_mm(adj, x, symmetric=True))
        return z[:self.num_users], z[self.num_users:]

    def loss(self, adj, users, pos, neg):
        zu, zi = self._z(adj)
        u = zu[users]
        rec = bpr_loss((u * zi[pos]).sum(-1) + self.bias[pos], (u * zi[neg]).sum(-1) + self.bias[neg])
        return rec, {"bpr": rec.detach()}

    @torch.no_grad()
    def inference(self, adj):
        return self._z(adj)

    def score(self, state, users: Tensor, items: Optional[Tensor] = None) -> Tensor:
        bias = self.bias if items is None else self.bias[items]
        return dot_score(state, users, items) + bias

    # sampled subgraphs
    def sampling_spec(self) -> SamplingSpec:
        return SamplingSpec(("ui",), 1)

    def sampled_loss(self, graph, batch):
        x0 = batch_embeddings(self.emb.weight, self.num_users, batch)
        u, p, n = triple_rows(propagate_batch(x0, batch, "ui", 1, graph.rescale), batch)
        rec = bpr_loss((u * p).sum(-1) + self.bias[batch.pos], (u * n).sum(-1) + self.bias[batch.neg])
        return rec, {"bpr": rec.detach()}


CFG = dict(epochs=2, batch_size=100, lr=1e-2, seed=5, progress=False, ks=(10, 20))


def _fit(scale: Optional[ScaleConfig] = None, **over):
    d = synthetic("tiny", seed=0)
    torch.manual_seed(0)
    model = BiasedGCN(num_users(d), num_items(d))
    trainer = Trainer(TrainConfig(**{**CFG, **over}), scale=scale)
    res = trainer.fit(model, d, "biased-gcn")
    return model, trainer, res


def test_full_graph_training_learns_and_ranks():
    model, trainer, res = _fit(epochs=4)
    assert model.prepared == 1
    losses = trainer.step_losses
    assert len(losses) == 4 * 13 and sum(losses[-13:]) < sum(losses[:13])
    assert 0.0 <= res["test"]["recall@20"] <= 1.0 and res["model"] == "biased-gcn"
    assert "scale" not in res["config"]
    # exact full ranking is the pairwise score on every pair (bias included)
    state = model.inference(model.prepare(synthetic("tiny", seed=0)))
    I = model.bias.numel()
    full = model.score(state, torch.arange(3))
    pairs = torch.stack([model.score(state, torch.full((I,), u), torch.arange(I)) for u in range(3)])
    assert torch.allclose(full, pairs, atol=1e-6)


@needs_sampler
def test_sampled_with_all_neighbours_follows_the_full_graph_run():
    """Fanout -1: every sampled step is the full-graph step, so the runs agree."""
    _, full, rf = _fit()
    model, samp, rs = _fit(ScaleConfig(fanout=[-1], inference="full"))
    assert model.prepared == 1                      # the full graph only for evaluation
    assert torch.allclose(torch.tensor(full.step_losses), torch.tensor(samp.step_losses), atol=1e-5)
    for a, b in zip(full.fingerprints[-1], samp.fingerprints[-1]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a))
    assert rs["config"]["scale"]["fanout"] == [-1] and "scale" not in rf["config"]


@needs_sampler
def test_sampled_training_with_a_fanout_is_reproducible():
    runs = [_fit(ScaleConfig(fanout=[3]), epochs=3) for _ in range(2)]
    (m, a, ra), (_, b, rb) = runs
    assert a.step_losses == b.step_losses and ra["test"] == rb["test"]
    assert sum(a.step_losses[-13:]) < sum(a.step_losses[:13])
    # no chunked inference: "auto" evaluates on the model's full graph, built once
    assert not BiasedGCN.supports_layerwise_inference() and m.prepared == 1
    # an explicit layer-wise evaluation falls back to it at every evaluation
    m, _, rl = _fit(ScaleConfig(fanout=[3], inference="layerwise"), epochs=3)
    assert m.prepared == 3 + 1 and rl["test"] == ra["test"]


def test_bad_fanout_and_unsupported_models_fail_before_anything_heavy():
    d = synthetic("tiny", seed=0)
    torch.manual_seed(0)
    model = BiasedGCN(num_users(d), num_items(d))
    with pytest.raises(ValueError, match="the model has 1 propagation layers"):
        Trainer(TrainConfig(**CFG), scale=ScaleConfig(fanout=[5, 5])).fit(model, d)
    assert model.prepared == 0

    class FullOnly(BiasedGCN):
        sampled_loss = Recommender.sampled_loss
        sampling_spec = Recommender.sampling_spec
        sampling_unsupported_reason = "its loss needs the whole graph"

    torch.manual_seed(0)
    full_only = FullOnly(num_users(d), num_items(d))
    assert not FullOnly.supports_sampled_training() and BiasedGCN.supports_sampled_training()
    with pytest.raises(SampledTrainingUnsupported, match="FullOnly does not support neighbour-sampled "
                                                         "training: its loss needs the whole graph"):
        Trainer(TrainConfig(**CFG), scale=ScaleConfig(fanout=[5])).fit(full_only, d)
    assert full_only.prepared == 0


SAMPLED = {"LightGCN", "MAGNET"}


@pytest.mark.parametrize("name", ["BPRMF", "LightGCN", "MAGNET", "FREEDOM", "AnchorRec", "CRANE", "RecGOAT"])
def test_every_model_trains_sampled_or_says_why_not(data, name):
    cls = getattr(models, name)
    torch.manual_seed(0)
    if name in ("BPRMF", "LightGCN"):
        model = cls(num_users(data), num_items(data), 8)
    else:
        model = cls(num_users(data), num_items(data), modality_dims(data), embedding_dim=8)
    assert cls.supports_sampled_training() == (name in SAMPLED)
    if name in SAMPLED:
        spec = model.sampling_spec()
        assert spec.num_layers == 2 and spec.views[0] == "ui"
        return
    with pytest.raises(SampledTrainingUnsupported, match=f"{name} does not support neighbour-sampled "
                                                         f"training: .+; train it on the full graph"):
        model.sampling_spec()
    assert isinstance(SampledTrainingUnsupported("x"), (NotImplementedError, ValueError))


# ----------------------------------------------------------------------------- 2 processes
RUNS = {"full": None, "sampled": [-1]}


def _run(name: str):
    fanout = RUNS[name]
    model, trainer, res = _fit(ScaleConfig(fanout=fanout) if fanout else ScaleConfig())
    return {"losses": trainer.step_losses, "fingerprints": trainer.fingerprints, "test": res["test"],
            "world_size": res["config"]["world_size"],
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
    tmp = tmp_path_factory.mktemp("ddp_protocol")
    names = ["full"] + (["sampled"] if HAS_SAMPLER else [])
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp), names), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name", ["full", "sampled"])
def test_two_processes_train_the_protocol_model_like_one(two_ranks, name):
    if name not in two_ranks[0]:
        pytest.skip("needs torch-sparse or pyg-lib")
    r0, r1 = two_ranks[0][name], two_ranks[1][name]
    assert r0["fingerprints"] == r1["fingerprints"] and r0["losses"] == r1["losses"]
    assert r0["test"] == r1["test"] and r0["world_size"] == 2
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    one = _run(name)
    assert one["world_size"] == 1 and len(one["losses"]) == len(r0["losses"]) == 2 * 13
    assert torch.allclose(torch.tensor(one["losses"]), torch.tensor(r0["losses"]), atol=1e-5)
    for a, b in zip(one["fingerprints"][-1], r0["fingerprints"][-1]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a))
