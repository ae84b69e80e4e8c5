"""Numerical checks of the MAGNET layers in :mod:`magnet_pyg.nn` (paper Eq. 4-31)."""
import math

import pytest
import torch
from torch_geometric.nn import LightGCN
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from magnet_pyg.nn import (DualViewEncoder, EntropySchedule, FusionHead, ModalityCues,
                           TripletMoEHead, aux_order, bal_template,
                           bipartite_normalized_adjacency, com_template, confidence_loss,
                           coverage_loss, dom_template, group_permutation,
                           normalized_adjacency, routing_statistics, row_normalized,
                           sparse_mm, transpose_csr, triplet_expert_pool, view_infonce)

B_, A_, S_ = 0, 1, 2


def _random_ui(num_users=7, num_items=9, nnz=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    pairs = torch.stack([torch.randint(0, num_users, (nnz,), generator=g),
                         torch.randint(0, num_items, (nnz,), generator=g)])
    return torch.unique(pairs, dim=1)


# ----------------------------------------------------------------------------- templates

def test_templates_closed_forms_and_sum_to_one():
    a, b, d, eps = 0.6, 0.2, 0.3, 0.05
    assert torch.allclose(dom_template(a), torch.tensor([0.4 * 0.5 + 0.6, 0.1, 0.1]))
    assert torch.allclose(bal_template(b), torch.tensor([1 / 3 + b / 6, 1 / 3 - b / 12,
                                                         1 / 3 - b / 12]))
    assert torch.allclose(com_template(d, eps), torch.tensor([eps, 0.95 * d, 0.95 * (1 - d)]))
    for w in (dom_template(0.0), dom_template(1.0), bal_template(1.0), com_template(1.0, 0.1)):
        assert torch.isclose(w.sum(), torch.tensor(1.0))
    assert torch.allclose(dom_template(1.0), torch.tensor([1.0, 0.0, 0.0]))


def test_pool_anchor_slot_aux_order_and_delta_meaning():
    assert aux_order(B_) == [B_, A_, S_]
    assert aux_order(A_) == [A_, B_, S_]
    assert aux_order(S_) == [S_, A_, B_]
    canon = torch.tensor([0.7, 0.2, 0.1])
    for g in range(3):
        assert torch.allclose(group_permutation(g) @ canon,
                              torch.zeros(3).index_put_((torch.tensor(aux_order(g)),), canon))
    pool = triplet_expert_pool(["image", "audio"], alpha=0.6, beta=0.2, delta=0.8, eps=0.05,
                               behavior="B")
    assert len(pool) == 9 and pool.weights.shape == (9, 3)
    assert torch.allclose(pool.weights.sum(1), torch.ones(9))
    assert pool.sources == ("B", "image", "audio")
    for e in range(9):
        g, t = pool.group_index[e].item(), pool.families[e]
        assert e == 3 * g + ("Dom", "Bal", "Com").index(t)      # e <-> (g, t), group-major
        w = pool.weights[e]
        if t in ("Dom", "Bal"):   # anchor holds the largest mass
            assert w.argmax().item() == g
        else:                     # Com: the anchor keeps exactly eps
            assert math.isclose(w[g].item(), 0.05, abs_tol=1e-7)
    # delta is the A/S split of the Com family: A gets eps + 2(1-eps)delta, B gets 1
    com = pool.weights[[e for e in range(9) if pool.families[e] == "Com"]].sum(0)
    assert torch.allclose(com, torch.tensor([1.0, 0.05 + 2 * 0.95 * 0.8, 0.05 + 2 * 0.95 * 0.2]))


@pytest.mark.parametrize("families,size", [("bal", 3), ("bal+dom", 6), ("bal+com", 6),
                                           ("dom+com", 6), ("full", 9), (["Com", "Dom"], 6)])
def test_family_compositions(families, size):
    pool = triplet_expert_pool(2, families)
    assert len(pool) == size
    assert set(pool.families) == set({"bal": ["Bal"], "bal+dom": ["Bal", "Dom"],
                                      "bal+com": ["Bal", "Com"], "dom+com": ["Dom", "Com"],
                                      "full": ["Dom", "Bal", "Com"]}.get(
        families if isinstance(families, str) else "dom+com"))


@pytest.mark.parametrize("p", [1, 2, 5])
def test_expert_splitting(p):
    pool = triplet_expert_pool(2, "full", split=p)
    assert len(pool) == 9 * p
    base = triplet_expert_pool(2, "full").weights
    assert torch.equal(pool.weights, base.repeat_interleave(p, dim=0))
    assert pool.replicas[:p] == tuple(range(p))


@pytest.mark.parametrize("m", [1, 3])
def test_pool_other_modality_counts(m):
    pool = triplet_expert_pool(m)
    assert pool.weights.shape == ((m + 1) * 3, m + 1)
    assert torch.allclose(pool.weights.sum(1), torch.ones(len(pool)))
    assert (pool.weights >= 0).all()


def test_template_bad_options():
    with pytest.raises(ValueError):
        dom_template(1.5)
    with pytest.raises(ValueError):
        triplet_expert_pool(2, "bal+xyz")
    with pytest.raises(ValueError):
        triplet_expert_pool(2, split=0)
    with pytest.raises(ValueError):
        triplet_expert_pool(0)


# ----------------------------------------------------------------------------- schedule

def _pi_with_entropy(high: bool, e=9, b=4):
    if high:
        return torch.full((b, e), 1.0 / e)
    pi = torch.zeros(b, e)
    pi[:, 0] = 1.0
    return pi


def test_schedule_switches_after_window_and_never_back():
    sch = EntropySchedule(threshold=0.9, window=3, lambda_r=0.3)
    seq = [1, 1, 0, 1, 1]                         # counter resets at the low step
    for k, high in enumerate(seq):
        out = sch.update(_pi_with_entropy(bool(high)))
        assert out["stage"] == 1
    assert out["counter"] == 2
    out = sch.update(_pi_with_entropy(True))      # third consecutive qualifying step
    assert out["stage"] == 2 and out["switched"] == 1.0 and out["counter"] == 3
    assert int(sch.switch_step) == 6
    for _ in range(3):                            # low entropy afterwards: stays in stage 2
        out = sch.update(_pi_with_entropy(False))
        assert out["stage"] == 2 and out["switched"] == 0.0 and out["counter"] == 0


def test_schedule_counter_threshold_inclusive_and_stats():
    sch = EntropySchedule(threshold=1.0, window=1)
    out = sch.update(torch.full((3, 4), 0.25))
    assert math.isclose(out["entropy"], math.log(4), rel_tol=1e-6)
    assert math.isclose(out["n_eff"], 4.0, rel_tol=1e-5)
    assert out["stage"] == 2                       # H~ = 1 >= H* = 1 (Eq. 26 uses >=)


def test_lin_ent_and_variants_exact():
    pi = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    h = routing_statistics(pi)["entropy_norm"].item()
    pibar = pi.mean(0)
    assert math.isclose(h, -(pibar * pibar.log()).sum().item() / math.log(3), rel_tol=1e-6)
    lam = 0.3
    expect = {"lin": ((1 - h), h), "quad": ((1 - h) ** 2, h ** 2), "const": (1.0, 1.0),
              "rev": (h, 1 - h)}
    for strategy, (cov, conf) in expect.items():
        s1 = EntropySchedule(threshold=1.0, window=5, lambda_r=lam, strategy=strategy)
        out = s1.update(pi)
        assert out["stage"] == 1
        assert math.isclose(out["lambda_cov"], lam * cov, rel_tol=1e-6)
        assert out["lambda_conf"] == 0.0
        s2 = EntropySchedule(lambda_r=lam, strategy=strategy, mode="confidence")
        out = s2.update(pi)
        assert out["stage"] == 2 and out["lambda_cov"] == 0.0
        assert math.isclose(out["lambda_conf"], lam * conf, rel_tol=1e-6)


def test_schedule_modes():
    high = _pi_with_entropy(True)
    cov = EntropySchedule(threshold=0.5, window=1, mode="coverage")
    assert all(cov.update(high)["stage"] == 1 for _ in range(5))
    fixed = EntropySchedule(mode="fixed", switch_at=3)
    stages = [fixed.update(_pi_with_entropy(False))["stage"] for _ in range(5)]
    assert stages == [1, 1, 2, 2, 2]
    off = EntropySchedule(threshold=0.5, window=1, mode="off")
    out = off.update(high)
    assert out["lambda_cov"] == 0.0 and out["lambda_conf"] == 0.0


def test_schedule_state_dict_roundtrip_and_eval_frozen():
    sch = EntropySchedule(threshold=0.9, window=2)
    for high in (1, 1, 0, 1):
        sch.update(_pi_with_entropy(bool(high)))
    state = sch.state_dict()
    assert set(state) == {"stage", "counter", "step", "switch_step"}
    other = EntropySchedule(threshold=0.9, window=2)
    other.load_state_dict(state)
    for name in state:
        assert torch.equal(getattr(other, name), getattr(sch, name))
    assert int(other.stage) == 2 and int(other.counter) == 1 and int(other.step) == 4
    other.eval()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    other.update(_pi_with_entropy(False))
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


@pytest.mark.parametrize("kwargs", [dict(threshold=1.2), dict(threshold=-0.1), dict(window=0),
                                    dict(window=1.5), dict(lambda_r=-0.1),
                                    dict(strategy="cubic"), dict(mode="sometimes"),
                                    dict(mode="fixed"), dict(switch_at=3)])
def test_schedule_bad_options(kwargs):
    with pytest.raises(ValueError):
        EntropySchedule(**kwargs)


# ----------------------------------------------------------------------------- losses

def test_coverage_and_confidence_losses():
    uniform_mean = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert coverage_loss(uniform_mean).item() == pytest.approx(0.0, abs=1e-12)
    assert coverage_loss(torch.full((4, 9), 1 / 9)).item() == pytest.approx(0.0, abs=1e-12)
    skew = torch.tensor([[1.0, 0.0, 0.0]])
    assert coverage_loss(skew).item() == pytest.approx((2 / 3) ** 2 + 2 * (1 / 3) ** 2)
    assert confidence_loss(torch.full((2, 9), 1 / 9)).item() == pytest.approx(math.log(9))
    assert confidence_loss(uniform_mean).item() == pytest.approx(0.0, abs=1e-12)
    logits = torch.randn(5, 9, requires_grad=True)
    (coverage_loss(logits.softmax(-1)) + confidence_loss(logits.softmax(-1))).backward()
    assert torch.isfinite(logits.grad).all()


def test_view_infonce_symmetric_and_minimal_for_identical_views():
    torch.manual_seed(0)
    za, zb = torch.randn(16, 8), torch.randn(16, 8)
    assert torch.isclose(view_infonce(za, zb, 0.5), view_infonce(zb, za, 0.5))
    same = view_infonce(za, za, 0.2)
    perturbed = view_infonce(za, za + 0.5 * torch.randn_like(za), 0.2)
    assert same < perturbed < view_infonce(za, zb, 0.2)
    with pytest.raises(ValueError):
        view_infonce(za, zb, 0.0)


# ----------------------------------------------------------------------------- MoE head

def _inputs(b=6, d=8, m=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, d, generator=g), torch.randn(b, d, generator=g),
            torch.randn(b, m, d, generator=g), torch.randn(b, m, d, generator=g))


