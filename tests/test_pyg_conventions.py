"""PyG conventions: item features as ``data["item"].x`` / ``data.x_dict``, splits as
``edge_label_index`` / ``edge_label``, layers that refuse an unnormalised graph, figures in
PNG and PDF with every term defined."""
import copy
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch_geometric.nn import LGConv

from magnet_pyg.data import (RATED_BY, RATES, keep_modalities, load_mmrec, modality_features,
                             resplit, set_item_features, set_modalities, set_modality,
                             split_edge_index, split_graph, split_graphs)
from magnet_pyg.interpret import dual_view_figure, dynamics_figure, explain_figure, save, usage_figure
from magnet_pyg.nn import (DualViewEncoder, ModalityCues, bipartite_normalized_adjacency,
                           normalized_adjacency, row_normalized, transpose_csr)

DOCS = Path(__file__).resolve().parents[1] / "docs"


# ----------------------------------------------------------------------------- node features
def _same_storage(a, b):
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_item_x_is_the_modalities_side_by_side(data):
    x = data["item"].x
    assert data.x_dict.keys() == {"item"} and data.x_dict["item"] is x
    assert "x" not in data["user"]                              # users have no features
    assert data.modality_dims == {"image": 16, "text": 8} and tuple(x.shape) == (80, 24)
    feats = modality_features(data)
    assert list(feats) == ["image", "text"]
    assert torch.equal(feats["image"], x[:, :16]) and torch.equal(feats["text"], x[:, 16:])
    assert all(_same_storage(f, x) for f in feats.values())     # views: the features are held once
    assert x.dtype == torch.float32
    # a clone copies the one matrix; the views of the copy are views of the copied x
    c = data.clone()
    assert not _same_storage(c["item"].x, x)
    assert all(_same_storage(f, c["item"].x) for f in modality_features(c).values())
    r = resplit(data, seed=5)
    assert torch.equal(r["item"].x, x) and r.modality_dims == data.modality_dims


def test_one_modality_is_x_itself_and_no_modality_has_no_x(data):
    one = keep_modalities(data, ["text"])
    assert one.modality_dims == {"text": 8}
    assert modality_features(one)["text"] is one["item"].x
    assert torch.equal(one["item"].x, modality_features(data)["text"])
    assert not _same_storage(one["item"].x, data["item"].x)     # a copy of the kept block only
    swapped = keep_modalities(data, ["text", "image"])
    assert torch.equal(swapped["item"].x, torch.cat([data["item"].x[:, 16:], data["item"].x[:, :16]], 1))
    none = copy.copy(data)
    set_modalities(none, {})
    assert modality_features(none) == {} and "x" not in none["item"]
    with pytest.raises(KeyError, match="'x'"):                  # PyG's own error for a featureless graph
        none.x_dict
    assert data["item"].x.shape == (80, 24)                     # the original is untouched
    # data.modalities may select a subset of the columns, without copying
    sub = copy.copy(data)
    sub.modalities = ["text"]
    assert list(modality_features(sub)) == ["text"]
    assert _same_storage(modality_features(sub)["text"], data["item"].x)


def test_writing_features_is_checked(data):
    d = copy.copy(data)
    x = torch.arange(80 * 3, dtype=torch.float32).view(80, 3)
    set_modality(d, "audio", x)
    assert d.modality_dims == {"image": 16, "text": 8, "audio": 3}
    assert torch.equal(modality_features(d)["audio"], x)
    assert torch.equal(d["item"].x[:, :24], data["item"].x)
    with pytest.raises(ValueError, match=r"modality 'audio' is torch.float64 .* one dtype and device"):
        set_modalities(d, {"image": modality_features(data)["image"], "audio": x.double()})
    with pytest.raises(ValueError, match=r"expected a \[80, d\] matrix, got shape \(79, 3\)"):
        set_modality(d, "audio", x[:-1])
    with pytest.raises(ValueError, match=r"expected a \[80, 5\] matrix .* got shape \(80, 4\)"):
        set_item_features(d, torch.zeros(80, 4), {"a": 2, "b": 3})
    with pytest.raises(ValueError, match="zero columns"):
        set_item_features(d, torch.zeros(80, 2), {"a": 2, "b": 0})
    broken = copy.copy(data)
    broken["item"].x = data["item"].x[:, :20]
    with pytest.raises(ValueError, match=r"shape \(80, 20\) but data.modality_dims .* sums to 24"):
        modality_features(broken)
    # data with one matrix per modality (no modality_dims) is still read
    old = copy.copy(data)
    del old["item"].x
    del old.modality_dims
    old["item"].x_image, old["item"].x_text = x, x[:, :2]
    legacy = modality_features(old)
    assert list(legacy) == ["image", "text"] and legacy["image"] is x and legacy["text"].shape == (80, 2)


