"""RecGOAT's default configuration against the authors' code (docs/fidelity.md).

Users are ID embeddings only, the unified item vector is LayerNorm-ed and L2-normalised, the
fusion weights are the authors' (0.05 image-like, 0.8 text-like, the ID embedding filling a
missing text slot), the CMCL modality terms pull the views together, and the user and item
vectors keep their scale through training."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import modality_dims
import torch.nn.functional as F

from magnet_pyg.data import modality_features, num_items, num_users, synthetic
from magnet_pyg.data.schema import set_modality
from magnet_pyg.models.recgoat import ID_SLOT, RecGOAT, info_nce, sinkhorn, text_modality_of, transport_cost
from magnet_pyg.train import TrainConfig, Trainer


pytestmark = pytest.mark.usefixtures("one_thread")






def _model(d, dims=None, **kw):
    torch.manual_seed(0)
    return RecGOAT(num_users(d), num_items(d), dims or modality_dims(d), embedding_dim=16, **kw)


def _renamed(d, names):
    """A copy of ``d`` whose modalities are renamed (``{old: new}``)."""
    out = synthetic("tiny", seed=0)
    feats = modality_features(d)
    out.modalities = []  # the old x_<name> attributes stay but are no longer modalities
    for old, x in feats.items():
        set_modality(out, names.get(old, old), x)
    return out


def test_defaults_are_the_authors():
    m = RecGOAT(10, 12, {"image": 4, "text": 3})
    assert m.encoder.num_layers == 3 and m.knn_k == 20 and len(m.item_gat["image"]) == 1
    assert m.item_gat["image"][0].heads == 8 and m.dropout == 0.1 and m.fusion_dropout == 0.1
    assert (m.tau, m.cmcl_weight, m.modality_consistency, m.reg_weight) == (0.2, 0.01, 0.5, 1e-4)
    assert (m.ot_eps, m.ot_cost_scale, m.ot_iters, m.plan_update) == (1e-2, 100.0, 100, "step")
    assert m.normalize_features is False and m.user_content is False and m.id_init_std == 0.1
    assert RecGOAT.default_train == {"lr": 8e-4, "batch_size": 4096, "weight_decay": 0.0}


def test_id_init_is_normal_0_1(data):
    torch.manual_seed(0)
    m = RecGOAT(2000, 2000, {"image": 4, "text": 3})
    w = m.encoder.embedding.weight.detach()
    assert float(w.std()) == pytest.approx(0.1, rel=0.02) and abs(float(w.mean())) < 2e-3


def test_fusion_weights_are_the_authors(data):
    m = _model(data)  # image + text: the authors' two slots
    assert m.slots == ["image", "text"]
    assert m.fusion_weights().tolist() == pytest.approx([0.15, 0.05, 0.8])  # (1-a-b, a, b)
    assert isinstance(m.slot_weights, torch.nn.Parameter)  # learned, as the authors' alpha, beta
    # no text-like modality (TikTok: image, audio): the ID embedding fills the text slot
    dims = {"image": 16, "audio": 8}
    t = _model(data, dims)
    assert text_modality_of(["image", "audio"]) is None
    assert t.slots == ["image", "audio", ID_SLOT]
    assert t.fusion_weights().tolist() == pytest.approx([0.1, 0.05, 0.05, 0.8])
    # two text-derived modalities (Sports: text, keyword): "text" takes the text weight
    s = RecGOAT(5, 5, {"keyword": 4, "text": 4})
    assert s.slots == ["keyword", "text"] and s.fusion_weights().tolist() == pytest.approx([0.15, 0.05, 0.8])
    # explicit weights
    e = RecGOAT(5, 5, {"image": 4, "audio": 4}, modality_weights=[0.3, 0.2], fill_missing_text=False)
    assert e.slots == ["image", "audio"] and e.fusion_weights().tolist() == pytest.approx([0.5, 0.3, 0.2])


def test_filled_text_slot_is_the_item_id_view(data):
    d = _renamed(data, {"text": "audio"})
    m = _model(d).eval()
    assert m.slots[-1] == ID_SLOT
    g = m.prepare(d)
    z_u, z_i, zu_id, zi_id, views = m(g)
    assert torch.equal(views[ID_SLOT].h_item, zi_id)


def test_users_have_no_content_branch_by_default(data):
    m = _model(data)
    assert not hasattr(m, "user_gat") and not hasattr(m, "ui_gat")
    g = m.prepare(data)
    assert g.user_features is None and g.user_edges is None
    m.train()
    z_u, z_i, zu_id, zi_id, views = m(g)
    assert torch.equal(z_u, zu_id)  # the score's user side is the LightGCN ID embedding
    assert all(v.h_user is None and v.z_user is None for v in views.values())
    state = m.eval().inference(g)
    assert torch.equal(state[0], m.encoder.split(m.encoder.propagate(g.adj))[0])


@pytest.mark.parametrize("train", [True, False])
def test_fused_item_vector_is_layer_normed_and_unit(data, train):
    m = _model(data)
    g = m.prepare(data)
    m.train(train)
    torch.manual_seed(1)
    z_u, z_i, zu_id, zi_id, views = m(g)
    assert torch.allclose(z_i.norm(dim=-1), torch.ones(num_items(data)), atol=1e-5)
    if not train:  # exactly L2(LayerNorm(mix)) without dropout
        x = m.mix(zi_id, [v.z_item for v in views.values()])
        expect = F.normalize(F.layer_norm(x, (16,), m.norm.weight, m.norm.bias), dim=-1)
        assert torch.allclose(z_i, expect, atol=1e-6)


def test_feature_scale_does_not_reach_the_score(data):
    """A modality's raw scale moves its share inside the fused vector but not the score's scale:
    scores stay bounded by the ID user norm (|z_u . z_i| <= ||z_u||)."""
    m = _model(data).eval()
    g = m.prepare(data)
    g.item_features = {k: 100.0 * x for k, x in g.item_features.items()}
    z_u, z_i = m.inference(g)
    s = z_u @ z_i.t()
    assert bool((s.abs() <= z_u.norm(dim=-1, keepdim=True) + 1e-5).all())


def test_views_keep_their_scale_through_training(data):
    """The user vector (the ID view) keeps its scale: it grows less than 10x over two epochs and
    the items stay unit-norm (an unnormalised user content branch grew from ~0.1 to ~7 within
    one TikTok epoch and took the score over)."""
    m = _model(data)
    g = m.prepare(data)
    m.eval()
    z_u0 = m.inference(g)[0].norm(dim=-1).mean()
    cfg = TrainConfig(epochs=2, batch_size=256, lr=8e-4, seed=0, progress=False)
    Trainer(cfg).fit(m, data, "recgoat")
    m.eval()
    z_u, z_i = m.inference(g)
    assert float(z_u.norm(dim=-1).mean()) < 10 * float(z_u0)
    assert torch.allclose(z_i.norm(dim=-1), torch.ones(num_items(data)), atol=1e-5)


def test_cmcl_pulls_views_together():
    """The modality terms are minimised InfoNCE losses: aligned views score lower than shuffled
    ones (the authors' ``1 - InfoNCE`` would reward pushing them apart)."""
    torch.manual_seed(0)
    m = RecGOAT(5, 5, {"image": 4, "text": 4}, embedding_dim=8)
    u, ip, z = torch.randn(32, 8), torch.randn(32, 8), torch.randn(32, 8)
    aligned = [z, z + 0.01 * torch.randn(32, 8), z + 0.01 * torch.randn(32, 8)]
    shuffled = [z, torch.randn(32, 8), torch.randn(32, 8)]
    assert m.cmcl_loss(u, ip, aligned, aligned) < m.cmcl_loss(u, ip, shuffled, shuffled)


def test_cmcl_by_hand():
    torch.manual_seed(0)
    m = RecGOAT(5, 5, {"image": 4, "text": 4}, embedding_dim=8)

    def nce(a, b, tau=0.2):
        a, b = a.tolist(), b.tolist()
        cos = lambda x, y: sum(p * q for p, q in zip(x, y)) / math.sqrt(sum(p * p for p in x) * sum(q * q for q in y))
        return sum(-math.log(math.exp(cos(a[i], b[i]) / tau) / sum(math.exp(cos(a[i], b[j]) / tau)
                                                                 for j in range(len(b))))
                   for i in range(len(a))) / len(a)

    u, ip = torch.randn(3, 4), torch.randn(3, 4)
    pv, nv = [torch.randn(3, 4) for _ in range(3)], [torch.randn(3, 4) for _ in range(3)]
    assert info_nce(u, ip, 0.2).item() == pytest.approx(nce(u, ip), rel=1e-5)
    pairs = [(0, 1), (0, 2), (1, 2)]
    modal = sum(nce(v[a], v[b]) for v in (pv, nv) for a, b in pairs) / 6
    assert m.cmcl_loss(u, ip, pv, nv).item() == pytest.approx(0.5 * nce(u, ip) + 0.5 * modal, rel=1e-5)


def test_reg_is_the_authors_batch_l2(data):
    m = _model(data)
    g = m.prepare(data)
    users, pos, neg = torch.tensor([0, 1, 1]), torch.tensor([2, 3, 4]), torch.tensor([5, 6, 7])
    _, logs = m.loss(g, users, pos, neg)
    e0, U = m.encoder.embedding.weight, num_users(data)
    expect = (e0[users].pow(2).sum(-1) + e0[U + pos].pow(2).sum(-1) + e0[U + neg].pow(2).sum(-1)).mean()
    assert float(logs["reg"]) == pytest.approx(float(expect), rel=1e-6)


def test_oat_plan_survives_the_authors_scale():
    """cost x 100 with eps 1e-2: the plain-domain kernel exp(-C/eps) is all zeros in float32
    here (the authors' plan is then 0); the log-domain plan is finite, carries mass 1 and has
    exact column marginals 1/d (at this small eps 100 iterations do not settle the rows)."""
    torch.manual_seed(0)
    h, z = 3.0 * torch.randn(500, 16), 0.1 * torch.randn(500, 16)
    c = transport_cost(h, z) * 100.0
    assert float(torch.exp(-c / 1e-2).max()) == 0.0
    t = sinkhorn(c, eps=1e-2, num_iters=100)
    assert bool(torch.isfinite(t).all()) and bool((t >= 0).all())
    assert float(t.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(t.sum(0), torch.full((16,), 1 / 16), atol=1e-5)


def test_item_knn_graph_is_symmetric_without_self_loops(data):
    m = _model(data, knn_k=3)
    g = m.prepare(data)
    for ei in g.item_edges.values():
        pairs = set(map(tuple, ei.t().tolist()))
        assert all((b, a) in pairs for a, b in pairs) and all(a != b for a, b in pairs)
        assert bool((torch.bincount(ei[1], minlength=num_items(data)) >= 3).all())


def test_user_content_option(data):
    m = _model(data, user_content=True).eval()
    g = m.prepare(data)
    z_u, z_i, zu_id, zi_id, views = m(g)
    assert all(v.h_user is not None for v in views.values())
    assert torch.allclose(z_u.norm(dim=-1), torch.ones(num_users(data)), atol=1e-5)
