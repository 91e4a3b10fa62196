"""``searchengine caption-eval``: captions scored by CLIPScore under several models.

The seeds' "BLIP captions scored by CLIP and CLIPS", as one table: each image is
captioned by BLIP (or captions come from a file), then every caption gets CLIPScore under
every model, and RefCLIPScore where reference captions are known. Candidates *and*
references are encoded with the "A photo depicts " prefix, as in the CLIPScore authors'
code. With human ratings, Pearson, Spearman and Kendall tau-c between each metric and
the ratings are reported (tau-c is what the CLIPScore paper uses on Flickr8k-Expert).

Which captions are scored:

1. ``captions`` given: those pairs (ratings, if any, are averaged per pair);
2. else ``ratings`` given: every judgement is one row, as in the paper's protocol;
3. else each image is captioned by the captioning model.

``images``, when given, restricts 1 and 2 to those images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from searchengine.errors import DatasetError, ImageError, QueryError
from searchengine.evaluation.caption_files import RatedCaption
from searchengine.evaluation.correlation import Correlations, correlations
from searchengine.evaluation.scores import model_labels
from searchengine.models import Encoder, load_encoder, parse_model_spec
from searchengine.progress import NoProgress, Progress
from searchengine.scoring import clip_score, ref_clip_score, with_prefix

if TYPE_CHECKING:
    from PIL import Image

    from searchengine.captions import Captioner

__all__ = ["CaptionEvalReport", "CaptionEvalRow", "caption_eval"]

CLIP_S = "CLIP-S"
REF_CLIP_S = "RefCLIP-S"
_CHUNK = 32  # images decoded and encoded at a time


@dataclass(frozen=True)
class CaptionEvalRow:
    """One scored caption.

    Attributes:
        image: absolute image path.
        caption: the caption as scored (without the CLIPScore prefix).
        source: the captioning model's name, or ``file``.
        rating: the human rating, when known.
        scores: ``{model: {"CLIP-S": x, "RefCLIP-S": y}}``; RefCLIP-S only where the
            image has references.
    """

    image: str
    caption: str
    source: str
    rating: float | None
    scores: dict[str, dict[str, float]]


@dataclass(frozen=True)
class CaptionEvalReport:
    """Every caption under every model, means, and correlations with ratings."""

    models: list[str]
    rows: list[CaptionEvalRow]
    captioner: str | None
    metrics: tuple[str, ...]
    correlations: dict[str, dict[str, Correlations]]

    def means(self) -> dict[str, dict[str, float]]:
        """Per model and metric, the mean over rows that have the metric."""
        out: dict[str, dict[str, float]] = {}
        for model in self.models:
            out[model] = {}
            for metric in self.metrics:
                values = [r.scores[model][metric] for r in self.rows if metric in r.scores[model]]
                out[model][metric] = float(np.mean(values)) if values else float("nan")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "models": self.models,
            "captioner": self.captioner,
            "rows": [r.__dict__ for r in self.rows],
            "means": self.means(),
            "correlations": {
                model: {metric: c.to_dict() for metric, c in per.items()}
                for model, per in self.correlations.items()
            },
        }

    def to_table(self) -> str:
        """Rows of captions with each model's scores side by side, then means and correlations."""
        labels = model_labels(self.models)
        lines = [f"  [{labels[m]}] {m}" for m in self.models]
        if self.captioner:
            lines.append(f"  captions by {self.captioner}")
        root = _common_folder([r.image for r in self.rows])
        names = [os.path.relpath(r.image, root) for r in self.rows]
        image_w = min(40, max(len("image"), *(len(n) for n in names)))
        text_w = min(60, max(len("caption"), *(len(r.caption) for r in self.rows)))
        rated = any(r.rating is not None for r in self.rows)
        columns = [f"{labels[m]} {metric}" for m in self.models for metric in self.metrics]
        head = f"{'image':<{image_w}}  {'caption':<{text_w}}" + ("  rating" if rated else "")
        lines += ["", head + "".join(f"  {c:>11}" for c in columns)]
        for name, row in zip(names, self.rows, strict=True):
            line = f"{_cut(name, image_w):<{image_w}}  {_cut(row.caption, text_w):<{text_w}}"
            if rated:
                line += f"  {row.rating:6.2f}" if row.rating is not None else f"  {'-':>6}"
            for model in self.models:
                for metric in self.metrics:
                    value = row.scores[model].get(metric)
                    line += f"  {value:11.4f}" if value is not None else f"  {'-':>11}"
            lines.append(line)
        means = self.means()
        pad = image_w + 2 + text_w + (8 if rated else 0)
        lines.append(
            f"{'mean':<{pad}}"
            + "".join(f"  {means[m][metric]:11.4f}" for m in self.models for metric in self.metrics)
        )
        if self.correlations:
            lines += ["", "correlation with human ratings:"]
            titles = ("model", "metric", "n", "pearson", "spearman", "tau-c")
            lines.append("  {:<6} {:<10} {:>6} {:>8} {:>9} {:>7}".format(*titles))
            for model, per in self.correlations.items():
                for metric, c in per.items():
                    lines.append(
                        f"  {labels[model]:<6} {metric:<10} {c.n:>6} {c.pearson:8.4f} "
                        f"{c.spearman:9.4f} {c.kendall_tau_c:7.4f}"
                    )
        return "\n".join(lines)


