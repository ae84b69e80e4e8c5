"""Routing interpretability (magnet_pyg.interpret): statistics, attribution, buckets, report."""
import json
import math

import matplotlib
import pytest
import torch

from magnet_pyg.cli import main as cli_main
from magnet_pyg.data import (SyntheticSpec, modality_features, num_items, num_users,
                             split_edge_index, synthetic)
from magnet_pyg.data.schema import set_split_edges
from magnet_pyg.evaluate import Evaluator
from magnet_pyg.interpret import (ExpertLayout, RoutingAccumulator, RoutingMonitor,
                                  activity_buckets, attribute_pairs, bucket_ndcg, concentration,
                                  difficulty_buckets, dual_view_figure, dynamics_figure,
                                  epoch_dynamics, explain_figure, explain_user, load_run,
                                  pair_summary, routing_profile, split_routing_statistics,
                                  usage_figure, visibility)
from magnet_pyg.models.magnet import MAGNET
from magnet_pyg.nn import routing_statistics
from magnet_pyg.train import TrainConfig, Trainer

matplotlib.use("Agg")


def _magnet(data, **kw):
    dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
    kw.setdefault("embedding_dim", 16)
    kw.setdefault("view", "single")
    return MAGNET(num_users(data), num_items(data), dims, **kw)


# ----------------------------------------------------------------------------- statistics
def test_uniform_and_one_hot_routing():
    E = 9
    uni = pair_summary(torch.full((50, E), 1.0 / E, dtype=torch.float64))
    assert math.isclose(uni["n_eff"], E, rel_tol=1e-9)
    assert math.isclose(uni["hhi"], 1.0 / E, rel_tol=1e-9)
    assert math.isclose(uni["div"], 1.0, rel_tol=1e-9) and abs(uni["spec_score"]) < 1e-9
    assert math.isclose(uni["winner_share"], 1 / E) and math.isclose(uni["top3_mass"], 3 / E)
    assert abs(uni["top12_gap"]) < 1e-12 and math.isclose(uni["pair_entropy_norm"], 1.0)
    one = torch.zeros(50, E)
    one[:, 4] = 1.0
    hot = pair_summary(one)
    assert math.isclose(hot["n_eff"], 1.0) and math.isclose(hot["hhi"], 1.0)
    assert abs(hot["div"]) < 1e-12 and math.isclose(hot["spec_score"], 1.0)
    assert hot["winner_share"] == hot["top3_mass"] == hot["top12_gap"] == 1.0
    assert hot["max_load"] == hot["max_load_hard"] == 1.0
    # per-pair one-hot but spread over experts: the mean is uniform, the pairs are decisive
    spread = torch.eye(E).repeat(6, 1)
    s = pair_summary(spread)
    assert math.isclose(s["n_eff"], E, rel_tol=1e-9) and s["winner_share"] == 1.0
    assert math.isclose(s["max_load_hard"], 1 / E) and abs(s["pair_entropy_norm"]) < 1e-12


def test_statistics_agree_with_the_controller_and_stream():
    g = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(300, 9, generator=g) * 2, dim=1)
    ref = routing_statistics(pi)
    c = concentration(pi.mean(0))
    assert math.isclose(c["n_eff"], float(ref["n_eff"]), rel_tol=1e-5)
    assert math.isclose(c["hhi"], float(ref["hhi"]), rel_tol=1e-5)
    assert math.isclose(c["div"], float(ref["entropy_norm"]), rel_tol=1e-5)
    acc = RoutingAccumulator(9)
    for part in pi.split(37):
        acc.update(part)
    whole = pair_summary(pi)
    streamed = acc.compute()
    for k in ("n_eff", "hhi", "winner_share", "top3_mass", "top12_gap", "max_load_hard"):
        assert math.isclose(streamed[k], whole[k], rel_tol=1e-9)
    srt = pi.double().sort(1, descending=True).values
    assert math.isclose(whole["top12_gap"], float((srt[:, 0] - srt[:, 1]).mean()), rel_tol=1e-9)


