"""Training ESPCN: the loop, validation, checkpoints, resume and DistributedDataParallel.

:func:`train` takes a :class:`TrainConfig` and writes a *run folder* that is also a model folder
(``config.json`` + ``model.safetensors`` + ``README.md``, loadable with ``--model RUN_DIR`` and
uploadable to the hub as it is), plus

- ``checkpoint.safetensors``: model and Adam state tensors, with the trainer state (step, config,
  history, AMP scaler) as JSON in the file's metadata: one file, replaced atomically, never
  pickled;
- ``trainer_state.json``: a readable copy of that state;
- ``samples/step_NNNNNNN.png``: bicubic | SR | HR sheets of validation images.

Resuming needs no RNG state: the model's initialisation comes from the seed, the data from
``(seed, epoch, index)`` (see :mod:`subpixel_cli.data`) and the learning rate from the step, so a
run stopped at any checkpoint and resumed ends with the same weights as one that never stopped.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) every process trains on its share of each batch
order (gloo on CPU, nccl on CUDA); ``--batch-size`` is per process and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from subpixel_cli import data as datasets
from subpixel_cli.errors import DataError, UsageError
from subpixel_cli.files import atomic_write, make_folder
from subpixel_cli.hub import ModelInfo, model_card, save_model
from subpixel_cli.checkpoints import CHECKPOINT_NAME, load_checkpoint, restore, save_checkpoint
from subpixel_cli.color import matrices
from subpixel_cli.evaluate import validate
from subpixel_cli.model import ESPCN, ESPCNConfig
from subpixel_cli.runtime import exact_fp32, fast_bf16, local_rank, local_world_size, resolve_device
from subpixel_cli.trainset import RunData, TrainConfig, build_data, sample_sheet

SAMPLES_DIR = "samples"
VAL_MIN_STEPS = 100  # the fewest steps between validations by default (validation_interval)
LOSSES = {"l1": nn.L1Loss, "mse": nn.MSELoss}  # by the names in choices.LOSSES
CELEBA_LICENSE = "CelebA: non-commercial research and educational use only"
CELEBA_RUN_NOTE = (
    "Trained on CelebA, whose agreement allows non-commercial research and educational use only. "
    f"`{SAMPLES_DIR}/` holds CelebA faces: do not publish them (upload only config.json, "
    "model.safetensors and README.md)."
)


@dataclass
class TrainEvent:
    """What :func:`train` reports to its ``on_event`` callback (rank 0 only)."""

    kind: str  # "load" (data being read), "start", "step", "validate", "checkpoint", "done"
    step: int
    total_steps: int
    epoch: int
    loss: float | None = None  # mean training loss since the last "step" event
    lr: float | None = None
    val_psnr: float | None = None
    elapsed: float = 0.0  # seconds of training, over all resumed parts
    message: str = ""


@dataclass
class TrainState:
    """The trainer's JSON state: restored by ``--resume``."""

    step: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # per validation: step, epoch, loss, val
    best_val_psnr: float | None = None
    scaler: dict[str, Any] | None = None
    commands: list[str] = field(default_factory=list)  # every invocation that trained this run


@dataclass
class TrainResult:
    """What a finished (or stopped) run left behind."""

    out: Path
    state: TrainState
    info: ModelInfo
    stopped: str | None = None  # why it ended before its last step: "time limit" or "asked"


EventCallback = Callable[[TrainEvent], None]


