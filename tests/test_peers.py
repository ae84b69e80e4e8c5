"""Peer models (issue 7): FREEDOM, AnchorRec, CRANE, RecGOAT.

Every loss term against a hand computation on tiny inputs, the structural claims (per-entity
attention, Sinkhorn marginals, degree-sensitive pruning), exact full-ranking vs pairwise scores,
and two epochs of each model through the Trainer on ``synthetic('tiny')``."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import modality_dims
import torch.nn.functional as F

from magnet_pyg.cli import main
from magnet_pyg.data import modality_features, num_items, num_users, split_edge_index, synthetic
from magnet_pyg.models.anchorrec import AnchorRec, anchor_feature
from magnet_pyg.models.crane import CRANE, RecursiveCrossModalAttention
from magnet_pyg.data.modalities import require_modalities
from magnet_pyg.graph.item_graph import knn_edge_index, knn_normalized_adjacency
from magnet_pyg.models.freedom import FREEDOM
from magnet_pyg.nn.pruning import degree_edge_probability
from magnet_pyg.models.recgoat import RecGOAT, sinkhorn, transport_cost
from magnet_pyg.train import TrainConfig, Trainer

PEERS = [FREEDOM, AnchorRec, CRANE, RecGOAT]


pytestmark = pytest.mark.usefixtures("one_thread")






def _model(cls, d, **kw):
    torch.manual_seed(0)
    return cls(num_users(d), num_items(d), modality_dims(d), embedding_dim=16, **kw)


# ----------------------------------------------------------------------------- hand references
def _hand_infonce(a, b, tau):
    """Symmetric InfoNCE written out with scalar loops (cosine similarity)."""
    a, b = a.tolist(), b.tolist()
    cos = lambda x, y: sum(p * q for p, q in zip(x, y)) / (math.sqrt(sum(p * p for p in x)) *
                                                         math.sqrt(sum(q * q for q in y)))
    n = len(a)

    def one_way(x, y):
        tot = 0.0
        for i in range(n):
            den = sum(math.exp(cos(x[i], y[j]) / tau) for j in range(n))
            tot += -math.log(math.exp(cos(x[i], y[i]) / tau) / den)
        return tot / n
    return 0.5 * (one_way(a, b) + one_way(b, a))


def _hand_one_way(a, b, tau):
    """One direction of the InfoNCE: row ``i`` of ``a`` queries the rows of ``b`` (cosine)."""
    a, b = a.tolist(), b.tolist()
    cos = lambda x, y: sum(p * q for p, q in zip(x, y)) / (math.sqrt(sum(p * p for p in x)) *
                                                         math.sqrt(sum(q * q for q in y)))
    return sum(-math.log(math.exp(cos(a[i], b[i]) / tau)
                         / sum(math.exp(cos(a[i], b[j]) / tau) for j in range(len(b))))
               for i in range(len(a))) / len(a)


def _hand_bpr(pos, neg):
    return sum(math.log(1 + math.exp(n - p)) for p, n in zip(pos, neg)) / len(pos)


# ----------------------------------------------------------------------------- shared helpers
def test_refuses_fewer_than_two_modalities(data):
    with pytest.raises(ValueError, match="bpr, lightgcn"):
        require_modalities(["image"], "freedom")
    for cls in PEERS:
        with pytest.raises(ValueError, match=r"at least 2 content modalities.*bpr, lightgcn"):
            cls(10, 10, {"image": 8})
    one = synthetic("tiny", seed=0)
    one.modalities = ["image"]
    m = FREEDOM(num_users(one), num_items(one), {"image": 16, "text": 8}, embedding_dim=8)
    with pytest.raises(ValueError, match="bpr, lightgcn"):
        m.prepare(one)


def test_knn_graph_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    ei = knn_edge_index(x, 2)  # self included (FREEDOM)
    assert sorted(map(tuple, ei.t().tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1),
                                                    (2, 2), (2, 3), (3, 2), (3, 3)]
    ei = knn_edge_index(x, 1, include_self=False)
    assert ei.t().tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
    s = knn_normalized_adjacency(x, 2).to_dense()
    expect = torch.tensor([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, .5, .5], [0, 0, .5, .5]])
    assert torch.allclose(s, expect)  # D^-1/2 A D^-1/2 with row degree k = 2 -> 1/k


# ----------------------------------------------------------------------------- FREEDOM
def test_freedom_degree_probability_and_pruning(data):
    ei = torch.tensor([[0, 0, 1], [0, 1, 1]])  # d_u = (2, 1), d_i = (1, 2)
    p = degree_edge_probability(ei, 2, 2)
    assert torch.allclose(p, torch.tensor([1 / math.sqrt(2 * 1), 1 / math.sqrt(2 * 2), 1 / math.sqrt(1 * 2)]))

    m = _model(FREEDOM, data, edge_dropout=0.8)
    g = m.prepare(data)
    E = split_edge_index(data, "train").size(1)
    a = m.on_epoch_start(g, 0, torch.Generator().manual_seed(5)).train_adj
    b = m.on_epoch_start(g, 0, torch.Generator().manual_seed(5)).train_adj
    assert torch.equal(a.to_dense(), b.to_dense())  # randomness only from the generator
    assert a._nnz() == 2 * int(E * 0.2)  # both directions of the kept edges
    U = num_users(data)
    kept = {(int(r), int(c) - U) for r, c in a.to_sparse_coo().indices().t() if r < U}
    assert kept <= set(map(tuple, split_edge_index(data, "train").t().tolist()))
    assert g.adj._nnz() == 2 * E  # inference keeps the full graph

    # low-degree edges survive more often: sampled proportional to 1/sqrt(d_u d_i)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(E)
    for _ in range(200):
        counts[torch.multinomial(g.edge_prob, int(E * 0.2), generator=gen)] += 1
    lo, hi = g.edge_prob > g.edge_prob.median(), g.edge_prob < g.edge_prob.median()
    assert counts[lo].mean() > counts[hi].mean()


def test_freedom_item_graph_weights(data):
    m = _model(FREEDOM, data, mm_weights=[1.0, 3.0], knn_k=3)
    g = m.prepare(data)
    feats = modality_features(data)
    expect = sum(w * knn_normalized_adjacency(feats[name], 3).to_dense()
                 for w, name in zip([0.25, 0.75], feats))
    assert torch.allclose(g.mm_adj.to_dense(), expect)


def test_freedom_feature_bpr_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.5, -1.0]])
    fp = {"a": torch.tensor([[2.0, 1.0], [0.0, 1.0]]), "b": torch.tensor([[0.0, 0.0], [1.0, 1.0]])}
    fn = {"a": torch.tensor([[1.0, 3.0], [1.0, 0.0]]), "b": torch.tensor([[1.0, 1.0], [-1.0, 0.0]])}
    got = FREEDOM.feature_bpr_loss(u, fp, fn)
    expect = _hand_bpr([2.0, -1.0], [1.0, 0.5]) + _hand_bpr([0.0, -0.5], [1.0, -0.5])
    assert got.item() == pytest.approx(expect, rel=1e-6)


# ----------------------------------------------------------------------------- AnchorRec
def test_anchorrec_aal_by_hand():
    torch.manual_seed(0)
    p_mm, p_id, p_mix = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    got = AnchorRec.aal_loss(p_mm, p_id, p_mix, 0.2)
    # one-directional InfoNCE, the anchor as the query (the authors' code)
    expect = _hand_one_way(p_mm, p_id, 0.2) + _hand_one_way(p_mm, p_mix, 0.2)
    assert got.item() == pytest.approx(expect, rel=1e-5)


def test_anchorrec_amp_by_hand():
    torch.manual_seed(1)
    h = {"mm": torch.randn(3, 4), "a": torch.randn(3, 4)}
    f = {"mm": torch.randn(3, 6), "a": torch.randn(3, 5)}
    w = {"mm": 1.0, "a": 0.3}
    got = AnchorRec.amp_loss(h, f, w, similarity="cosine")
    expect = 0.0
    for k in h:
        hh, ff = h[k].tolist(), f[k].tolist()
        cos = lambda x, y: sum(p * q for p, q in zip(x, y)) / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))
        sq = sum((cos(hh[i], hh[j]) - cos(ff[i], ff[j])) ** 2 for i in range(3) for j in range(3))
        expect += w[k] * math.sqrt(sq) / 3
    assert got.item() == pytest.approx(expect, rel=1e-5)


def test_anchorrec_anchor_is_concatenation(data):
    feats = modality_features(data)
    a = anchor_feature(feats)
    assert a.shape == (num_items(data), sum(x.size(1) for x in feats.values()))
    m = _model(AnchorRec, data)
    g = m.prepare(data)
    assert list(g.features) == ["mm", *feats]
    assert torch.allclose(g.features["mm"], a)
    assert torch.allclose(g.features["mm"].norm(dim=-1), torch.full((num_items(data),), math.sqrt(len(feats))))


# ----------------------------------------------------------------------------- CRANE
def test_crane_attention_is_per_entity_and_linear():
    torch.manual_seed(0)
    rca = RecursiveCrossModalAttention(8, num_rounds=3, num_heads=2).eval()
    sizes = {}
    for n in (10, 20, 40):
        x = torch.randn(n, 3, 8)
        out, atts = rca(x, return_attention=True)
        assert out.shape == (n, 3, 8) and len(atts) == 3
        assert all(a.shape == (n, 2, 3, 3) for a in atts)  # [N, H, M, M], never [N, N]
        assert torch.allclose(atts[0].sum(-1), torch.ones(n, 2, 3))
        sizes[n] = sum(a.numel() for a in atts)
    assert sizes[20] == 2 * sizes[10] and sizes[40] == 4 * sizes[10]  # linear in entities
    # no entity attends to another: the first rows do not depend on the rest
    x = torch.randn(12, 3, 8)
    assert torch.allclose(rca(x)[:5], rca(x[:5]), atol=1e-6)


def test_crane_round_by_hand():
    torch.manual_seed(0)
    rca = RecursiveCrossModalAttention(4, num_rounds=1, num_heads=1)
    x = torch.randn(2, 2, 4)
    out, att = rca.round(x)
    y = x  # no normalisation inside the rounds (biases start at zero)
    for n in range(2):
        q, k, v = y[n] @ rca.q.weight.t(), y[n] @ rca.k.weight.t(), y[n] @ rca.v.weight.t()
        a = torch.softmax(q @ k.t() / 2.0, dim=-1)
        assert torch.allclose(att[n, 0], a, atol=1e-6)
        assert torch.allclose(out[n], x[n] + (a @ v) @ rca.out.weight.t() + rca.out.bias, atol=1e-6)


def test_crane_profiles_and_alignment(data):
    m = _model(CRANE, data)
    g = m.prepare(data)
    ei = split_edge_index(data, "train")
    name = m.modalities[0]
    x = F.normalize(modality_features(data)[name], dim=-1) * m.input_scale[0]  # normalize_features=True
    u = int(ei[0, 0])
    assert torch.allclose(m.modality_inputs(g)[0][name][u], x[ei[1, ei[0] == u]].sum(0), atol=1e-5)
    torch.manual_seed(2)
    e_u, h_u, e_i, h_i = (torch.randn(3, 5) for _ in range(4))
    got = m.alignment_loss(e_u, h_u, e_i, h_i)
    assert got.item() == pytest.approx(_hand_infonce(e_u, h_u, m.tau) + _hand_infonce(e_i, h_i, m.tau), rel=1e-5)
    mm = _model(CRANE, data, profile="mean")
    gm = mm.prepare(data)
    x = F.normalize(modality_features(data)[name], dim=-1) * mm.input_scale[0]
    assert torch.allclose(mm.modality_inputs(gm)[0][name][u], x[ei[1, ei[0] == u]].mean(0), atol=1e-5)


# ----------------------------------------------------------------------------- RecGOAT
def test_transport_cost_by_brute_force():
    torch.manual_seed(0)
    x, y = torch.randn(7, 3), torch.randn(7, 4)
    brute = (x.unsqueeze(2) - y.unsqueeze(1)).pow(2).mean(0)
    assert torch.allclose(transport_cost(x, y), brute, atol=1e-5)


@pytest.mark.parametrize("eps", [1e-2, 5e-2])
def test_sinkhorn_marginals(eps):
    torch.manual_seed(0)
    x, y = torch.randn(200, 16), 2 * torch.randn(200, 16) + 1
    c = transport_cost(x, y)
    t = sinkhorn(c / c.max(), eps=eps, num_iters=100)
    assert t.shape == (16, 16) and bool((t >= 0).all())
    assert torch.allclose(t.sum(1), torch.full((16,), 1 / 16), atol=1e-3)
    assert torch.allclose(t.sum(0), torch.full((16,), 1 / 16), atol=1e-3)
    # non-uniform marginals, and a plan that puts its mass on the cheap pairs (this cost has
    # ties, where small eps converges slowly: more iterations)
    mu = torch.tensor([0.5, 0.3, 0.2])
    nu = torch.tensor([0.2, 0.2, 0.6])
    cost = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    t = sinkhorn(cost, eps=eps, num_iters=5000, mu=mu, nu=nu)
    assert torch.allclose(t.sum(1), mu, atol=1e-3) and torch.allclose(t.sum(0), nu, atol=1e-3)
    assert float((t * cost).sum()) < 0.41  # optimum 0.4: the diagonal can hold only 0.6


def test_recgoat_cmcl_and_fusion(data):
    m = _model(RecGOAT, data)
    torch.manual_seed(3)
    zu, zi = torch.randn(4, 4), torch.randn(4, 4)
    pv, nv = [torch.randn(4, 4) for _ in range(3)], [torch.randn(4, 4) for _ in range(3)]
    got = m.cmcl_loss(zu, zi, pv, nv)
    # one-directional InfoNCE (the authors'), over the (ID, slot) and (slot, slot) pairs
    modal = sum(_hand_one_way(v[a], v[b], 0.2) for v in (pv, nv) for a, b in [(0, 1), (0, 2), (1, 2)]) / 6
    assert got.item() == pytest.approx(0.5 * _hand_one_way(zu, zi, 0.2) + 0.5 * modal, rel=1e-5)
    w = m.fusion_weights()
    assert w.shape == (3,) and float(w.sum()) == pytest.approx(1.0)
    # the OAT plan is a transport plan with uniform marginals 1/d
    g = m.prepare(data)
    zu_id, zi_id = m.encoder.split(m.encoder.propagate(g.adj))
    hu, hi = m.modality_embeddings(g, m.modalities[0])
    t = m.transport_plan(hi, zi_id)
    assert torch.allclose(t.sum(0) * 16, torch.ones(16), atol=1e-3)


# ----------------------------------------------------------------------------- all models
@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.__name__)
def test_full_ranking_equals_pairwise(cls, data):
    m = _model(cls, data).eval()
    g = m.prepare(data)
    state = m.inference(g)
    users = torch.tensor([0, 3, 7, 11])
    full = m.score(state, users)
    assert full.shape == (4, num_items(data))
    items = torch.arange(num_items(data))
    pair = m.score(state, users.repeat_interleave(len(items)), items.repeat(4))
    assert torch.allclose(full.reshape(-1), pair, atol=1e-5)


@pytest.mark.parametrize("cls", [CRANE, RecGOAT], ids=lambda c: c.__name__)
def test_batch_user_rows_equal_full_forward(cls, data):
    m = _model(cls, data).eval()
    g = m.prepare(data)
    users = torch.tensor([9, 2, 30])
    full, part = m(g), m(g, users)
    assert torch.allclose(full[0][users], part[0], atol=1e-5)
    assert torch.allclose(full[1], part[1], atol=1e-6)


@pytest.mark.parametrize("cls", PEERS, ids=lambda c: c.__name__)
def test_trains_two_epochs(cls, data):
    m = _model(cls, data)
    cfg = TrainConfig(epochs=2, batch_size=256, lr=5e-3, seed=0, progress=False)
    res = Trainer(cfg).fit(m, data, cls.__name__)
    assert len(res["epochs"]) == 2
    assert all(math.isfinite(e["loss"]) for e in res["epochs"])
    assert 0.0 <= res["test"]["recall@20"] <= 1.0


def test_cli_trains_a_peer(tmp_path, capsys):
    rc = main(["train", "--model", "crane", "--data", "synthetic-tiny", "--epochs", "1", "--set", "embedding_dim=8",
               "--set", "num_rounds=2", "--set", "model_options.profile=mean", "--threads", "1", "--no-progress",
               "--out", str(tmp_path / "c")])
    assert rc == 0
    import json
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    assert res["config"]["model_options"]["num_rounds"] == 2
    assert res["config"]["model_options"]["profile"] == "mean"


def test_freedom_resume_is_exact(data, tmp_path):
    """Pruning draws only from the trainer's per-epoch generator: 1 epoch + resume == 2 epochs."""
    def fit(epochs, out=None, resume=False):
        m = _model(FREEDOM, data)
        cfg = TrainConfig(epochs=epochs, batch_size=256, lr=5e-3, seed=3, progress=False,
                          out_dir=out, resume=resume)
        return Trainer(cfg).fit(m, data, "freedom")
    full = fit(2)
    fit(1, str(tmp_path))
    resumed = fit(2, str(tmp_path), resume=True)
    assert [e["loss"] for e in resumed["epochs"]] == [e["loss"] for e in full["epochs"]]
    assert resumed["test"] == full["test"]


def test_recgoat_plan_refreshed_per_epoch_and_saved(data):
    m = _model(RecGOAT, data, plan_update="epoch")
    g = m.prepare(data)
    assert not bool(m.plans_ready)
    m.on_epoch_start(g, 0, torch.Generator().manual_seed(0))
    assert bool(m.plans_ready) and m.training
    assert torch.allclose(m.plans.sum(1), torch.full((2, 16), 1 / 16), atol=1e-3)
    state = m.state_dict()
    assert "plans" in state and "plans_ready" in state  # in checkpoints: resume uses the same plan
    fresh = _model(RecGOAT, data, plan_update="epoch")
    fresh.load_state_dict(state)
    m.eval(), fresh.eval()
    assert torch.allclose(m.inference(g)[1], fresh.inference(g)[1])