def test_layout_group_family_and_source_masses(tiny):
    model = _magnet(tiny)
    lay = ExpertLayout.from_model(model)
    assert lay.labels[:3] == ("B-Dom", "B-Bal", "B-Com") and lay.sources == ("B", "image", "text")
    assert lay.families == ("Dom", "Bal", "Com")
    E = lay.num_experts
    uni = routing_profile(torch.full((E,), 1.0 / E), lay)
    for key in ("group_mass", "family_mass"):
        assert all(math.isclose(v, 1 / 3, rel_tol=1e-9) for v in uni[key].values())
    assert math.isclose(uni["content_share"], 2 / 3, rel_tol=1e-9)
    assert math.isclose(sum(uni["source_weight"].values()), 1.0, rel_tol=1e-6)
    # one expert: all its mass in its cell, its template as the source weights
    e = lay.labels.index("text-Com")
    p = torch.zeros(E, dtype=torch.float64)
    p[e] = 1.0
    prof = routing_profile(p, lay)
    assert prof["group_mass"]["text"] == 1.0 and prof["family_mass"]["Com"] == 1.0
    assert prof["grid"][2][2] == 1.0 and sum(map(sum, prof["grid"])) == 1.0
    w = model.head.expert_weights()[e]
    assert prof["source_weight"]["text"] == pytest.approx(float(w[2]))    # eps = 0.05
    assert prof["source_weight"]["text"] == pytest.approx(0.05)


def test_epoch_dynamics_switch_and_fallback():
    E = 3
    hist = []
    for e, (end, sw) in enumerate([(10, -1), (20, 14), (30, 14)]):
        hist.append({"epoch": e, "entropy_norm": 0.9 - 0.1 * e, "n_eff": 2.5, "lambda_cov": 0.1,
                     "lambda_conf": 0.0, "stage_end": 1.0 if sw < 0 else 2.0, "switch_step": sw,
                     "step_end": end, "expert_mass": [0.5, 0.3, 0.2]})
    d = epoch_dynamics(hist)
    assert d["basis"] == "mean"
    assert d["switch"] == {"step": 14, "epoch": 1, "position": pytest.approx(0.5 + 0.4)}
    assert d["spec_score"] == pytest.approx([0.1, 0.2, 0.3])
    assert d["winner_share"] == d["max_load"] == pytest.approx([0.5] * 3)
    assert d["top12_gap"] == pytest.approx([0.2] * 3) and d["top3_mass"] == pytest.approx([1.0] * 3)
    hhi = 0.25 + 0.09 + 0.04
    assert d["hhi_norm"][0] == pytest.approx((hhi - 1 / 3) / (2 / 3))


# ----------------------------------------------------------------------------- attribution
def test_attribution_masses_sum_to_one(tiny):
    torch.manual_seed(0)
    model = _magnet(tiny)
    with torch.no_grad():   # a non-trivial router
        model.head.router.weight.normal_(0, 2.0)
    graph = model.prepare(tiny)
    users, items = [0, 1, 2, 3], [5, 6, 7, 8]
    attrs = attribute_pairs(model, users, items, graph=graph)
    w = model.head.expert_weights().double()
    model.eval()
    state = model.inference(graph)
    ref = model.pair_scores(state, torch.tensor(users), torch.tensor(items))
    for k, a in enumerate(attrs):
        assert sum(map(sum, a["grid"])) == pytest.approx(1.0)
        assert sum(a["group_mass"].values()) == pytest.approx(1.0)
        assert sum(a["family_mass"].values()) == pytest.approx(1.0)
        assert sum(a["modality_contribution"].values()) == pytest.approx(1.0)
        assert sum(a["modality_contribution_dense"].values()) == pytest.approx(1.0)
        assert sum(a["pi"]) == pytest.approx(1.0)
        assert [t["index"] for t in a["top_experts"]] == ref.topk_index[k].tolist()
        assert sum(t["weight"] for t in a["top_experts"]) == pytest.approx(1.0)
        manual = sum(t["weight"] * w[t["index"]] for t in a["top_experts"])
        assert list(a["modality_contribution"].values()) == pytest.approx(manual.tolist())
        assert a["score"] == pytest.approx(float(ref.score[k]), abs=1e-5)
        p = torch.tensor(a["pi"])
        assert a["n_eff"] == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-5)
    ex = explain_user(model, tiny, user=3, top_n=5, state=state)
    train = split_edge_index(tiny, "train")
    seen = set(train[1, train[0] == 3].tolist())
    assert [a["rank"] for a in ex["items"]] == [1, 2, 3, 4, 5]
    assert not seen & {a["item"] for a in ex["items"]}
    assert sum(map(sum, ex["list"]["grid"])) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- buckets
