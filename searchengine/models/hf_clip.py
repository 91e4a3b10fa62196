"""transformers ``CLIPModel`` encoders (``hf:ORG/NAME``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from searchengine.models.base import encode_pil, l2_normalize
from searchengine.models.loading import autocast, hub_errors_to_weights_error, resolve_device
from searchengine.models.portable import HfImageProcessor, PortablePreprocessor
from searchengine.models.spec import ModelSpec


class TransformersClipEncoder:
    """A transformers CLIP model and its processor behind the ``Encoder`` protocol."""

    def __init__(self, spec: ModelSpec, device: str = "auto") -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as hf_logging

        # The library's own per-tensor loading bar would clutter our output.
        hf_logging.disable_progress_bar()

        self.spec = spec.spec
        self.device = resolve_device(device)
        with hub_errors_to_weights_error(spec):
            self._processor: Any = CLIPProcessor.from_pretrained(spec.source)
            model: Any = CLIPModel.from_pretrained(spec.source)
        model.to(self.device).eval()
        self._model: Any = model
        self._torch = torch
        self.dim = int(model.config.projection_dim)
        self.image_size = int(model.config.vision_config.image_size)
        self._pixels = HfImageProcessor(self._processor.image_processor)
        self.logit_scale = float(model.logit_scale.exp().item())

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self._pixels(image)

    def portable_preprocessor(self) -> PortablePreprocessor:
        """This model's ``preprocess`` without the model (for cluster ingest)."""
        return PortablePreprocessor(self.image_size, self._pixels)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        with torch.inference_mode(), autocast(self.device):
            features = _features(self._model.get_image_features(pixel_values=batch))
        return l2_normalize(features.float().cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return encode_pil(self, images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        tokens = self._processor.tokenizer(
            list(texts), padding=True, truncation=True, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode(), autocast(self.device):
            features = _features(self._model.get_text_features(**tokens))
        return l2_normalize(features.float().cpu().numpy())

    def close(self) -> None:
        self._model = None


def _features(out: Any) -> Any:
    # transformers 5 returns a model output object from get_*_features; 4.x a tensor.
    if hasattr(out, "pooler_output") and not hasattr(out, "shape"):
        return out.pooler_output
    return out