def test_topk_renormalisation():
    torch.manual_seed(0)
    head = TripletMoEHead(8, 2, top_k=4)
    out = head(*_inputs())
    assert out.pi.shape == (6, 9) and torch.allclose(out.pi.sum(-1), torch.ones(6))
    assert torch.allclose(out.topk_weight.sum(-1), torch.ones(6))
    dense = torch.zeros(6, 9).scatter(1, out.topk_index, out.topk_weight)
    assert ((dense > 0).sum(-1) == 4).all()
    sel = out.pi.gather(1, out.topk_index)
    assert torch.allclose(out.topk_weight, sel / sel.sum(-1, keepdim=True), atol=1e-6)
    assert torch.equal(out.topk_index, out.pi.topk(4).indices)


def test_gradients_reach_only_selected_experts_and_router():
    torch.manual_seed(1)
    head = TripletMoEHead(8, 2, top_k=3)
    z_u, z_i, c_u, c_i = _inputs(b=1)
    out = head(z_u, z_i, c_u, c_i)
    out.score.sum().backward()
    sel = set(out.topk_index[0].tolist())
    for e in range(9):
        grads = [head.f_weight.grad[e], head.f_bias.grad[e], head.g_weight.grad[e],
                 head.g_bias.grad[e], head.router.weight.grad[e]]
        if e in sel:
            assert all(gr.abs().sum() > 0 for gr in grads)
        else:
            assert all(gr.abs().sum() == 0 for gr in grads)
    assert head.score.weight.grad.abs().sum() > 0


