#!/usr/bin/env python
"""Is it the network's size that holds the real-world models back? (issue 21)

Issue 21 asks for gains on JPEG input that three-layer fine-tunes did not reach, and allows a
deeper network if the three layers are what stops them. This writes start points for probes that
answer that, each computing what a packaged model computes (so a probe is a fine-tune, as the
shipped ``-real`` models are):

- deeper: ``subpixel train --features 64,32,32 --init-from espcn-x4`` needs nothing from here
  (the new layers start as near-identities);
- wider: ``widen`` writes a model folder with ``--features 128,64`` whose extra channels start
  small and random where they are read from and zero where they are read into (Net2Net's
  function-preserving widening, Chen et al. 2016), so its output is the donor's.

    python benchmarks/capacity_probe.py widen espcn-x4 128,64 /tmp/wide-x4
    subpixel train ... --features 128,64 --init-from /tmp/wide-x4 --degrade SPEC   # as train_real.sh

The probes' figures are in benchmarks/README.md ("Real-world inputs: depth, width and recipe").
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch


def widen(donor_spec: str, features: tuple[int, ...], out: Path, seed: int = 0) -> None:
    from subpixel_cli.hub import save_model
    from subpixel_cli.model import ESPCN
    from subpixel_cli.registry import load_model

    donor = load_model(donor_spec)
    cfg = donor.model.config
    if len(features) != len(cfg.features) or any(f < g for f, g in zip(features, cfg.features)):
        raise SystemExit(f"widen: {features} must have {len(cfg.features)} widths, each ≥ {cfg.features}")
    torch.manual_seed(seed)
    wide = ESPCN(replace(cfg, features=features))
    with torch.no_grad():
        for mine, its in zip(wide.convs, donor.model.convs):
            o, i = its.weight.shape[:2]
            mine.weight.mul_(0.1)  # the new channels: small random filters on what they read
            mine.weight[:o, :i] = its.weight
            mine.weight[:o, i:] = 0  # the donor's channels read nothing from the new ones
            mine.bias[:o] = its.bias
    check = torch.rand(1, cfg.channels, 24, 24)
    with torch.no_grad():
        assert torch.allclose(wide(check), donor.model(check), atol=1e-5), "widening changed the output"
    info = replace(donor.info, name=f"{donor.info.name}-wide", config=wide.config, metrics={}, twin="",
                   description=f"{donor.info.name} widened to {list(features)} (benchmarks/capacity_probe.py)")
    save_model(out, wide, info)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("widen", help="a wider model folder that computes what DONOR computes")
    w.add_argument("donor")
    w.add_argument("features", help="the wider widths, e.g. 128,64")
    w.add_argument("out", type=Path)
    args = parser.parse_args()
    widen(args.donor, tuple(int(f) for f in args.features.split(",")), args.out)


if __name__ == "__main__":
    main()
