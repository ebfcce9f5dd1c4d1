"""click options built from the option dataclasses of :mod:`rene_onnx.options` (their one source)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import click


class LazyChoice(click.Choice):
    """A choice whose values are read at each use (e.g. the registered decomposition methods)."""

    def __init__(self, values: Callable[[], Any]) -> None:
        self._values = values
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._values())

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it; the callable is the source
        pass


def _click_option(f: dataclasses.Field) -> Callable:
    meta, name = f.metadata, f.name
    flag = "--" + name.replace("_", "-")
    decls = [meta["short"], flag] if meta.get("short") else [flag]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    kw: dict[str, Any] = {"help": meta["help"], "default": default, "show_default": meta.get("show_default", True)}
    kind = meta.get("kind")
    if kind == "flag":
        kw.update(is_flag=True, show_default=False)
    elif kind == "switch":
        decls = [f"{flag}/--no-{name.replace('_', '-')}"]
    elif kind in ("file", "folder"):
        kw["type"] = click.Path(dir_okay=kind == "folder", file_okay=kind == "file")
    elif meta.get("choices") is not None:
        choices = meta["choices"]
        kw["type"] = LazyChoice(choices) if callable(choices) else click.Choice(list(choices))
    elif meta.get("min") is not None:
        integer = isinstance(default, int) or (default is None and str(f.type).startswith("int"))
        number = click.IntRange if integer and not isinstance(default, bool) else click.FloatRange
        kw["type"] = number(min=meta["min"])
    elif isinstance(default, float) or (default is None and "float" in str(f.type)):
        kw["type"] = float
    elif isinstance(default, int) and not isinstance(default, bool):
        kw["type"] = int
    if meta.get("multiple"):
        kw.update(multiple=True, default=(), show_default=False)
    if meta.get("metavar"):
        kw["metavar"] = meta["metavar"]
    return click.option(*decls, name, **kw)


def from_fields(cls: type, *, exclude: tuple[str, ...] = ()) -> Callable:
    """A decorator adding one click option per field of the options dataclass ``cls`` (in field order)."""
    opts = [_click_option(f) for f in dataclasses.fields(cls) if f.name not in exclude]

    def wrap(fn):
        for decorate in reversed(opts):
            fn = decorate(fn)
        return fn

    return wrap


def given(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave on the command line (the library fills in the rest with the same defaults)."""
    source = click.core.ParameterSource
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) not in (source.DEFAULT, None)}