def test_detached_router_trains_only_the_router():
    torch.manual_seed(1)
    z_u, z_i, c_u, c_i = _inputs(b=4)
    z_u.requires_grad_(True)
    z_i.requires_grad_(True)
    for detach in (False, True):
        head = TripletMoEHead(8, 2, top_k=3, detach_router=detach)
        z_u.grad = z_i.grad = None
        pi = torch.softmax(head.router_logits(z_u, z_i), -1)
        coverage_loss(pi).add(confidence_loss(pi)).backward()  # routing losses only
        assert head.router.weight.grad.abs().sum() > 0
        assert (z_u.grad is None) == detach and (z_i.grad is None) == detach
        z_u.grad = z_i.grad = None
        head(z_u, z_i, c_u, c_i).score.sum().backward()  # the experts still reach z
        assert z_u.grad.abs().sum() > 0 and z_i.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [dict(), dict(top_k=1), dict(top_k=9),
                                    dict(expert_type="diag"), dict(residual=True, top_k=2),
                                    dict(residual=True, detach_router=True),
                                    dict(templates=False), dict(activation="relu",
                                                                expert_init="xavier"),
                                    dict(families="bal+com", split=2, top_k=2,
                                         hidden_channels=5)])
def test_full_ranking_equals_pairwise(kwargs):
    torch.manual_seed(2)
    head = TripletMoEHead(8, ["image", "audio"], dropout=0.3, **kwargs).eval()
    nu, ni, d = 5, 13, 8
    z_u, z_i = torch.randn(nu, d), torch.randn(ni, d)
    c_u, c_i = torch.randn(nu, 2, d), torch.randn(ni, 2, d)
    with torch.no_grad():
        full = head.score_all(z_u, c_u, z_i, c_i, item_chunk=4)
        uu = torch.arange(nu).repeat_interleave(ni)
        ii = torch.arange(ni).repeat(nu)
        pair = head(z_u[uu], z_i[ii], c_u[uu], c_i[ii]).score.view(nu, ni)
    assert full.shape == (nu, ni)
    assert torch.allclose(full, pair, atol=1e-5)


