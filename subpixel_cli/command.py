"""What the ``subpixel`` commands share: the one place where errors become a message and an exit
code (:func:`handle_errors`), the groups of options the commands that run a model take, and the
readers of what click leaves as text (:func:`parse_size`, :func:`command_line`)."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable

import click
from rich.markup import escape

from subpixel_cli import choices
from subpixel_cli.console import err_console, print_note
from subpixel_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, SubpixelError, named

if TYPE_CHECKING:
    from subpixel_cli.upscale import Upscaler

EXIT_CODES_HELP = "Exit codes: 0 all done, 1 some inputs failed, 2 usage error, 130 interrupted."

def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """The one place where errors become a message and an exit code: the project's errors print
    their one line and exit with their code; anything else is reported as an internal error
    (exit 1); ``--debug`` adds the traceback. Ctrl-C exits 130; a closed stdout (``| head``) ends
    the command quietly."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return func(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own usage errors, already one line with exit code 2
        except SubpixelError as exc:
            _exit_with(str(exc), exc.exit_code, debug)
        except KeyboardInterrupt as exc:  # a command may say what was done and what a re-run does
            if debug:
                traceback.print_exc()
            err_console.print("[yellow]interrupted[/]" + (f": {escape(str(exc))}" if str(exc) else ""), soft_wrap=True)
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            _stdout_closed()
        except Exception as exc:
            from subpixel_cli.runtime import is_out_of_memory, out_of_memory_message

            if is_out_of_memory(exc):  # MemoryError, or CUDA's, in a command with no retry of its own
                _exit_with(out_of_memory_message(), EXIT_FAILED, debug)
            detail = named(exc)
            hint = "" if debug else " (run with --debug for the traceback)"
            _exit_with(f"internal error: {detail}{hint}", EXIT_FAILED, debug)

    return wrapper


def _exit_with(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def _stdout_closed() -> None:
    """The reader of stdout went away: stop without a traceback, and keep Python's exit-time
    flush from raising again on the dead pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_FAILED)


def print_kernels_note(upscaler: "Upscaler", show: bool = True) -> None:
    """A note where the C kernels an :class:`~subpixel_cli.upscale.Upscaler` on the CPU tried
    could not be built (no compiler, a failed build): it runs slower, which should not go
    unsaid, and the note says how to get them."""
    why = upscaler.kernels.missing() if upscaler.device.type == "cpu" and show else None
    if why is not None:
        print_note(f"subpixel's C kernels are not built here ({why}): the CPU paths run without them, slower, "
                   "and --precision auto does not take int8; install a working C compiler (e.g. `apt install "
                   "gcc`) and run again (SUBPIXEL_KERNELS=0 turns them off, and this note)")


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that runs a model shares."""
    options = [
        click.option("-x", "--scale", type=click.IntRange(min=2), help="Upscale factor; picks the packaged model for it."),
        click.option("--model", metavar="M", help="Packaged name (see `subpixel models`), model folder, .safetensors file, or hf://owner/repo[@rev]."),
        click.option("--device", type=click.Choice(choices.DEVICES), default="auto", show_default=True),
        click.option("--precision", type=click.Choice(choices.PRECISIONS), default="auto", show_default=True,
                     help="auto: fp16 on GPUs (fp32 retry if the output is not finite); on CPUs for 8-bit pictures int8 where the model has a checked calibration and the CPU has fast int8 (VNNI or AMX, and a C compiler for its first-layer kernel), else bf16 where it has native bf16 (AVX-512 BF16/AMX), else fp32. int8: the int8 path (CPU; `subpixel quantize`)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Same-size images per forward pass."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def denoise_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--denoise, for the commands that upscale pictures or frames."""
    return click.option("--denoise", type=click.FloatRange(0, 1), default=None, metavar="S",
                        help="Blend the clean model (0) with its real-world twin (1), which removes JPEG/H.264 "
                             "artefacts and noise instead of sharpening them.")(func)


def memory_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--tile and --max-memory, for the commands that upscale pictures or frames."""
    func = click.option("--max-memory", type=click.IntRange(min=64), metavar="MIB",
                        help="Memory budget for one forward pass, in MiB (default 1024 on CPU).")(func)
    return click.option("--tile", type=click.IntRange(min=8),
                        help="Tile side in input pixels (default: automatic, from --max-memory).")(func)


def command_line(ctx: click.Context) -> str:
    """The command as given (options from the command line only), for the model card."""
    import shlex

    from click.core import ParameterSource

    words = ["subpixel", ctx.info_name or "train"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value, flag = ctx.params[param.name], param.opts[-1] if len(param.opts[-1]) > 2 else param.opts[0]
        if getattr(param, "is_flag", False):
            words += [flag] if value else []
        else:
            words += [flag, str(value)]
    return shlex.join(words)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``--size WxH`` as ``(width, height)``; ``None`` where it was not given."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 640x360)", param_hint="--size")
    return int(parts[0]), int(parts[1])


def parse_features(ctx: click.Context, param: click.Parameter, text: str) -> tuple[int, ...]:
    """``--features 64,32,32`` (a click callback): the hidden layers' widths, two or more."""
    parts = text.split(",")
    if len(parts) < 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r} is not two or more widths (e.g. 64,32 or 64,32,32)")
    return tuple(int(p) for p in parts)
