"""One image embedding for a part of a photo: FALIP, or the visual prompts it is compared with.

``region_vectors(encoder, image, boxes, method)`` embeds each box of an upright photo
as a unit vector in the model's space, by one of five methods (the paper's comparison):

- ``falip`` (default): the foveal attention mask of :mod:`searchengine.models.falip`;
  the photo is not edited and context is kept. Needs an open_clip ViT on the torch path.
- ``crop``: the box cut out and embedded alone (context lost).
- ``circle``: a red ellipse drawn around the box (Shtedritski et al. 2023, "What does
  CLIP know about a red circle?"), line width 1/200 of the longer side as in the FALIP
  authors' baselines.
- ``blur``: everything outside the box Gaussian-blurred (Yang et al. 2023, fine-grained
  visual prompting), radius 100 px at 640 px, scaled with the photo.
- ``none``: the whole photo, ignoring the box (the no-prompt baseline).

The last four edit pixels and work with any encoder, ONNX included. Boxes are
``(x0, y0, x1, y1)`` in the upright photo's pixels, ends exclusive. The function is
standalone so that a ranking term ("more like this part") can call it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from searchengine.errors import ConfigError, ImageError, QueryError, UnknownModelError
from searchengine.models.base import Encoder
from searchengine.rows import find_file

if TYPE_CHECKING:
    from searchengine.ranking.terms import Term, VectorTerm
    from searchengine.rows import RowReader
    from searchengine.vectors import VectorIndex

__all__ = [
    "REGION_METHODS",
    "Box",
    "RegionEmbedder",
    "clip_box",
    "edit_for",
    "parse_box",
    "parse_methods",
    "region_term",
    "region_vectors",
    "similar_term",
    "torch_tower",
]

REGION_METHODS = ("falip", "crop", "circle", "blur", "none")
# A region is usually a small part of the photo: decode with the shorter side at least
# this long (JPEGs at a reduced DCT scale), so a crop still has pixels to show.
_REGION_SIDE = 768
Box = tuple[int, int, int, int]


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` (pixels of the upright image) into a box.

    Raises:
        QueryError: not four integers, or an empty box.
    """
    parts = [p.strip() for p in text.split(",")]
    try:
        x0, y0, x1, y1 = (round(float(p)) for p in parts)
    except ValueError:
        raise QueryError(
            f"region {text!r} is not x0,y0,x1,y1 in pixels, e.g. 10,20,200,180"
        ) from None
    if x1 <= x0 or y1 <= y0:
        raise QueryError(f"region {text!r} is empty: x1 must exceed x0 and y1 exceed y0")
    return (x0, y0, x1, y1)


def parse_methods(text: str) -> list[str]:
    """``"falip,crop"`` into a list of region methods.

    Raises:
        ConfigError: an unknown method; the message lists the valid ones.
    """
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in REGION_METHODS]
    if unknown or not methods:
        raise ConfigError(
            f"unknown region method {', '.join(unknown) or text!r}; "
            f"use some of: {', '.join(REGION_METHODS)}"
        )
    return methods


def clip_box(box: Box, size: tuple[int, int]) -> Box:
    """``box`` clipped to an image of ``size`` (width, height).

    Raises:
        QueryError: the box lies entirely outside the image.
    """
    width, height = size
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)
    if x1 <= x0 or y1 <= y0:
        raise QueryError(f"region {','.join(map(str, box))} is outside the {width}x{height} image")
    return (x0, y0, x1, y1)


def edit_for(image: Image.Image, box: Box, method: str) -> Image.Image:
    """The photo as a pixel-editing method shows it to the model (not for ``falip``)."""
    image = image.convert("RGB")
    if method == "none":
        return image
    if method == "crop":
        return image.crop(box)
    if method == "circle":
        out = image.copy()
        width = max(1, round(max(image.size) / 200))
        ImageDraw.Draw(out).ellipse(box, outline=(255, 0, 0), width=width)
        return out
    if method == "blur":
        radius = 100 * max(image.size) / 640
        out = image.filter(ImageFilter.GaussianBlur(radius))
        out.paste(image.crop(box), box[:2])
        return out
    raise ConfigError(f"{method!r} does not edit pixels; use one of crop, circle, blur, none")


def torch_tower(encoder: Encoder) -> Any:
    """``encoder`` itself if it runs open_clip in torch, else the torch twin of its model.

    The ONNX tower is a fixed graph without an attention-mask input, so FALIP runs the
    torch tower of the same weights; transformers (``hf:``) models are refused.

    Raises:
        ConfigError: the model is not an open_clip model.
    """
    from searchengine.models import load_encoder, parse_model_spec
    from searchengine.models.openclip import OpenClipEncoder
    from searchengine.models.spec import ModelKind

    if isinstance(encoder, OpenClipEncoder):
        return encoder
    try:
        spec = parse_model_spec(encoder.spec)
    except UnknownModelError:  # a model handed in by code, with no spec to load it by
        raise ConfigError(
            f"--region-method falip needs an open_clip ViT image tower, and {encoder.spec} is "
            "not an open_clip model; use --region-method crop, circle or blur"
        ) from None
    if spec.kind is ModelKind.TRANSFORMERS:
        raise ConfigError(
            f"--region-method falip needs an open_clip ViT image tower, and {encoder.spec} is a "
            "transformers model; use --region-method crop, circle or blur"
        )
    return load_encoder(spec, device=encoder.device, runtime="torch")