@pytest.mark.parametrize("m", [1, 3])
def test_moe_other_modality_counts(m):
    torch.manual_seed(8)
    head = TripletMoEHead(6, m, top_k=2).eval()
    z_u, z_i = torch.randn(3, 6), torch.randn(4, 6)
    c_u, c_i = [torch.randn(3, 6) for _ in range(m)], torch.randn(4, m, 6)
    with torch.no_grad():
        full = head.score_all(z_u, c_u, z_i, c_i)
        pair = torch.stack([head(z_u[[u] * 4], z_i, torch.stack(c_u, 1)[[u] * 4], c_i).score
                            for u in range(3)])
    assert head.num_experts == 3 * (m + 1)
    assert torch.allclose(full, pair, atol=1e-5)
    with pytest.raises(ValueError):
        head(z_u, z_u, c_i[:3, :0], c_i[:3, :0])


def test_fusion_head_same_interface():
    torch.manual_seed(3)
    head = FusionHead(8, 2).eval()
    z_u, z_i, c_u, c_i = _inputs()
    out = head(z_u, z_i, c_u, c_i)
    assert out.score.shape == (6,) and out.pi.shape == (6, 1)
    full = head.score_all(z_u, c_u, z_i, c_i, item_chunk=4)
    assert torch.allclose(full.diagonal(), out.score, atol=1e-5)
    assert FusionHead(8, 0)(z_u, z_i, None, None).score.shape == (6,)   # behaviour only


