"""CLIPSeg through transformers: a text phrase into a per-pixel logit map over an image.

A model is named by its hub repo id (``CIDAS/clipseg-rd64-refined``, the default), a
local folder in the same layout (an ``hf:`` prefix is accepted, as in encoder specs), or
``toy-seg``, the tiny model shipped with the package and trained on the toy world by
``scripts/train_toy_seg.py``. All three load through ``CLIPSegProcessor`` +
``CLIPSegForImageSegmentation.from_pretrained``: one code path. torch and transformers
are imported when a model is loaded, not before.

The processor squashes the whole photo to the model's square input (ViT image processor:
352 px, bilinear, ImageNet mean/std for the CIDAS models), so the logit map covers the
whole frame and maps back to the photo by scaling each axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from searchengine.errors import ModelError
from searchengine.models.loading import autocast, hub_errors_to_weights_error, resolve_device
from searchengine.models.spec import (
    ModelKind,
    ModelSpec,
    parse_transformers_model,
    shipped_model_dir,
)

__all__ = [
    "DEFAULT_SEG_MODEL",
    "SHIPPED_SEG_MODELS",
    "ClipSeg",
    "parse_seg_model",
]

DEFAULT_SEG_MODEL = "CIDAS/clipseg-rd64-refined"
SHIPPED_SEG_MODELS = ("toy-seg",)


def parse_seg_model(name: str) -> ModelSpec:
    """A CLIPSeg model name as a spec: ``toy-seg``, a local folder, or a hub repo id.

    Raises:
        UnknownModelError: the name is none of those forms.
    """
    text = name.strip()
    if text in SHIPPED_SEG_MODELS:
        return ModelSpec(text, ModelKind.TRANSFORMERS, None, str(shipped_model_dir(text)))
    return parse_transformers_model(
        name, "CLIPSeg", f"{DEFAULT_SEG_MODEL}, {', '.join(SHIPPED_SEG_MODELS)} or a folder"
    )


class ClipSeg:
    """``CLIPSegForImageSegmentation`` and its processor: phrase + image into logits.

    Args:
        model: hub repo id, local folder or ``toy-seg`` (default ``CIDAS/clipseg-rd64-refined``).
        device: ``auto`` (CUDA with half precision when present), ``cpu`` or ``cuda``.
        batch_size: (image, phrase) pairs per forward pass.

    Raises:
        UnknownModelError: the name is not a model name.
        WeightsUnavailableError: not cached and the hub unreachable.
        ModelError: the folder or repo holds no loadable CLIPSeg model.
    """

    def __init__(
        self, model: str = DEFAULT_SEG_MODEL, device: str = "auto", batch_size: int = 8
    ) -> None:
        import torch
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor
        from transformers.utils import logging as hf_logging

        # The library's own per-tensor loading bar would clutter our output.
        hf_logging.disable_progress_bar()
        spec = parse_seg_model(model)
        self.model = spec.spec
        self.device = resolve_device(device)
        self.batch_size = batch_size
        try:
            with hub_errors_to_weights_error(spec):
                self._processor: Any = CLIPSegProcessor.from_pretrained(spec.source)
                net: Any = CLIPSegForImageSegmentation.from_pretrained(spec.source)
        except (OSError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"cannot load {spec.spec} as a CLIPSeg model: {first}") from exc
        net.to(self.device).eval()
        self._net: Any = net
        self._torch = torch
        size = self._processor.image_processor.size
        self.input_size = (int(size["width"]), int(size["height"]))

    def logits(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Raw logit maps for (image, phrase) pairs, ``(n, h, w)`` float32.

        The maps cover each whole image, squashed to the model's square output; a
        sigmoid turns a logit into the probability that the pixel shows the phrase.

        Raises:
            ValueError: ``images`` and ``texts`` differ in length.
            ModelError: the model was closed.
        """
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} phrases; pair them up")
        if self._net is None:
            raise ModelError(f"{self.model} was closed; load it again")
        maps = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            maps.append(self._batch(images[start:stop], texts[start:stop]))
        if not maps:
            width, height = self.input_size
            return np.zeros((0, height, width), dtype=np.float32)
        return np.concatenate(maps)

    def _batch(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        inputs = self._processor(
            text=list(texts),
            images=[im.convert("RGB") for im in images],
            padding=True,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode(), autocast(self.device):
            logits = self._net(**inputs).logits
        # Older transformers squeezed a batch of one down to (h, w).
        return logits.float().reshape(len(images), *logits.shape[-2:]).cpu().numpy()

    def close(self) -> None:
        """Release the model's memory."""
        self._net = None
