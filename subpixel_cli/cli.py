"""The ``subpixel`` command line: parse, call one library function, show the result.

Exit codes (also in README.md):
  0  everything asked for was done
  1  the command ran but some inputs failed (each is reported)
  2  usage error: bad option, unknown model, nothing to do
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
from rich.console import Console
from rich.markup import escape

from subpixel_cli import __version__
from subpixel_cli import choices
from subpixel_cli.console import (emit_json, err_console, eval_progress, print_eval_tables, print_summary,
                                  print_note, progress_bar, short_licence, show_result, show_steps, train_progress)
from subpixel_cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, SubpixelError

if TYPE_CHECKING:

    from subpixel_cli.jobs import Result
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
            lines = str(exc).strip().splitlines()
            detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="subpixel")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def main(debug: bool) -> None:
    """subpixel: fast super-resolution with ESPCN sub-pixel convolution networks."""
    if not debug:  # our one-line errors say what failed; OpenCV's own log lines would only add noise
        os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")


def _load_upscaler(model: str | None, scale: int | None, device: str, precision: str, tile: int | None,
                   batch_size: int, max_memory: int | None) -> "Upscaler":
    from subpixel_cli.registry import load_model
    from subpixel_cli.upscale import Upscaler

    if model is None and scale is None:
        scale = 4
    loaded = load_model(model, scale)
    budget = None if max_memory is None else max_memory << 20
    return Upscaler(loaded, device=device, precision=precision, tile=tile, batch_size=batch_size, memory_budget=budget)


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


def memory_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--tile and --max-memory, for the commands that upscale pictures or frames."""
    func = click.option("--max-memory", type=click.IntRange(min=64), metavar="MIB",
                        help="Memory budget for one forward pass, in MiB (default 1024 on CPU).")(func)
    return click.option("--tile", type=click.IntRange(min=8),
                        help="Tile side in input pixels (default: automatic, from --max-memory).")(func)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output folder, or a file for a single input.")
