"""Sampled training (fanout), exact layer-wise inference and their equivalence with the
full-graph models (issue 5)."""
import copy

import pytest
import torch

from magnet_pyg.data import (INDUCED, INDUCED_BY, modality_features, num_items, num_users,
                             split_edge_index, synthetic)
from magnet_pyg.evaluate import Evaluator
from magnet_pyg.evaluate.layerwise import LayerwiseGraph, layerwise_inference
from magnet_pyg.models import LightGCN
from magnet_pyg.models.magnet import MAGNET
from magnet_pyg.train import LinkSampler, TrainConfig
from magnet_pyg.train.distributed import LargeGraphTrainer, ScaleConfig
from magnet_pyg.train.sampled import (SubgraphSampler, add_view_degrees, batch_cues,
                                      check_fanout, encode_batch, prepare_sampled, sampled_loss)

from conftest import needs_sampler


def _with_induced(d, per_user=6, seed=1):
    """Hand-made content-induced edges (the graph builder's output format)."""
    g = torch.Generator().manual_seed(seed)
    U, I = num_users(d), num_items(d)
    users = torch.arange(U).repeat_interleave(per_user)
    items = torch.randint(0, I, (users.numel(),), generator=g)
    ei = torch.unique(torch.stack([users, items]), dim=1)
    d[INDUCED].edge_index = ei
    d[INDUCED].edge_weight = torch.rand(ei.size(1), generator=g)
    d[INDUCED_BY].edge_index = ei.flip(0)
    return d


@pytest.fixture(scope="module")
def tiny_dv():
    return _with_induced(synthetic("tiny", seed=0))


def _magnet(d, view="dual", dropout=0.0, **kw):
    torch.manual_seed(0)
    dims = {m: int(x.size(1)) for m, x in modality_features(d).items()}
    return MAGNET(num_users(d), num_items(d), dims, embedding_dim=16, num_layers=2, view=view,
                  dropout=dropout, **kw)


def _batches(d, bs=48, n=3, seed=0):
    s = LinkSampler(split_edge_index(d, "train"), num_items(d), bs)
    return list(s.epoch(torch.Generator().manual_seed(seed)))[:n]


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("fanout,layers,msg", [
    ([10], 2, "one fanout per layer"), ([10, 10, 10], 2, "3 entries"), ([10, 0], 2, ">= 1, or -1"),
    ([-2, 5], 2, ">= 1, or -1"), ([1.5, 2], 2, "integers"), (10, 1, "list")])
def test_bad_fanout(fanout, layers, msg):
    with pytest.raises(ValueError, match=msg):
        check_fanout(fanout, layers)
    assert check_fanout([10, -1], 2) == [10, -1]


@needs_sampler
def test_bad_fanout_for_model():
    d = synthetic("tiny", seed=0)
    m = LightGCN(num_users(d), num_items(d), 8, 2)
    with pytest.raises(ValueError, match="2 propagation layers"):
        prepare_sampled(m, d, [5])
    with pytest.raises(ValueError, match="content-induced edges"):
        prepare_sampled(_magnet(d), d, [5, 5])


def test_degrees_are_node_attributes(tiny_dv):
    add_view_degrees(tiny_dv)
    tr, ind = split_edge_index(tiny_dv, "train"), tiny_dv[INDUCED].edge_index
    assert torch.equal(tiny_dv["user"].deg_ui, torch.bincount(tr[0], minlength=num_users(tiny_dv)).float())
    assert torch.equal(tiny_dv["item"].deg_uig - tiny_dv["item"].deg_ui,
                       torch.bincount(ind[1], minlength=num_items(tiny_dv)).float())


# ----------------------------------------------------------------------------- equivalence
@needs_sampler
@pytest.mark.parametrize("trim", [True, False])
def test_lightgcn_fanout_all_equals_full_graph(trim):
    d = synthetic("tiny", seed=0)
    torch.manual_seed(0)
    m = LightGCN(num_users(d), num_items(d), 16, 2)
    g = prepare_sampled(m, d, [-1, -1])
    zu, zi = m(m.prepare(d))
    for b in g.sampler.iterate(_batches(d)):
        z, _, _ = encode_batch(m.encoder, b, ("ui",), trim=trim)
        nu = b.num_sub_users
        assert torch.allclose(z[b.users_local], zu[b.users], atol=1e-5)
        assert torch.allclose(z[nu + b.pos_local], zi[b.pos], atol=1e-5)
        assert torch.allclose(z[nu + b.neg_local], zi[b.neg], atol=1e-5)
        full, _ = m.loss(m.prepare(d), b.users, b.pos, b.neg)
        samp, _ = sampled_loss(m, g, b)
        assert abs(full.item() - samp.item()) < 1e-5
        gf = torch.autograd.grad(full, m.encoder.embedding.weight)[0]
        gs = torch.autograd.grad(samp, m.encoder.embedding.weight)[0]
        assert torch.allclose(gf, gs, atol=1e-6)