def test_free_experts_learn_mixtures():
    head = TripletMoEHead(8, 2, templates=False)
    assert head.template_weights is None
    assert torch.allclose(head.expert_weights(), torch.full((9, 3), 1 / 3))
    out = head(*_inputs())
    out.score.sum().backward()
    assert head.mix_logits.grad is not None and head.mix_logits.grad.abs().sum() > 0
    fixed = TripletMoEHead(8, 2)
    assert not any(p is fixed.template_weights for p in fixed.parameters())
    assert fixed.expert_labels()[0] == "B-Dom"


@pytest.mark.parametrize("kwargs", [dict(top_k=10), dict(top_k=0), dict(num_modalities=0),
                                    dict(families="bal", top_k=4), dict(num_experts=5),
                                    dict(expert_init="zeros"), dict(dropout=1.0),
                                    dict(expert_type="mlp"), dict(expert_type="diag", hidden_channels=4)])
def test_moe_bad_options(kwargs):
    kwargs = {"num_modalities": 2, **kwargs}
    with pytest.raises(ValueError):
        TripletMoEHead(8, **kwargs)


# ----------------------------------------------------------------------------- encoder

def test_normalized_adjacency_matches_gcn_norm():
    ui = _random_ui()
    adj = bipartite_normalized_adjacency(ui, 7, 9)
    u, i = ui[0], ui[1] + 7
    ei = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    ei2, w = gcn_norm(ei, None, 16, add_self_loops=False)
    dense = torch.zeros(16, 16).index_put_((ei2[1], ei2[0]), w, accumulate=True)
    assert adj.layout == torch.sparse_csr
    assert torch.allclose(adj.to_dense(), dense, atol=1e-6)
    assert torch.allclose(adj.to_dense(), adj.to_dense().t())
    assert torch.allclose(normalized_adjacency(ei, 16).to_dense(), dense, atol=1e-6)


def test_encoder_equals_pyg_lightgcn():
    torch.manual_seed(4)
    ui = _random_ui()
    u, i = ui[0], ui[1] + 7
    ei = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    ref = LightGCN(16, 8, num_layers=2)
    for propagation in ("spmm", "lgconv"):
        enc = DualViewEncoder(7, 9, 8, num_layers=2, propagation=propagation)
        enc.embedding.weight.data.copy_(ref.embedding.weight.data)
        z, z_ui, z_uig = enc(bipartite_normalized_adjacency(ui, 7, 9))
        assert z_uig is None and z is z_ui
        assert torch.allclose(z, ref.get_embedding(ei), atol=1e-6)


def test_dual_view_with_identical_views_equals_single_view_and_grads():
    torch.manual_seed(5)
    ui = _random_ui()
    adj = bipartite_normalized_adjacency(ui, 7, 9)
    enc = DualViewEncoder(7, 9, 8)
    z_sv, _, _ = enc(adj)
    z_dv, z_ui, z_uig = enc(adj, adj)
    assert torch.allclose(z_dv, z_sv, atol=1e-7) and torch.allclose(z_ui, z_uig)
    # augmented view changes z; spmm and lgconv agree on values and gradients
    aug = bipartite_normalized_adjacency(torch.cat([ui, _random_ui(seed=9)], 1), 7, 9)
    grads, outs = [], []
    for propagation in ("spmm", "lgconv"):
        e2 = DualViewEncoder(7, 9, 8, propagation=propagation)
        e2.embedding.weight.data.copy_(enc.embedding.weight.data)
        z, _, _ = e2(adj, aug)
        (z.pow(2).sum()).backward()
        outs.append(z.detach())
        grads.append(e2.embedding.weight.grad)
    assert not torch.allclose(outs[0], z_sv)
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    u, it = enc.split(z_sv)
    assert u.shape == (7, 8) and it.shape == (9, 8)