@model_options
@memory_options
@click.option("--format", "fmt", type=click.Choice(choices.OUTPUT_FORMATS), help="Output format (default png, or -o FILE's suffix).")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--suffix", help="Appended to output names (default _x<scale>).")
@click.option("--recursive", "-r", is_flag=True, help="Descend into sub-folders (mirrored under -o).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs (otherwise they are skipped).")
@click.option("--max-pixels", type=click.IntRange(min=1), help="Largest input accepted, in pixels (Pillow's decompression-bomb guard; default 89.5 M).")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
@click.option("--json", "as_json", is_flag=True, help="One JSON result per file on stdout.")
@click.option("--shard", metavar="K/N", help="Do only part K of N (balanced by pixels), e.g. for a job array.")
@handle_errors
def upscale(inputs: tuple[str, ...], output: Path | None, scale: int | None, model: str | None, device: str,
            precision: str, batch_size: int, tile: int | None, max_memory: int | None, fmt: str | None,
            quality: int, suffix: str | None, recursive: bool, force: bool, max_pixels: int | None,
            quiet: bool, as_json: bool, shard: str | None) -> None:
    """Upscale images: files, folders and globs.

    Outputs go beside each input as NAME_x4.png, or into -o DIR. Existing outputs are skipped
    unless --force; every file is written under a temporary name and renamed when complete.

    \b
    Examples:
      subpixel upscale photo.jpg -x4
      subpixel upscale shots/ -o big/ --recursive --format webp
      subpixel upscale '*.png' --model hf://owner/espcn-x3
      torchrun --nproc_per_node 8 -m subpixel_cli upscale shots/ -o big/
      subpixel upscale shots/ -o big/ --shard 2/4
    """
    from subpixel_cli import shard as sharding
    from subpixel_cli.jobs import OutputPlan, Runner, plan_jobs

    part = sharding.parse_shard(shard) if shard is not None else None
    if max_pixels is not None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = max_pixels
    upscaler = _load_upscaler(model, scale, device, precision, tile, batch_size, max_memory)
    plan = OutputPlan(output=output, suffix=suffix if suffix is not None else f"_x{upscaler.scale}", fmt=fmt)
    jobs = plan_jobs(list(inputs), plan, recursive)
    debug = click.get_current_context().find_root().params.get("debug", False)  # read here: results arrive on other threads
    with sharding.joined() as group:
        mine = sharding.select(jobs, part, group)
        show = not quiet and (group is None or group.main)
        live = group is None  # under torchrun rank 0 shows every process's results after the gather
        if show and upscaler.notice:
            print_note(upscaler.notice)
        if show:
            err_console.print(f"{upscaler.info.name}: ×{upscaler.scale} {upscaler.info.color_space.upper()} model on "
                              f"{upscaler.device.type} ({str(upscaler.dtype).removeprefix('torch.')}), "
                              f"{_share(len(jobs), len(mine), part, group)}")
        with progress_bar(show) as progress:
            files = progress.add_task("files", total=len(mine))
            tiles = progress.add_task("tiles", total=None, visible=False)

            def on_result(result: "Result") -> None:
                progress.advance(files)
                progress.update(tiles, visible=False)
                if live:
                    show_result(result, progress.console, as_json, show, debug)

            def on_tiles(done: int, total: int) -> None:
                if total > 1:
                    progress.update(tiles, completed=done, total=total, visible=True)

            runner = Runner(upscaler, force=force, fmt=fmt, quality=quality, on_result=on_result, on_tiles=on_tiles)
            try:
                report = sharding.run_part(runner, mine, group)
            except KeyboardInterrupt:
                done, failed = runner.report.count("ok") + runner.report.count("skipped"), runner.report.count("failed")
                raise KeyboardInterrupt(f"{done} of {len(mine)} file(s) done" + (f", {failed} failed" if failed else "")
                                        + "; run the same command again to continue (done ones are skipped)") from None
        if group is not None:
            gathered = sharding.gather(group, jobs, report)
            if gathered is None:
                sys.exit(0)  # rank 0 carries the run's exit code: torchrun would end the others on a non-zero one
            report = gathered
            for result in report.results:
                show_result(result, err_console, as_json, not quiet, debug)
    if show:
        print_summary(report)
    sys.exit(report.return_code)


def _share(total: int, mine: int, part: "Any", group: "Any") -> str:
    """The header's count of files: all of them, this shard's, or how many processes share them."""
    if group is None:
        return f"{total} file(s)" if part is None else f"{mine} of {total} file(s) (shard {part})"
    return (f"{total} file(s)" if part is None else f"shard {part} of {total} file(s)") + f" in {group.world} processes"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model on stdout.")
@handle_errors
def models(as_json: bool) -> None:
    """List the packaged models: name, scale, channels and the PSNR from their cards."""
    from rich.table import Table

    from subpixel_cli.registry import packaged_models

    found = packaged_models()
    if as_json:
        for name, info in found.items():
            emit_json({"name": name, "scale": info.scale, "channels": info.config.channels,
                       "color_space": info.color_space, "metrics": info.metrics, "license": info.license,
                       "training": info.training})
        return
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


def _command_line(ctx: click.Context) -> str:
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