# --- the loop ---------------------------------------------------------------------------------


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate for ``step`` (0-based) of ``total``: cosine from ``lr`` to ``min_lr``,
    ×0.1 at 50 % and 75 % (``step``), or constant."""
    t = min(step / max(total, 1), 1.0)
    if config.schedule == "cosine":
        return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * t))
    if config.schedule == "step":
        return config.lr * (0.1 ** ((t >= 0.5) + (t >= 0.75)))
    return config.lr


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def process_group_backend(device_type: str, local_processes: int, gpus: int) -> str:
    """The torch.distributed backend for training on ``device_type`` with ``local_processes``
    processes on this machine: gloo on the CPU, nccl on CUDA with a GPU for each process. NCCL
    cannot put two ranks on one GPU ("Duplicate GPU detected"), so more processes than GPUs is a
    :class:`UsageError`."""
    if device_type != "cuda":
        return "gloo"
    if local_processes > gpus:
        raise UsageError(f"torchrun started {local_processes} training processes on this machine, which has "
                         f"{gpus} GPU(s): give each its own GPU (--nproc_per_node {gpus}) or train on --device cpu")
    return "nccl"


def init_distributed(device: torch.device) -> _Dist:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1, each process on the GPU of its
    ``LOCAL_RANK`` (:func:`process_group_backend`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    backend = process_group_backend(device.type, local_world_size(), gpus)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the group: NCCL binds each rank to the current device
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank())


def build_model(config: TrainConfig) -> ESPCN:
    """A seeded ESPCN (the paper's, or deeper with ``config.features``), optionally starting from
    another model's layers (:func:`transplant`)."""
    torch.manual_seed(config.seed)
    kernel_sizes = (5, *[3] * len(config.features))
    model = ESPCN(ESPCNConfig(config.scale, config.channels, config.features, kernel_sizes))
    if config.init_from:
        from subpixel_cli.registry import load_model

        donor = load_model(config.init_from).model
        if donor.config.channels == 1 and config.channels == 3:
            donor = y_model_as_rgb(donor)
        transplant(donor, model, f"--init-from {config.init_from}")
    return model


# A new hidden layer starts as tanh(g·x) of the one before, with the next layer's weights ÷ g: for
# small g that is nearly x itself (g = ⅛: within 0.5 % over tanh's range), so a deeper model starts
# where its donor is. relu(x) = x for the relu layer before it.
_IDENTITY_GAIN = {"tanh": 0.125, "relu": 1.0}


def transplant(donor: ESPCN, model: ESPCN, source: str) -> None:
    """Start ``model`` from ``donor``'s layers: conv1 and conv2 always (FSRCNN-style transfer from
    another scale); the donor's other hidden layers where ``model`` has them too, and its last
    layer where scale and channels match (fine-tuning). Hidden layers ``model`` has beyond the
    donor's start as near-identities (:data:`_IDENTITY_GAIN`), so a deeper model fine-tuned from a
    shallower one starts from what the shallower one computes."""
    own, theirs = model.convs, donor.convs
    if len(theirs) > len(own):
        raise UsageError(f"{source}: it has {len(theirs)} layers, this model {len(own)} (--features)")
    pairs = list(zip(own[:-1], theirs[:-1]))
    last_shared = pairs[-1][0]
    head_too = own[-1].weight.shape == theirs[-1].weight.shape
    if head_too:
        pairs.append((own[-1], theirs[-1]))
    with torch.no_grad():
        for k, (mine, its) in enumerate(pairs, start=1):
            if mine.weight.shape != its.weight.shape:
                name = "the last layer" if mine is own[-1] else f"conv{k}"
                raise UsageError(f"{source}: {name} has shape {tuple(its.weight.shape)}, this model needs "
                                 f"{tuple(mine.weight.shape)}")
            mine.weight.copy_(its.weight)
            mine.bias.copy_(its.bias)
        gain = _IDENTITY_GAIN[model.config.activation]
        new = own[len(theirs) - 1 : -1]
        for conv in new:
            if conv.in_channels != conv.out_channels or last_shared.out_channels != conv.in_channels:
                raise UsageError(f"{source}: a new layer starts as an identity, so it must keep the width "
                                 f"{last_shared.out_channels}; got {conv.in_channels}→{conv.out_channels}")
            k = conv.kernel_size[0] // 2
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :, k, k] = gain * torch.eye(conv.in_channels)
        if new and head_too:  # the donor's last layer reads the new layers' gain·x
            own[-1].weight.div_(gain ** len(new))


