"""``searchengine bench``: retrieval quality of several models on one dataset.

Embeddings are cached per (dataset, model) so a second run of the same table only
computes metrics (``embedding_cache.py``).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from searchengine.errors import DatasetError, ImageError
from searchengine.evaluation.datasets import RetrievalDataset, default_cache_dir
from searchengine.evaluation.embedding_cache import EmbeddingCache, model_identity
from searchengine.evaluation.metrics import (
    DEFAULT_KS,
    RetrievalMetrics,
    image_to_text_hits,
    retrieval_metrics,
    similarity,
    text_to_image_hits,
)
from searchengine.models import Encoder, load_encoder, parse_model_spec
from searchengine.progress import NoProgress, Progress

__all__ = [
    "BenchReport",
    "EmbeddingCache",
    "ModelResult",
    "default_cache_dir",
    "embed_dataset",
    "model_identity",
    "recall_curves",
    "run_bench",
]

CURVE_KS = (1, 2, 3, 5, 10, 20, 50, 100)
ProgressFactory = Callable[[str], Progress]


def embed_dataset(
    dataset: RetrievalDataset,
    encoder: Encoder,
    *,
    batch_size: int = 32,
    workers: int = 2,
    progress: ProgressFactory | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed every image and caption of ``dataset`` (captions as they are, no prompt).

    Images are decoded at full size, upright (EXIF orientation applied), and left to the
    model's own preprocessing, as CLIP_benchmark's loaders do; not at the reduced JPEG
    scale the indexer uses for speed, which shifts embeddings slightly.

    Returns:
        ``(images, texts)``: (images, dim) and (captions, dim) unit vectors.

    Raises:
        DatasetError: an image cannot be decoded; benchmarks never drop images silently.
    """
    from searchengine.ingest.decode import decode_file

    def decode(path: str) -> Any:
        try:
            return decode_file(path).image
        except ImageError as exc:
            raise DatasetError(f"{dataset.source or dataset.name}: {path}: {exc}") from exc

    bar = (progress or _no_progress)(f"images {encoder.spec}")
    image_parts = []
    bar.start(len(dataset.images))
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for start in range(0, len(dataset.images), batch_size):
                chunk = dataset.images[start : start + batch_size]
                image_parts.append(encoder.encode_images(list(pool.map(decode, chunk))))
                bar.advance(len(chunk))
    finally:
        bar.close()
    bar = (progress or _no_progress)(f"captions {encoder.spec}")
    text_parts = []
    bar.start(len(dataset.captions))
    try:
        for start in range(0, len(dataset.captions), batch_size):
            texts = list(dataset.captions[start : start + batch_size])
            text_parts.append(encoder.encode_texts(texts))
            bar.advance(len(texts))
    finally:
        bar.close()
    return np.concatenate(image_parts), np.concatenate(text_parts)


