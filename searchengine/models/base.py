"""The encoder protocol every model family implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from searchengine.models.lite import Preprocess


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


@runtime_checkable
class LaneEncoder(Encoder, Protocol):
    """An encoder whose image calls run best side by side, one core each (ONNX Runtime
    on a CPU): ingest then runs lanes that each decode and encode a batch."""

    def image_lanes(self, most: int) -> int:
        """Switch to calls of one thread each and say how many to run side by side
        (at most ``most``); ``image_lanes(1)`` switches back to every core a call."""
        ...


@runtime_checkable
class StoredTextEncoder(Encoder, Protocol):
    """An encoder that keeps the vectors of fixed lists of texts on disk (an ONNX
    export), so a run that needs only those never opens its text tower."""

    def stored_text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """``encode_texts(texts)``, read from disk after the first time."""
        ...

    def has_stored_text_vectors(self, texts: Sequence[str]) -> bool:
        """Whether ``stored_text_vectors(texts)`` needs no text tower."""
        ...


@runtime_checkable
class TensorEncoder(Encoder, Protocol):
    """An encoder that takes device tensors (a torch model on CUDA): ingest then decodes
    JPEGs on the device and preprocesses them there with ``preprocess_cfg``."""

    preprocess_cfg: Preprocess

    def encode_tensor(self, batch: Any) -> np.ndarray:
        """A preprocessed (N, 3, H, W) tensor on the encoder's device into unit vectors."""
        ...


def image_lanes(encoder: Encoder, most: int) -> int:
    """How many ``encode_pixels`` calls to run side by side on ``encoder`` (at most ``most``).

    1 unless the encoder is a ``LaneEncoder`` that runs best that way, which this also
    switches to that mode.
    """
    if isinstance(encoder, LaneEncoder):
        return max(1, int(encoder.image_lanes(most)))
    return 1


def encode_pil(encoder: Encoder, images: Sequence[Image.Image]) -> np.ndarray:
    """``encoder.encode_images`` for any encoder: preprocess each image, encode the batch."""
    if not images:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return encoder.encode_pixels(np.stack([encoder.preprocess(im) for im in images]))
