"""The ``subpixel`` command line: parse, call one library function, show the result.

Exit codes (also in README.md):
  0  everything asked for was done
  1  the command ran but some inputs failed (each is reported)
  2  usage error: bad option, unknown model, nothing to do
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Any, Callable

import click
from rich.console import Console

from subpixel_cli import __version__
from subpixel_cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, SubpixelError

EXIT_CODES_HELP = "Exit codes: 0 all done, 1 some inputs failed, 2 usage error, 130 interrupted."

# Messages and progress go to stderr; stdout carries results (--json).
err_console = Console(stderr=True, highlight=False)


def emit_json(record: dict[str, Any]) -> None:
    """One JSON object per line on stdout."""
    click.echo(json.dumps(record, ensure_ascii=False, default=str))


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's errors into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return func(*args, **kwargs)
        except SubpixelError as exc:
            if debug:
                traceback.print_exc()
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(EXIT_INTERRUPTED)
        except MemoryError:
            if debug:
                traceback.print_exc()
            err_console.print("[bold red]error:[/] out of memory; try a smaller --tile or --batch-size")
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="subpixel")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def main(debug: bool) -> None:
    """subpixel: fast super-resolution with ESPCN sub-pixel convolution networks."""


# --- models / upscale (issue: upscale) --------------------------------------------------------

# --- train / eval (issue: train and eval) ------------------------------------------------------

# --- video (issue: video) ----------------------------------------------------------------------

# --- bench (issue: speed) ----------------------------------------------------------------------
