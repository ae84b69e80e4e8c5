"""Where can content help on a dataset? Item-popularity buckets of the test interactions.

    python benchmarks/diagnose_popularity.py --run runs/tiktok_cpu/tiktok-lightgcn-L2-reg1e-4/seed0 \
        [--run runs/tiktok_cpu/tiktok-magnet-dv-warmup/seed0] [--data tiktok] [--name popularity_tiktok]

The test interactions are bucketed by the training degree of their item (0, 1, 2-5, 6-20,
> 20 training interactions; training split only). Per bucket it reports

* the bucket's share of the test interactions;
* per run (a LightGCN, BPR-MF or MAGNET ``--out`` folder, selected checkpoint ``best.pt``): the
  bucket's NDCG@20 (:func:`magnet_pyg.interpret.buckets.bucket_ndcg`: the split's items outside
  the bucket are masked, so the number measures ranking the bucket's targets against every
  other item) and its hit rate, the fraction of the bucket's test items in the user's top 20 of
  the plain full ranking (which shows where a model's recall actually comes from);
* the pairwise AUC, against 100 random items of the same bucket (fixed generator), of the
  run's score and of a training-free content score: the cosine between the item's raw
  (l2-normalised) modality vector and the mean over the user's training items, averaged over
  the modalities. It says how much the content can separate a user's test item from items of
  the same popularity.

Writes ``benchmarks/results/<name>.json``. With ``--merge`` the runs of that file (same data,
split and buckets, checked) are kept and the ``--run`` folders added to them (a run measured
again replaces its entry); every run entry records the date it was measured.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write  # noqa: E402

from magnet_pyg.data import describe, load_dataset, modality_features, num_items, num_users, split_edge_index  # noqa: E402
from magnet_pyg.evaluate.ranking import CSRIndex  # noqa: E402
from magnet_pyg.interpret.buckets import bucket_ndcg  # noqa: E402
from magnet_pyg.nn.adjacency import row_normalized  # noqa: E402
from magnet_pyg.interpret import load_run  # noqa: E402

EDGES = ((0, 0), (1, 1), (2, 5), (6, 20), (21, None))


def load_model(run_dir: Path, data):
    """``(label, users -> [B, I] scores, (users, items) -> [B] scores)`` of a run of any model."""
    ctx = load_run(run_dir)
    keys = ("users", "items", "train_edges", "valid_edges", "test_edges")
    if any(describe(ctx.data)[k] != describe(data)[k] for k in keys):
        raise ValueError(f"{run_dir} was trained on another split of the data")
    state, model = ctx.state, ctx.model
    opts = ctx.model_options
    label = ctx.results["model"] + (f"-{opts['view']}" if opts.get("view") else "")
    return label, lambda u: model.score(state, u), lambda u, i: model.score(state, u, i)


def auc(pair_score, users, items, cand, gen, n=100):
    pos = pair_score(users, items)
    neg = cand[torch.randint(0, cand.numel(), (users.numel(), n), generator=gen)]
    negs = pair_score(users.repeat_interleave(n), neg.reshape(-1)).view(-1, n)
    return float((pos[:, None] > negs).double().mean() + 0.5 * (pos[:, None] == negs).double().mean())


@torch.no_grad()
def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="tiktok")
    p.add_argument("--run", action="append", required=True, help="a run's --out folder (repeatable)")
    p.add_argument("--split", default="test")
    p.add_argument("--name", default="popularity_tiktok")
    p.add_argument("--label", action="append", help="legend label of each --run (same order)")
    p.add_argument("--figure", help="also draw the hit rates per bucket to FIGURE.png and FIGURE.pdf")
    p.add_argument("--merge", action="store_true",
                   help="keep the runs already in benchmarks/results/<name>.json and add these")
    a = p.parse_args()
    if a.label and len(a.label) != len(a.run):
        p.error(f"{len(a.label)} --label for {len(a.run)} --run")
    previous = {}
    if a.merge:
        path = RESULTS / f"{a.name}.json"
        if not path.is_file():
            p.error(f"--merge: {path} does not exist")
        previous = json.loads(path.read_text())
        if (previous.get("data"), previous.get("split")) != (a.data, a.split):
            p.error(f"--merge: {path} holds data {previous.get('data')!r}, split {previous.get('split')!r}, "
                    f"not {a.data!r}, {a.split!r}")
    data = load_dataset(a.data)
    U, I = num_users(data), num_items(data)
    train, pairs = split_edge_index(data, "train"), split_edge_index(data, a.split)
    deg = torch.bincount(train[1], minlength=I)
    bucket = torch.full((I,), -1, dtype=torch.long)
    for b, (lo, hi) in enumerate(EDGES):
        bucket[(deg >= lo) & (deg <= (hi if hi is not None else deg.max()))] = b
    pair_bucket = bucket[pairs[1]]
    labels = [f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi is not None else f">{lo - 1}") for lo, hi in EDGES]

    xs = [F.normalize(x.float(), dim=1) for x in modality_features(data).values()]
    hist = row_normalized(train, U, I)
    xu = [torch.sparse.mm(hist, x) for x in xs]
    content = lambda u, i: sum(F.cosine_similarity(m[u], x[i], dim=1) for m, x in zip(xu, xs)) / len(xs)  # noqa: E731

    out = {"data": a.data, "split": a.split, "buckets": labels,
           "share": [float((pair_bucket == b).double().mean()) for b in range(len(EDGES))],
           "items": [int((bucket == b).sum()) for b in range(len(EDGES))]}
    gen = torch.Generator().manual_seed(0)
    cands = [torch.nonzero(bucket == b).view(-1) for b in range(len(EDGES))]
    out["content_auc"] = [auc(content, pairs[0, pair_bucket == b], pairs[1, pair_bucket == b], cands[b], gen)
                          for b in range(len(EDGES))]
    if previous:
        for key in ("buckets", "share", "items"):
            if previous[key] != out[key]:
                raise SystemExit(f"--merge: {key} of {RESULTS / (a.name + '.json')} differ from this data's "
                                 f"({previous[key]} != {out[key]})")
    exclude = CSRIndex(train, U)
    out["runs"] = {k: dict(v, date=v.get("date", previous["date"])) for k, v in previous.get("runs", {}).items()}
    for r, run in enumerate(a.run):
        name, score_all, score_pairs = load_model(Path(run), data)
        name = a.label[r] if a.label else name
        per = bucket_ndcg(score_all, data, a.split, pair_bucket, num_buckets=len(EDGES))
        hits = torch.zeros(pairs.size(1), dtype=torch.bool)
        users = pairs[0].unique()
        for s in range(0, users.numel(), 1024):
            u = users[s:s + 1024]
            sc = score_all(u).clone()
            rows, cols = exclude.gather(u)
            sc[rows, cols] = float("-inf")
            top = torch.full((U, 20), -1, dtype=torch.long)
            top[u] = sc.topk(20, dim=1).indices
            sel = torch.isin(pairs[0], u)
            hits[sel] = (top[pairs[0, sel]] == pairs[1, sel, None]).any(1)
        gen = torch.Generator().manual_seed(0)
        out["runs"][run] = {
            "model": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "ndcg@20": [float(b["ndcg"].mean()) if b["ndcg"].numel() else None for b in per["buckets"]],
            "hit@20": [float(hits[pair_bucket == b].double().mean()) for b in range(len(EDGES))],
            "score_auc": [auc(score_pairs, pairs[0, pair_bucket == b], pairs[1, pair_bucket == b], cands[b], gen)
                          for b in range(len(EDGES))]}
    write(a.name, out)
    if a.figure:
        bucket_figure(out, a.figure)


def bucket_figure(out, stem: str) -> None:
    """Per item-degree bucket: each run's hit rate HR@20 (left), and its change relative to the
    first run (right), with the bucket's share of the test interactions under its name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = list(out["runs"].values())
    n, width = len(out["buckets"]), 0.8 / max(len(runs), 1)
    labels = [f"{lab}\n({100 * sh:.1f}% of test)" for lab, sh in zip(out["buckets"], out["share"])]
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(12, 3.8))
    base = runs[0]["hit@20"]
    for j, run in enumerate(runs):
        xs = [b + (j - (len(runs) - 1) / 2) * width for b in range(n)]
        ax.bar(xs, run["hit@20"], width, label=run["model"])
        if j:
            change = [100 * (h / b0 - 1) if b0 else float("nan") for h, b0 in zip(run["hit@20"], base)]
            rel.bar([b + (j - len(runs) / 2) * width for b in range(n)], change, width,
                    label=run["model"], color=f"C{j}")
    for a_ in (ax, rel):
        a_.set_xticks(range(n))
        a_.set_xticklabels(labels, fontsize=8)
        a_.set_xlabel("training interactions of the test item (item-degree bucket)")
    ax.set_ylabel("HR@20: share of the bucket's test\ninteractions in the user's top 20")
    ax.set_title("hit rate per bucket")
    ax.legend(title="model (selected checkpoint)", fontsize=8)
    rel.axhline(0, color="k", lw=0.8)
    rel.set_ylabel(f"HR@20 change vs {runs[0]['model']} (%)")
    rel.set_title(f"relative to {runs[0]['model']} (no bar: no hit in that bucket)")
    rel.legend(fontsize=8, loc="lower left")  # the two coldest buckets rarely have hits
    fig.suptitle(f"{out['data']}: where each model's hits come from ({out['split']} split)")
    fig.tight_layout()
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    for ext in ("png", "pdf"):
        fig.savefig(f"{stem}.{ext}", dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    main()
