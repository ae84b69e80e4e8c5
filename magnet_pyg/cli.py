"""``magnet-pyg``: the only place where command-line options become objects.

``magnet-pyg train --model {bpr,lightgcn,magnet,...} [--data synthetic|PATH] ...`` trains a
model, prints a metrics table and writes ``OUT/results.json``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from .data import describe, load_dataset, num_items, num_users, resplit
from .train import TrainConfig, Trainer

log = logging.getLogger("magnet_pyg")

# name -> (add model options to a parser, build (model, data, model options) from parsed args)
ModelSpec = Tuple[Callable[[argparse._ArgumentGroup], None],
                  Callable[[argparse.Namespace, Any], Tuple[Any, Any, Dict[str, Any]]]]
MODELS: Dict[str, ModelSpec] = {}


def register(name: str):
    def wrap(fn):
        MODELS[name] = fn()
        return fn
    return wrap


# ----------------------------------------------------------------------------- baselines
@register("bpr")
def _bpr() -> ModelSpec:
    def add(g):
        g.add_argument("--dim", type=int, default=64, help="embedding size d (bpr, lightgcn)")
        g.add_argument("--reg-weight", type=float, default=1e-4,
                       help="batch L2 penalty on sampled embeddings (bpr, lightgcn)")

    def build(args, data):
        from .models.bpr import BPRMF
        opts = {"dim": args.dim, "reg_weight": args.reg_weight}
        return BPRMF(num_users(data), num_items(data), args.dim, args.reg_weight), data, opts
    return add, build


@register("lightgcn")
def _lightgcn() -> ModelSpec:
    def add(g):
        g.add_argument("--layers", type=int, default=2, help="propagation layers L (lightgcn, magnet)")

    def build(args, data):
        from .models.lightgcn import LightGCN
        opts = {"dim": args.dim, "layers": args.layers, "reg_weight": args.reg_weight}
        model = LightGCN(num_users(data), num_items(data), args.dim, args.layers, args.reg_weight)
        return model, data, opts
    return add, build


# ----------------------------------------------------------------------------- parser
def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train and evaluate a model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(MODELS))
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (default), 'synthetic-<tiny|small|electronics>', or an MMRec "
                        "folder / dataset name under $MAGNET_PYG_DATA")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic generator")
    p.add_argument("--resplit-seed", type=int, default=None,
                   help="re-split every user's interactions 8:1:1 with this seed (paper: 9 672 5368 12784 2025)")
    p.add_argument("--keep-cold-start", action="store_true",
                   help="keep valid/test rows of users without training rows (MMRec drops them)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=2048)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.0, help="Adam L2 on all parameters")
    t.add_argument("--patience", type=int, default=None, help="default: the model's own")
    t.add_argument("--select-metric", default="ndcg@20")
    t.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    t.add_argument("--eval-batch-size", type=int, default=4096)
    t.add_argument("--mask-valid-in-test", action="store_true",
                   help="also mask validation items when testing (MMRec does not)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--out", default=None, help="run folder: checkpoints and results.json")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--no-progress", action="store_true")
    for name, (add, _) in MODELS.items():
        g = p.add_argument_group(f"model options ({name})")
        try:
            add(g)
        except argparse.ArgumentError:  # an option shared with an earlier model
            pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magnet-pyg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    return parser


def format_table(results: Dict[str, Any]) -> str:
    names = list(results["test"])
    ks = sorted({int(n.split("@")[1]) for n in names})
    metrics = [m for m in ("recall", "ndcg", "precision", "hit") if any(n.startswith(m) for n in names)]
    lines = [f"{results['model']} on {results['dataset']}  (best epoch {results['best_epoch']})",
             f"{'split':<6}" + "".join(f"{m + '@' + str(k):>14}" for m in metrics for k in ks)]
    for split in ("valid", "test"):
        lines.append(f"{split:<6}" + "".join(f"{results[split].get(f'{m}@{k}', float('nan')):>14.4f}"
                                             for m in metrics for k in ks))
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, patience=args.patience,
                      select_metric=args.select_metric, ks=tuple(args.ks),
                      eval_batch_size=args.eval_batch_size, mask_valid_in_test=args.mask_valid_in_test,
                      seed=args.seed, device=args.device, out_dir=args.out, resume=args.resume,
                      progress=not args.no_progress)
    cfg.validate()  # bad options fail before anything heavy starts
    data = load_dataset(args.data, seed=args.data_seed, drop_cold_start=not args.keep_cold_start)
    if args.resplit_seed is not None:
        data = resplit(data, args.resplit_seed)
    log.info("dataset %s", describe(data))
    torch.manual_seed(args.seed)
    model, data, opts = MODELS[args.model][1](args, data)
    extra = {"model_options": opts, "data": args.data, "data_seed": args.data_seed,
             "resplit_seed": args.resplit_seed, "dataset_stats": describe(data)}
    results = Trainer(cfg, extra).fit(model, data, model_name=args.model)
    print(format_table(results))
    if args.out:
        print(f"results written to {args.out}/results.json")
    return results


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "train":
            cmd_train(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"magnet-pyg: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