def _toy_data():
    data = synthetic("tiny", seed=1)
    U, I = num_users(data), num_items(data)
    train = torch.tensor([[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5]])
    test = torch.tensor([[0, 0, 1, 2], [3, 4, 6, 7]])
    set_split_edges(data, train, torch.zeros(2, 0, dtype=torch.long), test)
    return data, U, I


def test_visibility_definition_and_buckets():
    data, U, I = _toy_data()
    nb = torch.arange(I).view(I, 1).repeat(1, 2)    # neighbours of i under each modality
    nb_a = torch.stack([(nb[:, 0] + 1) % I, (nb[:, 0] + 2) % I], 1)
    nb_s = torch.stack([(nb[:, 0] - 1) % I, (nb[:, 0] - 2) % I], 1)
    pairs = split_edge_index(data, "test")
    v = visibility(data, pairs, k=2, neighbors={"image": nb_a, "text": nb_s})
    # (0,3): N^S(3) = {2, 1} both in I_0 -> 2/4; (0,4): N^S(4) = {3, 2}: 1 -> 1/4;
    # (1,6): nothing; (2,7): N^S(7) = {6, 5}: 5 in I_2 -> 1/4
    assert v.tolist() == pytest.approx([0.5, 0.25, 0.0, 0.25])
    assert difficulty_buckets(v).tolist() == [0, 1, 2, 1]
    users = torch.tensor([2, 0, 1])     # degrees 2, 3, 1
    assert activity_buckets(data, users).tolist() == [1, 0, 2]
    many = torch.arange(U)
    b = activity_buckets(data, many)
    assert torch.bincount(b).tolist() == [40, 40, 40]


def test_bucket_ndcg_matches_the_evaluator(tiny):
    torch.manual_seed(0)
    model = _magnet(tiny)
    graph = model.prepare(tiny)
    model.eval()
    state = model.inference(graph)
    fn = lambda u: model.score(state, u)  # noqa: E731
    P = split_edge_index(tiny, "test").size(1)
    res = bucket_ndcg(fn, tiny, "test", torch.zeros(P, dtype=torch.long), 3)
    ref = Evaluator(tiny, ks=(20,)).evaluate(model, graph, "test", per_user=True, state=state)
    assert torch.equal(res["users"], ref["per_user"]["users"])
    assert torch.allclose(res["ndcg"], ref["per_user"]["ndcg@20"])
    assert torch.allclose(res["buckets"][0]["ndcg"], res["ndcg"])      # all in bucket 0
    assert res["buckets"][1]["users"].numel() == 0


# ----------------------------------------------------------------------------- report / explain
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        rc = cli_main(["train", "--model", "magnet", "--set", "view=single", "--data", "synthetic-tiny",
                       "--epochs", "2", "--set", "embedding_dim=16", "--seed", str(seed), "--threads", "1",
                       "--no-progress", "--out", str(root / name)])
        assert rc == 0
        out[name] = root / name
    return out


def _bars(ax):
    return [p.get_height() for c in ax.containers for p in c]


def _same(a, b):
    return all((x is None and math.isnan(y)) or x == pytest.approx(y, rel=1e-12, abs=1e-15)
               for x, y in zip(a, b)) and len(a) == len(b)


