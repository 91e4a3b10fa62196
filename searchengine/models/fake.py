"""A tiny deterministic encoder for unit tests and examples: no torch, no weights.

Images embed as their mean colour; texts embed as the colours they name. That is
enough meaning for "red" to find the red image, so pipeline tests can assert ranking
without a neural network.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

import numpy as np
from PIL import Image

from searchengine.models.base import encode_pil, l2_normalize
from searchengine.models.portable import PortablePreprocessor

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.05, 0.05, 0.05),
}


def mean_colour_pixels(image: Image.Image, size: int) -> np.ndarray:
    """The fake model's input: the image shrunk to ``size`` pixels a side, in [0, 1]."""
    small = image.convert("RGB").resize((size, size))
    return np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0


class FakeEncoder:
    """Colour-space encoder implementing the ``Encoder`` protocol."""

    def __init__(self, spec: str = "fake", image_size: int = 16, lanes: int = 1) -> None:
        self.spec = spec
        self.dim = 4
        self.image_size = image_size
        self.logit_scale = 100.0
        self.device = "cpu"
        self.images_encoded = 0
        self.texts_encoded = 0
        self.lanes = lanes  # image calls it takes side by side (as ONNX on a CPU does)
        self.encoding_threads: set[str] = set()  # threads that called encode_pixels
        self._lock = threading.Lock()

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return mean_colour_pixels(image, self.image_size)

    def portable_preprocessor(self) -> PortablePreprocessor:
        return PortablePreprocessor(
            self.image_size, partial(mean_colour_pixels, size=self.image_size)
        )

    def image_lanes(self, most: int) -> int:
        return max(1, min(most, self.lanes))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            self.images_encoded += len(pixels)
            self.encoding_threads.add(threading.current_thread().name)
        mean = pixels.reshape(len(pixels), 3, -1).mean(axis=2)
        return l2_normalize(np.concatenate([mean, np.full((len(pixels), 1), 0.1)], axis=1))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return encode_pil(self, images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.texts_encoded += len(texts)
        rows = []
        for text in texts:
            named = [COLOURS[w] for w in text.lower().split() if w in COLOURS]
            rgb = np.mean(named, axis=0) if named else np.full(3, 0.5)
            rows.append([*rgb, 0.1])
        return l2_normalize(np.asarray(rows, dtype=np.float32).reshape(-1, self.dim))

    def close(self) -> None:
        pass
