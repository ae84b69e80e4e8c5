r"""Typed hyper-parameter configurations of the models, derived from their constructors.

Every model's configuration class (``LightGCNConfig``, ``MagnetConfig``, ...) is a frozen
:func:`~dataclasses.dataclass` with one field per keyword argument of the model's constructor,
whose type and default are read from the constructor's signature. The constructor is therefore
the single home of every default; the configuration class adds only the few options that are
not constructor arguments (for MAGNET: the content-induced graph's ``knn_k``, ``expand_r`` and
``knn_backend``, see :mod:`magnet_pyg.models.magnet`). :func:`check_value` checks a value
against a field's type (as read from a YAML file: ``int`` is accepted for ``float``, lists for
sequences).

.. code-block:: python

    from magnet_pyg.models import LightGCN, LightGCNConfig
    cfg = LightGCNConfig(num_layers=3)            # every other field: LightGCN's default
    model = model_from_config("lightgcn", cfg, num_users, num_items)   # models.registry
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Dict, Iterable, Sequence, Tuple, Union

#: constructor arguments that come from the data, not from a configuration
DATA_ARGUMENTS = ("self", "num_users", "num_items", "modality_dims", "in_channels")


def model_config(model: type, name: str, extra: Iterable[Tuple[str, Any, Any]] = (),
                 doc: str = "") -> type:
    """A frozen dataclass ``name`` with one field per keyword argument of ``model.__init__``
    (type and default from the signature), followed by the ``extra`` fields
    ``(name, type, default)`` that are not constructor arguments.

    The class has the attributes ``model`` (the model class) and ``constructor_fields`` (the
    names passed to the constructor, see :func:`constructor_kwargs`)."""
    hints = typing.get_type_hints(model.__init__)
    fields = []
    for p in inspect.signature(model.__init__).parameters.values():
        if p.name in DATA_ARGUMENTS:
            continue
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"{model.__name__}.__init__ argument '{p.name}' has no default")
        fields.append((p.name, hints[p.name], dataclasses.field(default=p.default)))
    ctor = tuple(f[0] for f in fields)
    for fname, typ, default in extra:
        if fname in ctor:
            raise TypeError(f"{name}: extra field '{fname}' is a constructor argument of {model.__name__}")
        fields.append((fname, typ, dataclasses.field(default=default)))
    cls = dataclasses.make_dataclass(name, fields, frozen=True,
                                     namespace={"model": model, "constructor_fields": ctor})
    cls.__module__ = model.__module__
    cls.__doc__ = (doc or f"Hyper-parameters of :class:`{model.__name__}`: its constructor's keyword "
                          f"arguments, with the constructor's types and defaults.")
    return cls


def constructor_kwargs(config: Any) -> Dict[str, Any]:
    """The keyword arguments of the model constructor that ``config`` holds."""
    return {f: getattr(config, f) for f in type(config).constructor_fields}


def config_fields(config_cls: type) -> Dict[str, Any]:
    """``{field name: type}`` of a configuration class, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(config_cls)}


def type_name(typ: Any) -> str:
    """A short readable name of a field type (``float``, ``list of float``, ``int or null``)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is Union:
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if _is_sequence_type(origin):
        inner = [a for a in args if a is not Ellipsis]
        return f"list of {type_name(inner[0])}" if inner else "list"
    return getattr(typ, "__name__", str(typ))


def _is_sequence_type(origin: Any) -> bool:
    import collections.abc as cabc
    return origin in (list, tuple, cabc.Sequence)


def check_value(where: str, value: Any, typ: Any) -> Any:
    """``value`` checked against the field type ``typ`` and normalised (``int`` -> ``float`` for
    a float field; a list for a sequence field, a tuple for a tuple field). Raises a
    :class:`ValueError` naming ``where`` (for example ``model_options.dropout``) otherwise."""
    def bad():
        return ValueError(f"{where}: expected {type_name(typ)}, got {value!r} ({type(value).__name__})")

    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is Any:
        return value
    if origin is Union:
        if value is None:
            if type(None) in args:
                return None
            raise bad()
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(where, value, a)
            except ValueError:
                continue
        raise bad()
    if _is_sequence_type(origin):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad()
        inner = [a for a in args if a is not Ellipsis]
        items = [check_value(f"{where}[{i}]", v, inner[0]) if inner else v for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if typ is str:
        if isinstance(value, str):
            return value
        raise bad()
    if isinstance(typ, type) and not isinstance(value, typ):
        raise bad()
    return value


def make_config(config_cls: type, values: Dict[str, Any], where: str = "model_options",
                base: Any = None) -> Any:
    """A ``config_cls`` instance from ``values`` (type-checked with :func:`check_value`) on top
    of ``base`` (an instance, default: the class defaults). An unknown key is a
    :class:`ValueError` naming it, with the closest field names."""
    fields = config_fields(config_cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ValueError(unknown_key_message(unknown[0], list(fields), prefix=f"{where}."))
    checked = {k: check_value(f"{where}.{k}", v, fields[k]) for k, v in values.items()}
    if base is None:
        return config_cls(**checked)
    return dataclasses.replace(base, **checked)


def suggestion(word: str, choices: Sequence[str], prefix: str = "") -> str:
    """``"did you mean 'x'?"`` (closest matches by :func:`difflib.get_close_matches`), else
    ``"choose from a, b, c"``; ``prefix`` is put before every name shown."""
    import difflib
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if close:
        return f"did you mean {' or '.join(repr(prefix + c) for c in close)}?"
    return f"choose from {', '.join(prefix + c for c in choices)}"


def unknown_key_message(key: str, valid: Sequence[str], what: str = "", source: str = "",
                        prefix: str = "") -> str:
    """``"source: unknown key 'prefix+key' (what); did you mean 'prefix+x'?"`` (see
    :func:`suggestion`)."""
    return (f"{source + ': ' if source else ''}unknown key '{prefix}{key}'{' (' + what + ')' if what else ''}; "
            f"{suggestion(key, valid, prefix)}")
