"""What the commands show: progress bars, summaries and tables on stderr, JSON lines on stdout.

Messages and progress go to stderr (rich); stdout carries results (``--json``), one object a line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

import click
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from rich.progress import Progress

    from subpixel_cli.bench import Throughput
    from subpixel_cli.hub import ModelInfo
    from subpixel_cli.jobs import Report, Result
    from subpixel_cli.upscale import Upscaler
    from subpixel_cli.quantize import QuantizeResult

# Messages and progress go to stderr; stdout carries results (--json).
err_console = Console(stderr=True, highlight=False)


def print_note(message: str) -> None:
    """One ``note:`` line on stderr: something the user should know that is not a failure."""
    err_console.print(f"[yellow]note:[/] {escape(message)}", soft_wrap=True)


def emit_json(record: dict[str, Any]) -> None:
    """One JSON object per line on stdout. File names that are not valid UTF-8 (surrogate escapes)
    are written as ``\\udcXX`` escapes, which ``json.loads`` turns back into the same name."""
    text = json.dumps(record, ensure_ascii=False, default=str)
    click.echo(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def progress_bar(enabled: bool, fields: str = "", timing: bool = True, transient: bool = True) -> "Progress":
    """The one progress display of every command: rich, on stderr, gone when done (``transient``);
    none where stderr is not a terminal (a pipe, a log file), which would keep only a blank line
    or a bar's last state.

    ``fields``: a text column after the count, e.g. ``"{task.fields[rate]}"``; ``timing``: elapsed
    and remaining time columns.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("{task.description:>6}"), BarColumn(), MofNCompleteColumn()]
    if fields:
        columns.append(TextColumn(fields))
    if timing:
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=err_console, disable=not (enabled and err_console.is_terminal), transient=transient)


def video_header(upscaler: "Upscaler", source: Any, target: Any, chosen: str | None = None) -> str:
    """``subpixel video``'s first line: the model, where and how it runs, what goes where, and why
    this model where it was chosen for the input (``chosen``)."""
    why = f"; chosen for this input ({chosen}), --model overrides" if chosen else ""
    return (f"{upscaler.info.name}: ×{upscaler.scale} {upscaler.info.color_space.upper()} model on {upscaler.device.type} "
            f"({upscaler.precision.name}), {escape(str(source))} -> {escape(str(target))}{why}")


def print_summary(report: "Report") -> None:
    ok, skipped, failed = report.count("ok"), report.count("skipped"), report.count("failed")
    seconds = sum(r.seconds for r in report.results if r.status == "ok")
    parts = [f"[green]{ok} upscaled[/]"]
    if skipped:
        parts.append(f"[yellow]{skipped} skipped[/] (output exists; --force to overwrite)")
    if failed:
        parts.append(f"[red]{failed} failed[/]")
    rate = f" in {seconds:.1f} s" if ok else ""
    err_console.print(", ".join(parts) + rate)


def short_licence(text: str) -> str:
    short = text.split(";")[0].split("(")[0].strip()
    return short if short == text.strip() else f"{short} *"


def train_progress(total_hint: int) -> tuple["Progress", Callable[[Any], None]]:
    """A rich progress bar on stderr, and the callback that feeds it training events."""
    progress = progress_bar(True, "{task.fields[info]}", transient=False)
    task = progress.add_task("train", total=total_hint, info="", visible=False)  # shown once training starts
    seen: dict[str, Any] = {"val": None, "t": None, "step": 0, "rate": 0.0}

    def on_event(event: Any) -> None:
        import time

        now = time.perf_counter()
        if seen["t"] is not None and event.step > seen["step"]:
            seen["rate"] = (event.step - seen["step"]) / max(now - seen["t"], 1e-9)
        seen["t"], seen["step"] = now, event.step
        if event.val_psnr is not None:
            seen["val"] = event.val_psnr
        if event.kind in ("load", "start", "checkpoint") and event.message:
            progress.log(f"{event.kind}: {event.message}")
        if event.kind == "load":
            return
        if event.kind == "validate" and event.val_psnr is not None:
            progress.log(f"step {event.step} epoch {event.epoch}: loss {event.loss or float('nan'):.4f}, val PSNR {event.val_psnr:.2f} dB")
        loss = f"loss {event.loss:.4f} " if event.loss is not None else ""
        val = f"val {seen['val']:.2f} dB " if seen["val"] is not None else ""
        progress.update(task, total=event.total_steps, completed=event.step, visible=True,
                        info=f"{loss}{val}{seen['rate']:.1f} it/s")

    return progress, on_event


def eval_progress() -> Any:
    """A transient progress bar on stderr (silent when stderr is not a terminal); yields the
    ``(dataset, done, total)`` callback that :func:`evaluate_model` takes."""
    import contextlib

    @contextlib.contextmanager
    def bar() -> Any:
        with progress_bar(err_console.is_terminal, timing=False) as progress:
            tasks: dict[str, Any] = {}

            def update(dataset: str, done: int, total: int) -> None:
                if dataset not in tasks:
                    tasks[dataset] = progress.add_task(dataset, total=total)
                progress.update(tasks[dataset], completed=done)

            yield update

    return bar()