def test_report_files_and_figures_equal_json(runs, capsys):
    assert cli_main(["report", "--run", str(runs["a"]), "--compare", str(runs["b"]),
                     "--split", "test", "--threads", "1"]) == 0
    rep_dir = runs["a"] / "report"
    for f in ("report.json", "dynamics.png", "usage.png", "dual_view.png", "dynamics.pdf",
              "usage.pdf", "dual_view.pdf"):
        assert (rep_dir / f).stat().st_size > 0
    assert (rep_dir / "usage.pdf").read_bytes()[:5] == b"%PDF-"
    rep = json.loads((rep_dir / "report.json").read_text())
    assert "N_eff" in capsys.readouterr().out

    # the JSON numbers are the statistics of the run
    ctx = load_run(runs["a"])
    st = split_routing_statistics(ctx.model, ctx.data, "test", state=ctx.state)
    assert rep["routing"]["n_eff"] == pytest.approx(st["n_eff"])
    assert rep["routing"]["expert_mass"] == pytest.approx(st["expert_mass"])
    assert rep["routing"]["num_pairs"] == split_edge_index(ctx.data, "test").size(1)
    res = json.loads((runs["a"] / "results.json").read_text())
    assert rep["dynamics"]["entropy_norm"] == pytest.approx([r["entropy_norm"] for r in res["epochs"]])
    assert rep["dual_view"]["overall"]["ndcg_dv"] == pytest.approx(res["test"]["ndcg@20"])

    # every number drawn equals the JSON
    dyn = rep["dynamics"]
    fig = dynamics_figure(dyn)
    lines = {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines()}
    for label, key in ((r"normalised routing entropy $\tilde H$ (epoch mean)", "entropy_norm"),
                       (r"SpecScore $1-\tilde H$ (epoch mean)", "spec_score"),
                       (r"$\lambda_{cov}$: coverage loss weight (stage 1)", "lambda_cov"),
                       (r"$\lambda_{conf}$: confidence loss weight (stage 2)", "lambda_conf"),
                       ("MaxLoad share: largest expert's routing mass", "max_load"),
                       ("concentration: normalised HHI", "hhi_norm")):
        assert list(lines[label].get_xdata()) == dyn["epoch"]
        assert _same(dyn[key], list(lines[label].get_ydata()))
    if dyn["switch"]["position"] is not None:
        sw = [ln for ln in lines.values() if ln.get_label().startswith("stage switch")]
        assert sw and all(ln.get_xdata()[0] == dyn["switch"]["position"] for ln in sw)

    r = rep["routing"]
    fig = usage_figure(r)
    a, b, c = fig.axes[:3]
    assert _same(list(r["expert_mass"].values()), _bars(a))
    assert [t.get_text() for t in a.get_xticklabels()] == list(r["expert_mass"])
    srcs = list(r["source_weight"])
    assert _same([r["group_mass"][s] for s in srcs] + [r["source_weight"][s] for s in srcs], _bars(b))
    assert _same(list(r["family_mass"].values()), _bars(c))
    assert f"{r['content_share']:.3f}" in b.get_title() and f"{r['div']:.3f}" in c.get_title()

    dv = rep["dual_view"]
    fig = dual_view_figure(dv)
    a, b, c, d = fig.axes[:4]
    assert _same(dv["difficulty"]["gain_pct"], _bars(a))
    assert _same(dv["activity"]["gain_pct"], _bars(b))
    assert _same(dv["difficulty"]["composition"] + dv["activity"]["composition"], _bars(c))
    step = d.get_lines()[0]
    assert _same(dv["ecdf"]["x"], list(step.get_xdata())) and _same(dv["ecdf"]["y"], list(step.get_ydata()))
    assert sum(dv["difficulty"]["interactions"]) == dv["overall"]["interactions"]
    assert sum(dv["activity"]["composition"]) == pytest.approx(1.0)


