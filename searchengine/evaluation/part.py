""" "More like this part": does a region query find photos of *that* object?

On a held-out toy world indexed into a collection (the product's own index and ranking
path), every two-object photo whose objects differ in colour or shape asks, once per
region method, for the photos most like one of its objects (``VectorTerm`` of the
region's embedding, the photo itself left out, as ``similar --region`` does). A photo
is *relevant* when it holds an object of the queried object's colour and shape; a
*distractor* holds the other object's colour and shape and no relevant one.

- precision@5: relevant photos among the first five results;
- above-distractor rate: over every (relevant, distractor) pair of the whole ranking,
  how often the relevant photo ranks higher (0.5 = the region is ignored).

The whole-photo query (``none``) cannot tell which object was meant; a region method
that keeps the object and drops the other should beat it on both.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from searchengine.evaluation.toyscenes import move_boxes, parse_boxes
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

if TYPE_CHECKING:
    from searchengine.collection import Collection
    from searchengine.region import RegionEmbedder

__all__ = ["PartBench", "PartRow", "bench_part"]


@dataclass
class PartRow:
    """One (model, method) line (rates as fractions)."""

    model: str
    method: str
    precision_at_5: float
    above_distractor: float
    queries: int


@dataclass
class PartBench:
    """Region queries against a collection, per model and region method."""

    dataset: str
    rows: list[PartRow] = field(default_factory=list)
    boxes: str = "exact"  # how the query regions were placed (``bench --boxes``)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (rates as fractions)."""
        rows = [r.__dict__ for r in self.rows]
        return {"task": "part", "dataset": self.dataset, "boxes": self.boxes, "rows": rows}

    def to_table(self) -> str:
        """A plain-text table, percent."""
        count = self.rows[0].queries if self.rows else 0
        placed = "" if self.boxes == "exact" else f", boxes {self.boxes}"
        lines = [
            f"more like this part on {self.dataset}: {count} region queries{placed}",
            f"{'model':<24} {'method':<8} {'P@5 %':>7} {'above distractor %':>19}",
        ]
        for r in self.rows:
            p5, above = 100 * r.precision_at_5, 100 * r.above_distractor
            lines.append(f"{r.model:<24} {r.method:<8} {p5:>7.1f} {above:>19.1f}")
        return "\n".join(lines)


def _kind(obj: toyworld.ToyObject) -> tuple[str, str]:
    return (obj.shape, obj.color)


def bench_part(
    folder: Path,
    items: Sequence[toyworld.ToyItem],
    models: Sequence[str],
    methods: Sequence[str],
    *,
    dataset: str = "",
    device: str = "auto",
    max_queries: int = 200,
    boxes: str = "exact",
) -> PartBench:
    """Precision@5 and the above-distractor rate of region queries, per model and method.

    Each model indexes the world into a temporary collection (its own ingest path); the
    queried object alternates between the first and second object of the query photos.
    ``boxes``: the queried object's true box (``exact``) or one that misses it, as
    :func:`~searchengine.evaluation.toyscenes.parse_boxes` reads it.
    """
    from searchengine.collection import Collection
    from searchengine.config import Config
    from searchengine.region import RegionEmbedder

    queries = [it for it in items if len({_kind(o) for o in it.scene.objects}) == 2]
    queries = queries[:max_queries]
    placing = parse_boxes(boxes)
    report = PartBench(dataset, boxes=boxes.strip())
    for spec in models:
        with tempfile.TemporaryDirectory(prefix="searchengine-part-") as home:
            config = Config.from_env(home=Path(home), model=spec, device=device)
            with Collection.open("part", config, create=True, model=spec) as coll:
                coll.index([folder])
                embedder = RegionEmbedder(coll.encoder)
                try:
                    for method in methods:
                        row = _one_method(
                            coll, embedder, folder, items, queries, spec, method, placing
                        )
                        report.rows.append(row)
                finally:
                    embedder.close()
    return report


def _one_method(
    coll: Collection,
    embedder: RegionEmbedder,
    folder: Path,
    items: Sequence[toyworld.ToyItem],
    queries: Sequence[toyworld.ToyItem],
    spec: str,
    method: str,
    placing: tuple[str, float],
) -> PartRow:
    from searchengine.ingest.decode import decode_file
    from searchengine.ranking import Query, VectorTerm

    kinds = {
        os.path.abspath(folder / it.path): {_kind(o) for o in it.scene.objects} for it in items
    }
    precision, pairs = [], []
    for n, item in enumerate(queries):
        path = os.path.abspath(folder / item.path)
        photo = decode_file(path).image
        _, regions = toymasks.scene_regions(item.scene, photo.size)
        target = n % 2
        box = move_boxes([regions[target].box], *placing, photo.size, n)
        vector = embedder.vectors(photo, box, method)[0]
        record = coll.catalog.by_path(path)
        exclude = frozenset({record.id}) if record is not None else frozenset()
        query = Query((VectorTerm(vector),), k=len(kinds), exclude=exclude, clip_score=False)
        ranked = [kinds.get(r.path, set()) for r in coll.rank(query).results]
        wanted = _kind(item.scene.objects[target])
        other = _kind(item.scene.objects[1 - target])
        precision.append(float(np.mean([wanted in k for k in ranked[:5]])))
        above = _above(ranked, wanted, other)
        if above is not None:
            pairs.append(above)
    return PartRow(
        spec,
        method,
        float(np.mean(precision)) if precision else 0.0,
        float(np.mean(pairs)) if pairs else 0.5,
        len(queries),
    )


def _above(
    ranked: list[set[tuple[str, str]]], wanted: tuple[str, str], other: tuple[str, str]
) -> float | None:
    """Fraction of (relevant, distractor) pairs in which the relevant photo ranks first."""
    relevant = [i for i, k in enumerate(ranked) if wanted in k]
    distractors = [i for i, k in enumerate(ranked) if other in k and wanted not in k]
    if not relevant or not distractors:
        return None
    return float((np.asarray(relevant)[:, None] < np.asarray(distractors)[None, :]).mean())
