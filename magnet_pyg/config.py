r"""The configuration of one training run: which model, on which data, with which training
protocol and hyper-parameters. It is read from a YAML file, changed by ``KEY=VALUE``
overrides, recorded in the run folder's ``config.json`` and rebuilt from it
(:func:`magnet_pyg.load_run`).

File layout (``configs/<model>/<dataset>.yaml``, see ``docs/configuration.md``)::

    model: magnet              # a name of magnet_pyg.models.MODELS
    preset: tiktok             # models with presets (MAGNET) only: the base of model_options and
                               # of train's lr, weight_decay and batch_size
    data: tiktok               # a dataset name or folder, or a mapping of DataConfig fields
    train:                     # TrainConfig fields (not out_dir, resume, overwrite, finish, progress)
      epochs: 200
      patience: 10
    model_options:             # fields of the model's configuration class (MagnetConfig, ...)
      view: dual

Every value is resolved from, lowest priority first: the configuration class's defaults and the
model's training defaults (its ``default_train``, or its preset's optimiser settings), the
preset, the file, then the overrides in order. A model with presets and no ``preset`` key takes
the preset named like the dataset (the last component of ``data``'s name; ``synthetic`` is
``synthetic-small``) when there is one, else ``default``.

Override keys are dotted (``train.epochs``, ``model_options.knn_k``, ``data.seed``) or short: a
TrainConfig field or an option of the model (``epochs``, ``knn_k``; a name that is both is an
error asking for the dotted form), or ``model``, ``preset``, ``data``. Data fields need the
``data.`` prefix. An unknown key, or an option of another model, is a :class:`ValueError`
naming the key and the model, with the closest valid keys.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .models.config import check_value, config_fields, make_config, suggestion, unknown_key_message
from .models.registry import MODELS, ModelEntry, model_from_config, model_entry
from .train.trainer import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["DataConfig", "RunConfig", "CONFIG_VERSION", "load_yaml", "read_yaml", "parse_value", "parse_override",
           "resolve_run_config", "load_run_config", "build_run", "comparable_record", "dump_yaml"]

#: version of the recorded layout (``config.json``); records without it are the earlier flat
#: layout, whose ``model_options`` are translated (:meth:`RunConfig.from_record`)
CONFIG_VERSION = 2

#: TrainConfig fields chosen per invocation, never read from a configuration file
RUN_CONTROL = ("out_dir", "resume", "overwrite", "finish", "progress")

SECTIONS = ("model", "preset", "data", "train", "model_options")


@dataclass
class DataConfig:
    """The dataset of a run (:func:`magnet_pyg.data.load_dataset`).

    Attributes:
        name: ``synthetic``, ``synthetic-<tiny|small|electronics>``, a dataset name under the
            data root, or a folder.
        seed: seed of the synthetic generator.
        resplit_seed: re-split every user's interactions 8:1:1 with this seed (``None``: the
            dataset's own split).
        modalities: content modalities to load, in this order (``None``: all). A recorded run
            holds the list it loaded.
        keep_cold_start: keep valid/test rows of users without training rows.
    """
    name: str = "synthetic"
    seed: int = 0
    resplit_seed: Optional[int] = None
    modalities: Optional[List[str]] = None
    keep_cold_start: bool = False

    def load(self):
        """The dataset (:func:`~magnet_pyg.data.load_dataset`, then re-split when
        ``resplit_seed`` is set)."""
        from .data import load_dataset, resplit
        data = load_dataset(self.name, seed=self.seed, drop_cold_start=not self.keep_cold_start,
                            modalities=self.modalities or None)
        return data if self.resplit_seed is None else resplit(data, self.resplit_seed)


def train_fields() -> Dict[str, Any]:
    """``{field: type}`` of the TrainConfig fields a configuration may set."""
    return {k: v for k, v in config_fields(TrainConfig).items() if k not in RUN_CONTROL}


@dataclass
class RunConfig:
    """A resolved run configuration (see the module docstring)."""
    model: str
    model_options: Any                      # an instance of the model's configuration class
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: Optional[str] = None

    @property
    def entry(self) -> ModelEntry:
        return model_entry(self.model)

    def to_dict(self) -> Dict[str, Any]:
        """The file layout (``preset`` only when set; no per-invocation TrainConfig fields)."""
        out: Dict[str, Any] = {"model": self.model}
        if self.preset is not None:
            out["preset"] = self.preset
        out["data"] = dataclasses.asdict(self.data)
        out["train"] = {k: _plain(getattr(self.train, k)) for k in train_fields()}
        out["model_options"] = {k: _plain(v) for k, v in dataclasses.asdict(self.model_options).items()}
        return out

    def record(self, data: Any = None) -> Dict[str, Any]:
        """What a run folder records besides the TrainConfig fields (the trainer's
        ``extra_config``): the model, preset, every model option, the data options (with the
        modalities of the loaded ``data``) and ``data``'s counts."""
        from .data import describe, modality_names
        modalities = self.data.modalities
        if data is not None:
            modalities = modality_names(data)
        rec = {"config_version": CONFIG_VERSION, "model": self.model, "preset": self.preset,
               "model_options": {k: _plain(v) for k, v in dataclasses.asdict(self.model_options).items()},
               "data": self.data.name, "data_seed": self.data.seed, "resplit_seed": self.data.resplit_seed,
               "modalities": modalities, "keep_cold_start": self.data.keep_cold_start}
        if data is not None:
            rec["dataset_stats"] = describe(data)
        return rec

    @classmethod
    def from_record(cls, config: Mapping[str, Any], model: Optional[str] = None) -> "RunConfig":
        """The run configuration recorded in a run folder (``config.json``'s ``config``, or
        ``results.json``'s). Records of the earlier layout (no ``config_version``: flat
        ``model_options`` with ``dim``, ``layers``, ``preset``, ``modalities``) need ``model``
        (``results.json``'s ``model``); options they did not record take the configuration
        class's defaults (MAGNET: the recorded preset's)."""
        config = dict(config)
        version = config.get("config_version")
        if version is not None and version != CONFIG_VERSION:
            raise ValueError(f"run configuration version {version} is not supported (this version "
                             f"reads {CONFIG_VERSION} and the earlier unversioned layout)")
        name = config.get("model") or model
        if name is None:
            raise ValueError("the run configuration does not name its model")
        entry = model_entry(name)
        fields = config_fields(TrainConfig)
        train = {k: check_value(f"run config {k}", config[k], fields[k]) for k in fields if k in config}
        if version is None:
            opts, preset, modalities = _legacy_options(entry, config.get("model_options") or {})
            base = entry.presets[preset or "default"].config if entry.presets else None
            known = config_fields(entry.config)
            dropped = sorted(k for k in opts if k not in known)
            if dropped:
                log.warning("run configuration: options %s are not options of model '%s' any more "
                            "and are left out", dropped, name)
            options = make_config(entry.config, {k: v for k, v in opts.items() if k in known},
                                  "model_options", base=base)
        else:
            preset, modalities = config.get("preset"), config.get("modalities")
            options = make_config(entry.config, dict(config.get("model_options") or {}), "model_options")
        data = DataConfig(name=config.get("data") or "synthetic", seed=int(config.get("data_seed") or 0),
                          resplit_seed=config.get("resplit_seed"),
                          modalities=list(modalities) if modalities else None,
                          keep_cold_start=bool(config.get("keep_cold_start", False)))
        return cls(name, options, TrainConfig(**train), data, preset)


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML / JSON)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- earlier layout
#: options of the earlier layout the command line could set without recording them: a resumed
#: run of that layout is compared on them with its current value
_UNRECORDED = ("knn_backend", "switch_epoch")


