"""The one place that turns exceptions into a clear line on stderr and an exit code."""
from __future__ import annotations

import sys
import traceback

import click

#: exceptions that mean "the input is wrong": exit code 2, like a usage error
USAGE_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError)


def fail(exc: BaseException, debug: bool) -> None:
    """Print ``exc`` as one line (a traceback too with ``--debug``) and exit 2 (bad input) or 1 (failure)."""
    if debug:
        traceback.print_exception(exc)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    option = getattr(exc, "option", None)
    if option and isinstance(getattr(exc, "message", None), str) and exc.message.strip():
        msg = f"--{option.replace('_', '-')}: {exc.message.strip().splitlines()[0]}"  # a library option -> its flag
    if isinstance(exc, KeyError):
        msg = f"not found: {msg}"
    click.echo(f"error: {msg}", err=True)
    sys.exit(2 if isinstance(exc, USAGE_ERRORS) else 1)
