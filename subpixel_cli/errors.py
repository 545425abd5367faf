"""The project's exceptions. Library code raises these; ``cli.py`` turns them into one-line
messages and exit codes."""

from __future__ import annotations

# Exit codes, documented in README.md and in ``subpixel --help``.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, but some inputs failed
EXIT_USAGE = 2  # bad arguments, unknown model, nothing to do
EXIT_INTERRUPTED = 130  # Ctrl-C


class SubpixelError(Exception):
    """A failure the user can fix; its message says how. ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_FAILED


class UsageError(SubpixelError):
    """Bad arguments or options."""

    exit_code = EXIT_USAGE


class ModelError(SubpixelError):
    """A model that cannot be found, loaded or used as asked."""

    exit_code = EXIT_USAGE


class InputError(SubpixelError):
    """An input file that cannot be read or decoded."""


class OutputError(SubpixelError):
    """An output that cannot be written (exists, disk full, permissions)."""


class OutputExists(OutputError):
    """An output that exists, or appeared while it was being made (another run wrote it), and is
    not to be replaced: in a batch, that file counts as skipped."""


class DataError(SubpixelError):
    """Training or evaluation data that cannot be found or read."""

    exit_code = EXIT_USAGE


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name where the message is empty: how
    an error from elsewhere is quoted inside one of ours. Safe on any message."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def named(exc: BaseException) -> str:
    """``Type: first line`` (``Type`` alone for an empty message): an unexpected error, named."""
    name, line = type(exc).__name__, one_line(exc)
    return name if line == name else f"{name}: {line}"
