"""Verifying an ONNX export against the torch model it came from.

Run once, when the export is written (``onnx_export.export_model``), through the very
``OnnxClipEncoder`` that will use it: pixels (max abs diff with open_clip's
transform), tokens (the torch-free tokenizer on ``TOKEN_CHECK``) and features (cosine
of each image and text row with torch's, at least ``MIN_COSINE``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from searchengine.models.exports import MIN_COSINE, Export
from searchengine.models.onnx import OnnxClipEncoder

log = logging.getLogger(__name__)

PIXEL_TOLERANCE = 1e-4  # float rounding between numpy and torch, nothing more
VERIFY_TEXTS = (
    "",
    "a photo of a dog",
    "Kids building a sandcastle on the beach at sunset",
    "a red car at night",
    "東京の夜景 🌃 and café crème",
    " ".join(["a very long caption that goes on"] * 20),
)
TOKEN_CHECK = (
    *VERIFY_TEXTS,
    "A Photo Of A DOG",
    "it's the cat's toy, isn't it?",
    "  lots   of\twhitespace\nand lines  ",
    "Tom &amp; Jerry &lt;3",
    "numbers 12345 and 3.14159",
    "naïve façade coöperate",
    "Привет, мир",
    "مرحبا بالعالم",
    "emoji 😀🎉👍🏽 party",
    "hyphen-ated words_with_underscores",
    "URL https://example.com/path?q=1",
    "ÆØÅ æøå ß ẞ",
    "\u00e9 vs e\u0301 (combining)",
    "ﬁne ligatures ﬂow",
    "\u201ccurly quotes\u201d and \u2018single\u2019",
    "mojibake: cafÃ©",
    "tab\tand\x0bvertical",
    "ALL CAPS SHOUTING!!!",
    "one",
    "x" * 300,
)


def verify_export(torch_encoder: Any, folder: Path, manifest: dict[str, Any]) -> None:
    """Check the ONNX export in ``folder`` against ``torch_encoder`` and fill in the
    manifest's verification fields; ``verified`` only if every check passes."""
    onnx_encoder = OnnxClipEncoder(Export(folder, manifest))
    expected_tokens = np.asarray(torch_encoder._tokenizer(list(TOKEN_CHECK)).numpy())
    if manifest["tokenizer"] is not None:
        same = np.array_equal(onnx_encoder.tokenize(TOKEN_CHECK), expected_tokens)
        manifest["tokenizer_checked_texts"] = len(TOKEN_CHECK)
        if not same:
            log.warning("torch-free tokenizer of %s differs; open_clip's is used", manifest["spec"])
            manifest["tokenizer"] = None
            onnx_encoder = OnnxClipEncoder(Export(folder, manifest))
    images = _verify_images(manifest["image_size"])
    theirs = np.stack([torch_encoder.preprocess(im) for im in images])
    ours = np.stack([onnx_encoder.preprocess(im) for im in images])
    pixel_diff = float(np.abs(theirs - ours).max()) if theirs.shape == ours.shape else np.inf
    image_cos = row_cosines(torch_encoder.encode_pixels(theirs), onnx_encoder.encode_images(images))
    texts = list(VERIFY_TEXTS)
    text_cos = row_cosines(torch_encoder.encode_texts(texts), onnx_encoder.encode_texts(texts))
    onnx_encoder.close()
    manifest["verification"] = {
        "images": len(images),
        "texts": len(texts),
        "min_cosine_image": float(image_cos.min()),
        "min_cosine_text": float(text_cos.min()),
        "max_pixel_diff": pixel_diff,
    }
    worst = min(float(image_cos.min()), float(text_cos.min()))
    if pixel_diff > PIXEL_TOLERANCE:
        manifest["reason"] = f"preprocessing differs from open_clip's by {pixel_diff:.2g}"
    elif worst < MIN_COSINE:
        manifest["reason"] = f"ONNX features differ from torch's (min cosine {worst:.5f})"
    else:
        manifest["verified"] = True


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine of each row of ``a`` with the same row of ``b``."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray((a * b).sum(axis=1))


def _verify_images(size: int) -> list[Image.Image]:
    """Deterministic images of several shapes: downscaled, upscaled, exact, grey."""
    rng = np.random.default_rng(0)
    images = []
    for w, h in ((640, 480), (300, 500), (size, size), (97, 61), (1200, 90)):
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(noise)
        draw = ImageDraw.Draw(image)
        draw.ellipse((w // 5, h // 5, w // 2, h // 2), fill=(220, 30, 30))
        draw.rectangle((w // 2, h // 2, w - 2, h - 2), fill=(20, 40, 200))
        images.append(image)
    images.append(images[0].convert("L"))
    return images