def test_sports_x_dict(sports_path):
    d = load_mmrec(sports_path)
    assert d.modality_dims == {"keyword": 384, "text": 384}
    x = d.x_dict["item"]
    assert tuple(x.shape) == (18357, 768) and x.dtype == torch.float32 and x.is_contiguous()
    assert d.x_dict.keys() == {"item"}
    feats = modality_features(d)
    for name in ("keyword", "text"):
        want = torch.from_numpy(np.load(sports_path / f"{name}_feat.npy").astype(np.float32))
        assert torch.equal(feats[name], want) and _same_storage(feats[name], x)


# ----------------------------------------------------------------------------- splits
def test_edge_label_index_equals_the_split_pairs(data):
    old = {"train": data[RATES].edge_index, "valid": data.valid_edge_index, "test": data.test_edge_index}
    views = split_graphs(data)
    assert len(views) == 3
    for split, view in zip(("train", "valid", "test"), views):
        store = view[RATES]
        n = old[split].size(1)
        assert store.edge_label_index.shape == (2, n) and torch.equal(store.edge_label_index, old[split])
        assert store.edge_label_index is split_edge_index(data, split)   # the same tensor, no copy
        assert store.edge_label.dtype == torch.float32 and torch.equal(store.edge_label, torch.ones(n))
        assert torch.equal(store.edge_index, old["train"])                  # training graph everywhere
        assert torch.equal(view[RATED_BY].edge_index, data[RATED_BY].edge_index)
        assert "valid_edge_index" not in view and "test_edge_index" not in view
        assert view["item"].x is data["item"].x
    assert [v.size(1) for v in old.values()] == [1252, 174, 174]
    # the dataset itself is unchanged
    assert "edge_label_index" not in data[RATES] and torch.equal(data.valid_edge_index, old["valid"])
    assert torch.equal(split_graph(data, "test")[RATES].edge_label_index, data.test_edge_index)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        split_graph(data, "val")


def test_split_view_feeds_link_neighbor_loader(data):
    from torch_geometric.loader import LinkNeighborLoader
    from magnet_pyg.train.sampled import check_sampling_backend
    check_sampling_backend()
    val = split_graph(data, "valid")
    loader = LinkNeighborLoader(val, num_neighbors=[4, 4],
                                edge_label_index=(RATES, val[RATES].edge_label_index),
                                edge_label=val[RATES].edge_label, batch_size=64, shuffle=False)
    pairs = []
    for batch in loader:
        s = batch[RATES]
        pairs.append(torch.stack([batch["user"].n_id[s.edge_label_index[0]],
                                  batch["item"].n_id[s.edge_label_index[1]]]))
        assert torch.equal(s.edge_label, torch.ones(s.edge_label.numel()))
        assert torch.equal(batch["item"].x, data["item"].x[batch["item"].n_id])
    assert torch.equal(torch.cat(pairs, 1), data.valid_edge_index)


# ----------------------------------------------------------------------------- layers
def _graph(seed=0, U=7, I=9, n=30):
    g = torch.Generator().manual_seed(seed)
    ui = torch.stack([torch.randint(0, U, (n,), generator=g), torch.randint(0, I, (n,), generator=g)])
    ui = ui.unique(dim=1)
    u, i = ui[0], ui[1] + U
    return ui, torch.stack([torch.cat([u, i]), torch.cat([i, u])])


def _old_propagate(adj, x, num_layers):
    """The encoder's propagation before its input check: Eq. 4-5 with torch.sparse.mm."""
    out = x
    for _ in range(num_layers):
        x = torch.sparse.mm(adj, x)
        out = out + x
    return out / (num_layers + 1)


