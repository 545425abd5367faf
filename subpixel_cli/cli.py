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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
from rich.markup import escape

from subpixel_cli import __version__
from subpixel_cli import choices
from subpixel_cli.command import (EXIT_CODES_HELP, command_line, denoise_option, handle_errors, print_kernels_note,
                                  memory_options, model_options, parse_features, parse_size)
from subpixel_cli.console import (emit_json, err_console, eval_progress, print_eval_tables, print_models, print_note,
                                  print_quantized, print_summary, progress_bar, show_result, show_steps,
                                  show_throughput, train_progress, video_header)
from subpixel_cli.errors import EXIT_FAILED

if TYPE_CHECKING:

    from subpixel_cli.jobs import Result
    from subpixel_cli.upscale import Upscaler

@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="subpixel")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def main(debug: bool) -> None:
    """subpixel: fast super-resolution with ESPCN sub-pixel convolution networks."""
    if not debug:  # our one-line errors say what failed; OpenCV's own log lines would only add noise
        os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")


def _load_upscaler(model: str | None, scale: int | None, device: str, precision: str, tile: int | None,
                   batch_size: int, max_memory: int | None, denoise: float | None = None) -> "Upscaler":
    from subpixel_cli.registry import load_denoise, load_model
    from subpixel_cli.runtime import tune_for
    from subpixel_cli.upscale import Upscaler

    if model is None and scale is None:
        scale = 4
    loaded = load_model(model, scale) if denoise is None else load_denoise(model, scale, denoise)
    budget = None if max_memory is None else max_memory << 20
    upscaler = Upscaler(loaded, device=device, precision=precision, tile=tile, batch_size=batch_size, memory_budget=budget)
    tune_for(upscaler.device)  # the process's settings are the command's to make (the same for every upscaler)
    return upscaler


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output folder, or a file for a single input.")
@model_options
@denoise_option
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
            precision: str, batch_size: int, denoise: float | None, tile: int | None, max_memory: int | None,
            fmt: str | None,
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
    from subpixel_cli.jobs import OutputPlan, Report, Runner, plan_jobs

    part = sharding.parse_shard(shard) if shard is not None else None
    if max_pixels is not None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = max_pixels
    load = functools.partial(_load_upscaler, device=device, precision=precision, tile=tile, batch_size=batch_size,
                             max_memory=max_memory)
    upscaler = load(model, scale, denoise=denoise)
    plan = OutputPlan(output=output, suffix=suffix if suffix is not None else f"_x{upscaler.scale}", fmt=fmt)
    jobs = plan_jobs(list(inputs), plan, recursive)
    debug = click.get_current_context().find_root().params.get("debug", False)  # read here: results arrive on other threads
    with sharding.joined() as group:
        mine = sharding.select(jobs, part, group)
        if mine is None:
            sys.exit(0)  # not rank 0, and rank 0 could not split the jobs: it says why
        show = not quiet and (group is None or group.main)
        live = group is None  # under torchrun rank 0 shows every process's results after the gather
        # Without --model or --denoise each input gets the packaged model that fits it (choice.py).
        runs = _runs_by_input(upscaler, mine, load) if model is None and denoise is None else [(upscaler, mine, {})]
        report, seen = Report(), Report()  # seen: every result so far, for what Ctrl-C says
        print_kernels_note(upscaler, show)
        for upscaler, part_jobs, picks in runs:
            if show and upscaler.notice:
                print_note(upscaler.notice)
            if show:
                why = f" ({_reasons(picks)})" if picks else ""
                err_console.print(f"{upscaler.info.name}: ×{upscaler.scale} {upscaler.info.color_space.upper()} model "
                                  f"on {upscaler.device.type} ({str(upscaler.dtype).removeprefix('torch.')}), "
                                  f"{_share(len(jobs) if len(runs) == 1 else len(part_jobs), len(part_jobs), part, group)}"
                                  + why)
            with progress_bar(show) as progress:
                files = progress.add_task("files", total=len(part_jobs))
                tiles = progress.add_task("tiles", total=None, visible=False)

                def on_result(result: "Result", name: str = upscaler.info.name, picks: dict = picks) -> None:
                    seen.results.append(result)
                    result.model = name
                    result.model_reason = picks[result.source].reason if result.source in picks else None
                    progress.advance(files)
                    progress.update(tiles, visible=False)
                    if live:
                        show_result(result, progress.console, as_json, show, debug)

                def on_tiles(done: int, total: int) -> None:
                    if total > 1:
                        progress.update(tiles, completed=done, total=total, visible=True)

                runner = Runner(upscaler, force=force, fmt=fmt, quality=quality, on_result=on_result, on_tiles=on_tiles)
                try:
                    report.results += sharding.run_part(runner, part_jobs, group).results
                except KeyboardInterrupt:
                    raise KeyboardInterrupt(seen.stopped(len(mine))) from None
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