@main.command(epilog=EXIT_CODES_HELP)
@click.option("--dataset", required=True, metavar="celebA|PATH", help="'celebA' (the original project's face recipe) or a folder of training images.")
@click.option("--data-dir", metavar="DIR", help="Where celebA's img_align_celeba/ is (or hf://datasets/OWNER/NAME to fetch it).")
@click.option("-x", "--scale", type=click.IntRange(min=2), default=None, help="Upscale factor (default 4 for celebA, else 3).")
@click.option("--steps", type=click.IntRange(min=1), help="Total optimiser steps.")
@click.option("--epochs", type=click.IntRange(min=1), help="Total epochs (default 100 when --steps is not given).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Per process.")
@click.option("--patch-size", type=click.IntRange(min=9), default=32, show_default=True, help="LR patch side (folder datasets).")
@click.option("--patches-per-image", type=click.IntRange(min=1), default=16, show_default=True, help="Patches per image per epoch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--min-lr", type=click.FloatRange(min=0), default=1e-5, show_default=True)
@click.option("--schedule", type=click.Choice(choices.SCHEDULES), default="cosine", show_default=True)
@click.option("--loss", type=click.Choice(choices.LOSSES), default="l1", show_default=True)
@click.option("--channels", type=click.Choice(["1", "3"]), default=None, help="1 = Y (default), 3 = RGB (default for celebA).")
@click.option("--degradation", type=click.Choice(choices.DEGRADATIONS), default="bicubic", show_default=True,
              help="bicubic: MATLAB imresize (as eval); gaussian: the paper's blur + subsample.")
