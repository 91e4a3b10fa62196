"""How well ``where`` localises: peak hits, mask IoU, and "not found" for absent objects.

On localisation cases of a toy world (``toyscenes.localisation_cases``), each image is
read from disk and each phrase run through CLIPSeg exactly as ``searchengine where`` runs
it (:func:`searchengine.where.locate_images`). Per model:

- peak hit rate: phrases true of an object whose peak lies inside a true mask;
- mean IoU: of the map thresholded at the threshold (resized to the photo) with the
  union of the true masks, over phrases true of an object;
- not-found rate for absent objects: phrases true of no object reported not found;
- false not-found rate: phrases true of an object reported not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from searchengine.evaluation.toyscenes import ToyCase
from searchengine.where import DEFAULT_THRESHOLD, locate_images

__all__ = ["WhereBench", "WhereRow", "bench_where"]


@dataclass
class WhereRow:
    """One model's localisation quality (rates as fractions)."""

    model: str
    peak_hit: float
    mean_iou: float
    not_found_absent: float
    false_not_found: float
    present: int
    absent: int
    threshold: float


@dataclass
class WhereBench:
    """Localisation quality per CLIPSeg model."""

    dataset: str
    rows: list[WhereRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (rates as fractions)."""
        return {"task": "where", "dataset": self.dataset, "rows": [r.__dict__ for r in self.rows]}

    def to_table(self) -> str:
        """A plain-text table, percent."""
        lines = [
            f"localisation on {self.dataset}",
            f"{'model':<30} {'peak in object %':>17} {'mean IoU %':>11} "
            f"{'not found (absent) %':>21} {'false not found %':>18}",
        ]
        for r in self.rows:
            lines.append(
                f"{r.model:<30} {100 * r.peak_hit:>17.1f} {100 * r.mean_iou:>11.1f} "
                f"{100 * r.not_found_absent:>21.1f} {100 * r.false_not_found:>18.1f}"
            )
        if self.rows:
            r = self.rows[0]
            lines.append(
                f"{r.present} phrases true of an object, {r.absent} true of none; "
                f"threshold {r.threshold}"
            )
        return "\n".join(lines)


def bench_where(
    cases: Sequence[ToyCase],
    models: Sequence[str],
    *,
    dataset: str = "",
    threshold: float = DEFAULT_THRESHOLD,
    device: str = "auto",
    batch: int = 16,
) -> WhereBench:
    """Localisation quality of each CLIPSeg model on ``cases``."""
    from searchengine.models.clipseg import ClipSeg

    report = WhereBench(dataset)
    for spec in models:
        seg = ClipSeg(spec, device=device, batch_size=batch)
        hits = ious = quiet = missed = present = absent = 0.0
        try:
            for start in range(0, len(cases), batch):
                chunk = cases[start : start + batch]
                images = [c.load_image() for c in chunk]
                locations = locate_images(
                    seg, images, [c.text for c in chunk], [im.size for im in images], threshold
                )
                for case, loc in zip(chunk, locations, strict=True):
                    if case.present:
                        present += 1
                        x, y = loc.peak
                        hits += bool(case.mask[y, x])
                        predicted = loc.mask()
                        union = np.logical_or(predicted, case.mask).sum()
                        ious += np.logical_and(predicted, case.mask).sum() / max(union, 1)
                        missed += not loc.found
                    else:
                        absent += 1
                        quiet += not loc.found
        finally:
            seg.close()
        report.rows.append(
            WhereRow(
                spec,
                hits / max(present, 1),
                ious / max(present, 1),
                quiet / max(absent, 1),
                missed / max(present, 1),
                int(present),
                int(absent),
                threshold,
            )
        )
    return report