def _runs_by_input(clean: "Upscaler", jobs: list, load: Callable[..., "Upscaler"]) -> list[tuple["Upscaler", list, dict]]:
    """The jobs split between the packaged clean model and its real-world twin, by what each input
    went through (:mod:`subpixel_cli.choice`): ``(upscaler, jobs, {source: Pick})`` for each model
    that has jobs. Without a packaged twin every job stays with ``clean``."""
    from subpixel_cli.choice import pick_for_image
    from subpixel_cli.registry import packaged_models

    twin = clean.info.twin
    if not twin or twin not in packaged_models():
        return [(clean, jobs, {})]
    picks = {job.source: pick_for_image(job.source) for job in jobs}
    real_jobs = [job for job in jobs if picks[job.source].real]
    clean_jobs = [job for job in jobs if not picks[job.source].real]
    runs = [(clean, clean_jobs, picks)] if clean_jobs or not real_jobs else []
    if real_jobs:
        runs.append((load(twin, clean.scale), real_jobs, picks))
    return runs


def _reasons(picks: dict) -> str:
    """Why the inputs of a run got its model, counted: 'not a JPEG ×3; JPEG quality ~75 (≤ 90)'."""
    from collections import Counter

    counts = Counter(p.reason for p in picks.values())
    return "chosen by input, --model overrides: " + "; ".join(
        reason + (f" ×{n}" if n > 1 else "") for reason, n in counts.most_common(3))


def _share(total: int, mine: int, part: "Any", group: "Any") -> str:
    """The header's count of files: all of them, this shard's, or how many processes share them."""
    if group is None:
        return f"{total} file(s)" if part is None else f"{mine} of {total} file(s) (shard {part})"
    return (f"{total} file(s)" if part is None else f"shard {part} of {total} file(s)") + f" in {group.world} processes"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model on stdout.")
@handle_errors
def models(as_json: bool) -> None:
    """List the packaged models: name, scale, channels and the PSNR from their cards; with --json
    also what the CPU runs each in here (``cpu``: the precision ``auto`` takes, and why not int8 or
    bf16, and the C kernels' status)."""
    from subpixel_cli.registry import load_model, packaged_models
    from subpixel_cli.runtime import cpu_paths

    found = packaged_models()
    if not as_json:
        print_models(found)
    for name, info in found.items() if as_json else ():
        emit_json({"name": name, "scale": info.scale, "channels": info.config.channels,
                   "color_space": info.color_space, "metrics": info.metrics, "license": info.license,
                   "training": info.training, "cpu": cpu_paths(load_model(name).calibration)})


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
@click.option("--val-every", type=click.IntRange(min=1), metavar="STEPS", help="Steps between validations (default: each epoch, or every few where epochs are under 100 steps).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS", help="Stop after this much wall time: validate, save the model folder and checkpoint, exit 0 (--resume continues).")
@click.option("--precision", type=click.Choice(choices.TRAIN_PRECISIONS), default="auto", show_default=True,
              help="auto: bf16 autocast on CPUs with bf16 arithmetic (AVX-512 BF16/AMX), fp16 AMP on CUDA, else fp32.")
