"""Helpers shared by the CLI tests: running `sgproject` through typer's CliRunner and checking its output.

The installed typer vendors click 8.2+ semantics: `result.stdout` and `result.stderr` are separate and
`result.output` is both interleaved. Results go to stdout, progress and errors to stderr.
"""

from __future__ import annotations

import re

from typer.testing import CliRunner

import sgproject.cli  # noqa: F401  (registers the commands on `app`)
from sgproject.app import app

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # in case FORCE_COLOR makes rich colour its output anyway


def run(*args):
    """`sgproject ARGS...`, every argument passed through str()."""
    return runner.invoke(app, [str(a) for a in args])


def clean_lines(text: str) -> list[str]:
    """The non-blank lines of `text`, ANSI colour codes removed."""
    return [line for line in ANSI.sub("", text).splitlines() if line.strip()]


def assert_clean_failure(result, *needles):
    """Exit code 2, one 'error:' line on stderr naming the problem, nothing on stdout, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    error_lines = [line for line in clean_lines(result.stderr) if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for needle in needles:
        assert needle in error_lines[0], (needle, error_lines[0])