@needs_sampler
@pytest.mark.parametrize("view", ["dual", "single"])
def test_magnet_fanout_all_equals_full_graph(tiny_dv, view):
    m = _magnet(tiny_dv, view)
    g = prepare_sampled(m, tiny_dv, [-1, -1])
    graph = m.prepare(tiny_dv)
    out = m(graph)
    U = num_users(tiny_dv)
    for b in g.sampler.iterate(_batches(tiny_dv)):
        z, z_ui, z_uig = encode_batch(m.encoder, b, g.views)
        nu = b.num_sub_users
        assert torch.allclose(z[b.users_local], out.z[b.users], atol=1e-5)
        assert torch.allclose(z[nu + b.neg_local], out.z[U + b.neg], atol=1e-5)
        assert torch.allclose(z_ui[nu + b.pos_local], out.z_ui[U + b.pos], atol=1e-5)
        if view == "dual":
            assert torch.allclose(z_uig[b.users_local], out.z_uig[b.users], atol=1e-5)
        else:
            assert z_uig is None and out.z_uig is None
        h_u, (h_p,) = batch_cues(m.cues, g.features, g.history, b.users, [b.pos])
        assert torch.allclose(h_u, out.h_u[b.users], atol=1e-5)
        assert torch.allclose(h_p, out.h_i[b.pos], atol=1e-5)
        # the whole objective (BPR through the MoE head, view contrast, routing terms)
        m1, m2 = copy.deepcopy(m), copy.deepcopy(m)
        full, lf = m1.loss(graph, b.users, b.pos, b.neg)
        samp, ls = sampled_loss(m2, g, b)
        assert abs(full.item() - samp.item()) < 1e-5 and set(lf) == set(ls)
        full.backward()
        samp.backward()
        for (n1, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
            assert torch.allclose(p1.grad, p2.grad, atol=1e-5), n1
        assert int(m1.schedule.step) == int(m2.schedule.step) == 1


@needs_sampler
def test_sampling_respects_fanout_and_rescale_is_unbiased(tiny_dv):
    d = tiny_dv
    s = SubgraphSampler(d, [2, 2], ("ui", "uig"))
    (u, p, n), = _batches(d, 32, 1)
    b = s.sample(u, p, n)
    sub = b.subgraph
    for et in sub.edge_types:
        if sub[et].num_edges:
            assert int(torch.bincount(sub[et].edge_index[1]).max()) <= 2
            # sampled edges are real edges of the relation
            src, dst = sub[et.__getitem__(0)].n_id, sub[et[2]].n_id
            real = set(map(tuple, d[et].edge_index.t().tolist()))
            got = torch.stack([src[sub[et].edge_index[0]], dst[sub[et].edge_index[1]]]).t().tolist()
            assert all(tuple(e) in real for e in got)
    # unbiasedness: averaging many sampled 1-layer propagations gives the exact one
    torch.manual_seed(0)
    m = LightGCN(num_users(d), num_items(d), 8, 1)
    s1 = SubgraphSampler(d, [3], ("ui",))
    zu, _ = m(m.prepare(d))
    acc = torch.zeros(u.numel(), 8)
    reps = 300
    for _ in range(reps):
        bb = s1.sample(u, p, n)
        z, _, _ = encode_batch(m.encoder, bb, ("ui",))
        acc += z[bb.users_local].detach()
    assert torch.allclose(acc / reps, zu[u].detach(), atol=0.02)


# ----------------------------------------------------------------------------- layer-wise
@pytest.mark.parametrize("chunk", [7, 1000])
def test_layerwise_inference_is_exact(tiny_dv, chunk):
    d = tiny_dv
    torch.manual_seed(0)
    lg = LightGCN(num_users(d), num_items(d), 16, 2)
    st = layerwise_inference(lg, LayerwiseGraph(d, ("ui",)), chunk)
    ref = lg.inference(lg.prepare(d))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(st, ref))
    m = _magnet(d, "dual", dropout=0.1)
    m.train()
    st = layerwise_inference(m, LayerwiseGraph(d, ("ui", "uig")), chunk)
    assert m.training  # mode restored
    m.eval()
    ref = m.inference(m.prepare(d))
    for a, b in zip(st, ref):
        assert torch.allclose(a, b, atol=1e-5)
    ev = Evaluator(d, ks=(10, 20))
    assert ev.evaluate(m, None, "test", state=st) == pytest.approx(ev.evaluate(m, m.prepare(d), "test"),
                                                                     abs=1e-9)


# ----------------------------------------------------------------------------- trainer
def _cfg(**kw):
    base = dict(epochs=2, batch_size=128, lr=5e-3, seed=3, progress=False, ks=(10, 20))
    base.update(kw)
    return TrainConfig(**base)


