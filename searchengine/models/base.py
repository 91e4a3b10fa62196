"""The encoder protocol every model family implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """A CLIP-family model: images and texts into one L2-normalised space.

    Implementations load lazily where they can and release memory in ``close()``.
    All arrays crossing this boundary are float32 numpy arrays.
    """

    spec: str  # canonical model spec string
    dim: int  # embedding dimension
    image_size: int  # input side length in pixels (square)
    logit_scale: float  # the model's learned temperature, exp()'d
    device: str  # "cpu" or "cuda"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image into the model's input tensor, shape (3, H, W), float32."""
        ...

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """A batch of preprocessed images (N, 3, H, W) into (N, dim) unit vectors."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images into (N, dim) unit vectors (preprocess + encode_pixels)."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts into (N, dim) unit vectors."""
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def image_lanes(encoder: Encoder, most: int) -> int:
    """How many ``encode_pixels`` calls to run side by side on ``encoder`` (at most ``most``).

    1 unless the encoder runs best that way and says so with an ``image_lanes(most)``
    method (ONNX Runtime on a CPU), which also switches it to that mode.
    """
    method = getattr(encoder, "image_lanes", None)
    return max(1, int(method(most))) if callable(method) else 1


def encode_pil(encoder: Encoder, images: Sequence[Image.Image]) -> np.ndarray:
    """``encoder.encode_images`` for any encoder: preprocess each image, encode the batch."""
    if not images:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return encoder.encode_pixels(np.stack([encoder.preprocess(im) for im in images]))
