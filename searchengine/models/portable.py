"""A model's image preprocessing without the model, to ship to other processes.

A cluster ingest decodes and preprocesses files in CPU tasks that never load the
model (``searchengine.ingest.ray_run``). What they need is small: the input size and
the transform. Each encoder says what its own ``preprocess`` uses, as a picklable
value of a few hundred bytes, so a task computes exactly the pixels the model's own
``preprocess`` would (``tests/unit/test_ray_engine.py`` checks they are equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from searchengine.models.lite import Preprocess, preprocess_image


@dataclass
class PortablePreprocessor:
    """``image_size`` and ``preprocess`` of a model (the ``ingest.load.Preprocessor``
    protocol), picklable.

    Attributes:
        image_size: the model's input side, in pixels.
        transform: open_clip's transform settings (run on numpy and PIL, as the ONNX
            runtime does), or a picklable callable from image to (3, H, W) pixels.
    """

    image_size: int
    transform: Preprocess | Callable[[Image.Image], Any]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        if isinstance(self.transform, Preprocess):
            return preprocess_image(image, self.transform)
        return np.asarray(self.transform(image), dtype=np.float32)


@runtime_checkable
class Portable(Protocol):
    """An encoder whose preprocessing can run where the model is not loaded."""

    def portable_preprocessor(self) -> PortablePreprocessor: ...


class TorchTransform:
    """A torchvision transform whose output becomes a numpy array (picklable)."""

    def __init__(self, transform: Callable[[Image.Image], Any]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.transform(image.convert("RGB")).numpy(), dtype=np.float32)


class HfImageProcessor:
    """A transformers image processor as a callable (picklable)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> np.ndarray:
        out = self.processor(images=image.convert("RGB"), return_tensors="np")
        return np.asarray(out["pixel_values"][0], dtype=np.float32)
