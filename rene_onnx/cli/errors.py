"""The one place that turns exceptions into one line on stderr and an exit code.

- :class:`~rene_onnx.errors.ReneError`: its message, with option names written as the CLI's flags
  (``calib`` -> ``--calib``); exit 2 for bad input (``UserError``), 1 for a failed stage.
- click's own usage errors (an unknown option, a bad value): one ``error:`` line naming the command's
  ``--help``, exit 2 -- the same format as every other error.
- anything else is a bug: ``internal error: ... (rerun with --debug)``, exit 1; never blamed on the input.

``--debug`` adds the traceback.
"""
from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from rene_onnx.errors import ReneError, exit_code, first_line

#: option names whose flag is not simply ``--name-with-dashes``
FLAGS = {"steps": "--search-steps", "output": "-o/--output", "output_dir": "-o/--output-dir", "report_path": "--report", "fresh": "--fresh"}


def flag(name: str | None, value: Any = None) -> str:
    """How the CLI names option ``name`` (and, in a suggestion, its value)."""
    if name is None:
        return ""
    text = FLAGS.get(name, "--" + name.replace("_", "-"))
    return text if value is None or value is True else f"{text} {value}"


def message(exc: BaseException) -> str:
    """The one line shown for ``exc`` (without the ``error:`` prefix)."""
    if isinstance(exc, ReneError):
        return first_line(Exception(exc.render(flag)), 500)
    return f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --debug for the traceback)"


def fail(exc: BaseException, debug: bool) -> None:
    """Print ``exc`` as one line (a traceback too with ``--debug``) and exit 2 (bad input) or 1 (failure or bug)."""
    if debug:
        traceback.print_exception(exc)
    click.echo(f"error: {message(exc)}", err=True)
    sys.exit(exit_code(exc))


def usage_error(exc: click.ClickException) -> None:
    """click's usage errors as one line, like every other error: ``error: <what> (rene-onnx CMD --help)``."""
    ctx = getattr(exc, "ctx", None)
    hint = f" ({ctx.command_path} --help)" if ctx is not None else ""
    click.echo(f"error: {first_line(Exception(exc.format_message()))}{hint}", err=True)
    sys.exit(exc.exit_code)
