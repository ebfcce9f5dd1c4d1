"""The error types of rene-onnx, and whose fault each one is.

Every error the library raises on purpose is a :class:`ReneError`:

- :class:`UserError` -- the input is wrong (a missing or unsafe file, a model or option that does not
  fit, a write that would destroy a read). The CLI prints one ``error:`` line and exits 2.
- :class:`StageError` -- a stage failed on valid input (the rewrite could not place a factor, no model
  met the fidelity floor, an execution provider could not start). One line, exit 1.

Anything else that escapes is a bug (ours, or inside numpy / torch / onnxruntime): the CLI says
``internal error: ... (rerun with --debug)`` and exits 1, and never blames the user's input.

Library messages do not name CLI flags. An error about one option carries its snake_case name in
``option`` (``"calib"``, ``"target_params"``); the CLI turns that into ``--calib`` when it prints the
line, and Python callers see ``calib: ...``. A message that suggests another option writes it as
``{name}`` and gives its value in ``refs``: ``UserError("start over with {fresh}", refs={"fresh": True})``
reads ``start over with fresh=True`` in Python and ``start over with --fresh`` on the command line
(:meth:`ReneError.render`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping


class ReneError(Exception):
    """Base of every error rene-onnx raises on purpose."""

    #: the process exit code the CLI uses for this kind of error
    exit_code = 1

    def __init__(self, message: str, *, option: str | None = None, refs: Mapping[str, Any] | None = None):
        self.message = message
        self.option = option
        self.refs = dict(refs or {})
        super().__init__(self.render())

    def render(self, flag: Callable[[str, Any], str] | None = None) -> str:
        """The message with ``option`` and ``{refs}`` written by ``flag(name, value)`` (default ``name=value``)."""
        flag = flag or python_ref
        text = self.message.format(**{k: flag(k, v) for k, v in self.refs.items()}) if self.refs else self.message
        return f"{flag(self.option, None)}: {text}" if self.option else text

    def __str__(self) -> str:
        return self.render()


def python_ref(name: str, value: Any) -> str:
    """How a Python caller names an option: ``name`` alone, or ``name=value``."""
    return name if value is None else f"{name}={value!r}"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit] + " ..."


class UserError(ReneError, ValueError):
    """Bad input: a file, a model, data or an option value that cannot work (exit code 2).

    Subclasses ``ValueError`` too, so Python callers that catch ``ValueError`` for bad
    arguments keep working.
    """

    exit_code = 2


class LoadError(UserError):
    """A model, weights or data file that cannot be loaded or does not fit."""


class ConfigError(UserError):
    """An option value that is out of range or conflicts with another option."""


class PathConflictError(UserError):
    """A write that would land on a file the command reads, or on another of its writes."""


class UnsafeFileError(UserError):
    """A file that would run code or exhaust memory if it were read (a pickle with code, a zip bomb)."""


class MissingDependencyError(UserError):
    """An optional runtime or converter is not installed (the message names the extra that installs it)."""


class StageError(ReneError, RuntimeError):
    """A stage failed on valid input (exit code 1)."""


class RewriteError(StageError):
    """The ONNX rewrite could not place a layer's factors."""


class FidelityError(StageError):
    """No candidate model met the requested fidelity floor."""

    def __init__(self, message: str, *, best: float | None = None, required: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.best = best
        self.required = required


def exit_code(exc: BaseException) -> int:
    """2 for bad input, 1 for anything else (a failed stage or a bug)."""
    return exc.exit_code if isinstance(exc, ReneError) else 1