def print_eval_tables(result: Any) -> None:
    """One rich table per dataset (per-image rows, then the mean) and, for several, a summary."""
    from rich.table import Table

    console = Console()
    model = result.method != "bicubic"
    columns = ["image", "bicubic PSNR", "bicubic SSIM"] + ([f"{result.method} PSNR", "SSIM"] if model else [])

    def cells(p: float, s: float, bp: float, bs: float) -> list[str]:
        row = [f"{bp:.2f}", f"{bs:.4f}"]
        return row + [f"{p:.2f}", f"{s:.4f}"] if model else row

    for d in result.datasets:
        table = Table(title=f"{d.name} ×{d.scale} (Y channel, {d.scale}-pixel border)", show_footer=False)
        for k, column in enumerate(columns):
            table.add_column(column, justify="left" if k == 0 else "right")
        for i in d.images:
            table.add_row(i.name, *cells(i.psnr, i.ssim, i.bicubic_psnr, i.bicubic_ssim))
        if d.images:
            table.add_section()
            table.add_row(f"mean of {len(d.images)}", *cells(d.psnr, d.ssim, d.bicubic_psnr, d.bicubic_ssim),
                          style="bold")
        console.print(table)
    if len(result.datasets) > 1:
        summary = Table(title=f"{result.method} ×{result.scale}: means (PSNR dB / SSIM on Y)")
        for k, column in enumerate(["dataset", *columns[1:]]):
            summary.add_column(column, justify="left" if k == 0 else "right")
        for d in result.datasets:
            if d.images:
                summary.add_row(d.name, *cells(d.psnr, d.ssim, d.bicubic_psnr, d.bicubic_ssim))
        console.print(summary)


def print_models(found: dict[str, "ModelInfo"]) -> None:
    """``subpixel models``: a table of the packaged models (``found``: name -> ModelInfo)."""
    from rich.table import Table

    table = Table(title="packaged models (use with --model NAME, or -x N for espcn-xN)")
    table.add_column("name", no_wrap=True, min_width=15)
    for column in ("scale", "channels", "Set5 PSNR", "Set14 PSNR"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    table.add_column("licence", no_wrap=True)
    table.caption = "* more terms in the model card: subpixel models --json"
    for name, info in found.items():
        psnr5, psnr14 = info.psnr("Set5"), info.psnr("Set14")
        table.add_row(name, f"×{info.scale}", f"{info.config.channels} ({info.color_space.upper()})",
                      "–" if psnr5 is None else f"{psnr5:.2f} dB", "–" if psnr14 is None else f"{psnr14:.2f} dB",
                      short_licence(info.license))
    Console().print(table)


def show_throughput(result: "Throughput") -> None:
    """``subpixel bench``'s result (a :class:`~subpixel_cli.bench.Throughput`), one line on stdout."""
    w, h = result.size
    threads = f", {result.threads} thread{'s' if result.threads != 1 else ''}" if result.threads else ""
    share = (f", {result.peak_share:.0%} of this machine's {result.precision} matmul peak ({result.peak_gflops:.0f} "
             f"{'GOP' if result.precision == 'int8' else 'GFLOP'}/s)") if result.peak_share else ""
    click.echo(f"{result.fps:.2f} frames/s ({1000 / result.fps:.1f} ms/frame) for {w}×{h} -> "
               f"{w * result.scale}×{h * result.scale} in {result.math}, {result.gflops:.1f} GFLOP/s{share}{threads}")


def show_steps(steps_ms: dict[str, float]) -> None:
    """``subpixel bench --profile``: milliseconds per frame of each step and its share."""
    from rich.table import Table

    total = sum(steps_ms.values()) or 1.0
    table = Table(title="where a frame's time goes (best of 5 batches per step)")
    for k, column in enumerate(["step", "ms/frame", "share"]):
        table.add_column(column, justify="left" if k == 0 else "right")
    for step, ms in steps_ms.items():
        table.add_row(step, f"{ms:.2f}", f"{ms / total:.0%}")
    table.add_section()
    table.add_row("sum", f"{total:.2f}", "100%", style="bold")
    Console().print(table)


def show_result(result: "Result", console: Console, as_json: bool, show: bool, debug: bool) -> None:
    """One file's result: its ``--json`` record, and on stderr its failure, note or traceback."""
    if as_json:
        emit_json(result.as_dict())
    if result.status == "failed" and show:
        console.print(f"[red]failed:[/] {escape(result.message)}", soft_wrap=True)
    elif result.status == "ok" and result.message and show:
        console.print(f"[yellow]note:[/] {escape(str(result.source))}: {escape(result.message)}", soft_wrap=True)
    if result.traceback and debug:
        console.print(result.traceback, markup=False, highlight=False, soft_wrap=True)


def print_quantized(result: "QuantizeResult") -> None:
    """``subpixel quantize``'s result (a :class:`~subpixel_cli.quantize.QuantizeResult`): the file
    written and the accuracy checks, on stderr."""
    cal = result.calibration
    err_console.print(f"[green]wrote[/] {escape(str(result.folder))}/quantization.safetensors "
                      f"({cal.images} images, {cal.pixels / 1e6:.1f} M LR pixels, {result.seconds:.0f} s)", soft_wrap=True)
    for check in cal.checks:
        err_console.print(f"  {check.dataset}: fp32 {check.fp32:.2f} dB, int8 {check.int8:.2f} dB ({-check.loss:+.3f})")
    if not cal.checks:
        print_note("Set5/Set14 not found (--data-dir): int8 is unchecked, and --precision auto will not use it; "
                   "--precision int8 still does")
    elif not cal.accurate():
        print_note("int8 loses more than 0.05 dB here: --precision auto will not use it")