def _legacy_options(entry: ModelEntry, options: Mapping[str, Any]) -> Tuple[Dict[str, Any], Optional[str], Any]:
    """``(model options, preset, modalities)`` of an earlier-layout ``model_options``."""
    opts = dict(options)
    modalities = opts.pop("modalities", None)
    preset = opts.pop("preset", None) if entry.presets else None
    opts.pop("preset", None)
    for old, new in (("dim", "embedding_dim"), ("layers", "num_layers")):
        if old in opts:
            opts.setdefault(new, opts.pop(old))
    if entry.presets and preset is not None and preset not in entry.presets:
        raise ValueError(f"the run's preset '{preset}' does not exist any more; "
                         f"{suggestion(preset, sorted(entry.presets))}")
    return opts, preset, modalities


def comparable_record(saved: Mapping[str, Any], current: Mapping[str, Any]) -> Dict[str, Any]:
    """``saved`` (a run folder's recorded configuration) in the layout of ``current``, for
    comparing them when a run is resumed: an earlier-layout record is translated (options it
    did not record take their defaults, MAGNET's its preset's; ``knn_backend``, ``switch_epoch``, ``modalities`` and
    ``keep_cold_start``, which the earlier command line did not record, take ``current``'s).
    Any other record is returned unchanged."""
    saved = dict(saved)
    if "config_version" in saved or "config_version" not in current:
        return saved
    try:
        entry = model_entry(current.get("model"))
        opts, preset, modalities = _legacy_options(entry, saved.get("model_options") or {})
    except ValueError:
        return saved
    now = current.get("model_options") or {}
    base = entry.presets[preset or "default"].config if entry.presets else entry.config()
    defaults = dataclasses.asdict(base)
    for key, default in defaults.items():
        if key not in opts:
            opts[key] = now.get(key, default) if key in _UNRECORDED else _plain(default)
    saved.update(config_version=current["config_version"], model=current.get("model"), preset=preset,
                 model_options=opts)
    saved.setdefault("modalities", modalities if modalities is not None else current.get("modalities"))
    saved.setdefault("keep_cold_start", current.get("keep_cold_start"))
    return saved