def test_explain_cli_and_heatmap_equals_json(runs, capsys):
    assert cli_main(["explain", "--run", str(runs["a"]), "--user", "7", "--top", "5",
                     "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "user 7" in text and "group x family" in text
    d = json.loads((runs["a"] / "report" / "explain_user7.json").read_text())
    assert (runs["a"] / "report" / "explain_user7.png").stat().st_size > 0
    assert (runs["a"] / "report" / "explain_user7.pdf").stat().st_size > 0
    assert d["files"]["figure_pdf"] == str(runs["a"] / "report" / "explain_user7.pdf")
    assert len(d["items"]) == 5 and [a["rank"] for a in d["items"]] == [1, 2, 3, 4, 5]
    fig = explain_figure(d)
    heat, bars, contrib = fig.axes[0], fig.axes[1], fig.axes[2]
    img = heat.get_images()[0].get_array()
    assert _same(sum(d["list"]["grid"], []), sum(img.tolist(), []))
    prof = d["list"]
    assert _same(list(prof["family_mass"].values()) + list(prof["group_mass"].values()),
                 [p.get_width() for p in bars.patches])
    widths = [p.get_width() for p in contrib.patches]
    want = [a["modality_contribution"][s] for s in d["sources"] for a in d["items"]]
    assert _same(want, widths)
    assert sum(map(sum, prof["grid"])) == pytest.approx(1.0)
    assert cli_main(["explain", "--run", str(runs["a"]), "--user", "99999"]) == 2


def test_monitor_adds_pair_statistics_without_changing_training(tiny, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=512, lr=1e-2, patience=10, progress=False)
    torch.manual_seed(0)
    plain = _magnet(tiny)
    r0 = Trainer(cfg).fit(plain, tiny, "magnet")
    torch.manual_seed(0)
    model = _magnet(tiny)
    with RoutingMonitor(model):
        r1 = Trainer(cfg).fit(model, tiny, "magnet")
    assert "update" not in model.schedule.__dict__ and "epoch_logs" not in model.__dict__
    assert r1["test"] == r0["test"]
    assert [e["loss"] for e in r1["epochs"]] == [e["loss"] for e in r0["epochs"]]
    d = epoch_dynamics(r1["epochs"])
    assert d["basis"] == "pair" and len(d["steps"]["spec_score"]) == r1["epochs"][-1]["step_end"]
    for k in ("winner_share", "top3_mass", "top12_gap"):
        assert all(0.0 <= v <= 1.0 for v in d[k])
    assert all(w <= t for w, t in zip(d["winner_share"], d["top3_mass"]))
    assert r1["epochs"][0]["routing_num_pairs"] == split_edge_index(tiny, "train").size(1)


# ----------------------------------------------------------------------------- done when
def test_routing_relies_on_the_informative_modality():
    """One content modality carries the item factors (noise 0.1), the other is drowned in noise
    (noise 100). After a short training, routing mass lands on experts that rely on the
    informative modality rather than on the noisy one.

    Reliance is measured with ``source_weight`` (sum_e pibar_e w_e[s]), not with the
    anchor-group mass: the router escapes the noise mostly through ``noise-Com`` (the Com
    expert anchored on noise keeps only eps = 5 % of it), so the *anchor* mass of the noisy
    group is high precisely because routing avoids the noise (see
    :mod:`magnet_pyg.interpret.statistics`).

    What is robust per seed (10 of 10 seeds checked): the noisy modality's reliance falls far
    below the 1/3 of uniform routing, and never above the informative one. How the freed mass
    splits between behaviour and the informative modality depends on which low-noise expert
    the confidence stage locks in first (the switch happens at step W, routing collapses within
    a few epochs); when it locks onto a behaviour-anchored expert (B-Dom: 0.1 / 0.1 on the two
    modalities) the two content modalities tie by construction. So the strict preference is
    asserted over three seeds together.
    """
    rel = []
    for seed in (0, 1, 2):
        spec = SyntheticSpec(num_users=200, num_items=150, num_interactions=4000, latent_dim=8,
                             modalities=(("good", 32, 0.1), ("noise", 32, 100.0)))
        data = synthetic(spec, seed=seed)
        torch.manual_seed(seed)
        # raw features: L2-normalising pure noise turns it into a per-item random ID, which
        # is informative in its own right (see MAGNET's feature_norm)
        model = _magnet(data, embedding_dim=32, feature_norm="none")
        cfg = TrainConfig(epochs=10, batch_size=512, lr=1e-2, patience=100, seed=seed,
                          progress=False)
        Trainer(cfg).fit(model, data, "magnet")
        sw = split_routing_statistics(model, data, "test")["source_weight"]
        assert sw["noise"] < 0.15, sw                        # uniform routing: 1/3
        assert sw["good"] >= sw["noise"] - 1e-3, sw
        rel.append(sw)
    good = sum(r["good"] for r in rel) / 3
    noise = sum(r["noise"] for r in rel) / 3
    assert good > 1 / 3 > noise and good > 2 * noise, rel