def test_dual_view_encoder_refuses_an_unnormalised_graph(one_thread):
    from torch_geometric import EdgeIndex
    from torch_geometric.typing import SparseTensor
    from torch_geometric.utils import to_torch_csr_tensor
    ui, ei = _graph()
    enc = DualViewEncoder(7, 9, 8)
    adj = bipartite_normalized_adjacency(ui, 7, 9)
    raw = "a raw edge_index, which is not normalised"
    build = r"bipartite_normalized_adjacency\(edge_index, num_users=7, num_items=9\)"
    cases = [(ei, raw), (EdgeIndex(ei, sparse_size=(16, 16)), raw),
             (to_torch_csr_tensor(ei, size=(16, 16)), "binary matrix"),
             (adj.to_dense(), "a dense tensor"),
             (torch.sparse_coo_tensor(ei, torch.full((ei.size(1),), 2.0), (16, 16)), r"entries in \[2, 2\]"),
             (torch.sparse_coo_tensor(ei, -torch.ones(ei.size(1)), (16, 16)), r"entries in \[-1, -1\]"),
             (bipartite_normalized_adjacency(ui, 7, 10), r"got shape \[17, 17\]"),
             (torch.sparse_coo_tensor(ei, torch.ones(ei.size(1), dtype=torch.long), (16, 16)),
              "torch.int64 values")]
    if SparseTensor.__module__.startswith("torch_sparse"):
        cases.append((SparseTensor.from_edge_index(ei, sparse_sizes=(16, 16)), "SparseTensor without values"))
    for bad, why in cases:
        for call in (lambda a: enc(a), lambda a: enc(adj, a), lambda a: enc.propagate(a)):
            with pytest.raises(ValueError, match="DualViewEncoder: adj") as e:
                call(bad)
            assert re.search(why, str(e.value)), str(e.value)
            if "got shape" not in str(e.value):
                assert re.search(build, str(e.value))
    with pytest.raises(ValueError, match="DualViewEncoder: adj_uig"):
        enc(adj, ei)
    with pytest.raises(ValueError, match=r"must be a normalised sparse \[16, 16\] matrix .* got a builtins.list"):
        enc([[0, 1], [1, 0]])


def test_dual_view_encoder_normalised_path_is_unchanged(one_thread):
    ui, ei = _graph()
    ui2, _ = _graph(seed=3)
    torch.manual_seed(0)
    adj = bipartite_normalized_adjacency(ui, 7, 9)
    aug = bipartite_normalized_adjacency(torch.cat([ui, ui2], 1), 7, 9)
    assert torch.equal(normalized_adjacency(ei, 16).to_dense(), adj.to_dense())
    for propagation in ("spmm", "lgconv"):
        torch.manual_seed(0)
        enc = DualViewEncoder(7, 9, 8, num_layers=3, propagation=propagation)
        w = enc.embedding.weight.detach()
        z, z_ui, z_uig = enc(adj, aug)
        if propagation == "spmm":
            want_ui, want_uig = _old_propagate(adj, w, 3), _old_propagate(aug, w, 3)
        else:
            conv = LGConv(normalize=False)
            want_ui = (w + conv(w, adj) + conv(conv(w, adj), adj) + conv(conv(conv(w, adj), adj), adj)) / 4
            want_uig = (w + conv(w, aug) + conv(conv(w, aug), aug) + conv(conv(conv(w, aug), aug), aug)) / 4
        assert torch.equal(z_ui.detach(), want_ui) and torch.equal(z_uig.detach(), want_uig)
        assert torch.equal(z.detach(), 0.5 * (want_ui + want_uig))
        assert torch.equal(enc.propagate(adj).detach(), want_ui)
    # a raw edge_index would have been propagated as an unweighted sum: far larger embeddings
    unguarded = _old_propagate(torch.sparse_coo_tensor(ei, torch.ones(ei.size(1)), (16, 16)), w, 3)
    assert unguarded.norm() > 3 * want_ui.norm()