def y_model_as_rgb(model: ESPCN) -> ESPCN:
    """An RGB model that computes what a Y model computes: BT.601 Y of its RGB input into the first
    layer, and its output Y' as the grey (Y' − 16/255)·255/219 in every colour, so that the Y of
    the output is the Y model's (a start for RGB training from a Y model; the colour is learnt)."""
    cfg = model.config
    rgb = ESPCN(ESPCNConfig(cfg.scale, 3, cfg.features, cfg.kernel_sizes, cfg.activation))
    coef = torch.from_numpy(matrices()[0][0]).float()  # Y per unit of R, G, B
    offset, gain = 16 / 255, 255 / 219
    w1, b1 = model.conv1.weight.detach(), model.conv1.bias.detach()
    w3, b3 = model.head.weight.detach(), model.head.bias.detach()
    with torch.no_grad():
        rgb.conv1.weight.copy_(w1 * coef.view(1, 3, 1, 1))
        rgb.conv1.bias.copy_(b1 + offset * w1.sum(dim=(1, 2, 3)))
        for mine, its in zip(rgb.convs[1:-1], model.convs[1:-1]):
            mine.load_state_dict(its.state_dict())
        # The last layer's channel (i·r + j)·3 + c is colour c of phase (i, j) (model.phase_shift's order).
        rgb.head.weight.copy_((gain * w3).repeat_interleave(3, dim=0))
        rgb.head.bias.copy_((gain * (b3 - offset)).repeat_interleave(3))
    return rgb


