import numpy as np
import pytest
import torch

from magnet_pyg.data import (PAPER_SPLIT_SEEDS, RATED_BY, RATES, DataFormatError, describe, load_mmrec,
                             modality_features, per_user_split, resplit, split_edge_index, synthetic)


def write_inter(folder, text, name="toy"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text(text)
    return folder


GOOD = "userID\titemID\tx_label\n0\t0\t0\n0\t1\t0\n0\t2\t1\n1\t1\t0\n1\t2\t2\n2\t0\t1\n"


def test_load_three_columns(tmp_path):
    d = load_mmrec(write_inter(tmp_path / "toy", GOOD))
    assert d["user"].num_nodes == 3 and d["item"].num_nodes == 3
    assert split_edge_index(d, "train").tolist() == [[0, 0, 1], [0, 1, 1]]
    assert torch.equal(d[RATED_BY].edge_index, d[RATES].edge_index.flip(0))
    assert split_edge_index(d, "valid").tolist() == [[0], [2]]  # user 2 is cold-start: dropped
    assert split_edge_index(d, "test").tolist() == [[1], [2]]
    kept = load_mmrec(tmp_path / "toy", drop_cold_start=False)
    assert split_edge_index(kept, "valid").tolist() == [[0, 2], [2, 0]]


def test_load_five_columns_and_modalities(tmp_path):
    text = "userID\titemID\trating\ttimestamp\tx_label\n0\t0\t5\t1\t0\n0\t1\t4\t2\t0\n1\t1\t3\t3\t0\n1\t0\t3\t4\t2\n"
    folder = write_inter(tmp_path / "toy", text)
    np.save(folder / "audio_feat.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.save(folder / "video_feat.npy", np.ones((2, 5), dtype=np.float64))
    d = load_mmrec(folder)
    feats = modality_features(d)
    assert list(feats) == ["audio", "video"] and feats["video"].dtype == torch.float32
    assert describe(d)["modalities"] == {"audio": 3, "video": 5}


@pytest.mark.parametrize("text,needle", [
    ("userID\titemID\n0\t0\n", "header"),
    ("userID\titemID\tx_label\tfoo\n0\t0\t0\t1\n", "unexpected ['foo']"),
    ("userID\titemID\tx_label\n0\t0\t0\n1\t1\n", "row 3: expected 3 tab-separated fields"),
    ("userID\titemID\tx_label\n0\t0\t0\n1\tx\t0\n", "row 3, field 'itemID'"),
    ("userID\titemID\tx_label\n0\t0\t0\n-1\t1\t0\n", "row 3, field 'userID'"),
    ("userID\titemID\tx_label\n0\t0\t0\n1\t1\t3\n", "row 3, field 'x_label': expected 0, 1 or 2, got 3"),
    ("userID\titemID\tx_label\n0\t0\t1\n1\t1\t2\n", "training split (x_label = 0) is empty"),
    ("userID\titemID\tx_label\n", "no interaction rows"),
])
def test_bad_inter_names_file_and_row(tmp_path, text, needle):
    folder = write_inter(tmp_path / "toy", text)
    with pytest.raises(DataFormatError) as e:
        load_mmrec(folder)
    assert needle in str(e.value) and "toy.inter" in str(e.value)


def test_bad_features(tmp_path):
    folder = write_inter(tmp_path / "toy", GOOD)
    np.save(folder / "image_feat.npy", np.ones((4, 2), dtype=np.float32))
    with pytest.raises(DataFormatError, match=r"image_feat.npy: has 4 rows but .* 3 items"):
        load_mmrec(folder)
    x = np.ones((3, 2), dtype=np.float32)
    x[1, 1] = np.nan
    np.save(folder / "image_feat.npy", x)
    with pytest.raises(DataFormatError, match=r"image_feat.npy: row 1, column 1 is nan"):
        load_mmrec(folder)


def test_duplicates_warned_and_counted(tmp_path):
    folder = write_inter(tmp_path / "toy", GOOD + "0\t1\t0\n0\t1\t2\n")
    with pytest.warns(UserWarning, match="2 duplicate"):
        d = load_mmrec(folder)
    assert split_edge_index(d, "train").size(1) == 3


def test_synthetic_deterministic_and_split():
    a, b, c = synthetic("tiny", seed=3), synthetic("tiny", seed=3), synthetic("tiny", seed=4)
    for s in ("train", "valid", "test"):
        assert torch.equal(split_edge_index(a, s), split_edge_index(b, s))
    assert not torch.equal(split_edge_index(a, "train"), split_edge_index(c, "train"))
    assert torch.equal(a["item"].x, b["item"].x)
    assert torch.equal(modality_features(a)["image"], modality_features(b)["image"])
    total = sum(split_edge_index(a, s).size(1) for s in ("train", "valid", "test"))
    assert total == 1600
    pairs = torch.cat([split_edge_index(a, s) for s in ("train", "valid", "test")], 1)
    assert torch.unique(pairs[0] * 1000 + pairs[1]).numel() == total  # no duplicate interactions


def test_per_user_split_ratios():
    users = torch.arange(4).repeat_interleave(torch.tensor([10, 20, 2, 5]))
    edges = torch.stack([users, torch.arange(users.numel())])
    tr, va, te = per_user_split(edges, 4, seed=PAPER_SPLIT_SEEDS[0])
    cnt = lambda e: torch.bincount(e[0], minlength=4).tolist()
    assert cnt(va) == [1, 2, 0, 1] and cnt(te) == [1, 2, 0, 1] and cnt(tr) == [8, 16, 2, 3]
    again = per_user_split(edges, 4, seed=PAPER_SPLIT_SEEDS[0])
    assert all(torch.equal(x, y) for x, y in zip((tr, va, te), again))


def test_resplit_keeps_all_interactions():
    d = synthetic("tiny", seed=0)
    r = resplit(d, seed=9)
    key = lambda g: sorted((torch.cat([split_edge_index(g, s) for s in ("train", "valid", "test")], 1)
                            .t().tolist()))
    assert key(d) == key(r)
    assert not torch.equal(split_edge_index(d, "test"), split_edge_index(r, "test"))


@pytest.mark.realdata
def test_baby_matches_mmrec_statistics(baby):
    s = describe(baby)
    assert (s["users"], s["items"]) == (19445, 7050)
    assert (s["train_edges"], s["valid_edges"], s["test_edges"]) == (118551, 20559, 21682)


@pytest.mark.realdata
def test_tiktok_statistics(tiktok):
    s = describe(tiktok)
    assert (s["users"], s["items"], s["train_edges"]) == (9308, 6710, 59541)
    # 10 users appear only in valid/test: their 5 valid and 5 test rows are dropped as cold-start
    assert (s["valid_edges"], s["test_edges"]) == (3046, 6125)
    assert s["modalities"] == {"audio": 128, "image": 128}
