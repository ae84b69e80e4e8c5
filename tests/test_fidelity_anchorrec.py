"""AnchorRec against the authors' formulation (paper + public code), on ``synthetic('tiny')``.

Each test pins one property of the default configuration that ``docs/fidelity.md``
lists: hyperparameter defaults, the modality roles, the final composition ``id + mm + t``, the
one-directional AAL with the anchor detached in its second term, the L2 on the final
embeddings, L_AMP's dot-product form, the weighted kNN graph, the symmetric user pooling, the
initialisation and the view norms at initialisation."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
from conftest import modality_dims
import torch.nn.functional as F

from magnet_pyg.data import num_items, num_users, split_edge_index
from magnet_pyg.models.anchorrec import AnchorRec, text_role, weighted_knn_adjacency
from magnet_pyg.nn.losses import embedding_l2


pytestmark = pytest.mark.usefixtures("one_thread")






def _model(d, **kw):
    torch.manual_seed(0)
    return AnchorRec(num_users(d), num_items(d), modality_dims(d), embedding_dim=16, **kw)


def _batch(d, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = split_edge_index(d, "train")
    idx = torch.randperm(ei.size(1), generator=g)[:n]
    return ei[0, idx], ei[1, idx], torch.randint(0, num_items(d), (n,), generator=g)


def _grads(model):
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------- defaults
def test_defaults_follow_the_authors_code():
    p = inspect.signature(AnchorRec).parameters
    assert p["recon_weight"].default == 5e-4          # recover_lambda
    assert p["embedding_dim"].default == 64
    assert p["num_ui_layers"].default == 2
    assert p["knn_k"].default == 10
    assert p["num_ii_layers"].default in (1, 2, 3)    # the code's grid
    assert p["aal_weight"].default in (0, 1e-4, 1e-3, 1e-2, 0.1, 1)
    assert p["amp_weight"].default in (0, 1e-4, 1e-3, 1e-2, 0.1, 1)
    assert p["tau"].default in (0.05, 0.1, 0.25, 0.5, 1)
    assert p["reg_weight"].default in (1e-3, 1e-2, 0.1)
    assert p["ui_margin_weight"].default == 0.01 and p["ui_margin"].default == 0.2
    assert p["smooth_weight"].default == 0.1
    assert p["amp_similarity"].default == "dot"
    assert p["mix_from_features"].default is True
    assert p["fuse_all_modalities"].default is False
    assert p["user_modality_views"].default is True
    assert p["finetune_features"].default is True
    assert AnchorRec.default_train["batch_size"] == 2048
    assert AnchorRec.default_train["lr"] in (5e-3, 3e-3, 1e-3, 7e-4, 5e-4, 3e-4, 1e-4)


def test_modality_roles():
    assert text_role(["audio", "image"]) == "audio"      # TikTok
    assert text_role(["keyword", "text"]) == "text"      # Sports
    assert text_role(["image", "text"]) == "text"
    m = AnchorRec(5, 5, {"audio": 4, "image": 6})
    assert m.text_modality == "audio" and m.fused == ["mm", "audio"]
    assert m.mix_weights == {"audio": 0.75, "image": 0.25}
    assert m.amp_modality_weights == {"audio": 0.03, "image": 0.01}
    m = AnchorRec(5, 5, {"image": 4, "keyword": 6, "text": 3})
    assert m.fused == ["mm", "text"]
    assert m.mix_weights == pytest.approx({"image": 0.125, "keyword": 0.125, "text": 0.75})
    assert m.amp_modality_weights == pytest.approx({"image": 0.005, "keyword": 0.005, "text": 0.03})
    m = AnchorRec(5, 5, {"image": 4, "text": 3}, text_modality="image", fuse_all_modalities=True)
    assert m.mix_weights == {"image": 0.75, "text": 0.25} and m.fused == ["mm", "image", "text"]
    with pytest.raises(ValueError, match="text_modality"):
        AnchorRec(5, 5, {"image": 4, "text": 3}, text_modality="audio")


# ----------------------------------------------------------------------------- composition
def test_final_item_is_id_plus_mm_plus_t(data):
    m = _model(data).eval()
    g = m.prepare(data)
    with torch.no_grad():
        user, item, zi, h = m(g)
        zu, zi_ref = m.encoder.split(m.encoder.propagate(g.adj))
        recon = m.recon_weight * m.decoder(m.projection["mm"](h["mm"]))
        assert torch.allclose(zi, zi_ref)
        assert torch.allclose(item, zi_ref + h["mm"] + h["text"] + recon, atol=1e-6)
        R = g.user_item.to_dense()
        assert torch.allclose(user, zu + R @ (h["mm"] + h["text"]), atol=1e-6)
        u_views, i_views, _ = m.views(g)
    assert list(u_views) == ["id", "mm", "text"] and list(i_views) == ["id", "mm", "text", "recon"]
    # the vision-role view is refined (it enters L_AMP) but not fused: changing it changes nothing
    with torch.no_grad():
        m.gate["image"].weight.add_(1.0)
        m.feat_proj["image"].bias.add_(3.0)
        user2, item2, _, h2 = m(g)
    assert not torch.allclose(h2["image"], h["image"])
    assert torch.equal(user2, user) and torch.equal(item2, item)


def test_user_pooling_is_symmetric_degree_normalised(data):
    g = _model(data).prepare(data)
    ei = split_edge_index(data, "train")
    du = torch.bincount(ei[0], minlength=num_users(data)).float()
    di = torch.bincount(ei[1], minlength=num_items(data)).float()
    R = g.user_item.to_dense()
    assert torch.allclose(R[ei[0], ei[1]], 1 / torch.sqrt(du[ei[0]] * di[ei[1]]))
    assert int((R != 0).sum()) == ei.size(1)


def test_weighted_knn_graph_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    s, ei, w = weighted_knn_adjacency(x, 2)
    cos = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).t()
    keep = torch.zeros(3, 3)
    for i in range(3):                       # self + the most similar other item
        j = max((j for j in range(3) if j != i), key=lambda j: cos[i, j])
        keep[i, i], keep[i, j] = cos[i, i], cos[i, j]
    deg = keep.sum(1)
    expect = keep / torch.sqrt(deg[:, None] * deg[None, :])
    assert torch.allclose(s.to_dense(), expect, atol=1e-6)
    assert torch.allclose(torch.sparse_coo_tensor(ei, w, (3, 3)).to_dense(), expect, atol=1e-6)


# ----------------------------------------------------------------------------- AAL
def _one_way(a, b, tau):
    a, b = F.normalize(a, dim=-1).tolist(), F.normalize(b, dim=-1).tolist()
    dot = lambda x, y: sum(p * q for p, q in zip(x, y))
    tot = 0.0
    for i in range(len(a)):
        den = sum(math.exp(dot(a[i], b[j]) / tau) for j in range(len(b)))
        tot += -math.log(math.exp(dot(a[i], b[i]) / tau) / den)
    return tot / len(a)


def test_aal_is_one_directional_with_the_anchor_detached():
    torch.manual_seed(0)
    p_mm, p_id, p_mix = (torch.randn(5, 4, requires_grad=True) for _ in range(3))
    got = AnchorRec.aal_loss(p_mm, p_id, p_mix, 0.3)
    expect = _one_way(p_mm, p_id, 0.3) + _one_way(p_mm, p_mix, 0.3)
    assert got.item() == pytest.approx(expect, rel=1e-5)
    swapped = _one_way(p_id, p_mm, 0.3) + _one_way(p_mix, p_mm, 0.3)
    assert abs(got.item() - swapped) > 1e-3                  # not the symmetric InfoNCE
    got.backward()
    g_mm = p_mm.grad.clone()
    q = p_mm.detach().clone().requires_grad_(True)
    AnchorRec.info_nce(q, p_id.detach(), 0.3).backward()    # the first term alone
    assert torch.allclose(g_mm, q.grad, atol=1e-6)           # the anchor: nothing from term 2
    assert p_mix.grad.abs().sum() > 0 and p_id.grad.abs().sum() > 0


def test_aal_mix_term_reaches_only_the_feature_projections(data):
    m = _model(data)
    g = m.prepare(data)
    _, pos, _ = _batch(data)
    assert m.projection["image"][0].in_features == modality_dims(data)["image"]   # p_v from raw f_v
    _, _, zi, h = m(g)
    feats = {k: v[pos] for k, v in g.features.items()}
    p_mm, p_id, p_mix = m.projections(zi[pos], {k: v[pos] for k, v in h.items()}, feats)
    AnchorRec.info_nce(p_mm.detach(), p_mix, m.tau).backward()
    touched = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched and all(n.startswith(("projection.image.", "projection.text.")) for n in touched)


# ----------------------------------------------------------------------------- L2, AMP, extra terms
def test_l2_acts_on_the_final_embeddings(data):
    m = _model(data)
    g = m.prepare(data)
    users, pos, neg = _batch(data)
    _, logs = m.loss(g, users, pos, neg)
    with torch.no_grad():
        user, item, _, _ = m(g)
        e0 = m.encoder.embedding.weight
    final = embedding_l2(user[users], item[pos], item[neg])
    layer0 = embedding_l2(e0[users], e0[m.num_users + pos], e0[m.num_users + neg])
    assert logs["reg"].item() == pytest.approx(final.item(), rel=1e-5)
    assert abs(final.item() - layer0.item()) > 1e-3 * layer0.item()
    # the L2 term alone reaches the gates (they act on the final embeddings only)
    m2 = _model(data, aal_weight=0.0, amp_weight=0.0, ui_margin_weight=0.0, smooth_weight=0.0)
    u2, i2, _, _ = m2(g)
    embedding_l2(u2[users], i2[pos], i2[neg]).backward()
    assert m2.gate["mm"].weight.grad.abs().sum() > 0


def test_amp_dot_form_by_hand():
    torch.manual_seed(1)
    h = {"mm": torch.randn(3, 4), "a": torch.randn(3, 4)}
    f = {"mm": torch.randn(3, 6), "a": torch.randn(3, 5)}
    w = {"mm": 1.0, "a": 0.03}
    got = AnchorRec.amp_loss(h, f, w)                        # default: the code's dot form
    expect = 0.0
    for k in h:
        fn = F.normalize(f[k], dim=-1)
        expect += w[k] * torch.linalg.norm(h[k] @ h[k].t() - fn @ fn.t()).item() / 3
    assert got.item() == pytest.approx(expect, rel=1e-5)
    cos = AnchorRec.amp_loss(h, f, w, similarity="cosine")
    assert cos.item() != pytest.approx(expect, rel=1e-3)


def test_margin_and_smoothness_terms(data):
    m = _model(data)
    g = m.prepare(data)
    users, pos, neg = _batch(data)
    _, logs = m.loss(g, users, pos, neg)
    with torch.no_grad():
        user, item, _, h = m(g)
        u = user[users]
        margin = F.relu(0.2 + F.cosine_similarity(u, item[neg]) - F.cosine_similarity(u, item[pos])).mean()
        S = g.item_graphs["mm"].to_dense()
        z = h["mm"]
        r, c = S.nonzero(as_tuple=True)
        smooth = (S[r, c] * (z[r] - z[c]).pow(2).sum(-1)).mean()
    assert logs["margin"].item() == pytest.approx(margin.item(), rel=1e-5)
    assert logs["smooth"].item() == pytest.approx(smooth.item(), rel=1e-5)
    # the user side of the margin term is detached: with or without it, the gradient that
    # reaches the final user embeddings is the same (only the items move)
    def user_grad(weight):
        mm = _model(data, ui_margin_weight=weight)
        forward, held = mm.forward, {}

        def fwd(graph, feats=None):
            u, i, zi, h = forward(graph, feats)
            held["u"] = u.detach().requires_grad_(True)
            held["i"] = i
            i.retain_grad()
            return held["u"], i, zi, h
        mm.forward = fwd
        mm.loss(g, users, pos, neg)[0].backward()
        return held["u"].grad, held["i"].grad
    (gu0, gi0), (gu1, gi1) = user_grad(0.0), user_grad(1.0)
    assert torch.allclose(gu0, gu1, atol=1e-7)
    assert not torch.allclose(gi0, gi1, atol=1e-7)


def test_full_loss_is_the_sum_of_its_terms(data):
    m = _model(data, aal_weight=0.3, amp_weight=0.2, reg_weight=0.05, ui_margin_weight=0.1,
               smooth_weight=0.4)
    g = m.prepare(data)
    total, logs = m.loss(g, *_batch(data))
    expect = (logs["bpr"] + 0.05 * logs["reg"] + 0.1 * logs["margin"] + 0.4 * logs["smooth"]
              + 0.3 * logs["aal"] + 0.2 * logs["amp"])
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)


# ----------------------------------------------------------------------------- init and norms
def test_initialisation_follows_the_code(data):
    m = _model(data)
    U, I, d = m.num_users, m.num_items, m.embedding_dim
    w = m.encoder.embedding.weight.detach()
    for part, n in ((w[:U], U), (w[U:], I)):                 # Xavier-uniform per table
        bound = math.sqrt(6.0 / (n + d))
        assert part.abs().max() <= bound + 1e-7
        assert part.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    lin = m.projection["id"][0]
    assert lin.weight.abs().max() <= math.sqrt(6.0 / (2 * d)) + 1e-7
    assert lin.bias.abs().sum() > 0                          # default bias init, not zeros
    assert m.gate["mm"].bias.abs().sum() > 0


def test_view_norms_are_comparable_at_init(data):
    m = _model(data)
    g = m.prepare(data)
    with torch.no_grad():
        user, item, h = m.views(g)
    for side in (user, item):
        ref = side["id"].norm(dim=-1).mean()
        for k, v in side.items():
            if k in ("id", "recon"):
                continue
            ratio = (v.norm(dim=-1).mean() / ref).item()
            assert 0.1 < ratio < 10, (k, ratio)
    ref = item["id"].norm(dim=-1).mean()
    for k, v in h.items():                                   # unfused views too
        assert 0.1 < (v.norm(dim=-1).mean() / ref).item() < 10
    # the anchor correction is scaled by lambda_recon = 5e-4
    assert item["recon"].norm(dim=-1).mean() < 0.01 * ref


def test_finetune_features_trains_an_offset_and_keeps_the_graphs(data):
    m = _model(data)                                         # the code's trainable features
    g = m.prepare(data)
    before = {k: s.to_dense().clone() for k, s in g.item_graphs.items()}
    loss, _ = m.loss(g, *_batch(data))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.feature_offset.values())
    assert all(torch.equal(before[k], g.item_graphs[k].to_dense()) for k in before)
    assert len(_model(data, finetune_features=False).feature_offset) == 0
