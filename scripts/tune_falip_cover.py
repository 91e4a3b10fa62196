"""How FALIP should weigh the patches a box covers only in part: a tuning run.

Usage::

    python scripts/tune_falip_cover.py toy:1000:5454 [-m MODEL ...] [--variant NAME ...] [--json]

On the toy test sets, the few descriptions FALIP alone gets wrong name small objects,
whose box covers a few patches in part. This script grounds every two-object
description of a toy world (``bench --task ground``) with the product's FALIP mask and
with variants of it that change only the bias of partly covered patches, beside blur:

- ``current``: ``log(1 + (e**s - 1) * c)``, ``c`` the covered fraction (the product's);
- ``linear``: ``s * c``, so a patch half covered counts ``e**(s/2)`` times less than a
  whole one (well-covered patches dominate);
- ``half``: patches covered less than half as much as the best-covered one get nothing;
- ``grow25``, ``grow50``, ``grow100``: the box grown by a quarter, half or one patch on
  every side (more context);
- ``small``: a box under two patches across grows to two, around its centre.

Run it on a tuning seed only (``searchengine.toy.masks.HELD_OUT_SEEDS`` says which seed
is for what); a variant that wins there is checked once on a seed never looked at.
Results and the decision are in ``docs/explain.md``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np

from searchengine.evaluation.grounding import bench_grounding
from searchengine.evaluation.toyscenes import grounding_cases, load_toy_items
from searchengine.models import falip

Bias = Callable[[falip.Box, tuple[int, int], tuple[int, int], float], np.ndarray]
CURRENT: Bias = falip.foveal_bias


def _linear(box: falip.Box, size: tuple[int, int], grid: tuple[int, int], s: float) -> np.ndarray:
    return (s * falip.patch_coverage(box, size, grid).reshape(-1)).astype(np.float32)


def _half(box: falip.Box, size: tuple[int, int], grid: tuple[int, int], s: float) -> np.ndarray:
    cover = falip.patch_coverage(box, size, grid).reshape(-1)
    kept = np.where(cover >= 0.5 * cover.max(), cover, 0.0)
    with np.errstate(divide="ignore"):
        return np.logaddexp(s + np.log(kept), np.log1p(-kept)).astype(np.float32)


def _grown(patches: float) -> Bias:
    def bias(box: falip.Box, size: tuple[int, int], grid: tuple[int, int], s: float) -> np.ndarray:
        dy, dx = patches * size[0] / grid[0], patches * size[1] / grid[1]
        x0, y0, x1, y1 = box
        return CURRENT((x0 - dx, y0 - dy, x1 + dx, y1 + dy), size, grid, s)

    return bias


def _small(box: falip.Box, size: tuple[int, int], grid: tuple[int, int], s: float) -> np.ndarray:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = max(x1 - x0, 2 * size[1] / grid[1]) / 2
    half_h = max(y1 - y0, 2 * size[0] / grid[0]) / 2
    return CURRENT((cx - half_w, cy - half_h, cx + half_w, cy + half_h), size, grid, s)


VARIANTS: dict[str, Bias] = {
    "current": CURRENT,
    "linear": _linear,
    "half": _half,
    "grow25": _grown(0.25),
    "grow50": _grown(0.5),
    "grow100": _grown(1.0),
    "small": _small,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a toy world, toy:N:SEED (a tuning seed)")
    parser.add_argument("-m", "--model", action="append", dest="models")
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), dest="variants")
    parser.add_argument("--cache-dir", default=None, help="where toy worlds are kept")
    parser.add_argument("--json", action="store_true", help="print every row with its misses")
    args = parser.parse_args()
    models = args.models or ["toy", "toy-large"]
    folder, items = load_toy_items(args.source, args.cache_dir)
    cases = grounding_cases(folder, items)
    rows = []
    try:
        for name in args.variants or list(VARIANTS):
            falip.foveal_bias = VARIANTS[name]  # what ``FalipEncoder.encode`` calls
            report = bench_grounding(cases, models, ["falip"], dataset=folder.name, device="cpu")
            rows += [(r.model, name, r) for r in report.rows]
    finally:
        falip.foveal_bias = CURRENT
    blur = bench_grounding(cases, models, ["blur"], dataset=folder.name, device="cpu")
    rows += [(r.model, "blur", r) for r in blur.rows]
    rows.sort(key=lambda row: models.index(row[0]))
    if args.json:
        print(json.dumps([{"variant": v, **r.__dict__} for _, v, r in rows], indent=2))
        return
    print(f"grounding on {folder.name}: {len(cases)} descriptions")
    for model, name, r in rows:
        print(f"{model:<12} {name:<8} {100 * r.accuracy:6.2f} %  misses {len(r.misses)}")


if __name__ == "__main__":
    main()
