"""What does MAGNET do to a converged backbone it is warm-started from? Epoch-0 ranking and
the gradient each loss term sends to the embeddings.

    python benchmarks/diagnose_warm_start.py --config configs/magnet/sports.yaml \
        --set train.init_from=runs/sports/sports-lightgcn-L2-reg1e-4/seed0 [--batches 20] \
        [--induced-weights 1 0.3 0.1] [--name warm_start_sports]

Before any training step, with the residual head (``residual=True``: the Score head starts at
zero, so the model's score is exactly the backbone dot product plus a zero bias), it reports

* validation NDCG@20 / Recall@20 of the observed view :math:`\\mathbf z_{UI}` (equal to the
  LightGCN run's own when the warm start is complete), of the augmented view
  :math:`\\mathbf z_{UIG}` and of the fused :math:`\\mathbf z` that MAGNET-DV ranks with;
* over ``--batches`` training batches (the trainer's sampler, seed 0), the norm of the gradient
  that each term of Eq. 32 sends to the layer-0 embeddings: BPR through the head (Eq. 27, the
  configured reduction), the weighted view contrast (Eq. 28) and the weighted batch L2; mean
  and ratio to BPR, at the configuration's ``induced_weight``.

Writes ``benchmarks/results/<name>.json``.
"""
import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write  # noqa: E402

from magnet_pyg.config import build_run, load_run_config  # noqa: E402
from magnet_pyg.data import describe, num_items, split_edge_index  # noqa: E402
from magnet_pyg.evaluate.evaluator import Evaluator  # noqa: E402
from magnet_pyg.evaluate.ranking import full_ranking  # noqa: E402
from magnet_pyg.nn import dot_score  # noqa: E402
from magnet_pyg.nn.losses import bpr_loss, triple_embedding_l2  # noqa: E402
from magnet_pyg.train.checkpoint import warm_start  # noqa: E402
from magnet_pyg.train.sampling import LinkSampler  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--batches", type=int, default=20, help="training batches for the gradient norms (0: none)")
    p.add_argument("--induced-weights", type=float, nargs="+", default=None,
                   help="weights of the induced edges to rank with at epoch 0 (default: the configuration's)")
    p.add_argument("--graph-cache", default="", help="cache folder of the induced edges (default: none)")
    p.add_argument("--name", default="warm_start")
    a = p.parse_args(argv)
    run = load_run_config(a.config, a.set)
    if run.model != "magnet" or not run.train.init_from:
        raise SystemExit("needs a MAGNET configuration with train.init_from")
    opts = run.model_options
    if not (opts.moe and opts.residual):
        raise SystemExit("needs the residual MoE head (residual: true), whose score starts at the dot product")
    torch.manual_seed(run.train.seed)
    data = run.data.load()
    model, data, run = build_run(run, data, graph_cache=a.graph_cache or None, progress=False)
    copied = warm_start(model, run.train.init_from)
    assert not model.head.score.weight.any() and not model.head.score.bias.any()
    evaluator = Evaluator(data, (20,), run.train.eval_batch_size)
    out = {"config": a.config, "set": a.set, "init_from": run.train.init_from, "copied": copied,
           "data": describe(data), "epoch0_valid": {}}
    configured = model.induced_weight
    for w in a.induced_weights or [configured]:
        model.induced_weight = w
        with torch.no_grad():
            state = model(model.prepare(data))
        views = {"z_ui": state.z_ui, "z": state.z}
        if state.z_uig is not None:
            views["z_uig"] = state.z_uig
        res = out["epoch0_valid"][f"induced_weight={w:g}"] = {}
        for name, z in views.items():
            state_z = model.encoder.split(z)
            m = full_ranking(lambda u: dot_score(state_z, u), evaluator.index["valid"], evaluator.exclude("valid"),
                             evaluator.ks, evaluator.batch_size)
            res[name] = {"ndcg@20": m["ndcg@20"], "recall@20": m["recall@20"],
                         "mean_norm": float(z.norm(dim=-1).mean())}
            print(f"induced_weight={w:g}", name, res[name], flush=True)
    model.induced_weight = configured
    graph = model.prepare(data)

    sampler = LinkSampler(split_edge_index(data, "train"), num_items(data), run.train.batch_size)
    gen = torch.Generator().manual_seed(0)
    emb = model.encoder.embedding.weight
    norms = {"bpr": [], "view_contrast": [], "l2": []}
    model.train()
    for b, (users, pos, neg) in enumerate(sampler.epoch(gen)):
        if b == a.batches:
            break
        out_b = model(graph)
        h_u = model.triple_user_cues(out_b, users, pos, graph.user_degree)
        terms = {"bpr": bpr_loss(model.pair_scores(out_b, users, pos, h_u).score,
                                 model.pair_scores(out_b, users, neg, h_u).score, model.bpr_reduction)}
        if model.uses_view_contrast(out_b):
            terms["view_contrast"] = model.lambda_ctr * model.view_contrast(out_b, users, pos)
        if model.reg_weight > 0:
            terms["l2"] = model.reg_weight * triple_embedding_l2(emb, model.encoder.num_users, users, pos, neg)
        for k, t in terms.items():
            (g,) = torch.autograd.grad(t, emb, retain_graph=True)
            norms[k].append(float(g.norm()))
    out["batches"] = a.batches
    if a.batches > 0:
        out["grad_norm_layer0"] = {k: statistics.mean(v) for k, v in norms.items() if v}
        bpr = out["grad_norm_layer0"]["bpr"]
        out["grad_ratio_to_bpr"] = {k: v / bpr for k, v in out["grad_norm_layer0"].items()}
        print(out["grad_norm_layer0"], out["grad_ratio_to_bpr"])
    write(a.name, out)


if __name__ == "__main__":
    main()