# ----------------------------------------------------------------------------- YAML
def _yaml():
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("configuration files need PyYAML (pip install pyyaml)") from e
    return yaml


_LOADER = None


def _loader():
    """A safe YAML loader with YAML 1.2's scalars where 1.1 surprises: ``1e-4`` is a float (1.1
    needs ``1.0e-4``), only ``true`` / ``false`` are booleans (1.1 also reads ``off``, ``yes``,
    ``no``, ...); duplicate keys are an error."""
    global _LOADER
    if _LOADER is None:
        yaml = _yaml()

        class Loader(yaml.SafeLoader):
            pass

        # YAML 1.2 booleans: only true / false (YAML 1.1 also reads on, off, yes, no, y, n,
        # so that routing: off would be False)
        Loader.yaml_implicit_resolvers = {
            ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
            for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
        Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                     re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
        Loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                           |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                           |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                           |[-+]?\.(?:inf|Inf|INF)
                           |\.(?:nan|NaN|NAN))$""", re.X),
            list("-+0123456789."))

        def mapping(loader, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = loader.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}'", key_node.start_mark)
                seen.add(key)
            return loader.construct_mapping(node, deep)

        Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
        _LOADER = Loader
    return _LOADER


def read_yaml(path: Union[str, Path]) -> Any:
    """The YAML document in ``path``, read with this module's loader (``1e-4`` is a float,
    duplicate keys are an error naming the line)."""
    yaml = _yaml()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} not found")
    try:
        return yaml.load(path.read_text(), Loader=_loader())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """The mapping in the YAML configuration file ``path`` (an error names the file and line)."""
    raw = read_yaml(path)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a configuration file holds a mapping (model, data, train, "
                         f"model_options, ...), got {type(raw).__name__}")
    return raw


def parse_value(text: str) -> Any:
    """A YAML scalar or flow collection (``5``, ``1e-3``, ``true``, ``null``, ``[10, 20]``, ``abc``)."""
    yaml = _yaml()
    try:
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as e:
        raise ValueError(f"value '{text}' is not a YAML value: {e}") from None


def parse_override(text: str) -> Tuple[str, Any]:
    """``"key=value"`` as ``(key, value)`` (the value read by :func:`parse_value`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override '{text}' is not KEY=VALUE")
    return key.strip(), parse_value(value)


def dump_yaml(config: Mapping[str, Any]) -> str:
    """``config`` as YAML in the file layout (block mappings, flow lists)."""
    return _yaml().safe_dump(dict(config), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------- resolution
Override = Tuple[str, Any, str]   # (key, value, source: where it came from, for messages)


def dataset_key(name: str) -> str:
    """The name under which a dataset may have a preset: ``synthetic`` -> ``synthetic-small``,
    otherwise the last path component of ``name``."""
    if name == "synthetic":
        return "synthetic-small"
    return Path(str(name).rstrip("/\\")).name or str(name)


def _where(source: str, key: str) -> str:
    return f"{source}: {key}" if source else key


def _models_with_option(key: str) -> List[str]:
    return [n for n, e in MODELS.items() if key in config_fields(e.config)]


def _foreign_key_message(key: str, model: str, source: str) -> str:
    entry = MODELS[model]
    valid = list(config_fields(entry.config))
    others = _models_with_option(key)
    what = f"an option of {', '.join(others)}" if others else "not an option of any model"
    return (f"{_where(source, 'model_options.' + key)}: model '{model}' has no option '{key}' ({what}); "
            f"{suggestion(key, valid)}")


def _locate(key: str, entry_name: str, source: str) -> Tuple[Optional[str], str]:
    """``(section, field)`` of an override key (``section`` None for a top-level key)."""
    if key in ("model", "preset", "data"):
        return None, key
    section, dot, name = key.partition(".")
    if dot:
        if section not in ("data", "train", "model_options"):
            raise ValueError(f"{_where(source, key)}: unknown section '{section}'; "
                         f"{suggestion(section, ['data', 'train', 'model_options'])}")
        return section, name
    in_train = key in train_fields()
    in_model = key in config_fields(MODELS[entry_name].config)
    if in_train and in_model:
        raise ValueError(f"{_where(source, key)}: '{key}' is both a train field and an option of model "
                         f"'{entry_name}': write train.{key} or model_options.{key}")
    if in_train:
        return "train", key
    if in_model:
        return "model_options", key
    if key in RUN_CONTROL:
        raise ValueError(f"{_where(source, key)}: '{key}' is chosen per run, not in a configuration")
    if key in {f.name for f in dataclasses.fields(DataConfig)}:
        raise ValueError(f"{_where(source, key)}: data options need the 'data.' prefix: data.{key}")
    others = _models_with_option(key)
    if others:
        raise ValueError(_foreign_key_message(key, entry_name, source))
    valid = ["model", "preset", "data"] + list(train_fields()) + list(config_fields(MODELS[entry_name].config))
    raise ValueError(unknown_key_message(key, valid, f"not a train field or an option of model '{entry_name}'",
                                         source))


def _data_mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        return dict(value)
    raise ValueError(f"{where}: data is a dataset name or a mapping of "
                     f"{', '.join(f.name for f in dataclasses.fields(DataConfig))}, got {value!r}")


def resolve_run_config(raw: Optional[Mapping[str, Any]] = None, overrides: Sequence[Override] = (),
                       source: str = "") -> RunConfig:
    """A :class:`RunConfig` from a file's mapping ``raw`` (read from ``source``, named in
    errors) and ``overrides`` ``(key, value, source)`` applied in order (module docstring)."""
    raw = dict(raw or {})
    for key in raw:
        if key not in SECTIONS:
            raise ValueError(unknown_key_message(str(key), list(SECTIONS), "a configuration has the sections "
                                                 + ", ".join(SECTIONS), source))
    for key in ("train", "model_options"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise ValueError(f"{_where(source, key)}: expected a mapping, got {raw[key]!r}")
    tree: Dict[str, Any] = {"model": raw.get("model"), "preset": raw.get("preset"),
                            "data": _data_mapping(raw.get("data"), _where(source, "data")),
                            "train": dict(raw.get("train") or {}),
                            "model_options": dict(raw.get("model_options") or {})}
    where: Dict[Tuple[Optional[str], str], str] = {}
    for section in ("data", "train", "model_options"):
        for key in tree[section]:
            where[(section, key)] = source
    for key, value, src in overrides:
        if key == "model":
            tree["model"], where[(None, "model")] = value, src
    model = tree["model"]
    if model is None:
        raise ValueError("no model: name one (model: NAME in the configuration)")
    if not isinstance(model, str):
        raise ValueError(f"{_where(where.get((None, 'model'), source), 'model')}: expected a model name, got {model!r}")
    entry = model_entry(model)
    for key, value, src in overrides:
        section, name = _locate(key, model, src)
        if section is None:
            if name == "data":
                tree["data"].update(_data_mapping(value, _where(src, "data")))
                for k in _data_mapping(value, ""):
                    where[("data", k)] = src
            elif name == "preset":
                tree["preset"], where[(None, "preset")] = value, src
            continue
        tree[section][name] = value
        where[(section, name)] = src

    # preset
    preset = tree["preset"]
    if entry.presets:
        if preset is None:
            key = dataset_key(str(tree["data"].get("name", DataConfig.name)))
            preset = key if key in entry.presets else "default"
        elif not isinstance(preset, str) or preset not in entry.presets:
            raise ValueError(f"{_where(where.get((None, 'preset'), source), 'preset')}: unknown preset "
                             f"{preset!r} of model '{model}'; {suggestion(str(preset), sorted(entry.presets))}")
    elif preset is not None:
        raise ValueError(f"{_where(where.get((None, 'preset'), source), 'preset')}: model '{model}' has no "
                         f"presets (models with presets: {', '.join(n for n, e in MODELS.items() if e.presets)})")

    # data
    dfields = {f.name: typing.get_type_hints(DataConfig)[f.name] for f in dataclasses.fields(DataConfig)}
    dvals = {}
    for key, value in tree["data"].items():
        w = _where(where.get(("data", key), source), f"data.{key}")
        if key not in dfields:
            raise ValueError(unknown_key_message(key, list(dfields), "", where.get(("data", key), source),
                                                 "data."))
        dvals[key] = check_value(w, value, dfields[key])
    data = DataConfig(**dvals)

    # train
    tfields = train_fields()
    tvals = entry.train_defaults(preset)
    for key, value in tree["train"].items():
        w = _where(where.get(("train", key), source), f"train.{key}")
        if key in RUN_CONTROL:
            raise ValueError(f"{w}: '{key}' is chosen per run, not in a configuration")
        if key not in tfields:
            raise ValueError(unknown_key_message(key, list(tfields), "", where.get(("train", key), source),
                                                 "train."))
        tvals[key] = check_value(w, value, tfields[key])
    train = TrainConfig(**tvals)

    # model options
    mfields = config_fields(entry.config)
    for key in tree["model_options"]:
        if key not in mfields:
            raise ValueError(_foreign_key_message(key, model, where.get(("model_options", key), source)))
    checked = {k: check_value(_where(where.get(("model_options", k), source), f"model_options.{k}"), v, mfields[k])
               for k, v in tree["model_options"].items()}
    base = entry.presets[preset].config if entry.presets else None
    options = make_config(entry.config, checked, "model_options", base=base)
    return RunConfig(model, options, train, data, preset)


def load_run_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[Union[str, Override]] = (),
                    model: Optional[str] = None) -> RunConfig:
    """:func:`resolve_run_config` of the file ``path`` (optional) with ``overrides`` given as
    ``"key=value"`` strings or ``(key, value, source)`` triples; ``model`` names the model when
    the file does not."""
    raw = load_yaml(path) if path is not None else {}
    ovs: List[Override] = [("model", model, "model")] if model is not None else []
    for o in overrides:
        if isinstance(o, str):
            k, v = parse_override(o)
            ovs.append((k, v, o))
        else:
            ovs.append(tuple(o))  # type: ignore[arg-type]
    return resolve_run_config(raw, ovs, str(path) if path is not None else "")


# ----------------------------------------------------------------------------- building
def build_run(run: RunConfig, data: Any, graph_cache: Optional[str] = None,
              progress: bool = True, sampled: bool = False) -> Tuple[Any, Any, RunConfig]:
    """``(model, data, run)``: a fresh model of ``run`` for ``data`` (built before anything
    slow, so that bad options fail first), ``data`` with what the model needs added (MAGNET's
    dual view: the content-induced edges, cached under ``graph_cache``), and ``run`` with the
    options resolved against the data (MAGNET: ``switch_epoch`` turned into ``switch_at``).
    ``sampled``: the run trains on neighbour-sampled subgraphs; options that rule this out fail
    before the induced edges are built."""
    from .data import modality_features, num_items, num_users, split_edge_index
    from .models.magnet import MagnetConfig, resolve_switch_epoch
    entry = run.entry
    options = run.model_options
    if isinstance(options, MagnetConfig):
        steps = -(-int(split_edge_index(data, "train").size(1)) // run.train.batch_size)
        options = resolve_switch_epoch(options, steps)
    dims = {m: int(x.size(1)) for m, x in modality_features(data).items()}
    model = model_from_config(run.model, options, num_users(data), num_items(data), dims if entry.multimodal else None)
    if sampled:
        model.sampling_spec()
    if isinstance(options, MagnetConfig) and options.view == "dual":
        from .graph import add_induced_edges
        data = add_induced_edges(data, k=options.knn_k, r=options.expand_r, backend=options.knn_backend,
                                 cache_dir=graph_cache or None, progress=progress)
    return model, data, dataclasses.replace(run, model_options=options)
