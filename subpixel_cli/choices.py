"""The names users choose from: devices, precisions, output formats, training options.

Plain data without heavy imports, so that the command line can offer them (and answer
``--help``) without loading torch; the modules that act on a choice import its names from here.
"""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # inference (subpixel_cli.runtime)
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")  # training's autocast (subpixel_cli.train)
EVAL_PRECISIONS = ("fp32", "fp16", "bf16")  # the network as a module (subpixel_cli.evaluate)
OUTPUT_FORMATS = ("png", "jpg", "webp", "tiff", "bmp")  # subpixel_cli.images (jpeg, tif are aliases)
LOSSES = ("l1", "mse")
SCHEDULES = ("cosine", "step", "constant")
DEGRADATIONS = ("bicubic", "gaussian")