@dataclass(frozen=True)
class ModelResult:
    """One model's row of the table.

    Attributes:
        model: the canonical model spec.
        metrics: recall@K and MRR both ways.
        seconds: time spent on this model (embedding or cache read, plus metrics).
        cached: whether the embeddings came from the cache.
        curves: R@K for many K (``t2i``/``i2t`` to ``{K: recall}``), for plots.
    """

    model: str
    metrics: RetrievalMetrics
    seconds: float
    cached: bool
    curves: dict[str, dict[int, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchReport:
    """Every model's metrics on one dataset."""

    dataset: str
    source: str
    images: int
    captions: int
    ks: tuple[int, ...]
    results: list[ModelResult]

    def columns(self) -> list[str]:
        """Metric column names, in table order."""
        return (
            [f"t2i_R@{k}" for k in self.ks]
            + ["t2i_MRR"]
            + [f"i2t_R@{k}" for k in self.ks]
            + ["i2t_MRR"]
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; metrics as fractions in [0, 1]."""
        return {
            "dataset": self.dataset,
            "source": self.source,
            "images": self.images,
            "captions": self.captions,
            "ks": list(self.ks),
            "results": [
                {"model": r.model, "cached": r.cached, "seconds": round(r.seconds, 3)}
                | {c: r.metrics.to_dict()[c] for c in self.columns()}
                for r in self.results
            ],
        }

    def to_csv(self) -> str:
        """One row per model; metrics as fractions in [0, 1]."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["dataset", "model", *self.columns()])
        for r in self.results:
            values = r.metrics.to_dict()
            writer.writerow([self.dataset, r.model, *(f"{values[c]:.6f}" for c in self.columns())])
        return out.getvalue()

    def to_table(self) -> str:
        """The side-by-side table a person reads, in percent (MRR too, x100)."""
        header = ["model", *(c.replace("_", " ") for c in self.columns())]
        rows = [
            [r.model, *(f"{100 * r.metrics.to_dict()[c]:.1f}" for c in self.columns())]
            for r in self.results
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            f"{self.dataset}: {self.images} images, {self.captions} captions",
            "  ".join(
                h.ljust(w) if i == 0 else h.rjust(w)
                for i, (h, w) in enumerate(zip(header, widths, strict=True))
            ),
        ]
        for row in rows:
            cells = zip(row, widths, strict=True)
            lines.append(
                "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(cells))
            )
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Write R@K curves (both directions, one line per model) as a PNG.

        Raises:
            DatasetError: matplotlib is not installed, or no curves were computed.
        """
        from searchengine.evaluation.plot import plot_curves

        return plot_curves(self, Path(path))


def run_bench(
    dataset: RetrievalDataset,
    models: Sequence[str],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    device: str = "auto",
    batch_size: int = 32,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    curves: bool = False,
    progress: ProgressFactory | None = None,
    load: Callable[[str, str], Encoder] = load_encoder,
    precisions: Sequence[str] = ("fp32",),
) -> BenchReport:
    """Recall@K and MRR of each model on ``dataset``.

    Args:
        dataset: the captioned images.
        models: model spec strings, one table row each.
        ks: the cut-offs K (each at least 1).
        device: where models run.
        batch_size: images or captions per model call.
        cache_dir: embedding cache (default :func:`default_cache_dir`).
        use_cache: read and write the cache.
        curves: also compute R@K at many K for plots.
        progress: makes a progress bar for a named phase.
        load: loads a model from a spec (tests pass fakes).
        precisions: the image towers to measure, one row each per model: ``fp32``
            and/or ``int8`` (``models.quantize``: built and checked first on a sample
            of the dataset's images, as a collection's photos would be).

    Raises:
        UnknownModelError, WeightsUnavailableError: a model cannot be loaded.
        DatasetError: an image cannot be decoded.
        ModelError: an ``int8`` tower was refused by its check, or cannot run.
        ValueError: a K below 1.
    """
    if not models:
        raise ValueError("name at least one model")
    if any(k < 1 for k in ks):
        raise ValueError("every K must be at least 1")
    cache = EmbeddingCache((cache_dir or default_cache_dir()) if use_cache else None)
    results = []
    for spec, precision in [(m, p) for m in models for p in precisions]:
        started = time.monotonic()
        identity = model_identity(spec) + ("" if precision == "fp32" else f"|{precision}")
        found = cache.load(dataset, identity)
        if found is None:
            encoder = load(spec, device) if precision == "fp32" else int8_encoder(spec, dataset)
            try:
                found = embed_dataset(dataset, encoder, batch_size=batch_size, progress=progress)
            finally:
                encoder.close()
            cache.store(dataset, identity, *found)
            cached = False
        else:
            cached = True
        images, texts = found
        metrics = retrieval_metrics(texts, images, dataset.caption_image, ks)
        curve = recall_curves(texts, images, dataset.caption_image, ks) if curves else {}
        seconds = time.monotonic() - started
        name = parse_model_spec(spec).spec + ("" if precision == "fp32" else f" ({precision})")
        results.append(ModelResult(name, metrics, seconds, cached, curve))
    return BenchReport(
        dataset.name,
        dataset.source,
        len(dataset.images),
        len(dataset.captions),
        tuple(ks),
        results,
    )


def int8_encoder(spec: str, dataset: RetrievalDataset) -> Encoder:
    """``spec`` with its int8 image tower, checked first (once per model) on up to
    ``quantize.SAMPLE`` of the dataset's images spread over it.

    Raises:
        ModelError: the tower failed its check (the refusal's one line), or the model
            does not run in ONNX Runtime here.
    """
    from searchengine.errors import ModelError
    from searchengine.ingest.decode import decode_file
    from searchengine.models.onnx import OnnxClipEncoder
    from searchengine.models.quantize import SAMPLE, prepare_int8, read_verdict
    from searchengine.precision import refusal

    fp32 = load_encoder(spec, "cpu")
    try:
        if not isinstance(fp32, OnnxClipEncoder):
            raise ModelError(f"the int8 image tower of {spec} needs ONNX Runtime to run it")
        verdict = read_verdict(fp32.folder)
        if verdict is None:
            step = max(1, len(dataset.images) // SAMPLE)
            paths = dataset.images[::step][:SAMPLE]
            pixels = np.stack([fp32.preprocess(decode_file(p).image) for p in paths])
            verdict = prepare_int8(fp32, pixels)
        if not verdict.passed:
            raise ModelError(refusal(fp32.spec, verdict))
    finally:
        fp32.close()
    return load_encoder(spec, "cpu", "onnx", precision="int8")


def recall_curves(
    texts: np.ndarray, images: np.ndarray, caption_image: Sequence[int], ks: Sequence[int]
) -> dict[str, dict[int, float]]:
    """R@K both ways at K in ``CURVE_KS`` and ``ks`` (up to the pool size), for plots."""
    scores = similarity(texts, images)
    grid = sorted({*CURVE_KS, *ks})
    n_captions, n_images = scores.shape
    t2i = {
        k: float(text_to_image_hits(scores, caption_image, k).mean()) for k in grid if k <= n_images
    }
    i2t = {
        k: float(image_to_text_hits(scores, caption_image, k).mean())
        for k in grid
        if k <= n_captions
    }
    return {"t2i": t2i, "i2t": i2t}


def _no_progress(_name: str) -> Progress:
    return NoProgress()