class RegionEmbedder:
    """Region embeddings under one model, with FALIP's torch tower loaded once if needed.

    Args:
        encoder: the model whose space the vectors live in.
        strength: FALIP's bias on a patch wholly inside a box (default: the tuned value).
    """

    def __init__(self, encoder: Encoder, strength: float | None = None) -> None:
        self.encoder = encoder
        self.strength = strength
        self._falip: Any = None
        self._twin: Any = None

    def vectors(
        self, image: Image.Image, boxes: Sequence[Box], method: str = "falip"
    ) -> np.ndarray:
        """One unit vector per box of ``image`` (upright, boxes in its pixels), ``(n, dim)``.

        Raises:
            ConfigError: unknown method, or ``falip`` on a model it cannot run on.
            QueryError: a box outside the photo.
        """
        parse_methods(method)
        clipped = [clip_box(b, image.size) for b in boxes]
        if method != "falip":
            return self.encoder.encode_images([edit_for(image, b, method) for b in clipped])
        if self._falip is None:
            from searchengine.models.falip import DEFAULT_STRENGTH, FalipEncoder

            tower = torch_tower(self.encoder)
            self._twin = tower if tower is not self.encoder else None
            strength = DEFAULT_STRENGTH if self.strength is None else self.strength
            try:
                self._falip = FalipEncoder(tower, strength)
            except BaseException:
                self.close()
                raise
        as_float = [(float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1 in clipped]
        return self._falip.encode([image] * len(clipped), as_float)

    def close(self) -> None:
        """Release the torch tower loaded for FALIP, if one was (never ``encoder``)."""
        if self._twin is not None:
            self._twin.close()
        self._twin = self._falip = None


def region_vectors(
    encoder: Encoder,
    image: Image.Image,
    boxes: Sequence[Box],
    method: str = "falip",
    *,
    strength: float | None = None,
) -> np.ndarray:
    """One unit vector per box of ``image`` (upright, boxes in its pixels), ``(n, dim)``.

    Args:
        encoder: the model whose space the vectors live in.
        image: the photo.
        boxes: regions, each clipped to the photo.
        method: one of :data:`REGION_METHODS`.
        strength: FALIP's bias on a patch wholly inside a box (default: the tuned value).

    Raises:
        ConfigError: unknown method, or ``falip`` on a model it cannot run on.
        QueryError: a box outside the photo.
    """
    embedder = RegionEmbedder(encoder, strength)
    try:
        return embedder.vectors(image, boxes, method)
    finally:
        embedder.close()


def similar_term(
    image: str | Path | Image.Image,
    region: Box | None,
    method: str,
    catalog: RowReader,
    index: VectorIndex,
    encoder: Encoder,
) -> tuple[Term, frozenset[int]]:
    """``similar``'s query: the whole example image (``ranking.example_term``), or the
    part of it in ``region`` (``region_term``, by ``method``), and the ids to leave out."""
    from searchengine.ranking.terms import example_term

    if region is None:
        return example_term(image, catalog, index, encoder)
    return region_term(image, region, catalog, encoder, method)


def region_term(
    image: str | Path | Image.Image,
    region: Box,
    catalog: RowReader,
    encoder: Encoder,
    method: str = "falip",
) -> tuple[VectorTerm, frozenset[int]]:
    """A part of an example image as a query term, and the ids to leave out.

    ``region`` is in the pixels of the upright image at full size; the photo is decoded
    smaller when it can be, and the box scaled to match. An indexed file is left out of
    its own results, as for a whole example image.

    Raises:
        QueryError: the file cannot be read, or the region lies outside it.
        ConfigError: an unknown method, or FALIP on a model it cannot run on.
    """
    from searchengine.ingest.decode import decode_file
    from searchengine.ranking.terms import VectorTerm
    from searchengine.values import OK

    exclude: frozenset[int] = frozenset()
    if isinstance(image, Image.Image):
        picture, full = image, image.size
    else:
        path = os.path.abspath(image)
        record = find_file(catalog, path)
        if record is not None and record.status == OK:
            exclude = frozenset({record.id})
        try:
            decoded = decode_file(path, min_side=max(encoder.image_size, _REGION_SIDE))
        except ImageError as exc:
            raise QueryError(f"cannot use {path} as an example image: {exc}") from exc
        picture, full = decoded.image, (decoded.width, decoded.height)
    x0, y0, x1, y1 = clip_box(region, full)
    fx, fy = picture.width / full[0], picture.height / full[1]
    box = (
        int(x0 * fx),
        int(y0 * fy),
        max(int(np.ceil(x1 * fx)), int(x0 * fx) + 1),
        max(int(np.ceil(y1 * fy)), int(y0 * fy) + 1),
    )
    return VectorTerm(region_vectors(encoder, picture, [box], method)[0]), exclude