@click.option("--device", type=click.Choice(choices.DEVICES), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Processes that load the images and cut patches.")
@click.option("--device-data/--no-device-data", default=None, help="Cut patches on the device from images held there (default: on CUDA).")
@click.option("--val", metavar="DATASET", help="Folder of HR images for validation PSNR each epoch (celebA: held-out faces).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder (default runs/<dataset>-x<scale>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True, help="Steps between checkpoints.")
@click.option("--precision", type=click.Choice(choices.TRAIN_PRECISIONS), default="auto", show_default=True,
              help="auto: bf16 autocast on CPUs with bf16 arithmetic (AVX-512 BF16/AMX), fp16 AMP on CUDA, else fp32.")
@click.option("--scale-aug", type=click.FloatRange(0.2, 1.0), default=1.0, show_default=True, metavar="MIN",
              help="Scale augmentation (folder datasets): keep copies of each image shrunk by random factors in [MIN, 1] (JPEGs ≤ 0.9).")
@click.option("--scale-versions", type=click.IntRange(min=1), default=4, show_default=True, help="Shrunk copies per image with --scale-aug.")
@click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, metavar="DECAY",
              help="Validate and save an exponential moving average of the weights (e.g. 0.999).")
@click.option("--val-holdout", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Hold back N training images (spread evenly over the folders) for validation.")
@click.option("--init-from", metavar="M", help="Start from this model: conv1/conv2 from another scale (e.g. a ×3 run for ×2/×4), all layers when scale and channels match (fine-tuning).")
@click.option("--name", help="Model name in config.json (default: the run folder's name).")
@click.option("--degrade", metavar="SPEC", default=None,
              help="Damage each LR patch as real pictures are damaged, anew every epoch (e.g. "
                   "jpeg:30-95@0.8,noise:0-8@0.3,h264:20-36@0.2; see docs/degradations.md).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@handle_errors
def train(quiet: bool, **options: Any) -> None:
    """Train an ESPCN model; the run folder (--out) is a model folder usable as --model.

    Checkpoints are written atomically; --resume continues with the same step and optimiser
    state. Run under torchrun for several processes or GPUs.

    \b
    Examples:
      subpixel train --dataset celebA --data-dir ~/data --steps 20000
      subpixel train --dataset train/ -x 3 --val benchmarks/Set5 --out runs/x3
      subpixel train --dataset train/ -x 4 --init-from espcn-x4 --degrade jpeg:30-95,noise:0-8@0.3
      torchrun --nproc_per_node 2 -m subpixel_cli train --dataset train/ -x 2
    """
    import os

    from subpixel_cli.train import TrainConfig
    from subpixel_cli.train import train as run_training

    dataset, steps = options["dataset"], options["steps"]
    options["scale"] = options["scale"] or (4 if dataset.lower() == "celeba" else 3)
    options["out"] = str(options["out"] or Path("runs") / f"{Path(dataset).name.lower()}-x{options['scale']}")
    options["channels"] = int(options["channels"]) if options["channels"] else None
    config = TrainConfig(**options, command=_command_line(click.get_current_context()))
    show = not quiet and int(os.environ.get("RANK", "0")) == 0
    if not show:
        result = run_training(config)
    else:
        progress, on_event = train_progress(steps or 1)
        with progress:
            result = run_training(config, on_event=on_event)
    if show:
        best = result.state.best_val_psnr
        err_console.print(f"{result.out}: {result.state.step} steps in {result.state.elapsed:.0f} s"
                          + (f", best val PSNR {best:.2f} dB" if best is not None else ""))


@main.command("eval", epilog=EXIT_CODES_HELP)
@click.argument("datasets", nargs=-1, required=True)
@click.option("--model", "model_spec", metavar="M", default=None,
              help="Model to score: packaged name, model folder, .safetensors file or hf://owner/repo.")
@click.option("--bicubic", is_flag=True, help="Score plain bicubic upscaling (the baseline) instead of a model.")
@click.option("-x", "--scale", type=click.IntRange(min=2), default=None,
              help="Scale factor; without --model, scores the packaged espcn-xN.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where dataset names (Set5, Set14, BSD100) are looked up; default $SUBPIXEL_DATA.")
@click.option("--save-images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write SR outputs to DIR/<dataset>/ and a comparison sheet DIR/<dataset>_comparison.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object on stdout.")
@handle_errors
def eval_command(datasets: tuple[str, ...], model_spec: str | None, bicubic: bool, scale: int | None,
                 data_dir: Path | None, save_images: Path | None, as_json: bool) -> None:
    """Benchmark a model (or --bicubic) on folders of HR images: PSNR and SSIM on Y.

    DATASET is a folder of HR images or a name found under --data-dir. The protocol is the
    literature's: HR cropped to a multiple of the scale, LR by MATLAB-style bicubic imresize,
    Y of BT.601 YCbCr, SCALE pixels shaved from each border.
    """
    from subpixel_cli.errors import EXIT_FAILED, UsageError
    from subpixel_cli.evaluate import evaluate_model

    if bicubic and model_spec:
        raise UsageError("--bicubic and --model exclude each other; pick one")
    if bicubic and scale is None:
        raise UsageError("--bicubic needs a scale: add -x N")
    loaded = None
    if not bicubic:
        from subpixel_cli.registry import load_model

        loaded = load_model(model_spec, scale)
        scale = loaded.info.scale
    assert scale is not None
    with eval_progress() as progress:
        result = evaluate_model(loaded, scale, datasets, data_dir=data_dir, save_dir=save_images, progress=progress)
    if as_json:
        emit_json(result.to_dict())
    else:
        print_eval_tables(result)
    for d in result.datasets:
        for name, error in d.failures:
            err_console.print(f"[red]failed:[/] {d.name}/{name}: {error}", soft_wrap=True)
    if save_images is not None and not as_json:
        err_console.print(f"SR images and comparison sheets in {save_images}")
    if result.failed:
        err_console.print(f"[red]{result.failed} image(s) could not be scored[/]")
        sys.exit(EXIT_FAILED)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("source", type=click.Path(path_type=Path), metavar="INPUT")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output video (default: INPUT_x<r>.mp4 beside the input).")
@model_options
@memory_options
@click.option("--codec", default="auto", show_default=True,
              help="auto (H.264 yuv420p, or the container's own codec), h264, hevc, vp9, av1, mpeg4, ffv1, or an FFmpeg encoder.")
@click.option("--crf", type=click.IntRange(0, 63), help="Constant quality, lower is better (default 18 for H.264).")
@click.option("--preset", metavar="NAME",
              help="x264/x265 speed preset, ultrafast…veryslow (default by output size: veryfast up to 960×540, superfast "
                   "up to 1280×720, ultrafast above: on 2 cores the encoder takes its CPU from the model; ~30% larger "
                   "files than superfast).")
@click.option("--pix-fmt", metavar="FMT", help="Output pixel format (default: 4:2:0 at the source's bit depth, e.g. yuv420p10le).")
@click.option("--lossless", is_flag=True,
              help="No loss after the model: FFV1 RGB (exact; .mkv, large files), or x264/x265 lossless with --codec.")
@click.option("--start", metavar="T", help="Start at T: seconds (12.5) or [HH:]MM:SS[.ms].")
@click.option("--end", metavar="T", help="Stop at T, counted from the start of the input.")
@click.option("--fps", metavar="RATE", help="Frame rate of a folder of frames given as INPUT (25, 29.97, 30000/1001).")
@click.option("--frames-dir", type=click.Path(path_type=Path), metavar="DIR", help="Write numbered PNG frames into DIR instead of a video.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object describing the result on stdout.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue a stopped run from its finished segments (kept in .NAME.work/ beside the output); --no-resume starts over.")
@handle_errors
def video(source: Path, output: Path | None, scale: int | None, model: str | None, device: str, precision: str,
          batch_size: int, tile: int | None, max_memory: int | None, codec: str, crf: int | None,
          preset: str | None, pix_fmt: str | None, lossless: bool, start: str | None, end: str | None, fps: str | None,
          frames_dir: Path | None, force: bool, quiet: bool, as_json: bool, resume: bool) -> None:
    """Upscale a video, keeping its frame timing, bit depth, HDR metadata, audio, subtitles and chapters.

    INPUT is a video file, or a folder of numbered frames with --fps. Frames stream through the
    model (decoding, inference and encoding overlap), so memory stays flat for any length. The
    output is written under a temporary name and renamed when complete.

    \b
    Examples:
      subpixel video clip.mp4 -x2
      subpixel video clip.mkv -x3 -o big.mkv --start 1:00 --end 1:30
      subpixel video clip.mp4 -x4 --frames-dir frames/
      subpixel video frames/ --fps 25 -x2 -o movie.mp4
      subpixel video hdr10.mkv -x2 -o big.mkv --lossless
      torchrun --nproc_per_node 4 -m subpixel_cli video long.mp4 -x2
    """
    import time

    from subpixel_cli import shard as sharding
    from subpixel_cli.errors import InputError, UsageError
    from subpixel_cli.video import VideoOptions, default_output, parse_rate, parse_time, stopped_note, upscale_video

    if output is not None and frames_dir is not None:
        raise UsageError("give either -o (a video) or --frames-dir (PNG frames), not both")
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    options = VideoOptions(codec=codec, crf=crf, start=parse_time(start), end=parse_time(end), fps=parse_rate(fps),
                           pix_fmt=pix_fmt, lossless=lossless, preset=preset)
    upscaler = _load_upscaler(model, scale, device, precision, tile, batch_size, max_memory)
    target = frames_dir or output or default_output(source, upscaler.scale)
    with sharding.joined() as group:
        show = not quiet and (group is None or group.main)  # under torchrun: rank 0's progress, for its own part
        if show and upscaler.notice:
            print_note(upscaler.notice)
        header = (f"{upscaler.info.name}: ×{upscaler.scale} {upscaler.info.color_space.upper()} model on "
                  f"{upscaler.device.type} ({upscaler.precision.name}), {escape(str(source))} -> {escape(str(target))}")
        with progress_bar(show, "{task.fields[rate]}") as progress:
            task = progress.add_task("frames", total=None, rate="")
            started = time.perf_counter()

            def on_progress(done: int, total: int | None) -> None:
                nonlocal header
                if show and header:  # once the work starts: an input that cannot be read is its one line
                    progress.console.print(header, soft_wrap=True)
                    header = ""
                fps = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, total=total, rate=f"{fps:.1f} fps" if done else "")

            try:
                result = upscale_video(upscaler, source, target, options, frames_dir=frames_dir is not None,
                                       force=force, batch_size=batch_size, progress=on_progress, resume=resume,
                                       group=group)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(stopped_note(target)) from None
        if result is None:
            sys.exit(0)  # not rank 0: rank 0 reports the run and carries its exit code
    if as_json:
        emit_json(result.as_dict())
    if show:
        for note in result.notes:
            print_note(note)
        extra = f", {result.audio_streams_copied} audio stream(s) copied" if result.audio_streams_copied else ""
        if result.segments_per_process is not None:
            extra += f", segments in {len(result.segments_per_process)} processes"
        if result.segments_resumed:
            extra += f", {result.frames_upscaled} upscaled by this run"
        err_console.print(f"[green]wrote[/] {escape(result.output)}: {result.frames} frames, {result.size[0]}×{result.size[1]}, "
                          f"{result.frame_rate:.3g} fps, {result.codec} {result.pix_fmt}{extra} in {result.seconds:.1f} s "
                          f"({result.speed:.1f} frames/s)", soft_wrap=True)
    if not result.complete:
        sys.exit(EXIT_FAILED)  # the input was truncated: what it held was upscaled, the rest is missing


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r} is not WIDTHxHEIGHT (e.g. 640x360)", param_hint="--size")
    return int(parts[0]), int(parts[1])


@main.command(epilog=EXIT_CODES_HELP)
@model_options
@click.option("--size", metavar="WxH", help="Input frame size (default: whatever makes 1920×1080 at this scale).")
@click.option("--seconds", type=click.FloatRange(min=0), default=5.0, show_default=True, help="How long to time (after one warm-up batch).")
@click.option("--frames", "layout", type=click.Choice(["rgb", "i420"]), default="rgb", show_default=True,
              help="rgb: RGB pictures, as `subpixel upscale` takes them; i420: the 8-bit 4:2:0 YCbCr planes that "
                   "`subpixel video` upscales such video in (Y models).")
@click.option("--profile", is_flag=True, help="Also time each step of the path (CPU): where a frame's time goes.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object on stdout.")
@handle_errors
def bench(scale: int | None, model: str | None, device: str, precision: str, batch_size: int, size: str | None,
          layout: str, seconds: float, profile: bool, as_json: bool) -> None:
    """Measure upscaling speed on this machine: frames/s on same-size frames (RGB, or the
    I420 planes of video), and the share of the machine's matrix-multiply peak in the same
    precision that it reaches.

    \b
    Examples:
      subpixel bench -x3                      # 640×360 -> 1080p
      subpixel bench -x3 --precision int8 --profile
      subpixel bench -x3 --frames i420        # what `subpixel video` runs
      subpixel bench -x2 --device cuda --precision fp16 --batch-size 16
      subpixel bench --model my-model/ --size 1280x720 --json
    """
    from subpixel_cli.bench import measure_throughput, profile_steps

    frame = _parse_size(size)
    upscaler = _load_upscaler(model, scale, device, precision, None, batch_size, None)
    width, height = frame or (1920 // upscaler.scale, 1080 // upscaler.scale)
    if upscaler.notice and not as_json:
        print_note(upscaler.notice)
    from subpixel_cli import kernels

    no_kernels = (kernels.unavailable("int8") or kernels.unavailable("head")) if upscaler.device.type == "cpu" else None
    if not as_json:
        err_console.print(f"{upscaler.info.name}: ×{upscaler.scale} on {upscaler.device.type} "
                          f"({upscaler.precision.name}), {width}×{height} {layout.upper()} frames, batches of {batch_size}…")
    steps = profile_steps(upscaler, width, height, layout=layout) if profile else None
    result = measure_throughput(upscaler, width, height, seconds, peak=True, layout=layout)
    if as_json:
        emit_json({"model": upscaler.info.name, **result.as_dict(), "notice": upscaler.notice, "kernels_missing": no_kernels,
                   **({"steps_ms": {k: round(v, 3) for k, v in steps.items()}} if steps else {})})
        return
    threads = f", {result.threads} thread{'s' if result.threads != 1 else ''}" if result.threads else ""
    share = (f", {result.peak_share:.0%} of this machine's {result.precision} matmul peak ({result.peak_gflops:.0f} "
             f"{'GOP' if result.precision == 'int8' else 'GFLOP'}/s)") if result.peak_share else ""
    click.echo(f"{result.fps:.2f} frames/s ({1000 / result.fps:.1f} ms/frame) for {width}×{height} -> "
               f"{width * result.scale}×{height * result.scale} in {result.precision}, {result.gflops:.1f} GFLOP/s{share}{threads}")
    if steps:
        show_steps(steps)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model_spec", metavar="MODEL")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="FILE.onnx",
              help="The ONNX file to write; its card goes to FILE.md beside it.")
@click.option("--rgb", is_flag=True, help="A picture model: RGB in, RGB out, padding and (for Y models) colour conversion and chroma inside the graph.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing FILE.onnx and FILE.md.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object on stdout.")
@handle_errors
def export(model_spec: str, output: Path, rgb: bool, precision: str, force: bool, as_json: bool) -> None:
    """Export MODEL to ONNX for onnxruntime, OpenCV's dnn or any ONNX runtime.

    MODEL is a packaged name, a model folder, a .safetensors file or hf://owner/repo[@rev].
    Without --rgb the file is the bare network (Y or RGB planes in [0, 1], as trained). Needs
    the export extra: pip install 'subpixel[export]'.

    \b
    Examples:
      subpixel export espcn-x3 -o espcn-x3.onnx
      subpixel export espcn-x4 --rgb -o models/espcn-x4-rgb.onnx --precision fp16
    """
    from subpixel_cli.export import export_model, require_onnx
    from subpixel_cli.registry import load_model

    require_onnx()  # before a hub download that would be wasted
    result = export_model(load_model(model_spec), output, rgb=rgb, precision=precision, force=force)
    if as_json:
        emit_json(result.as_dict())
    else:
        err_console.print(f"[green]wrote[/] {escape(str(result.path))} ({result.form}, {result.precision}, "
                          f"{result.size_bytes / 1024:.0f} KiB) and {escape(str(result.card))}", soft_wrap=True)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("model_spec", metavar="MODEL")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Training images to calibrate on (folders inside are searched too); default $SUBPIXEL_DATA/train.")
@click.option("--images", type=click.IntRange(min=1), default=48, show_default=True, help="How many of them (spread over the folder).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write a copy of the model with its calibration here (needed for packaged and hub models).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where Set5 and Set14 are looked up for the accuracy check; default $SUBPIXEL_DATA.")
@click.option("--force", is_flag=True, help="Replace an existing calibration or model in the target folder.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object on stdout.")
@handle_errors
def quantize(model_spec: str, data: Path | None, images: int, output: Path | None, data_dir: str | None,
             force: bool, as_json: bool) -> None:
    """Calibrate MODEL for the int8 path (`--precision int8`) and check its accuracy.

    Runs the model on training images to find the range of each of conv1's activation channels,
    then scores fp32 and int8 on Set5 and Set14 (where they can be found) by the protocol of
    `subpixel eval` and the model cards. The calibration goes into the model folder as quantization.safetensors;
    `--precision auto` uses int8 only where that check is within 0.05 dB of fp32 and the CPU has
    fast int8 (AVX-512 VNNI or AMX, with the first layer's C kernel built by the machine's C
    compiler; without that kernel int8 measured no faster than bf16).

    \b
    Examples:
      subpixel quantize runs/x3/ --data ~/data/train
      subpixel quantize espcn-x2 -o models/espcn-x2-int8 --data ~/data/train
    """
    from subpixel_cli.data import DATA_ENV
    from subpixel_cli.quantize import quantize_model

    if data is None:
        root = os.environ.get(DATA_ENV)
        if not root:
            raise click.UsageError(f"give --data DIR (training images to calibrate on), or set {DATA_ENV}")
        data = Path(root) / "train"
    with progress_bar(err_console.is_terminal and not as_json, timing=False) as bar:
        task = bar.add_task("calibrating", total=images)
        result = quantize_model(model_spec, data, output, images, data_dir, force,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        emit_json(result.as_dict())
        return
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
