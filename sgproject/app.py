"""The typer application and what every command shares: consoles, error handling, device choice
(`generator.util.devices.pick_device`, whose errors `handle_errors` reports).

Command modules (`sgproject/cmd_*.py`) import `app` from here and register themselves with `@app.command()`;
`sgproject/cli.py` imports them all. Results go to stdout, progress and messages to stderr.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

import typer
from rich.console import Console

from generator.util.devices import pick_device  # noqa: F401  (re-exported for the commands)
from generator.util.errors import SGProjectError

app = typer.Typer(
    name="sgproject",
    help="Image forensics with StyleGAN2: generate, invert (project) and detect generated images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

out = Console(soft_wrap=True)  # results: stdout
err = Console(stderr=True, soft_wrap=True)  # progress, warnings, errors: stderr

EXIT_USAGE = 2  # bad usage, unreadable input: the same code as "could not be judged", as virus scanners do

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print a one-line error on stderr and exit with `code`."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn library errors into a one-line message and exit code 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SGProjectError as e:
            fail(str(e))
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130)

    return wrapper  # type: ignore[return-value]


def is_tty() -> bool:
    return sys.stderr.isatty()
