"""Run the rene-onnx CLI in-process (fast) from a folder: exit code and output, as a user sees them."""
from __future__ import annotations

import os
from pathlib import Path


def cli(*args, cwd: Path):
    from click.testing import CliRunner

    from rene_onnx.cli.main import cli as group

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)
