"""MAGNET's triplet templates and head for n = 1 + M sources (M content modalities)."""
import pytest
import torch

from magnet_pyg.data import keep_modalities, load_mmrec, modality_features, num_items, num_users
from magnet_pyg.models import MAGNET
from magnet_pyg.nn import TripletMoEHead
from magnet_pyg.nn.templates import triplet_expert_pool


def test_three_sources_are_the_papers_templates():
    """n = 3 (the paper): Eq. 12-15 with alpha 0.6, beta 0.2, delta 0.5, eps 0.05, exactly."""
    pool = triplet_expert_pool(["A", "S"], alpha=0.6, beta=0.2, delta=0.5, eps=0.05)
    b = 1 / 3 + 0.2 / 6
    o = 1 / 3 - 0.2 / 12
    expect = torch.tensor([
        [0.8, 0.1, 0.1], [b, o, o], [0.05, 0.475, 0.475],      # B-Dom, B-Bal, B-Com (aux A, S)
        [0.1, 0.8, 0.1], [o, b, o], [0.475, 0.05, 0.475],      # A-Dom, A-Bal, A-Com (aux B, S)
        [0.1, 0.1, 0.8], [o, o, b], [0.475, 0.475, 0.05],      # S-Dom, S-Bal, S-Com (aux A, B)
    ])
    assert pool.labels() == [f"{g}-{t}" for g in "BAS" for t in ("Dom", "Bal", "Com")]
    assert torch.allclose(pool.weights, expect, atol=1e-7, rtol=0)
    delta = triplet_expert_pool(["A", "S"], delta=0.8).weights
    assert torch.allclose(delta[2], torch.tensor([0.05, 0.76, 0.19]))   # B-Com: A up
    assert torch.allclose(delta[8], torch.tensor([0.19, 0.76, 0.05]))   # S-Com: A up, B down


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_templates_are_distributions_with_the_anchor_in_its_slot(n):
    sources = ["B"] + [f"m{k}" for k in range(1, n)]
    pool = triplet_expert_pool(sources[1:], alpha=0.6, beta=0.2, delta=0.4, eps=0.05)
    w = pool.weights
    assert w.shape == (3 * n, n) and pool.num_experts == 3 * n
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(3 * n))
    g = pool.group_index
    for e, fam in enumerate(pool.families):
        anchor = w[e, g[e]]
        others = torch.cat([w[e, :g[e]], w[e, g[e] + 1:]])
        if fam in ("Dom", "Bal"):     # the anchor carries the most mass
            assert anchor > others.max()
        else:                         # Com: the anchor carries eps only
            assert torch.isclose(anchor, torch.tensor(0.05))


@pytest.mark.parametrize("num_modalities", [1, 2, 3])
@pytest.mark.parametrize("expert_type", ["linear", "diag"])
def test_full_ranking_equals_pair_scores(num_modalities, expert_type):
    torch.manual_seed(num_modalities)
    d, B, I = 8, 5, 37
    head = TripletMoEHead(d, [f"m{k}" for k in range(num_modalities)], top_k=min(4, 3 * (1 + num_modalities)),
                          expert_type=expert_type, residual=True).eval()
    with torch.no_grad():   # a non-trivial score head (it is zero-initialised under residual)
        head.score.weight.normal_()
    z_u, z_i = torch.randn(B, d), torch.randn(I, d)
    h_u, h_i = torch.randn(B, num_modalities, d), torch.randn(I, num_modalities, d)
    full = head.score_all(z_u, h_u, z_i, h_i, item_chunk=16)
    uu = torch.arange(B).repeat_interleave(I)
    ii = torch.arange(I).repeat(B)
    pair = head(z_u[uu], z_i[ii], h_u[uu], h_i[ii]).score.view(B, I)
    assert head.num_experts == 3 * (1 + num_modalities)
    assert torch.allclose(full, pair, atol=1e-5)


def test_magnet_with_one_modality_trains_and_ranks(tiny):
    one = keep_modalities(tiny, modality_features(tiny).__iter__().__next__().split())
    assert len(modality_features(one)) == 1
    m = MAGNET(num_users(one), num_items(one), {k: v.size(1) for k, v in modality_features(one).items()},
               embedding_dim=8, view="single")
    g = m.prepare(one)
    users, pos, neg = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    loss, _ = m.loss(g, users, pos, neg)
    loss.backward()
    assert torch.isfinite(loss) and m.head.num_experts == 6
    m.eval()
    state = m.inference(g)
    full = m.score(state, users)
    assert torch.allclose(full[torch.arange(3), pos], m.score(state, users, pos), atol=1e-5)
    with pytest.raises(ValueError, match="at least one content modality"):
        MAGNET(3, 3, {})


def test_bpr_reduction_sum_is_batch_times_mean(tiny):
    dims = {k: v.size(1) for k, v in modality_features(tiny).items()}
    users, pos, neg = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])
    logs = {}
    for red in ("mean", "sum"):
        torch.manual_seed(0)
        m = MAGNET(num_users(tiny), num_items(tiny), dims, embedding_dim=8, view="single", dropout=0.0,
                   bpr_reduction=red, lambda_r=0.0)
        _, logs[red] = m.loss(m.prepare(tiny), users, pos, neg)
    assert torch.isclose(logs["sum"]["bpr"], 4 * logs["mean"]["bpr"])
    with pytest.raises(ValueError, match="bpr_reduction"):
        MAGNET(3, 3, dims, bpr_reduction="max")


@pytest.mark.realdata
def test_magnet_on_sports_text_alone(sports_path):
    """Sports with the {text} modality alone: MAGNET-SV builds, takes gradient steps and ranks
    exactly (full-ranking scores equal pair scores)."""
    data = load_mmrec(sports_path, modalities=["text"])
    assert list(modality_features(data)) == ["text"]
    torch.manual_seed(0)
    m = MAGNET(num_users(data), num_items(data), {"text": 384}, embedding_dim=16, view="single")
    g = m.prepare(data)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    users, pos, neg = torch.arange(64), torch.arange(64), torch.arange(64, 128)
    for _ in range(2):
        loss, _ = m.loss(g, users, pos, neg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    state = m.inference(g)
    full = m.score(state, users[:4])
    assert full.shape == (4, num_items(data)) and torch.isfinite(full).all()
    assert torch.allclose(full[torch.arange(4), pos[:4]], m.score(state, users[:4], pos[:4]), atol=1e-5)