@needs_sampler
def test_sampled_trainer_lightgcn_reproducible_and_learns(tmp_path):
    d = synthetic("tiny", seed=0)
    runs = []
    for out in (str(tmp_path / "a"), None):
        torch.manual_seed(0)
        m = LightGCN(num_users(d), num_items(d), 16, 2)
        t = LargeGraphTrainer(_cfg(epochs=3, out_dir=out), ScaleConfig(fanout=[5, 5], chunk_size=50))
        runs.append((t.fit(m, d, "lightgcn"), t.step_losses))
    (a, la), (b, lb) = runs
    assert la == lb and a["test"] == b["test"]
    assert a["config"]["scale"]["fanout"] == [5, 5]
    assert la[-1] < la[0]
    assert (tmp_path / "a" / "results.json").exists()


@needs_sampler
def test_sampled_trainer_magnet_dv_with_workers(tiny_dv):
    m = _magnet(tiny_dv, "dual", dropout=0.1)
    t = LargeGraphTrainer(_cfg(epochs=1, batch_size=256),
                          ScaleConfig(fanout=[4, -1], sampling_workers=1))
    res = t.fit(m, tiny_dv, "magnet")
    assert res["epochs"][0]["loss"] > 0 and "ctr" in res["epochs"][0]
    assert 0.0 <= res["test"]["recall@20"] <= 1.0


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_full_mode_world1_matches_plain_trainer(ema_decay):
    from magnet_pyg.train import Trainer
    d = synthetic("tiny", seed=0)
    res = []
    for T in (lambda c: Trainer(c), lambda c: LargeGraphTrainer(c, ScaleConfig())):
        torch.manual_seed(0)
        m = LightGCN(num_users(d), num_items(d), 16, 2)
        res.append(T(_cfg(ema_decay=ema_decay)).fit(m, d, "lightgcn"))
    assert [e["loss"] for e in res[0]["epochs"]] == [e["loss"] for e in res[1]["epochs"]]
    # with a weight average both validate, select and test the average, not the iterate
    assert [e["valid"] for e in res[0]["epochs"]] == [e["valid"] for e in res[1]["epochs"]]
    assert res[0]["test"] == res[1]["test"]


# ----------------------------------------------------------------------------- GPU
@needs_sampler
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sampled_equivalence_layerwise_and_training(tiny_dv):
    dev = torch.device("cuda")
    m = _magnet(tiny_dv, "dual").to(dev)
    g = prepare_sampled(m, tiny_dv, [-1, -1])
    out = m(m.prepare(tiny_dv))
    U = num_users(tiny_dv)
    for b in g.sampler.iterate(_batches(tiny_dv)):
        b = b.to(dev)
        z, _, _ = encode_batch(m.encoder, b, g.views)
        nu = b.num_sub_users
        assert torch.allclose(z[b.users_local], out.z[b.users], atol=1e-5)
        assert torch.allclose(z[nu + b.pos_local], out.z[U + b.pos], atol=1e-5)
        loss, _ = sampled_loss(m, g, b)
        loss.backward()
    m.eval()
    st = layerwise_inference(m, LayerwiseGraph(tiny_dv, ("ui", "uig")), 17)
    for a, r in zip(st, m.inference(m.prepare(tiny_dv))):
        assert a.device.type == "cuda" and torch.allclose(a, r, atol=1e-5)
    m2 = _magnet(tiny_dv, "dual", dropout=0.1)
    res = LargeGraphTrainer(_cfg(epochs=1, device="cuda"), ScaleConfig(fanout=[5, 5], sampling_workers=2)
                            ).fit(m2, tiny_dv, "magnet")
    assert next(m2.parameters()).device.type == "cuda" and res["test"]["recall@20"] >= 0


# ----------------------------------------------------------------------------- CLI
@needs_sampler
def test_cli_sampled_training_and_bad_inputs(tmp_path, capsys):
    from magnet_pyg.cli import main
    base = ["train", "--model", "lightgcn", "--data", "synthetic-tiny", "--epochs", "1", "--no-progress"]
    assert main(base + ["--fanout", "5", "-1", "--chunk-size", "40", "--out", str(tmp_path / "r")]) == 0
    import json
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["config"]["scale"]["fanout"] == [5, -1] and "recall@20" in res["test"]
    for extra, msg in ((["--fanout", "5"], "one fanout per layer"),
                       (["--fanout", "5", "0"], "-1 for all neighbours"),
                       (["--fanout", "5", "-3"], "-1 for all neighbours"),
                       (["--fanout", "5", "5", "--set", "num_layers=3"], "3 propagation layers"),
                       (["--fanout", "5", "5", "--sampling-workers", "-1"], "sampling_workers"),
                       (["--fanout", "5", "5", "--chunk-size", "0"], "chunk_size")):
        assert main(base + extra) == 2
        assert msg in capsys.readouterr().err
    assert main(["train", "--model", "bpr", "--data", "synthetic-tiny", "--fanout", "5", "5"]) == 2
    assert "supports --model lightgcn / magnet" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(base + ["--device", "cuda", "--fanout", "5", "5"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
