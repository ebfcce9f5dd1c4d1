"""Terminal rendering for the CLI: progress lines and the report table."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console

console = Console(stderr=True)
# a pipe or a CI log gets 80 columns by default: too narrow for the per-layer table
out = Console() if Console().is_terminal else Console(width=140)


@contextmanager
def stage_status():
    """A spinner whose text follows the pipeline's progress callback."""
    with console.status("starting") as status:
        def progress(stage: str, info: dict) -> None:
            detail = " ".join(f"{k}={v}" for k, v in info.items())
            status.update(f"[bold]{stage}[/] {detail}")

        yield progress


def show_report(report, notes: list[str] = ()) -> None:
    from rene_onnx.report.table import render

    for note in notes:
        console.print(f"[dim]note: {note}[/]")
    for renderable in render(report):
        out.print(renderable)