def _loader(dataset: Dataset, sampler: datasets.EpochSampler, config: TrainConfig, device: torch.device) -> DataLoader:
    collate = datasets.collate_batch if hasattr(dataset, "__getitems__") else None
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                      drop_last=True, pin_memory=device.type == "cuda", persistent_workers=config.workers > 0,
                      collate_fn=collate)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run's forward pass (weights, Adam and the loss stay fp32): fp16 with
    loss scaling on CUDA, bf16 on CPUs with bf16 arithmetic of their own (AVX-512 BF16, AMX) where
    it trains about 3× faster, else none (fp32)."""
    if device.type == "cuda":
        return None if config.precision == "fp32" else (torch.bfloat16 if config.precision == "bf16" else torch.float16)
    if device.type == "cpu" and (config.precision == "bf16" or (config.precision == "auto" and fast_bf16())):
        return torch.bfloat16
    return None


def train(config: TrainConfig, on_event: EventCallback | None = None,
          stop: Callable[[int], bool] | None = None) -> TrainResult:
    """Train (or with ``config.resume`` continue) a run; see the module docstring.

    ``on_event`` gets progress on rank 0. ``stop(step)`` returning true ends the run after that
    step with a checkpoint, as an interrupted run would be (for tests and time limits).
    """
    deadline = None if config.time_limit is None else time.monotonic() + config.time_limit
    device = resolve_device(config.device)
    ddp = init_distributed(device)
    out = Path(config.out).expanduser()
    if not config.resume and (out / CHECKPOINT_NAME).exists():
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    made = [p for p in (out, *out.parents) if not p.exists()] if ddp.main else []  # deepest first
    if ddp.main:
        make_folder(out)  # now: a folder that cannot be made fails before the data is read
    try:
        return _train(config, device, ddp, out, on_event, stop, deadline)
    except BaseException:
        with contextlib.suppress(OSError):  # failed before its first checkpoint: no empty run folder left
            for folder in made:
                folder.rmdir()  # only while empty
        raise


def _train(config: TrainConfig, device: torch.device, ddp: _Dist, out: Path, on_event: EventCallback | None,
           stop: Callable[[int], bool] | None, deadline: float | None) -> TrainResult:
    tell = on_event if on_event is not None and ddp.main else (lambda event: None)
    run_data = build_data(config, lambda text: tell(TrainEvent("load", 0, 0, 0, message=text)))
    model = build_model(config).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # ~25 % faster convolutions on CPU
    # On CUDA the fused Adam takes the AMP scaler's inf check and scale on the device: no read
    # back to the CPU every step (the unfused step reads found_inf, and a step counter on the GPU).
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=device.type == "cuda")
    ema = copy.deepcopy(model).requires_grad_(False) if config.ema else None
    state = TrainState(**resume(out, model, optimizer, ema)) if config.resume else TrainState()
    if config.command:
        state.commands.append(config.command)
    loop = _Loop(config, run_data, model, optimizer, state, device, ddp, out, on_event or (lambda e: None), ema,
                 deadline)
    try:
        return loop.run(stop)
    finally:
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def resume(out: Path, model: ESPCN, optimizer: torch.optim.Optimizer, ema: ESPCN | None = None) -> dict[str, Any]:
    """Load ``out``'s checkpoint into a model, optimiser and average already on their device; the
    trainer's state. The tensors go in as read (on the CPU): the modules copy them to the device,
    and the optimiser puts each where its own kind wants it, so Adam's step counters stay on the
    CPU (on CUDA they would be read back every step) except for the fused Adam, whose kernel
    reads them on the device."""
    record, tensors = load_checkpoint(out)
    return restore(record, tensors, model, optimizer, ema)


def validation_interval(steps_per_epoch: int) -> int:
    """Steps between validations when ``--val-every`` is not given: each epoch, or every few
    epochs where one is shorter than :data:`VAL_MIN_STEPS` (large batches on a GPU), so that
    validating, the sample sheet and the checkpoint do not take more time than training."""
    return steps_per_epoch * math.ceil(VAL_MIN_STEPS / steps_per_epoch)


class _Loop:
    """One run's moving parts; :meth:`run` is the loop itself."""

    def __init__(self, config: TrainConfig, run_data: RunData, model: ESPCN, optimizer: torch.optim.Optimizer,
                 state: TrainState, device: torch.device, ddp: _Dist, out: Path, emit: EventCallback,
                 ema: ESPCN | None = None, deadline: float | None = None) -> None:
        self.config, self.data, self.model, self.optimizer = config, run_data, model, optimizer
        self.ema, self.deadline, self.stopped = ema, deadline, None
        self.shipped: ESPCN = ema if ema is not None else model  # what is validated and saved
        self.state, self.device, self.ddp, self.out, self.emit = state, device, ddp, out, emit
        self.net: nn.Module = model
        if ddp.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.sampler = datasets.EpochSampler(len(run_data.train), config.seed, ddp.rank, ddp.world)
        self.steps_per_epoch = len(run_data.train) // ddp.world // config.batch_size
        if self.steps_per_epoch < 1:
            raise DataError(f"{len(run_data.train)} training items are fewer than one batch of {config.batch_size} "
                            f"per process; lower --batch-size")
        self.total = config.steps or (config.epochs or 100) * self.steps_per_epoch
        self.val_every = config.val_every or validation_interval(self.steps_per_epoch)
        self.autocast = autocast_dtype(config, device)
        self.amp = self.autocast == torch.float16  # fp16 needs loss scaling; bf16 has fp32's range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if self.amp and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.loss_fn = LOSSES[config.loss]()
        self.whole_images = not isinstance(run_data.train, datasets.PatchDataset)
        # Damage is done on the CPU (JPEG, x264), as patches are cut: never on the device.
        on_device = not config.degrade and (config.device_data if config.device_data is not None
                                            else device.type == "cuda")
        self.on_device = (datasets.DevicePatches(run_data.train, device)
                          if on_device and not self.whole_images else None)
        radius = model.config.receptive_radius
        if not self.whole_images and config.patch_size <= 2 * radius:
            raise UsageError(f"--patch-size must be more than {2 * radius} (twice the network's receptive radius): "
                             "the loss is taken where a patch's own pixels fill the receptive field")
        self.info = self._model_info()
        self._updating = False

    def _event(self, kind: str, **kw: Any) -> None:
        if self.ddp.main:
            self.emit(TrainEvent(kind, self.state.step, self.total, self.state.step // self.steps_per_epoch,
                                 elapsed=self.state.elapsed, **kw))

    def run(self, stop: Callable[[int], bool] | None) -> TrainResult:
        self._event("start", message=f"{len(self.data.train)} items, {self.steps_per_epoch} steps/epoch on "
                                     f"{self.device.type} × {self.ddp.world}")
        self.net.train()
        try:
            with exact_fp32(self.device, self.autocast is None):  # --precision fp32 on CUDA: not TF32
                return self._run(stop)
        except KeyboardInterrupt:
            # Keep what was trained, unless the interrupt split an update from its step count
            # (with several processes, the last periodic checkpoint is what a restart resumes).
            if self.ddp.world == 1 and not self._updating:
                self._checkpoint()
            raise

    def _batches(self, loader: DataLoader | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The rest of this epoch's batches: from the DataLoader, or cut on the device."""
        if self.on_device is None:
            yield from loader
            return
        keys, size = list(self.sampler), self.config.batch_size
        for start in range(0, len(keys) - size + 1, size):
            yield self.on_device.batch(keys[start : start + size])

    def _run(self, stop: Callable[[int], bool] | None) -> TrainResult:
        loader = None if self.on_device else _loader(self.data.train, self.sampler, self.config, self.device)
        losses: list[torch.Tensor] = []  # on the device: read every 10 steps, not after each (a GPU sync)
        started = time.perf_counter() - self.state.elapsed
        while self.state.step < self.total:
            epoch, offset = divmod(self.state.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, skip=offset * self.config.batch_size)
            for lr_batch, hr_batch in self._batches(loader):
                losses.append(self._step(lr_batch, hr_batch))
                self.state.elapsed = time.perf_counter() - started
                step = self.state.step
                self.stopped = self._stop_reason(step, stop)
                validating = step % self.val_every == 0 or step >= self.total or self.stopped is not None
                if validating:
                    self._validate(float(torch.stack(losses).float().mean()) if losses else None)
                    losses = []
                elif step % 10 == 0:
                    self._event("step", loss=float(torch.stack(losses[-10:]).float().mean()),
                                lr=self.optimizer.param_groups[0]["lr"])
                if validating or step % self.config.checkpoint_every == 0:
                    self._checkpoint()
                if step >= self.total or self.stopped is not None:
                    return self._finish()
        return self._finish()

    def _stop_reason(self, step: int, stop: Callable[[int], bool] | None) -> str | None:
        """Why the run ends after ``step`` short of its last: its time limit, or ``stop``."""
        if step >= self.total:
            return None
        if self._out_of_time(step):
            return "time limit"
        return "asked" if stop is not None and stop(step) else None

    def _out_of_time(self, step: int) -> bool:
        """Whether ``--time-limit`` has passed; under torchrun rank 0's clock decides, every 10
        steps, so that all processes stop after the same step."""
        if self.deadline is None:
            return False
        late = time.monotonic() >= self.deadline
        if self.ddp.world == 1:
            return late
        if step % 10:
            return False
        flag = torch.tensor([float(late)], device=self.device)  # NCCL sends tensors on the GPU
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _step(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> torch.Tensor:
        lr_batch = lr_batch.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
        hr_batch = hr_batch.to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.state.step, self.total)
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            loss = self.loss_fn(*self._outputs(lr_batch, hr_batch))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self._updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            # Early steps average over fewer steps, so the average is not dominated by the start.
            decay = min(self.config.ema, (1 + self.state.step) / (10 + self.state.step))
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - decay)
        self.state.step += 1
        self._updating = False
        return loss.detach()

    def _outputs(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and target where the loss is taken. Inference reflect-pads images, so no output
        it keeps sees the convolutions' zero padding: whole faces are reflect-padded here too, and
        patches (cut from larger images) are scored only where their own pixels fill the
        receptive field."""
        m = self.model.config.receptive_radius * self.model.config.scale
        if self.whole_images:
            p = self.model.config.receptive_radius
            return self.net(F.pad(lr_batch, (p, p, p, p), mode="reflect"))[..., m:-m, m:-m].float(), hr_batch
        return self.net(lr_batch)[..., m:-m, m:-m].float(), hr_batch[..., m:-m, m:-m]

    def _validate(self, train_loss: float | None) -> None:
        entry: dict[str, Any] = {"step": self.state.step, "epoch": self.state.step / self.steps_per_epoch,
                                 "loss": train_loss, "elapsed_s": round(self.state.elapsed, 1)}
        val_psnr = None
        if self.ddp.main and self.data.val:
            with exact_fp32(self.device):  # the protocol's scores, as `subpixel eval` computes them
                val_psnr, bicubic = validate(self.shipped, self.data.val)
                self._write_samples()
            entry.update(val_psnr=round(val_psnr, 4), bicubic_psnr=round(bicubic, 4))
            self.state.best_val_psnr = max(val_psnr, self.state.best_val_psnr or -math.inf)
        if self.ddp.main:
            self.state.history.append(entry)
        self._event("validate", loss=train_loss, val_psnr=val_psnr, lr=self.optimizer.param_groups[0]["lr"])

    def _write_samples(self) -> None:
        folder = make_folder(self.out / SAMPLES_DIR)
        sheet = sample_sheet(self.shipped, self.data.val[:3])
        with atomic_write(folder / f"step_{self.state.step:07d}.png") as f:
            sheet.save(f, format="PNG")

    def _checkpoint(self) -> None:
        if self.ddp.main:
            self.state.scaler = self.scaler.state_dict() if self.amp else None
            trainer = {"config": self.config.to_json(), "state": asdict(self.state)}
            save_checkpoint(self.out, self.model, self.optimizer, trainer, self.ema)
            self.info = self._model_info()
            card = model_card(self.info, CELEBA_RUN_NOTE if self.config.is_celeba else "",
                              spec=datasets.portable_path(self.config.out, in_command=True))
            save_model(self.out, self.shipped, self.info, card)
            self._event("checkpoint", message=str(self.out / CHECKPOINT_NAME))
        if self.ddp.world > 1:
            dist.barrier()

    def _finish(self) -> TrainResult:
        self._event("done", val_psnr=self.state.best_val_psnr, message=self.stopped or "")
        return TrainResult(self.out, self.state, self.info, self.stopped)

    def _model_info(self) -> ModelInfo:
        c = self.config
        last = next((h for h in reversed(self.state.history) if "val_psnr" in h), None)
        metrics = {"val": {"dataset": self.data.description.get("val"), "scale": c.scale, "psnr": last["val_psnr"],
                           "bicubic_psnr": last["bicubic_psnr"], "step": last["step"],
                           "images": len(self.data.val)}} if last else {}
        commands = self.state.commands or [c.command]
        training = {"command": " && ".join(datasets.portable_command(command) for command in commands),
                    **self.data.description, "steps": self.state.step,
                    "total_steps": self.total, "batch_size": c.batch_size, "processes": self.ddp.world,
                    "loss": c.loss, "optimizer": "Adam", "lr": c.lr, "schedule": c.schedule, "seed": c.seed,
                    "init_from": c.init_from and datasets.portable_path(c.init_from), "device": self.device.type,
                    "precision": str(self.autocast).removeprefix("torch.") if self.autocast else "fp32",
                    "ema": c.ema,
                    "wall_time_s": round(self.state.elapsed, 1)}
        space = "Y (BT.601)" if c.channels == 1 else "RGB"
        name = c.name or Path(c.out).name
        return ModelInfo(name=name, config=self.model.config, description=f"ESPCN ×{c.scale} {space}, trained with subpixel train",
                         training=training, metrics=metrics,
                         license=f"MIT (weights); trained on {CELEBA_LICENSE}" if c.is_celeba else "MIT")
