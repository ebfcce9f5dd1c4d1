"""``rene-onnx``: the click group. One module per command; this file only wires them."""
from __future__ import annotations

import os
import sys

import click

from rene_onnx import __version__
from rene_onnx.cli.errors import fail, usage_error


class Group(click.Group):
    """Runs commands with the project's error formatting (one line, exit 2 or 1; traceback with --debug)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:  # click's usage errors: one line, like ours
            usage_error(e)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except BrokenPipeError:  # the reader of our output went away (`... | head`): nothing to say
            sys.stdout = open(os.devnull, "w")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit, BrokenPipeError):
            raise
        except Exception as e:  # noqa: BLE001 - the one place errors are formatted
            fail(e, bool(ctx.obj and ctx.obj.get("debug")))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rene-onnx")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compress pretrained networks by low-rank decomposition (RENE) and ship them as fast ONNX models."""
    ctx.ensure_object(dict)["debug"] = debug


def _register() -> None:
    from rene_onnx.cli import compress, export, inputs, search, validate, zoo

    cli.add_command(compress.compress)
    cli.add_command(export.export)
    cli.add_command(inputs.inputs)
    cli.add_command(search.search)
    cli.add_command(validate.validate)
    cli.add_command(zoo.zoo)


_register()


def main() -> None:
    cli(prog_name="rene-onnx")


if __name__ == "__main__":
    main()