def caption_eval(
    images: Sequence[str | Path] = (),
    models: Sequence[str] = (),
    *,
    captions: Sequence[tuple[str, str]] | None = None,
    ratings: Sequence[RatedCaption] | None = None,
    references: Mapping[str, Sequence[str]] | None = None,
    captioner: str | Captioner | None = None,
    device: str = "auto",
    load: Callable[[str, str], Encoder] = load_encoder,
    progress: Callable[[str], Progress] | None = None,
) -> CaptionEvalReport:
    """Score captions with CLIPScore (and RefCLIPScore) under each model.

    Args:
        images: image files; captioned with BLIP when neither ``captions`` nor
            ``ratings`` is given, else a filter on them.
        models: model spec strings.
        captions: ``(image, caption)`` pairs to score instead of BLIP's.
        ratings: human judgements; their pairs are scored when ``captions`` is not given.
        references: reference captions per absolute image path (for RefCLIPScore).
        captioner: BLIP model name or loaded captioner (default: BLIP base).
        device: where models run.
        load: loads an encoder from a spec (tests pass fakes).
        progress: makes a progress bar for a named phase.

    Raises:
        QueryError: nothing to score, or no model named.
        DatasetError: an image cannot be decoded.
        WeightsUnavailableError: a model is not cached and cannot be downloaded.
    """
    if not models:
        raise QueryError("name at least one model (--model)")
    make_bar = progress or (lambda _name: NoProgress())
    wanted = _expand(images)
    rows, used_captioner = _candidate_rows(wanted, captions, ratings, captioner, device, make_bar)
    if not rows:
        raise QueryError("nothing to score: no caption matches the given images")
    refs = {k: list(v) for k, v in (references or {}).items() if v}
    has_refs = any(image in refs for image, _, _, _ in rows)
    metrics = (CLIP_S, REF_CLIP_S) if has_refs else (CLIP_S,)
    specs = list(dict.fromkeys(parse_model_spec(m).spec for m in models))
    scores: list[dict[str, dict[str, float]]] = [{} for _ in rows]
    for spec in specs:
        encoder = load(spec, device)
        try:
            per_row = _score_with(encoder, rows, refs, make_bar)
        finally:
            encoder.close()
        for out, value in zip(scores, per_row, strict=True):
            out[spec] = value
    report_rows = [
        CaptionEvalRow(image, text, source, rating, score)
        for (image, text, source, rating), score in zip(rows, scores, strict=True)
    ]
    return CaptionEvalReport(
        specs, report_rows, used_captioner, metrics, _correlate(report_rows, specs, metrics)
    )


_Row = tuple[str, str, str, float | None]  # image, caption, source, rating


def _candidate_rows(
    wanted: list[str],
    captions: Sequence[tuple[str, str]] | None,
    ratings: Sequence[RatedCaption] | None,
    captioner: str | Captioner | None,
    device: str,
    make_bar: Callable[[str], Progress],
) -> tuple[list[_Row], str | None]:
    allowed = set(wanted)
    keep = (lambda image: image in allowed) if allowed else (lambda _image: True)
    if captions is not None:
        given: dict[tuple[str, str], list[float]] = {}
        for r in ratings or []:
            given.setdefault((r.image, r.caption), []).append(r.rating)
        rows: list[_Row] = []
        for image, text in captions:
            found = given.get((image, text))
            mean = float(np.mean(found)) if found else None
            rows.append((image, text, "file", mean))
        return [r for r in rows if keep(r[0])], None
    if ratings is not None:
        return [(r.image, r.caption, "file", r.rating) for r in ratings if keep(r.image)], None
    if not wanted:
        raise QueryError("give images to caption, or a --captions / --ratings file")
    return _blip_rows(wanted, captioner, device, make_bar)


