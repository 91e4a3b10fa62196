"""``bench --task ground|where|part``: region questions about a toy world, one entry point.

The task picks the cases (:mod:`searchengine.evaluation.toyscenes`) and the measurement:
grounding accuracy per region method (:mod:`~searchengine.evaluation.grounding`), CLIPSeg
localisation (:mod:`~searchengine.evaluation.localisation`), or "more like this part"
(:mod:`~searchengine.evaluation.part`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from searchengine.evaluation.toyscenes import (
    grounding_cases,
    load_toy_items,
    localisation_cases,
    loosen_boxes,
    parse_boxes,
)

__all__ = ["REGION_TASKS", "run_region_task"]

REGION_TASKS = ("ground", "where", "part")


def run_region_task(
    task: str,
    source: str,
    models: Sequence[str],
    *,
    methods: Sequence[str] = ("falip", "crop", "circle", "blur", "none"),
    threshold: float = 0.5,
    device: str = "auto",
    data_dir: str | Path | None = None,
    boxes: str = "exact",
) -> Any:
    """``bench --task ground``, ``where`` or ``part`` on a toy world: the report object.

    ``boxes`` (ground and part): the true boxes (``exact``) or boxes that miss their
    object (``shifted:F``, ``inside:F``, ``proposals:F``; see
    :data:`~searchengine.evaluation.toyscenes.BOX_KINDS`): ground's candidates, part's
    query regions.

    Raises:
        DatasetError: the source is not a toy world.
        ConfigError: an unknown task, region method or box kind, or boxes other than
            exact for where.
    """
    from searchengine.errors import ConfigError
    from searchengine.evaluation.grounding import bench_grounding
    from searchengine.evaluation.localisation import bench_where
    from searchengine.region import parse_methods

    kind, amount = parse_boxes(boxes)
    if kind != "exact" and task == "where":
        raise ConfigError(f"--boxes {boxes} applies to --task ground and part only")
    folder, items = load_toy_items(source, data_dir)
    name = folder.name
    if task == "ground":
        chosen = parse_methods(",".join(methods))
        cases = loosen_boxes(grounding_cases(folder, items), kind, amount)
        report = bench_grounding(cases, models, chosen, dataset=name, device=device)
        report.boxes = boxes.strip()
        return report
    if task == "where":
        cases = localisation_cases(folder, items)
        return bench_where(cases, models, dataset=name, threshold=threshold, device=device)
    if task == "part":
        from searchengine.evaluation.part import bench_part

        chosen = parse_methods(",".join(methods))
        return bench_part(folder, items, models, chosen, dataset=name, device=device, boxes=boxes)
    raise ConfigError(f"unknown task {task!r}; use retrieval, ground, where or part")
