"""GS training variants tried against the `labctl train --preset bench` defaults.

Each variant changes one thing of the default run, whose settings come from
`labctl train`'s defaults (22 epochs, GS at 8 levels of the shipped layer response,
Adam lr 0.3 with cosine decay, τ 5 → 0.5, cross-entropy at scale 50 with label
smoothing 0.1, batch 16, each digit moved by a random sub-pixel amount of up to 1.5
pixels along each axis per step, logits averaged over the second half of the run):

* ``whole-pixel``: whole-pixel shifts (−1, 0 or +1 per axis) instead of sub-pixel;
* ``subpixel``: sub-pixel shifts of up to one pixel (instead of 1.5) made with an affine
  grid, which draws its random numbers differently from the trainer;
* ``affine``: random rotation (±10°), scale (±10 %) and sub-pixel shift (±1 px);
* ``span``: detector regions spread over 80 % of the plane instead of 60 % (the middle
  row's gaps grow from 4–6 to 10 neurons);
* ``default``: the defaults themselves, for a same-machine reference.

``--before`` starts from the earlier defaults instead (whole-pixel shifts, no label
smoothing, no averaging), against which the first variants were measured;
``--label-smoothing``, ``--average`` and ``--augment-shift`` override one default each
(``default --label-smoothing 0`` is the run without smoothing).

    .venv/bin/python experiments/gs_variants.py VARIANT [--before] [--label-smoothing E] [--average F]
        [--augment-shift PX] [--seed 0] [--out /tmp/gs_variants]

Prints the test accuracy per epoch and the final hard-level test accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch
import torch.nn.functional as F

import sims.train
from labctl.commands.train import DEFAULTS, LR_DEFAULTS, shipped_response
from sims.data import load_dataset
from sims.device import load_response, select_levels
from sims.donn import layout_regions, preset
from sims.quantizers.schedules import Schedule
from sims.train import TrainConfig, train

VARIANTS = ("default", "whole-pixel", "subpixel", "affine", "span")


def whole_pixel_shifts(images: torch.Tensor, max_shift: float, g: torch.Generator) -> torch.Tensor:
    """The trainer's earlier augmentation: each uint8 digit ``(B, h, w)`` moved by a
    random whole number of pixels, at most ``int(max_shift)`` per axis, 0 filled in."""
    b, h, w = images.shape
    m = int(max_shift)
    padded = F.pad(images, (m, m, m, m))
    offsets = torch.randint(0, 2 * m + 1, (b, 2), generator=g).tolist()
    return torch.stack([padded[i, r:r + h, c:c + w] for i, (r, c) in enumerate(offsets)])


def random_affine(rotate_deg: float, scale: float, shift_px: float):
    """An augmentation with ``shift_images``' signature: each uint8 digit ``(B, h, w)``
    rotated, scaled and moved by random amounts (bilinear, zero border), as floats in [0, 1]."""
    def augment(images: torch.Tensor, _max_shift: float, g: torch.Generator) -> torch.Tensor:
        b, h, w = images.shape
        angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(rotate_deg)
        zoom = 1 + (torch.rand(b, generator=g) * 2 - 1) * scale
        move = (torch.rand(b, 2, generator=g) * 2 - 1) * shift_px * 2 / h  # grid units: 2 per image side
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        return F.grid_sample(images[:, None].float() / 255.0, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)[:, 0]
    return augment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", choices=VARIANTS)
    ap.add_argument("--before", action="store_true",
                    help="start from the earlier defaults: whole-pixel shifts, no label smoothing, no averaging")
    for flag in ("label_smoothing", "average", "augment_shift"):
        ap.add_argument(f"--{flag.replace('_', '-')}", type=float, default=None,
                        help=f"override the default {flag} ({DEFAULTS[flag]})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/gs_variants")
    args = ap.parse_args()
    geometry = preset("bench")
    # Everything else from `labctl train`'s own defaults, so "default" is that command's run.
    d = dict(DEFAULTS)
    if args.before or args.variant == "whole-pixel":
        sims.train.shift_images = whole_pixel_shifts  # the trainer's augmentation, swapped
    if args.before:
        d["label_smoothing"] = d["average"] = 0.0
    for flag in ("label_smoothing", "average", "augment_shift"):
        if getattr(args, flag) is not None:
            d[flag] = getattr(args, flag)
    if args.variant == "span":
        geometry = dataclasses.replace(geometry, regions=layout_regions(geometry.size, 10, span=0.8))
    elif args.variant == "affine":
        sims.train.shift_images = random_affine(10.0, 0.1, 1.0)
    elif args.variant == "subpixel":
        sims.train.shift_images = random_affine(0.0, 0.0, 1.0)
    levels = select_levels(load_response(shipped_response()), d["levels"])
    config = TrainConfig(geometry=geometry, levels=(levels,) * geometry.layers, method=d["method"],
                         epochs=d["epochs"], lr=LR_DEFAULTS[d["method"]], lr_schedule=d["lr_schedule"],
                         batch_size=d["batch_size"], loss=d["loss"],
                         schedule=Schedule(d["schedule"], start=d["tau_start"], end=d["tau_end"], rate=d["tau_rate"]),
                         seed=args.seed, init_std=d["init_std"], softmax_scale=d["softmax_scale"],
                         augment_shift=d["augment_shift"], label_smoothing=d["label_smoothing"],
                         average=d["average"], threads=1)
    t0 = time.perf_counter()
    tag = f"{args.variant}{'-before' if args.before else ''}-ls{d['label_smoothing']:g}-avg{d['average']:g}" \
          f"-shift{d['augment_shift']:g}-s{args.seed}"
    result = train(config, load_dataset("mnist-5k"), f"{args.out}/{tag}",
                   on_epoch=lambda r: print(f"epoch {r['epoch']}: test accuracy {r['test_accuracy']:.3f}", flush=True))
    print(f"{tag}: test accuracy {result.test_accuracy:.3f} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