def _blip_rows(
    paths: list[str],
    captioner: str | Captioner | None,
    device: str,
    make_bar: Callable[[str], Progress],
) -> tuple[list[_Row], str]:
    from searchengine.captions import load_captioner
    from searchengine.models.blip import DEFAULT_CAPTION_MODEL

    model = captioner or DEFAULT_CAPTION_MODEL
    loaded = load_captioner(model, device) if isinstance(model, str) else model
    rows: list[_Row] = []
    bar = make_bar(f"captioning with {loaded.model}")
    bar.start(len(paths))
    try:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            texts = loaded.caption([_decode(p) for p in chunk])
            rows += [
                (p, " ".join(t.split()), loaded.model, None)
                for p, t in zip(chunk, texts, strict=True)
            ]
            bar.advance(len(chunk))
    finally:
        bar.close()
        if isinstance(model, str):
            loaded.close()
    return rows, loaded.model


def _score_with(
    encoder: Encoder,
    rows: list[_Row],
    refs: dict[str, list[str]],
    make_bar: Callable[[str], Progress],
) -> list[dict[str, float]]:
    paths = list(dict.fromkeys(image for image, _, _, _ in rows))
    image_vectors: dict[str, np.ndarray] = {}
    bar = make_bar(f"scoring with {encoder.spec}")
    bar.start(len(paths))
    try:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            vectors = encoder.encode_images([_decode(p) for p in chunk])
            image_vectors.update(zip(chunk, vectors, strict=True))
            bar.advance(len(chunk))
    finally:
        bar.close()
    texts = list(dict.fromkeys([t for _, t, _, _ in rows] + [r for v in refs.values() for r in v]))
    text_vectors = dict(
        zip(texts, _encode_texts(encoder, [with_prefix(t) for t in texts]), strict=True)
    )
    out = []
    for image, text, _, _ in rows:
        candidate, picture = text_vectors[text], image_vectors[image]
        scores = {CLIP_S: float(clip_score(float(candidate @ picture)))}
        if image in refs:
            ref_vectors = np.stack([text_vectors[r] for r in refs[image]])
            scores[REF_CLIP_S] = ref_clip_score(candidate, picture, ref_vectors)
        out.append(scores)
    return out


def _encode_texts(encoder: Encoder, texts: list[str], batch: int = 256) -> list[np.ndarray]:
    parts = [encoder.encode_texts(texts[s : s + batch]) for s in range(0, len(texts), batch)]
    return list(np.concatenate(parts)) if parts else []


def _correlate(
    rows: list[CaptionEvalRow], models: list[str], metrics: tuple[str, ...]
) -> dict[str, dict[str, Correlations]]:
    if not any(r.rating is not None for r in rows):
        return {}
    out: dict[str, dict[str, Correlations]] = {}
    for model in models:
        out[model] = {}
        for metric in metrics:
            pairs = [
                (r.scores[model][metric], r.rating)
                for r in rows
                if r.rating is not None and metric in r.scores[model]
            ]
            if len(pairs) >= 2:
                values, ratings = zip(*pairs, strict=True)
                out[model][metric] = correlations(values, ratings)
    return out


def _expand(images: Sequence[str | Path]) -> list[str]:
    """Image files as given, folders as every image below them; absolute, in order."""
    from searchengine.ingest.scan import scan

    out: list[str] = []
    for item in images:
        path = os.path.abspath(os.path.expanduser(item))
        if os.path.isdir(path):
            out += sorted(entry.path for entry in scan([path]))
        elif os.path.isfile(path):
            out.append(path)
        else:
            raise DatasetError(f"no such image file or folder: {path}")
    return list(dict.fromkeys(out))


def _decode(path: str) -> Image.Image:
    from searchengine.ingest.decode import decode_file

    try:
        return decode_file(path).image
    except ImageError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def _common_folder(paths: list[str]) -> str:
    try:
        common = os.path.commonpath(paths)
    except ValueError:
        return os.sep
    return common if os.path.isdir(common) else os.path.dirname(common)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