def test_modality_cues_refuse_an_unnormalised_history(one_thread):
    from torch_geometric.utils import to_torch_csr_tensor
    ui, _ = _graph()
    cues = ModalityCues({"vis": 5}, 4)
    x = {"vis": torch.randn(9, 5)}
    hist = row_normalized(ui, 7, 9)
    for bad, why in ((ui, "a raw edge_index"), (to_torch_csr_tensor(ui, size=(7, 9)), "binary matrix"),
                     (row_normalized(ui, 7, 10), r"got shape \[7, 10\]")):
        with pytest.raises(ValueError, match="ModalityCues: user_item") as e:
            cues(x, bad)
        assert why in str(e.value) or re.search(why, str(e.value))
    with pytest.raises(ValueError, match=r"row_normalized\(edge_index, num_users, num_items=9\)"):
        cues(x, ui)
    with pytest.raises(ValueError, match=r"ModalityCues: item_user must be .* \[9, 7\]"):
        cues(x, hist, hist)
    h_u, h_i = cues(x, hist, transpose_csr(hist))
    assert torch.equal(h_u, torch.sparse.mm(hist, h_i.reshape(9, -1)).view(7, 1, 4))


# ----------------------------------------------------------------------------- figures
SRC = ["B", "image", "text"]
FAM = ["Dom", "Bal", "Com"]
LABELS = [f"{g}-{f}" for g in SRC for f in FAM]
GRID = [[0.1, 0.12, 0.11], [0.13, 0.1, 0.09], [0.12, 0.13, 0.1]]


def _figures(only=None):
    dyn = {"num_experts": 9, "basis": "pair", "epoch": [0, 1, 2], "entropy_norm": [0.9, 0.8, 0.7],
           "spec_score": [0.1, 0.2, 0.3], "n_eff": [8.0, 7.0, 6.0], "epoch_n_eff": [8.5, 7.5, 6.5],
           "hhi_norm": [0.01, 0.02, 0.05], "lambda_cov": [1e-3, 5e-4, 0.0], "lambda_conf": [0.0, 0.0, 1e-3],
           "winner_share": [0.2, 0.3, 0.4], "top3_mass": [0.5, 0.6, 0.7], "top12_gap": [0.05, 0.1, 0.2],
           "max_load": [0.15, 0.2, 0.25], "switch": {"position": 1.5, "step": 40}}
    usage = {"expert_mass": dict(zip(LABELS, [1 / 9] * 9)), "uniform_expert_mass": 1 / 9, "hhi": 0.112,
             "source_weight": {"B": 0.3, "image": 0.4, "text": 0.3}, "group_mass": {"B": 0.33, "image": 0.35, "text": 0.32},
             "content_share": 0.67, "n_eff": 8.9, "num_experts": 9, "uniform_source_share": 1 / 3,
             "family_mass": {"Dom": 0.3, "Bal": 0.4, "Com": 0.3}, "div": 0.99, "split": "test", "num_pairs": 174}
    side = {"buckets": ["Easy", "Medium", "Hard"], "gain_pct": [5.0, -2.0, None], "ndcg_dv": [0.5, 0.2, 0.0],
            "ndcg_sv": [0.4, 0.25, 0.0], "num_users": [4, 100, 3], "composition": [0.1, 0.8, 0.1]}
    act = dict(side, buckets=["Head", "Mid", "Tail"])
    dv = {"metric": "ndcg@20", "split": "test", "difficulty": side, "activity": act,
          "ecdf": {"x": [-0.1, 0.0, 0.2], "y": [0.2, 0.7, 1.0]},
          "overall": {"ndcg_dv": 0.23, "ndcg_sv": 0.24, "gain_pct": -4.2}}
    items = [{"item": 76, "rank": 1, "in_test": True, "in_valid": False,
              "modality_contribution": {"B": 0.2, "image": 0.5, "text": 0.3}},
             {"item": 25, "rank": 2, "in_test": False, "in_valid": False,
              "modality_contribution": {"B": 0.3, "image": 0.4, "text": 0.3}}]
    expl = {"user": 7, "mode": "top", "top_n": 2, "history_size": 4, "sources": SRC, "families": FAM,
            "items": items, "list": {"grid": GRID, "n_eff": 8.9, "hhi": 0.11,
                                     "family_mass": {"Dom": 0.35, "Bal": 0.35, "Com": 0.3},
                                     "group_mass": {"B": 0.33, "image": 0.32, "text": 0.35},
                                     "expert_mass": dict(zip(LABELS, [1 / 9] * 9))}}
    draw = {"dynamics": (dynamics_figure, dyn), "usage": (usage_figure, usage),
            "dual_view": (dual_view_figure, dv), "explain": (explain_figure, expl)}
    return {k: f(d) for k, (f, d) in draw.items() if only is None or k in only}