def test_sparse_mm_backward_with_transpose():
    torch.manual_seed(6)
    r = row_normalized(_random_ui(), 7, 9)
    x = torch.randn(9, 4, requires_grad=True)
    g = torch.randn(7, 4)
    (sparse_mm(r, x, adj_t=transpose_csr(r)) * g).sum().backward()
    assert torch.allclose(x.grad, r.to_dense().t() @ g, atol=1e-6)


# ----------------------------------------------------------------------------- cues

def test_modality_cues_history_pooling():
    torch.manual_seed(7)
    ui = _random_ui()
    cues = ModalityCues({"vis": 5, "sound": 3}, 8)
    x = {"sound": torch.randn(9, 3), "vis": torch.randn(9, 5)}
    h_u, h_i = cues(x, row_normalized(ui, 7, 9))
    assert h_i.shape == (9, 2, 8) and h_u.shape == (7, 2, 8)
    assert torch.allclose(h_i[:, 0], cues.proj["vis"](x["vis"]))
    for u in range(7):
        items = ui[1][ui[0] == u]
        expect = h_i[items].mean(0) if items.numel() else torch.zeros(2, 8)
        assert torch.allclose(h_u[u], expect, atol=1e-6)
    with pytest.raises(ValueError):
        cues({"vis": x["vis"]})


def test_diag_experts_start_as_template_dot_products_and_residual_adds_behaviour():
    torch.manual_seed(4)
    z_u, z_i, c_u, c_i = _inputs()
    head = TripletMoEHead(8, 2, expert_type="diag", top_k=9).eval()
    assert head.f_weight.shape == (9, 1, 8)
    w = head.expert_weights()                                   # [E, 3]
    r_u, r_i = torch.cat([z_u[:, None], c_u], 1), torch.cat([z_i[:, None], c_i], 1)
    x_u, x_i = torch.einsum("en,bnd->ebd", w, r_u), torch.einsum("en,bnd->ebd", w, r_i)
    pi = torch.softmax(head.router_logits(z_u, z_i), -1)
    expect = (pi * (x_u * x_i).sum(-1).t()).sum(-1)
    assert torch.allclose(head(z_u, z_i, c_u, c_i).score, expect, atol=1e-5)
    res = TripletMoEHead(8, 2, expert_type="diag", top_k=9, residual=True).eval()
    assert torch.allclose(res(z_u, z_i, c_u, c_i).score, (z_u * z_i).sum(-1), atol=1e-6)  # starts as z.z
    res.load_state_dict(head.state_dict())
    assert torch.allclose(res(z_u, z_i, c_u, c_i).score, expect + (z_u * z_i).sum(-1), atol=1e-5)


def test_leave_one_out_cues_equal_pooling_without_the_target():
    torch.manual_seed(9)
    ui = _random_ui()
    cues = ModalityCues({"vis": 5, "sound": 3}, 4)
    x = {"vis": torch.randn(9, 5), "sound": torch.randn(9, 3)}
    h_u, h_i = cues(x, row_normalized(ui, 7, 9))
    deg = torch.bincount(ui[0], minlength=7)
    users, items = ui
    loo = ModalityCues.leave_one_out(h_u[users], h_i[items], deg[users])
    for k, (u, i) in enumerate(ui.t().tolist()):
        rest = [j for j in ui[1][ui[0] == u].tolist() if j != i]
        expect = h_i[rest].mean(0) if rest else torch.zeros(2, 4)
        assert torch.allclose(loo[k], expect, atol=1e-5)
