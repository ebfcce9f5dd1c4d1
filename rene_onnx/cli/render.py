"""Terminal rendering for the CLI: progress bars from the library's events, notes, the report, files written.

Progress: the library emits :class:`~rene_onnx.progress.ProgressEvent` s; on a terminal each stage
that counts steps (search steps, fine-tuning steps, factorized layers, latency tables) gets a rich
progress bar and the others a status line. Nothing is drawn when stderr is not a terminal (a pipe, a
CI log): the results and the one-line errors are all that is printed there.
"""
from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from rich.console import Console

console = Console(stderr=True)
# a pipe or a CI log gets 80 columns by default: too narrow for the per-layer table
out = Console() if Console().is_terminal else Console(width=140)


def command_line() -> str:
    """The command as typed (recorded in reports)."""
    return shlex.join(["rene-onnx", *sys.argv[1:]])


@contextmanager
def progress_display() -> Iterator[None]:
    """Show the library's progress events while the block runs (bars on a terminal, nothing in a pipe)."""
    from rene_onnx.progress import ProgressEvent, listen

    if not console.is_terminal:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bars: dict[str, int] = {}
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[stage]}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as prog:
        status = prog.add_task("starting", stage="rene-onnx", total=None)

        def show(e: ProgressEvent) -> None:
            detail = " ".join([e.message] + [f"{k}={_short(v)}" for k, v in e.info.items()]).strip()
            if e.step is None or not e.total:
                prog.update(status, stage=e.stage, description=detail)
                return
            task = bars.get(e.stage)
            if task is None:
                task = bars[e.stage] = prog.add_task(detail, stage=e.stage, total=e.total)
            prog.update(task, completed=e.step, total=e.total, description=detail)

        with listen(show):
            yield


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def show_notes(notes) -> None:
    for note in notes:
        console.print(f"[dim]note: {note}[/]", soft_wrap=True)


def show_report(report) -> None:
    from rene_onnx.report.table import render

    for renderable in render(report):
        out.print(renderable)


def wrote(paths: Mapping[str, Path | str]) -> None:
    """One line naming the files written."""
    if paths:
        console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False, soft_wrap=True)