#: abbreviation shown in a figure -> how its caption (and docs/figures.md) defines it
DEFINED = {r"\bB\b": "B = behaviour", r"\bDom\b": "Dom = dominant", r"\bBal\b": "Bal = balanced",
           r"\bCom\b": "Com = complementary", r"\bHHI\b": "HHI = Herfindahl-Hirschman",
           r"N_\{eff\}": "$N_{eff} = ", r"\bDiv\b": "Div = ", r"\bDV\b": "DV = ", r"\bSV\b": "SV = single view",
           r"NDCG": "NDCG@k = ", r"ECDF": "ECDF = ", r"SpecScore": "SpecScore = ", r"Top3Mass": "Top3Mass = ",
           r"MaxLoad": "MaxLoad share = ", r"\\pi": r"$\pi$ = routing distribution",
           r"Head": "Head (most active)", r"Easy": "Easy v >= 0.5"}


def _shown_text(fig):
    texts = [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        leg = ax.get_legend()
        if leg is not None:
            texts += [t.get_text() for t in leg.get_texts()]
    return "\n".join(texts)


def test_figures_define_every_term_and_spell_out_legends():
    for name, fig in _figures().items():
        shown = _shown_text(fig)
        caption = fig.texts[-1].get_text()
        assert "A+S" not in shown and "(A+S)" not in caption
        found = [pat for pat in DEFINED if re.search(pat, shown)]
        assert found, name
        for pat in found:
            assert DEFINED[pat] in caption, (name, pat)
        for ax in fig.axes:
            leg = ax.get_legend()
            for t in ([] if leg is None else leg.get_texts()):
                assert len(t.get_text().split()) >= 2, (name, t.get_text())   # no bare abbreviation
        fig.clf()
    usage = _figures(["usage"])["usage"]
    assert [t.get_text() for t in usage.axes[1].get_xticklabels()] == ["B (behaviour)", "image (content)",
                                                                       "text (content)"]
    assert "experts anchored on content (image + text) 0.670" in usage.axes[1].get_title()
    docs = (DOCS / "figures.md").read_text()
    for term in ("**B (behaviour source)**", "**Dom**", "**Bal**", "**Com**", "**HHI (Herfindahl-Hirschman index)**",
                 "**N_eff (effective number of experts)**", "**Div**", "**DV / SV**", "**NDCG@k**", "**ECDF**",
                 "**SpecScore**", "**Top3Mass**", "**MaxLoad share**", "**Easy**", "**Head**", "**Group mass**",
                 "**Template-weighted share**", "**Modality contribution**"):
        assert term in docs, term
    plt.close("all")


def test_figures_written_in_png_and_pdf(tmp_path):
    """The report writes every figure through save() (tests/test_interpret.py checks the report's
    PNG and PDF files); here save() itself."""
    magic = {"png": b"\x89PNG", "pdf": b"%PDF-", "svg": b"<?xml"}
    paths = save(_figures(["usage"])["usage"], tmp_path / "usage")
    assert paths == [tmp_path / "usage.png", tmp_path / "usage.pdf"]
    for p in paths:
        assert p.read_bytes()[:len(magic[p.suffix[1:]])] == magic[p.suffix[1:]]
    paths = save(_figures(["dual_view"])["dual_view"], tmp_path / "again.png", formats=("svg",))
    assert paths == [tmp_path / "again.svg"] and paths[0].read_bytes()[:5] == b"<?xml"
    before = sorted(p.name for p in tmp_path.iterdir())
    for bad in (("png", "jpg"), (), ("pdf", "PDF")):
        with pytest.raises(ValueError, match=r"figure formats must be distinct values among \['png', 'pdf', 'svg'\]"):
            save(_figures(["usage"])["usage"], tmp_path / "bad", formats=bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == before      # nothing written, no temporary left
    plt.close("all")
