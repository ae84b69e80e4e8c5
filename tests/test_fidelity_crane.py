"""Fidelity of CRANE (paper + public code) and FREEDOM (MMRec's code and configuration).

The properties listed in ``docs/fidelity.md`` (CRANE, FREEDOM): the views'
scale at initialisation, degree-sensitive pruning (fraction and sampling probabilities), the
authors' initialisation, fine-tuned raw features over a frozen item graph, and defaults equal
to the authors' configuration. Small synthetic data only."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
from conftest import modality_dims

from magnet_pyg.data import modality_features, num_items, num_users, split_edge_index
from magnet_pyg.models.crane import CRANE, RecursiveCrossModalAttention
from magnet_pyg.graph.item_graph import item_graph_weights
from magnet_pyg.models.freedom import FREEDOM
from magnet_pyg.nn.losses import view_infonce
from magnet_pyg.nn.pruning import degree_edge_probability, degree_sensitive_prune

#: MMRec ``src/configs/model/FREEDOM.yaml`` and ``src/configs/overall.yaml`` (tuned values: the grid)
MMREC_FREEDOM = {"embedding_size": 64, "feat_embed_dim": 64, "knn_k": 10, "n_mm_layers": 1,
                 "n_ui_layers": 2, "mm_image_weight": 0.1, "dropout": (0.8, 0.9),
                 "reg_weight": (0.0, 1e-5, 1e-4, 1e-3), "learning_rate": 1e-3,
                 "train_batch_size": 2048, "stopping_step": 20, "weight_decay": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")






def _model(cls, d, **kw):
    torch.manual_seed(0)
    return cls(num_users(d), num_items(d), modality_dims(d), **kw)


def _defaults(cls):
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _mean_norm(x):
    return float(x.norm(dim=-1).mean())


# ----------------------------------------------------------------------------- defaults
def test_freedom_defaults_are_mmrec_config():
    d = _defaults(FREEDOM)
    assert d["embedding_dim"] == MMREC_FREEDOM["embedding_size"] == MMREC_FREEDOM["feat_embed_dim"]
    assert d["knn_k"] == MMREC_FREEDOM["knn_k"]
    assert d["num_mm_layers"] == MMREC_FREEDOM["n_mm_layers"]
    assert d["num_ui_layers"] == MMREC_FREEDOM["n_ui_layers"]
    assert d["edge_dropout"] in MMREC_FREEDOM["dropout"]
    assert d["feat_weight"] in MMREC_FREEDOM["reg_weight"]
    assert d["reg_weight"] == 0.0 and d["finetune_features"] is True and d["mm_weights"] is None
    assert FREEDOM.default_train == {"lr": MMREC_FREEDOM["learning_rate"],
                                     "batch_size": MMREC_FREEDOM["train_batch_size"]}
    assert "weight_decay" not in FREEDOM.default_train  # the CLI's default is 0, as MMRec's
    assert FREEDOM.default_patience == MMREC_FREEDOM["stopping_step"]


def test_item_graph_weights_follow_mm_image_weight():
    w = MMREC_FREEDOM["mm_image_weight"]
    assert item_graph_weights(["image", "text"]) == pytest.approx([w, 1 - w])
    assert item_graph_weights(["audio", "image"]) == pytest.approx([1 - w, w])  # TikTok's order
    assert item_graph_weights(["image", "text", "audio"]) == pytest.approx([w, (1 - w) / 2, (1 - w) / 2])
    assert item_graph_weights(["text", "keyword"]) == pytest.approx([0.5, 0.5])  # no image modality
    assert item_graph_weights(["image", "text"], [1.0, 3.0]) == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError):
        item_graph_weights(["image", "text"], [1.0])


def test_crane_defaults_follow_paper_and_public_code():
    d = _defaults(CRANE)
    # paper: R = 3, L_UI = 2, L_II = 1, summed profiles
    assert (d["num_rounds"], d["num_ui_layers"], d["num_ii_layers"], d["profile"]) == (3, 2, 1, "sum")
    # public code (FREEDOM-based): 4 heads, k = 10, prune 80 %, no L2, fine-tuned features,
    # content-only item graph input, 0.1 image weight, batch 2048, lr 1e-3
    assert (d["num_heads"], d["knn_k"], d["edge_dropout"], d["reg_weight"]) == (4, 10, 0.8, 0.0)
    assert d["finetune_features"] is True and d["id_on_item_graph"] is False and d["mm_weights"] is None
    assert CRANE.default_train == {"lr": 1e-3, "batch_size": 2048}


# ----------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("cls", [FREEDOM, CRANE], ids=lambda c: c.__name__)
def test_id_tables_are_xavier_per_table(cls, data):
    m = _model(cls, data)
    U, I = num_users(data), num_items(data)
    w = m.encoder.embedding.weight.detach()
    for rows, n in ((w[:U], U), (w[U:], I)):
        bound = math.sqrt(6.0 / (n + w.size(1)))
        assert float(rows.abs().max()) <= bound
        assert float(rows.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_freedom_projection_default_linear_init(data):
    m = _model(FREEDOM, data)
    for name, lin in m.proj.items():
        bound = 1.0 / math.sqrt(lin.in_features)
        w, b = lin.weight.detach(), lin.bias.detach()
        assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
        assert float(b.abs().max()) > 0  # PyTorch's default, not zeros


def test_rca_init_is_multihead_attention_and_keeps_scale():
    torch.manual_seed(0)
    d = 16
    rca = RecursiveCrossModalAttention(d, num_rounds=3, num_heads=4)
    bound = math.sqrt(6.0 / (4 * d))  # xavier_uniform_ of the stacked [3d, d] in-projection
    for lin in (rca.q, rca.k, rca.v):
        assert float(lin.weight.abs().max()) <= bound and float(lin.weight.abs().max()) > 0.8 * bound
        assert not bool(lin.bias.any())
    assert not bool(rca.out.bias.any())
    # no normalisation inside the rounds: the output keeps the scale of the input, whatever it
    # is (a pre-LayerNorm round adds sqrt(d)-sized updates to small tokens)
    for scale in (1e-3, 1.0, 1e2):
        x = scale * torch.randn(50, 2, d) / math.sqrt(d)
        ratio = _mean_norm(rca(x).reshape(-1, d)) / _mean_norm(x.reshape(-1, d))
        assert 0.5 < ratio < 3.0, (scale, ratio)


def test_crane_views_comparable_at_init(data):
    m = _model(CRANE, data).eval()
    g = m.prepare(data)
    with torch.no_grad():
        z_u, z_i, e_u, e_i, h_u, h_i = m(g)
        tokens = m.rca(m.tokens(g))
    U = num_users(data)
    views = {"semantic users": (h_u, e_u), "semantic items": (h_i, e_i),
             "final users": (z_u, e_u), "final items": (z_i, e_i)}
    for j, name in enumerate(m.modalities):
        views[f"{name} users"] = (tokens[:U, j], e_u)
        views[f"{name} items"] = (tokens[U:, j], e_i)
    for view, (x, ref) in views.items():
        assert _mean_norm(x) <= 10 * _mean_norm(ref), view
    # the ID view carries a real share of the score (content-only ranking before)
    with torch.no_grad():
        id_part = (e_u @ e_i.t()).abs().mean() + (e_u @ h_i.t()).abs().mean() + (h_u @ e_i.t()).abs().mean()
        total = id_part + (h_u @ h_i.t()).abs().mean()
    assert float(id_part / total) > 0.1


def test_crane_input_scale_is_calibrated_once(data):
    m = _model(CRANE, data)
    assert not bool(m.input_scaled)
    g = m.prepare(data)
    assert bool(m.input_scaled)
    target = _mean_norm(m.encoder.embedding.weight.detach())
    with torch.no_grad():
        tok = m.tokens(g)
    for j in range(tok.size(1)):
        assert _mean_norm(tok[:, j]) == pytest.approx(target, rel=1e-4)
    scale = m.input_scale.clone()
    m.prepare(data)
    assert torch.equal(m.input_scale, scale)  # a second prepare (or a loaded checkpoint) keeps it
    assert "input_scale" in m.state_dict() and "input_scaled" in m.state_dict()


def test_crane_id_only_users(data):
    """``profile="none"`` (the public code's users): no user semantic view, the item side and
    its RCA are those of the profile models, the user InfoNCE term is gone, and it trains."""
    m = _model(CRANE, data, profile="none")
    g = m.prepare(data)
    assert g.pool is None
    with torch.no_grad():
        z_u, z_i, e_u, e_i, h_u, h_i = m(g)
        tokens = m.tokens(g)
    assert torch.equal(z_u, e_u) and not h_u.any()
    assert tokens.size(0) == num_items(data)  # the RCA runs over the items alone
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    loss, logs = m.loss(g, users, pos, neg)
    items = pos.unique()
    assert float(logs["cl"]) == pytest.approx(float(view_infonce(e_i[items], h_i[items], m.tau)))
    loss.backward()
    assert m.encoder.embedding.weight.grad[:num_users(data)].abs().sum() > 0
    assert all(p.grad is not None for p in m.proj.parameters())
    with pytest.raises(ValueError, match="profile"):
        _model(CRANE, data, profile="attention")


# ----------------------------------------------------------------------------- pruning
def _kept_pairs(adj, U):
    idx = adj.to_sparse_coo().coalesce().indices()
    return {(int(r), int(c) - U) for r, c in idx.t() if r < U}


@pytest.mark.parametrize("cls", [FREEDOM, CRANE], ids=lambda c: c.__name__)
@pytest.mark.parametrize("rho", [0.8, 0.9])
def test_pruning_keeps_configured_fraction(cls, rho, data):
    m = _model(cls, data, edge_dropout=rho)
    g = m.prepare(data)
    train = split_edge_index(data, "train")
    E, U, I = train.size(1), num_users(data), num_items(data)
    a = m.on_epoch_start(g, 0, torch.Generator().manual_seed(1)).train_adj
    b = m.on_epoch_start(g, 0, torch.Generator().manual_seed(1)).train_adj
    assert torch.equal(a.to_dense(), b.to_dense())            # randomness only from the generator
    assert a._nnz() == 2 * int(E * (1 - rho))                  # both directions of the kept edges
    kept = _kept_pairs(a, U)
    assert len(kept) == int(E * (1 - rho)) and kept <= set(map(tuple, train.t().tolist()))
    # the kept graph is re-normalised with its own degrees
    ku = torch.tensor(sorted(kept)).t()
    du, di = torch.bincount(ku[0], minlength=U).float(), torch.bincount(ku[1], minlength=I).float()
    dense = a.to_dense()
    u0, i0 = next(iter(kept))
    assert float(dense[u0, U + i0]) == pytest.approx(float((du[u0] * di[i0]).rsqrt()), rel=1e-5)
    assert g.adj._nnz() == 2 * E                               # inference keeps the full graph
    assert m.on_epoch_start(g, 0, torch.Generator()).adj is g.adj


def test_pruning_draws_proportional_to_inverse_sqrt_degree():
    # users 0..2, items 0..2: d_u = (3, 1, 1), d_i = (3, 1, 1) -> weights 1/3 and 1/sqrt(3)
    ei = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 0, 0]])
    p = degree_edge_probability(ei, 3, 3)
    assert torch.allclose(p, torch.tensor([1 / 3] + [3 ** -0.5] * 4))
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    n = 3000
    for _ in range(n):  # keep one edge (rho = 0.8 of 5): a single draw, P(e) = p_e / sum(p)
        kept = _kept_pairs(degree_sensitive_prune(ei, p, 3, 3, 0.8, gen), 3)
        assert len(kept) == 1
        counts[[tuple(e) for e in ei.t().tolist()].index(next(iter(kept)))] += 1
    assert torch.allclose(counts / n, p / p.sum(), atol=0.03)


def test_crane_trains_on_pruned_graph_and_ranks_on_full(data):
    m = _model(CRANE, data, edge_dropout=0.8)
    g = m.prepare(data)
    pruned = m.on_epoch_start(g, 0, torch.Generator().manual_seed(0))
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    full_loss = m.loss(g, users, pos, neg)[0]
    pruned_loss = m.loss(pruned, users, pos, neg)[0]
    assert not torch.allclose(full_loss, pruned_loss)
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m.inference(pruned)[0], m.inference(g)[0])


# ----------------------------------------------------------------------------- features
@pytest.mark.parametrize("cls", [FREEDOM, CRANE], ids=lambda c: c.__name__)
def test_raw_features_fine_tuned_item_graph_frozen(cls, data):
    kw = {"feat_weight": 1e-3} if cls is FREEDOM else {}
    m = _model(cls, data, **kw)
    g = m.prepare(data)
    raw = modality_features(data)
    for name, table in m.feature_tables().items():
        assert torch.equal(table.detach(), raw[name])
    graph_adj = (g.mm_adj if cls is FREEDOM else g.item_adj).to_dense().clone()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    users, pos, neg = torch.arange(8), torch.arange(8), torch.arange(8, 16)
    for _ in range(2):
        loss = m.loss(g, users, pos, neg)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    name = m.modalities[0]
    assert not torch.equal(m.feature_tables()[name].detach(), raw[name])  # the tables learn
    assert torch.equal((g.mm_adj if cls is FREEDOM else g.item_adj).to_dense(), graph_adj)
    tuned = m.feature_tables()[name].detach().clone()
    m.prepare(data)  # a second prepare keeps the fine-tuned tables
    assert torch.equal(m.feature_tables()[name].detach(), tuned)
    fresh = _model(cls, data, **kw)
    fresh.load_state_dict(m.state_dict())
    fresh.prepare(data)
    assert torch.equal(fresh.feature_tables()[name].detach(), tuned)
    frozen = _model(cls, data, finetune_features=False)
    assert frozen.feature_tables is None
    assert not any(p.shape == raw[name].shape for p in frozen.parameters())