@click.option("--scale-aug", type=click.FloatRange(0.2, 1.0), default=1.0, show_default=True, metavar="MIN",
              help="Scale augmentation (folder datasets): keep copies of each image shrunk by random factors in [MIN, 1] (JPEGs ≤ 0.9).")
@click.option("--scale-versions", type=click.IntRange(min=1), default=4, show_default=True, help="Shrunk copies per image with --scale-aug.")
@click.option("--ema", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, metavar="DECAY", help="Validate and save an exponential moving average of the weights (e.g. 0.999).")
@click.option("--val-holdout", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Hold back N training images (spread evenly over the folders) for validation.")
@click.option("--init-from", metavar="M", help="Start from this model: conv1/conv2 from another scale (e.g. a ×3 run for ×2/×4), all layers when scale and channels match (fine-tuning).")
@click.option("--name", help="Model name in config.json (default: the run folder's name).")
@click.option("--features", default="64,32", show_default=True, callback=parse_features, metavar="F1,F2[,…]", help="Hidden layers' widths: the paper's 64,32, or more 3×3 layers (64,32,32); new ones start as identities with --init-from.")
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

    from subpixel_cli.trainset import TrainConfig
    from subpixel_cli.train import train as run_training

    dataset, steps = options["dataset"], options["steps"]
    options["scale"] = options["scale"] or (4 if dataset.lower() == "celeba" else 3)
    options["out"] = str(options["out"] or Path("runs") / f"{Path(dataset).name.lower()}-x{options['scale']}")
    options["channels"] = int(options["channels"]) if options["channels"] else None
    config = TrainConfig(**options, command=command_line(click.get_current_context()))
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
    if result.stopped == "time limit" and int(os.environ.get("RANK", "0")) == 0:  # said even with --quiet
        print_note(f"stopped at --time-limit {config.time_limit:g} s after {result.state.step} of "
                   f"{result.info.training['total_steps']} steps; the model folder holds it, --resume continues")


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
@click.option("--degrade", metavar="SPEC", default=None,
              help="Damage each LR after the downscale by fixed values, e.g. jpeg:75, h264:30, noise:5 "
                   "(seeded by file name: the same for everyone).")
@click.option("--device", type=click.Choice(choices.DEVICES), default="cpu", show_default=True, help="Where the model runs.")
@click.option("--precision", type=click.Choice(choices.EVAL_PRECISIONS), default="fp32", show_default=True,
              help="What it runs in (fp32 on CUDA: IEEE, not TF32).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object on stdout.")
@handle_errors
def eval_command(datasets: tuple[str, ...], model_spec: str | None, bicubic: bool, scale: int | None,
                 data_dir: Path | None, save_images: Path | None, degrade: str | None, device: str, precision: str,
                 as_json: bool) -> None:
    """Benchmark a model (or --bicubic) on folders of HR images: PSNR and SSIM on Y.

    DATASET is a folder of HR images or a name found under --data-dir. The protocol is the
    literature's: HR cropped to a multiple of the scale, LR by MATLAB-style bicubic imresize,
    Y of BT.601 YCbCr, SCALE pixels shaved from each border. --degrade damages the LR after the
    downscale, as real inputs are damaged (JPEG, H.264, noise, blur).
    """
    from subpixel_cli.degradations import Degradation
    from subpixel_cli.errors import EXIT_FAILED, UsageError
    from subpixel_cli.evaluate import evaluate_model

    damage = Degradation.parse(degrade) if degrade is not None else None
    if damage is not None and not damage.fixed:
        raise UsageError(f"--degrade {degrade!r}: eval takes fixed values (e.g. jpeg:75,noise:5), not ranges "
                         "or probabilities, so that its figures can be reproduced")
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
        result = evaluate_model(loaded, scale, datasets, data_dir=data_dir, save_dir=save_images, progress=progress,
                                damage=damage, device=device, precision=precision)
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
@denoise_option
@memory_options
@click.option("--codec", default="auto", show_default=True,
              help="auto (H.264 yuv420p, or the container's own codec), h264, hevc, vp9, av1, mpeg4, ffv1, or an FFmpeg encoder.")
@click.option("--crf", type=click.IntRange(0, 63), help="Constant quality, lower is better (default 18 for H.264).")
@click.option("--preset", metavar="NAME",
              help="x264/x265 speed preset, ultrafast…veryslow (default by output size: veryfast up to 960×540, "
                   "superfast up to 1280×720, ultrafast above: the encoder shares the CPU with the model; larger files "
                   "than superfast).")
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
          batch_size: int, denoise: float | None, tile: int | None, max_memory: int | None, codec: str, crf: int | None,
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
    upscaler = _load_upscaler(model, scale, device, precision, tile, batch_size, max_memory, denoise)
    pick = None
    if model is None and denoise is None:  # the packaged model that fits the input (choice.py)
        from subpixel_cli.choice import pick_for_video_source

        pick = pick_for_video_source(source)
        if pick.real and upscaler.info.twin:
            upscaler = _load_upscaler(upscaler.info.twin, upscaler.scale, device, precision, tile, batch_size, max_memory)
    target = frames_dir or output or default_output(source, upscaler.scale)
    with sharding.joined() as group:
        show = not quiet and (group is None or group.main)  # under torchrun: rank 0's progress, for its own part
        if show and upscaler.notice:
            print_note(upscaler.notice)
        print_kernels_note(upscaler, show)
        header = video_header(upscaler, source, target, pick.reason if pick is not None else None)
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
                                       force=force, progress=on_progress, resume=resume, group=group)
            except KeyboardInterrupt:
                raise KeyboardInterrupt(stopped_note(target)) from None
        if result is None:
            sys.exit(0)  # not rank 0: rank 0 reports the run and carries its exit code
    if as_json:
        emit_json({**result.as_dict(), "model": upscaler.info.name, "model_reason": pick.reason if pick else None})
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
    from subpixel_cli.runtime import cpu_paths

    frame = parse_size(size)
    upscaler = _load_upscaler(model, scale, device, precision, None, batch_size, None)
    width, height = frame or (1920 // upscaler.scale, 1080 // upscaler.scale)
    if upscaler.notice and not as_json:
        print_note(upscaler.notice)
    paths = cpu_paths(upscaler.calibration, upscaler.kernels) if upscaler.device.type == "cpu" else None
    missing = "; ".join(dict.fromkeys(why for why in paths["kernels"].values() if why != "built")) if paths else None
    if missing and not as_json:
        print_note(f"subpixel's C kernels are not all in use here ({missing}): the CPU paths run slower without "
                   "them, and --precision auto does not take int8")
    if not as_json:
        err_console.print(f"{upscaler.info.name}: ×{upscaler.scale} on {upscaler.device.type} "
                          f"({upscaler.precision.name}), {width}×{height} {layout.upper()} frames, batches of {batch_size}…")
    steps = profile_steps(upscaler, width, height, layout=layout) if profile else None
    result = measure_throughput(upscaler, width, height, seconds, peak=True, layout=layout)
    if as_json:
        emit_json({"model": upscaler.info.name, **result.as_dict(), "notice": upscaler.notice,
                   "kernels_missing": missing or None, "cpu": paths,
                   **({"steps_ms": {k: round(v, 3) for k, v in steps.items()}} if steps else {})})
        return
    show_throughput(result)
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
    import torch

    from subpixel_cli.data import DATA_ENV
    from subpixel_cli.quantize import quantize_model
    from subpixel_cli.runtime import tune_for

    if data is None:
        root = os.environ.get(DATA_ENV)
        if not root:
            raise click.UsageError(f"give --data DIR (training images to calibrate on), or set {DATA_ENV}")
        data = Path(root) / "train"
    tune_for(torch.device("cpu"))  # its checks run the fp32 and int8 paths on the CPU
    with progress_bar(err_console.is_terminal and not as_json, timing=False) as bar:
        task = bar.add_task("calibrating", total=images)
        result = quantize_model(model_spec, data, output, images, data_dir, force,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        emit_json(result.as_dict())
    else:
        print_quantized(result)
